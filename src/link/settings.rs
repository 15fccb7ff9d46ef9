//! The master's settings that decide some causes — `repl-timeout`, `client-output-buffer-limit replica`,
//! `repl-backlog-size` — which the wire never shows. replscope may read them from the master itself
//! (introspection, [`MasterSettings`]); otherwise the operator may state them (`--assume-*`); otherwise
//! the server's defaults (PROTOCOL.md §10.4) stand in, in that order. The evidence says which: every
//! other number in a diagnosis was observed on the wire or read from the master.

use std::time::Duration;

use crate::link::forecast::OutputBufferLimit;

/// Redis's and Valkey's default `client-output-buffer-limit replica`.
pub const DEFAULT_OUTPUT_BUFFER_LIMIT: OutputBufferLimit =
    OutputBufferLimit { hard: 256 << 20, soft: 64 << 20, soft_seconds: 60 };

/// The default `repl-timeout` of every version.
pub const DEFAULT_REPL_TIMEOUT: Duration = Duration::from_secs(60);

/// The default `repl-backlog-size` of Redis and of Valkey before 8.0.
pub const DEFAULT_BACKLOG: u64 = 1 << 20;

/// The default `repl-backlog-size` of Valkey 8.0 and later.
pub const DEFAULT_BACKLOG_VALKEY_8: u64 = 10 << 20;

/// Silence that counts as a timeout's cause. Replicas ACK once a second and masters stream, ping or send
/// `\n` at least every few seconds in a healthy link, so 2 s without a byte is already abnormal; the
/// server's own `repl-timeout` (60 s by default) is longer, so any real timeout passes this bar. When the
/// operator states `repl-timeout` (`--assume-repl-timeout`) the bar rises to it
/// ([`ServerSettings::silence_for_timeout`]).
pub const SILENCE: Duration = Duration::from_secs(2);

/// How much earlier than a stated `repl-timeout` the silence may end and still be that timeout. Servers
/// check it from their 1 Hz cron against whole-second clocks, so the kill comes between `repl-timeout` and
/// about `repl-timeout` + 2 s after the last byte; the proxy sees that byte a little before the server
/// does. One second of slack keeps a real timeout from being missed by a clock tick.
pub const TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Read from the master (`CONFIG GET`, `INFO replication`) by replscope's own client connection.
    Master,
    /// The operator stated it (`--assume-…`).
    Assumed,
    /// Nobody did: the server's default stands in.
    Default,
}

impl Source {
    /// The word used in explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Master => "master",
            Source::Assumed => "assumed",
            Source::Default => "default",
        }
    }
}

/// One server setting as a diagnosis used it: its name and value as `redis.conf` writes them, and where
/// the value came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SettingUsed {
    /// `repl-timeout`, `client-output-buffer-limit replica` or `repl-backlog-size`.
    pub setting: &'static str,
    /// The value, as in `redis.conf` (`60`, `256mb 64mb 60`, `1mb`).
    pub value: String,
    /// Master, assumed or default.
    pub source: Source,
    /// The value the server actually applies, when it differs from the one configured: Redis 7.0+ and
    /// Valkey raise a replica hard limit below `repl-backlog-size` to it (PROTOCOL.md §7.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_effect: Option<String>,
}

impl SettingUsed {
    fn new(setting: &'static str, value: String, source: Source) -> Self {
        SettingUsed { setting, value, source, in_effect: None }
    }

    /// `repl-timeout 60 (assumed)`: how explanations name it.
    pub fn describe(&self) -> String {
        match &self.in_effect {
            None => format!("{} {} ({})", self.setting, self.value, self.source.as_str()),
            Some(e) => format!(
                "{} {} ({}; {e} in effect: the hard limit is raised to repl-backlog-size)",
                self.setting,
                self.value,
                self.source.as_str()
            ),
        }
    }
}

/// What the master said about its settings when replscope last asked it (introspection). Each is `None`
/// until read, or when the master forbids reading it (an ACL without `CONFIG`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasterSettings {
    /// `CONFIG GET repl-timeout`.
    pub repl_timeout: Option<Duration>,
    /// The `replica` (`slave`) class of `CONFIG GET client-output-buffer-limit`.
    pub output_buffer_limit: Option<OutputBufferLimit>,
    /// `CONFIG GET repl-backlog-size`, else `INFO replication`'s `repl_backlog_size`.
    pub backlog: Option<u64>,
    /// Whether the master raises a replica hard limit below `repl-backlog-size` to it (Redis 7.0+, which
    /// every Valkey reports itself as): its version, from `INFO server`.
    pub raises_hard_limit_to_backlog: bool,
}

/// The master's settings as far as they are known: read from the master, else stated by the operator
/// (the `--assume-*` fields), else the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerSettings {
    /// `--assume-repl-timeout`.
    pub repl_timeout: Option<Duration>,
    /// `--assume-output-buffer-limit`.
    pub output_buffer_limit: Option<OutputBufferLimit>,
    /// `--assume-backlog`.
    pub backlog: Option<u64>,
    /// What the master said.
    pub master: MasterSettings,
}

/// The first of the master's value and the stated one, and where it came from.
fn pick<T: Copy>(master: Option<T>, stated: Option<T>) -> (Option<T>, Source) {
    match (master, stated) {
        (Some(v), _) => (Some(v), Source::Master),
        (None, Some(v)) => (Some(v), Source::Assumed),
        (None, None) => (None, Source::Default),
    }
}

/// A size as `redis.conf` writes it: `1mb`, `16kb`, or bytes.
pub fn conf_size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}mb", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{}kb", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

impl ServerSettings {
    /// The `repl-timeout` read from the master or stated, if either.
    pub fn known_repl_timeout(&self) -> Option<Duration> {
        pick(self.master.repl_timeout, self.repl_timeout).0
    }

    /// The `client-output-buffer-limit replica` the master applies, read from it or stated, if either.
    pub fn known_output_buffer_limit(&self) -> Option<OutputBufferLimit> {
        self.known_output_buffer_limit_used().map(|(l, _)| l)
    }

    fn known_output_buffer_limit_used(&self) -> Option<(OutputBufferLimit, SettingUsed)> {
        let (limit, source) = pick(self.master.output_buffer_limit, self.output_buffer_limit);
        let l = limit?;
        let value = format!("{} {} {}", conf_size(l.hard), conf_size(l.soft), l.soft_seconds);
        let mut used = SettingUsed::new("client-output-buffer-limit replica", value, source);
        let mut applied = l;
        // The raise needs both the master's version and its backlog, as the master said them.
        if source == Source::Master
            && self.master.raises_hard_limit_to_backlog
            && let Some(backlog) = self.master.backlog
            && l.hard > 0
            && l.hard < backlog
        {
            applied.hard = backlog;
            used.in_effect = Some(format!("{} {} {}", conf_size(backlog), conf_size(l.soft), l.soft_seconds));
        }
        Some((applied, used))
    }

    /// The `repl-backlog-size` read from the master or stated, if either.
    pub fn known_backlog(&self) -> Option<u64> {
        pick(self.master.backlog, self.backlog).0
    }

    /// The `repl-timeout` in force: read from the master, stated, or the default.
    pub fn repl_timeout(&self) -> (Duration, SettingUsed) {
        let (known, source) = pick(self.master.repl_timeout, self.repl_timeout);
        let t = known.unwrap_or(DEFAULT_REPL_TIMEOUT);
        let value = if t.subsec_millis() == 0 { t.as_secs().to_string() } else { format!("{:.1}", t.as_secs_f64()) };
        (t, SettingUsed::new("repl-timeout", value, source))
    }

    /// The `client-output-buffer-limit replica` in force: read from the master (with the hard limit as
    /// the master applies it), stated, or the default.
    pub fn output_buffer_limit(&self) -> (OutputBufferLimit, SettingUsed) {
        self.known_output_buffer_limit_used().unwrap_or_else(|| {
            let l = DEFAULT_OUTPUT_BUFFER_LIMIT;
            let value = format!("{} {} {}", conf_size(l.hard), conf_size(l.soft), l.soft_seconds);
            (l, SettingUsed::new("client-output-buffer-limit replica", value, Source::Default))
        })
    }

    /// The `repl-backlog-size` in force: read from the master, stated, or the default of the master's
    /// version (`valkey_8`: the master is Valkey 8.0 or later, as its RDB said).
    pub fn backlog(&self, valkey_8: bool) -> (u64, SettingUsed) {
        let default = if valkey_8 { DEFAULT_BACKLOG_VALKEY_8 } else { DEFAULT_BACKLOG };
        let (known, source) = pick(self.master.backlog, self.backlog);
        let b = known.unwrap_or(default);
        (b, SettingUsed::new("repl-backlog-size", conf_size(b), source))
    }

    /// How long one side must have been silent for a close to be its peer's timeout: [`SILENCE`]
    /// unless `repl-timeout` is known (read from the master or stated), then that less [`TIMEOUT_SLACK`]
    /// (never less than `SILENCE`). The default of 60 s is not used here: it is changed too often to rule
    /// anything out.
    pub fn silence_for_timeout(&self) -> Duration {
        let floor = SILENCE;
        self.known_repl_timeout().map_or(floor, |t| t.saturating_sub(TIMEOUT_SLACK).max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_says_where_it_came_from() {
        let none = ServerSettings::default();
        assert_eq!(none.repl_timeout().1.describe(), "repl-timeout 60 (default)");
        assert_eq!(
            none.output_buffer_limit().1.describe(),
            "client-output-buffer-limit replica 256mb 64mb 60 (default)"
        );
        assert_eq!(none.backlog(false).1.describe(), "repl-backlog-size 1mb (default)");
        assert_eq!(none.backlog(true).1.describe(), "repl-backlog-size 10mb (default)");
        let stated = ServerSettings {
            repl_timeout: Some(Duration::from_secs(5)),
            output_buffer_limit: Some(OutputBufferLimit { hard: 8 << 20, soft: 4 << 20, soft_seconds: 5 }),
            backlog: Some(16 << 10),
            master: MasterSettings::default(),
        };
        assert_eq!(stated.repl_timeout().1.describe(), "repl-timeout 5 (assumed)");
        assert_eq!(stated.output_buffer_limit().1.value, "8mb 4mb 5");
        assert_eq!(stated.backlog(true).1.describe(), "repl-backlog-size 16kb (assumed)");
    }

    #[test]
    fn the_masters_word_comes_before_the_operators_and_its_raised_limit_is_said() {
        let limit = |hard| OutputBufferLimit { hard, soft: 4 << 20, soft_seconds: 5 };
        let mut s = ServerSettings {
            repl_timeout: Some(Duration::from_secs(5)),
            output_buffer_limit: Some(limit(1 << 30)),
            ..Default::default()
        };
        s.master.output_buffer_limit = Some(limit(8 << 20));
        s.master.backlog = Some(10 << 20);
        assert_eq!(s.repl_timeout().1.describe(), "repl-timeout 5 (assumed)", "the master did not say it");
        let (applied, used) = s.output_buffer_limit();
        assert_eq!(
            (applied.hard, used.describe()),
            (8 << 20, "client-output-buffer-limit replica 8mb 4mb 5 (master)".into())
        );
        // Redis 7.0+ and Valkey apply the backlog's size as the hard limit when it is larger.
        s.master.raises_hard_limit_to_backlog = true;
        let (applied, used) = s.output_buffer_limit();
        assert_eq!(applied.hard, 10 << 20);
        assert_eq!(
            used.describe(),
            "client-output-buffer-limit replica 8mb 4mb 5 (master; 10mb 4mb 5 in effect: the hard limit is raised to repl-backlog-size)"
        );
        assert_eq!(s.backlog(false).1.describe(), "repl-backlog-size 10mb (master)");
        s.master.repl_timeout = Some(Duration::from_secs(60));
        assert_eq!(s.silence_for_timeout(), Duration::from_secs(59));
        assert_eq!(s.repl_timeout().1.source, Source::Master);
    }

    #[test]
    fn a_stated_timeout_raises_the_silence_a_timeout_needs() {
        let floor = SILENCE;
        assert_eq!(ServerSettings::default().silence_for_timeout(), floor);
        let short = ServerSettings { repl_timeout: Some(Duration::from_secs(2)), ..Default::default() };
        assert_eq!(short.silence_for_timeout(), floor);
        let long = ServerSettings { repl_timeout: Some(Duration::from_secs(60)), ..Default::default() };
        assert_eq!(long.silence_for_timeout(), Duration::from_secs(59));
    }

    #[test]
    fn sizes_read_as_redis_conf_writes_them() {
        assert_eq!(conf_size(1 << 20), "1mb");
        assert_eq!(conf_size(16 << 10), "16kb");
        assert_eq!(conf_size(1500), "1500");
    }
}
