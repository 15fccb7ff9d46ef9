//! Why a partial resync was refused: what the replica asked for (`PSYNC <replid> <offset>`) against what
//! the master granted instead (`+FULLRESYNC <replid> <offset>`, or for two-channel syncs the offset from
//! `$ENDOFF` or the RDB channel's `+FULLRESYNC`). PROTOCOL.md §8.

use crate::link::settings::SettingUsed;
use crate::wire::{PsyncId, ReplId};

/// The reason a PSYNC got a full sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Same id and nothing missing, yet refused: the master kept no history to serve from (its backlog
    /// was freed after `repl-backlog-ttl` with no replica attached, and its offset stood still since).
    /// A replica asking `PSYNC ? -1` resumes nothing and is never refused.
    NoHistory,
    /// The master answered with another replication id: it restarted, failed over, or its backlog expired
    /// and was recreated. The gap is meaningless.
    ReplidMismatch,
    /// Same id, but the bytes the replica missed are no longer in the backlog (or there is none).
    OffsetOutOfRange,
    /// Same id, but the replica asked for bytes beyond the master's offset (a failover that lost writes,
    /// or a replica attached to an older BGSAVE).
    ReplicaAhead,
}

impl RefusalReason {
    /// The metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NoHistory => "no_history",
            RefusalReason::ReplidMismatch => "replid_mismatch",
            RefusalReason::OffsetOutOfRange => "offset_out_of_range",
            RefusalReason::ReplicaAhead => "replica_ahead",
        }
    }
}

/// A refused partial resync, with the numbers behind the reason.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PsyncRefusal {
    /// Why.
    pub reason: RefusalReason,
    /// The replication id the replica asked for (`None` for `?`).
    pub asked_replid: Option<ReplId>,
    /// The first byte it asked for.
    pub asked_offset: i64,
    /// The id the master granted the full sync with.
    pub master_replid: ReplId,
    /// The offset of the RDB the master started.
    pub master_offset: i64,
    /// For the same id: `master_offset − (asked_offset − 1)`, the bytes the replica was missing
    /// (negative when it was ahead). An estimate when the master attached the replica to a BGSAVE already
    /// running, or delayed the fork (`repl-diskless-sync-delay`).
    pub gap_bytes: Option<i64>,
    /// For `offset_out_of_range`: the `repl-backlog-size` the gap is judged against, assumed by the
    /// operator or the master version's default (set by the route, which knows both).
    pub backlog: Option<SettingUsed>,
    /// The master's write rate (bytes per second) when it refused, if known: how long a backlog lasts.
    pub write_rate: Option<f64>,
    /// Whether `backlog` can no longer change (stated, or the master's version known).
    #[serde(skip)]
    pub backlog_final: bool,
}

/// Classifies a PSYNC that was answered with a full sync; `None` for `PSYNC ? -1`, a first sync that
/// asked to resume nothing.
pub fn classify(asked: PsyncId, asked_offset: i64, master_replid: ReplId, master_offset: i64) -> Option<PsyncRefusal> {
    let (reason, asked_replid, gap_bytes) = match asked {
        PsyncId::Unknown => return None,
        PsyncId::Id(id) if id != master_replid => (RefusalReason::ReplidMismatch, Some(id), None),
        PsyncId::Id(id) => {
            let gap = master_offset - (asked_offset - 1);
            let reason = match gap {
                ..0 => RefusalReason::ReplicaAhead,
                // Nothing missing and still refused: the master had no backlog to serve from.
                0 => RefusalReason::NoHistory,
                _ => RefusalReason::OffsetOutOfRange,
            };
            (reason, Some(id), Some(gap))
        }
    };
    Some(PsyncRefusal {
        reason,
        asked_replid,
        asked_offset,
        master_replid,
        master_offset,
        gap_bytes,
        backlog: None,
        write_rate: None,
        backlog_final: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> ReplId {
        ReplId::parse(c.to_string().repeat(40).as_bytes()).expect("40 chars")
    }

    #[test]
    fn each_reason_with_its_gap() {
        assert_eq!(classify(PsyncId::Unknown, -1, id('a'), 0), None, "a first sync is no refusal");
        let of = |r: Option<PsyncRefusal>| r.map(|r| (r.reason, r.gap_bytes));
        assert_eq!(of(classify(PsyncId::Id(id('b')), 100, id('a'), 5000)), Some((RefusalReason::ReplidMismatch, None)));
        assert_eq!(
            of(classify(PsyncId::Id(id('a')), 72, id('a'), 1_048_647)),
            Some((RefusalReason::OffsetOutOfRange, Some(1_048_576)))
        );
        assert_eq!(
            of(classify(PsyncId::Id(id('a')), 9001, id('a'), 5000)),
            Some((RefusalReason::ReplicaAhead, Some(-4000)))
        );
        assert_eq!(of(classify(PsyncId::Id(id('a')), 5001, id('a'), 5000)), Some((RefusalReason::NoHistory, Some(0))));
    }
}
