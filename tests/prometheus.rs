//! The alert rules against a real Prometheus scraping a real proxy: the classic output-buffer loop (a
//! master with `client-output-buffer-limit replica 8mb 4mb 5`, 60 MB of data, ~1.5 MB/s of writes, a
//! 4 MiB/s link) is built on a real server, Prometheus (Debian's `prometheus`) scrapes the proxy every
//! second with `deploy/prometheus/*.yml` loaded, and its HTTP API must show the loop alert firing for the
//! replica with cause `output_buffer_limit`, the doomed forecast and the repeated drops firing on the
//! way, and every query of the dashboard valid.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::load::Load;
use support::proxy::{ProxyProc, http_get};
use support::server::{Server, free_port, redis_server};

/// A Prometheus server, killed (by PID) when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` every second with the project's rules; `None` (skipped,
    /// saying so) when it is not installed and not required.
    fn start(target: &str) -> Option<Prometheus> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let Some(bin) = std::env::split_paths(&path).map(|p| p.join("prometheus")).find(|p| p.is_file()) else {
            let required = std::env::var("REPLSCOPE_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
            assert!(!required, "no prometheus on PATH (Debian: apt-get install prometheus)");
            eprintln!("SKIPPED: no prometheus on PATH (Debian: apt-get install prometheus)");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("replscope-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n  - {}\n\
             scrape_configs:\n  - job_name: replscope\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.join("alerts.yml").display(),
            rules.join("recording.yml").display(),
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port());
            let child = Command::new(&bin)
                .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
                .spawn()
                .expect("start prometheus");
            let mut p = Prometheus { child, addr, dir: dir.clone() };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(&p.addr).is_ok() && http_get(&p.addr, "/-/ready").0 == 200 {
                    return Some(p);
                }
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = p.child.kill();
        }
        panic!("prometheus did not start: {}", std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default());
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(&self.addr, path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// An instant query: its result vector.
    fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let (status, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", encode(promql)));
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{promql}: {}", v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts named `name` in state `state`.
    fn alerts(&self, name: &str, state: &str) -> Vec<serde_json::Value> {
        let v = self.get("/api/v1/alerts");
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == state)
            .cloned()
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every PromQL expression of the dashboard, its variables filled in as Grafana would.
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/replscope.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .map(|e| {
            e.replace("$__rate_interval", "1m").replace("$route", ".*").replace("$replica", ".*").replace("$job", ".*")
        })
        .collect()
}

#[test]
fn a_real_prometheus_fires_the_loop_alert_with_its_cause() {
    let bin = redis_server();
    // Disk-based: the RDB's size is announced, so each transfer can be forecast (a diskless one cannot).
    let master = Server::start(
        &bin,
        &[
            "--rdbcompression",
            "no",
            "--repl-diskless-sync",
            "no",
            "--client-output-buffer-limit",
            "replica",
            "8mb",
            "4mb",
            "5",
        ],
    );
    master.cmd(&["DEBUG", "POPULATE", "200000", "key", "300"]);
    let proxy = ProxyProc::start(master.port, &support::proxy::LOOP_PROXY_ARGS);
    let Some(prometheus) = Prometheus::start(&proxy.http) else { return };
    let load = Load::start(master.port, "w", 50, 1000, 100_000, Duration::from_millis(33));
    std::thread::sleep(Duration::from_secs(1));
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    let ep = format!("127.0.0.1:{}", replica.port);

    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let firing = loop {
        let firing = prometheus.alerts("ReplscopeFullResyncLoop", "firing");
        if let Some(a) = firing.into_iter().find(|a| a["labels"]["replica"] == ep.as_str()) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no loop alert firing; replscope says {:?}\nalerts: {}",
            proxy.metrics().all("replscope_replication_loop"),
            prometheus.get("/api/v1/alerts")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    load.stop();
    eprintln!(
        "ReplscopeFullResyncLoop firing in Prometheus {:.1} s after the replica started",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(firing["labels"]["route"], "main", "{firing}");
    assert_eq!(firing["labels"]["cause"], "output_buffer_limit", "{firing}");
    assert_eq!(firing["labels"]["severity"], "critical", "{firing}");
    let summary = firing["annotations"]["summary"].as_str().unwrap_or_default();
    assert_eq!(summary, format!("Replica {ep} on route main is in a full-resync loop: output_buffer_limit"));
    // The master agrees: it killed the replica for its output buffer.
    assert!(master.log().matches("overcoming of output buffer limits").count() >= 3, "{}", master.log_tail());

    // On the way: each transfer was forecast doomed, and the drops repeated with one cause.
    let doomed = prometheus
        .query(r#"max_over_time(ALERTS{alertname="ReplscopeFullSyncDoomed",alertstate="firing"}[10m])"#)
        .expect("query");
    assert!(
        doomed.iter().any(|s| s["metric"]["replica"] == ep.as_str() && s["metric"]["cause"] == "output_buffer_limit"),
        "the doomed alert fired before the kills: {doomed:?}; doomed flags seen: {:?}; alerts: {:?}",
        prometheus.query("max_over_time(replscope_sync_doomed[10m])"),
        prometheus.query("ALERTS"),
    );
    let repeated = prometheus.alerts("ReplscopeRepeatedDisconnects", "firing");
    assert!(
        repeated.iter().any(|a| a["labels"]["replica"] == ep.as_str() && a["labels"]["cause"] == "output_buffer_limit"),
        "{repeated:?}"
    );
    // No alert of the rules is broken: Prometheus evaluated every rule without an error.
    let groups = prometheus.get("/api/v1/rules");
    for g in groups["data"]["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            assert_eq!(r["health"], "ok", "{r}");
        }
    }
    // Every dashboard query is valid PromQL, and the panels that matter here have data.
    for q in dashboard_queries() {
        let result = prometheus.query(&q).unwrap_or_else(|e| panic!("dashboard query failed: {e}"));
        if q.contains("replscope_replication_loop") || q.contains("replscope_link_phase") {
            assert!(!result.is_empty(), "no data for {q}");
        }
    }
    drop(replica);
}
