//! The master's settings that decide some causes — `repl-timeout`, `client-output-buffer-limit replica`,
//! `repl-backlog-size` — which the wire never shows. The operator may state them (`--assume-*`); otherwise
//! the server's defaults (PROTOCOL.md §10.4) stand in. Either way the evidence says which: every other
//! number in a diagnosis was observed on the wire.

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
    /// The operator stated it (`--assume-…`).
    Assumed,
    /// Nobody did: the server's default stands in.
    Default,
}

impl Source {
    /// The word used in explanations.
    pub fn as_str(self) -> &'static str {
        match self {
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
    /// Assumed or default.
    pub source: Source,
}

impl SettingUsed {
    /// `repl-timeout 60 (assumed)`: how explanations name it.
    pub fn describe(&self) -> String {
        format!("{} {} ({})", self.setting, self.value, self.source.as_str())
    }
}

/// What the operator stated about the master's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerSettings {
    /// `--assume-repl-timeout`.
    pub repl_timeout: Option<Duration>,
    /// `--assume-output-buffer-limit`.
    pub output_buffer_limit: Option<OutputBufferLimit>,
    /// `--assume-backlog`.
    pub backlog: Option<u64>,
}

fn source<T>(stated: &Option<T>) -> Source {
    if stated.is_some() { Source::Assumed } else { Source::Default }
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
    /// The `repl-timeout` in force, stated or default.
    pub fn repl_timeout(&self) -> (Duration, SettingUsed) {
        let t = self.repl_timeout.unwrap_or(DEFAULT_REPL_TIMEOUT);
        let value = if t.subsec_millis() == 0 { t.as_secs().to_string() } else { format!("{:.1}", t.as_secs_f64()) };
        (t, SettingUsed { setting: "repl-timeout", value, source: source(&self.repl_timeout) })
    }

    /// The `client-output-buffer-limit replica` in force, stated or default.
    pub fn output_buffer_limit(&self) -> (OutputBufferLimit, SettingUsed) {
        let l = self.output_buffer_limit.unwrap_or(DEFAULT_OUTPUT_BUFFER_LIMIT);
        let value = format!("{} {} {}", conf_size(l.hard), conf_size(l.soft), l.soft_seconds);
        (
            l,
            SettingUsed {
                setting: "client-output-buffer-limit replica",
                value,
                source: source(&self.output_buffer_limit),
            },
        )
    }

    /// The `repl-backlog-size` in force, stated or the default of the master's version (`valkey_8`: the
    /// master is Valkey 8.0 or later, as its RDB said).
    pub fn backlog(&self, valkey_8: bool) -> (u64, SettingUsed) {
        let default = if valkey_8 { DEFAULT_BACKLOG_VALKEY_8 } else { DEFAULT_BACKLOG };
        let b = self.backlog.unwrap_or(default);
        (b, SettingUsed { setting: "repl-backlog-size", value: conf_size(b), source: source(&self.backlog) })
    }

    /// How long one side must have been silent for a close to be its peer's timeout: [`SILENCE`]
    /// unless the operator stated `repl-timeout`, then that less [`TIMEOUT_SLACK`] (never less than
    /// `SILENCE`). The default of 60 s is not used here: it is changed too often to rule anything out.
    pub fn silence_for_timeout(&self) -> Duration {
        let floor = SILENCE;
        self.repl_timeout.map_or(floor, |t| t.saturating_sub(TIMEOUT_SLACK).max(floor))
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
        };
        assert_eq!(stated.repl_timeout().1.describe(), "repl-timeout 5 (assumed)");
        assert_eq!(stated.output_buffer_limit().1.value, "8mb 4mb 5");
        assert_eq!(stated.backlog(true).1.describe(), "repl-backlog-size 16kb (assumed)");
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
