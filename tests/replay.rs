//! Replays every recording in `tests/data/captures` and asserts each connection's whole story: phases in
//! order, the PSYNC answer, the RDB (size, version, checksum), stream offsets equal to the ACKs the replica
//! sent, command counts, the pairing of a second channel (Valkey's dual channel, Redis 8's rdb channel), and
//! that no trace of the AUTH password remains.

mod support;

use replscope::link::{ClosedBy, Link, LinkKind, Phase, SyncAnswer, SyncKind, SyncRequest};
use replscope::wire::{CommandName, PayloadFraming, PsyncId, RdbMagic, TrailerCheck};
use support::{Replay, load, replay, whole};

/// What the scenario of `tests/data/captures/README.md` must look like in each recording.
struct Expect {
    name: &'static str,
    framing_eof: bool,
    magic: RdbMagic,
    rdb_version: u16,
    server_version: &'static str,
    /// Replica version announced with `REPLCONF version` (Valkey replicas).
    replica_version: Option<&'static str>,
    /// Connection numbers: full sync main channel, its RDB channel (dual), the partial resync.
    full: u32,
    rdb_channel: Option<u32>,
    partial: u32,
    /// Stream `ping`s on the full-sync connection.
    pings: u64,
    /// Offset after the first connection's stream; the partial PSYNC asks for this + 1.
    full_end: i64,
    partial_end: i64,
    auth: bool,
}

const fn e(
    name: &'static str,
    framing_eof: bool,
    magic: RdbMagic,
    rdb_version: u16,
    server_version: &'static str,
) -> Expect {
    Expect {
        name,
        framing_eof,
        magic,
        rdb_version,
        server_version,
        replica_version: None,
        full: 1,
        rdb_channel: None,
        partial: 2,
        pings: 0,
        full_end: 71,
        partial_end: 98,
        auth: false,
    }
}

fn expectations() -> Vec<Expect> {
    vec![
        e("redis-6.2.14-disk.jsonl", false, RdbMagic::Redis, 9, "6.2.14"),
        Expect { auth: true, ..e("redis-7.0.15-auth.jsonl", false, RdbMagic::Redis, 10, "7.0.15") },
        e("redis-7.0.15-disk.jsonl", false, RdbMagic::Redis, 10, "7.0.15"),
        e("redis-7.0.15-diskless.jsonl", true, RdbMagic::Redis, 10, "7.0.15"),
        e("redis-8.2.3-disk.jsonl", false, RdbMagic::Redis, 12, "8.2.3"),
        Expect {
            rdb_channel: Some(2),
            partial: 3,
            ..e("redis-8.2.3-rdbchannel-disk-load.jsonl", true, RdbMagic::Redis, 12, "8.2.3")
        },
        Expect {
            rdb_channel: Some(2),
            partial: 3,
            ..e("redis-8.2.3-rdbchannel-diskless-load.jsonl", true, RdbMagic::Redis, 12, "8.2.3")
        },
        Expect { replica_version: Some("8.1.8"), ..e("valkey-8.1.8-disk.jsonl", false, RdbMagic::Redis, 11, "8.1.8") },
        Expect {
            replica_version: Some("8.1.8"),
            rdb_channel: Some(2),
            partial: 3,
            ..e("valkey-8.1.8-dual.jsonl", true, RdbMagic::Redis, 11, "8.1.8")
        },
        Expect {
            replica_version: Some("9.1.2"),
            pings: 1,
            full_end: 85,
            partial_end: 112,
            ..e("valkey-9.1.2-disk.jsonl", false, RdbMagic::Valkey, 80, "9.1.2")
        },
        Expect {
            replica_version: Some("9.1.2"),
            rdb_channel: Some(2),
            partial: 3,
            ..e("valkey-9.1.2-dual.jsonl", true, RdbMagic::Valkey, 80, "9.1.2")
        },
    ]
}

fn phases(link: &Link) -> Vec<Phase> {
    link.phases.iter().map(|p| p.phase).collect()
}

fn link(r: &Replay, conn: u32) -> &Link {
    r.links.get(r.ids[&conn]).unwrap_or_else(|| panic!("no link for conn {conn}"))
}

#[test]
fn every_recording_is_covered() {
    let names: Vec<String> = expectations().iter().map(|e| e.name.to_string()).collect();
    assert_eq!(
        support::capture_names(),
        names,
        "a recording without expectations, or an expectation without a recording"
    );
}

#[test]
fn every_recording_tells_its_whole_story() {
    for ex in expectations() {
        let r = replay(&load(ex.name), whole);
        check(&ex, &r);
    }
}

fn check(ex: &Expect, r: &Replay) {
    let name = ex.name;
    assert_eq!(r.ids.len(), 2 + usize::from(ex.rdb_channel.is_some()), "{name}: connections");

    // No decoder ever lost track.
    for (id, l) in r.links.iter() {
        assert!(l.desyncs.is_empty(), "{name}: link {id:?} desynced: {:?}", l.desyncs);
        assert!(l.close.is_some(), "{name}: link {id:?} never closed");
        assert_eq!(l.unanswered_commands(), 0, "{name}: link {id:?} has handshake commands without replies");
    }

    // Every ACK the replica sent is an offset our stream passed through, never beyond the wire's current
    // one (a replica acknowledges what it has processed; Valkey's first ACK after loading can precede the
    // stream bytes that followed the RDB in the same segment).
    assert!(r.acks.len() >= 4, "{name}: too few ACKs: {:?}", r.acks);
    for a in &r.acks {
        assert!(a.on_a_boundary && Some(a.ack) <= a.master_offset, "{name}: {a:?}");
    }

    // The full sync.
    let full = link(r, ex.full);
    assert_eq!(full.kind, LinkKind::Replication, "{name}");
    assert_eq!(
        phases(full),
        [Phase::Handshake, Phase::WaitingBgsave, Phase::RdbTransfer, Phase::Loading, Phase::Streaming, Phase::Closed],
        "{name}: full-sync phases"
    );
    let at: Vec<_> = full.phases.iter().map(|p| p.at).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{name}: phase times go back: {at:?}");
    assert!(matches!(full.request, Some(SyncRequest::Psync { replid: PsyncId::Unknown, offset: -1, .. })), "{name}");
    assert_eq!(full.sync_kind, Some(SyncKind::Full), "{name}");
    assert_eq!(full.psync_refusal, None, "{name}: a first sync (PSYNC ? -1) is no refusal");
    // One connection: `+FULLRESYNC` on it. Valkey's dual channel: `+DUALCHANNELSYNC` on the main channel,
    // `$ENDOFF` on the RDB channel. Redis 8's rdb channel: `+RDBCHANNELSYNC <main client id>` on the main
    // channel, `+FULLRESYNC` on the rdb channel.
    let rdb_channel_answer = ex.rdb_channel.map(|rc| &link(r, rc).answer);
    let replid = match (&full.answer, rdb_channel_answer) {
        (Some(SyncAnswer::FullResync { replid, offset: 0, .. }), None) => *replid,
        (Some(SyncAnswer::DualChannelSync { .. }), Some(Some(SyncAnswer::EndOffset { replid, offset: 0, .. }))) => {
            *replid
        }
        (Some(SyncAnswer::RdbChannelSync { .. }), Some(Some(SyncAnswer::FullResync { replid, offset: 0, .. }))) => {
            *replid
        }
        (other, rc) => panic!("{name}: full-sync answer {other:?}, RDB channel answer {rc:?}"),
    };
    let rdb = full.rdb.as_ref().unwrap_or_else(|| panic!("{name}: no RDB"));
    assert_eq!(matches!(rdb.framing, PayloadFraming::EofMark), ex.framing_eof, "{name}: framing");
    assert_eq!(rdb.size(), Some(rdb.transferred), "{name}: size vs bytes");
    assert!(rdb.transferred > 50_000, "{name}: RDB of 2,000 keys is {} bytes?", rdb.transferred);
    assert!(matches!(rdb.trailer, Some(TrailerCheck::Ok { .. })), "{name}: trailer {:?}", rdb.trailer);
    let header = rdb.header.as_ref().unwrap_or_else(|| panic!("{name}: no RDB header"));
    assert_eq!((header.magic, header.version, header.complete), (ex.magic, ex.rdb_version, true), "{name}");
    assert_eq!(rdb.server_version(), Some(ex.server_version), "{name}");
    assert_eq!(header.aux.repl_id.as_deref(), Some(replid.as_str()), "{name}: AUX repl-id vs the sync's replid");
    assert_eq!(header.aux.repl_offset, Some(0), "{name}: AUX repl-offset");
    assert_eq!(header.aux.redis_bits, Some(64), "{name}");
    let s = &full.stream;
    assert_eq!(
        [CommandName::Select, CommandName::Set, CommandName::Incr, CommandName::Ping].map(|n| s.count(n)),
        [1, 1, 1, ex.pings],
        "{name}: select/set/incr/ping on the full-sync link"
    );
    assert_eq!(s.count(CommandName::Other), 0, "{name}");
    assert_eq!(full.master_offset(), Some(ex.full_end), "{name}: offset at the end of the full-sync link");
    assert_eq!(full.stream.last_ack.map(|a| a.offset), Some(ex.full_end), "{name}: last ACK");
    let close = full.close.as_ref().map(|c| (c.by, c.phase));
    assert_eq!(close, Some((ClosedBy::Master, Phase::Streaming)), "{name}: CLIENT KILL closes from the master");
    assert_eq!(full.handshake.version.as_deref(), ex.replica_version, "{name}: replica version");
    assert!(full.handshake.capabilities.starts_with(&["eof".into(), "psync2".into()]), "{name}");
    assert_eq!(full.replica_endpoint().map(|e| e.starts_with("127.0.0.1:")), Some(true), "{name}");

    // The RDB channel of a dual-channel sync, paired with its main channel.
    if let Some(rc) = ex.rdb_channel {
        let rdb_link = link(r, rc);
        assert_eq!(rdb_link.kind, LinkKind::RdbChannel, "{name}");
        assert_eq!(rdb_link.partner, Some(r.ids[&ex.full]), "{name}: RDB channel's partner");
        assert_eq!(full.partner, Some(r.ids[&rc]), "{name}: main channel's partner");
        assert_eq!(
            phases(rdb_link),
            [Phase::Handshake, Phase::WaitingBgsave, Phase::RdbTransfer, Phase::Loading, Phase::Closed],
            "{name}: RDB channel phases"
        );
        assert!(rdb_link.handshake.rdb_only, "{name}");
        // How the two are paired: Valkey's RDB channel learns its client id in `$ENDOFF` and the main
        // channel names it (`REPLCONF set-rdb-client-id`); Redis's rdb channel names the main channel's id
        // (`REPLCONF main-ch-client-id`) that the master gave in `+RDBCHANNELSYNC`.
        match (&full.answer, &rdb_link.answer) {
            (Some(SyncAnswer::DualChannelSync { .. }), Some(SyncAnswer::EndOffset { client_id, .. })) => {
                assert!(matches!(rdb_link.request, Some(SyncRequest::Sync { .. })), "{name}");
                assert_eq!(full.handshake.set_rdb_client_id, Some(*client_id), "{name}");
            }
            (Some(SyncAnswer::RdbChannelSync { client_id, .. }), Some(SyncAnswer::FullResync { .. })) => {
                assert!(
                    matches!(rdb_link.request, Some(SyncRequest::Psync { replid: PsyncId::Unknown, offset: -1, .. })),
                    "{name}: the rdb channel asks `PSYNC ? -1`: {:?}",
                    rdb_link.request
                );
                assert_eq!(rdb_link.handshake.main_ch_client_id, Some(*client_id), "{name}");
                // The main channel's stream starts where the rdb channel's snapshot ends.
                assert_eq!(full.stream.start_offset, Some(0), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(rdb.via_rdb_channel, Some(r.ids[&rc].0), "{name}");
        assert_eq!(rdb_link.rdb.as_ref().map(|r| r.transferred), Some(rdb.transferred), "{name}");
        assert_eq!(full.phase_at(Phase::RdbTransfer), rdb_link.phase_at(Phase::RdbTransfer), "{name}");
        assert_eq!(full.phase_at(Phase::Loading), rdb_link.phase_at(Phase::Loading), "{name}");
        assert_eq!(rdb_link.stream.count(CommandName::Other) + rdb_link.stream.bytes, 0, "{name}: no stream on it");
    }

    // The partial resync after CLIENT KILL.
    let partial = link(r, ex.partial);
    assert_eq!(phases(partial), [Phase::Handshake, Phase::Streaming, Phase::Closed], "{name}: partial phases");
    assert_eq!(partial.sync_kind, Some(SyncKind::Partial), "{name}");
    assert!(
        matches!(partial.request, Some(SyncRequest::Psync { replid: PsyncId::Id(id), offset, .. }) if id == replid && offset == ex.full_end + 1),
        "{name}: {:?}",
        partial.request
    );
    assert!(matches!(partial.answer, Some(SyncAnswer::Continue { replid: Some(id), .. }) if id == replid), "{name}");
    assert!(partial.rdb.is_none(), "{name}");
    assert!(partial.psync_refusal.is_none(), "{name}: a partial resync was not refused");
    assert_eq!(partial.stream.count(CommandName::Set), 1, "{name}");
    assert_eq!(partial.master_offset(), Some(ex.partial_end), "{name}");
    assert_eq!(partial.stream.last_ack.map(|a| a.offset), Some(ex.partial_end), "{name}: last ACK");
    let close = partial.close.as_ref().map(|c| (c.by, c.phase));
    assert_eq!(close, Some((ClosedBy::Replica, Phase::Streaming)), "{name}: the stopped replica closes");

    // AUTH: used, as the default user, and nothing of the password anywhere.
    for (_, l) in r.links.iter() {
        if l.kind == LinkKind::Replication {
            assert_eq!(
                l.handshake.auth.as_ref().map(|a| a.user.clone()),
                ex.auth.then_some(None),
                "{name}: auth facts"
            );
        }
    }
    if ex.auth {
        let secret = "s3cret-pw";
        let hex_secret: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        for (_, l) in r.links.iter() {
            let debug = format!("{l:?}");
            let json = serde_json::to_string(l).expect("link serialises");
            for text in [&debug, &json] {
                assert!(!text.contains(secret) && !text.contains(&hex_secret), "{name}: password leaked");
            }
            let noauth = l.handshake.errors.iter().find(|e| e.code == replscope::wire::ErrorCode::Noauth);
            assert_eq!(
                noauth.map(|e| e.to),
                Some(Some(replscope::link::HandshakeStep::Ping)),
                "{name}: PING met NOAUTH"
            );
        }
        let events = format!("{:?}", r.events);
        assert!(!events.contains(secret) && !events.contains(&hex_secret), "{name}: password in events");
        assert!(
            !serde_json::to_string(&r.events.values().flatten().collect::<Vec<_>>())
                .unwrap_or_default()
                .contains(secret)
        );
    }
}

/// A two-channel sync's replica whose writes waited over a second while the RDB still crossed its other
/// channel stopped reading: its stream buffer was full. The same wait on one connection, or once the
/// replica is loading, is not that.
#[test]
fn a_replica_that_stops_reading_its_main_channel_mid_transfer_is_named() {
    use replscope::link::{Change, Side, TransportEvent};
    use std::time::Duration;
    // A wait of `secs` that ends `secs + later` seconds after the read `after` picks.
    let wait_later = |name: &str, after: &dyn Fn(&support::Read) -> bool, secs: u64, later: u64| {
        let reads = load(name);
        let cut = reads.iter().position(after).unwrap_or_else(|| panic!("{name}: no such read")) + 1;
        let mut r = replay(&reads[..cut], whole);
        let at = reads[cut - 1].at.plus(Duration::from_secs(secs + later));
        let main = r.ids[&1];
        let blocked = TransportEvent::WriteBlocked { side: Side::Replica, duration: Duration::from_secs(secs) };
        r.links.on_transport(main, blocked, at);
        let named = r.links.last_changes().iter().filter(|c| matches!(c, Change::ReplicaBufferFull { .. })).count();
        (r.links.get(main).and_then(|l| l.replica_buffer_full), named)
    };
    let wait = |name: &str, after: &dyn Fn(&support::Read) -> bool, secs: u64| wait_later(name, after, secs, 0);
    let mid_rdb = |r: &support::Read| r.conn == 2 && r.bytes.len() > 10_000;
    let (full, named) = wait("redis-8.2.3-rdbchannel-disk-load.jsonl", &mid_rdb, 3);
    let full = full.expect("named");
    assert_eq!((full.not_reading, named), (Duration::from_secs(3), 1));
    // Shorter waits are hiccups.
    assert_eq!(wait("redis-8.2.3-rdbchannel-disk-load.jsonl", &mid_rdb, 0).0, None);
    // One connection: the master's output buffer takes it, as it always did.
    let one_channel = |r: &support::Read| r.conn == 1 && r.bytes.len() > 10_000;
    assert_eq!(wait("redis-8.2.3-disk.jsonl", &one_channel, 3).0, None);
    // A replica busy loading the RDB may rightly not read.
    let rdb_done = |r: &support::Read| r.conn == 2 && r.eof;
    assert_eq!(wait_later("redis-8.2.3-rdbchannel-disk-load.jsonl", &rdb_done, 3, 1).0, None);
    // Valkey's dual channel, too.
    assert!(wait("valkey-9.1.2-dual.jsonl", &mid_rdb, 3).0.is_some());
}
