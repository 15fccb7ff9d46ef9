//! Fault injection between real servers (`redis-server` from PATH or `$REPLSCOPE_REDIS_SERVER`): a
//! throttled full sync, a cut at 50 % of the RDB, a stalled replica that its master times out, latency
//! and a data limit on a streaming link; and the fault API's rules (403, 400, tokens off loopback).

mod support;

use std::time::{Duration, Instant};

use support::proxy::{ProxyProc, http_get};
use support::server::{Server, redis_server};

fn link_up(replica: &Server, secs: u64) {
    replica.wait_for("the replica's link to come up", secs, || {
        (replica.info("replication").get("master_link_status").map(String::as_str) == Some("up")).then_some(())
    });
}

fn digest(server: &Server) -> String {
    format!("{:?}", server.cmd(&["DEBUG", "DIGEST"]))
}

fn offset(server: &Server, key: &str) -> i64 {
    server.info("replication").get(key).and_then(|v| v.parse().ok()).unwrap_or(-1)
}

fn in_sync(master: &Server, replica: &Server) {
    master.wait_for("the replica to catch up", 30, || {
        let m = offset(master, "master_repl_offset");
        (m > 0 && m == offset(replica, "slave_repl_offset")).then_some(())
    });
}

/// `replscope fault …` against a proxy; panics unless it succeeds; returns stdout.
fn fault_cli(proxy: &ProxyProc, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .arg("fault")
        .args(args)
        .args(["--http", &proxy.http])
        .output()
        .expect("replscope fault");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Milliseconds since midnight of a Redis log line (`pid:S 25 Nov 2026 05:10:11.123 * …`).
fn log_time(line: &str) -> Option<f64> {
    let clock = line.split_whitespace().nth(4)?;
    let mut parts = clock.split(':');
    let (h, m, s): (f64, f64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(((h * 60.0 + m) * 60.0 + s) * 1000.0)
}

#[test]
fn bandwidth_caps_a_full_sync_to_the_chosen_rate() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--rdbcompression", "no", "--repl-diskless-sync", "no"]);
    master.cmd(&["DEBUG", "POPULATE", "100000", "key", "250"]);
    let proxy = ProxyProc::start(master.port, &["--enable-faults"]);
    let added = fault_cli(
        &proxy,
        &["add", "bandwidth", "--rate", "4MiB/s", "--direction", "master-to-replica", "--when", "phase=rdb-transfer"],
    );
    assert!(added.starts_with("added fault 1") && added.contains("bandwidth"), "{added}");
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    link_up(&replica, 60);
    let ep = format!("127.0.0.1:{}", replica.port);

    // The replica's own log: "receiving N bytes from master" … "Flushing old data".
    let log = replica.log();
    let receiving = log.lines().find(|l| l.contains("bytes from master to disk")).expect("the receiving line");
    let size: f64 = receiving
        .split("receiving ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the size");
    assert!(size >= 24.0 * 1024.0 * 1024.0, "the RDB is {size} bytes; the test wants ≥ 24 MiB");
    let done = log.lines().find(|l| l.contains("Flushing old data")).expect("the end-of-transfer line");
    let secs = (log_time(done).expect("time") - log_time(receiving).expect("time")) / 1000.0;
    let target = 4.0 * 1024.0 * 1024.0;
    let replica_rate = size / secs;
    assert!((replica_rate / target - 1.0).abs() <= 0.10, "replica's timing: {replica_rate:.0} B/s over {secs} s");

    let m = proxy.metrics();
    let ours = m.get("replscope_rdb_transfer_rate_bytes_per_second", &[("replica", &ep)]).expect("rate");
    assert!((ours / target - 1.0).abs() <= 0.10, "our metric: {ours:.0} B/s");
    assert!(m.get("replscope_fault_actions_total", &[("kind", "bandwidth")]).is_some_and(|n| n >= 1.0));
    assert_eq!(m.get("replscope_faults_active", &[("kind", "bandwidth")]), Some(1.0));
    let links = proxy.links();
    assert_eq!(links[0]["faults"][0]["kind"], "bandwidth", "{}", links[0]["faults"]);
    assert!(links[0]["faults"][0]["action"].as_str().is_some_and(|a| a.contains("fired (in rdb_transfer)")));
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["links", "--http", &proxy.http])
        .output()
        .expect("links");
    assert!(String::from_utf8_lossy(&table.stdout).contains("bandwidth#1"));
    assert_eq!(digest(&master), digest(&replica));
}

#[test]
fn a_cut_at_half_the_rdb_loops_once_then_the_sync_completes() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--rdbcompression", "no", "--repl-diskless-sync", "no"]);
    master.cmd(&["DEBUG", "POPULATE", "40000", "key", "250"]);
    let proxy =
        ProxyProc::start(master.port, &["--enable-faults", "--fault", "cut how=reset when=rdb-percent=50 times=1"]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    link_up(&replica, 60);
    in_sync(&master, &replica);
    assert_eq!(digest(&master), digest(&replica));
    assert!(replica.log().contains("I/O error trying to sync with MASTER"), "{}", replica.log_tail());

    let links = proxy.links();
    let first = &links[0];
    assert_eq!((first["close"]["by"].as_str(), first["close"]["how"].as_str()), (Some("proxy"), Some("reset")));
    assert_eq!(first["close"]["phase"], "rdb_transfer");
    let (done, size) =
        (first["rdb"]["transferred"].as_f64().unwrap_or(0.0), first["rdb"]["announced_size"].as_f64().unwrap_or(1.0));
    assert!((0.49..0.60).contains(&(done / size)), "cut at {:.1}% of the RDB", done / size * 100.0);
    assert!(first["faults"].as_array().is_some_and(|f| f.iter().any(|t| t["kind"] == "cut")));
    let last = links.last().expect("links");
    assert_eq!((last["open"].as_bool(), last["sync_kind"].as_str()), (Some(true), Some("full")));
    assert!(last["faults"].as_array().is_some_and(Vec::is_empty), "the fault fired once only");

    let ep = format!("127.0.0.1:{}", replica.port);
    let m = proxy.metrics();
    assert_eq!(m.get("replscope_syncs_total", &[("replica", &ep), ("kind", "full")]), Some(2.0));
    assert_eq!(
        m.get(
            "replscope_disconnects_total",
            &[("replica", &ep), ("closed_by", "proxy"), ("phase", "rdb_transfer"), ("cause", "fault_injected")]
        ),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(first["diagnosis"]["cause"], "fault_injected");
    assert_eq!(m.get("replscope_faults_active", &[("kind", "cut")]), Some(0.0), "expired after firing once");
    assert!(proxy.logs().iter().any(|l| l["message"].as_str().is_some_and(|s| s.contains("by fault 1 (cut)"))));
}

#[test]
fn a_stalled_replica_is_timed_out_by_its_master_and_comes_back() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--repl-timeout", "2"]);
    master.cmd(&["SET", "a", "1"]);
    let proxy = ProxyProc::start(master.port, &["--enable-faults"]);
    fault_cli(
        &proxy,
        &[
            "add",
            "stall",
            "--duration",
            "5s",
            "--direction",
            "replica-to-master",
            "--when",
            "phase=streaming",
            "--times",
            "1",
        ],
    );
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    master
        .wait_for("the master to time the replica out", 30, || master.log().contains("timedout replica").then_some(()));
    master.wait_for("the replica to come back", 30, || {
        let links = proxy.links();
        (links.len() >= 2
            && links.last().is_some_and(|l| {
                l["open"] == true && l["phases"].as_array().is_some_and(|p| p.iter().any(|p| p["phase"] == "streaming"))
            }))
        .then_some(())
    });
    master.cmd(&["SET", "b", "2"]);
    in_sync(&master, &replica);
    assert_eq!(digest(&master), digest(&replica));
    let links = proxy.links();
    assert_eq!(
        (links[0]["close"]["by"].as_str(), links[0]["close"]["phase"].as_str()),
        (Some("master"), Some("streaming"))
    );
    assert!(links[0]["faults"].as_array().is_some_and(|f| {
        f.iter().any(|t| t["action"].as_str().is_some_and(|a| a.contains("stalled replica_to_master for 5.0 s")))
    }));
}

#[test]
fn latency_holds_the_stream_back_and_keeps_its_order() {
    let bin = redis_server();
    let master = Server::start(&bin, &[]);
    let proxy = ProxyProc::start(master.port, &["--enable-faults"]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    link_up(&replica, 60);
    master.cmd(&["SET", "warm", "up"]);
    in_sync(&master, &replica);
    // INCR then WAIT on one connection: the time until the replica acknowledges the write.
    let round_trip = || {
        let t = Instant::now();
        let replies = master.session(&[&["INCR", "n"], &["WAIT", "1", "5000"]]);
        assert_eq!(replies.get(1), Some(&redis_protocol::resp2::types::OwnedFrame::Integer(1)));
        t.elapsed()
    };
    let before = round_trip();
    fault_cli(&proxy, &["add", "latency", "--delay", "200ms", "--jitter", "20ms", "--direction", "master-to-replica"]);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let rt = round_trip();
        assert!(
            rt >= Duration::from_millis(180) && rt < Duration::from_millis(1000),
            "with 200±20 ms: {rt:?} (before: {before:?})\n{}\n{}",
            serde_json::to_string(&proxy.links().iter().map(|l| l["faults"].clone()).collect::<Vec<_>>())
                .unwrap_or_default(),
            fault_cli(&proxy, &["list"])
        );
    }
    // Latency holds bytes back without capping throughput at one read per delay: 8 MB of writes cross
    // the 200 ms path in a few round trips (a pump that slept 200 ms per 256 KiB read would need 6 s).
    let value = "v".repeat(1000);
    let bulk: Vec<Vec<String>> = (0..8000).map(|i| vec!["SET".into(), format!("bulk:{i}"), value.clone()]).collect();
    let t = Instant::now();
    master.pipeline(&bulk);
    in_sync(&master, &replica);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "8 MB through 200 ms of latency took {took:?}");
    fault_cli(&proxy, &["rm", "--all"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(round_trip() < Duration::from_millis(150), "the delay ends with the fault");
    for i in 0..200 {
        master.cmd(&["RPUSH", "order", &i.to_string()]);
    }
    in_sync(&master, &replica);
    assert_eq!(digest(&master), digest(&replica), "order preserved");
}

#[test]
fn a_limit_passes_exactly_its_bytes_then_cuts_and_the_replica_resumes() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--repl-ping-replica-period", "60"]);
    let proxy = ProxyProc::start(master.port, &["--enable-faults"]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    link_up(&replica, 60);
    master.cmd(&["SET", "k:000", "0123456789"]); // the stream's SELECT is behind us
    in_sync(&master, &replica);
    let before = offset(&master, "master_repl_offset");
    fault_cli(&proxy, &["add", "limit", "--bytes", "300", "--direction", "master-to-replica", "--times", "1"]);
    std::thread::sleep(Duration::from_millis(300)); // fired on an idle tick
    // 41-byte commands: 7 fit in 300 bytes (287), the 8th is cut after 13 of its bytes.
    let commands: Vec<Vec<String>> =
        (1..=20).map(|i| vec!["SET".into(), format!("k:{i:03}"), "0123456789".into()]).collect();
    master.pipeline(&commands);
    master.wait_for("the partial resync", 30, || {
        let links = proxy.links();
        (links.len() == 2 && links[1]["answer"]["answer"] == "continue").then_some(())
    });
    let links = proxy.links();
    assert_eq!((links[0]["close"]["by"].as_str(), links[0]["close"]["how"].as_str()), (Some("proxy"), Some("fin")));
    assert!(
        links[0]["faults"].as_array().is_some_and(|f| f
            .iter()
            .any(|t| t["action"].as_str().is_some_and(|a| a.contains("after 300 more bytes"))))
    );
    // The replica asks to resume right after the last whole command it got: 7 × 41 bytes.
    let asked = links[1]["request"]["offset"].as_i64().expect("PSYNC offset");
    assert_eq!(asked - 1, before + 7 * 41, "the replica received exactly 300 bytes after the limit fired");
    in_sync(&master, &replica);
    assert_eq!(digest(&master), digest(&replica));
}

#[test]
fn the_fault_api_is_closed_unless_enabled_and_says_what_is_wrong() {
    let port = support::server::free_port();
    let proxy = ProxyProc::start(port, &[]);
    let (status, body) = http_get(&proxy.http, "/api/faults");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--enable-faults"), "{body}");
    drop(proxy);

    let proxy = ProxyProc::start(port, &["--enable-faults"]);
    for (body, want) in [
        (r#"{"kind": "bandwidth"}"#, "bandwidth needs rate"),
        (r#"{"kind": "cut", "when": "rdb-percent=150"}"#, "is not a percentage"),
        (r#"{"kind": "stall", "duration": "5s", "colour": "red"}"#, "unknown field `colour`"),
        ("not json", "not a fault"),
    ] {
        let (status, text) = http_request(&proxy.http, "POST", "/api/faults", body, None);
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    let (status, text) =
        http_request(&proxy.http, "POST", "/api/faults", r#"{"kind": "latency", "delay": 0.25, "for": "60s"}"#, None);
    assert_eq!(status, 201, "{text}");
    let created: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        (created["id"].as_u64(), created["kind"].as_str(), created["delay"].as_f64()),
        (Some(1), Some("latency"), Some(0.25))
    );
    let listed = fault_cli(&proxy, &["list"]);
    assert!(listed.lines().nth(1).is_some_and(|l| l.starts_with("1   latency")), "{listed}");
    assert_eq!(http_request(&proxy.http, "DELETE", "/api/faults/1", "", None).0, 200);
    assert_eq!(http_request(&proxy.http, "DELETE", "/api/faults/1", "", None).0, 404);
}

#[test]
fn off_loopback_fault_changes_need_the_token_and_a_token_is_required_to_start() {
    let port = support::server::free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args([
            "proxy",
            "--master",
            &format!("127.0.0.1:{port}"),
            "--listen",
            "127.0.0.1:0",
            "--http",
            "0.0.0.0:0",
            "--enable-faults",
        ])
        .env_remove("REPLSCOPE_ADMIN_TOKEN")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.lines().last().is_some_and(|l| l.starts_with("replscope: refusing --enable-faults")), "{err}");

    let proxy = ProxyProc::start_with_http(port, "0.0.0.0:0", &["--enable-faults", "--admin-token", "s3cr3t-t0ken"]);
    let local = format!("127.0.0.1:{}", proxy.http.rsplit(':').next().expect("port"));
    let body = r#"{"kind": "cut"}"#;
    assert_eq!(http_request(&local, "POST", "/api/faults", body, None).0, 401);
    assert_eq!(http_request(&local, "POST", "/api/faults", body, Some("wrong")).0, 401);
    assert_eq!(http_request(&local, "POST", "/api/faults", body, Some("s3cr3t-t0ken")).0, 201);
    assert_eq!(http_request(&local, "GET", "/api/faults", "", None).0, 200, "reading needs no token");
    assert!(!proxy.logs().iter().any(|l| l.to_string().contains("s3cr3t-t0ken")), "the token is never logged");
}

/// An HTTP request with a body and an optional bearer token: (status, body).
fn http_request(addr: &str, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP");
    (head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status"), body.to_string())
}
