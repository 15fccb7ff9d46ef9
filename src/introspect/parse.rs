//! The master's answers as text: `CONFIG GET` name/value pairs, `INFO` sections (`key:value` lines) and
//! `CLIENT LIST` (one client per line, `key=value` fields). Unknown keys and fields are ignored, so newer
//! servers with more of them read the same; a field that does not parse is left out, never guessed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::wire::resp::Value;

use crate::introspect::{ConfigValues, Failure, Problem, Question, ServerVersion};
use crate::link::forecast::OutputBufferLimit;

/// One replica connection in `CLIENT LIST TYPE replica`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaClient {
    /// `id`.
    pub id: u64,
    /// `addr`: the replica connection's far end as the master sees it (replscope's outgoing address).
    pub addr: SocketAddr,
    /// `flags` (`S`; Redis 8's RDB channel `SC`).
    pub flags: String,
    /// `omem`: bytes queued for the replica (≤ 6.2 its own list; 7.0+ its share of the shared buffer).
    pub omem: u64,
    /// `obl`: bytes in the fixed reply buffer.
    pub obl: u64,
    /// `oll`: entries in the reply list (7.0+: with the shared blocks referenced).
    pub oll: u64,
}

/// A `slave<N>:` line of `INFO replication`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaLine {
    /// `ip` (announced, or the connection's address).
    pub ip: String,
    /// `port`: the replica's listening port.
    pub port: u16,
    /// `state`: `wait_bgsave`, `send_bulk`, `online`, …
    pub state: String,
    /// `offset`: its last acknowledged offset.
    pub offset: Option<i64>,
}

/// `INFO replication` on the master.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationInfo {
    /// `role` (`master`; a route pointed at a replica says `slave`).
    pub role: String,
    /// `master_repl_offset`.
    pub offset: Option<i64>,
    /// `repl_backlog_size`.
    pub backlog: Option<u64>,
    /// The replicas.
    pub replicas: Vec<ReplicaLine>,
}

fn info_lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.trim_end().split_once(':'))
}

/// Reads `INFO replication`.
pub fn info_replication(text: &str) -> ReplicationInfo {
    let mut info = ReplicationInfo::default();
    for (key, value) in info_lines(text) {
        match key {
            "role" => info.role = value.to_string(),
            "master_repl_offset" => info.offset = value.parse().ok(),
            "repl_backlog_size" => info.backlog = value.parse().ok(),
            k if k.starts_with("slave") && k[5..].bytes().all(|b| b.is_ascii_digit()) => {
                let field = |name: &str| {
                    value.split(',').find_map(|f| f.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
                };
                if let (Some(ip), Some(port)) = (field("ip"), field("port").and_then(|p| p.parse().ok())) {
                    info.replicas.push(ReplicaLine {
                        ip: ip.to_string(),
                        port,
                        state: field("state").unwrap_or("").to_string(),
                        offset: field("offset").and_then(|o| o.parse().ok()),
                    });
                }
            }
            _ => {}
        }
    }
    info
}

/// Reads `INFO server`.
pub fn info_server(text: &str) -> ServerVersion {
    let mut v = ServerVersion::default();
    for (key, value) in info_lines(text) {
        match key {
            "redis_version" => v.redis = Some(value.to_string()),
            "valkey_version" => v.valkey = Some(value.to_string()),
            _ => {}
        }
    }
    v
}

/// `127.0.0.1:6379`, `[::1]:6379` or `::1:6379` (servers print IPv6 both ways).
fn address(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let (ip, port) = s.rsplit_once(':')?;
    Some(SocketAddr::new(ip.parse::<IpAddr>().ok()?, port.parse().ok()?))
}

/// Reads `CLIENT LIST` (every line that names a client with an address and its buffer fields).
pub fn client_list(text: &str) -> Vec<ReplicaClient> {
    text.lines()
        .filter_map(|line| {
            let field = |name: &str| {
                line.split(' ').find_map(|f| f.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
            };
            let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
            Some(ReplicaClient {
                id: number("id")?,
                addr: address(field("addr")?)?,
                flags: field("flags").unwrap_or("").to_string(),
                omem: number("omem")?,
                obl: number("obl").unwrap_or(0),
                oll: number("oll").unwrap_or(0),
            })
        })
        .collect()
}

/// The replica class of `client-output-buffer-limit`: `normal 0 0 0 slave 8388608 4194304 5 pubsub …`
/// (`replica` is accepted too).
fn replica_limit(value: &str) -> Option<OutputBufferLimit> {
    let words: Vec<&str> = value.split_whitespace().collect();
    words.chunks(4).find(|c| c.len() == 4 && matches!(c[0], "slave" | "replica")).and_then(|c| {
        Some(OutputBufferLimit { hard: c[1].parse().ok()?, soft: c[2].parse().ok()?, soft_seconds: c[3].parse().ok()? })
    })
}

fn yes_no(v: &str) -> Option<bool> {
    match v {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Takes one `CONFIG GET` answer (name, value, name, value, …) into `into`.
pub fn config_pairs(pairs: &[Value], into: &mut ConfigValues) -> Result<(), Problem> {
    let text = |f: &Value| match f {
        Value::BulkString(b) | Value::SimpleString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let bad = |detail: String| Problem { question: Question::Config, failure: Failure::Reply, detail };
    if !pairs.len().is_multiple_of(2) {
        return Err(bad(format!("CONFIG GET answered {} items, not name/value pairs", pairs.len())));
    }
    for pair in pairs.chunks(2) {
        let (Some(name), Some(value)) = (text(&pair[0]), text(&pair[1])) else {
            return Err(bad("CONFIG GET answered something other than strings".into()));
        };
        let number = || value.parse::<u64>().ok();
        match name.as_str() {
            "client-output-buffer-limit" => into.output_buffer_limit = replica_limit(&value),
            "repl-backlog-size" => into.backlog = number(),
            "repl-timeout" => into.repl_timeout = number().map(Duration::from_secs),
            "repl-diskless-sync" => into.diskless_sync = yes_no(&value),
            "repl-diskless-sync-delay" => into.diskless_sync_delay = number(),
            "repl-diskless-sync-max-replicas" => into.diskless_sync_max_replicas = number(),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_list_lines_of_every_version() {
        // Redis 6.2 (no ssub, no laddr on older), an IPv6 peer, and a line without omem (not a client).
        let text = "id=3 addr=127.0.0.1:41234 fd=8 name= age=1 idle=0 flags=S db=0 sub=0 psub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 obl=16384 oll=3 omem=9437184 tot-mem=9480000 events=rw cmd=psync user=default\n\
                    id=4 addr=::1:41235 laddr=::1:6379 fd=9 flags=SC obl=0 oll=0 omem=0\n\
                    id=5 addr=[::1]:41236 flags=S obl=0 oll=1 omem=20\n\
                    garbage line\n";
        let c = client_list(text);
        assert_eq!(c.len(), 3);
        assert_eq!((c[0].id, c[0].omem, c[0].obl, c[0].oll), (3, 9 << 20, 16384, 3));
        assert_eq!(c[1].addr, "[::1]:41235".parse().expect("addr"));
        assert_eq!((c[1].flags.as_str(), c[2].addr.port()), ("SC", 41236));
    }

    #[test]
    fn the_replica_class_of_the_limits() {
        let l = replica_limit("normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60");
        assert_eq!(l, Some(OutputBufferLimit { hard: 256 << 20, soft: 64 << 20, soft_seconds: 60 }));
        assert_eq!(
            replica_limit("normal 0 0 0 replica 1 2 3"),
            Some(OutputBufferLimit { hard: 1, soft: 2, soft_seconds: 3 })
        );
        assert_eq!(replica_limit("normal 0 0 0"), None);
        let mut v = ConfigValues::default();
        let odd = [Value::BulkString(b"repl-timeout".to_vec())];
        assert!(config_pairs(&odd, &mut v).is_err());
    }

    #[test]
    fn info_replication_on_a_master_with_a_replica() {
        let i = info_replication(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=10.0.0.2,port=6380,state=online,offset=1234,lag=0\r\n\
             master_replid:8f3a\r\nmaster_repl_offset:1300\r\nrepl_backlog_size:1048576\r\n",
        );
        assert_eq!((i.role.as_str(), i.offset, i.backlog), ("master", Some(1300), Some(1 << 20)));
        assert_eq!(
            i.replicas,
            vec![ReplicaLine { ip: "10.0.0.2".into(), port: 6380, state: "online".into(), offset: Some(1234) }]
        );
    }
}
