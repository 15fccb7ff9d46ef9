//! Per-replica history across reconnects: the syncs that failed, whether the replica is in a replication
//! loop, and when it last had an open link.
//!
//! Two loops, the same outage class:
//! - full: [`LOOP_ATTEMPTS`] consecutive full syncs within [`LOOP_WINDOW`] that failed: ended before
//!   streaming, or before streaming for [`LOOP_CLEARS_AFTER`] ([`crate::link::Link::failed_full_sync`]);
//! - partial: [`LOOP_ATTEMPTS`] consecutive `+CONTINUE` links within [`PARTIAL_LOOP_WINDOW`] that the master
//!   closed within [`PARTIAL_DROP_WITHIN`] of accepting them (the backlog it resends overflows the
//!   replica's output buffer, again and again).
//!
//! Either clears once a sync has streamed for [`LOOP_CLEARS_AFTER`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::link::cause::Cause;
use crate::time::Timestamp;

/// Failed syncs in a row that make a loop: one failure is an incident, two a coincidence, three a
/// pattern that will not stop by itself.
pub const LOOP_ATTEMPTS: usize = 3;
/// Within this long: a full-sync loop's attempts follow each other at the pace of the RDB transfer
/// (minutes).
pub const LOOP_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Within this long: a partial-resync loop's attempts follow each other within seconds.
pub const PARTIAL_LOOP_WINDOW: Duration = Duration::from_secs(10 * 60);
/// A `+CONTINUE` link the master closes within this long of accepting it counts toward a partial loop.
pub const PARTIAL_DROP_WITHIN: Duration = Duration::from_secs(60);
/// The most attempts a record keeps of each kind (the newest): enough to show the pattern.
pub const ATTEMPTS_KEPT: usize = 16;
/// Streaming this long means the replica made it through (past any output-buffer soft-limit window).
pub const LOOP_CLEARS_AFTER: Duration = Duration::from_secs(60);

crate::labelled! {
    /// Which loop.
    pub enum LoopKind {
        /// Full syncs that fail before streaming.
        Full => "full",
        /// Partial resyncs the master accepts, then drops.
        Partial => "partial",
    }
}

/// A partial resync the master dropped soon after accepting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartialDrop {
    /// When the master closed it.
    pub at: Timestamp,
    /// Milliseconds from `+CONTINUE` to the close.
    pub after_ms: u64,
    /// The largest stream command it carried or was cutting at the close, in bytes.
    pub largest_command_bytes: u64,
}

/// One replica's record.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReplicaHistory {
    /// Consecutive failed full syncs, oldest first: when each ended and why.
    pub failed_full_syncs: VecDeque<(Timestamp, Cause)>,
    /// Whether the replica is in a full-sync loop now.
    pub in_loop: bool,
    /// When the full-sync loop was first seen.
    pub loop_since: Option<Timestamp>,
    /// Consecutive partial resyncs the master dropped, oldest first.
    pub partial_drops: VecDeque<PartialDrop>,
    /// Whether the replica is in a partial-resync loop now.
    pub in_partial_loop: bool,
    /// When the partial-resync loop was first seen.
    pub partial_loop_since: Option<Timestamp>,
    /// When it last had an open link (`None` while one is open).
    #[serde(skip)]
    last_open: Option<Timestamp>,
}

impl ReplicaHistory {
    /// The cause most of the failures share.
    pub fn dominant_cause(&self) -> Option<Cause> {
        let mut counts: HashMap<Cause, usize> = HashMap::new();
        for (_, c) in &self.failed_full_syncs {
            *counts.entry(*c).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(c, n)| (*n, Cause::ALL.iter().position(|x| x == c).map_or(0, |p| usize::MAX - p)))
            .map(|(c, _)| c)
    }

    /// The time the consecutive full-sync failures span.
    pub fn span(&self) -> Duration {
        match (self.failed_full_syncs.front(), self.failed_full_syncs.back()) {
            (Some((a, _)), Some((b, _))) => b.since(*a),
            _ => Duration::ZERO,
        }
    }

    /// The time the consecutive dropped partial resyncs span.
    pub fn partial_span(&self) -> Duration {
        match (self.partial_drops.front(), self.partial_drops.back()) {
            (Some(a), Some(b)) => b.at.since(a.at),
            _ => Duration::ZERO,
        }
    }

    /// Whether it is in the loop of this kind.
    pub fn in_loop_of(&self, kind: LoopKind) -> bool {
        match kind {
            LoopKind::Full => self.in_loop,
            LoopKind::Partial => self.in_partial_loop,
        }
    }
}

/// What changed in a replica's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopChange {
    /// The replica entered a loop.
    Entered,
    /// The loop cleared.
    Cleared,
}

/// The records of a route's replicas.
#[derive(Debug, Default)]
pub struct Histories {
    by_replica: HashMap<String, ReplicaHistory>,
}

impl Histories {
    /// A full sync of `replica` ended at `at` before streaming, for `cause`.
    pub fn full_sync_failed(&mut self, replica: &str, at: Timestamp, cause: Cause) -> Option<LoopChange> {
        let h = self.by_replica.entry(replica.to_string()).or_default();
        h.failed_full_syncs.push_back((at, cause));
        while h.failed_full_syncs.len() > ATTEMPTS_KEPT
            || h.failed_full_syncs.front().is_some_and(|(t, _)| at.since(*t) > LOOP_WINDOW)
        {
            h.failed_full_syncs.pop_front();
        }
        if !h.in_loop && h.failed_full_syncs.len() >= LOOP_ATTEMPTS {
            h.in_loop = true;
            h.loop_since = Some(at);
            return Some(LoopChange::Entered);
        }
        None
    }

    /// The master dropped a partial resync of `replica` soon after accepting it.
    pub fn partial_dropped(&mut self, replica: &str, drop: PartialDrop) -> Option<LoopChange> {
        let h = self.by_replica.entry(replica.to_string()).or_default();
        h.partial_drops.push_back(drop);
        while h.partial_drops.len() > ATTEMPTS_KEPT
            || h.partial_drops.front().is_some_and(|d| drop.at.since(d.at) > PARTIAL_LOOP_WINDOW)
        {
            h.partial_drops.pop_front();
        }
        if !h.in_partial_loop && h.partial_drops.len() >= LOOP_ATTEMPTS {
            h.in_partial_loop = true;
            h.partial_loop_since = Some(drop.at);
            return Some(LoopChange::Entered);
        }
        None
    }

    /// A link of `replica` that was not a dropped partial resync ended: the partial row is broken (a loop
    /// already seen stays until a sync streams long enough).
    pub fn partial_row_broken(&mut self, replica: &str) {
        if let Some(h) = self.by_replica.get_mut(replica) {
            h.partial_drops.clear();
        }
    }

    /// `replica` has been streaming since `since`; at `now`, a long enough stream clears its record.
    /// Returns the loops that cleared.
    pub fn streaming(&mut self, replica: &str, since: Timestamp, now: Timestamp) -> Vec<(LoopKind, LoopChange)> {
        let Some(h) = self.by_replica.get_mut(replica) else { return Vec::new() };
        if now.since(since) < LOOP_CLEARS_AFTER {
            return Vec::new();
        }
        let mut cleared = Vec::new();
        if h.in_loop {
            cleared.push((LoopKind::Full, LoopChange::Cleared));
        }
        if h.in_partial_loop {
            cleared.push((LoopKind::Partial, LoopChange::Cleared));
        }
        h.failed_full_syncs.clear();
        h.partial_drops.clear();
        (h.in_loop, h.loop_since, h.in_partial_loop, h.partial_loop_since) = (false, None, false, None);
        cleared
    }

    /// Whether `replica` has an open link now (`at`): a record forgets nothing while it does.
    pub fn seen(&mut self, replica: &str, open: bool, at: Timestamp) {
        let h = self.by_replica.entry(replica.to_string()).or_default();
        match (open, h.last_open) {
            (true, _) => h.last_open = None,
            (false, None) => h.last_open = Some(at),
            (false, Some(_)) => {}
        }
    }

    /// Drops the records of replicas with no open link since `forget_after` before `now`; returns them.
    pub fn forget(&mut self, now: Timestamp, forget_after: Duration) -> Vec<String> {
        let gone: Vec<String> = self
            .by_replica
            .iter()
            .filter(|(_, h)| h.last_open.is_some_and(|t| now.since(t) >= forget_after))
            .map(|(r, _)| r.clone())
            .collect();
        for r in &gone {
            self.by_replica.remove(r);
        }
        gone
    }

    /// A replica's record.
    pub fn get(&self, replica: &str) -> Option<&ReplicaHistory> {
        self.by_replica.get(replica)
    }

    /// Every record.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ReplicaHistory)> {
        self.by_replica.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min(m: u64) -> Timestamp {
        Timestamp::from_micros(m * 60_000_000)
    }

    #[test]
    fn three_failures_in_half_an_hour_are_a_loop_and_a_long_stream_clears_it() {
        let mut h = Histories::default();
        assert_eq!(h.full_sync_failed("r:1", min(0), Cause::OutputBufferLimit), None);
        assert_eq!(h.full_sync_failed("r:1", min(5), Cause::OutputBufferLimit), None);
        assert_eq!(h.full_sync_failed("r:1", min(11), Cause::MasterTimeout), Some(LoopChange::Entered));
        let rec = h.get("r:1").expect("record");
        assert_eq!((rec.dominant_cause(), rec.span()), (Some(Cause::OutputBufferLimit), Duration::from_secs(11 * 60)));
        assert_eq!(h.streaming("r:1", min(12), min(12)), vec![], "not streaming long enough yet");
        assert_eq!(h.streaming("r:1", min(12), min(13)), vec![(LoopKind::Full, LoopChange::Cleared)]);
        assert!(h.get("r:1").is_some_and(|r| !r.in_loop && r.failed_full_syncs.is_empty()));
    }

    #[test]
    fn failures_far_apart_are_no_loop() {
        let mut h = Histories::default();
        for m in [0, 40, 80, 120] {
            assert_eq!(h.full_sync_failed("r:1", min(m), Cause::OutputBufferLimit), None);
        }
    }

    fn drop_at(m: u64) -> PartialDrop {
        PartialDrop { at: min(m), after_ms: 500, largest_command_bytes: 3 << 20 }
    }

    #[test]
    fn three_dropped_partial_resyncs_in_a_row_are_a_partial_loop() {
        let mut h = Histories::default();
        assert_eq!(h.partial_dropped("r:1", drop_at(0)), None);
        assert_eq!(h.partial_dropped("r:1", drop_at(1)), None);
        h.partial_row_broken("r:1");
        assert_eq!(h.partial_dropped("r:1", drop_at(2)), None, "a full sync between breaks the row");
        assert_eq!(h.partial_dropped("r:1", drop_at(3)), None);
        assert_eq!(h.partial_dropped("r:1", drop_at(4)), Some(LoopChange::Entered));
        assert!(h.get("r:1").is_some_and(|r| r.in_partial_loop && !r.in_loop));
        assert_eq!(h.streaming("r:1", min(5), min(6)), vec![(LoopKind::Partial, LoopChange::Cleared)]);
        let mut h = Histories::default();
        for m in [0, 8, 16] {
            assert_eq!(h.partial_dropped("r:1", drop_at(m)), None, "more than 10 minutes apart");
        }
    }

    #[test]
    fn a_replica_is_forgotten_only_after_its_last_link_closed_long_enough_ago() {
        let mut h = Histories::default();
        h.seen("r:1", true, min(0));
        h.full_sync_failed("r:1", min(0), Cause::OutputBufferLimit);
        assert!(h.forget(min(30), Duration::from_secs(600)).is_empty(), "an open link keeps it");
        h.seen("r:1", false, min(31));
        h.seen("r:1", false, min(35));
        assert!(h.forget(min(40), Duration::from_secs(600)).is_empty(), "closed 9 minutes ago");
        assert_eq!(h.forget(min(41), Duration::from_secs(600)), vec!["r:1".to_string()]);
        assert!(h.get("r:1").is_none());
    }
}
