//! A close storm against the release binary: `REPLSCOPE_BENCH_STORM_LINKS` (default 2048) replicas from one
//! host, each announcing its own port, sit in `waiting_bgsave` on a synthetic master (a tokio runtime in
//! this process); then the master closes all of them at once. Meanwhile one unrelated link carries a
//! stream (about 64 MB/s of `SET`s) and `/healthz` is asked every 10 ms, each from its own thread with
//! blocking sockets, so the proxy's stalls are what they measure.
//!
//! Reported, over the storm and the 10 s after it (when the 2 048 diagnoses settle): the slowest
//! `/healthz` answer and the longest pause between two reads on the busy link, against the targets
//! (100 ms and 50 ms), plus the same two figures over the 3 s before the storm, for the noise floor.
//!
//! Run: `cargo bench --bench close_storm`.

mod common;

use common::{free_port, wait_for_port};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";
/// The busy link announces this port; the storm's replicas announce 20000 and up.
const BUSY_PORT: u16 = 7999;

fn main() {
    let links: usize = std::env::var("REPLSCOPE_BENCH_STORM_LINKS").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let master = TcpListener::bind("127.0.0.1:0").expect("bind the master");
    let master_port = master.local_addr().expect("address").port();
    let (storm_tx, storm_rx) = watch::channel(false);
    rt.spawn(serve_master(master, storm_rx));

    let (listen, http) = (free_port(), free_port());
    let proxy = Proxy(
        Command::new(env!("CARGO_BIN_EXE_replscope"))
            .args(["proxy", "--master", &format!("127.0.0.1:{master_port}")])
            .args(["--listen", &format!("127.0.0.1:{listen}"), "--http", &format!("127.0.0.1:{http}")])
            .args(["--max-links", &(links + 64).to_string()])
            .env("REPLSCOPE_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start replscope"),
    );
    wait_for_port(listen);
    wait_for_port(http);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let busy = {
        let (stop, reads) = (Arc::clone(&stop), Arc::clone(&reads));
        std::thread::spawn(move || busy_replica(listen, &stop, &reads))
    };
    let health = Arc::new(Mutex::new(Vec::<(Instant, Duration)>::new()));
    let poller = {
        let (stop, health) = (Arc::clone(&stop), Arc::clone(&health));
        std::thread::spawn(move || poll_health(http, &stop, &health))
    };

    // The storm's replicas: each handshakes, gets +FULLRESYNC and waits for an RDB that never comes.
    let opened = Instant::now();
    let clients = rt.block_on(async {
        let mut v = Vec::with_capacity(links);
        for i in 0..links {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", listen)).await.expect("connect");
            let port = (20000 + i).to_string();
            let mut hello = command(&["PING"]);
            hello.extend(command(&["REPLCONF", "listening-port", &port]));
            hello.extend(command(&["REPLCONF", "capa", "eof", "capa", "psync2"]));
            hello.extend(command(&["PSYNC", "?", "-1"]));
            s.write_all(&hello).await.expect("handshake");
            v.push(s);
        }
        for s in &mut v {
            read_until(s, b"+FULLRESYNC").await;
        }
        v
    });
    println!("{links} replicas in waiting_bgsave after {:.1} s", opened.elapsed().as_secs_f64());
    // Let the links' opening fall out of the comeback window, then measure a quiet baseline.
    std::thread::sleep(Duration::from_secs(3));
    let quiet_from = Instant::now();
    std::thread::sleep(Duration::from_secs(3));

    let storm = Instant::now();
    storm_tx.send_replace(true);
    let closed = rt.block_on(async {
        let mut n = 0;
        for mut s in clients {
            let mut buf = [0u8; 256];
            while let Ok(got) = s.read(&mut buf).await {
                if got == 0 {
                    break;
                }
            }
            n += 1;
        }
        n
    });
    println!("the master closed {closed} links; the replicas saw every close {:.2} s after it began", secs(storm));
    std::thread::sleep(Duration::from_secs(12));
    stop.store(true, Ordering::Relaxed);
    let _ = busy.join();
    let _ = poller.join();
    drop(proxy);

    let reads = reads.lock().expect("reads").clone();
    let health = health.lock().expect("health").clone();
    let gap = |from: Instant, to: Instant| {
        reads.windows(2).filter(|w| w[1] >= from && w[0] <= to).map(|w| w[1] - w[0]).max().unwrap_or_default()
    };
    let slowest = |from: Instant, to: Instant| {
        health.iter().filter(|(at, _)| *at >= from && *at <= to).map(|(_, d)| *d).max().unwrap_or_default()
    };
    let end = storm + Duration::from_secs(12);
    let asked = health.iter().filter(|(at, _)| *at >= storm && *at <= end).count();
    println!(
        "quiet (3 s before):   /healthz slowest {:>6.1} ms   busy link longest pause {:>6.1} ms",
        ms(slowest(quiet_from, storm)),
        ms(gap(quiet_from, storm))
    );
    let (h, g) = (slowest(storm, end), gap(storm, end));
    let worst_at = health
        .iter()
        .filter(|(at, d)| *at >= storm && *at <= end && *d == h)
        .map(|(at, _)| at.duration_since(storm).as_secs_f64())
        .next()
        .unwrap_or_default();
    println!(
        "storm (+12 s, {links} closes, {asked} health checks): /healthz slowest {:>6.1} ms   busy link longest pause {:>6.1} ms",
        ms(h),
        ms(g)
    );
    println!("(the slowest /healthz was asked {worst_at:.1} s after the storm began)");
    println!(
        "targets: /healthz within 100 ms: {}; busy link not paused > 50 ms: {}",
        if h <= Duration::from_millis(100) { "held" } else { "MISSED" },
        if g <= Duration::from_millis(50) { "held" } else { "MISSED" }
    );
}

/// The synthetic master: answers each handshake with `+FULLRESYNC`; the busy link (announcing
/// [`BUSY_PORT`]) then gets an empty RDB and a stream; the others wait for the storm, then are closed.
async fn serve_master(listener: TcpListener, storm: watch::Receiver<bool>) {
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    loop {
        let Ok((mut s, _)) = listener.accept().await else { continue };
        let mut storm = storm.clone();
        tokio::spawn(async move {
            let hello = read_until(&mut s, b"PSYNC").await;
            let busy = hello.windows(4).any(|w| w == BUSY_PORT.to_string().as_bytes());
            let answer = format!("+PONG\r\n+OK\r\n+OK\r\n+FULLRESYNC {REPLID} 0\r\n");
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            if busy {
                let _ = stream_forever(&mut s).await;
            } else {
                let _ = storm.wait_for(|now| *now).await;
            }
        });
    }
}

/// An empty RDB (checksum 0: not checked) then `SET`s of 1 KiB, 64 KiB a millisecond.
async fn stream_forever(s: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    let mut rdb = b"REDIS0011\xff".to_vec();
    rdb.extend([0u8; 8]);
    s.write_all(format!("${}\r\n", rdb.len()).as_bytes()).await?;
    s.write_all(&rdb).await?;
    let value = "v".repeat(1000);
    let one = command(&["SET", "key", &value]);
    let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * (64 * 1024 / one.len())).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    loop {
        tick.tick().await;
        s.write_all(&chunk).await?;
    }
}

/// The busy link's replica: handshakes, then reads as fast as it can, noting when each read returned.
fn busy_replica(listen: u16, stop: &AtomicBool, reads: &Mutex<Vec<Instant>>) {
    let mut s = TcpStream::connect(("127.0.0.1", listen)).expect("connect the busy link");
    let mut hello = command(&["PING"]);
    hello.extend(command(&["REPLCONF", "listening-port", &BUSY_PORT.to_string()]));
    hello.extend(command(&["PSYNC", "?", "-1"]));
    s.write_all(&hello).expect("handshake");
    let mut buf = vec![0u8; 256 << 10];
    let mut at = Vec::with_capacity(1 << 20);
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => at.push(Instant::now()),
        }
    }
    *reads.lock().expect("reads") = at;
}

/// `GET /healthz` every 10 ms on a new connection; notes when each was asked and how long it took.
fn poll_health(http: u16, stop: &AtomicBool, out: &Mutex<Vec<(Instant, Duration)>>) {
    let mut v = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let ok = (|| -> std::io::Result<bool> {
            let mut s = TcpStream::connect(("127.0.0.1", http))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer)?;
            Ok(answer.starts_with(b"HTTP/1.1 200"))
        })();
        let took = asked.elapsed();
        if !matches!(ok, Ok(true)) {
            eprintln!("/healthz failed: {ok:?}");
        }
        v.push((asked, took));
        std::thread::sleep(Duration::from_millis(10).saturating_sub(took));
    }
    *out.lock().expect("health") = v;
}

async fn read_until(s: &mut tokio::net::TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(needle.len()).any(|w| w == needle) {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

fn command(args: &[&str]) -> Vec<u8> {
    replscope::wire::encode_command(args)
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
