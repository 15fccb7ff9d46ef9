//! The partial-resync loop on real servers: a master whose `client-output-buffer-limit replica` hard
//! limit (1mb) is below the values it replicates (3 MB) accepts the replica's PSYNC (`+CONTINUE`), queues
//! what it owes, finds the buffer over the limit and drops the link; the replica comes back at once,
//! asks to resume at the same offset, and the same happens again.
//!
//! Where it exists: Redis 6.2 (and older). Redis 7.0+ and Valkey raise a replica's hard limit to
//! `repl-backlog-size` when it is smaller ("partial sync will succeed and then replica will get
//! disconnected", in their `checkClientOutputBufferLimits`), so what a resumed replica is owed always
//! fits: a replica that overflows is further behind than the backlog and gets a full sync instead. On
//! those versions the test shows that: the kill, then a refused PSYNC, and no partial loop flagged.
//!
//! The replica's own buffer: a replica whose `client-query-buffer-limit` (1mb) is below a replicated
//! command. Redis 6.2 applies that limit to its master's link: the replica hangs up (with a reset, the
//! rest unread), drops its replication state and asks for a full sync, loads, and hangs up again at the
//! next large write — a full-sync loop whose attempts end just after streaming began. Redis 7.0+ and
//! Valkey exempt the master's link, and nothing happens.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::proxy::ProxyProc;
use support::server::{Server, ServerBin, servers};

/// Whether the version has the partial-resync loop at all.
fn has_partial_loop(bin: &ServerBin) -> bool {
    !bin.valkey && bin.version < (7, 0, 0)
}

/// Writes a 3 MB value to `port` every 300 ms until `stop`.
fn big_writes(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let value = "v".repeat(3 << 20);
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return };
        let cmd = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n{value}\r\n", value.len());
        let mut reply = [0u8; 16];
        while !stop.load(Ordering::Relaxed) {
            if s.write_all(cmd.as_bytes()).and_then(|_| s.read(&mut reply).map(|_| ())).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

/// A master with `master_args`, a proxy with `proxy_args`, a replica with `replica_args` through it,
/// online; then 3 MB writes until `stop`.
struct Setup {
    master: Server,
    proxy: ProxyProc,
    _replica: Server,
    ep: String,
    stop: Arc<AtomicBool>,
    writer: std::thread::JoinHandle<()>,
}

/// A 1mb hard limit for replicas, and `backlog`.
fn small_limit(backlog: &str) -> [&str; 7] {
    ["--client-output-buffer-limit", "replica", "1mb", "0", "0", "--repl-backlog-size", backlog]
}

fn start(bin: &ServerBin, master_args: &[&str], proxy_args: &[&str], replica_args: &[&str]) -> Setup {
    let master = Server::start(bin, master_args);
    let proxy = ProxyProc::start(master.port, proxy_args);
    let port = proxy.listen_port.to_string();
    let replica = Server::start(bin, &[&["--replicaof", "127.0.0.1", &port][..], replica_args].concat());
    let ep = format!("127.0.0.1:{}", replica.port);
    master.wait_replica_online();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = big_writes(master.port, Arc::clone(&stop));
    Setup { master, proxy, _replica: replica, ep, stop, writer }
}

fn partial_loop_on(bin: &ServerBin) {
    let ctx = format!("{} {:?}", bin.name, bin.version);
    let Setup { master, proxy, _replica, ep, stop, writer } = start(bin, &small_limit("64mb"), &[], &[]);

    let deadline = Instant::now() + Duration::from_secs(90);
    let flagged = loop {
        let m = proxy.metrics();
        if m.get("replscope_replication_loop", &[("replica", &ep), ("kind", "partial")]) == Some(1.0) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: no partial loop flagged; master INFO stats: {:?}\n{}",
            master.info("stats").get("sync_partial_ok"),
            master.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();

    // It is the partial loop, not the full one: every attempt was a +CONTINUE the master dropped.
    assert_eq!(flagged.get("replscope_replication_loop", &[("replica", &ep), ("kind", "full")]), Some(0.0), "{ctx}");
    let accepted: u64 = master.info("stats").get("sync_partial_ok").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(accepted >= 3, "{ctx}: the master accepted {accepted} partial resyncs");
    let (status, body) = proxy.get("/api/replicas");
    assert_eq!(status, 200, "{body}");
    let replicas: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let record = replicas.as_array().and_then(|r| r.iter().find(|r| r["replica"] == ep.as_str())).expect("record");
    assert_eq!(record["in_partial_loop"], true, "{ctx}: {record}");
    let drops = record["partial_drops"].as_array().expect("drops");
    assert!(drops.len() >= 3, "{ctx}: {record}");
    eprintln!("{ctx}: drops {drops:?}");
    for d in drops {
        let cmd = d["largest_command_bytes"].as_u64().unwrap_or(1);
        // Either the master dropped the link before a byte of the value left it, or the value was on its way.
        assert!(cmd == 0 || cmd >= 3 << 20, "{ctx}: {d}");
        assert!(d["after_ms"].as_u64().unwrap_or(u64::MAX) <= 60_000, "{ctx}: {d}");
    }
    // The links themselves: accepted partial resyncs, closed by the master.
    let links = proxy.links();
    let continued: Vec<&serde_json::Value> = links
        .iter()
        .filter(|l| l["replica"] == ep.as_str() && l["answer"]["answer"] == "continue" && !l["close"].is_null())
        .collect();
    assert!(continued.len() >= 3, "{ctx}: {} +CONTINUE links closed", continued.len());
    assert!(continued.iter().all(|l| l["close"]["by"] == "master"), "{ctx}");
    // Flagged by the third attempt: the loop began at the third dropped link's close.
    assert_eq!(record["partial_loop_since"], continued[2]["close"]["at"], "{ctx}: {record}");
    // One WARN names the pattern, the command size and the limit in force.
    let logs = proxy.logs();
    let warned: Vec<&serde_json::Value> =
        logs.iter().filter(|l| l["level"] == "WARN" && l["loop_kind"] == "partial").collect();
    assert_eq!(warned.len(), 1, "{ctx}: {warned:?}");
    let text = warned[0]["message"].as_str().unwrap_or_default();
    assert!(text.contains("partial-resync loop") && text.contains("client-output-buffer-limit"), "{ctx}: {text}");
    let seen = drops.iter().any(|d| d["largest_command_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(text.contains(if seen { "3.00 MiB" } else { "no stream command reached" }), "{ctx}: {text}");
}

/// 7.0+ and Valkey: the same writes over a slow link (1 MiB/s toward the replica, the proxy's bandwidth
/// fault) overflow the replica's buffer, but only past the backlog: the PSYNC that follows is refused.
fn no_partial_loop_on(bin: &ServerBin) {
    let ctx = format!("{} {:?}", bin.name, bin.version);
    let slow_link = ["--enable-faults", "--fault", "bandwidth rate=1MiB/s direction=master-to-replica"];
    let Setup { master, proxy, _replica, ep, stop, writer } = start(bin, &small_limit("4mb"), &slow_link, &[]);
    // The first kill, then the replica's next PSYNC and the master's answer to it.
    let answered = master.wait_for("a kill and the next sync decided", 60, || {
        let links = proxy.links();
        let killed = links.iter().position(|l| l["close"]["by"] == "master" && l["close"]["phase"] == "streaming")?;
        // A two-channel sync learns its refusal from its RDB channel's answer, a moment later.
        let decided = |l: &serde_json::Value| l["sync_kind"] == "partial" || !l["psync_refusal"].is_null();
        links[killed + 1..].iter().find(|l| l["kind"] == "replication" && decided(l)).cloned()
    });
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    assert_eq!(answered["sync_kind"], "full", "{ctx}: {answered}");
    assert_eq!(answered["psync_refusal"]["reason"], "offset_out_of_range", "{ctx}: {answered}");
    let m = proxy.metrics();
    assert_eq!(m.get("replscope_replication_loop", &[("replica", &ep), ("kind", "partial")]), Some(0.0), "{ctx}");
    assert!(master.log().contains("output buffer limits"), "{ctx}: the master killed it for its buffer");
}

#[test]
fn a_partial_resync_loop_is_flagged_by_the_third_attempt_where_the_server_has_one() {
    let only = std::env::var("REPLSCOPE_ONLY").unwrap_or_default();
    let bins = servers();
    for bin in bins.iter().filter(|b| b.name.contains(&only)) {
        if has_partial_loop(bin) {
            partial_loop_on(bin);
        } else {
            no_partial_loop_on(bin);
        }
    }
}

fn query_buffer_on(bin: &ServerBin) {
    let ctx = format!("{} {:?}", bin.name, bin.version);
    let Setup { master, proxy, _replica: replica, ep, stop, writer } =
        start(bin, &[], &[], &["--client-query-buffer-limit", "1mb"]);
    if has_partial_loop(bin) {
        master.wait_for("a full loop flagged", 60, || {
            let m = proxy.metrics();
            (m.get("replscope_replication_loop", &[("replica", &ep), ("kind", "full")]) == Some(1.0)).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
        let (_, body) = proxy.get("/api/replicas");
        let replicas: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let record = replicas.as_array().and_then(|r| r.iter().find(|r| r["replica"] == ep.as_str())).expect("record");
        assert_eq!(record["dominant_cause"], "replica_query_buffer_limit", "{ctx}: {record}");
        let links = proxy.links();
        let dropped: Vec<&serde_json::Value> =
            links.iter().filter(|l| l["diagnosis"]["cause"] == "replica_query_buffer_limit").collect();
        assert!(dropped.len() >= 3, "{ctx}: {} links", dropped.len());
        for l in dropped {
            assert_eq!(l["close"]["by"], "replica", "{ctx}: {l}");
            // Streaming, or loading still as the wire sees it (no ACK yet) with the stream behind the RDB.
            assert!(matches!(l["close"]["phase"].as_str(), Some("streaming" | "loading")), "{ctx}: {l}");
            assert_eq!(l["sync_kind"], "full", "{ctx}: the replica dropped its state and asked for a full sync: {l}");
            let why = l["explanation"].as_str().unwrap_or_default();
            assert!(
                why.contains("3.00 MiB stream command") && why.contains("client-query-buffer-limit"),
                "{ctx}: {why}"
            );
        }
        assert!(replica.log().contains("max query buffer"), "{ctx}: the replica says why");
    } else {
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
        let value = replica.wait_for("the value on the replica", 20, || match replica.cmd(&["STRLEN", "big"]) {
            redis_protocol::resp2::types::OwnedFrame::Integer(n) if n > 0 => Some(n),
            _ => None,
        });
        assert_eq!(value, 3 << 20, "{ctx}");
        let links = proxy.links();
        // Only an RDB channel that delivered its RDB may have closed: its normal end.
        let ended: Vec<&serde_json::Value> =
            links.iter().filter(|l| !l["close"].is_null() && l["kind"] != "rdb_channel").collect();
        assert!(ended.is_empty(), "{ctx}: no replication link ended: {ended:?}");
    }
}

#[test]
fn a_replica_query_buffer_below_a_written_value_loops_where_the_server_applies_it() {
    let only = std::env::var("REPLSCOPE_ONLY").unwrap_or_default();
    for bin in servers().iter().filter(|b| b.name.contains(&only)) {
        query_buffer_on(bin);
    }
}
