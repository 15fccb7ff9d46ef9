//! `deploy/` checked with the tools operators use: `systemd-analyze verify` and `security` on the unit,
//! `promtool` on the rules (unit tests included) and on the compose stack's Prometheus configuration,
//! the manifests parsed as YAML, and every metric the dashboard and the rules name found in a real
//! proxy's `/metrics`. The container image cannot be built here (no engine): its Dockerfile is read.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::proxy::ProxyProc;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy().join(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("replscope-deploy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A tool on PATH; missing, the test fails under `REPLSCOPE_REQUIRE_SERVERS=1` (CI installs it) and is
/// skipped, saying so, otherwise.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).map(|p| p.join(name)).find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("REPLSCOPE_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
        assert!(!required, "no {name} on PATH (Debian: apt-get install {package})");
        eprintln!("SKIPPED: no {name} on PATH (Debian: apt-get install {package})");
    }
    found
}

fn run(program: &Path, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(program).args(args).current_dir(dir).output().expect("run");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else { return };
    let unit = read("systemd/replscope.service");
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "ExecStart=/usr/local/bin/replscope proxy --config /etc/replscope/replscope.toml",
    ] {
        assert!(unit.contains(line), "the unit has {line:?}");
    }
    // Verified as installed: the binary at the path ExecStart names (here, the one just built).
    let dir = temp_dir("systemd");
    let file = dir.join("replscope.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/replscope", env!("CARGO_BIN_EXE_replscope"))).expect("write");
    let (ok, text) = run(&analyze, &["verify", "replscope.service"], &dir);
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify:\n{text}");
    // Exposure 2.0 or less ("OK"); the threshold is in tenths.
    let (ok, text) = run(&analyze, &["security", "--offline=yes", "--threshold=20", "replscope.service"], &dir);
    assert!(ok, "systemd-analyze security:\n{text}");
    assert!(text.contains("Overall exposure level for replscope.service"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = tool("promtool", "prometheus") else { return };
    let rules = deploy().join("prometheus");
    let (ok, text) = run(&promtool, &["check", "rules", "alerts.yml", "recording.yml"], &rules);
    assert!(ok, "promtool check rules:\n{text}");
    let (ok, text) = run(&promtool, &["test", "rules", "tests/alerts_test.yml"], &rules);
    assert!(ok && text.contains("SUCCESS"), "promtool test rules:\n{text}");
    // The compose stack's Prometheus, with the rules mounted where compose.yaml mounts them.
    let dir = temp_dir("compose");
    std::fs::copy(deploy().join("docker/prometheus.yml"), dir.join("prometheus.yml")).expect("copy");
    std::os::unix::fs::symlink(&rules, dir.join("replscope")).expect("symlink");
    let (ok, text) = run(&promtool, &["check", "config", "prometheus.yml"], &dir);
    assert!(ok && text.contains("SUCCESS: 2 rule files found"), "promtool check config:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn compose_and_kubernetes_manifests_wire_the_replica_through_replscope() {
    let compose = &yaml_docs(&read("docker/compose.yaml"))[0];
    let services = &compose["services"];
    for s in ["master", "replica", "replscope", "prometheus"] {
        assert!(services[s].is_object(), "compose has {s}");
    }
    let replica_cmd = services["replica"]["command"].to_string();
    assert!(replica_cmd.contains(r#""--replicaof","replscope","6380""#), "{replica_cmd}");
    assert!(services["replscope"]["command"].to_string().contains("--master=master:6379"));
    assert!(read("docker/prometheus.yml").contains("replscope:9190"));

    let docs = yaml_docs(&read("kubernetes/sidecar.yaml"));
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "StatefulSet"]);
    // The file replscope reads in the pod is a valid configuration.
    let toml = docs[0]["data"]["replscope.toml"].as_str().expect("replscope.toml");
    let config = replscope::config::parse(toml, Path::new("sidecar.yaml")).expect("the ConfigMap's file is valid");
    assert_eq!(config.routes[0].listen, "127.0.0.1:6380");
    let pod = &docs[1]["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "9190");
    let containers = pod["spec"]["containers"].as_array().expect("containers");
    let redis = containers.iter().find(|c| c["name"] == "redis").expect("redis");
    assert!(redis["args"].to_string().contains(r#""--replicaof","127.0.0.1","6380""#));
    let sidecar = containers.iter().find(|c| c["name"] == "replscope").expect("replscope");
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);

    let monitor = yaml_docs(&read("kubernetes/servicemonitor.yaml"));
    let kinds: Vec<&str> = monitor.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Service", "ServiceMonitor"]);
    assert_eq!(monitor[1]["spec"]["endpoints"][0]["port"], "metrics");

    // The PrometheusRule the script prints holds every rule of the tested files.
    let out = Command::new("sh").arg(deploy().join("kubernetes/prometheusrule.sh")).output().expect("sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rule = &yaml_docs(&String::from_utf8_lossy(&out.stdout))[0];
    assert_eq!(rule["kind"], "PrometheusRule");
    let in_rule: usize = rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    let in_files: usize = ["prometheus/alerts.yml", "prometheus/recording.yml"]
        .iter()
        .map(|f| yaml_docs(&read(f))[0]["groups"][0]["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!((in_rule, in_files), (15, 15));
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_health_checked() {
    let dockerfile = read("docker/Dockerfile");
    let stages = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    for needle in ["AS build", "USER nonroot", "EXPOSE 6380 9190", "HEALTHCHECK", "\"health\", \"--http\""] {
        assert!(dockerfile.contains(needle), "Dockerfile has {needle:?}");
    }
    // What the health check runs, as the image would run it.
    let out = Command::new(env!("CARGO_BIN_EXE_replscope")).args(["health", "--help"]).output().expect("run");
    assert!(out.status.success());
}

/// The metric names an expression text uses (recording rules' own names, with colons, left out), with a
/// histogram's `_bucket`/`_sum`/`_count` taken back to its family.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| !t.contains(':') && (t.starts_with("replscope_") || t.starts_with("process_")))
        .map(|t| {
            let base =
                t.strip_suffix("_bucket").or_else(|| t.strip_suffix("_sum")).or_else(|| t.strip_suffix("_count"));
            base.unwrap_or(t).to_string()
        })
        .collect()
}

/// Every expression of the dashboard and the rules.
fn expressions() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(&read("grafana/replscope.json")).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.extend(t["expr"].as_str().map(String::from));
        }
    }
    for v in dashboard["templating"]["list"].as_array().expect("variables") {
        exprs.extend(v["definition"].as_str().map(String::from));
    }
    for f in ["prometheus/alerts.yml", "prometheus/recording.yml"] {
        for rule in yaml_docs(&read(f))[0]["groups"][0]["rules"].as_array().expect("rules") {
            exprs.extend(rule["expr"].as_str().map(String::from));
        }
    }
    exprs
}

#[test]
fn every_metric_the_dashboard_and_the_rules_name_is_in_a_real_proxy_s_metrics() {
    let proxy = ProxyProc::start(1, &[]);
    let (status, text) = proxy.get("/metrics");
    assert_eq!(status, 200);
    let exposed: BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_whitespace().next()).collect();
    let named: BTreeSet<String> = expressions().iter().flat_map(|e| metric_names(e)).collect();
    assert!(named.len() >= 20, "the dashboard and the rules use most metrics: {named:?}");
    let missing: Vec<&String> = named.iter().filter(|n| !exposed.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "named in deploy/ but not in /metrics: {missing:?}");
    // And the dashboard covers what its description promises.
    let dashboard = read("grafana/replscope.json");
    for m in [
        "replscope_link_phase",
        "replscope_rdb_transferred_bytes",
        "replscope_rdb_transfer_rate_bytes_per_second",
        "replscope_replica_lag_bytes",
        "replscope_syncs_total",
        "replscope_disconnects_total",
        "replscope_replication_loop",
        "replscope_sync_doomed",
    ] {
        assert!(dashboard.contains(m), "the dashboard shows {m}");
    }
    assert_eq!(proxy.terminate(), Some(0));
}
