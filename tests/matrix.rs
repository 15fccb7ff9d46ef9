//! The shipped `replscope proxy` binary between a master and a replica of every server version found
//! (`REPLSCOPE_SERVERS`, else `redis-server` on PATH): a diskless full sync (on Valkey 8+, dual-channel:
//! two connections through the proxy joined into one story), a write load, then `CLIENT KILL TYPE replica`
//! and the partial resync. `tests/live.rs` checks the core on the same matrix through a test relay; this
//! checks the driver, metrics and API that users run, against what each server reports.

mod support;

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

fn scenario(bin: &ServerBin) {
    let dual = bin.valkey && bin.version >= (8, 0, 0);
    let ctx = format!("{} ({})", bin.name, if dual { "dual-channel" } else { "diskless" });
    let mut master_args =
        vec!["--rdbcompression", "no", "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"];
    if dual {
        master_args.extend(["--dual-channel-replication-enabled", "yes"]);
    }
    let master = Server::start(bin, &master_args);
    master.cmd(&["DEBUG", "POPULATE", "20000", "key", "300"]);
    let proxy = ProxyProc::start(master.port, &[]);
    let port = proxy.listen_port.to_string();
    let mut replica_args = vec!["--replicaof", "127.0.0.1", &port];
    if dual {
        replica_args.extend(["--dual-channel-replication-enabled", "yes"]);
    }
    let replica = Server::start(bin, &replica_args);
    let ep = format!("127.0.0.1:{}", replica.port);
    let commands: Vec<Vec<String>> = (0..2000).map(|i| vec!["SET".into(), format!("w:{i}"), "v".repeat(100)]).collect();
    master.pipeline(&commands);
    let offset = at_rest(&master, &replica, &proxy, &ep, &ctx);
    assert_eq!(digest(&master), digest(&replica), "{ctx}: datasets differ after the full sync");

    let m = proxy.metrics();
    assert_eq!(m.get("replscope_syncs_total", &[("replica", &ep), ("kind", "full")]), Some(1.0), "{ctx}\n{}", m.text);
    assert_eq!(m.get("replscope_rdb_checksum_failures_total", &[]), None, "{ctx}");
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
    let phases: Vec<&str> =
        main["phases"].as_array().into_iter().flatten().filter_map(|p| p["phase"].as_str()).collect();
    assert_eq!(phases, ["handshake", "waiting_bgsave", "rdb_transfer", "loading", "streaming"], "{ctx}");
    let rdb = &main["rdb"];
    assert_eq!((rdb["framing"].as_str(), rdb["trailer"]["status"].as_str()), (Some("eof_mark"), Some("ok")), "{ctx}");
    let (ma, mi, pa) = bin.version;
    let written_by = if bin.valkey { &rdb["header"]["aux"]["valkey_ver"] } else { &rdb["header"]["aux"]["redis_ver"] };
    assert_eq!(written_by.as_str(), Some(format!("{ma}.{mi}.{pa}").as_str()), "{ctx}: the version in the RDB");
    assert_eq!(main["master_offset"].as_i64(), Some(offset), "{ctx}");
    if dual {
        let rdb_channel = links
            .iter()
            .find(|l| l["kind"] == "rdb_channel")
            .unwrap_or_else(|| panic!("{ctx}: no RDB channel through the proxy: {links:?}"));
        assert_eq!(rdb_channel["partner"], main["id"], "{ctx}: the RDB channel is joined to its main channel");
        assert_eq!(main["partner"], rdb_channel["id"], "{ctx}");
        assert_eq!(rdb_channel["open"], false, "{ctx}: the RDB channel closes once it delivered");
        assert!(rdb_channel["diagnosis"].is_null(), "{ctx}: its close is the normal end, not a drop");
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
fn the_proxy_binary_on_every_server_version() {
    for bin in servers() {
        scenario(&bin);
    }
}
