//! The classic outage, reproduced on real servers the way it happens: a master whose
//! `client-output-buffer-limit replica` is too small for the writes that pile up while a large RDB
//! crosses a slow link (replscope's bandwidth fault stands in for the network). Each full sync is killed
//! mid-transfer, the replica retries, and replscope names the cause from the first attempt, forecasts it
//! before each kill, and flags the loop by the third. Without the slow link the sync completes and the
//! loop clears.

mod support;

use std::time::{Duration, Instant};

use support::proxy::ProxyProc;
use support::server::{Server, redis_server};

fn offset(server: &Server) -> i64 {
    server.info("replication").get("master_repl_offset").and_then(|v| v.parse().ok()).unwrap_or(-1)
}

#[test]
fn the_output_buffer_loop_is_named_forecast_flagged_and_cleared() {
    let bin = redis_server();
    let master = Server::start(
        &bin,
        &["--rdbcompression", "no", "--repl-diskless-sync", "no", "--client-output-buffer-limit", "replica 8mb 4mb 5"],
    );
    master.cmd(&["DEBUG", "POPULATE", "200000", "key", "300"]);
    let proxy = ProxyProc::start(master.port, &support::proxy::LOOP_PROXY_ARGS);

    // About 1.5 MB/s of writes: 50 × 1 KB every 33 ms.
    let load_writer = support::load::Load::start(master.port, "w", 50, 1000, 100_000, Duration::from_millis(33));
    std::thread::sleep(Duration::from_secs(2));
    let (t0, o0) = (Instant::now(), offset(&master));
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    let ep = format!("127.0.0.1:{}", replica.port);

    // Watch until the loop is flagged: the forecast is above the limit before the kills.
    let mut doomed_seen = false;
    let mut max_forecast: f64 = 0.0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = proxy.metrics();
        doomed_seen |= m.get("replscope_sync_doomed", &[("replica", &ep)]) == Some(1.0);
        max_forecast =
            max_forecast.max(m.get("replscope_sync_buffer_forecast_bytes", &[("replica", &ep)]).unwrap_or(0.0));
        if m.get("replscope_replication_loop", &[("replica", &ep), ("kind", "full")]) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no loop flagged: {}",
            serde_json::to_string(&proxy.links()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (t1, o1) = (Instant::now(), offset(&master));
    let load = (o1 - o0) as f64 / t1.duration_since(t0).as_secs_f64();
    let m = proxy.metrics();
    let failures = m
        .get("replscope_full_sync_failures_total", &[("replica", &ep), ("cause", "output_buffer_limit")])
        .unwrap_or(0.0);
    assert!(failures >= 3.0, "{failures} failures named output_buffer_limit\n{}", m.text);
    assert!(master.log().contains("overcoming of output buffer limits"), "the master says so too");
    assert!(doomed_seen, "the forecast ({max_forecast:.0} B at most) never crossed the assumed 8mb limit");
    let rate = m.get("replscope_master_write_rate_bytes_per_second", &[]).expect("write rate from the FULLRESYNCs");
    assert!((rate / load - 1.0).abs() <= 0.30, "write rate {rate:.0} B/s vs the load {load:.0} B/s");
    let replicas: serde_json::Value = serde_json::from_str(&proxy.get("/api/replicas").1).expect("JSON");
    assert_eq!(replicas[0]["in_loop"], true);
    assert_eq!(replicas[0]["dominant_cause"], "output_buffer_limit");
    let first = &proxy.links()[0];
    assert_eq!(
        first["diagnosis"]["first"], "output_buffer_limit",
        "named from the first attempt: {}",
        first["diagnosis"]
    );
    assert!(proxy.logs().iter().any(|l| l["message"].as_str().is_some_and(|s| s.starts_with("replication loop: "))));
    // In plain words: the first attempt says what happened and what to change; a later one, that it loops.
    let links = proxy.links();
    let why = first["explanation"].as_str().expect("an explanation");
    assert!(why.starts_with("the master closed the link"), "{why}");
    assert!(why.contains("client-output-buffer-limit replica 8mb 4mb 5"), "{why}");
    // Even the first attempt, closed before any write rate was known, has its numbers: the next FULLRESYNC
    // gave the rate, and the diagnosis waited for it.
    assert!(why.contains("the master writes about") && why.contains("had piled up for this replica"), "{why}");
    assert!(
        first["diagnosis"]["evidence"]["later"].to_string().contains("write rate became known"),
        "{}",
        first["diagnosis"]
    );
    let later =
        links.iter().filter(|l| l["diagnosis"]["cause"] == "output_buffer_limit").nth(2).expect("a third attempt");
    let why = later["explanation"].as_str().expect("an explanation");
    assert!(
        why.contains("had piled up for this replica") && why.contains("raise the replica limit to at least"),
        "{why}"
    );
    assert!(why.contains("this replica is in a replication loop"), "{why}");
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["links", "--http", &proxy.http])
        .output()
        .expect("links");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("output_buffer_limit") && table.contains("└ the master closed the link"), "{table}");

    // A fast enough link: the sync completes, and after a minute of streaming the loop clears.
    let (status, _) = support::proxy::http_get(&proxy.http, "/api/faults");
    assert_eq!(status, 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["fault", "rm", "--all", "--http", &proxy.http])
        .output()
        .expect("fault rm");
    assert_eq!(out.status.code(), Some(0));
    replica.wait_for("the sync to complete", 120, || {
        (replica.info("replication").get("master_link_status").map(String::as_str) == Some("up")).then_some(())
    });
    replica.wait_for("the loop to clear after 60 s of streaming", 90, || {
        (proxy.metrics().get("replscope_replication_loop", &[("replica", &ep), ("kind", "full")]) == Some(0.0))
            .then_some(())
    });
    load_writer.stop();
}

#[test]
fn the_demo_reproduces_and_explains_the_loop() {
    let bin = redis_server();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        // It ends by itself once the replica recovered; --duration only bounds a broken run.
        .args(["demo", "--scenario", "output-buffer-loop", "--every", "5", "--duration", "240"])
        .env("REPLSCOPE_SERVER", &bin.path)
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("in rdb_transfer: output_buffer_limit"), "{stdout}");
    // The demo asks the master (introspection): the kill is quoted in its own numbers.
    let quoted = stdout.contains("of the 8mb hard limit at the kill") || stdout.contains("above the 4mb soft limit");
    assert!(
        quoted && stdout.contains("read from the master") && stdout.contains("raise the replica limit"),
        "{stdout}"
    );
    assert!(stdout.contains("demo: replscope flagged a replication loop"), "{stdout}");
    assert!(stdout.contains("demo: the full sync completed at full speed"), "{stdout}");
    assert!(stdout.contains("the loop is over: it recovered"), "{stdout}");
}
