//! The ways each server version can run a full sync, and the settings that choose one: disk-based, diskless
//! over one connection, and diskless over two connections (Valkey 8+'s dual channel, Redis 8+'s rdb channel).
//! Every setting is given explicitly, so a changed default in a later version cannot silently change what a
//! test covers.

use super::server::{ServerBin, servers};

/// How a full sync crosses the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// The master writes an RDB file, then sends it (`$<len>` payload), on the replica's one connection.
    Disk,
    /// The master's child streams the RDB (`$EOF:<mark>` payload) on the replica's one connection.
    Diskless,
    /// Diskless over a second connection while the main one streams: Valkey's dual channel
    /// (`+DUALCHANNELSYNC`) or Redis's rdb channel (`+RDBCHANNELSYNC`).
    TwoChannel,
}

impl SyncMode {
    /// The modes `bin` offers, in that order.
    pub fn offered_by(bin: &ServerBin) -> Vec<SyncMode> {
        let mut modes = vec![SyncMode::Disk, SyncMode::Diskless];
        if two_channel_capable(bin) {
            modes.push(SyncMode::TwoChannel);
        }
        modes
    }

    /// What the mode is called on `bin`: `disk`, `diskless`, `dual-channel` (Valkey) or `rdb-channel` (Redis).
    pub fn name(self, bin: &ServerBin) -> &'static str {
        match self {
            SyncMode::Disk => "disk",
            SyncMode::Diskless => "diskless",
            SyncMode::TwoChannel if bin.valkey => "dual-channel",
            SyncMode::TwoChannel => "rdb-channel",
        }
    }

    /// The master's settings for the mode (the diskless delay is 0 so tests do not wait 5 s).
    pub fn master_args(self, bin: &ServerBin) -> Vec<&'static str> {
        let mut args = vec!["--repl-diskless-sync-delay", "0", "--repl-diskless-sync"];
        args.push(if self == SyncMode::Disk { "no" } else { "yes" });
        args.extend(self.channel_args(bin));
        args
    }

    /// The replica's settings for the mode.
    pub fn replica_args(self, bin: &ServerBin) -> Vec<&'static str> {
        self.channel_args(bin)
    }

    /// Whether the second connection is on (both sides must agree; a disk-based master never uses it, so
    /// `Disk` leaves it at the version's default, as most deployments do).
    fn channel_args(self, bin: &ServerBin) -> Vec<&'static str> {
        if !two_channel_capable(bin) || self == SyncMode::Disk {
            return Vec::new();
        }
        let on = if self == SyncMode::TwoChannel { "yes" } else { "no" };
        let name = if bin.valkey { "--dual-channel-replication-enabled" } else { "--repl-rdb-channel" };
        vec![name, on]
    }
}

/// Valkey ≥ 8.0 (dual channel) and Redis ≥ 8.0 (rdb channel, a hidden setting that is on by default).
pub fn two_channel_capable(bin: &ServerBin) -> bool {
    bin.version >= (8, 0, 0)
}

/// The servers with a second replication channel; with `REPLSCOPE_REQUIRE_SERVERS=1`, finding none fails.
pub fn two_channel_servers() -> Vec<ServerBin> {
    let found: Vec<ServerBin> = servers().into_iter().filter(two_channel_capable).collect();
    let required = std::env::var("REPLSCOPE_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
    assert!(!(required && found.is_empty()), "no server with a second replication channel (Valkey 8+, Redis 8+)");
    found
}
