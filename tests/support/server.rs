//! Real `redis-server` / `valkey-server` processes for tests: found on disk, started on a free loopback
//! port with their own temporary folder, spoken to in raw RESP, and killed (by PID) when dropped.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

/// A server binary and its version.
#[derive(Clone, Debug)]
pub struct ServerBin {
    pub name: String,
    pub path: PathBuf,
    /// (major, minor, patch).
    pub version: (u32, u32, u32),
    pub valkey: bool,
}

impl ServerBin {
    fn probe(name: &str, path: &Path) -> Option<ServerBin> {
        let out = Command::new(path).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
        let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
        let version = (parts.next()?, parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Some(ServerBin { name: name.to_string(), path: path.to_path_buf(), version, valkey: text.contains("Valkey") })
    }

    /// `DEBUG` needs `--enable-debug-command yes` from 7.0 on (and is refused as an option before).
    fn debug_flag(&self) -> bool {
        self.valkey || self.version >= (7, 0, 0)
    }
}

/// The servers to test against: every `*/redis-server` and `*/valkey-server` under `$REPLSCOPE_SERVERS`
/// (the folder `scripts/servers.sh` fills), else `redis-server` on `PATH`. With
/// `REPLSCOPE_REQUIRE_SERVERS=1` (CI), finding none is a failure; otherwise the caller skips, saying so.
pub fn servers() -> Vec<ServerBin> {
    let mut found = Vec::new();
    if let Ok(dir) = std::env::var("REPLSCOPE_SERVERS") {
        let mut entries: Vec<_> =
            std::fs::read_dir(&dir).map(|d| d.filter_map(Result::ok).collect()).unwrap_or_default();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            for bin in ["redis-server", "valkey-server"] {
                let path = entry.path().join(bin);
                if path.exists() {
                    found.extend(ServerBin::probe(&entry.file_name().to_string_lossy(), &path));
                }
            }
        }
    }
    if found.is_empty()
        && let Ok(path) = which("redis-server")
    {
        found.extend(ServerBin::probe("redis-server", &path));
    }
    if found.is_empty() {
        let required = std::env::var("REPLSCOPE_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
        assert!(!required, "no redis-server/valkey-server found (REPLSCOPE_SERVERS or PATH)");
        eprintln!("SKIPPED: no redis-server or valkey-server found; set REPLSCOPE_SERVERS or install redis-server");
    }
    found
}

fn which(name: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|p| p.join(name)).find(|p| p.is_file()).ok_or(())
}

/// A free loopback port (bound, then released; the server takes it a moment later).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// A running server.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub bin: ServerBin,
    args: Vec<String>,
}

/// The server the proxy tests use: `$REPLSCOPE_REDIS_SERVER`, else `redis-server` on `PATH`. Missing, the
/// test fails and says how to install one.
pub fn redis_server() -> ServerBin {
    let path = std::env::var_os("REPLSCOPE_REDIS_SERVER").map(PathBuf::from).or_else(|| which("redis-server").ok());
    let Some(path) = path else {
        panic!(
            "no redis-server: install one (Debian/Ubuntu: apt-get install redis-server) or set REPLSCOPE_REDIS_SERVER"
        )
    };
    ServerBin::probe("redis-server", &path).unwrap_or_else(|| panic!("{} does not run", path.display()))
}

impl Server {
    /// Starts `bin` with `args` on a free port; waits until it answers PING.
    pub fn start(bin: &ServerBin, args: &[&str]) -> Server {
        for attempt in 0..3 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("replscope-test-{}-{port}-{attempt}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            if let Some(server) = Self::spawn(bin, port, dir, args) {
                return server;
            }
        }
        panic!("could not start {}", bin.path.display());
    }

    /// Stops the server (SIGKILL) and starts it again on the same port, in the same folder.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let restarted = Self::spawn(&self.bin, self.port, self.dir.clone(), self.args.clone())
            .unwrap_or_else(|| panic!("{} did not restart on port {}", self.bin.name, self.port));
        let old = std::mem::replace(self, restarted);
        std::mem::forget(old); // its process is gone and its folder is ours now
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the server, by PID.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {}", self.pid());
    }

    /// Stops the server (SIGKILL) without restarting it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(bin: &ServerBin, port: u16, dir: PathBuf, args: Vec<String>) -> Option<Server> {
        {
            let mut cmd = Command::new(&bin.path);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("server.log"))
                .args(["--daemonize", "no"]);
            if bin.debug_flag() {
                cmd.args(["--enable-debug-command", "yes"]);
            }
            cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.path.display()));
            let mut server = Server { child, port, dir, bin: bin.clone(), args };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // exited: most likely the port was taken meanwhile
                }
                // Up: it answers PING (with -NOAUTH when it wants a password).
                if server.try_cmd(&["PING"]).is_ok_and(|r| {
                    r == OwnedFrame::SimpleString(b"PONG".to_vec())
                        || matches!(&r, OwnedFrame::Error(e) if e.starts_with("NOAUTH"))
                }) {
                    return Some(server);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("{} did not start on port {port}: {}", bin.name, server.log_tail());
            // Keep the folder for a retry elsewhere; the process is dead or will be killed by Drop.
            None
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Sends one command and reads its reply.
    pub fn try_cmd(&self, args: &[&str]) -> std::io::Result<OwnedFrame> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        s.write_all(&req)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            if let Ok(Some((frame, _))) = decode(&buf) {
                return Ok(frame);
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command; panics on an I/O error or an error reply.
    pub fn cmd(&self, args: &[&str]) -> OwnedFrame {
        match self.try_cmd(args) {
            Ok(OwnedFrame::Error(e)) => panic!("{} {args:?}: -{e}", self.bin.name),
            Ok(frame) => frame,
            Err(e) => panic!("{} {args:?}: {e}", self.bin.name),
        }
    }

    /// Sends commands one after another on one connection (so `WAIT` sees the writes before it);
    /// returns their replies.
    pub fn session(&self, commands: &[&[&str]]) -> Vec<OwnedFrame> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut replies = Vec::new();
        for args in commands {
            let mut req = format!("*{}\r\n", args.len()).into_bytes();
            for a in *args {
                req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
            s.write_all(&req).expect("write");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                if let Ok(Some((frame, _))) = decode(&buf) {
                    replies.push(frame);
                    break;
                }
                let n = s.read(&mut chunk).expect("read");
                assert!(n > 0, "server closed");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        replies
    }

    /// Sends many commands on one connection, pipelined, and reads as many replies; panics on an error reply.
    pub fn pipeline(&self, commands: &[Vec<String>]) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut req = Vec::new();
        for args in commands {
            req.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        s.write_all(&req).expect("write pipeline");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut replies = 0;
        while replies < commands.len() {
            let n = s.read(&mut chunk).expect("read replies");
            assert!(n > 0, "server closed mid-pipeline");
            buf.extend_from_slice(&chunk[..n]);
            let mut used = 0;
            while let Ok(Some((frame, len))) = decode(&buf[used..]) {
                assert!(!matches!(frame, OwnedFrame::Error(_)), "{}: {frame:?}", self.bin.name);
                used += len;
                replies += 1;
            }
            buf.drain(..used);
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// `INFO <section>` as key → value.
    pub fn info(&self, section: &str) -> std::collections::HashMap<String, String> {
        let OwnedFrame::BulkString(text) = self.cmd(&["INFO", section]) else { panic!("INFO is a bulk string") };
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    /// Waits (30 s at most) until this master has a replica online.
    pub fn wait_replica_online(&self) {
        self.wait_for("the replica online", 30, || {
            self.info("replication").get("slave0").filter(|s| s.contains("state=online")).map(|_| ())
        });
    }

    /// Polls `f` every 50 ms until it returns `Some`, for at most `secs` seconds.
    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "{}: timed out waiting for {what}\n{}", self.bin.name, self.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
