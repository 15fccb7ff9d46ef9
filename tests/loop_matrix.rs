//! The classic output-buffer loop, built as `replscope demo --scenario output-buffer-loop` builds it (a
//! master with `client-output-buffer-limit replica 8mb 4mb 5`, a 60 MB dataset, ~1.5 MB/s of writes, a
//! 4 MiB/s link), on every server version and in every sync mode it offers. What it shows:
//!
//! | sync | Redis 6.2 | Redis 7.0 | Redis 8.2 | Valkey 8.1 | Valkey 9.1 |
//! |---|---|---|---|---|---|
//! | disk, one connection | loops | loops | loops | loops | loops |
//! | diskless, one connection | loops | loops | loops | loops | loops |
//! | two connections | — | — | no loop (rdb channel) | no loop (dual channel) | no loop (dual channel) |
//!
//! On two connections the replica reads the stream during the transfer and buffers it itself, so nothing
//! piles up against the master's limit: replscope reports no loop, no `output_buffer_limit` and no doomed
//! forecast. (One connection is forecast doomed before each kill when the RDB's size is known: disk-based,
//! `$<len>`; a diskless RDB's size is known only at its end, which never comes here.) Given the same small limit as the master, the replica's own buffer fills instead: it stops
//! reading its main channel (Redis 8: "Replication buffer limit has been reached … Further accumulation may
//! occur on master side"; Valkey: "Replication buffer limit reached, stopping buffering"), the stream piles
//! up on the master — which on every version here lets the sync finish rather than kill it — and replscope
//! names that (`replica_buffer_full` on the link, `replscope_replica_buffer_full_total`, one WARN).
//!
//! Introspection is on (`--introspect`): replscope reads the master's limit and each replica connection's
//! output buffer (`omem`) itself, so every kill is settled `output_buffer_limit` at the close, on the
//! master's own numbers — the limit cited with source `master` (above the `--assume-output-buffer-limit`
//! also given), the last `omem` before the kill in the evidence, and close to what the master logged.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::load::Load;
use support::modes::SyncMode;
use support::proxy::ProxyProc;
use support::server::{Server, ServerBin, servers};

const LIMIT: [&str; 5] = ["--client-output-buffer-limit", "replica", "8mb", "4mb", "5"];

/// What one run showed.
struct Outcome {
    looped: bool,
    synced: bool,
    doomed_seen: bool,
    metrics: support::proxy::Metrics,
    logs: Vec<serde_json::Value>,
    ep: String,
    failures: BTreeMap<String, f64>,
    master_kills: usize,
    replica_log: String,
    links: serde_json::Value,
    /// `omem` in each of the master's kill lines.
    killed_at_omem: Vec<u64>,
}

fn run(bin: &ServerBin, mode: SyncMode, replica_limit: bool) -> Outcome {
    let mut master_args = vec!["--rdbcompression", "no"];
    master_args.extend(mode.master_args(bin));
    master_args.extend(LIMIT);
    let master = Server::start(bin, &master_args);
    master.cmd(&["DEBUG", "POPULATE", "200000", "key", "300"]);
    let mut args = support::proxy::LOOP_PROXY_ARGS.to_vec();
    args.push("--introspect");
    let proxy = ProxyProc::start(master.port, &args);
    let load = Load::start(master.port, "w", 50, 1000, 100_000, Duration::from_millis(33));
    std::thread::sleep(Duration::from_secs(1));
    let port = proxy.listen_port.to_string();
    let mut replica_args = vec!["--replicaof", "127.0.0.1", &port];
    replica_args.extend(mode.replica_args(bin));
    if replica_limit {
        replica_args.extend(LIMIT);
    }
    let replica = Server::start(bin, &replica_args);
    let ep = format!("127.0.0.1:{}", replica.port);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut looped, mut synced, mut doomed_seen) = (false, false, false);
    while Instant::now() < deadline {
        let m = proxy.metrics();
        doomed_seen |= m.get("replscope_sync_doomed", &[("replica", &ep)]) == Some(1.0);
        looped = m.get("replscope_replication_loop", &[("replica", &ep), ("kind", "full")]) == Some(1.0);
        synced = replica.info("replication").get("master_link_status").map(String::as_str) == Some("up");
        if looped || synced {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if synced {
        // Streaming for a few seconds more: a late kill would still show.
        std::thread::sleep(Duration::from_secs(3));
    }
    load.stop();
    let m = proxy.metrics();
    let failures = m
        .all("replscope_full_sync_failures_total")
        .into_iter()
        .filter_map(|(labels, v)| Some((labels.iter().find(|(k, _)| k == "cause")?.1.clone(), v)))
        .collect();
    let master_log = master.log();
    let killed_at_omem = master_log
        .lines()
        .filter(|l| l.contains("overcoming of output buffer limits"))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("omem="))?.parse().ok())
        .collect();
    Outcome {
        killed_at_omem,
        looped,
        synced,
        doomed_seen,
        metrics: m,
        logs: proxy.logs(),
        ep,
        failures,
        master_kills: master_log.matches("overcoming of output buffer limits").count(),
        replica_log: replica.log(),
        links: serde_json::Value::Array(proxy.links()),
    }
}

fn describe(bin: &ServerBin, mode: SyncMode, o: &Outcome) -> String {
    format!(
        "{} {}: {} (full syncs failed: {:?}; master kills: {})",
        bin.name,
        mode.name(bin),
        if o.looped { "loops" } else { "no loop" },
        o.failures,
        o.master_kills
    )
}

/// One connection loops on every version; two connections never do.
#[test]
fn the_classic_loop_on_every_version_and_sync_mode() {
    let mut table = Vec::new();
    for bin in servers() {
        for mode in SyncMode::offered_by(&bin) {
            let o = run(&bin, mode, false);
            let ctx = describe(&bin, mode, &o);
            let links = &o.links;
            if mode == SyncMode::TwoChannel {
                assert!(!o.looped && o.synced, "{ctx}: the sync completes\n{links}");
                assert!(o.failures.is_empty() && o.master_kills == 0, "{ctx}\n{links}");
                assert!(!o.doomed_seen, "{ctx}: no doomed forecast: nothing piles up against the master's limit");
                let second = if bin.valkey { "dual_channel_sync" } else { "rdb_channel_sync" };
                assert!(links.to_string().contains(second), "{ctx}: {second}");
            } else {
                assert!(o.looped, "{ctx}: flagged as a loop\n{links}");
                assert!(o.failures.get("output_buffer_limit").is_some_and(|n| *n >= 3.0), "{ctx}");
                assert_eq!(o.failures.len(), 1, "{ctx}: every failure is output_buffer_limit");
                assert!(o.master_kills >= 3, "{ctx}: the master says so too");
                // A diskless RDB's size is unknown until its end, and here no transfer ever ends: there is
                // nothing to forecast with (the forecast stands in the last complete RDB's size).
                if mode == SyncMode::Disk {
                    assert!(o.doomed_seen, "{ctx}: forecast doomed before the kills");
                }
                killed_on_the_masters_numbers(&ctx, &o);
            }
            eprintln!("{ctx}");
            table.push(ctx);
        }
    }
    eprintln!("\nthe classic loop, by version and sync mode:\n{}", table.join("\n"));
}

/// Every kill was settled `output_buffer_limit` when the link closed, on the master's own reading of the
/// buffer at its limit, against the limit read from the master.
fn killed_on_the_masters_numbers(ctx: &str, o: &Outcome) {
    let killed: Vec<&serde_json::Value> = o
        .links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["kind"] == "replication" && l["diagnosis"]["cause"] == "output_buffer_limit")
        .collect();
    assert!(killed.len() >= 3, "{ctx}: {}", o.links);
    let mut ours = Vec::new();
    for l in &killed {
        let d = &l["diagnosis"];
        let e = &d["evidence"];
        assert_eq!((&d["first"], &d["settled"]), (&d["cause"], &serde_json::json!(true)), "{ctx}: {d}");
        let limit = e["settings"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["setting"] == "client-output-buffer-limit replica").cloned());
        let limit = limit.unwrap_or_else(|| panic!("{ctx}: no limit cited: {e}"));
        assert_eq!((&limit["source"], &limit["value"]), (&"master".into(), &"8mb 4mb 5".into()), "{ctx}: {limit}");
        let b = &e["output_buffer"];
        let omem = b["omem"].as_u64().unwrap_or(0);
        assert!(omem > 0 && !b["reached"].is_null(), "{ctx}: the buffer at its limit: {b}");
        // Read at most a round before the master dropped it (the proxy sees the close later, after what
        // it still forwards at the 4 MiB/s of the fault).
        assert!(b["seconds_before_gone"].as_f64().is_some_and(|s| s <= 1.2), "{ctx}: a fresh reading: {b}");
        let text = l["explanation"].as_str().unwrap_or_default();
        assert!(text.contains(" limit at the kill") || text.contains("soft limit for"), "{ctx}: {text}");
        assert!(text.contains("read from the master") && text.contains("omem"), "{ctx}: {text}");
        ours.push(format!(
            "{omem} ({}, {:.2} s before)",
            b["reached"].as_str().unwrap_or(""),
            b["seconds_before_gone"].as_f64().unwrap_or(-1.0)
        ));
        // Settled at the close: the cause never waited for later facts.
        let id = l["id"].as_u64();
        let pending = o
            .logs
            .iter()
            .any(|x| x["link"].as_u64() == id && x["message"].as_str().is_some_and(|m| m.contains("cause pending")));
        assert!(!pending, "{ctx}: link {id:?} waited for its cause");
    }
    // Each reading within a tenth of a second of writes of what the master logged at the kill.
    let logged = o.killed_at_omem.iter().copied().max().unwrap_or(0);
    for l in &killed {
        let omem = l["diagnosis"]["evidence"]["output_buffer"]["omem"].as_u64().unwrap_or(0);
        assert!(
            omem as f64 >= 0.9 * logged as f64 && omem <= logged + (64 << 10),
            "{ctx}: {omem} vs the master's {logged}"
        );
    }
    eprintln!(
        "{ctx}: omem at each kill, replscope's last reading vs the master's log: {ours:?} vs {:?}",
        o.killed_at_omem
    );
}

/// Given the master's small limit, a two-channel replica's own buffer fills: it stops reading its main
/// channel, the stream piles up on the master, and replscope names it — no drop, no loop.
#[test]
fn on_two_channels_the_replicas_own_buffer_fills_instead_and_is_named() {
    for bin in support::modes::two_channel_servers() {
        let o = run(&bin, SyncMode::TwoChannel, true);
        let ctx = describe(&bin, SyncMode::TwoChannel, &o);
        let links = &o.links;
        assert!(o.replica_log.contains("buffer limit"), "{ctx}: the replica's own log says its buffer filled");
        assert!(!o.looped && o.synced && o.failures.is_empty(), "{ctx}\n{links}");
        let main = links
            .as_array()
            .and_then(|l| l.iter().find(|l| l["kind"] == "replication" && !l["replica_buffer_full"].is_null()))
            .unwrap_or_else(|| panic!("{ctx}: no main channel named replica_buffer_full\n{links}"));
        let seconds = main["replica_buffer_full"]["not_reading_seconds"].as_f64().unwrap_or(0.0);
        assert!(seconds >= 1.0, "{ctx}: {}", main["replica_buffer_full"]);
        assert_eq!(
            o.metrics.get("replscope_replica_buffer_full_total", &[("replica", &o.ep)]),
            Some(1.0),
            "{ctx}\n{}",
            o.metrics.text
        );
        let warn =
            o.logs.iter().find(|l| l["message"].as_str().is_some_and(|m| m.starts_with("replica buffer full: ")));
        let warn = warn.unwrap_or_else(|| panic!("{ctx}: no log line"));
        assert_eq!(warn["level"], "WARN", "{ctx}: {warn}");
        eprintln!("{ctx}; the replica stopped reading for {seconds:.1} s: {}", warn["message"]);
    }
}
