//! The shipped `replscope proxy` binary between a master and a replica of every server version found
//! (`REPLSCOPE_SERVERS`, else `redis-server` on PATH), in every sync mode the version offers: disk,
//! diskless, and on two connections (Valkey 8+'s dual channel, Redis 8's rdb channel: joined into one
//! story, the RDB from the second connection, offsets and lag from the main one). A write load runs through
//! the sync, then `CLIENT KILL TYPE replica` and the partial resync. `tests/live.rs` checks the core on the same matrix through a test relay; this
//! checks the driver, metrics and API that users run, against what each server reports.

mod support;

use std::time::Duration;

use support::load::Load;
use support::modes::SyncMode;
use support::proxy::ProxyProc;
use support::server::{Server, ServerBin, servers};

fn info_i64(server: &Server, key: &str) -> Option<i64> {
    server.info("replication").get(key)?.parse().ok()
}

fn digest(server: &Server) -> String {
    format!("{:?}", server.cmd(&["DEBUG", "DIGEST"]))
}

/// Waits until master, replica and proxy agree on the offset, the replica has acknowledged it, and
/// `streams` links of the replica's are streaming.
fn at_rest(master: &Server, replica: &Server, proxy: &ProxyProc, ep: &str, ctx: &str) -> i64 {
    master.wait_for(&format!("{ctx}: offsets to agree and the lag to reach 0"), 60, || {
        let m = info_i64(master, "master_repl_offset")?;
        let r = info_i64(replica, "slave_repl_offset")?;
        let metrics = proxy.metrics();
        let labels = [("replica", ep)];
        let ours = metrics.get("replscope_master_offset_bytes", &labels)? as i64;
        let ack = metrics.get("replscope_replica_ack_offset_bytes", &labels)? as i64;
        let lag = metrics.get("replscope_replica_lag_bytes", &labels)?;
        let streaming = metrics.get("replscope_link_phase", &[("replica", ep), ("phase", "streaming")])?;
        (m > 0 && m == r && m == ours && m == ack && lag == 0.0 && streaming == 1.0).then_some(m)
    })
}

fn scenario(bin: &ServerBin, mode: SyncMode) {
    let two_channels = mode == SyncMode::TwoChannel;
    let ctx = format!("{} ({})", bin.name, mode.name(bin));
    let mut master_args = vec!["--rdbcompression", "no"];
    master_args.extend(mode.master_args(bin));
    let master = Server::start(bin, &master_args);
    master.cmd(&["DEBUG", "POPULATE", "20000", "key", "300"]);
    // On two channels the RDB must still be crossing when the load's writes reach the main channel: a
    // 6 MB RDB crosses loopback in a few milliseconds, between two writes, so it is slowed to ~0.4 s.
    let slow = ["--enable-faults", "--fault", "bandwidth rate=16MiB/s direction=master-to-replica"];
    let proxy = ProxyProc::start(master.port, if two_channels { &slow } else { &[] });
    let port = proxy.listen_port.to_string();
    let mut replica_args = vec!["--replicaof", "127.0.0.1", &port];
    replica_args.extend(mode.replica_args(bin));
    // A write load from before the replica starts until its sync is over: on two channels the main
    // channel streams these writes while the RDB still crosses the other one.
    let load = Load::start(master.port, "w", 20, 100, 5_000, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(200));
    let replica = Server::start(bin, &replica_args);
    let ep = format!("127.0.0.1:{}", replica.port);
    replica.wait_for(&format!("{ctx}: the replica's link to come up"), 60, || {
        (replica.info("replication").get("master_link_status").map(String::as_str) == Some("up")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    load.stop();
    let offset = at_rest(&master, &replica, &proxy, &ep, &ctx);
    assert_eq!(digest(&master), digest(&replica), "{ctx}: datasets differ after the full sync");

    let m = proxy.metrics();
    assert_eq!(m.get("replscope_syncs_total", &[("replica", &ep), ("kind", "full")]), Some(1.0), "{ctx}\n{}", m.text);
    assert_eq!(m.get("replscope_rdb_checksum_failures_total", &[("replica", &ep)]), Some(0.0), "{ctx}");
    assert_eq!(m.get("replscope_desyncs_total", &[]), None, "{ctx}: a decoder gave up\n{}", m.text);
    assert_eq!(m.get("replscope_links", &[("kind", "replication")]), Some(1.0), "{ctx}");
    let transferred = m.get("replscope_rdb_transferred_bytes", &[("replica", &ep)]).unwrap_or(0.0);
    assert!(transferred > 4_000_000.0, "{ctx}: an RDB of 20,000 × 300 bytes is {transferred} bytes?");
    assert_eq!(m.get("replscope_rdb_size_bytes", &[("replica", &ep)]), Some(transferred), "{ctx}");

    let links = proxy.links();
    let main = links
        .iter()
        .find(|l| l["kind"] == "replication" && l["sync_kind"] == "full")
        .unwrap_or_else(|| panic!("{ctx}: no full-sync link: {links:?}"));
    let answer = main["answer"]["answer"].as_str();
    let expected = match mode {
        SyncMode::TwoChannel if bin.valkey => "dual_channel_sync",
        SyncMode::TwoChannel => "rdb_channel_sync",
        _ => "full_resync",
    };
    assert_eq!(answer, Some(expected), "{ctx}: {}", main["answer"]);
    let sets =
        main["stream"]["commands"].as_object().and_then(|c| c.iter().find(|(k, _)| k.eq_ignore_ascii_case("set")));
    assert!(sets.is_some(), "{ctx}: the write load crossed the main channel: {}", main["stream"]);
    let phases: Vec<&str> =
        main["phases"].as_array().into_iter().flatten().filter_map(|p| p["phase"].as_str()).collect();
    assert_eq!(phases, ["handshake", "waiting_bgsave", "rdb_transfer", "loading", "streaming"], "{ctx}");
    let rdb = &main["rdb"];
    let framing = if mode == SyncMode::Disk {
        rdb["framing"]["sized"]["len"].as_f64() == Some(transferred)
    } else {
        rdb["framing"] == "eof_mark"
    };
    assert!(framing, "{ctx}: {mode:?} framing {}", rdb["framing"]);
    assert_eq!(rdb["trailer"]["status"], "ok", "{ctx}");
    let rate = main["rdb_rate_bytes_per_second"].as_f64().unwrap_or(0.0);
    assert!(rate > 0.0, "{ctx}: an RDB rate on the main link's story: {}", main["rdb_rate_bytes_per_second"]);
    let (ma, mi, pa) = bin.version;
    let written_by = if bin.valkey { &rdb["header"]["aux"]["valkey_ver"] } else { &rdb["header"]["aux"]["redis_ver"] };
    assert_eq!(written_by.as_str(), Some(format!("{ma}.{mi}.{pa}").as_str()), "{ctx}: the version in the RDB");
    assert_eq!(main["master_offset"].as_i64(), Some(offset), "{ctx}");
    if two_channels {
        let rdb_channel = links
            .iter()
            .find(|l| l["kind"] == "rdb_channel")
            .unwrap_or_else(|| panic!("{ctx}: no RDB channel through the proxy: {links:?}"));
        assert_eq!(rdb_channel["partner"], main["id"], "{ctx}: the RDB channel is joined to its main channel");
        assert_eq!(main["partner"], rdb_channel["id"], "{ctx}");
        assert_eq!(rdb_channel["open"], false, "{ctx}: the RDB channel closes once it delivered");
        assert!(rdb_channel["diagnosis"].is_null(), "{ctx}: its close is the normal end, not a drop");
        // The RDB crossed the rdb channel, and the main channel's story carries it: size, checksum, rate.
        assert_eq!(rdb["via_rdb_channel"], rdb_channel["id"], "{ctx}: {rdb}");
        assert_eq!(rdb_channel["rdb"]["transferred"], rdb["transferred"], "{ctx}");
        assert_eq!(rdb_channel["rdb"]["trailer"], rdb["trailer"], "{ctx}: the checksum the rdb channel carried");
        let channel_rate = rdb_channel["rdb_rate_bytes_per_second"].as_f64().unwrap_or(0.0);
        assert!((rate / channel_rate - 1.0).abs() < 1e-9, "{ctx}: rate {rate} vs the rdb channel's {channel_rate}");
        assert!(rdb_channel["stream"]["commands"].as_object().is_none_or(|c| c.is_empty()), "{ctx}: no stream on it");
        // The two ran side by side: the main channel streamed writes before the RDB was through.
        let first_write = main["stream"]["first_command_at"].as_f64().expect("a first command");
        let rdb_done = rdb_channel["close"]["at"].as_f64().expect("the rdb channel closed");
        assert!(first_write < rdb_done, "{ctx}: first write at {first_write}, RDB done at {rdb_done}");
    } else {
        assert!(rdb["via_rdb_channel"].is_null(), "{ctx}: one connection: {rdb}");
        assert!(links.iter().all(|l| l["kind"] != "rdb_channel"), "{ctx}");
    }

    // The partial resync after the master kills the link.
    master.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    master.cmd(&["SET", "after", "kill"]);
    master.wait_for(&format!("{ctx}: a partial resync"), 30, || {
        proxy.metrics().get("replscope_syncs_total", &[("replica", &ep), ("kind", "partial")]).filter(|n| *n == 1.0)
    });
    let after = at_rest(&master, &replica, &proxy, &ep, &ctx);
    assert!(after > offset, "{ctx}");
    assert_eq!(digest(&master), digest(&replica), "{ctx}: datasets differ after the partial resync");
    let links = proxy.links();
    let old = links.iter().find(|l| l["id"] == main["id"]).expect("the first link is still shown");
    assert_eq!(old["close"]["by"], "master", "{ctx}: CLIENT KILL closes from the master");
    assert_eq!(old["diagnosis"]["first"], "master_closed", "{ctx}: {}", old["diagnosis"]);
    let partial = links.iter().find(|l| l["sync_kind"] == "partial").expect("the partial link");
    assert_eq!(partial["answer"]["answer"], "continue", "{ctx}: {}", partial["answer"]);
    assert_eq!(proxy.metrics().get("replscope_desyncs_total", &[]), None, "{ctx}");
    eprintln!("{ctx}: full sync and partial resync through the proxy agree with the servers");
}

#[test]
fn the_proxy_binary_on_every_server_version_and_sync_mode() {
    for bin in servers() {
        for mode in SyncMode::offered_by(&bin) {
            scenario(&bin, mode);
        }
    }
}
