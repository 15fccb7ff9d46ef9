//! Refused partial resyncs and the master's write rate, on real servers through the proxy: a backlog too
//! small for the gap (made the way it happens: the replica stops, the master kills its link and moves on),
//! a master that restarts with a new history, and the write rate under a steady load.

mod support;

use std::time::{Duration, Instant};

use support::proxy::ProxyProc;
use support::server::{Server, redis_server};

fn offset(server: &Server, key: &str) -> i64 {
    server.info("replication").get(key).and_then(|v| v.parse().ok()).unwrap_or(-1)
}

fn in_sync(master: &Server, replica: &Server) {
    master.wait_for("the replica to catch up", 60, || {
        let m = offset(master, "master_repl_offset");
        (replica.info("replication").get("master_link_status").map(String::as_str) == Some("up")
            && m == offset(replica, "slave_repl_offset"))
        .then_some(())
    });
}

fn digest(server: &Server) -> String {
    format!("{:?}", server.cmd(&["DEBUG", "DIGEST"]))
}

#[test]
fn a_gap_larger_than_the_backlog_is_offset_out_of_range_with_its_size() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--repl-backlog-size", "16kb", "--repl-diskless-sync", "no"]);
    let proxy = ProxyProc::start(master.port, &["--assume-backlog", "16kb"]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    master.cmd(&["SET", "before", "1"]);
    in_sync(&master, &replica);
    let before = offset(&master, "master_repl_offset");

    replica.signal("STOP");
    master.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    let value = "x".repeat(1000);
    let commands: Vec<Vec<String>> = (0..1100).map(|i| vec!["SET".into(), format!("gap:{i}"), value.clone()]).collect();
    master.pipeline(&commands);
    let after = offset(&master, "master_repl_offset");
    assert!(after - before >= 1_000_000, "wrote {} bytes", after - before);
    replica.signal("CONT");
    in_sync(&master, &replica);
    assert_eq!(digest(&master), digest(&replica));

    let links = proxy.links();
    // The link CLIENT KILL ended (just after its small sync, perhaps before the replica's first ACK) is
    // a master close, not a buffer that overflowed: nothing had piled up.
    assert_eq!(links[0]["diagnosis"]["first"], "master_closed", "{}", links[0]["diagnosis"]);
    let refused =
        links.iter().rev().find(|l| l["psync_refusal"]["reason"] == "offset_out_of_range").expect("a refused PSYNC");
    let gap = refused["psync_refusal"]["gap_bytes"].as_f64().expect("gap");
    let moved = (after - before) as f64;
    assert!((gap / moved - 1.0).abs() <= 0.05, "gap {gap} vs the master's offset difference {moved}");
    assert_eq!(
        refused["psync_refusal"]["asked_offset"].as_i64(),
        Some(before + 1),
        "the replica asked for its next byte"
    );

    let ep = format!("127.0.0.1:{}", replica.port);
    let m = proxy.metrics();
    assert_eq!(
        m.get("replscope_psync_rejected_total", &[("replica", &ep), ("reason", "offset_out_of_range")]),
        Some(1.0)
    );
    // The first sync (`PSYNC ? -1`) asked to resume nothing: it is no refusal.
    assert_eq!(m.get("replscope_psync_rejected_total", &[("replica", &ep), ("reason", "no_history")]), None);
    assert_eq!(m.get("replscope_syncs_total", &[("replica", &ep), ("kind", "full")]), Some(2.0));
    assert_eq!(links.iter().filter(|l| !l["psync_refusal"].is_null()).count(), 1, "only the resume that failed");
    assert_eq!(m.get("replscope_psync_gap_bytes", &[("replica", &ep)]), Some(gap));
    // Judged against the backlog the operator stated, which says so, with a size that would have covered it.
    assert_eq!(
        refused["psync_refusal"]["backlog"],
        serde_json::json!({"setting": "repl-backlog-size", "value": "16kb", "source": "assumed"})
    );
    let why = refused["refusal_explanation"].as_str().expect("explained");
    assert!(why.contains("more than repl-backlog-size 16kb (assumed) holds"), "{why}");
    let suggested: f64 = why
        .split("raise repl-backlog-size to at least ")
        .nth(1)
        .and_then(|rest| rest.split("mb").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no suggested size: {why}"));
    assert!(suggested * 1048576.0 >= gap, "suggested {suggested}mb for a gap of {gap} bytes");
    let logs = proxy.logs();
    assert!(logs.iter().any(|l| {
        l["message"].as_str().is_some_and(|s| {
            s.starts_with("partial resync refused: ") && s.contains("more than repl-backlog-size 16kb (assumed) holds")
        })
    }));
}

#[test]
fn a_master_restarted_without_its_history_is_a_replid_mismatch() {
    let bin = redis_server();
    // Diskless, so no RDB is left behind for the restarted master to restore its replication id from.
    let mut master = Server::start(&bin, &["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]);
    let proxy = ProxyProc::start(master.port, &[]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    master.cmd(&["SET", "a", "1"]);
    in_sync(&master, &replica);
    master.restart();
    master.cmd(&["SET", "b", "2"]);
    in_sync(&master, &replica);
    let links = proxy.links();
    let last = links.iter().rev().find(|l| !l["psync_refusal"].is_null()).expect("a refused PSYNC");
    assert_eq!(last["psync_refusal"]["reason"], "replid_mismatch", "{}", last["psync_refusal"]);
    assert!(last["psync_refusal"]["gap_bytes"].is_null(), "no gap across histories");
    assert_ne!(last["psync_refusal"]["asked_replid"], last["psync_refusal"]["master_replid"]);
}

#[test]
fn the_master_write_rate_follows_a_steady_load() {
    let bin = redis_server();
    let master = Server::start(&bin, &[]);
    let proxy = ProxyProc::start(master.port, &[]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    master.cmd(&["SET", "warm", "up"]);
    in_sync(&master, &replica);

    let load_writer = support::load::Load::start(master.port, "load", 50, 200, u64::MAX, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(2));
    let (t0, o0) = (Instant::now(), offset(&master, "master_repl_offset"));
    std::thread::sleep(Duration::from_secs(4));
    let (t1, o1) = (Instant::now(), offset(&master, "master_repl_offset"));
    let ours = proxy.metrics().get("replscope_master_write_rate_bytes_per_second", &[]).expect("write rate");
    load_writer.stop();
    let actual = (o1 - o0) as f64 / t1.duration_since(t0).as_secs_f64();
    assert!(actual > 100_000.0, "the load writes {actual:.0} B/s");
    assert!((ours / actual - 1.0).abs() <= 0.30, "our write rate {ours:.0} B/s vs the master's {actual:.0} B/s");
}

#[test]
fn a_full_sync_s_forecast_pile_and_the_doomed_flag() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--rdbcompression", "no", "--repl-diskless-sync", "no"]);
    master.cmd(&["DEBUG", "POPULATE", "30000", "key", "300"]);
    let proxy = ProxyProc::start(
        master.port,
        &[
            "--enable-faults",
            "--fault",
            "bandwidth rate=2MiB/s direction=master-to-replica when=phase=rdb-transfer",
            "--assume-output-buffer-limit",
            "1mb 1mb 0",
        ],
    );
    // Replica A streams: the write rate comes from its stream.
    let a = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    in_sync(&master, &a);

    let load_writer = support::load::Load::start(master.port, "load", 20, 200, u64::MAX, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(3));

    // Replica B does a full sync at 2 MiB/s; halfway, the forecast and the doomed flag.
    let (t0, o0) = (Instant::now(), offset(&master, "master_repl_offset"));
    let b = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    let ep_b = format!("127.0.0.1:{}", b.port);
    master.wait_for("B halfway through its RDB", 60, || {
        let links = proxy.links();
        let l = links.iter().find(|l| l["replica"] == ep_b.as_str() && l["open"] == true)?;
        let (done, size) = (l["rdb"]["transferred"].as_f64()?, l["rdb"]["announced_size"].as_f64()?);
        (done / size >= 0.5).then_some(())
    });
    let m = proxy.metrics();
    let forecast = m.get("replscope_sync_buffer_forecast_bytes", &[("replica", &ep_b)]).expect("forecast");
    assert_eq!(
        m.get("replscope_sync_doomed", &[("replica", &ep_b)]),
        Some(1.0),
        "{forecast} B forecast vs an assumed 1mb limit"
    );
    in_sync(&master, &b);
    let (t1, o1) = (Instant::now(), offset(&master, "master_repl_offset"));
    load_writer.stop();

    let load = (o1 - o0) as f64 / t1.duration_since(t0).as_secs_f64();
    let links = proxy.links();
    let l = links.iter().find(|l| l["replica"] == ep_b.as_str()).expect("B's link");
    let phase_at = |name: &str| {
        l["phases"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["phase"] == name))
            .and_then(|p| p["at"].as_f64())
            .expect(name)
    };
    let sync_seconds = (phase_at("loading") - phase_at("waiting_bgsave")) / 1e6;
    let piled = load * sync_seconds;
    assert!(sync_seconds > 3.0, "a throttled transfer of {sync_seconds} s");
    assert!(
        (forecast / piled - 1.0).abs() <= 0.35,
        "forecast {forecast:.0} B vs {piled:.0} B piled ({load:.0} B/s × {sync_seconds:.1} s)"
    );
    let after = proxy.metrics();
    assert_eq!(after.get("replscope_sync_buffer_forecast_bytes", &[("replica", &ep_b)]), Some(0.0), "no full sync now");
    assert_eq!(after.get("replscope_sync_doomed", &[("replica", &ep_b)]), Some(0.0));
}
