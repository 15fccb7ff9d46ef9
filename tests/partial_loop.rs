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

/// A master with a 1mb hard limit for replicas and `backlog`, a proxy with `proxy_args`, a replica through
/// it, online; then 3 MB writes until `stop`.
struct Setup {
    master: Server,
    proxy: ProxyProc,
    _replica: Server,
    ep: String,
    stop: Arc<AtomicBool>,
    writer: std::thread::JoinHandle<()>,
}

fn start(bin: &ServerBin, backlog: &str, proxy_args: &[&str]) -> Setup {
    let master = Server::start(
        bin,
        &["--client-output-buffer-limit", "replica", "1mb", "0", "0", "--repl-backlog-size", backlog],
    );
    let proxy = ProxyProc::start(master.port, proxy_args);
    let replica = Server::start(bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    let ep = format!("127.0.0.1:{}", replica.port);
    master.wait_for("the replica online", 30, || {
        master.info("replication").get("slave0").filter(|s| s.contains("state=online")).map(|_| ())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writer = big_writes(master.port, Arc::clone(&stop));
    Setup { master, proxy, _replica: replica, ep, stop, writer }
}

fn partial_loop_on(bin: &ServerBin) {
    let ctx = format!("{} {:?}", bin.name, bin.version);
    let Setup { master, proxy, _replica, ep, stop, writer } = start(bin, "64mb", &[]);

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
    assert!(text.contains(if seen { "3.0 MB" } else { "no stream command reached" }), "{ctx}: {text}");
}

/// 7.0+ and Valkey: the same writes over a slow link (1 MiB/s toward the replica, the proxy's bandwidth
/// fault) overflow the replica's buffer, but only past the backlog: the PSYNC that follows is refused.
fn no_partial_loop_on(bin: &ServerBin) {
    let ctx = format!("{} {:?}", bin.name, bin.version);
    let slow_link = ["--enable-faults", "--fault", "bandwidth rate=1MiB/s direction=master-to-replica"];
    let Setup { master, proxy, _replica, ep, stop, writer } = start(bin, "4mb", &slow_link);
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
