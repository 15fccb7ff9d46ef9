//! What changed in the model, as typed values. The core says what happened as it happens; observers
//! (metrics, logs) react to these instead of comparing snapshots, and read the link for details.
//! [`Links`](super::Links) collects them; the driver drains them after each update.

use std::time::Duration;

use crate::link::history::LoopChange;
use crate::link::{Cause, FaultType, LinkId, Phase, Side, SyncKind};
use crate::wire::{CommandName, Direction};

/// One change.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A link entered a phase (a new link enters `handshake`).
    PhaseEntered {
        /// The link.
        link: LinkId,
        /// The phase.
        phase: Phase,
    },
    /// Bytes were forwarded.
    Forwarded {
        /// The link.
        link: LinkId,
        /// Which way.
        direction: Direction,
        /// How many.
        bytes: u64,
    },
    /// Stream commands of one name went by (counted per read).
    Commands {
        /// The link.
        link: LinkId,
        /// Their name.
        name: CommandName,
        /// How many.
        count: u64,
    },
    /// Forwarding toward a side waited because it was not reading.
    WriteBlocked {
        /// The link.
        link: LinkId,
        /// The side that was not reading.
        side: Side,
        /// How long.
        duration: Duration,
    },
    /// The master answered the sync request: a full sync or a partial resync (once per link).
    SyncDecided {
        /// The link.
        link: LinkId,
        /// Which.
        kind: SyncKind,
    },
    /// A PSYNC was answered with a full sync; the refusal is on the link.
    Refused {
        /// The link.
        link: LinkId,
    },
    /// The RDB's trailer did not match its bytes.
    ChecksumFailed {
        /// The link.
        link: LinkId,
    },
    /// A decoder gave up on a direction; the desync is on the link.
    Desync {
        /// The link.
        link: LinkId,
        /// Which direction.
        direction: Direction,
    },
    /// The connection ended; the close is on the link.
    Closed {
        /// The link.
        link: LinkId,
    },
    /// A link that closed got its first answer.
    Diagnosed {
        /// The link.
        link: LinkId,
        /// The answer.
        cause: Cause,
    },
    /// A diagnosis settled: its cause is final.
    Settled {
        /// The link.
        link: LinkId,
        /// The final cause.
        cause: Cause,
        /// The first answer.
        first: Cause,
    },
    /// A replica entered or left a replication loop.
    LoopChanged {
        /// The replica endpoint.
        replica: String,
        /// Entered or cleared.
        change: LoopChange,
    },
    /// An injected fault acted on a link.
    FaultActed {
        /// The link.
        link: LinkId,
        /// The fault's id.
        fault: u64,
        /// Its type.
        kind: FaultType,
        /// What it did.
        action: String,
    },
}

impl Change {
    /// The link it is about (`None` for a replica's loop).
    pub fn link(&self) -> Option<LinkId> {
        match self {
            Change::PhaseEntered { link, .. }
            | Change::Forwarded { link, .. }
            | Change::Commands { link, .. }
            | Change::WriteBlocked { link, .. }
            | Change::SyncDecided { link, .. }
            | Change::Refused { link }
            | Change::ChecksumFailed { link }
            | Change::Desync { link, .. }
            | Change::Closed { link }
            | Change::Diagnosed { link, .. }
            | Change::Settled { link, .. }
            | Change::FaultActed { link, .. } => Some(*link),
            Change::LoopChanged { .. } => None,
        }
    }
}
