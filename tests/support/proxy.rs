//! The `replscope proxy` binary as a subprocess for tests: started on ports it picks itself, its JSON log
//! lines collected, its HTTP API read, and killed (by PID) when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running proxy.
/// The proxy of the classic loop as the demo builds it: a 4 MiB/s link toward the replica, judged against
/// the master's `client-output-buffer-limit replica 8mb 4mb 5`.
pub const LOOP_PROXY_ARGS: [&str; 5] = [
    "--enable-faults",
    "--assume-output-buffer-limit",
    "8mb 4mb 5",
    "--fault",
    "bandwidth rate=4MiB/s direction=master-to-replica",
];

pub struct ProxyProc {
    child: Child,
    pub listen_port: u16,
    pub http: String,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl ProxyProc {
    /// Starts `replscope proxy --master 127.0.0.1:<master_port>` with `extra` arguments.
    pub fn start(master_port: u16, extra: &[&str]) -> ProxyProc {
        Self::start_with_http(master_port, "127.0.0.1:0", extra)
    }

    /// The same, with the API on `http`.
    pub fn start_with_http(master_port: u16, http: &str, extra: &[&str]) -> ProxyProc {
        let master = format!("127.0.0.1:{master_port}");
        let mut args = vec!["--master", &master, "--name", "main", "--listen", "127.0.0.1:0", "--http", http];
        args.extend(extra);
        Self::start_args(&args)
    }

    /// Starts `replscope proxy --config <file>` with `extra` arguments (the API on a port of its own).
    pub fn start_config(file: &std::path::Path, extra: &[&str]) -> ProxyProc {
        let file = file.to_string_lossy();
        let mut args = vec!["--config", &*file, "--http", "127.0.0.1:0"];
        args.extend(extra);
        Self::start_args(&args)
    }

    /// Starts `replscope proxy` with JSON logs and `args`; waits until it is ready.
    pub fn start_args(args: &[&str]) -> ProxyProc {
        Self::start_args_env(args, &[])
    }

    /// The same, with these environment variables set.
    pub fn start_args_env(args: &[&str], env: &[(&str, &str)]) -> ProxyProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_replscope"))
            .args(["proxy", "--log-format", "json"])
            .args(args)
            .envs(env.iter().copied())
            .env_remove("REPLSCOPE_ADMIN_TOKEN")
            .env_remove("REPLSCOPE_ENABLE_FAULTS")
            .env("REPLSCOPE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start replscope proxy");
        let stderr = child.stderr.take().expect("stderr");
        let logs: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(v);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = logs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|l| l["message"] == "replscope proxy ready")
                .cloned();
            if let Some(l) = ready {
                let listen = l["listen"].as_str().expect("listen address").to_string();
                // With several routes, the first one's.
                let first = listen.split(',').next().unwrap_or_default();
                let listen_port = first.rsplit(':').next().and_then(|p| p.parse().ok()).expect("listen port");
                let http = l["http"].as_str().expect("http address").to_string();
                return ProxyProc { child, listen_port, http, logs };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("replscope proxy exited with {status}: {:?}", logs.lock().unwrap_or_else(|p| p.into_inner()));
            }
            assert!(Instant::now() < deadline, "replscope proxy did not get ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its resident memory (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// The JSON log lines so far.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// GET a path of the HTTP API: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.http, path)
    }

    /// `/api/links`, parsed.
    pub fn links(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.get("/api/links");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON").as_array().cloned().expect("an array")
    }

    /// `/metrics`, parsed into (name, labels, value) samples.
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        Metrics::parse(&body)
    }

    /// Sends a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name}");
    }

    /// Waits (for at most `secs`) for a log line whose message is `message`, after the first `skip`.
    pub fn wait_log(&self, message: &str, skip: usize, secs: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self.logs().into_iter().skip(skip).find(|l| l["message"] == message) {
                return l;
            }
            assert!(Instant::now() < deadline, "no log {message:?} in {:#?}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (for at most `secs`) for a log line whose message contains `part`; returns the message.
    pub fn wait_log_containing(&self, part: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let found = self
                .logs()
                .into_iter()
                .find_map(|l| l["message"].as_str().filter(|m| m.contains(part)).map(String::from));
            if let Some(m) = found {
                return m;
            }
            assert!(Instant::now() < deadline, "no log containing {part:?} in {:#?}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET a JSON path of the API.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status");
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return (status, dechunk(body));
    }
    (status, body.to_string())
}

/// The body of a chunked response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").expect("chunk end");
    }
    out
}

/// Label pairs of one sample.
pub type Labels = Vec<(String, String)>;

/// Prometheus samples.
pub struct Metrics {
    pub text: String,
    samples: Vec<(String, Labels, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            samples.push((name.to_string(), labels, value.parse().unwrap_or(f64::NAN)));
        }
        Metrics { text: text.to_string(), samples }
    }

    /// The value of the one sample of `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
            .map(|(_, _, v)| *v)
            .next()
    }

    /// Every sample of `name`.
    pub fn all(&self, name: &str) -> Vec<(Labels, f64)> {
        self.samples.iter().filter(|(n, ..)| n == name).map(|(_, l, v)| (l.clone(), *v)).collect()
    }
}
