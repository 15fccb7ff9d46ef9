//! `wire`: understands a replication link from its bytes alone.
//!
//! Sans-IO: a [`Decoder`] is fed `(direction, bytes, now)` for one TCP connection, in slices of any size,
//! and produces [`WireEvent`]s. The same bytes give the same events whatever the split. It never fails and
//! never stops the caller forwarding: bytes it cannot follow produce one [`Event::Desync`] and that
//! direction becomes opaque (still counted). Memory is bounded: lines and replica commands are capped,
//! payload and stream bytes are looked at in place and never kept.

pub mod command;
pub mod event;
pub mod line;
pub mod names;
pub mod payload;
pub mod rdb;
pub mod reply;
pub mod resp;
pub mod stream;

pub use event::{
    DesyncReason, Direction, ErrorCode, Event, EventSink, MasterReply, PayloadFraming, PsyncId, ReplId, ReplconfOption,
    ReplicaCommand, Tagged, WireEvent, WirePhase,
};
pub use names::CommandName;
pub use rdb::{RdbAux, RdbHeader, RdbMagic, TrailerCheck};
pub use stream::StreamTally;

use crate::time::Timestamp;
use command::CommandDecoder;
use reply::{ReplicaContext, ReplyDecoder};

/// Encodes a command as a RESP array of bulk strings (what replicas and masters send): for tests, demos
/// and tools that speak to servers.
pub fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

/// Decodes both directions of one TCP connection.
#[derive(Debug, Default)]
pub struct Decoder {
    commands: CommandDecoder,
    replies: ReplyDecoder,
    psync_offset: Option<i64>,
    bytes: [u64; 2],
}

impl Decoder {
    /// A decoder for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of one direction, received at `at`, appending events to `out`.
    pub fn feed(&mut self, direction: Direction, bytes: &[u8], at: Timestamp, out: &mut Vec<WireEvent>) {
        self.bytes[direction.index()] += bytes.len() as u64;
        let first = out.len();
        match direction {
            Direction::ReplicaToMaster => {
                self.commands.feed(bytes, &mut Tagged { out: &mut *out, direction, at });
                for e in &out[first..] {
                    if let Event::Command { command: ReplicaCommand::Psync { offset, .. } } = &e.event {
                        self.psync_offset = Some(*offset);
                    }
                }
            }
            Direction::MasterToReplica => {
                let ctx =
                    ReplicaContext { psync_offset: self.psync_offset, plain_client: self.commands.is_plain_client() };
                self.replies.feed(bytes, ctx, &mut Tagged { out, direction, at });
            }
        }
    }

    /// Bytes seen in a direction.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.bytes[direction.index()]
    }

    /// The payload being received, if any: its framing and bytes so far.
    pub fn payload_progress(&self) -> Option<(PayloadFraming, u64)> {
        self.replies.payload_progress()
    }

    /// Once streaming: stream bytes counted (complete commands) and bytes of a trailing partial command.
    pub fn stream_progress(&self) -> Option<(u64, u64)> {
        self.replies.stream_progress()
    }

    /// An incomplete stream command the master is in the middle of sending: the least it will measure and
    /// the bytes of it so far ((0, 0) if none).
    pub fn stream_pending(&self) -> (u64, u64) {
        self.replies.stream_pending()
    }

    /// Whether the decoder gave up on a direction.
    pub fn is_opaque(&self, direction: Direction) -> bool {
        match direction {
            Direction::ReplicaToMaster => self.commands.is_opaque(),
            Direction::MasterToReplica => self.replies.is_opaque(),
        }
    }

    /// Whether the connection is a plain client (forwarded, not interpreted).
    pub fn is_plain_client(&self) -> bool {
        self.commands.is_plain_client()
    }
}
