//! Why links end, on real servers through the proxy, each cause made the way it happens in production:
//! a stopped replica its master times out, a stopped master its replica times out, `REPLICAOF NO ONE`, a
//! wrong `masterauth`; and a scripted master for a checksum no real server gets wrong.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use support::proxy::ProxyProc;
use support::server::{Server, redis_server};

fn in_sync(master: &Server, replica: &Server) {
    master.wait_for("the replica to catch up", 60, || {
        let r = replica.info("replication");
        (r.get("master_link_status").map(String::as_str) == Some("up")).then_some(())
    });
}

/// Waits for link `index`'s diagnosis to settle; returns it.
fn settled(proxy: &ProxyProc, index: usize, secs: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let links = proxy.links();
        if let Some(d) = links.get(index).map(|l| l["diagnosis"].clone())
            && d["settled"] == true
        {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "no settled diagnosis for link {index}: {links:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn counted(proxy: &ProxyProc, cause: &str) -> f64 {
    proxy
        .metrics()
        .all("replscope_disconnects_total")
        .iter()
        .filter(|(l, _)| l.iter().any(|(k, v)| k == "cause" && v == cause))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn a_replica_that_stops_answering_is_timed_out_by_its_master() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--repl-timeout", "2"]);
    let proxy = ProxyProc::start(master.port, &["--assume-repl-timeout", "2s"]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    in_sync(&master, &replica);
    std::thread::sleep(Duration::from_millis(1500));
    replica.signal("STOP");
    master
        .wait_for("the master to time the replica out", 20, || master.log().contains("timedout replica").then_some(()));
    replica.signal("CONT");
    let d = settled(&proxy, 0, 20);
    assert_eq!(d["cause"], "master_timeout", "{d}");
    assert!(d["evidence"]["replica_silent_seconds"].as_f64().is_some_and(|s| s >= 2.0), "{d}");
    assert_eq!(
        (d["evidence"]["closed_by"].as_str(), d["evidence"]["phase"].as_str()),
        (Some("master"), Some("streaming"))
    );
    assert_eq!(counted(&proxy, "master_timeout"), 1.0);
    assert_eq!(
        d["evidence"]["settings"],
        serde_json::json!([{"setting": "repl-timeout", "value": "2", "source": "assumed"}]),
        "the stated setting, said to be assumed"
    );
    let why = proxy.links()[0]["explanation"].as_str().map(String::from).expect("explained");
    assert!(why.contains("the master's repl-timeout ran out, past repl-timeout 2 (assumed)"), "{why}");
}

#[test]
fn a_master_that_stops_sending_is_timed_out_by_its_replica() {
    let bin = redis_server();
    let master = Server::start(&bin, &[]);
    let proxy = ProxyProc::start(master.port, &[]);
    let replica =
        Server::start(&bin, &["--repl-timeout", "3", "--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    in_sync(&master, &replica);
    master.signal("STOP");
    replica
        .wait_for("the replica to time its master out", 20, || replica.log().contains("MASTER timeout").then_some(()));
    let d = settled(&proxy, 0, 20);
    master.signal("CONT");
    assert_eq!(d["cause"], "replica_timeout", "{d}");
    assert!(d["evidence"]["master_silent_seconds"].as_f64().is_some_and(|s| s >= 2.0), "{d}");
    assert!(d["evidence"]["later"][0].as_str().is_some_and(|s| s.starts_with("the replica came back")), "{d}");
    // No repl-timeout was stated: the explanation says what the silence proves of it instead.
    assert_eq!(d["evidence"]["settings"], serde_json::json!([]), "{d}");
    let why = proxy.links()[0]["explanation"].as_str().map(String::from).expect("explained");
    assert!(why.contains("the replica's repl-timeout ran out, so its repl-timeout is below"), "{why}");
}

#[test]
fn a_replica_sent_away_has_left() {
    let bin = redis_server();
    let master = Server::start(&bin, &[]);
    let proxy = ProxyProc::start(master.port, &[]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    in_sync(&master, &replica);
    replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    let d = settled(&proxy, 0, 20);
    assert_eq!(d["cause"], "replica_left", "{d}");
    assert_eq!(d["evidence"]["closed_by"], "replica");
    assert_eq!(counted(&proxy, "replica_left"), 1.0);
}

#[test]
fn a_wrong_masterauth_is_a_rejected_handshake_and_the_password_appears_nowhere() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--requirepass", "the-right-one"]);
    let proxy = ProxyProc::start(master.port, &[]);
    let _replica = Server::start(
        &bin,
        &["--masterauth", "wr0ng-s3cret-pw", "--replicaof", "127.0.0.1", &proxy.listen_port.to_string()],
    );
    let d = settled(&proxy, 0, 20);
    assert_eq!(d["cause"], "handshake_rejected", "{d}");
    assert!(matches!(d["evidence"]["error_code"].as_str(), Some("WRONGPASS" | "NOAUTH")), "{d}");
    let why = proxy.links()[0]["explanation"].as_str().map(String::from).expect("explained");
    assert!(why.starts_with("the master refused the handshake with") && why.contains("check masterauth"), "{why}");
    let everything = format!("{:?}{:?}{}", proxy.links(), proxy.logs(), proxy.metrics().text);
    assert!(!everything.contains("wr0ng-s3cret-pw") && !everything.contains("the-right-one"), "a password leaked");
}

#[test]
fn a_bad_rdb_checksum_is_named() {
    // A scripted master: a full sync whose RDB trailer is wrong, then it closes.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let master = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
        let mut rdb = b"REDIS0011\xfe\x00\x00\x01k\x01v\xff".to_vec();
        rdb.extend_from_slice(&0x1234_5678_u64.to_le_bytes());
        let mut out = format!("+FULLRESYNC {} 0\r\n${}\r\n", "ab".repeat(20), rdb.len()).into_bytes();
        out.extend_from_slice(&rdb);
        s.write_all(&out).expect("write");
        let _ = s.read(&mut buf); // until the replica side closes
    });
    let proxy = ProxyProc::start(port, &[]);
    let mut c = TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect");
    c.write_all(
        b"*3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n$4\r\n6399\r\n*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n",
    )
    .expect("handshake");
    std::thread::sleep(Duration::from_millis(500));
    drop(c); // a replica gives up on a bad RDB
    master.join().expect("master");
    let d = settled(&proxy, 0, 10);
    assert_eq!(d["cause"], "checksum_mismatch", "{d}");
    assert_eq!(counted(&proxy, "checksum_mismatch"), 1.0);
    assert_eq!(
        proxy.metrics().get("replscope_rdb_checksum_failures_total", &[("replica", "127.0.0.1:6399")]),
        Some(1.0)
    );
}

#[test]
fn a_replica_that_cannot_load_the_rdb_is_a_failed_load_naming_both_versions() {
    // A Valkey 9.1 master sends a replica that announces no version RDB version 11 (Redis 7.2's format;
    // PROTOCOL.md §9.1); a Redis 7.0 replica reads only up to 10.
    let servers = support::server::servers();
    let valkey = servers.iter().find(|s| s.valkey && s.version >= (9, 0, 0)).cloned();
    let redis7 = servers.iter().find(|s| !s.valkey && s.version.0 == 7).cloned().or_else(|| Some(redis_server()));
    let (Some(valkey), Some(redis7)) = (valkey, redis7) else {
        let required = std::env::var("REPLSCOPE_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
        assert!(!required, "needs Valkey ≥ 9.0 and Redis 7 (scripts/servers.sh)");
        eprintln!("SKIPPED: needs Valkey ≥ 9.0 and Redis 7 (REPLSCOPE_SERVERS from scripts/servers.sh)");
        return;
    };
    let master = Server::start(&valkey, &["--repl-diskless-sync", "no"]);
    master.cmd(&["SET", "a", "1"]);
    let proxy = ProxyProc::start(master.port, &[]);
    let replica = Server::start(&redis7, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    let unreadable: u32 = replica.wait_for("the replica to fail loading", 30, || {
        replica.log().lines().find_map(|l| l.split("Can't handle RDB format version ").nth(1)?.trim().parse().ok())
    });
    let d = settled(&proxy, 0, 30);
    assert_eq!(d["cause"], "replica_load_failed", "{d}");
    let why = proxy.links()[0]["explanation"].as_str().map(String::from).expect("explained");
    let (ma, mi, pa) = valkey.version;
    assert!(why.contains(&format!("written by {ma}.{mi}.{pa} (RDB version {unreadable})")), "{why}");
    drop(replica);
}

#[test]
fn a_master_shut_down_is_a_shutdown_and_its_successor_a_new_history() {
    let bin = redis_server();
    // Diskless: no RDB left behind, so the restarted master has a new replication id.
    let mut master = Server::start(&bin, &["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]);
    let proxy = ProxyProc::start(master.port, &[]);
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    in_sync(&master, &replica);
    let _ = master.try_cmd(&["SHUTDOWN", "NOSAVE"]);
    let d = settled(&proxy, 0, 20);
    assert_eq!(d["cause"], "master_shutdown", "{d}");
    assert_eq!(counted(&proxy, "master_shutdown"), 1.0);
    master.restart();
    master.wait_for("the replica to sync with the new master", 60, || {
        let links = proxy.links();
        links
            .iter()
            .find(|l| !l["psync_refusal"].is_null() && l["psync_refusal"]["reason"] != "no_history")
            .map(|l| l["psync_refusal"]["reason"].clone())
    });
    let links = proxy.links();
    let refused = links.iter().rev().find(|l| !l["psync_refusal"].is_null()).expect("a refused PSYNC");
    assert_eq!(refused["psync_refusal"]["reason"], "replid_mismatch", "{}", refused["psync_refusal"]);
}

#[test]
fn a_master_close_right_after_a_complete_rdb_is_named_the_same_every_time() {
    // A scripted master that hangs up the moment a full sync's RDB (8 MiB, a valid CRC) is written: the
    // same close, 16 times, half of them to a replica that reads in small sips (its writes wait a
    // moment, as any transfer's do). Once, such closes were named by chance `output_buffer_limit` (a
    // short wait taken for a backed-up buffer) or `master_closed`.
    const ROUNDS: usize = 16;
    let mut rdb = b"REDIS0011\xfe\x00".to_vec();
    let mut n = 0u64;
    while rdb.len() < 8 << 20 {
        rdb.extend_from_slice(&[0x00, 0x0c]);
        rdb.extend_from_slice(format!("key:{n:08}").as_bytes());
        rdb.extend_from_slice(&[0x40, 0x80]); // a 128-byte value
        rdb.extend(std::iter::repeat_n((n % 251) as u8, 128));
        n += 1;
    }
    rdb.push(0xff);
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, &rdb);
    rdb.extend_from_slice(&crc.to_le_bytes());
    let mut sync = format!("+FULLRESYNC {} 0\r\n${}\r\n", "ab".repeat(20), rdb.len()).into_bytes();
    sync.extend_from_slice(&rdb);

    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let master = std::thread::spawn(move || {
        let mut served = 0;
        while served < ROUNDS {
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = [0u8; 512];
            if !s.read(&mut buf).is_ok_and(|n| n > 0) {
                continue; // a probe
            }
            let _ = s.write_all(&sync);
            served += 1;
            // Dropped: a FIN right behind the last byte of the RDB.
        }
    });
    let proxy = ProxyProc::start(port, &[]);
    for round in 0..ROUNDS {
        let mut c = TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect");
        c.write_all(
            b"*3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n$4\r\n6399\r\n*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n",
        )
        .expect("handshake");
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        loop {
            let n = c.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            got += n;
            if round % 2 == 1 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        assert!(got > 8 << 20, "round {round}: the whole sync arrived ({got} bytes)");
    }
    master.join().expect("master");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let causes: Vec<String> = loop {
        let links = proxy.links();
        let causes: Vec<String> = links
            .iter()
            .filter(|l| l["kind"] == "replication")
            .filter_map(|l| l["diagnosis"]["cause"].as_str().map(String::from))
            .collect();
        if causes.len() == ROUNDS {
            break causes;
        }
        assert!(std::time::Instant::now() < deadline, "not every link diagnosed: {links:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(causes.iter().all(|c| c == "master_closed"), "{causes:?}");
}
