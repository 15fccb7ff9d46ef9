//! The events the decoders produce: everything `link` learns about a connection from its bytes.
//!
//! Events carry facts, never secrets: an `AUTH` becomes "authenticated, as user X" and nothing more.

use std::fmt;

use crate::time::Timestamp;
use crate::wire::rdb::{RdbHeader, TrailerCheck};
use crate::wire::stream::StreamTally;

/// Which way bytes travel on a replication link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the master to the replica: replies, the RDB payload, the command stream.
    MasterToReplica,
    /// From the replica to the master: the handshake, PSYNC, `REPLCONF ACK`.
    ReplicaToMaster,
}

impl Direction {
    /// Both directions, master→replica first.
    pub const BOTH: [Direction; 2] = [Direction::MasterToReplica, Direction::ReplicaToMaster];

    /// 0 for master→replica, 1 for replica→master: an index for per-direction arrays.
    pub const fn index(self) -> usize {
        match self {
            Direction::MasterToReplica => 0,
            Direction::ReplicaToMaster => 1,
        }
    }

    /// The label value used in metrics and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::MasterToReplica => "master_to_replica",
            Direction::ReplicaToMaster => "replica_to_master",
        }
    }
}

/// A 40-character replication id, as the master announces it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplId([u8; 40]);

impl ReplId {
    /// Takes exactly 40 bytes of `[0-9a-zA-Z]`; anything else is not a replication id.
    pub fn parse(bytes: &[u8]) -> Option<ReplId> {
        let arr: [u8; 40] = bytes.try_into().ok()?;
        arr.iter().all(u8::is_ascii_alphanumeric).then_some(ReplId(arr))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored (see `parse`).
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Debug for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ReplId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The replication id a replica asks to continue from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PsyncId {
    /// `PSYNC ? -1`: the replica has no history to resume.
    Unknown,
    /// A real replication id.
    Id(ReplId),
}

/// One option of a `REPLCONF` command (a replica may send several pairs in one command).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplconfOption {
    /// `listening-port <port>`.
    ListeningPort(u16),
    /// `ip-address <ip>` (the replica's `replica-announce-ip`).
    IpAddress(String),
    /// `capa <capability>`.
    Capa(String),
    /// `version <x.y.z>` (Valkey 8+ replicas).
    Version(String),
    /// `ack <offset>`.
    Ack(i64),
    /// `fack <offset>`: the AOF-fsynced offset that follows an ACK.
    Fack(i64),
    /// `getack *`.
    GetAck,
    /// `rdb-only <0|1>`.
    RdbOnly(bool),
    /// `rdb-channel <0|1>`.
    RdbChannel(bool),
    /// `rdb-filter-only <filter>`.
    RdbFilterOnly(String),
    /// `main-ch-client-id <id>` (Redis 8 rdb channel).
    MainChClientId(u64),
    /// `set-rdb-client-id <id>` (Valkey dual-channel main channel).
    SetRdbClientId(u64),
    /// Any other option, by name, or a known option whose value did not parse.
    Other(String),
}

/// A command the replica side sent, as far as replication cares.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaCommand {
    /// `PING`.
    Ping,
    /// `AUTH [user] <password>`: only whether a user name was given, and which. The password is dropped.
    Auth {
        /// The user of the two-argument form.
        user: Option<String>,
    },
    /// `REPLCONF …`, its options in order.
    Replconf(Vec<ReplconfOption>),
    /// `PSYNC <replid|?> <offset> [FAILOVER]`.
    Psync {
        /// The replication id asked for.
        replid: PsyncId,
        /// The first byte the replica still needs (`-1` with `?`).
        offset: i64,
        /// The `FAILOVER` third argument (6.2+).
        failover: bool,
    },
    /// `SYNC`: the legacy full sync (fallback after a refused PSYNC, Valkey's RDB channel, `redis-cli --rdb`).
    Sync,
    /// Any other command, by upper-cased name (at most 32 bytes of it).
    Other(String),
}

/// The code of an error reply (`-CODE message`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// `-NOAUTH`: authentication required.
    Noauth,
    /// `-WRONGPASS`: bad user or password.
    Wrongpass,
    /// `-NOPERM`: the ACL user may not run the command.
    Noperm,
    /// `-LOADING`: the master is loading its dataset.
    Loading,
    /// `-MASTERDOWN`: a chained master lost its own master.
    Masterdown,
    /// `-NOMASTERLINK`: the master cannot serve a sync right now.
    Nomasterlink,
    /// `-ERR`.
    Err,
    /// Another code, as sent (at most 32 bytes).
    Other(String),
}

impl ErrorCode {
    /// Classifies the first word of an error line.
    pub fn from_word(word: &[u8]) -> ErrorCode {
        match word {
            b"NOAUTH" => ErrorCode::Noauth,
            b"WRONGPASS" => ErrorCode::Wrongpass,
            b"NOPERM" => ErrorCode::Noperm,
            b"LOADING" => ErrorCode::Loading,
            b"MASTERDOWN" => ErrorCode::Masterdown,
            b"NOMASTERLINK" => ErrorCode::Nomasterlink,
            b"ERR" => ErrorCode::Err,
            other => ErrorCode::Other(lossy_capped(other, 32)),
        }
    }
}

/// A line the master sent during the handshake.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterReply {
    /// `+PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-CODE message`.
    Error {
        /// The error code.
        code: ErrorCode,
        /// The message after the code (at most 128 bytes; masters never echo a password).
        message: String,
    },
    /// `+FULLRESYNC <replid> <offset>`.
    FullResync {
        /// The master's replication id.
        replid: ReplId,
        /// The offset the RDB corresponds to; the stream continues from here.
        offset: i64,
    },
    /// `+CONTINUE [<replid>]`.
    Continue {
        /// The master's replication id (absent for replicas without `capa psync2`).
        replid: Option<ReplId>,
    },
    /// `+DUALCHANNELSYNC` (Valkey 8+): the RDB will come over a second connection.
    DualChannelSync,
    /// `+RDBCHANNELSYNC <client-id>` (Redis 8): likewise; the id is this main channel's client id.
    RdbChannelSync {
        /// The main channel's client id on the master.
        client_id: u64,
    },
    /// `$ENDOFF:<offset> <replid> <dbid> <client-id>` (Valkey RDB channel).
    EndOffset {
        /// The replication offset the RDB corresponds to.
        offset: i64,
        /// The master's replication id.
        replid: ReplId,
        /// The selected DB of the replication stream (signed: `-1` after a reset).
        dbid: i64,
        /// This RDB channel's client id on the master.
        client_id: u64,
    },
    /// Any other simple-string line (at most 128 bytes).
    Other(String),
}

/// How the RDB payload is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFraming {
    /// `$<len>\r\n` followed by exactly `len` bytes (disk-based sync).
    Sized {
        /// The announced length.
        len: u64,
    },
    /// `$EOF:<40 bytes>\r\n`, the bytes, then the same 40 bytes (diskless sync).
    EofMark,
}

/// Where a decoder was when it gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WirePhase {
    /// Replica commands or handshake replies.
    Handshake,
    /// After `+FULLRESYNC`/`$ENDOFF`/`SYNC`, waiting for the payload preamble.
    AwaitingPayload,
    /// Inside the RDB payload.
    Payload,
    /// The command stream.
    Stream,
}

/// Why a decoder gave up on a direction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DesyncReason {
    /// A byte no frame of this phase can start with.
    #[error("unexpected byte 0x{byte:02x}, expected {expected}")]
    UnexpectedByte {
        /// The byte seen.
        byte: u8,
        /// What the phase allows.
        expected: &'static str,
    },
    /// A line or header longer than the decoder's cap.
    #[error("{what} longer than {limit} bytes")]
    TooLong {
        /// What was being read.
        what: &'static str,
        /// The cap.
        limit: usize,
    },
    /// A length or count that is not a number or is out of range.
    #[error("bad {what} length or count")]
    BadLength {
        /// What was being read.
        what: &'static str,
    },
    /// A line with a known prefix and a malformed body.
    #[error("malformed {what} line")]
    Malformed {
        /// Which line.
        what: &'static str,
    },
    /// Bytes that are not the RESP expected here (a nested array in a command, a bad length, …).
    #[error("invalid RESP: {0}")]
    InvalidResp(crate::wire::resp::RespError),
}

/// Something the decoders understood from the bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// A command from the replica side.
    Command {
        /// The command.
        command: ReplicaCommand,
    },
    /// The connection's first non-replication command came before any `PSYNC`/`SYNC`: a plain client.
    /// Both directions are forwarded without interpretation from here on.
    PlainClient {
        /// The command's upper-cased name.
        first_command: String,
    },
    /// A lone `\n` keepalive (the master's before the payload, the replica's while it loads).
    Newline,
    /// A handshake line from the master.
    Reply {
        /// The line.
        reply: MasterReply,
    },
    /// The payload preamble.
    PayloadStart {
        /// Its framing.
        framing: PayloadFraming,
    },
    /// The RDB header and AUX fields, from the first bytes of the payload.
    RdbHeader {
        /// What was read.
        header: RdbHeader,
    },
    /// The payload does not start like an RDB (e.g. a compressed `VCS` envelope). It is still forwarded.
    NotRdb {
        /// Up to the first 9 bytes, hex.
        prefix: String,
    },
    /// The payload is complete.
    PayloadEnd {
        /// Payload bytes (without preamble or EOF marks).
        bytes: u64,
        /// The trailer check.
        trailer: TrailerCheck,
    },
    /// The complete commands of the replication stream in one read, tallied (one event per read, however
    /// many commands: what each one was is not kept).
    Stream(StreamTally),
    /// The decoder could not follow this direction any more; its bytes are still counted.
    Desync {
        /// The byte position in that direction where it happened.
        offset: u64,
        /// What the decoder was reading.
        phase: WirePhase,
        /// Why.
        reason: DesyncReason,
    },
}

/// An event with its direction and time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WireEvent {
    /// The direction whose bytes produced it.
    pub direction: Direction,
    /// The time passed with those bytes.
    pub at: Timestamp,
    /// What happened.
    pub event: Event,
}

/// Where decoders put what they find: a plain `Vec<Event>` (tests), or a [`Tagged`] sink that stamps each
/// event with its direction and time as it is pushed, so nothing is copied twice on the hot path.
pub trait EventSink {
    /// Takes one event.
    fn push(&mut self, event: Event);
}

impl EventSink for Vec<Event> {
    fn push(&mut self, event: Event) {
        Vec::push(self, event);
    }
}

/// Pushes events, stamped with a direction and a time, onto a `Vec<WireEvent>`.
pub struct Tagged<'a> {
    /// Where they go.
    pub out: &'a mut Vec<WireEvent>,
    /// Their direction.
    pub direction: Direction,
    /// Their time.
    pub at: Timestamp,
}

impl EventSink for Tagged<'_> {
    fn push(&mut self, event: Event) {
        self.out.push(WireEvent { direction: self.direction, at: self.at, event });
    }
}

/// At most `cap` bytes of `bytes` as text, invalid UTF-8 replaced.
pub(crate) fn lossy_capped(bytes: &[u8], cap: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(cap)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replid_accepts_exactly_forty_alphanumerics() {
        let id = b"09d28de1ae71e53e48e7cf7ca8a56489b9f31503";
        assert_eq!(
            ReplId::parse(id).map(|r| r.to_string()).as_deref(),
            Some(&id.map(char::from).iter().collect::<String>()[..])
        );
        assert!(ReplId::parse(&id[..39]).is_none());
        assert!(ReplId::parse(b"09d28de1ae71e53e48e7cf7ca8a56489b9f3150 ").is_none());
    }

    #[test]
    fn error_codes_are_classified() {
        assert_eq!(ErrorCode::from_word(b"WRONGPASS"), ErrorCode::Wrongpass);
        assert_eq!(ErrorCode::from_word(b"BUSY"), ErrorCode::Other("BUSY".into()));
    }
}
