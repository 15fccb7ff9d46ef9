//! Forwarding: a synthetic master sends a 2 GiB RDB (`$<len>` framing, a real CRC) through a forwarder to
//! a reader that reads at full speed. The forwarder is either the release `replscope proxy` binary or a
//! plain `tokio::io::copy_bidirectional` forwarder; each runs as its own process (this bench re-executes
//! itself for the plain one), so its CPU time and peak RSS are read from `/proc`. Then the latency a proxy
//! adds to the stream: `SET` + `WAIT 1 0` round trips on a real master whose replica is attached directly,
//! then through the proxy (needs `redis-server` on PATH; skipped, saying so, without it).
//!
//! Run: `cargo bench --bench forward` (builds the release binary first). `REPLSCOPE_BENCH_GIB` changes the
//! RDB size (default 2); `REPLSCOPE_BENCH_BUFFER` passes `--buffer` to the proxy (default: its own, 256KiB).
//! Two baselines: `copy_bidirectional` as is (8 KiB buffers) and with 256 KiB buffers, like the proxy's.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BLOCK: usize = 8 << 20;
const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--plain-forwarder") {
        let buffer = args.get(i + 3).and_then(|b| b.parse().ok());
        plain_forwarder(&args[i + 1], &args[i + 2], buffer);
        return;
    }
    let gib: u64 = std::env::var("REPLSCOPE_BENCH_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let size = gib << 30;
    println!("forwarding a {gib} GiB RDB, 3 runs each, alternating\n");
    let block = noise_block();
    let crc = rdb_crc(&block, size);
    let mut results: Vec<(&str, Vec<Run>)> =
        vec![("replscope", Vec::new()), ("copy_bidirectional", Vec::new()), ("copy_bidi_256KiB", Vec::new())];
    for round in 0..3 {
        for (name, runs) in results.iter_mut() {
            let run = transfer(name, &block, size, crc);
            println!(
                "round {round} {name:<20} {:>6.2} GiB/s  cpu {:>5.2} s/GiB  peak rss {:>6.1} MiB",
                run.gib_per_s, run.cpu_s_per_gib, run.peak_rss_mib
            );
            runs.push(run);
        }
    }
    println!();
    let median = |runs: &Vec<Run>, f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (name, runs) in &results {
        println!(
            "median {name:<20} {:>6.2} GiB/s  cpu {:>5.2} s/GiB  peak rss {:>6.1} MiB",
            median(runs, |r| r.gib_per_s),
            median(runs, |r| r.cpu_s_per_gib),
            median(runs, |r| r.peak_rss_mib)
        );
    }
    for (i, baseline) in [(1, "copy_bidirectional"), (2, "copy_bidi_256KiB")] {
        let ratio = median(&results[0].1, |r| r.gib_per_s) / median(&results[i].1, |r| r.gib_per_s);
        println!("throughput ratio replscope / {baseline}: {ratio:.3}");
    }
    println!();
    latency();
}

struct Run {
    gib_per_s: f64,
    cpu_s_per_gib: f64,
    peak_rss_mib: f64,
}

fn noise_block() -> Vec<u8> {
    let mut v = vec![0u8; BLOCK];
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

/// The RDB is `REDIS0011`, then noise blocks, then `0xFF` and the CRC over all of it.
fn rdb_body_len(size: u64) -> u64 {
    size - 9 - 9
}

fn rdb_crc(block: &[u8], size: u64) -> u64 {
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Redis);
    d.update(b"REDIS0011");
    let mut left = rdb_body_len(size);
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        d.update(&block[..n]);
        left -= n as u64;
    }
    d.update(&[0xFF]);
    d.finalize()
}

/// A master that answers one PSYNC with a full sync of `size` bytes, then waits for the reader to close.
fn synthetic_master(listener: TcpListener, block: Vec<u8>, size: u64, crc: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Connections that send nothing (readiness probes through the forwarder) are skipped.
        let mut req = [0u8; 256];
        let mut s = loop {
            let Ok((mut s, _)) = listener.accept() else { return };
            if s.read(&mut req).is_ok_and(|n| n > 0) {
                break s;
            }
        };
        let _ = s.set_nodelay(true);
        let mut head = format!("+FULLRESYNC {REPLID} 0\r\n${size}\r\n").into_bytes();
        head.extend_from_slice(b"REDIS0011");
        if s.write_all(&head).is_err() {
            return;
        }
        let mut left = rdb_body_len(size);
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            if s.write_all(&block[..n]).is_err() {
                return;
            }
            left -= n as u64;
        }
        let mut tail = vec![0xFF];
        tail.extend_from_slice(&crc.to_le_bytes());
        let _ = s.write_all(&tail);
        let _ = s.read(&mut req);
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_forwarder(name: &str, listen: u16, master: u16) -> Child {
    let mut cmd = if name == "replscope" {
        let mut c = Command::new(env!("CARGO_BIN_EXE_replscope"));
        c.args(["proxy", "--master", &format!("127.0.0.1:{master}"), "--listen", &format!("127.0.0.1:{listen}")])
            .args(["--http", &format!("127.0.0.1:{}", free_port())])
            .env("REPLSCOPE_LOG", "warn");
        if let Ok(b) = std::env::var("REPLSCOPE_BENCH_BUFFER") {
            c.args(["--buffer", &b]);
        }
        c
    } else {
        let mut c = Command::new(std::env::current_exe().expect("this bench"));
        c.args(["--plain-forwarder", &format!("127.0.0.1:{listen}"), &format!("127.0.0.1:{master}")]);
        if name == "copy_bidi_256KiB" {
            c.arg((256 * 1024).to_string());
        }
        c
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the forwarder")
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn transfer(name: &str, block: &[u8], size: u64, crc: u64) -> Run {
    let master = TcpListener::bind("127.0.0.1:0").expect("bind master");
    let master_port = master.local_addr().expect("addr").port();
    let master_thread = synthetic_master(master, block.to_vec(), size, crc);
    let listen = free_port();
    let fwd = Killed(spawn_forwarder(name, listen, master_port));
    wait_for_port(listen);
    let pid = fwd.0.id();
    let cpu_before = cpu_seconds(pid);
    let mut reader = TcpStream::connect(("127.0.0.1", listen)).expect("connect to the forwarder");
    let started = Instant::now();
    reader.write_all(b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n").expect("PSYNC");
    let expected = format!("+FULLRESYNC {REPLID} 0\r\n${size}\r\n").len() as u64 + size;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    while got < expected {
        let n = reader.read(&mut buf).expect("read");
        assert!(n > 0, "{name}: closed after {got} of {expected} bytes");
        got += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let rss = peak_rss_mib(pid);
    drop(reader);
    let _ = master_thread.join();
    drop(fwd);
    let gib = size as f64 / (1u64 << 30) as f64;
    Run { gib_per_s: gib / secs, cpu_s_per_gib: cpu / gib, peak_rss_mib: rss }
}

/// The baseline: tokio's `copy_bidirectional` between each accepted connection and the master (its own
/// 8 KiB buffers, or `buffer` bytes each way).
fn plain_forwarder(listen: &str, master: &str, buffer: Option<usize>) {
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
                match buffer {
                    Some(n) => drop(tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, n, n).await),
                    None => drop(tokio::io::copy_bidirectional(&mut a, &mut b).await),
                }
            });
        }
    });
}

// ---- latency: SET + WAIT 1 0 with the replica attached directly, then through the proxy ----

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|p| p.join(name)).find(|p| p.is_file())
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server(Child, std::path::PathBuf);

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
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).expect("write");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut byte).expect("read");
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
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
    let Some(bin) = which("redis-server") else {
        println!("latency: SKIPPED (no redis-server on PATH)");
        return;
    };
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    let mut report = Vec::new();
    for via_proxy in [false, true] {
        let (mp, rp, pp) = (free_port(), free_port(), free_port());
        let _master = server(&bin, mp, &[]);
        let _proxy = via_proxy.then(|| {
            let c = Killed(spawn_forwarder("replscope", pp, mp));
            wait_for_port(pp);
            c
        });
        let target = if via_proxy { pp } else { mp };
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
