//! The README's metrics table is the operator's reference: it must list exactly what the proxy declares,
//! and every name a real proxy's `/metrics` exposes.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::proxy::ProxyProc;
use support::server::{Server, redis_server};

/// The names in the first column of the README's metrics table.
fn readme_names() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let section = readme.split("\n## Metrics\n").nth(1).expect("a Metrics section");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(String::from)
        .collect()
}

/// The family names in a Prometheus text exposition.
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn the_readme_lists_every_metric_declared() {
    let declared: BTreeSet<String> = replscope::observe::metrics::DECLARED
        .iter()
        .chain(replscope::observe::process::NAMES)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(readme_names(), declared, "README table (left) against the declarations (right)");
}

#[test]
fn every_name_a_real_proxy_exposes_is_in_the_readme() {
    let bin = redis_server();
    let master = Server::start(&bin, &[]);
    let proxy = ProxyProc::start(
        master.port,
        &["--enable-faults", "--assume-output-buffer-limit", "256mb 64mb 60", "--fault", "latency delay=1ms"],
    );
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &proxy.listen_port.to_string()]);
    master.wait_replica_online();
    master.cmd(&["SET", "k", "v"]);
    master.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    // The kill settles as a disconnect once the window for a refusing master has passed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (_, text) = proxy.get("/metrics");
        if text.contains("replscope_disconnects_total{") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "no disconnect counted:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let names = exposed(&text);
    assert!(names.len() >= 25, "a proxy that synced, streamed and lost a link exposes most metrics: {names:?}");
    let readme = readme_names();
    let missing: Vec<&String> = names.difference(&readme).collect();
    assert!(missing.is_empty(), "exposed but not in the README: {missing:?}");
    assert!(text.contains("replscope_replication_loop{route=\"main\",replica=\"127.0.0.1:"), "{text}");
    assert!(text.contains("kind=\"partial\"} 0"), "{text}");
    drop(replica);
}
