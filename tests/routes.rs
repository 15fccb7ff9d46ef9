//! Several routes in one process, on real servers: two masters and their replicas through one
//! `replscope proxy --config`, one API and one `/metrics` with a `route` label, and SIGHUP reloads that
//! start, drain and change routes, or keep the running configuration when the file is bad.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;
use support::proxy::ProxyProc;
use support::server::{Server, redis_server};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("replscope-routes-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn route(name: &str, master: &Server, extra: &str) -> String {
    format!("[[route]]\nname = \"{name}\"\nmaster = \"127.0.0.1:{}\"\nlisten = \"127.0.0.1:0\"\n{extra}\n", master.port)
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The routes as `/api/routes` lists them: name → (state, listen port).
fn routes(proxy: &ProxyProc) -> Vec<(String, String, Option<u16>)> {
    let v = proxy.json("/api/routes");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            let port = r["listen"].as_str().and_then(|l| l.rsplit(':').next()).and_then(|p| p.parse().ok());
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["state"].as_str().unwrap_or_default().to_string(),
                port,
            )
        })
        .collect()
}

/// Each route as `name:state`, in the API's order.
fn states(proxy: &ProxyProc) -> Vec<String> {
    routes(proxy).into_iter().map(|(n, s, _)| format!("{n}:{s}")).collect()
}

fn port_of(proxy: &ProxyProc, name: &str) -> u16 {
    routes(proxy).into_iter().find(|(n, ..)| n == name).and_then(|(.., p)| p).expect("the route's port")
}

/// Writes `key` on `master` and waits until `replica` has it.
fn replicates(master: &Server, replica: &Server, key: &str) {
    master.cmd(&["SET", key, "v"]);
    replica.wait_for(&format!("{key} on the replica"), 20, || {
        matches!(replica.cmd(&["EXISTS", key]), OwnedFrame::Integer(1)).then_some(())
    });
}

fn online_replicas(master: &Server) -> usize {
    master.info("replication").get("connected_slaves").and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Whether a link from `/api/links` is route `route`'s and open in `phase`.
fn in_phase(l: &serde_json::Value, route: &str, phase: &str) -> bool {
    let last = l["phases"].as_array().and_then(|p| p.last()).map(|p| p["phase"].clone());
    l["route"] == route && l["open"] == true && last.is_some_and(|p| p == phase)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the config");
}

#[test]
fn two_masters_through_one_process_and_reloads_that_add_drain_and_change_routes() {
    let bin = redis_server();
    let (master_a, master_b) = (Server::start(&bin, &[]), Server::start(&bin, &[]));
    let dir = temp_dir("two");
    let file = dir.join("replscope.toml");
    write(&file, &format!("{}{}", route("a", &master_a, ""), route("b", &master_b, "")));
    let proxy = ProxyProc::start_config(&file, &[]);
    assert_eq!(states(&proxy), ["a:active", "b:active"]);

    let replica_a = Server::start(&bin, &["--replicaof", "127.0.0.1", &port_of(&proxy, "a").to_string()]);
    let replica_b = Server::start(&bin, &["--replicaof", "127.0.0.1", &port_of(&proxy, "b").to_string()]);
    master_a.wait_replica_online();
    master_b.wait_replica_online();
    replicates(&master_a, &replica_a, "ka");
    replicates(&master_b, &replica_b, "kb");

    // One exposition for both routes: each family once, a series per route.
    let m = proxy.metrics();
    for r in ["a", "b"] {
        let syncs = m.get("replscope_syncs_total", &[("route", r), ("kind", "full")]);
        assert_eq!(syncs, Some(1.0), "route {r}:\n{}", m.text);
    }
    for family in ["replscope_syncs_total", "replscope_links", "replscope_build_info"] {
        assert_eq!(m.text.matches(&format!("# TYPE {family} ")).count(), 1, "{family}:\n{}", m.text);
    }
    assert_eq!(m.get("replscope_routes", &[("state", "active")]), Some(2.0));
    assert_eq!(m.get("replscope_config_last_reload_successful", &[]), Some(1.0));
    let links = proxy.links();
    let ids: std::collections::BTreeSet<u64> = links.iter().filter_map(|l| l["id"].as_u64()).collect();
    assert_eq!(ids.len(), links.len(), "link ids are unique across routes");
    for r in ["a", "b"] {
        assert!(links.iter().any(|l| in_phase(l, r, "streaming")), "{r}: {links:#?}");
    }
    // No limit stated yet: no doomed flag on route a.
    assert_eq!(m.get("replscope_sync_doomed", &[("route", "a")]), None);

    // Reload: b goes, c (a second route to master b) comes, a gets a stated limit.
    let port_b = port_of(&proxy, "b");
    let before = proxy.logs().len();
    write(
        &file,
        &format!(
            "{}{}",
            route("a", &master_a, "assume-output-buffer-limit = \"256mb 64mb 60\""),
            route("c", &master_b, "")
        ),
    );
    proxy.signal("HUP");
    let done = proxy.wait_log("configuration reloaded", before, 20);
    assert_eq!(done["report"], "added c; removed b; changed a; unchanged -", "{done}");
    assert_eq!(states(&proxy), ["a:active", "c:active", "b:draining"]);
    // The removed route accepts no one, and its open link goes on streaming.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port_b)).is_err(), "route b still accepts");
    replicates(&master_b, &replica_b, "kb2");
    // The new route serves a second replica of master b.
    let replica_c = Server::start(&bin, &["--replicaof", "127.0.0.1", &port_of(&proxy, "c").to_string()]);
    wait("two replicas on master b", 30, || online_replicas(&master_b) == 2);
    replicates(&master_b, &replica_c, "kc");
    // The changed setting applies to new links only: a's open link keeps none, its next one has it.
    assert_eq!(proxy.metrics().get("replscope_sync_doomed", &[("route", "a")]), None);
    master_a.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    wait("route a's replica back through a new link", 30, || {
        let links = proxy.links();
        let streaming = links.iter().filter(|l| in_phase(l, "a", "streaming")).count();
        streaming == 1 && links.iter().filter(|l| l["route"] == "a" && l["kind"] == "replication").count() == 2
    });
    assert_eq!(proxy.metrics().get("replscope_sync_doomed", &[("route", "a")]), Some(0.0));

    // A bad file: the running configuration stays, the log says why, the metrics say it failed.
    let before = proxy.logs().len();
    write(&file, &route("z", &master_a, "listen-port = 1"));
    proxy.signal("HUP");
    let failed = proxy.wait_log("reload failed: the running configuration stays", before, 20);
    let why = failed["error"].as_str().unwrap_or_default();
    assert!(why.contains("line 5") && why.contains("route.listen-port"), "{why}");
    assert_eq!(states(&proxy), ["a:active", "c:active", "b:draining"]);
    let m = proxy.metrics();
    assert_eq!(m.get("replscope_config_last_reload_successful", &[]), Some(0.0));
    assert_eq!(m.get("replscope_config_reloads_total", &[("result", "failure")]), Some(1.0));
    assert_eq!(m.get("replscope_config_reloads_total", &[("result", "success")]), Some(1.0));

    // The draining route goes once its last link has ended.
    drop(replica_b);
    proxy.wait_log("route drained: its last link has ended", before, 30);
    assert_eq!(states(&proxy), ["a:active", "c:active"]);
    replicates(&master_b, &replica_c, "kc2");
    drop(replica_a);
    assert_eq!(proxy.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_that_cannot_bind_changes_nothing() {
    let bin = redis_server();
    let master = Server::start(&bin, &[]);
    let dir = temp_dir("bind");
    let file = dir.join("replscope.toml");
    write(&file, &route("a", &master, ""));
    let proxy = ProxyProc::start_config(&file, &[]);
    // A port that is taken: the new route cannot start, so nothing of the file is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let before = proxy.logs().len();
    write(
        &file,
        &format!(
            "{}[[route]]\nname = \"b\"\nmaster = \"127.0.0.1:{}\"\nlisten = \"127.0.0.1:{port}\"\n",
            route("a", &master, "assume-backlog = \"1mb\""),
            master.port
        ),
    );
    proxy.signal("HUP");
    let failed = proxy.wait_log("reload failed: the running configuration stays", before, 20);
    assert!(
        failed["error"].as_str().is_some_and(|e| e.contains(&port.to_string()) && e.contains("route b")),
        "{failed}"
    );
    assert_eq!(states(&proxy), ["a:active"]);
    assert_eq!(proxy.metrics().get("replscope_config_last_reload_successful", &[]), Some(0.0));
    assert_eq!(proxy.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_file_at_start_is_one_line_naming_the_line_and_the_key_and_exit_2() {
    let dir = temp_dir("bad");
    let file = dir.join("replscope.toml");
    write(
        &file,
        "http = \"127.0.0.1:0\"\n\n[[route]]\nname = \"a\"\nmaster = \"10.0.0.5\"\nlisten = \"127.0.0.1:0\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["proxy", "--config"])
        .arg(&file)
        .output()
        .expect("run replscope");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("replscope.toml, line 5: route.master: 10.0.0.5 has no port"), "{err}");
    // Route flags and a file are one or the other.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["proxy", "--master", "127.0.0.1:6379", "--config"])
        .arg(&file)
        .output()
        .expect("run replscope");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let _ = std::fs::remove_dir_all(&dir);
}
