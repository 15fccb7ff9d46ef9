//! What an operator sees in an everyday fleet, on real servers: backups (`redis-cli --rdb`) and
//! `redis-cli --replica` sessions through the proxy are snapshot clients, not failing replicas; a
//! replica that is gone loses its series after `--forget-after`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::proxy::ProxyProc;
use support::server::{Server, redis_server};

fn redis_cli() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|p| p.join("redis-cli"))
        .find(|p| p.is_file())
        .expect("redis-cli on PATH (Debian/Ubuntu: apt-get install redis-tools)")
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sum(m: &support::proxy::Metrics, name: &str) -> f64 {
    m.all(name).iter().map(|(_, v)| v).sum()
}

#[test]
fn backups_and_replica_sessions_are_snapshots_not_failures() {
    let bin = redis_server();
    let master = Server::start(&bin, &[]);
    master.pipeline(&(0..2000).map(|i| vec!["SET".into(), format!("k{i}"), "v".repeat(100)]).collect::<Vec<_>>());
    let proxy = ProxyProc::start(master.port, &[]);
    // A real replica, streaming, from the same host as the tools.
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    master.wait_replica_online();
    let cli = redis_cli();
    let port = proxy.listen_port.to_string();
    let dir = std::env::temp_dir().join(format!("replscope-operators-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // Two backups within seconds of each other.
    for n in 1..=2 {
        let file = dir.join(format!("dump{n}.rdb"));
        let out = Command::new(&cli)
            .args(["-h", "127.0.0.1", "-p", &port, "--rdb"])
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --rdb");
        assert!(out.status.success(), "redis-cli --rdb: {}", String::from_utf8_lossy(&out.stderr));
        let rdb = std::fs::read(&file).expect("the dump");
        assert!(rdb.starts_with(b"REDIS") && rdb.len() > 10_000, "a whole RDB: {} bytes", rdb.len());
    }
    // A `redis-cli --replica` session that watches a write go by, then is stopped.
    let mut session = Command::new(&cli)
        .args(["-h", "127.0.0.1", "-p", &port, "--replica"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli --replica");
    wait("the session streaming", 20, || {
        proxy
            .links()
            .iter()
            .any(|l| l["kind"] == "snapshot" && l["open"] == true && l["phases"].to_string().contains("streaming"))
            || proxy
                .links()
                .iter()
                .any(|l| l["kind"] == "snapshot" && l["open"] == true && l["rdb"]["completed_at"].is_u64())
    });
    assert_eq!(proxy.metrics().get("replscope_links", &[("kind", "snapshot")]), Some(1.0));
    master.cmd(&["SET", "watched", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").args(["-INT", &session.id().to_string()]).status();
    let _ = session.wait();

    let links = || proxy.links().into_iter().filter(|l| l["kind"] == "snapshot").collect::<Vec<_>>();
    wait("three snapshots ended and diagnosed", 20, || {
        let l = links();
        l.len() == 3 && l.iter().all(|l| !l["diagnosis"].is_null())
    });
    for l in links() {
        assert_eq!(l["diagnosis"]["cause"], "completed", "{l}");
        assert_eq!(l["replica"], serde_json::Value::Null, "a snapshot client is no replica: {l}");
        assert!(l["psync_refusal"].is_null(), "{l}");
    }
    // Let any window that could still call them failures pass (a replica has 10 s to come back).
    std::thread::sleep(Duration::from_secs(11));
    let m = proxy.metrics();
    assert_eq!(sum(&m, "replscope_disconnects_total"), 0.0, "{:?}", m.all("replscope_disconnects_total"));
    assert_eq!(sum(&m, "replscope_full_sync_failures_total"), 0.0);
    assert_eq!(m.get("replscope_links", &[("kind", "snapshot")]), Some(0.0));
    assert_eq!(m.get("replscope_links", &[("kind", "replication")]), Some(1.0), "the real replica streams on");
    let warned: Vec<_> = proxy.logs().into_iter().filter(|l| l["level"] == "WARN").collect();
    assert!(warned.is_empty(), "no WARN: {warned:?}");
    assert!(
        proxy.logs().iter().filter(|l| l["cause"] == "completed" && l["level"] == "INFO").count() == 3,
        "each snapshot's end is one INFO line"
    );
    drop(replica);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_replica_that_is_gone_loses_its_series_after_forget_after() {
    let bin = redis_server();
    let master = Server::start(&bin, &[]);
    let proxy = ProxyProc::start(master.port, &["--forget-after", "5s"]);
    let mut replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    let ep = format!("127.0.0.1:{}", replica.port);
    master.wait_replica_online();
    wait("an ACK age", 10, || proxy.metrics().get("replscope_replica_ack_age_seconds", &[("replica", &ep)]).is_some());
    replica.kill();
    wait("the link closed", 10, || proxy.metrics().get("replscope_links", &[("kind", "replication")]) == Some(0.0));
    // Gone, not yet forgotten: its counters remain, its ACK age does not rise.
    let m = proxy.metrics();
    assert_eq!(m.get("replscope_replica_ack_age_seconds", &[("replica", &ep)]), None, "no open link, no ACK age");
    assert!(m.get("replscope_forwarded_bytes_total", &[("replica", &ep)]).is_some());
    let closed_at = Instant::now();
    wait("every series of the replica gone", 40, || {
        let (_, text) = proxy.get("/metrics");
        !text.contains(&format!("replica=\"{ep}\""))
    });
    // Its cause settles first (10 s for a replica to come back), then the 5 s run.
    assert!(closed_at.elapsed() >= Duration::from_secs(5), "forgotten after {:?}", closed_at.elapsed());
    let (_, replicas) = proxy.get("/api/replicas");
    assert!(!replicas.contains(&ep), "its record is gone too: {replicas}");
    assert!(proxy.logs().iter().any(|l| l["replica"] == ep.as_str() && l["cause"] == "replica_left"));
    assert!(
        proxy
            .logs()
            .iter()
            .any(|l| l["replica"] == ep.as_str() && l["message"].as_str().is_some_and(|m| m.contains("forget-after")))
    );
}
