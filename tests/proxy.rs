//! `replscope proxy` on live links between real servers (`redis-server` from PATH or
//! `$REPLSCOPE_REDIS_SERVER`): disk and diskless full syncs, a 10,000-command write load, a partial
//! resync after `CLIENT KILL TYPE replica`, a master that is down, a master that restarts; each checked
//! against what the servers say (`DEBUG DIGEST`, `INFO`, their logs, the RDB file the replica wrote) and
//! through the proxy's metrics, API and logs.

mod support;

use std::time::Duration;

use support::proxy::ProxyProc;
use support::server::{Server, redis_server};

fn info_i64(server: &Server, section: &str, key: &str) -> Option<i64> {
    server.info(section).get(key)?.parse().ok()
}

fn digest(server: &Server) -> String {
    format!("{:?}", server.cmd(&["DEBUG", "DIGEST"]))
}

fn link_up(replica: &Server) {
    replica.wait_for("the replica's link to come up", 60, || {
        (replica.info("replication").get("master_link_status").map(String::as_str) == Some("up")).then_some(())
    });
}

/// Waits until master, replica and proxy agree on the offset and the replica has acknowledged it.
fn at_rest(master: &Server, replica: &Server, proxy: &ProxyProc, replica_ep: &str) -> i64 {
    master.wait_for("offsets to agree and the lag to reach 0", 30, || {
        let m = info_i64(master, "replication", "master_repl_offset")?;
        let r = info_i64(replica, "replication", "slave_repl_offset")?;
        let metrics = proxy.metrics();
        let labels = [("replica", replica_ep)];
        let ours = metrics.get("replscope_master_offset_bytes", &labels)? as i64;
        let ack = metrics.get("replscope_replica_ack_offset_bytes", &labels)? as i64;
        let lag = metrics.get("replscope_replica_lag_bytes", &labels)?;
        (m == r && m == ours && m == ack && lag == 0.0).then_some(m)
    })
}

fn load(master: &Server, n: usize) {
    let commands: Vec<Vec<String>> = (0..n)
        .map(|i| match i % 4 {
            0 | 1 => vec!["SET".into(), format!("load:{i}"), format!("value-{i}")],
            2 => vec!["INCR".into(), "counter".into()],
            _ => vec!["HSET".into(), format!("h:{}", i % 100), format!("f{i}"), "v".into()],
        })
        .collect();
    master.pipeline(&commands);
}

fn full_then_partial(diskless: bool) {
    let bin = redis_server();
    let mode = if diskless { "yes" } else { "no" };
    let master = Server::start(
        &bin,
        &["--rdbcompression", "no", "--repl-diskless-sync", mode, "--repl-diskless-sync-delay", "0"],
    );
    master.cmd(&["DEBUG", "POPULATE", "30000", "key", "200"]);
    let proxy = ProxyProc::start(master.port, &["--buffer", "64KiB"]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    let ep = format!("127.0.0.1:{}", replica.port);
    link_up(&replica);
    load(&master, 10_000);
    let offset = at_rest(&master, &replica, &proxy, &ep);
    assert_eq!(digest(&master), digest(&replica), "datasets differ after the full sync");

    // The RDB: what the proxy counted is what the replica received and wrote to disk.
    let m = proxy.metrics();
    let full = [("replica", ep.as_str()), ("kind", "full")];
    assert_eq!(m.get("replscope_syncs_total", &full), Some(1.0), "{}", m.text);
    let transferred = m.get("replscope_rdb_transferred_bytes", &[("replica", &ep)]).expect("rdb transferred") as u64;
    let on_disk = std::fs::metadata(replica.dir.join("dump.rdb")).map(|f| f.len()).expect("the replica's dump.rdb");
    assert_eq!(transferred, on_disk, "RDB bytes forwarded vs the file the replica wrote");
    assert!(transferred > 6_000_000, "30,000 × 200-byte values uncompressed: {transferred} bytes?");
    if !diskless {
        let logged = replica
            .log()
            .lines()
            .find_map(|l| l.split("receiving ").nth(1)?.split(" bytes from master").next()?.parse::<u64>().ok())
            .expect("the replica logs the size it receives");
        assert_eq!(transferred, logged, "RDB bytes forwarded vs the size the replica logged");
        assert_eq!(m.get("replscope_rdb_size_bytes", &[("replica", &ep)]), Some(logged as f64));
    }
    // 0 from the replica's first link on (so `increase()` sees a first failure), and no failure.
    let failures = m.all("replscope_rdb_checksum_failures_total");
    assert!(!failures.is_empty() && failures.iter().all(|(_, v)| *v == 0.0), "no checksum failure: {failures:?}");
    for line in m.text.lines().filter(|l| l.starts_with("replscope_")) {
        let series = line.split(['{', ' ']).next().unwrap_or_default();
        let base = ["_bucket", "_sum", "_count"].iter().fold(series, |n, sfx| n.strip_suffix(sfx).unwrap_or(n));
        assert!(m.text.contains(&format!("# HELP {base} ")), "no help text for {base}");
        assert!(m.text.contains(&format!("# TYPE {base} ")), "no type for {base}");
    }
    assert_eq!(m.get("replscope_stream_commands_total", &[("command", "set")]), Some(5000.0));
    assert_eq!(m.get("replscope_stream_commands_total", &[("command", "incr")]), Some(2500.0));
    assert_eq!(m.get("replscope_stream_commands_total", &[("command", "hset")]), Some(2500.0));
    assert_eq!(m.get("replscope_link_phase", &[("replica", &ep), ("phase", "streaming")]), Some(1.0));
    assert_eq!(m.get("replscope_links", &[("kind", "replication")]), Some(1.0));
    for h in ["replscope_rdb_transfer_seconds", "replscope_replica_load_seconds", "replscope_full_sync_seconds"] {
        assert_eq!(m.get(&format!("{h}_count"), &[]), Some(1.0), "{h}");
    }

    // The API tells the same story.
    let links = proxy.links();
    assert_eq!(links.len(), 1, "{links:?}");
    let l = &links[0];
    assert_eq!(
        (l["kind"].as_str(), l["replica"].as_str(), l["open"].as_bool()),
        (Some("replication"), Some(ep.as_str()), Some(true))
    );
    let phases: Vec<&str> =
        l["phases"].as_array().expect("phases").iter().filter_map(|p| p["phase"].as_str()).collect();
    assert_eq!(phases, ["handshake", "waiting_bgsave", "rdb_transfer", "loading", "streaming"]);
    assert_eq!(l["rdb"]["trailer"]["status"], "ok");
    assert_eq!(
        l["rdb"]["framing"],
        if diskless { serde_json::json!("eof_mark") } else { serde_json::json!({"sized": {"len": transferred}}) }
    );
    assert_eq!(l["master_offset"].as_i64(), Some(offset));
    assert_eq!(l["lag_bytes"].as_i64(), Some(0));
    let id = l["id"].as_u64().expect("id");
    assert_eq!(proxy.get(&format!("/api/links/{id}")).0, 200);
    assert_eq!(proxy.get("/api/links/999999").0, 404);
    assert_eq!(proxy.get("/healthz").0, 200);

    // Byte counts: what the proxy forwarded each way is what each server says it sent and received on
    // the replication link (INFO stats, 7.0+).
    if bin.version >= (7, 0, 0) {
        let fwd = |dir| {
            m.get("replscope_forwarded_bytes_total", &[("replica", &ep), ("direction", dir)]).unwrap_or(0.0) as i64
        };
        let to_replica = fwd("master_to_replica");
        let replica_in = info_i64(&replica, "stats", "total_net_repl_input_bytes").expect("replica input bytes");
        // The replica counts from the payload on; the proxy also forwarded the handshake replies
        // (+PONG, +OK for each REPLCONF) and the +FULLRESYNC line, which the story spells out.
        let answer = &l["answer"];
        let fullresync = format!("+FULLRESYNC {} {}\r\n", answer["replid"].as_str().expect("replid"), answer["offset"]);
        let handshake_replies = "+PONG\r\n".len() + 2 * "+OK\r\n".len() + fullresync.len();
        assert_eq!(to_replica, replica_in + handshake_replies as i64, "master→replica bytes: proxy vs replica");
    }

    // A partial resync: the master kills the replica's connection; it comes back with PSYNC.
    master.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    master.wait_for("a partial resync", 30, || {
        let m = proxy.metrics();
        (m.get("replscope_syncs_total", &[("replica", &ep), ("kind", "partial")]) == Some(1.0)).then_some(())
    });
    load(&master, 1000);
    at_rest(&master, &replica, &proxy, &ep);
    assert_eq!(digest(&master), digest(&replica), "datasets differ after the partial resync");
    let m = proxy.metrics();
    assert_eq!(m.get("replscope_syncs_total", &full), Some(1.0), "still one full sync");
    // The disconnect counts once its cause has settled (the master might yet refuse connections).
    master.wait_for("the first link's cause to settle", 20, || {
        let m = proxy.metrics();
        let labels =
            [("replica", ep.as_str()), ("closed_by", "master"), ("phase", "streaming"), ("cause", "master_closed")];
        (m.get("replscope_disconnects_total", &labels) == Some(1.0)).then_some(())
    });
    let first = &proxy.links()[0];
    assert_eq!(
        (first["diagnosis"]["first"].as_str(), first["diagnosis"]["cause"].as_str()),
        (Some("master_closed"), Some("master_closed"))
    );
    assert_eq!(first["diagnosis"]["settled"], true);
    assert!(
        first["diagnosis"]["evidence"]["later"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("the replica came back after"))
    );
    let links = proxy.links();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0]["close"]["by"], "master");
    assert_eq!(links[1]["answer"]["answer"], "continue");

    // The logs: a line per phase, a warning for the end of the first link.
    let logs = proxy.logs();
    let said = |needle: &str| logs.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains(needle)));
    assert!(said("full resync"), "{logs:?}");
    assert!(said("RDB done") && said("checksum ok"), "{logs:?}");
    assert!(said("partial resync accepted"), "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains("closed by the master")))
    );

    // `replscope links` shows the same at a glance.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["links", "--http", &proxy.http])
        .output()
        .expect("replscope links");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    let rows: Vec<&str> = table.lines().skip(1).filter(|l| !l.trim_start().starts_with('└')).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(table.contains("└ the master closed the link in streaming"), "the closed link's explanation: {table}");
    assert!(rows[0].contains(&ep) && rows[0].contains("streaming"), "the open link first: {table}");
    assert!(rows[1].contains("100%") && rows[1].contains("by master (fin) in streaming"), "{table}");

    // SIGTERM: the proxy closes its links and exits 0.
    assert_eq!(proxy.terminate(), Some(0));
}

#[test]
fn disk_full_sync_load_and_partial_resync_through_the_proxy() {
    full_then_partial(false);
}

#[test]
fn diskless_full_sync_load_and_partial_resync_through_the_proxy() {
    full_then_partial(true);
}

#[test]
fn a_master_that_is_down_is_recorded_and_the_replica_is_closed() {
    let port = support::server::free_port();
    let proxy = ProxyProc::start(port, &[]);
    let mut client = std::net::TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect to the proxy");
    client.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut client, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the proxy closes the replica's connection");
    let links = proxy.links();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["close"]["by"], "proxy");
    assert!(links[0]["connect_error"].as_str().is_some_and(|e| e.contains("refused")), "{:?}", links[0]);
    assert_eq!(links[0]["diagnosis"]["cause"], "connect_failed");
    assert!(proxy.logs().iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("master unreachable"))));
}

#[test]
fn a_restarted_master_ends_the_link_and_the_replica_syncs_again_through_the_proxy() {
    let bin = redis_server();
    let mut master = Server::start(&bin, &["--repl-diskless-sync", "no"]);
    master.cmd(&["DEBUG", "POPULATE", "1000", "key", "50"]);
    let proxy = ProxyProc::start(master.port, &[]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    let ep = format!("127.0.0.1:{}", replica.port);
    link_up(&replica);
    at_rest(&master, &replica, &proxy, &ep);

    master.kill();
    // While it is down, the replica's attempts fail at the proxy, which records why.
    master.wait_for("a refused connection to be recorded", 30, || {
        proxy.links().iter().any(|l| l["connect_error"].as_str().is_some_and(|e| e.contains("refused"))).then_some(())
    });
    // Without its RDB (which the disk-based sync left behind, and from which Redis 7 would restore its
    // replication id and grant a partial resync), the master comes back with a new history.
    let _ = std::fs::remove_file(master.dir.join("dump.rdb"));
    master.restart();
    master.cmd(&["SET", "after", "restart"]);
    link_up(&replica);
    at_rest(&master, &replica, &proxy, &ep);
    assert_eq!(digest(&master), digest(&replica));
    assert_eq!(info_i64(&master, "stats", "sync_full"), Some(1), "the restarted master served one full sync");
    let m = proxy.metrics();
    assert_eq!(
        m.get("replscope_syncs_total", &[("replica", &ep), ("kind", "full")]),
        Some(2.0),
        "{}\n{}",
        m.all("replscope_syncs_total").iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join("\n"),
        serde_json::to_string_pretty(&proxy.links()).unwrap_or_default()
    );
    let links = proxy.links();
    let first = &links[0];
    assert_eq!((first["close"]["by"].as_str(), first["close"]["phase"].as_str()), (Some("master"), Some("streaming")));
    let last = links.last().expect("links");
    assert_eq!((last["open"].as_bool(), last["sync_kind"].as_str()), (Some(true), Some("full")));
    // Killed, then refusing connections until restarted: a master that went down, not one that kicked
    // the replica out.
    assert_eq!(first["diagnosis"]["cause"], "master_shutdown", "{}", first["diagnosis"]);
    assert_eq!(first["diagnosis"]["first"], "master_closed");
    let labels =
        [("replica", ep.as_str()), ("closed_by", "master"), ("phase", "streaming"), ("cause", "master_shutdown")];
    assert_eq!(m.get("replscope_disconnects_total", &labels), Some(1.0), "{}", m.text);
}

#[test]
fn the_demo_explains_a_live_link_and_cleans_up() {
    let bin = redis_server();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["demo", "--every", "2", "--duration", "13"])
        .env("REPLSCOPE_SERVER", &bin.path)
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("metrics  http://"), "{stdout}");
    assert!(stdout.contains("ID  ROUTE"), "{stdout}");
    let last_table = stdout.rsplit("ID  ROUTE").next().unwrap_or_default();
    assert!(last_table.contains("by master (fin) in streaming"), "the killed link: {stdout}");
    assert!(
        last_table.lines().any(|l| l.contains("streaming") && !l.contains("by master")),
        "the resynced link: {stdout}"
    );
    assert!(stdout.contains("100%") && stdout.contains(" ok"), "the RDB, complete and checked: {stdout}");
    // The master's folder, as the demo printed it, is gone.
    let master_log = stdout
        .lines()
        .find_map(|l| l.split("(log: ").nth(1)?.strip_suffix(')'))
        .map(std::path::PathBuf::from)
        .expect("the demo prints the master's log path");
    let folder = master_log.parent().expect("a folder");
    assert!(folder.starts_with(std::env::temp_dir()) && !folder.exists(), "{} left behind", folder.display());
}

// ---- What a real server cannot be made to do on demand: scripted byte-level peers ----

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// A scripted master: accepts one connection (skipping readiness probes that send nothing) and hands
/// it to `script`.
fn scripted_master(script: impl FnOnce(TcpStream) + Send + 'static) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let t = std::thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            script(s);
        }
    });
    (port, t)
}

#[test]
fn a_reset_is_passed_on_as_a_reset() {
    let (port, master) = scripted_master(|s| {
        let mut s = s;
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(200));
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).expect("linger 0");
        drop(s); // RST
    });
    let proxy = ProxyProc::start(port, &[]);
    let mut c = TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    c.write_all(b"*1\r\n$4\r\nPING\r\n").expect("ping");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let err = loop {
        match c.read(&mut buf) {
            Ok(0) => panic!("a FIN where the master sent a reset (after {got:?})"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(got, b"+PONG\r\n");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    let _ = master.join();
    let links = proxy.links();
    assert_eq!((links[0]["close"]["by"].as_str(), links[0]["close"]["how"].as_str()), (Some("master"), Some("reset")));
}

#[test]
fn a_fin_is_a_half_close_and_the_other_direction_keeps_flowing() {
    let (port, master) = scripted_master(|mut s| {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got); // until the replica side's FIN arrives
        assert_eq!(got, b"*1\r\n$4\r\nPING\r\n");
        // The replica side has closed its sending half; this direction still works.
        s.write_all(b"+PONG\r\n").expect("write after the peer's FIN");
    });
    let proxy = ProxyProc::start(port, &[]);
    let mut c = TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    c.write_all(b"*1\r\n$4\r\nPING\r\n").expect("ping");
    c.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("read to the master's FIN");
    assert_eq!(got, b"+PONG\r\n");
    let _ = master.join();
    let links = proxy.links();
    assert_eq!((links[0]["close"]["by"].as_str(), links[0]["close"]["how"].as_str()), (Some("replica"), Some("fin")));
}

#[test]
fn a_replica_that_does_not_read_is_the_slow_end_and_memory_stays_bounded() {
    const SIZE: usize = 64 << 20;
    let (port, master) = scripted_master(|mut s| {
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        let mut head = format!("+FULLRESYNC {} 0\r\n${SIZE}\r\nREDIS0011", "ab".repeat(20)).into_bytes();
        let body = vec![0x5au8; SIZE - 9 - 9];
        head.extend_from_slice(&body);
        head.push(0xff);
        head.extend_from_slice(&[0u8; 8]); // checksum not computed
        s.write_all(&head).expect("send the payload");
        let _ = s.read(&mut buf);
    });
    let proxy = ProxyProc::start(port, &["--buffer", "64KiB"]);
    let mut c = TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect");
    c.write_all(
        b"*3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n$4\r\n6399\r\n*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n",
    )
    .expect("handshake");
    // The replica does not read for 1.5 s: the proxy's writes toward it wait, the master's socket fills.
    std::thread::sleep(Duration::from_millis(1500));
    let links = proxy.links();
    let transferred = links[0]["rdb"]["transferred"].as_u64().unwrap_or(0);
    assert!(
        transferred < (SIZE / 2) as u64,
        "backpressure: only what the socket buffers hold moved, not {transferred}"
    );
    c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut left = format!("+FULLRESYNC {} 0\r\n${SIZE}\r\n", "ab".repeat(20)).len() + SIZE;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = c.read(&mut buf).expect("read");
        assert!(n > 0);
        left -= n;
    }
    drop(c);
    let _ = master.join();
    let m = proxy.metrics();
    let blocked = m.get("replscope_write_blocked_seconds_total", &[("replica", "127.0.0.1:6399"), ("side", "replica")]);
    assert!(blocked.is_some_and(|b| b >= 1.0), "waited on the replica: {blocked:?}\n{}", m.text);
    let on_master = m.get("replscope_write_blocked_seconds_total", &[("side", "master")]).unwrap_or(0.0);
    assert!(on_master < 0.5, "the master was not the slow end: {on_master}");
    let links = proxy.links();
    assert_eq!(links[0]["rdb"]["transferred"].as_u64(), Some(SIZE as u64));
    assert_eq!(links[0]["rdb"]["trailer"]["status"], "not_computed");
    assert!(links[0]["blocked"]["replica"].as_f64().is_some_and(|b| b >= 1.0), "{}", links[0]["blocked"]);
}

#[test]
fn a_reset_from_the_replica_side_reaches_the_master_as_a_reset() {
    let (port, master) = scripted_master(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        let err = loop {
            match s.read(&mut buf) {
                Ok(0) => panic!("a FIN where the replica side sent a reset (after {got:?})"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(got, b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    });
    let proxy = ProxyProc::start(port, &[]);
    let mut c = TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect");
    c.write_all(b"*1\r\n$4\r\nPING\r\n").expect("ping");
    std::thread::sleep(Duration::from_millis(200));
    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).expect("linger 0");
    drop(c);
    master.join().expect("the master saw a reset");
    let links = proxy.links();
    assert_eq!((links[0]["close"]["by"].as_str(), links[0]["close"]["how"].as_str()), (Some("replica"), Some("reset")));
}

#[test]
fn two_replicas_sync_at_once_through_one_proxy_each_with_its_own_story() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--rdbcompression", "no", "--repl-diskless-sync", "no"]);
    master.cmd(&["DEBUG", "POPULATE", "30000", "key", "200"]);
    let proxy = ProxyProc::start(master.port, &[]);
    let port = proxy.listen_port.to_string();
    // Both at once: the second may attach to the first's BGSAVE; either way each link tells its own.
    let a = Server::start(&bin, &["--replicaof", "127.0.0.1", &port]);
    let b = Server::start(&bin, &["--replicaof", "127.0.0.1", &port]);
    let eps = [format!("127.0.0.1:{}", a.port), format!("127.0.0.1:{}", b.port)];
    load(&master, 2000);
    for (replica, ep) in [(&a, &eps[0]), (&b, &eps[1])] {
        link_up(replica);
        at_rest(&master, replica, &proxy, ep);
        assert_eq!(digest(&master), digest(replica), "{ep}: datasets differ");
    }
    let m = proxy.metrics();
    assert_eq!(m.get("replscope_links", &[("kind", "replication")]), Some(2.0), "{}", m.text);
    for ep in &eps {
        assert_eq!(m.get("replscope_syncs_total", &[("replica", ep), ("kind", "full")]), Some(1.0), "{ep}\n{}", m.text);
        let rdb = m.get("replscope_rdb_transferred_bytes", &[("replica", ep)]).unwrap_or(0.0);
        assert!(rdb > 6_000_000.0, "{ep}: {rdb} RDB bytes");
        assert_eq!(m.get("replscope_replica_lag_bytes", &[("replica", ep)]), Some(0.0), "{ep}");
    }
    let links = proxy.links();
    let mut replicas: Vec<&str> = links.iter().filter_map(|l| l["replica"].as_str()).collect();
    replicas.sort_unstable();
    let mut expected: Vec<&str> = eps.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(replicas, expected, "one link per replica: {links:?}");
    assert!(links.iter().all(|l| l["rdb"]["trailer"]["status"] == "ok" && l["desyncs"] == serde_json::json!([])));
}
