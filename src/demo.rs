//! `replscope demo`: a master, a replica and a proxy between them on loopback, a small steady write load,
//! the links table every few seconds, and one `CLIENT KILL TYPE replica` to show a link ending and a
//! partial resync. Everything it starts runs in temporary folders on free ports and is stopped (by PID)
//! on Ctrl-C or after `--duration`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use replscope::observe::table;
use replscope::proxy::{Proxy, ProxyConfig, RouteConfig};

/// A server process, killed and its folder removed when dropped.
struct ServerProc {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_server(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p);
        }
        bail!("--server {}: no such file", p.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["redis-server", "valkey-server"] {
        if let Some(p) = std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()) {
            return Ok(p);
        }
    }
    bail!(
        "no redis-server or valkey-server on PATH: install one (Debian/Ubuntu: sudo apt-get install redis-server) or pass --server PATH"
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_server(bin: &Path, role: &str, extra: &[String]) -> anyhow::Result<ServerProc> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("replscope-demo-{}-{role}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(dir.join(format!("{role}.log")))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let server = ServerProc { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(port, &[&["PING"]]).is_err() {
        if Instant::now() > deadline {
            bail!("the {role} ({}) did not start on port {port}", bin.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

/// Sends commands on one connection and reads one reply line each (enough for +OK, :n, +PONG).
fn call(port: u16, commands: &[&[&str]]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = String::new();
    for args in commands {
        req.push_str(&format!("*{}\r\n", args.len()));
        for a in *args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    }
    s.write_all(req.as_bytes())?;
    let mut seen = 0;
    let mut buf = [0u8; 4096];
    while seen < commands.len() {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
    Ok(())
}

/// What the demo shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A healthy link with a light load; after 10 s the master kills it and a partial resync follows.
    Steady,
    /// The classic outage: a 64 MB RDB over a 4 MiB/s link while ~1.5 MB/s of writes pile up past
    /// `client-output-buffer-limit replica 8mb 4mb 5`; the master kills every attempt until replscope
    /// flags the loop, then the demo gives the link full speed and the sync completes.
    OutputBufferLoop,
}

/// `thousands` × 1,000 keys of 1 KiB of incompressible hex (20 → an RDB of ~20 MiB).
fn seed(port: u16, thousands: u32) -> anyhow::Result<()> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut value = || {
        (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect::<String>()
    };
    for batch in 0..thousands {
        let pairs: Vec<(String, String)> = (0..1000).map(|i| (format!("seed:{}", batch * 1000 + i), value())).collect();
        let cmds: Vec<[&str; 3]> = pairs.iter().map(|(k, v)| ["SET", k.as_str(), v.as_str()]).collect();
        let refs: Vec<&[&str]> = cmds.iter().map(|c| &c[..]).collect();
        call(port, &refs).context("seeding the master")?;
    }
    Ok(())
}

pub fn run(server: Option<PathBuf>, every: u64, duration: Option<u64>, scenario: Scenario) -> anyhow::Result<()> {
    let looping = scenario == Scenario::OutputBufferLoop;
    let bin = find_server(server)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("REPLSCOPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    println!("replscope demo: {}", bin.display());
    let mut master_args: Vec<String> = vec!["--repl-diskless-sync".into(), "no".into()];
    if looping {
        master_args
            .extend(["--rdbcompression", "no", "--client-output-buffer-limit", "replica 8mb 4mb 5"].map(String::from));
        println!("  seeding the master with 64 MB …");
    }
    let master = start_server(&bin, "master", &master_args)?;
    seed(master.port, if looping { 64 } else { 20 })?;
    let limit = replscope::link::forecast::OutputBufferLimit::parse("8mb 4mb 5").map_err(anyhow::Error::msg)?;
    let slow_link = replscope::fault::FaultRequest::from_words("bandwidth rate=4MiB/s direction=master-to-replica")
        .and_then(replscope::fault::FaultRequest::into_spec)
        .map_err(|e| anyhow::anyhow!(e.0))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let http = if TcpListener::bind("127.0.0.1:9190").is_ok() { "127.0.0.1:9190" } else { "127.0.0.1:0" };
    let config = ProxyConfig {
        http: http.into(),
        enable_faults: true,
        admin_token: None,
        faults: if looping { vec![slow_link] } else { Vec::new() },
        buffer_pool: replscope::proxy::pool::DEFAULT_BUDGET,
        http_limits: Default::default(),
        routes: vec![RouteConfig {
            name: "demo".into(),
            master: format!("127.0.0.1:{}", master.port),
            listen: "127.0.0.1:0".into(),
            buffer: replscope::config::DEFAULT_BUFFER,
            max_links: 64,
            settings: replscope::link::settings::ServerSettings {
                output_buffer_limit: looping.then_some(limit),
                ..Default::default()
            },
            forget_after: None,
            introspect: Some(replscope::introspect::Introspection { user: None, password: None }),
        }],
    };
    let proxy = rt.block_on(Proxy::bind(config))?;
    let (Some(listen), Some(http)) = (proxy.listen_addr(), proxy.http_addr()) else {
        bail!("the proxy has no address")
    };
    let route = proxy.table();
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy_task = rt.spawn(proxy.run(async move {
        let _ = stop_rx.await;
    }));
    let replica =
        start_server(&bin, "replica", &["--replicaof".into(), "127.0.0.1".into(), listen.port().to_string()])?;

    println!("  master   127.0.0.1:{} (log: {})", master.port, master.dir.join("master.log").display());
    println!("  replica  127.0.0.1:{} replicating through replscope at {listen}", replica.port);
    println!("  metrics  http://{http}/metrics");
    println!("  links    http://{http}/api/links   (or: replscope links --http {http})");
    if looping {
        println!(
            "  the master's client-output-buffer-limit replica is 8mb 4mb 5, the link does 4 MiB/s (a replscope fault), the master \
             takes ~1.5 MB/s of writes: each full sync of its 64 MB is killed mid-transfer. Watch replscope name it, forecast it \
             and flag the loop; then the demo removes the slow link, and ends once the replica has recovered. Ctrl-C stops.\n"
        );
    } else {
        println!(
            "  a write load runs; in 10 s the master kills the replica's link to show a partial resync. Ctrl-C stops.\n"
        );
    }

    let load_stop = Arc::clone(&stop);
    let master_port = master.port;
    let load = std::thread::spawn(move || {
        let mut i = 0u64;
        let value = "v".repeat(1000);
        while !load_stop.load(Ordering::Relaxed) {
            if looping {
                // 50 × 1 KB every 33 ms: about 1.5 MB/s.
                let keys: Vec<String> = (0..50).map(|k| format!("load:{}", (i * 50 + k) % 100_000)).collect();
                let cmds: Vec<[&str; 3]> = keys.iter().map(|k| ["SET", k.as_str(), value.as_str()]).collect();
                let refs: Vec<&[&str]> = cmds.iter().map(|c| &c[..]).collect();
                let _ = call(master_port, &refs);
                std::thread::sleep(Duration::from_millis(33));
            } else {
                let key = format!("load:{}", i % 1000);
                let _ = call(master_port, &[&["SET", &key, &i.to_string()], &["INCR", "demo:counter"]]);
                std::thread::sleep(Duration::from_millis(10));
            }
            i += 1;
        }
    });

    let ctrl_c = Arc::clone(&stop);
    rt.spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        ctrl_c.store(true, Ordering::Relaxed);
    });
    let started = Instant::now();
    let mut killed = false;
    let mut loop_flagged = false;
    let mut recovered = false;
    let mut last_print = Instant::now() - Duration::from_secs(every);
    while !stop.load(Ordering::Relaxed) {
        if duration.is_some_and(|d| started.elapsed() >= Duration::from_secs(d)) {
            break;
        }
        if looping
            && !loop_flagged
            && route.replicas_json().as_array().is_some_and(|r| r.iter().any(|r| r["in_loop"] == true))
        {
            println!("{}", table::render(&route.links_json()));
            println!(
                "demo: replscope flagged a replication loop. Removing the slow link (the fault), as a faster network would.\n"
            );
            route.shared().clear_faults();
            loop_flagged = true;
        }
        if loop_flagged
            && !recovered
            && route.links_json().as_array().is_some_and(|l| {
                l.iter().any(|l| {
                    l["open"] == true
                        && l["phases"].as_array().is_some_and(|p| p.iter().any(|p| p["phase"] == "streaming"))
                })
            })
        {
            println!("{}", table::render(&route.links_json()));
            println!("demo: the full sync completed at full speed; the loop clears after 60 s of streaming.\n");
            recovered = true;
        }
        if recovered && route.replicas_json().as_array().is_some_and(|r| r.iter().all(|r| r["in_loop"] != true)) {
            println!("{}", table::render(&route.links_json()));
            println!("demo: the replica has streamed for 60 s and the loop is over: it recovered. Done.\n");
            break;
        }
        if !looping && !killed && started.elapsed() >= Duration::from_secs(10) {
            println!("demo: CLIENT KILL TYPE replica on the master\n");
            let _ = call(master.port, &[&["CLIENT", "KILL", "TYPE", "replica"]]);
            killed = true;
        }
        if last_print.elapsed() >= Duration::from_secs(every.max(1)) {
            println!("{}", table::render(&route.links_json()));
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    println!("{}", table::render(&route.links_json()));
    println!("demo: stopping");
    let _ = stop_tx.send(());
    let _ = rt.block_on(proxy_task);
    drop(replica);
    drop(master);
    Ok(())
}
