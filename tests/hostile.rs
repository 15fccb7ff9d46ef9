//! The release-grade promise, tried on the real binary: nothing a peer or a client sends stops or stalls
//! the proxy. A scripted master (a thread here, for bytes no real server sends) and clients on the
//! listen port send what an attacker or a broken peer would: arrays nested 100 000 deep, 2^63 and
//! negative lengths and counts, lines that never end, an EOF-marked RDB whose mark never comes, a
//! nested introspection answer. After each: the proxy is up (`/healthz`), every byte arrived unchanged
//! on the other side (same length, same FNV-1a 64 hash, the data generated on both ends from one seed),
//! and its memory did not grow with what was sent.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::proxy::ProxyProc;

const REPLID: &str = "8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39";

/// A byte stream's length and FNV-1a 64 hash, the same however it was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Digest {
    len: u64,
    hash: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Digest { len: 0, hash: 0xcbf2_9ce4_8422_2325 }
    }
}

impl Digest {
    fn add(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        for b in bytes {
            self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn of(bytes: &[u8]) -> Digest {
        let mut d = Digest::default();
        d.add(bytes);
        d
    }
}

/// Reads `s` to its end, hashing; gives up after `secs`.
fn drain(mut s: TcpStream, secs: u64) -> Digest {
    s.set_read_timeout(Some(Duration::from_secs(secs))).expect("timeout");
    let mut d = Digest::default();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return d,
            Ok(n) => d.add(&buf[..n]),
        }
    }
}

/// Writes `total` bytes of a deterministic pattern that never holds `avoid` (the pattern's bytes are
/// lowercase letters), in 64 KiB writes.
fn write_pattern(s: &mut TcpStream, total: usize, digest: &mut Digest) -> std::io::Result<()> {
    let chunk: Vec<u8> = (0..64 << 10).map(|i| b'a' + ((i * 7 + i / 26) % 26) as u8).collect();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        digest.add(&chunk[..n]);
        left -= n;
    }
    Ok(())
}

/// A scripted master: each connection it accepts gets the next script of `scripts`, which may read
/// what the proxy sends (the replica's bytes) and write what it likes. Returns what each connection
/// received, in order.
fn scripted_master(scripts: Vec<Script>) -> (u16, JoinHandle<Vec<Digest>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let handle = std::thread::spawn(move || {
        let mut received = Vec::new();
        for script in scripts {
            let (s, _) = listener.accept().expect("accept");
            received.push(script(s));
        }
        received
    });
    (port, handle)
}

type Script = Box<dyn FnOnce(TcpStream) -> Digest + Send>;

fn alive(proxy: &mut ProxyProc) {
    assert!(proxy.running(), "the proxy exited");
    assert_eq!(proxy.get("/healthz"), (200, "ok\n".to_string()));
}

fn nested(depth: usize) -> Vec<u8> {
    b"*1\r\n".repeat(depth)
}

/// What clients on the listen port send instead of a replica's handshake.
fn client_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let mut huge_count = b"*9223372036854775807\r\n".to_vec();
    huge_count.extend(b"$1\r\na\r\n".repeat(20_000));
    let mut huge_bulk = b"*1\r\n$9223372036854775807\r\n".to_vec();
    huge_bulk.extend(vec![b'x'; 1 << 20]);
    let mut negative = b"*2\r\n$-7\r\n".to_vec();
    negative.extend(b"*-5\r\n$-1\r\n".repeat(1000));
    let mut after_sync = b"*1\r\n$4\r\nSYNC\r\n".to_vec();
    after_sync.extend(nested(100_000));
    vec![
        ("nested arrays", nested(100_000)),
        ("2^63 count", huge_count),
        ("2^63 bulk length", huge_bulk),
        ("negative lengths", negative),
        ("a line without an end", vec![b'P'; 5 << 20]),
        ("nesting after SYNC", after_sync),
    ]
}

#[test]
fn clients_on_the_listen_port_cannot_crash_it_and_every_byte_reaches_the_master() {
    let payloads = client_payloads();
    // The master reads everything, then closes: the client sees its close once all arrived.
    let scripts: Vec<Script> = payloads.iter().map(|_| Box::new(|s: TcpStream| drain(s, 60)) as Script).collect();
    let (master, received) = scripted_master(scripts);
    let mut proxy = ProxyProc::start(master, &[]);
    let rss_before = proxy.rss_bytes();
    let mut sent = Vec::new();
    for (what, bytes) in &payloads {
        let mut c = TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect");
        c.write_all(bytes).unwrap_or_else(|e| panic!("{what}: the proxy stopped reading: {e}"));
        c.shutdown(Shutdown::Write).expect("shutdown");
        // The master ends its side once it has read everything: the client sees the close.
        let _ = drain(c, 60);
        sent.push(Digest::of(bytes));
        alive(&mut proxy);
    }
    let received = received.join().expect("master");
    for ((what, _), (got, want)) in payloads.iter().zip(received.iter().zip(&sent)) {
        assert_eq!(got, want, "{what}: the master got other bytes than the client sent");
    }
    let grew = proxy.rss_bytes().saturating_sub(rss_before);
    assert!(
        grew < 64 << 20,
        "RSS grew {} MiB for {} MiB sent",
        grew >> 20,
        sent.iter().map(|d| d.len).sum::<u64>() >> 20
    );
    // Each gave up on understanding once, and said so; none was taken for a replica.
    let desyncs: f64 = proxy.metrics().all("replscope_desyncs_total").iter().map(|(_, v)| v).sum();
    assert!(desyncs >= 4.0, "desyncs counted: {desyncs}");
}

/// Reads what the proxy sends a master until the replica's `PSYNC` has come (or the connection ended).
fn read_until_psync(s: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(5).any(|x| x == b"PSYNC") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// A replica's handshake, as the test's replica sends it.
fn handshake() -> Vec<u8> {
    let mut v = replscope::wire::encode_command(&["PING"]);
    v.extend(replscope::wire::encode_command(&["REPLCONF", "listening-port", "6390"]));
    v.extend(replscope::wire::encode_command(&["PSYNC", "?", "-1"]));
    v
}

/// A master script: waits for the handshake's PSYNC, then sends `prefix` and `pattern` bytes of the
/// pattern, then closes. Reports what it sent (the replica side checks it got the same).
fn master_sends(prefix: Vec<u8>, pattern: usize, sent: mpsc::Sender<Digest>) -> Script {
    Box::new(move |s: TcpStream| {
        let mut reader = s.try_clone().expect("clone");
        let mut w = s;
        read_until_psync(&mut reader);
        let mut d = Digest::default();
        if w.write_all(&prefix).is_ok() {
            d.add(&prefix);
            let _ = write_pattern(&mut w, pattern, &mut d);
        }
        let _ = sent.send(d);
        let _ = w.shutdown(Shutdown::Write);
        drain(reader, 10)
    })
}

#[test]
fn a_master_that_sends_what_no_master_should_cannot_crash_it_and_the_replica_gets_every_byte() {
    let fullresync = format!("+PONG\r\n+OK\r\n+FULLRESYNC {REPLID} 0\r\n");
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("a handshake reply nested 100 000 deep", nested(100_000), 0),
        ("an endless handshake line", Vec::new(), 20 << 20),
        (
            "an EOF-marked RDB whose mark never comes",
            format!("{fullresync}$EOF:{}\r\n", "0".repeat(40)).into(),
            64 << 20,
        ),
        ("an RDB of 2^63 bytes", format!("{fullresync}$9223372036854775807\r\n").into(), 16 << 20),
        ("a negative RDB length", format!("{fullresync}$-5\r\n").into(), 1 << 20),
        (
            "a stream nested 100 000 deep",
            [b"+PONG\r\n+OK\r\n+CONTINUE\r\n".to_vec(), nested(100_000)].concat(),
            1 << 20,
        ),
        (
            "a stream command of 2^63 arguments",
            [b"+PONG\r\n+OK\r\n+CONTINUE\r\n*9223372036854775807\r\n".to_vec(), b"$1\r\na\r\n".repeat(10_000)].concat(),
            1 << 20,
        ),
    ];
    let (tx, rx) = mpsc::channel();
    let scripts = cases.iter().map(|(_, prefix, n)| master_sends(prefix.clone(), *n, tx.clone())).collect();
    let (master, received) = scripted_master(scripts);
    let mut proxy = ProxyProc::start(master, &[]);
    let rss_before = proxy.rss_bytes();
    let mut peak = rss_before;
    for (what, _, _) in &cases {
        let mut replica = TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect");
        replica.write_all(&handshake()).expect("handshake");
        let rss_watch = proxy.pid();
        let got = drain(replica, 120);
        let sent = rx.recv_timeout(Duration::from_secs(60)).expect("the master's report");
        assert_eq!(got, sent, "{what}: the replica got other bytes than the master sent");
        peak = peak.max(rss_of(rss_watch));
        alive(&mut proxy);
    }
    drop(received);
    let grew = peak.saturating_sub(rss_before);
    assert!(grew < 64 << 20, "RSS grew {} MiB (memory must not grow with what a link carries)", grew >> 20);
    // Each case but the pattern-only one made the master side opaque, said once per link.
    let gave_up = proxy
        .logs()
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("stopped following this direction")))
        .count();
    assert!(gave_up >= 6, "{gave_up} links said they stopped following: {:#?}", proxy.logs());
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok())
        .map_or(0, |kib: u64| kib * 1024)
}

#[test]
fn a_master_whose_introspection_answer_nests_without_end_is_refused_not_followed() {
    // Every request gets an answer nested 30 700 deep (the depth that aborted the process before).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = std::sync::Arc::clone(&stop);
    listener.set_nonblocking(true).expect("nonblocking");
    let master = std::thread::spawn(move || {
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let mut buf = [0u8; 4096];
                    if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                        let _ = s.write_all(&[nested(30_700), b":1\r\n".to_vec()].concat());
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let mut proxy = ProxyProc::start(port, &["--introspect"]);
    let said = proxy.wait_log_containing("introspection: cannot ask the master about itself", 20);
    assert!(said.contains("nested deeper than 2"), "{said}");
    alive(&mut proxy);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = master.join();
}

/// Opens `n` connections to the API, each sending half a request and then nothing.
fn half_requests(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect to the API");
            // Refused ones may be closed before this is written.
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: replscope\r\n");
            s
        })
        .collect()
}

/// Whether the server closed `s` by `deadline` (EOF or reset, rather than still waiting).
fn closed_by(mut s: TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn half_requests_to_the_api_are_timed_out_and_capped_and_never_keep_a_replica_out() {
    let bin = support::server::redis_server();
    let master = support::server::Server::start(&bin, &[]);
    master.cmd(&["SET", "k", "v"]);
    let mut proxy = ProxyProc::start(master.port, &[]);
    let flooded = Instant::now();
    // 300 clients that never finish a request: 128 are served (and wait), the rest are closed at once.
    let held = half_requests(&proxy.http, 300);
    // Meanwhile a replica connects through the proxy and syncs.
    let replica = support::server::Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    replica.wait_for("the replica to sync through the flooded proxy", 30, || {
        (replica.info("replication").get("master_link_status").map(String::as_str) == Some("up")).then_some(())
    });
    assert_eq!(replica.cmd(&["GET", "k"]), master.cmd(&["GET", "k"]));
    // Every one of them is closed within the 10 s header-read timeout (and a margin for this machine).
    let deadline = flooded + Duration::from_secs(16);
    let open = held.into_iter().map(|s| closed_by(s, deadline)).filter(|closed| !closed).count();
    assert_eq!(open, 0, "half requests still open {:.1} s after they came", flooded.elapsed().as_secs_f64());
    alive(&mut proxy);
    let refused = proxy.metrics().get("replscope_http_connections_refused_total", &[]).expect("the metric");
    assert!(refused >= 172.0, "{refused} connections refused over the cap of 128");
}

#[test]
fn shutdown_does_not_wait_for_a_client_that_never_finishes_its_request() {
    let unused = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    let proxy = ProxyProc::start(unused, &[]);
    let held = half_requests(&proxy.http, 5);
    // And one client mid-session: a whole request answered, the connection kept alive and idle.
    let mut idle = TcpStream::connect(&proxy.http).expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: replscope\r\n\r\n").expect("request");
    let mut answer = [0u8; 256];
    assert!(idle.read(&mut answer).expect("answer") > 0);
    let asked = Instant::now();
    let code = proxy.terminate();
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "SIGTERM is a clean exit");
    assert!(took < Duration::from_secs(6), "exit took {:.1} s with idle HTTP clients", took.as_secs_f64());
    drop((held, idle));
}

/// Runs `replscope` expecting it to refuse to start: exit 2 and one line on stderr, which is returned. One
/// that starts instead is killed after 10 s and fails the test.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(args)
        .env_remove("REPLSCOPE_ENABLE_FAULTS")
        .env_remove("REPLSCOPE_ADMIN_TOKEN")
        .env_remove("REPLSCOPE_MAX_LINKS")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run replscope");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} {env:?}: started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
    assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    err
}

#[test]
fn settings_that_would_quietly_do_harm_are_refused_at_start() {
    let base = ["proxy", "--master", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().chain(extra).copied().collect() };
    // (arguments, environment, what the one line says)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (with(&["--fault", "cut how=reset"]), vec![], "--fault needs --enable-faults"),
        (with(&["--max-links", "0"]), vec![], "0 refuses every connection"),
        (with(&[]), vec![("REPLSCOPE_MAX_LINKS", "0")], "0 refuses every connection"),
        (with(&["--enable-faults", "--admin-token", ""]), vec![], "is blank"),
        (with(&["--enable-faults"]), vec![("REPLSCOPE_ADMIN_TOKEN", "   ")], "is blank"),
    ];
    for (args, env, want) in cases {
        let err = refused(&args, &env);
        assert!(err.contains(want), "{args:?} {env:?}: {err}");
    }
}

#[test]
fn a_password_where_a_variable_name_belongs_is_never_repeated_at_start_or_reload() {
    let dir = std::env::temp_dir().join(format!("replscope-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("replscope.toml");
    let secret = "Tr0ub4dor&3-horse";
    let route = |extra: &str| {
        format!("[[route]]\nname = \"main\"\nmaster = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:0\"\n{extra}")
    };
    let misplaced = route(&format!("master-auth-user = \"intro\"\nmaster-auth-password-env = \"{secret}\"\n"));
    std::fs::write(&file, &misplaced).expect("write");
    let path = file.to_string_lossy().into_owned();
    let err = refused(&["proxy", "--config", &path, "--http", "127.0.0.1:0"], &[]);
    assert!(!err.contains(secret), "{err}");
    assert!(err.contains("route.master-auth-password-env: is not the name of an environment variable"), "{err}");

    // The same mistake in a reload: the running configuration stays, and the log does not repeat it.
    std::fs::write(&file, route("")).expect("write");
    let proxy = ProxyProc::start_config(&file, &[]);
    std::fs::write(&file, &misplaced).expect("write");
    let before = proxy.logs().len();
    proxy.signal("HUP");
    let failed = proxy.wait_log("reload failed: the running configuration stays", before, 20);
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("is not the name of")), "{failed}");
    for line in proxy.logs() {
        assert!(!line.to_string().contains(secret), "{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_storm_of_closes_is_diagnosed_link_by_link_while_the_api_keeps_answering() {
    const LINKS: usize = 200;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (storm_tx, storm_rx) = mpsc::channel::<()>();
    // The master answers each replica's PSYNC with +FULLRESYNC, then closes them all at once.
    let master = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..LINKS {
            let (mut s, _) = listener.accept().expect("accept");
            read_until_psync(&mut s);
            s.write_all(format!("+PONG\r\n+OK\r\n+FULLRESYNC {REPLID} 0\r\n").as_bytes()).expect("answer");
            held.push(s);
        }
        let _ = storm_rx.recv();
        drop(held);
    });
    let mut proxy = ProxyProc::start(port, &[]);
    let replicas: Vec<TcpStream> = (0..LINKS)
        .map(|i| {
            let mut c = TcpStream::connect(("127.0.0.1", proxy.listen_port)).expect("connect");
            let mut hello = replscope::wire::encode_command(&["PING"]);
            hello.extend(replscope::wire::encode_command(&["REPLCONF", "listening-port", &(20_000 + i).to_string()]));
            hello.extend(replscope::wire::encode_command(&["PSYNC", "?", "-1"]));
            c.write_all(&hello).expect("handshake");
            c
        })
        .collect();
    let waiting = |proxy: &ProxyProc| {
        proxy
            .links()
            .iter()
            .filter(|l| l["phases"].as_array().is_some_and(|p| p.iter().any(|x| x["phase"] == "waiting_bgsave")))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiting(&proxy) < LINKS {
        assert!(Instant::now() < deadline, "{} of {LINKS} links reached waiting_bgsave", waiting(&proxy));
        std::thread::sleep(Duration::from_millis(50));
    }
    storm_tx.send(()).expect("storm");
    // Each replica sees its close; the API answers all along; every link is diagnosed, then settled.
    for r in replicas {
        let _ = drain(r, 30);
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        alive(&mut proxy);
        let links = proxy.links();
        let settled = links.iter().filter(|l| l["open"] == false && l["diagnosis"]["settled"] == true).count();
        if settled == LINKS {
            // The same close, the same answer for each (judged link by link, not as a crowd).
            let cause = &links[0]["diagnosis"]["cause"];
            assert!(links.iter().all(|l| l["diagnosis"]["cause"] == *cause), "{links:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "{settled} of {LINKS} closed links settled");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = master.join();
}
