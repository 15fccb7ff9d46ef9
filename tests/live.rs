//! The core against real servers: a real master and a real replica (every version `servers()` finds),
//! linked through a test relay that feeds every forwarded byte to `Links`. The story the link tells must
//! agree with what the servers themselves report: their offsets (`INFO replication`), the replica's port,
//! the server version in the RDB, and equal datasets (`DEBUG DIGEST`). Every sync mode a version offers
//! (disk, diskless, and Valkey's dual channel or Redis 8's rdb channel), then a partial resync after
//! `CLIENT KILL TYPE replica`.

mod support;

use replscope::link::{ClosedBy, Link, LinkId, LinkKind, Phase, SyncAnswer, SyncKind};
use replscope::wire::{CommandName, PayloadFraming, TrailerCheck};
use support::modes::SyncMode;
use support::relay::Relay;
use support::server::{Server, ServerBin, servers};

fn info_i64(server: &Server, key: &str) -> Option<i64> {
    server.info("replication").get(key)?.parse().ok()
}

fn find(relay: &Relay, pred: impl Fn(&Link) -> bool) -> Option<LinkId> {
    let links = relay.links();
    relay.ids().into_iter().find(|id| links.get(*id).is_some_and(&pred))
}

fn digest(server: &Server) -> String {
    match server.cmd(&["DEBUG", "DIGEST"]) {
        redis_protocol::resp2::types::OwnedFrame::SimpleString(s) => String::from_utf8_lossy(&s).into_owned(),
        other => panic!("DEBUG DIGEST: {other:?}"),
    }
}

/// Waits until the link's offset, its last ACK, the master's and the replica's offsets all agree.
fn wait_offsets_agree(master: &Server, replica: &Server, relay: &Relay, id: LinkId) -> i64 {
    master.wait_for("offsets to agree", 30, || {
        let m = info_i64(master, "master_repl_offset")?;
        let r = info_i64(replica, "slave_repl_offset")?;
        let links = relay.links();
        let link = links.get(id)?;
        let ours = link.master_offset()?;
        let ack = link.stream.last_ack?.offset;
        (m == r && m == ours && m == ack).then_some(m)
    })
}

fn scenario(bin: &ServerBin, mode: SyncMode) {
    let ctx = format!("{} {}", bin.name, mode.name(bin));
    let mut master_args = vec!["--rdbcompression", "no"];
    master_args.extend(mode.master_args(bin));
    let master = Server::start(bin, &master_args);
    master.cmd(&["DEBUG", "POPULATE", "20000", "key", "300"]);
    let relay = Relay::start(master.port);
    let relay_port = relay.port.to_string();
    let mut replica_args = vec!["--replicaof", "127.0.0.1", &relay_port];
    replica_args.extend(mode.replica_args(bin));
    let replica = Server::start(bin, &replica_args);
    replica.wait_for("the replica's link to come up", 60, || {
        (replica.info("replication").get("master_link_status").map(String::as_str) == Some("up")).then_some(())
    });
    for cmd in [&["SET", "a", "1"][..], &["INCR", "a"], &["HSET", "h", "f", "v"], &["DEL", "a"], &["SET", "b", "2"]] {
        master.cmd(cmd);
    }
    let main = find(&relay, |l| l.kind == LinkKind::Replication && l.sync_kind == Some(SyncKind::Full))
        .unwrap_or_else(|| panic!("{ctx}: no full-sync link"));
    let offset = wait_offsets_agree(&master, &replica, &relay, main);
    assert_eq!(digest(&master), digest(&replica), "{ctx}: datasets differ");

    {
        let links = relay.links();
        let link = links.get(main).expect("main link");
        let phases: Vec<Phase> = link.phases.iter().map(|p| p.phase).collect();
        assert_eq!(
            phases,
            [Phase::Handshake, Phase::WaitingBgsave, Phase::RdbTransfer, Phase::Loading, Phase::Streaming],
            "{ctx}"
        );
        // Two connections: Valkey answers `+DUALCHANNELSYNC`, Redis 8 `+RDBCHANNELSYNC <client id>`. A
        // disk-based Redis 8 master falls back to one connection although the replica offers an rdb channel.
        let two_channels = match (mode, &link.answer) {
            (SyncMode::TwoChannel, Some(SyncAnswer::DualChannelSync { .. })) if bin.valkey => true,
            (SyncMode::TwoChannel, Some(SyncAnswer::RdbChannelSync { .. })) if !bin.valkey => true,
            (SyncMode::Disk | SyncMode::Diskless, Some(SyncAnswer::FullResync { .. })) => false,
            (_, other) => panic!("{ctx}: answer {other:?}"),
        };
        let rdb = link.rdb.as_ref().unwrap_or_else(|| panic!("{ctx}: no RDB"));
        let eof = matches!(rdb.framing, PayloadFraming::EofMark);
        assert_eq!(eof, mode != SyncMode::Disk, "{ctx}: framing {:?}", rdb.framing);
        assert!(matches!(rdb.trailer, Some(TrailerCheck::Ok { .. })), "{ctx}: trailer {:?}", rdb.trailer);
        assert!(rdb.transferred > 4_000_000, "{ctx}: RDB of 20,000 × 300 bytes is {} bytes?", rdb.transferred);
        assert_eq!(rdb.size(), Some(rdb.transferred), "{ctx}");
        let (ma, mi, pa) = bin.version;
        assert_eq!(rdb.server_version(), Some(format!("{ma}.{mi}.{pa}").as_str()), "{ctx}: version in the RDB");
        assert_eq!(link.replica_endpoint(), Some(format!("127.0.0.1:{}", replica.port)), "{ctx}: replica endpoint");
        let slave0 = master.info("replication").get("slave0").cloned().unwrap_or_default();
        assert!(slave0.contains(&format!("port={}", replica.port)), "{ctx}: master says {slave0}");
        let s = &link.stream;
        assert_eq!(
            [CommandName::Incr, CommandName::Hset, CommandName::Del, CommandName::Set].map(|n| s.count(n)),
            [1, 1, 1, 2],
            "{ctx}: commands"
        );
        assert!(s.count(CommandName::Select) >= 1, "{ctx}: the first keyed command after an RDB has a SELECT");
        assert_eq!(link.stream.lag(), Some(0), "{ctx}");
        assert!(offset > 0, "{ctx}");
        if two_channels {
            let rdb_channel = link.partner.unwrap_or_else(|| panic!("{ctx}: main channel not paired"));
            let rc = links.get(rdb_channel).expect("rdb channel link");
            assert_eq!((rc.kind, rc.partner), (LinkKind::RdbChannel, Some(main)), "{ctx}");
            assert_eq!(rdb.via_rdb_channel, Some(rdb_channel.0), "{ctx}");
        }
        for (id, l) in links.iter() {
            assert!(l.desyncs.is_empty(), "{ctx}: link {id:?} desynced: {:?}", l.desyncs);
        }
    }

    // A partial resync: the master kills the replica's connection, the replica comes back with PSYNC.
    master.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    let partial = master.wait_for("a partial resync", 30, || {
        find(&relay, |l| l.sync_kind == Some(SyncKind::Partial) && l.phase() == Phase::Streaming)
    });
    master.cmd(&["SET", "c", "3"]);
    let after = wait_offsets_agree(&master, &replica, &relay, partial);
    assert!(after > offset, "{ctx}");
    let links = relay.links();
    let p = links.get(partial).expect("partial link");
    assert!(matches!(p.answer, Some(SyncAnswer::Continue { .. })), "{ctx}: {:?}", p.answer);
    assert!(p.rdb.is_none(), "{ctx}");
    assert_eq!(p.stream.count(CommandName::Set), 1, "{ctx}");
    let old = links.get(main).expect("old link");
    let close = old.close.as_ref().map(|c| (c.by, c.phase));
    assert_eq!(close, Some((ClosedBy::Master, Phase::Streaming)), "{ctx}: CLIENT KILL closes from the master");
    for (id, l) in links.iter() {
        assert!(l.desyncs.is_empty(), "{ctx}: link {id:?} desynced: {:?}", l.desyncs);
    }
    drop(links);
    drop(replica);
    drop(master);
}

#[test]
fn disk_full_sync_then_partial_resync_on_every_server() {
    for bin in servers() {
        scenario(&bin, SyncMode::Disk);
    }
}

#[test]
fn diskless_full_sync_then_partial_resync_on_every_server() {
    for bin in servers() {
        scenario(&bin, SyncMode::Diskless);
    }
}

/// Valkey 8+'s dual channel and Redis 8's rdb channel: the RDB over a second connection.
#[test]
fn two_channel_full_sync_then_partial_resync_on_every_server_that_has_one() {
    for bin in support::modes::two_channel_servers() {
        scenario(&bin, SyncMode::TwoChannel);
    }
}
