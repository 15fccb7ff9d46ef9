//! `introspect`: what the master says about itself, asked over replscope's own client connection (never
//! the replication link). Sans-IO like `wire`: [`Poll`] writes one round of questions as bytes and turns
//! the master's replies into a [`MasterReport`]; the driver (`proxy::introspect`) only moves the bytes.
//!
//! The questions (PROTOCOL.md §10): `CONFIG GET` of the settings that decide causes (one pattern per
//! command: Redis 6.2 takes only one), `INFO replication`, `CLIENT LIST TYPE replica` (each replica
//! connection's output-buffer memory, `omem`), and once per connection `INFO server` (the version, which
//! says whether the master raises a small replica hard limit to its backlog).

pub mod parse;

use std::time::Duration;

use crate::wire::resp::Value;

pub use parse::{ReplicaClient, ReplicaLine, ReplicationInfo};

use crate::link::forecast::OutputBufferLimit;
use crate::time::Timestamp;

/// A password, which never shows: its `Debug` is `<redacted>`, and it has no `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(password: String) -> Self {
        Secret(password)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How replscope asks a route's master about itself: with `AUTH [user] password`, or without.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    /// The ACL user (`None`: the default user, `requirepass`).
    pub user: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
}

impl Introspection {
    /// From `--introspect`, `--master-auth-user` and `--master-auth-password` (or their file keys): on with
    /// any of them, off with none. A user needs a password.
    pub fn from_parts(on: bool, user: Option<String>, password: Option<String>) -> Result<Option<Self>, String> {
        let user = user.filter(|u| !u.is_empty());
        let password = password.filter(|p| !p.is_empty());
        if user.is_some() && password.is_none() {
            return Err(
                "a master-auth-user needs its password (REPLSCOPE_MASTER_AUTH_PASSWORD, or master-auth-password-env in a file)"
                    .into(),
            );
        }
        if !on && user.is_none() && password.is_none() {
            return Ok(None);
        }
        Ok(Some(Introspection { user, password: password.map(Secret) }))
    }

    /// The AUTH command, if any. It goes only to the master's socket.
    pub fn auth_request(&self) -> Option<Vec<u8>> {
        let password = self.password.as_ref()?;
        Some(match &self.user {
            Some(user) => crate::wire::encode_command(&["AUTH", user, &password.0]),
            None => crate::wire::encode_command(&["AUTH", &password.0]),
        })
    }

    /// `as user X`, `with the default user's password` or `without AUTH`, for logs.
    pub fn who(&self) -> String {
        match (&self.user, &self.password) {
            (Some(u), _) => format!("as user {u}"),
            (None, Some(_)) => "with the default user's password".into(),
            (None, None) => "without AUTH".into(),
        }
    }
}

/// The settings read with `CONFIG GET`, as the master reports them (sizes in bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigValues {
    /// The `replica` (`slave`) class of `client-output-buffer-limit`.
    pub output_buffer_limit: Option<OutputBufferLimit>,
    /// `repl-backlog-size`.
    pub backlog: Option<u64>,
    /// `repl-timeout`.
    pub repl_timeout: Option<Duration>,
    /// `repl-diskless-sync`.
    pub diskless_sync: Option<bool>,
    /// `repl-diskless-sync-delay`, seconds.
    pub diskless_sync_delay: Option<u64>,
    /// `repl-diskless-sync-max-replicas` (7.0+).
    pub diskless_sync_max_replicas: Option<u64>,
}

/// The master's version, from `INFO server`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerVersion {
    /// `redis_version` (Valkey reports 7.2.4 there).
    pub redis: Option<String>,
    /// `valkey_version`, on Valkey.
    pub valkey: Option<String>,
}

impl ServerVersion {
    /// Whether the master applies a replica hard limit below `repl-backlog-size` as that size: Redis 7.0+
    /// and every Valkey (one shared replication buffer, PROTOCOL.md §7.1).
    pub fn raises_hard_limit_to_backlog(&self) -> bool {
        self.valkey.is_some() || self.redis_major().is_some_and(|m| m >= 7)
    }

    fn redis_major(&self) -> Option<u32> {
        self.redis.as_deref()?.split('.').next()?.parse().ok()
    }

    /// `valkey 9.1.0` or `redis 7.0.15`, for logs.
    pub fn describe(&self) -> String {
        match (&self.valkey, &self.redis) {
            (Some(v), _) => format!("valkey {v}"),
            (None, Some(r)) => format!("redis {r}"),
            (None, None) => "an unknown version".into(),
        }
    }
}

/// What one round of questions learnt. A part is `None` when it was not asked or its answer failed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MasterReport {
    /// When the answers came.
    pub at: Timestamp,
    /// `CONFIG GET`.
    pub config: Option<ConfigValues>,
    /// `INFO replication`.
    pub replication: Option<ReplicationInfo>,
    /// `CLIENT LIST TYPE replica`.
    pub clients: Option<Vec<ReplicaClient>>,
    /// `INFO server`.
    pub version: Option<ServerVersion>,
}

/// Which question failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Question {
    /// `CONFIG GET …`.
    Config,
    /// `INFO replication`.
    InfoReplication,
    /// `INFO server`.
    InfoServer,
    /// `CLIENT LIST TYPE replica`.
    ClientList,
}

impl Question {
    /// The command, as an operator would grant it in an ACL.
    pub fn command(self) -> &'static str {
        match self {
            Question::Config => "CONFIG GET",
            Question::InfoReplication => "INFO replication",
            Question::InfoServer => "INFO server",
            Question::ClientList => "CLIENT LIST",
        }
    }
}

crate::labelled! {
    /// Why introspection failed (the `reason` of `replscope_introspection_errors_total`).
    pub enum Failure {
        /// The master could not be reached.
        Connect => "connect",
        /// The master refused replscope's AUTH.
        Auth => "auth",
        /// The master's ACL forbids a question (`-NOPERM`).
        Forbidden => "forbidden",
        /// Another error reply, or a reply of the wrong shape.
        Reply => "reply",
        /// No answer in time, or the connection broke.
        Io => "io",
    }
}

/// A question that went wrong: which, why, and the master's words (never a password: replscope's AUTH
/// is not a question).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Which question.
    pub question: Question,
    /// Forbidden or another error.
    pub failure: Failure,
    /// The error reply or what was wrong with the answer.
    pub detail: String,
}

/// How often to ask, as the links need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pace {
    /// Nothing under way: every [`IDLE`].
    Idle,
    /// A full sync or a lag under way: every [`BUSY`].
    Busy,
    /// A replica's output buffer nears its limit: `CLIENT LIST` every [`CLOSE`], the rest every
    /// [`BUSY`], so the last reading before a kill is at most that old.
    Close,
}

/// The pace of [`Pace::Idle`].
pub const IDLE: Duration = Duration::from_secs(10);
/// The pace of [`Pace::Busy`].
pub const BUSY: Duration = Duration::from_secs(1);
/// The pace of [`Pace::Close`].
pub const CLOSE: Duration = Duration::from_millis(100);

impl Pace {
    /// The time between two rounds.
    pub fn interval(self) -> Duration {
        match self {
            Pace::Idle => IDLE,
            Pace::Busy => BUSY,
            Pace::Close => CLOSE,
        }
    }
}

/// The `CONFIG GET` patterns, one per command.
pub const CONFIG_PATTERNS: [&str; 4] =
    ["client-output-buffer-limit", "repl-backlog-size", "repl-timeout", "repl-diskless-sync*"];

/// What to ask in one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poll {
    /// Ask `CONFIG GET` (not when the master forbade it on this connection).
    pub config: bool,
    /// Ask `INFO replication`.
    pub replication: bool,
    /// Ask `INFO server` (once per connection).
    pub server: bool,
}

impl Poll {
    /// Everything but `INFO server`.
    pub fn full(config: bool) -> Self {
        Poll { config, replication: true, server: false }
    }

    /// Only `CLIENT LIST` (the quick look while a replica's buffer nears its limit).
    pub fn clients_only() -> Self {
        Poll { config: false, replication: false, server: false }
    }

    fn questions(&self) -> Vec<(Question, Vec<&'static str>)> {
        let mut q = Vec::new();
        if self.server {
            q.push((Question::InfoServer, vec!["INFO", "server"]));
        }
        if self.config {
            for p in CONFIG_PATTERNS {
                q.push((Question::Config, vec!["CONFIG", "GET", p]));
            }
        }
        if self.replication {
            q.push((Question::InfoReplication, vec!["INFO", "replication"]));
        }
        q.push((Question::ClientList, vec!["CLIENT", "LIST", "TYPE", "replica"]));
        q
    }

    /// Whether the round asks `question`.
    pub fn asks(&self, question: Question) -> bool {
        self.questions().iter().any(|(q, _)| *q == question)
    }

    /// The commands of the round, pipelined.
    pub fn request(&self) -> Vec<u8> {
        self.questions().iter().flat_map(|(_, args)| crate::wire::encode_command(args)).collect()
    }

    /// How many replies the round expects.
    pub fn replies(&self) -> usize {
        self.questions().len()
    }

    /// Reads the replies (in the order asked) into a report, with what went wrong.
    pub fn answer(&self, replies: &[Value], at: Timestamp) -> (MasterReport, Vec<Problem>) {
        let mut report = MasterReport { at, ..Default::default() };
        let mut problems = Vec::new();
        let mut config = ConfigValues::default();
        let mut config_ok = self.config;
        for ((question, _), reply) in self.questions().into_iter().zip(replies) {
            let result = match (question, reply) {
                (_, Value::Error(e)) => Err(Problem {
                    question,
                    failure: if e.starts_with("NOPERM") { Failure::Forbidden } else { Failure::Reply },
                    detail: e.clone(),
                }),
                (Question::Config, Value::Array(pairs)) => parse::config_pairs(pairs, &mut config),
                (Question::InfoReplication, Value::BulkString(text)) => {
                    report.replication = Some(parse::info_replication(&String::from_utf8_lossy(text)));
                    Ok(())
                }
                (Question::InfoServer, Value::BulkString(text)) => {
                    report.version = Some(parse::info_server(&String::from_utf8_lossy(text)));
                    Ok(())
                }
                (Question::ClientList, Value::BulkString(text) | Value::SimpleString(text)) => {
                    report.clients = Some(parse::client_list(&String::from_utf8_lossy(text)));
                    Ok(())
                }
                (_, other) => Err(Problem {
                    question,
                    failure: Failure::Reply,
                    detail: format!("unexpected reply {}", frame_kind(other)),
                }),
            };
            if let Err(p) = result {
                config_ok &= p.question != Question::Config;
                if !problems.iter().any(|q: &Problem| q.question == p.question) {
                    problems.push(p);
                }
            }
        }
        if config_ok {
            report.config = Some(config);
        }
        (report, problems)
    }
}

fn frame_kind(f: &Value) -> &'static str {
    match f {
        Value::SimpleString(_) => "simple string",
        Value::Error(_) => "error",
        Value::Integer(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn pairs(kv: &[&str]) -> Value {
        Value::Array(kv.iter().map(|s| bulk(s)).collect())
    }

    #[test]
    fn one_round_asks_each_pattern_on_its_own_and_reads_the_answers() {
        let poll = Poll { server: true, ..Poll::full(true) };
        let request = String::from_utf8(poll.request()).expect("ascii");
        assert!(request.starts_with("*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n"));
        assert_eq!(request.matches("CONFIG").count(), 4, "Redis 6.2 takes one pattern per CONFIG GET");
        assert_eq!(poll.replies(), 7);
        let replies = [
            bulk("# Server\r\nredis_version:7.2.4\r\nvalkey_version:8.1.8\r\n"),
            pairs(&["client-output-buffer-limit", "normal 0 0 0 slave 8388608 4194304 5 pubsub 33554432 8388608 60"]),
            pairs(&["repl-backlog-size", "10485760"]),
            pairs(&["repl-timeout", "60"]),
            pairs(&[
                "repl-diskless-sync-delay",
                "0",
                "repl-diskless-sync",
                "no",
                "repl-diskless-sync-max-replicas",
                "0",
            ]),
            bulk(
                "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=send_bulk,offset=0,lag=0\r\nmaster_repl_offset:42\r\n",
            ),
            bulk(
                "id=7 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=9 name= age=3 idle=0 flags=S db=0 sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=12 omem=6291456 tot-mem=6300000 events=rw cmd=psync user=default redir=-1 resp=2\n",
            ),
        ];
        let (r, problems) = poll.answer(&replies, Timestamp::from_micros(5));
        assert!(problems.is_empty(), "{problems:?}");
        let c = r.config.expect("config");
        assert_eq!(c.output_buffer_limit, Some(OutputBufferLimit { hard: 8 << 20, soft: 4 << 20, soft_seconds: 5 }));
        assert_eq!((c.backlog, c.repl_timeout), (Some(10 << 20), Some(Duration::from_secs(60))));
        assert_eq!(
            (c.diskless_sync, c.diskless_sync_delay, c.diskless_sync_max_replicas),
            (Some(false), Some(0), Some(0))
        );
        assert!(r.version.expect("version").raises_hard_limit_to_backlog());
        let clients = r.clients.expect("clients");
        assert_eq!((clients[0].omem, clients[0].oll, clients[0].addr.port()), (6 << 20, 12, 50000));
        assert_eq!(r.replication.expect("info").replicas[0].state, "send_bulk");
    }

    #[test]
    fn a_forbidden_config_leaves_the_rest_and_says_so_once() {
        let poll = Poll::full(true);
        let noperm = Value::Error("NOPERM User intro has no permissions to run the 'config|get' command".into());
        let mut replies = vec![noperm.clone(), noperm.clone(), noperm.clone(), noperm];
        replies.push(bulk("# Replication\r\nrole:master\r\nrepl_backlog_size:1048576\r\n"));
        replies.push(bulk(""));
        let (r, problems) = poll.answer(&replies, Timestamp::ZERO);
        assert_eq!(r.config, None);
        assert_eq!(r.replication.and_then(|i| i.backlog), Some(1 << 20));
        assert_eq!(r.clients, Some(vec![]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!((problems[0].question, problems[0].failure), (Question::Config, Failure::Forbidden));
    }

    #[test]
    fn a_password_never_shows_and_a_user_needs_one() {
        let i = Introspection::from_parts(false, Some("intro".into()), Some("s3cret-pw".into())).expect("valid");
        let i = i.expect("on");
        assert!(!format!("{i:?}").contains("s3cret-pw"), "{i:?}");
        assert_eq!(i.who(), "as user intro");
        let auth = i.auth_request().expect("auth");
        assert_eq!(auth, crate::wire::encode_command(&["AUTH", "intro", "s3cret-pw"]));
        assert!(Introspection::from_parts(true, Some("intro".into()), None).is_err());
        assert_eq!(Introspection::from_parts(false, None, None), Ok(None));
        let plain = Introspection::from_parts(true, None, None).expect("valid").expect("on");
        assert_eq!((plain.auth_request(), plain.who().as_str()), (None, "without AUTH"));
    }

    #[test]
    fn versions_that_raise_the_hard_limit() {
        let v = |r: &str| ServerVersion { redis: Some(r.into()), valkey: None };
        assert!(!v("6.2.14").raises_hard_limit_to_backlog());
        assert!(v("7.0.15").raises_hard_limit_to_backlog());
        assert!(v("8.2.3").raises_hard_limit_to_backlog());
        assert!(!ServerVersion::default().raises_hard_limit_to_backlog());
    }
}
