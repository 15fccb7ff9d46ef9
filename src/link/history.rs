//! Per-replica history across reconnects: the full syncs that failed before streaming, and whether the
//! replica is in a replication loop.
//!
//! A loop: [`LOOP_ATTEMPTS`] consecutive full syncs within [`LOOP_WINDOW`] that ended before streaming.
//! It clears once a sync has streamed for [`LOOP_CLEARS_AFTER`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::link::cause::Cause;
use crate::time::Timestamp;

/// Failed full syncs in a row that make a loop: one failure is an incident, two a coincidence, three a
/// pattern that will not stop by itself.
pub const LOOP_ATTEMPTS: usize = 3;
/// Within this long: a loop's attempts follow each other at the pace of the RDB transfer (minutes).
pub const LOOP_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Streaming this long means the replica made it through (past any output-buffer soft-limit window).
pub const LOOP_CLEARS_AFTER: Duration = Duration::from_secs(60);

/// One replica's record.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReplicaHistory {
    /// Consecutive failed full syncs, oldest first: when each ended and why.
    pub failed_full_syncs: VecDeque<(Timestamp, Cause)>,
    /// Whether the replica is in a replication loop now.
    pub in_loop: bool,
    /// When the loop was first seen.
    pub loop_since: Option<Timestamp>,
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

    /// Minutes the consecutive failures span.
    pub fn span(&self) -> Duration {
        match (self.failed_full_syncs.front(), self.failed_full_syncs.back()) {
            (Some((a, _)), Some((b, _))) => b.since(*a),
            _ => Duration::ZERO,
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
        while h.failed_full_syncs.front().is_some_and(|(t, _)| at.since(*t) > LOOP_WINDOW) {
            h.failed_full_syncs.pop_front();
        }
        if !h.in_loop && h.failed_full_syncs.len() >= LOOP_ATTEMPTS {
            h.in_loop = true;
            h.loop_since = Some(at);
            return Some(LoopChange::Entered);
        }
        None
    }

    /// `replica` has been streaming since `since`; at `now`, a long enough stream clears its record.
    pub fn streaming(&mut self, replica: &str, since: Timestamp, now: Timestamp) -> Option<LoopChange> {
        let h = self.by_replica.get_mut(replica)?;
        if now.since(since) < LOOP_CLEARS_AFTER || h.failed_full_syncs.is_empty() && !h.in_loop {
            return None;
        }
        let was = h.in_loop;
        h.failed_full_syncs.clear();
        h.in_loop = false;
        h.loop_since = None;
        was.then_some(LoopChange::Cleared)
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
        assert_eq!(h.streaming("r:1", min(12), min(12)), None, "not streaming long enough yet");
        assert_eq!(h.streaming("r:1", min(12), min(13)), Some(LoopChange::Cleared));
        assert!(h.get("r:1").is_some_and(|r| !r.in_loop && r.failed_full_syncs.is_empty()));
    }

    #[test]
    fn failures_far_apart_are_no_loop() {
        let mut h = Histories::default();
        for m in [0, 40, 80, 120] {
            assert_eq!(h.full_sync_failed("r:1", min(m), Cause::OutputBufferLimit), None);
        }
    }
}
