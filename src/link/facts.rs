//! The facts a link keeps: what kind of connection it is, what the handshake said, the sync asked for and
//! granted, the RDB, the stream and its acknowledgements, the traffic, and how it ended.

use std::time::Duration;

use crate::link::transport::{CloseHow, ClosedBy};
use crate::time::Timestamp;
use crate::wire::{
    CommandName, DesyncReason, Direction, ErrorCode, PayloadFraming, PsyncId, RdbHeader, ReplId, TrailerCheck,
    WirePhase,
};

/// What a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// Not yet known (nothing, or only PING/AUTH, seen).
    Pending,
    /// A replica's main replication channel.
    Replication,
    /// The RDB channel of a Valkey dual-channel or Redis 8 rdb-channel sync.
    RdbChannel,
    /// A snapshot client: `redis-cli --rdb` / `--replica` and other tooling that takes the RDB (and
    /// perhaps the stream) without being a replica (`REPLCONF rdb-only 1`, or SYNC/PSYNC without a
    /// `listening-port`). Its end after the whole payload is the normal end, not a failure.
    Snapshot,
    /// A plain client, forwarded without interpretation.
    Client,
}

impl LinkKind {
    /// Every kind.
    pub const ALL: [LinkKind; 5] =
        [LinkKind::Pending, LinkKind::Replication, LinkKind::RdbChannel, LinkKind::Snapshot, LinkKind::Client];

    /// The label value used in metrics and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkKind::Pending => "pending",
            LinkKind::Replication => "replication",
            LinkKind::RdbChannel => "rdb_channel",
            LinkKind::Snapshot => "snapshot",
            LinkKind::Client => "client",
        }
    }
}

/// The phase of a link. Phases only move forward, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Connected; PING, AUTH, REPLCONF, PSYNC.
    Handshake,
    /// A full sync was granted; the master is preparing the RDB (`\n` keepalives arrive here).
    WaitingBgsave,
    /// The RDB payload is flowing.
    RdbTransfer,
    /// The payload is complete; the replica loads it, until its first `REPLCONF ACK`.
    Loading,
    /// The command stream flows and is acknowledged.
    Streaming,
    /// The connection ended.
    Closed,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 6] =
        [Phase::Handshake, Phase::WaitingBgsave, Phase::RdbTransfer, Phase::Loading, Phase::Streaming, Phase::Closed];

    /// The label value used in metrics and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::WaitingBgsave => "waiting_bgsave",
            Phase::RdbTransfer => "rdb_transfer",
            Phase::Loading => "loading",
            Phase::Streaming => "streaming",
            Phase::Closed => "closed",
        }
    }
}

/// When a phase began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PhaseChange {
    /// The phase.
    pub phase: Phase,
    /// When it began.
    pub at: Timestamp,
}

/// That AUTH was used, as whom, and whether the master took it. Never the password.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuthFacts {
    /// The user of `AUTH <user> <password>`; `None` for the one-argument form (the default user).
    pub user: Option<String>,
    /// When.
    pub at: Timestamp,
    /// `+OK` (true) or an error (false), once the master answered.
    pub accepted: Option<bool>,
}

/// A replica command that the master answers with one reply line. The handshake is answered in order,
/// so replies are matched to these first in, first out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandshakeStep {
    /// `PING`.
    Ping,
    /// `AUTH`.
    Auth,
    /// `REPLCONF` (anything but `ACK`, which is never answered).
    Replconf,
    /// `PSYNC`.
    Psync,
    /// `SYNC`.
    Sync,
    /// Any other command.
    Other,
}

/// An error reply seen during the handshake.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ErrorReply {
    /// Its code.
    pub code: ErrorCode,
    /// The command it answered, when known.
    pub to: Option<HandshakeStep>,
    /// When.
    pub at: Timestamp,
}

/// What the replica announced about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Handshake {
    /// `REPLCONF listening-port`.
    pub listening_port: Option<u16>,
    /// `REPLCONF ip-address`.
    pub ip_address: Option<String>,
    /// `REPLCONF capa …`, in order, without repeats.
    pub capabilities: Vec<String>,
    /// `REPLCONF version` (Valkey 8+ replicas).
    pub version: Option<String>,
    /// AUTH, if it was used.
    pub auth: Option<AuthFacts>,
    /// `REPLCONF rdb-only 1`.
    pub rdb_only: bool,
    /// `REPLCONF rdb-filter-only`.
    pub rdb_filter_only: Option<String>,
    /// `REPLCONF main-ch-client-id` (a Redis 8 RDB channel naming its main channel).
    pub main_ch_client_id: Option<u64>,
    /// `REPLCONF set-rdb-client-id` (a Valkey main channel naming its RDB channel).
    pub set_rdb_client_id: Option<u64>,
    /// Error replies the master gave (at most [`MAX_ERRORS_KEPT`]).
    pub errors: Vec<ErrorReply>,
}

/// How many handshake error replies a link keeps.
pub const MAX_ERRORS_KEPT: usize = 16;

/// What the replica asked for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum SyncRequest {
    /// `PSYNC <replid> <offset>`.
    Psync {
        /// The replication id.
        replid: PsyncId,
        /// The first byte it needs.
        offset: i64,
        /// When.
        at: Timestamp,
    },
    /// `SYNC`.
    Sync {
        /// When.
        at: Timestamp,
    },
}

/// What the master answered to the sync request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "answer")]
pub enum SyncAnswer {
    /// `+FULLRESYNC`.
    FullResync {
        /// The master's replication id.
        replid: ReplId,
        /// The offset of the RDB.
        offset: i64,
        /// When.
        at: Timestamp,
    },
    /// `+CONTINUE`: a partial resync.
    Continue {
        /// The master's replication id, when given.
        replid: Option<ReplId>,
        /// When.
        at: Timestamp,
    },
    /// `+DUALCHANNELSYNC`: a full sync over a second connection (Valkey).
    DualChannelSync {
        /// When.
        at: Timestamp,
    },
    /// `+RDBCHANNELSYNC <id>`: a full sync over a second connection (Redis 8).
    RdbChannelSync {
        /// This main channel's client id.
        client_id: u64,
        /// When.
        at: Timestamp,
    },
    /// `$ENDOFF:` on a Valkey RDB channel.
    EndOffset {
        /// The offset of the RDB.
        offset: i64,
        /// The master's replication id.
        replid: ReplId,
        /// The stream's selected DB.
        dbid: i64,
        /// This RDB channel's client id.
        client_id: u64,
        /// When.
        at: Timestamp,
    },
    /// The payload came straight after `SYNC` (no `+FULLRESYNC`).
    BulkPayload {
        /// When.
        at: Timestamp,
    },
    /// An error line.
    Error {
        /// Its code.
        code: ErrorCode,
        /// When.
        at: Timestamp,
    },
}

/// Full or partial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncKind {
    /// A full sync (RDB then stream).
    Full,
    /// A partial resync from the backlog.
    Partial,
}

/// The RDB of a full sync.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RdbFacts {
    /// How it was framed.
    pub framing: PayloadFraming,
    /// The size `$<len>` announced (EOF framing: `None` until the end).
    pub announced_size: Option<u64>,
    /// Payload bytes so far.
    pub transferred: u64,
    /// The header, once read.
    pub header: Option<RdbHeader>,
    /// When the payload did not start like an RDB: its first bytes, hex.
    pub not_rdb: Option<String>,
    /// The trailer check, once complete.
    pub trailer: Option<TrailerCheck>,
    /// The first payload byte.
    pub started_at: Timestamp,
    /// The last payload byte.
    pub completed_at: Option<Timestamp>,
    /// Set on a main channel whose RDB came over this RDB channel.
    pub via_rdb_channel: Option<u64>,
}

impl RdbFacts {
    /// The size: announced, or real once complete.
    pub fn size(&self) -> Option<u64> {
        self.announced_size.or(self.completed_at.map(|_| self.transferred))
    }

    /// The RDB format version.
    pub fn version(&self) -> Option<u16> {
        self.header.as_ref().map(|h| h.version)
    }

    /// The server version written in the AUX fields.
    pub fn server_version(&self) -> Option<&str> {
        self.header.as_ref().and_then(RdbHeader::server_version)
    }
}

/// On a two-channel full sync (Valkey's dual channel, Redis 8's rdb channel), the replica stopped reading
/// its main channel while the RDB still crossed the other one: its own buffer for the stream it receives
/// meanwhile was full (Redis 8: `replica-full-sync-buffer-limit`, 0 meaning its `client-output-buffer-limit
/// replica` hard limit; Valkey: that hard limit). The stream then piles up on the master instead. Seen by
/// the proxy as writes toward the replica that waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaBufferFull {
    /// When the first such wait began.
    pub since: Timestamp,
    /// How long the replica did not read, in all, in waits that began before it was loading.
    #[serde(serialize_with = "serialize_secs", rename = "not_reading_seconds")]
    pub not_reading: Duration,
}

/// A `REPLCONF ACK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Ack {
    /// The offset acknowledged.
    pub offset: i64,
    /// The `FACK` offset that came with it.
    pub fack: Option<i64>,
    /// When.
    pub at: Timestamp,
}

/// The command stream.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StreamFacts {
    /// The offset the stream started from on this connection, once known.
    pub start_offset: Option<i64>,
    /// Stream bytes counted (complete commands).
    pub bytes: u64,
    /// The master's replication offset, as the wire shows it.
    pub offset: Option<i64>,
    /// Commands by name; indexed by [`CommandName::index`].
    #[serde(serialize_with = "serialize_counts")]
    pub commands: Vec<u64>,
    /// The last `REPLCONF ACK`.
    pub last_ack: Option<Ack>,
    /// How many ACKs.
    pub acks: u64,
    /// When the first stream command arrived.
    pub first_command_at: Option<Timestamp>,
    /// When the last stream command arrived.
    pub last_command_at: Option<Timestamp>,
    /// When the master last sent `REPLCONF GETACK` (the only REPLCONF a master streams), if that was its
    /// last command.
    pub getack_last_at: Option<Timestamp>,
    /// The largest complete command on this connection.
    pub largest_command: Option<CommandSeen>,
    /// The least size of a command the master was in the middle of sending at the last read (0 if none):
    /// at a close, the command it cut.
    pub pending_command_bytes: u64,
    /// The bytes of that command forwarded so far.
    pub pending_received_bytes: u64,
}

/// A stream command, by name and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CommandSeen {
    /// Its name, over the fixed set.
    pub name: CommandName,
    /// Its length in bytes.
    pub bytes: u64,
    /// When it was complete.
    pub at: Timestamp,
}

impl Default for StreamFacts {
    fn default() -> Self {
        StreamFacts {
            start_offset: None,
            bytes: 0,
            offset: None,
            commands: vec![0; CommandName::ALL.len()],
            last_ack: None,
            acks: 0,
            first_command_at: None,
            last_command_at: None,
            getack_last_at: None,
            largest_command: None,
            pending_command_bytes: 0,
            pending_received_bytes: 0,
        }
    }
}

impl StreamFacts {
    /// The largest command this connection carried or was cutting when it ended, in bytes.
    pub fn largest_command_bytes(&self) -> u64 {
        self.largest_command.map_or(0, |c| c.bytes).max(self.pending_command_bytes)
    }

    /// How many commands of this name were seen.
    pub fn count(&self, name: CommandName) -> u64 {
        self.commands.get(name.index()).copied().unwrap_or(0)
    }

    /// Master offset minus the last acknowledged offset.
    pub fn lag(&self) -> Option<i64> {
        Some(self.offset? - self.last_ack?.offset)
    }
}

fn serialize_counts<S: serde::Serializer>(counts: &[u64], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    for (name, n) in CommandName::ALL.iter().zip(counts) {
        if *n > 0 {
            map.serialize_entry(name.as_str(), n)?;
        }
    }
    map.end()
}

/// Bytes and timing of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Bytes forwarded.
    pub bytes: u64,
    /// When the last byte arrived.
    pub last_at: Option<Timestamp>,
    /// Lone `\n` keepalives.
    pub newlines: u64,
    /// When the last one arrived.
    pub last_newline_at: Option<Timestamp>,
}

/// A decoder giving up on a direction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DesyncFacts {
    /// The link's phase when it happened.
    pub link_phase: Phase,
    /// The direction.
    pub direction: Direction,
    /// Byte position in that direction.
    pub offset: u64,
    /// What the decoder was reading.
    pub phase: WirePhase,
    /// Why.
    pub reason: DesyncReason,
    /// When.
    pub at: Timestamp,
}

/// How a link ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Close {
    /// Who closed first.
    pub by: ClosedBy,
    /// How.
    pub how: CloseHow,
    /// When.
    pub at: Timestamp,
    /// The phase it was in.
    pub phase: Phase,
    /// How long it had been in that phase.
    #[serde(serialize_with = "serialize_secs")]
    pub time_in_phase: Duration,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
