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
    /// Milliseconds from `+CONTINUE` to the close.
    pub after_ms: u64,
    /// The largest stream command it carried or was cutting at the close, in bytes.
    pub largest_command_bytes: u64,
}

/// Failed attempts of one kind in a row, and the loop they make: at most [`ATTEMPTS_KEPT`], oldest first,
/// none older than the window before the newest.
#[derive(Clone, Debug)]
pub struct Row<T> {
    /// When each attempt ended, and what it was.
    pub attempts: VecDeque<(Timestamp, T)>,
    /// Whether they make a loop now.
    pub in_loop: bool,
    /// When the loop was first seen.
    pub since: Option<Timestamp>,
    window: Duration,
}

impl<T> Row<T> {
    fn new(window: Duration) -> Self {
        Row { attempts: VecDeque::new(), in_loop: false, since: None, window }
    }

    /// One more attempt that ended at `at`: whether it started a loop.
    fn push(&mut self, at: Timestamp, attempt: T) -> Option<LoopChange> {
        self.attempts.push_back((at, attempt));
        while self.attempts.len() > ATTEMPTS_KEPT
            || self.attempts.front().is_some_and(|(t, _)| at.since(*t) > self.window)
        {
            self.attempts.pop_front();
        }
        if !self.in_loop && self.attempts.len() >= LOOP_ATTEMPTS {
            self.in_loop = true;
            self.since = Some(at);
            return Some(LoopChange::Entered);
        }
        None
    }

    /// Forgets the attempts and the loop: whether a loop cleared.
    fn clear(&mut self) -> Option<LoopChange> {
        let was = self.in_loop;
        self.attempts.clear();
        (self.in_loop, self.since) = (false, None);
        was.then_some(LoopChange::Cleared)
    }

    /// The time the attempts span.
    pub fn span(&self) -> Duration {
        match (self.attempts.front(), self.attempts.back()) {
            (Some((a, _)), Some((b, _))) => b.since(*a),
            _ => Duration::ZERO,
        }
    }
}

/// One replica's record.
#[derive(Clone, Debug)]
pub struct ReplicaHistory {
    /// Failed full syncs in a row, with why each ended.
    pub full: Row<Cause>,
    /// Partial resyncs in a row the master dropped.
    pub partial: Row<PartialDrop>,
    /// When it last had an open link (`None` while one is open).
    last_open: Option<Timestamp>,
}

impl Default for ReplicaHistory {
    fn default() -> Self {
        ReplicaHistory { full: Row::new(LOOP_WINDOW), partial: Row::new(PARTIAL_LOOP_WINDOW), last_open: None }
    }
}

impl ReplicaHistory {
    /// The cause most of the failed full syncs share.
    pub fn dominant_cause(&self) -> Option<Cause> {
        let mut counts: HashMap<Cause, usize> = HashMap::new();
        for (_, c) in &self.full.attempts {
            *counts.entry(*c).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(c, n)| (*n, Cause::ALL.iter().position(|x| x == c).map_or(0, |p| usize::MAX - p)))
            .map(|(c, _)| c)
    }

    /// Whether it is in the loop of this kind.
    pub fn in_loop_of(&self, kind: LoopKind) -> bool {
        match kind {
            LoopKind::Full => self.full.in_loop,
            LoopKind::Partial => self.partial.in_loop,
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
    /// A full sync of `replica` failed at `at`, for `cause`.
    pub fn full_sync_failed(&mut self, replica: &str, at: Timestamp, cause: Cause) -> Option<LoopChange> {
        self.by_replica.entry(replica.to_string()).or_default().full.push(at, cause)
    }

    /// The master dropped a partial resync of `replica` at `at`, soon after accepting it.
    pub fn partial_dropped(&mut self, replica: &str, at: Timestamp, drop: PartialDrop) -> Option<LoopChange> {
        self.by_replica.entry(replica.to_string()).or_default().partial.push(at, drop)
    }

    /// A link of `replica` that was not a dropped partial resync ended: the partial row is broken (a loop
    /// already seen stays until a sync streams long enough).
    pub fn partial_row_broken(&mut self, replica: &str) {
        if let Some(h) = self.by_replica.get_mut(replica) {
            h.partial.attempts.clear();
        }
    }

    /// `replica` has been streaming since `since`; at `now`, a long enough stream clears its record.
    /// Returns the loops that cleared.
    pub fn streaming(&mut self, replica: &str, since: Timestamp, now: Timestamp) -> Vec<(LoopKind, LoopChange)> {
        let Some(h) = self.by_replica.get_mut(replica) else { return Vec::new() };
        if now.since(since) < LOOP_CLEARS_AFTER {
            return Vec::new();
        }
        let full = h.full.clear().map(|c| (LoopKind::Full, c));
        let partial = h.partial.clear().map(|c| (LoopKind::Partial, c));
        full.into_iter().chain(partial).collect()
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
        assert_eq!(
            (rec.dominant_cause(), rec.full.span()),
            (Some(Cause::OutputBufferLimit), Duration::from_secs(11 * 60))
        );
        assert_eq!(h.streaming("r:1", min(12), min(12)), vec![], "not streaming long enough yet");
        assert_eq!(h.streaming("r:1", min(12), min(13)), vec![(LoopKind::Full, LoopChange::Cleared)]);
        assert!(h.get("r:1").is_some_and(|r| !r.full.in_loop && r.full.attempts.is_empty()));
    }

    #[test]
    fn failures_far_apart_are_no_loop() {
        let mut h = Histories::default();
        for m in [0, 40, 80, 120] {
            assert_eq!(h.full_sync_failed("r:1", min(m), Cause::OutputBufferLimit), None);
        }
    }

    fn drop_at(h: &mut Histories, m: u64) -> Option<LoopChange> {
        h.partial_dropped("r:1", min(m), PartialDrop { after_ms: 500, largest_command_bytes: 3 << 20 })
    }

    #[test]
    fn three_dropped_partial_resyncs_in_a_row_are_a_partial_loop() {
        let mut h = Histories::default();
        assert_eq!(drop_at(&mut h, 0), None);
        assert_eq!(drop_at(&mut h, 1), None);
        h.partial_row_broken("r:1");
        assert_eq!(drop_at(&mut h, 2), None, "a full sync between breaks the row");
        assert_eq!(drop_at(&mut h, 3), None);
        assert_eq!(drop_at(&mut h, 4), Some(LoopChange::Entered));
        assert!(h.get("r:1").is_some_and(|r| r.partial.in_loop && !r.full.in_loop));
        assert_eq!(h.streaming("r:1", min(5), min(6)), vec![(LoopKind::Partial, LoopChange::Cleared)]);
        let mut h = Histories::default();
        for m in [0, 8, 16] {
            assert_eq!(drop_at(&mut h, m), None, "more than 10 minutes apart");
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
