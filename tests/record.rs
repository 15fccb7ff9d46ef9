//! Makes the recordings of `tests/data/captures` that did not come with the project: Redis 8.2's
//! syncs, with its rdb channel and without. Each follows the scenario of `tests/data/captures/README.md`
//! through the test relay (which forwards every byte unchanged and writes each read). Not part of the
//! suite — recordings are data, made once and replayed by `tests/replay.rs`:
//!
//! ```sh
//! REPLSCOPE_SERVERS=target/servers cargo test --test record -- --ignored
//! ```

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::relay::Relay;
use support::server::{Server, ServerBin, servers};

/// The scenario of the captures README, recorded into `tests/data/captures/<name>`.
fn record(bin: &ServerBin, name: &str, master_args: &[&str], replica_args: &[&str]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures").join(name);
    let master = Server::start(bin, master_args);
    master.cmd(&["DEBUG", "POPULATE", "2000", "k", "100"]);
    let relay = Relay::recording(master.port, &path);
    let port = relay.port.to_string();
    let mut args = vec!["--replicaof", "127.0.0.1", &port];
    args.extend(replica_args);
    let mut replica = Server::start(bin, &args);
    let link_up =
        || (replica.info("replication").get("master_link_status").map(String::as_str) == Some("up")).then_some(());
    replica.wait_for("the full sync", 30, link_up);
    // `SELECT 3` on a client connection of its own replicates nothing; the SET and INCR do.
    master.session(&[&["SELECT", "3"], &["PING"]]);
    master.cmd(&["SET", "a", "1"]);
    master.cmd(&["INCR", "a"]);
    std::thread::sleep(Duration::from_millis(2500));
    master.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    let connections = relay.ids().len();
    replica.wait_for("the replica to come back", 30, || {
        let up = replica.info("replication").get("master_link_status").map(String::as_str) == Some("up");
        (up && relay.ids().len() > connections).then_some(())
    });
    master.cmd(&["SET", "b", "2"]);
    std::thread::sleep(Duration::from_millis(1500));
    replica.kill();
    std::thread::sleep(Duration::from_millis(300));
    drop(relay);
    eprintln!("recorded {}", path.display());
}

fn redis_8() -> ServerBin {
    servers().into_iter().find(|b| !b.valkey && b.version.0 == 8).expect("Redis 8 in REPLSCOPE_SERVERS")
}

fn name(bin: &ServerBin, sync: &str) -> String {
    let (ma, mi, pa) = bin.version;
    format!("redis-{ma}.{mi}.{pa}-{sync}.jsonl")
}

/// A disk-based master: one connection, although the replica offers an rdb channel (on by default).
#[test]
#[ignore = "makes a recording; run by hand"]
fn redis_8_disk() {
    let bin = redis_8();
    record(&bin, &name(&bin, "disk"), &["--repl-diskless-sync", "no"], &[]);
}

/// A diskless master and the rdb channel: the RDB over a second connection while the first streams. The
/// replica stores the RDB on disk before loading it (`repl-diskless-load disabled`, the default).
#[test]
#[ignore = "makes a recording; run by hand"]
fn redis_8_rdb_channel_disk_load() {
    let bin = redis_8();
    let master = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", "--repl-rdb-channel", "yes"];
    let replica = ["--repl-rdb-channel", "yes", "--repl-diskless-load", "disabled"];
    record(&bin, &name(&bin, "rdbchannel-disk-load"), &master, &replica);
}

/// The same with the replica loading straight from the socket (`repl-diskless-load swapdb`).
#[test]
#[ignore = "makes a recording; run by hand"]
fn redis_8_rdb_channel_diskless_load() {
    let bin = redis_8();
    let master = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", "--repl-rdb-channel", "yes"];
    let replica = ["--repl-rdb-channel", "yes", "--repl-diskless-load", "swapdb"];
    record(&bin, &name(&bin, "rdbchannel-diskless-load"), &master, &replica);
}
