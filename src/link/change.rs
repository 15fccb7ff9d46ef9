//! What changed in the model, as typed values. The core says what happened as it happens; observers
//! (metrics, logs) react to these instead of comparing snapshots, and read the link for details.
//! [`Links`](super::Links) collects them; the driver drains them after each update.

use std::time::Duration;

use crate::link::history::{LoopChange, LoopKind};
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
    /// A two-channel sync's replica stopped reading its main channel before the RDB was through
    /// ([`Link::replica_buffer_full`](crate::link::Link::replica_buffer_full); once per link).
    ReplicaBufferFull {
        /// The link.
        link: LinkId,
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
        /// Which loop.
        kind: LoopKind,
        /// Entered or cleared.
        change: LoopChange,
    },
    /// A replica had no open link for the route's forget-after: its record is gone, and with it every
    /// series that names it.
    ReplicaForgotten {
        /// The replica endpoint.
        replica: String,
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
    /// Asking the master about itself failed (introspection).
    IntrospectionFailed {
        /// Why.
        failure: crate::introspect::Failure,
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
            | Change::ReplicaBufferFull { link }
            | Change::SyncDecided { link, .. }
            | Change::Refused { link }
            | Change::ChecksumFailed { link }
            | Change::Desync { link, .. }
            | Change::Closed { link }
            | Change::Diagnosed { link, .. }
            | Change::Settled { link, .. }
            | Change::FaultActed { link, .. } => Some(*link),
            Change::LoopChanged { .. } | Change::ReplicaForgotten { .. } | Change::IntrospectionFailed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{CloseHow, ClosedBy, Fed, TransportEvent};
    use crate::time::Timestamp;
    use crate::wire::encode_command as resp;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    /// Everything a replica's failed full sync changes, in order, each said once.
    #[test]
    fn a_killed_full_sync_says_each_step_once_in_order() {
        let mut fed = Fed::new();
        let mut all = Vec::new();
        let id = fed.open(Some([10, 0, 0, 2].into()), ms(0));
        all.extend(fed.drain_changes());
        let r2m = Direction::ReplicaToMaster;
        let m2r = Direction::MasterToReplica;
        let steps: [(Direction, Vec<u8>, u64); 5] = [
            (r2m, resp(&["REPLCONF", "listening-port", "6390"]), 0),
            (m2r, b"+OK\r\n".to_vec(), 1),
            (r2m, resp(&["PSYNC", "8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39", "7"]), 2),
            (m2r, b"+FULLRESYNC 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 100\r\n$1000\r\nREDIS0011".to_vec(), 3),
            (m2r, vec![0u8; 500], 500),
        ];
        for (dir, bytes, at) in steps {
            fed.on_bytes(id, dir, &bytes, ms(at));
            all.extend(fed.last_changes().iter().cloned());
        }
        fed.on_transport(id, TransportEvent::Closed { by: ClosedBy::Master, how: CloseHow::Fin }, ms(1000));
        all.extend(fed.last_changes().iter().cloned());
        fed.diagnose(ms(1000));
        all.extend(fed.last_changes().iter().cloned());
        fed.diagnose(ms(12_000));
        all.extend(fed.last_changes().iter().cloned());

        let story: Vec<&Change> = all.iter().filter(|c| !matches!(c, Change::Forwarded { .. })).collect();
        assert_eq!(
            story,
            [
                &Change::PhaseEntered { link: id, phase: Phase::Handshake },
                &Change::SyncDecided { link: id, kind: SyncKind::Full },
                &Change::Refused { link: id },
                &Change::PhaseEntered { link: id, phase: Phase::WaitingBgsave },
                &Change::PhaseEntered { link: id, phase: Phase::RdbTransfer },
                &Change::PhaseEntered { link: id, phase: Phase::Closed },
                &Change::Closed { link: id },
                &Change::Diagnosed { link: id, cause: Cause::OutputBufferLimit },
                &Change::Settled { link: id, cause: Cause::OutputBufferLimit, first: Cause::OutputBufferLimit },
            ]
        );
        // Every byte forwarded is said once, in the read that carried it.
        let forwarded: u64 =
            all.iter().filter_map(|c| if let Change::Forwarded { bytes, .. } = c { Some(*bytes) } else { None }).sum();
        let link = fed.get(id).expect("link");
        assert_eq!(forwarded, link.traffic[0].bytes + link.traffic[1].bytes);
        assert!(forwarded > 500);
    }
}
