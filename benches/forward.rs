//! The proxy against other forwarders on the same machine, in one run, release build. A synthetic master
//! (threads in this process) answers each replica's handshake (`PING`, `REPLCONF`, `PSYNC`) with
//! `+FULLRESYNC` and a payload; readers in this process read it at full speed through a forwarder, each
//! forwarder its own process, so its CPU time and peak RSS come from `/proc`. Workloads:
//!
//! - `rdb`: one link, a `REPLSCOPE_BENCH_GIB` GiB (default 2) RDB (`$<len>` framing, a real CRC);
//! - `stream`: one link, a tiny RDB then `REPLSCOPE_BENCH_STREAM_GIB` GiB (default 1) of small `SET`s (about 97 bytes each, 11 M commands), which
//!   the proxy frames and counts; plus the decoder alone over the same bytes, in this process;
//! - `fanout`: 500 replicas at once, 16 MiB each (`REPLSCOPE_BENCH_FANOUT_MIB`), three batches on one forwarder: peak RSS, RSS after each
//!   batch closed against the idle figure, and the time a new replica waits for `+FULLRESYNC` (after its
//!   own PING and REPLCONFs) while the 500 transfer;
//! - `latency`: `SET` + `WAIT 1 0` on a real master with its replica attached directly, then through the
//!   proxy (needs `redis-server` on PATH).
//!
//! Forwarders: `replscope` (the release binary, its defaults), `plain` (tokio `copy_bidirectional` with
//! 256 KiB buffers, this bench re-executed), `haproxy` (`mode tcp`, its defaults) and `haproxy-splice`
//! (`option splice-request`/`splice-response`) when `haproxy` is on PATH (Debian package `haproxy`),
//! and `direct` (no forwarder). `REPLSCOPE_BENCH_OTHER=/path/to/replscope` adds another replscope binary
//! (an older build, say) as `other`, with `REPLSCOPE_BENCH_OTHER_ARGS` (e.g. `--buffer 1MiB`).
//!
//! Run: `cargo bench --bench forward` (all), or `cargo bench --bench forward -- stream fanout`;
//! `REPLSCOPE_BENCH_FORWARDERS=replscope,haproxy` keeps only those forwarders.
//! `REPLSCOPE_BENCH_ROUNDS` (default 3) sets the interleaved rounds of the one-link workloads.

mod common;

use common::{free_port, wait_for_port};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use replscope::time::Timestamp;
use replscope::wire::{Decoder, Direction, Event};

const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";
const GIB: f64 = (1u64 << 30) as f64;
const FANOUT_LINKS: usize = 500;
const FANOUT_BATCHES: usize = 3;

/// Bytes each fanout replica receives: `REPLSCOPE_BENCH_FANOUT_MIB` MiB (default 16).
fn fanout_bytes() -> u64 {
    std::env::var("REPLSCOPE_BENCH_FANOUT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(16) << 20
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--plain-forwarder") {
        plain_forwarder(&args[i + 1], &args[i + 2]);
        return;
    }
    let all = ["rdb", "stream", "fanout", "latency"];
    let mut asked: Vec<&str> = all.iter().copied().filter(|w| args.iter().any(|a| a == w)).collect();
    if asked.is_empty() {
        asked = all.to_vec();
    }
    let forwarders = forwarders();
    println!("forwarders: {}", forwarders.iter().map(|f| f.name).collect::<Vec<_>>().join(", "));
    if which("haproxy").is_none() {
        println!("(no haproxy on PATH: install Debian's haproxy to compare with it)");
    }
    let mut summary = Vec::new();
    for w in asked {
        match w {
            "rdb" => summary.extend(rdb(&forwarders)),
            "stream" => summary.extend(stream(&forwarders)),
            "fanout" => summary.extend(fanout(&forwarders)),
            _ => latency(),
        }
    }
    if !summary.is_empty() {
        println!("\ntargets");
        for line in summary {
            println!("  {line}");
        }
    }
}

// ---- forwarders ----

#[derive(Clone)]
struct Forwarder {
    name: &'static str,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Replscope { bin: PathBuf, args: Vec<String> },
    Plain,
    Haproxy { splice: bool },
    Direct,
}

fn forwarders() -> Vec<Forwarder> {
    let mut v = vec![
        Forwarder {
            name: "replscope",
            kind: Kind::Replscope { bin: env!("CARGO_BIN_EXE_replscope").into(), args: Vec::new() },
        },
        Forwarder { name: "plain", kind: Kind::Plain },
    ];
    if let Ok(bin) = std::env::var("REPLSCOPE_BENCH_OTHER") {
        let args = std::env::var("REPLSCOPE_BENCH_OTHER_ARGS").unwrap_or_default();
        let args = args.split_whitespace().map(String::from).collect();
        v.push(Forwarder { name: "other", kind: Kind::Replscope { bin: bin.into(), args } });
    }
    if which("haproxy").is_some() {
        v.push(Forwarder { name: "haproxy", kind: Kind::Haproxy { splice: false } });
        v.push(Forwarder { name: "haproxy-splice", kind: Kind::Haproxy { splice: true } });
    }
    v.push(Forwarder { name: "direct", kind: Kind::Direct });
    if let Ok(only) = std::env::var("REPLSCOPE_BENCH_FORWARDERS") {
        v.retain(|f| only.split(',').any(|n| n.trim() == f.name));
    }
    v
}

/// A forwarder listening on `port`, stopped (and its files removed) when dropped.
struct Running {
    child: Option<Child>,
    port: u16,
    dir: Option<PathBuf>,
}

impl Running {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn start(f: &Forwarder, master: u16) -> Running {
    let listen = free_port();
    let quiet = |c: &mut Command| {
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    };
    let (mut cmd, dir) = match &f.kind {
        Kind::Direct => return Running { child: None, port: master, dir: None },
        Kind::Replscope { bin, args } => {
            let mut c = Command::new(bin);
            c.args(["proxy", "--master", &format!("127.0.0.1:{master}"), "--listen", &format!("127.0.0.1:{listen}")])
                .args(["--http", &format!("127.0.0.1:{}", free_port()), "--max-links", "2000"])
                .args(args)
                .env("REPLSCOPE_LOG", "warn");
            (c, None)
        }
        Kind::Plain => {
            let mut c = Command::new(std::env::current_exe().expect("this bench"));
            c.args(["--plain-forwarder", &format!("127.0.0.1:{listen}"), &format!("127.0.0.1:{master}")]);
            (c, None)
        }
        Kind::Haproxy { splice } => {
            let dir = std::env::temp_dir().join(format!("replscope-bench-haproxy-{}-{listen}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a directory for haproxy");
            let splice = if *splice { "    option splice-request\n    option splice-response\n" } else { "" };
            let cfg = format!(
                "global\n    maxconn 4000\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10m\n    \
                 timeout server 10m\n{splice}\nlisten fwd\n    bind 127.0.0.1:{listen}\n    server master 127.0.0.1:{master}\n"
            );
            let path = dir.join("haproxy.cfg");
            std::fs::write(&path, cfg).expect("write haproxy.cfg");
            let mut c = Command::new(which("haproxy").expect("haproxy"));
            c.arg("-db").arg("-f").arg(&path);
            (c, Some(dir))
        }
    };
    quiet(&mut cmd);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", f.name));
    let running = Running { child: Some(child), port: listen, dir };
    wait_for_port(listen);
    running
}

/// The plain baseline: tokio's `copy_bidirectional_with_sizes`, 256 KiB each way, one task per link.
fn plain_forwarder(listen: &str, master: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        loop {
            let Ok((mut a, _)) = listener.accept().await else { continue };
            let master = master.to_string();
            tokio::spawn(async move {
                let Ok(mut b) = tokio::net::TcpStream::connect(master).await else { return };
                let _ = a.set_nodelay(true);
                let _ = b.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 256 << 10, 256 << 10).await;
            });
        }
    });
}

// ---- the synthetic master ----

/// What the master sends after `PSYNC`: `head`, then `block` repeated up to `body` bytes, then `tail`.
struct Payload {
    head: Vec<u8>,
    block: Vec<u8>,
    body: u64,
    tail: Vec<u8>,
}

impl Payload {
    fn len(&self) -> u64 {
        self.head.len() as u64 + self.body + self.tail.len() as u64
    }

    /// A full sync of an RDB of `size` bytes: `REDIS0011`, noise, `0xFF` and the CRC over all of it.
    fn rdb(size: u64) -> Payload {
        let block = noise(8 << 20);
        let body = size - 18;
        let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Redis);
        d.update(b"REDIS0011");
        let mut left = body;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            d.update(&block[..n]);
            left -= n as u64;
        }
        d.update(&[0xFF]);
        let mut head = format!("+FULLRESYNC {REPLID} 0\r\n${size}\r\n").into_bytes();
        head.extend_from_slice(b"REDIS0011");
        let mut tail = vec![0xFF];
        tail.extend_from_slice(&d.finalize().to_le_bytes());
        Payload { head, block, body, tail }
    }

    /// A full sync of an empty RDB, then `size` bytes (rounded up to whole commands) of small SETs.
    fn stream(size: u64) -> Payload {
        let block = small_sets(64 << 20);
        let body = size.div_ceil(block.len() as u64) * block.len() as u64;
        let mut rdb = b"REDIS0011\xff".to_vec();
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, &rdb);
        rdb.extend_from_slice(&crc.to_le_bytes());
        let mut head = format!("+FULLRESYNC {REPLID} 0\r\n${}\r\n", rdb.len()).into_bytes();
        head.extend_from_slice(&rdb);
        Payload { head, block, body, tail: Vec::new() }
    }

    fn write_to(&self, s: &mut TcpStream) -> std::io::Result<()> {
        s.write_all(&self.head)?;
        let mut left = self.body;
        while left > 0 {
            let n = left.min(self.block.len() as u64) as usize;
            s.write_all(&self.block[..n])?;
            left -= n as u64;
        }
        s.write_all(&self.tail)
    }
}

/// xorshift64*: incompressible bytes, cheaply.
fn noise(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in v.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let b = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    v
}

/// Whole `SET key:<16 digits> <50 bytes>` commands (97 bytes each), at least `len` bytes of them.
fn small_sets(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 128);
    let mut n = 0u64;
    while v.len() < len {
        let key = format!("key:{n:016}");
        let val = format!("{:016x}{:016x}{:018}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15), n, n);
        v.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{val}\r\n", key.len(), val.len()).as_bytes(),
        );
        n += 1;
    }
    v
}

/// A master on a free port, serving every connection on its own thread until dropped.
struct Master {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Master {
    fn start(payload: Arc<Payload>) -> Master {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the master");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let payload = Arc::clone(&payload);
                let _ = std::thread::Builder::new().stack_size(128 << 10).spawn(move || serve_replica(conn, &payload));
            }
        });
        Master { port, stop, accept: Some(accept) }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// Answers `PING` and `REPLCONF` as a master does, and `PSYNC` with the payload; then waits for the
/// replica to close. Connections that send nothing (probes) just end.
fn serve_replica(mut s: TcpStream, payload: &Payload) {
    let _ = s.set_nodelay(true);
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = s.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some((name, used)) = command_name(&pending) {
            pending.drain(..used);
            let reply: &[u8] = match name.as_str() {
                "PING" => b"+PONG\r\n",
                "PSYNC" | "SYNC" => {
                    if payload.write_to(&mut s).is_ok() {
                        let _ = s.shutdown(Shutdown::Write);
                        while s.read(&mut buf).is_ok_and(|n| n > 0) {}
                    }
                    return;
                }
                _ => b"+OK\r\n",
            };
            if s.write_all(reply).is_err() {
                return;
            }
        }
    }
}

/// The upper-cased name of the first whole RESP command in `b`, and its length.
fn command_name(b: &[u8]) -> Option<(String, usize)> {
    let text = std::str::from_utf8(b).ok()?;
    let mut lines = text.split_inclusive("\r\n");
    let count: usize = lines.next()?.strip_prefix('*')?.trim_end().parse().ok()?;
    let mut used = text.find("\r\n")? + 2;
    let mut name = None;
    for _ in 0..count {
        let len_line = lines.next()?;
        let arg = lines.next()?;
        if !arg.ends_with("\r\n") {
            return None;
        }
        used += len_line.len() + arg.len();
        name.get_or_insert_with(|| arg.trim_end().to_ascii_uppercase());
    }
    Some((name?, used))
}

// ---- replicas ----

fn resp(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut byte).expect("a reply line");
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Connects as a replica does (PING, two REPLCONFs, PSYNC): the time from connecting to the first byte of
/// the master's answer to PSYNC, and the stream, its first bytes read.
fn handshake(port: u16, listening: u16) -> (Duration, TcpStream) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the forwarder");
    s.set_nodelay(true).expect("nodelay");
    for (cmd, want) in [
        (resp(&["PING"]), "+PONG"),
        (resp(&["REPLCONF", "listening-port", &listening.to_string()]), "+OK"),
        (resp(&["REPLCONF", "capa", "eof", "capa", "psync2"]), "+OK"),
    ] {
        s.write_all(&cmd).expect("write");
        assert!(read_line(&mut s).starts_with(want));
    }
    s.write_all(&resp(&["PSYNC", "?", "-1"])).expect("PSYNC");
    let mut first = [0u8; 1];
    s.read_exact(&mut first).expect("the answer to PSYNC");
    assert_eq!(first[0], b'+');
    (started.elapsed(), s)
}

/// A replica (announcing `listening`) reading `expected` bytes (the whole answer to PSYNC) at full
/// speed, adding to `progress`.
fn replicate(port: u16, listening: u16, expected: u64, progress: &AtomicU64) -> Duration {
    let (_, mut s) = handshake(port, listening);
    let started = Instant::now();
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 1u64;
    progress.fetch_add(1, Ordering::Relaxed);
    while got < expected {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed after {got} of {expected} bytes");
        got += n as u64;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    started.elapsed()
}

// ---- /proc ----

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// A `/proc/<pid>/status` figure in MiB (`VmHWM`: peak RSS, `VmRSS`: now).
fn status_mib(pid: Option<u32>, field: &str) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

// ---- one link ----

#[derive(Clone, Copy)]
struct Run {
    gib_per_s: f64,
    cpu_s_per_gib: f64,
    peak_rss_mib: f64,
}

fn one_link(f: &Forwarder, payload: &Arc<Payload>) -> Run {
    let master = Master::start(Arc::clone(payload));
    let fwd = start(f, master.port);
    let pid = fwd.pid();
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    replicate(fwd.port, 6380, payload.len(), &AtomicU64::new(0));
    let secs = started.elapsed().as_secs_f64();
    let gib = payload.len() as f64 / GIB;
    let run = Run {
        gib_per_s: gib / secs,
        cpu_s_per_gib: (cpu_seconds(pid) - cpu_before) / gib,
        peak_rss_mib: status_mib(pid, "VmHWM"),
    };
    drop(fwd);
    drop(master);
    run
}

fn rounds() -> usize {
    std::env::var("REPLSCOPE_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs every forwarder `rounds()` times, interleaved; prints each run and the medians; returns the
/// median throughput per forwarder.
fn compare(title: &str, forwarders: &[Forwarder], payload: &Arc<Payload>) -> Vec<(&'static str, f64)> {
    println!("\n{title}, {} rounds, interleaved", rounds());
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); forwarders.len()];
    for round in 0..rounds() {
        for (f, runs) in forwarders.iter().zip(&mut runs) {
            let r = one_link(f, payload);
            println!(
                "  round {round} {:<15} {:>6.2} GiB/s  cpu {:>5.2} s/GiB  peak rss {:>6.1} MiB",
                f.name, r.gib_per_s, r.cpu_s_per_gib, r.peak_rss_mib
            );
            runs.push(r);
        }
    }
    forwarders
        .iter()
        .zip(&runs)
        .map(|(f, runs)| {
            let m = |g: fn(&Run) -> f64| median(&runs.iter().map(g).collect::<Vec<_>>());
            let range = |g: fn(&Run) -> f64| {
                let v: Vec<f64> = runs.iter().map(g).collect();
                (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(0.0, f64::max))
            };
            let (lo, hi) = range(|r| r.gib_per_s);
            println!(
                "  median  {:<15} {:>6.2} GiB/s ({lo:.2}-{hi:.2})  cpu {:>5.2} s/GiB  peak rss {:>6.1} MiB",
                f.name,
                m(|r| r.gib_per_s),
                m(|r| r.cpu_s_per_gib),
                m(|r| r.peak_rss_mib)
            );
            (f.name, m(|r| r.gib_per_s))
        })
        .collect()
}

fn rdb(forwarders: &[Forwarder]) -> Vec<String> {
    let gib: u64 = std::env::var("REPLSCOPE_BENCH_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let payload = Arc::new(Payload::rdb(gib << 30));
    let medians = compare(&format!("rdb: one link, a {gib} GiB RDB"), forwarders, &payload);
    let get = |n: &str| medians.iter().find(|(name, _)| *name == n).map(|m| m.1);
    let mut out = vec![format!("rdb: replscope {:.2} GiB/s (median)", get("replscope").unwrap_or(0.0))];
    if let Some(other) = get("other") {
        out.push(format!(
            "rdb: replscope / other {:.2} (at least 1: the single-link rate at least the other build's)",
            get("replscope").unwrap_or(0.0) / other
        ));
    }
    out
}

fn stream(forwarders: &[Forwarder]) -> Vec<String> {
    let gib: u64 = std::env::var("REPLSCOPE_BENCH_STREAM_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let payload = Arc::new(Payload::stream(gib << 30));
    let commands = payload.body / 97;
    let decoder = decoder_only(&payload);
    println!("\nstream: the decoder alone over the same bytes (64 KiB reads): {decoder:.2} GiB/s");
    let medians =
        compare(&format!("stream: one link, {gib} GiB of small SETs ({commands} commands)"), forwarders, &payload);
    let get = |n: &str| medians.iter().find(|(name, _)| *name == n).map(|m| m.1);
    let mut out = vec![format!("stream: decoder alone {decoder:.2} GiB/s (target >= 3)")];
    if let (Some(r), Some(h)) = (get("replscope"), get("haproxy")) {
        out.push(format!("stream: replscope / haproxy (defaults) {:.2} (target >= 1.5)", r / h));
    }
    out
}

/// The decoder alone over the stream's bytes, 64 KiB at a time: GiB/s, median of three.
fn decoder_only(payload: &Payload) -> f64 {
    let mut out = Vec::new();
    let runs: Vec<f64> = (0..3)
        .map(|_| {
            let mut d = Decoder::new();
            d.feed(Direction::ReplicaToMaster, &resp(&["PSYNC", "?", "-1"]), Timestamp::ZERO, &mut out);
            d.feed(Direction::MasterToReplica, &payload.head, Timestamp::ZERO, &mut out);
            let started = Instant::now();
            let mut commands = 0u64;
            let mut left = payload.body;
            while left > 0 {
                let n = left.min(payload.block.len() as u64) as usize;
                for slice in payload.block[..n].chunks(64 << 10) {
                    out.clear();
                    d.feed(Direction::MasterToReplica, slice, Timestamp::ZERO, &mut out);
                    for e in &out {
                        if let Event::Stream(t) = &e.event {
                            commands += t.commands;
                        }
                    }
                }
                left -= n as u64;
            }
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(commands, payload.body / 97, "every command framed");
            payload.body as f64 / GIB / secs
        })
        .collect();
    median(&runs)
}

// ---- 500 links ----

struct Fanout {
    gib_per_s: Vec<f64>,
    cpu_s_per_gib: f64,
    idle_rss_mib: f64,
    peak_rss_mib: f64,
    after_rss_mib: Vec<f64>,
    fullresync_s: Vec<f64>,
}

fn fanout_one(f: &Forwarder) -> Fanout {
    let payload = Arc::new(Payload::rdb(fanout_bytes()));
    let master = Master::start(Arc::clone(&payload));
    let fwd = start(f, master.port);
    let pid = fwd.pid();
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss_mib = status_mib(pid, "VmRSS");
    let cpu_before = cpu_seconds(pid);
    let mut result = Fanout {
        gib_per_s: Vec::new(),
        cpu_s_per_gib: 0.0,
        idle_rss_mib,
        peak_rss_mib: 0.0,
        after_rss_mib: Vec::new(),
        fullresync_s: Vec::new(),
    };
    let total = payload.len() * FANOUT_LINKS as u64;
    for _ in 0..FANOUT_BATCHES {
        let progress = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let readers: Vec<_> = (0..FANOUT_LINKS)
            .map(|i| {
                let (port, len, progress) = (fwd.port, payload.len(), Arc::clone(&progress));
                // 500 replicas, each its own (the same ones in every batch).
                let listening = 20000 + i as u16;
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn(move || replicate(port, listening, len, &progress))
                    .expect("a reader thread")
            })
            .collect();
        // Once the transfers run at full speed, a new replica asks for a sync.
        while progress.load(Ordering::Relaxed) < total / 5 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (waited, newcomer) = handshake(fwd.port, 6380);
        let still_running = progress.load(Ordering::Relaxed) < total;
        drop(newcomer);
        for r in readers {
            r.join().expect("a reader");
        }
        let secs = started.elapsed().as_secs_f64();
        result.gib_per_s.push(total as f64 / GIB / secs);
        if still_running {
            result.fullresync_s.push(waited.as_secs_f64());
        }
        // The links are closed; give the proxy a moment (its memory is trimmed every second).
        std::thread::sleep(Duration::from_secs(3));
        result.after_rss_mib.push(status_mib(pid, "VmRSS"));
    }
    let gib = (total * FANOUT_BATCHES as u64) as f64 / GIB;
    result.cpu_s_per_gib = (cpu_seconds(pid) - cpu_before) / gib;
    result.peak_rss_mib = status_mib(pid, "VmHWM");
    drop(fwd);
    drop(master);
    result
}

fn fanout(forwarders: &[Forwarder]) -> Vec<String> {
    println!(
        "\nfanout: {FANOUT_LINKS} replicas at once, {} MiB each, {FANOUT_BATCHES} batches per forwarder",
        fanout_bytes() >> 20
    );
    let mut out = Vec::new();
    for f in forwarders.iter().filter(|f| matches!(f.name, "replscope" | "plain" | "haproxy" | "other")) {
        let r = fanout_one(f);
        let fmt = |v: &[f64], p: usize| v.iter().map(|x| format!("{x:.*}", p)).collect::<Vec<_>>().join(" ");
        let worst_after = r.after_rss_mib.iter().copied().fold(0.0, f64::max);
        let worst_wait = r.fullresync_s.iter().copied().fold(0.0, f64::max);
        println!(
            "  {:<15} {} GiB/s  cpu {:.2} s/GiB  rss idle {:.1} MiB, peak {:.1} MiB, after each batch {} MiB  \
             new replica's +FULLRESYNC after {} s",
            f.name,
            fmt(&r.gib_per_s, 2),
            r.cpu_s_per_gib,
            r.idle_rss_mib,
            r.peak_rss_mib,
            fmt(&r.after_rss_mib, 1),
            fmt(&r.fullresync_s, 3)
        );
        if f.name == "replscope" {
            out.push(format!("fanout: replscope peak RSS {:.1} MiB (target <= 64)", r.peak_rss_mib));
            out.push(format!(
                "fanout: replscope RSS after the batches, worst {worst_after:.1} MiB against {:.1} MiB idle: +{:.1} \
                 (target <= +16)",
                r.idle_rss_mib,
                worst_after - r.idle_rss_mib
            ));
            out.push(format!(
                "fanout: replscope's new replica waited for +FULLRESYNC at most {worst_wait:.3} s over {} tries \
                 (target <= 1)",
                r.fullresync_s.len()
            ));
        }
    }
    out
}

// ---- latency: SET + WAIT 1 0 with the replica attached directly, then through the proxy ----

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

struct Server(Child, PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn server(bin: &std::path::Path, port: u16, extra: &[String]) -> Server {
    let dir = std::env::temp_dir().join(format!("replscope-bench-{}-{port}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    wait_for_port(port);
    Server(child, dir)
}

/// Sends one command, reads one reply line (enough for +OK and :1).
fn call(s: &mut TcpStream, args: &[&str]) -> String {
    s.write_all(&resp(args)).expect("write");
    read_line(s)
}

fn wait_in_sync(master: &mut TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(master, &["WAIT", "1", "100"]) != ":1\r\n" {
        assert!(Instant::now() < deadline, "the replica never caught up");
    }
}

fn round_trips(master_port: u16) -> Vec<f64> {
    let mut m = TcpStream::connect(("127.0.0.1", master_port)).expect("master");
    m.set_nodelay(true).expect("nodelay");
    wait_in_sync(&mut m);
    let mut v = Vec::new();
    for i in 0..3000 {
        let t = Instant::now();
        call(&mut m, &["SET", "k", &i.to_string()]);
        assert_eq!(call(&mut m, &["WAIT", "1", "0"]), ":1\r\n");
        if i >= 200 {
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    v.sort_by(f64::total_cmp);
    v
}

fn latency() {
    println!();
    let Some(bin) = which("redis-server") else {
        println!("latency: SKIPPED (no redis-server on PATH)");
        return;
    };
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    let replscope = &forwarders()[0];
    let mut report = Vec::new();
    for via_proxy in [false, true] {
        let (mp, rp) = (free_port(), free_port());
        let _master = server(&bin, mp, &[]);
        let proxy = via_proxy.then(|| start(replscope, mp));
        let target = proxy.as_ref().map_or(mp, |p| p.port);
        let _replica = server(&bin, rp, &["--replicaof".into(), "127.0.0.1".into(), target.to_string()]);
        let v = round_trips(mp);
        let name = if via_proxy { "through replscope" } else { "direct" };
        println!(
            "latency {name:<18} SET + WAIT 1 0: median {:>6.1} µs  p99 {:>6.1} µs  (n={})",
            pct(&v, 0.5),
            pct(&v, 0.99),
            v.len()
        );
        report.push(pct(&v, 0.5));
    }
    println!("added by the proxy (median): {:.1} µs", report[1] - report[0]);
}
