//! Introspection on real servers: replscope's own connection to the master, what it reads, and what it
//! does when the master will not answer everything. (The classic loop with introspection on, on every
//! version, is in `tests/loop_matrix.rs`.)
//!
//! - An ACL user without `CONFIG`, on every version: the rest is still read (each replica connection's
//!   buffer, the backlog from `INFO`), the limit falls back to the one assumed, one WARN names the
//!   permission, the refusal counts as `forbidden`, and the password shows nowhere.
//! - A wrong password: counted as `auth`, said once, retried, the password nowhere.
//! - A `CLIENT KILL` in the middle of a full sync: the master's reading of a small buffer says it was no
//!   output-buffer kill, which the wire alone would have named; and a `CONFIG SET` shows in the next
//!   reading.

mod support;

use std::time::Duration;

use support::load::Load;
use support::proxy::ProxyProc;
use support::server::{Server, redis_server, servers};

const PASSWORD: &str = "s3cret-Intro-pw-7f1d";

fn start_proxy(master_port: u16, args: &[&str], password: &str) -> ProxyProc {
    let master = format!("127.0.0.1:{master_port}");
    let mut all = vec!["--master", &master, "--name", "main", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];
    all.extend(args);
    ProxyProc::start_args_env(&all, &[("REPLSCOPE_MASTER_AUTH_PASSWORD", password)])
}

/// The password appears in none of what replscope shows.
fn password_nowhere(proxy: &ProxyProc, ctx: &str) {
    let logs = serde_json::Value::Array(proxy.logs()).to_string();
    for (what, text) in [
        ("logs", logs),
        ("metrics", proxy.get("/metrics").1),
        ("links", proxy.get("/api/links").1),
        ("routes", proxy.get("/api/routes").1),
        ("replicas", proxy.get("/api/replicas").1),
    ] {
        assert!(!text.contains(PASSWORD), "{ctx}: the password is in the {what}");
    }
}

fn warnings(proxy: &ProxyProc, containing: &str) -> Vec<String> {
    proxy
        .logs()
        .iter()
        .filter(|l| l["level"] == "WARN")
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .filter(|m| m.contains(containing))
        .collect()
}

#[test]
fn an_acl_user_without_config_is_still_asked_the_rest_on_every_version() {
    for bin in servers() {
        let ctx = bin.name.clone();
        let master = Server::start(&bin, &["--repl-diskless-sync", "no"]);
        let setuser = ["ACL", "SETUSER", "intro", "on", &format!(">{PASSWORD}"), "~*", "&*", "+@all", "-config"];
        master.cmd(&setuser);
        let proxy = start_proxy(
            master.port,
            &["--master-auth-user", "intro", "--assume-output-buffer-limit", "64mb 32mb 60"],
            PASSWORD,
        );
        let port = proxy.listen_port.to_string();
        let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &port]);
        master.wait_replica_online();
        let ep = format!("127.0.0.1:{}", replica.port);
        // The replica's connection is read (CLIENT LIST is allowed), and matched to its link.
        let readings = master.wait_for("a reading of the replica's buffer", 30, || {
            let links = proxy.links();
            let l = links.iter().find(|l| l["kind"] == "replication" && l["close"].is_null())?.clone();
            (l["master_view"]["readings"].as_u64()? >= 1).then_some(l)
        });
        assert!(readings["outgoing_addr"].is_string(), "{ctx}: {readings}");
        let m = proxy.metrics();
        assert!(m.get("replscope_replica_output_buffer_bytes", &[("replica", &ep)]).is_some(), "{ctx}: {}", m.text);
        assert!(
            m.get("replscope_introspection_errors_total", &[("reason", "forbidden")]).is_some_and(|n| n >= 1.0),
            "{ctx}: {}",
            m.text
        );
        assert!(m.all("replscope_master_setting").is_empty(), "{ctx}: nothing was read with CONFIG GET");
        // Judged against what was assumed, and the backlog INFO showed.
        let text = master.wait_for("the introspection's first line", 10, || {
            proxy.logs().iter().find_map(|l| {
                l["message"].as_str().filter(|m| m.starts_with("introspection: asking the master")).map(str::to_string)
            })
        });
        assert!(text.contains("as user intro"), "{ctx}: {text}");
        assert!(text.contains("client-output-buffer-limit replica 64mb 32mb 60 (assumed)"), "{ctx}: {text}");
        let backlog: u64 = master.info("replication")["repl_backlog_size"].parse().expect("a size");
        assert!(text.contains(&format!("repl-backlog-size {}mb (master)", backlog >> 20)), "{ctx}: {text}");
        // Said once: a few more rounds (the replica streams; it is asked again in a minute).
        std::thread::sleep(Duration::from_secs(2));
        let said = warnings(&proxy, "CONFIG GET");
        assert_eq!(said.len(), 1, "{ctx}: {said:?}");
        assert!(said[0].contains("grant +config|get") && said[0].contains("NOPERM"), "{ctx}: {}", said[0]);
        password_nowhere(&proxy, &ctx);
        eprintln!("{ctx}: {}", said[0]);
    }
}

#[test]
fn a_wrong_password_is_counted_and_said_once_without_the_password() {
    let bin = redis_server();
    let master = Server::start(&bin, &[]);
    master.cmd(&["ACL", "SETUSER", "intro", "on", ">another-password", "+@all"]);
    let proxy = start_proxy(master.port, &["--master-auth-user", "intro"], PASSWORD);
    master.wait_for("three refused attempts", 20, || {
        let n = proxy.metrics().get("replscope_introspection_errors_total", &[("reason", "auth")])?;
        (n >= 3.0).then_some(())
    });
    let said = warnings(&proxy, "AUTH");
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("refused AUTH as user intro") && said[0].contains("WRONGPASS"), "{}", said[0]);
    password_nowhere(&proxy, "wrong password");
    // The password on the command line is refused before anything starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["proxy", "--master", "127.0.0.1:1", "--master-auth-password", PASSWORD])
        .output()
        .expect("run replscope");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("REPLSCOPE_MASTER_AUTH_PASSWORD") && !err.contains(PASSWORD), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_client_kill_mid_sync_is_no_buffer_kill_when_the_master_shows_the_buffer_small() {
    let bin = redis_server();
    let master = Server::start(&bin, &["--rdbcompression", "no", "--repl-diskless-sync", "no"]);
    master.cmd(&["DEBUG", "POPULATE", "100000", "key", "300"]);
    let slow = ["--introspect", "--enable-faults", "--fault", "bandwidth rate=4MiB/s direction=master-to-replica"];
    let proxy = start_proxy(master.port, &slow, "");
    let load = Load::start(master.port, "w", 10, 100, 10_000, Duration::from_millis(50));
    let port = proxy.listen_port.to_string();
    let replica = Server::start(&bin, &["--replicaof", "127.0.0.1", &port]);
    // Two seconds into the transfer, with a few readings of a small buffer.
    master.wait_for("a transfer read by the master", 30, || {
        let links = proxy.links();
        let l = links.iter().find(|l| l["kind"] == "replication" && l["close"].is_null())?.clone();
        let read = l["master_view"]["readings"].as_u64()? >= 2;
        (read && l["phases"].to_string().contains("rdb_transfer")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let backlog = ("setting", "repl-backlog-size");
    assert_eq!(proxy.metrics().get("replscope_master_setting", &[backlog]), Some(1048576.0));
    master.cmd(&["CONFIG", "SET", "repl-backlog-size", "2mb"]);
    master.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    let killed = master.wait_for("the killed link's cause", 30, || {
        proxy.links().into_iter().find(|l| l["kind"] == "replication" && !l["diagnosis"].is_null())
    });
    load.stop();
    let d = &killed["diagnosis"];
    assert_eq!(d["first"], "master_closed", "{d}");
    let b = &d["evidence"]["output_buffer"];
    assert!(b["reached"].is_null() && b["omem"].as_u64().is_some_and(|o| o < 4 << 20), "{b}");
    assert!(b["limit"] == "256mb 64mb 60", "the master's default, read from it: {b}");
    // The changed setting shows at the next reading (every second while the replica syncs again).
    master.wait_for("the new backlog size", 15, || {
        (proxy.metrics().get("replscope_master_setting", &[backlog]) == Some(2097152.0)).then_some(())
    });
    drop(replica);
}
