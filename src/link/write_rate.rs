//! The master's replication write rate, in bytes of replication stream per second, per route.
//!
//! From the stream whenever a link streams: the master offset's progress over the last
//! [`WRITE_RATE_WINDOW`] (measured to `now`, so it falls while the master is idle). Otherwise, from two
//! successive `+FULLRESYNC` offsets with the same replication id and their times (a replica stuck in a
//! full-sync loop never streams, but each attempt's FULLRESYNC tells how far the master has moved).

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Timestamp;
use crate::wire::ReplId;

/// The window of the stream-based rate: long enough to smooth the 1 Hz ACK/PING rhythm, short enough
/// to follow a load that changes.
pub const WRITE_RATE_WINDOW: Duration = Duration::from_secs(10);

/// The shortest span a rate is computed over; shorter spans are noise.
const MIN_SPAN: Duration = Duration::from_millis(500);

/// Estimates the master's write rate.
#[derive(Debug, Default)]
pub struct WriteRate {
    replid: Option<ReplId>,
    /// (time, master offset), at least 100 ms apart, one at or before the window start.
    samples: VecDeque<(Timestamp, i64)>,
    /// The last two FULLRESYNCs: (replid, offset, time).
    fullresyncs: VecDeque<(ReplId, i64, Timestamp)>,
}

impl WriteRate {
    /// No estimate yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn switch_to(&mut self, replid: ReplId) {
        if self.replid != Some(replid) {
            self.replid = Some(replid);
            self.samples.clear();
        }
    }

    /// A streaming link showed the master at `offset` (history `replid`) at `now`.
    pub fn observe_offset(&mut self, replid: ReplId, offset: i64, now: Timestamp) {
        self.switch_to(replid);
        match self.samples.back_mut() {
            Some((t, o)) if now.since(*t) < Duration::from_millis(100) => {
                *o = (*o).max(offset);
                return;
            }
            Some((_, o)) if offset < *o => {
                // Offsets only grow within one history; anything else is a new history.
                self.samples.clear();
            }
            _ => {}
        }
        self.samples.push_back((now, offset));
        while self.samples.get(1).is_some_and(|(t, _)| now.since(*t) >= WRITE_RATE_WINDOW) {
            self.samples.pop_front();
        }
    }

    /// A `+FULLRESYNC <replid> <offset>` (or `$ENDOFF`) arrived at `now`.
    pub fn observe_fullresync(&mut self, replid: ReplId, offset: i64, now: Timestamp) {
        self.fullresyncs.push_back((replid, offset, now));
        while self.fullresyncs.len() > 2 {
            self.fullresyncs.pop_front();
        }
    }

    /// Bytes per second, if known.
    pub fn rate(&self, now: Timestamp) -> Option<f64> {
        if let (Some((t0, o0)), Some((t1, o1))) = (self.samples.front(), self.samples.back())
            && now.since(*t1) < WRITE_RATE_WINDOW
            && now.since(*t0) >= MIN_SPAN
        {
            return Some((o1 - o0).max(0) as f64 / now.since(*t0).as_secs_f64());
        }
        match (self.fullresyncs.front(), self.fullresyncs.back()) {
            (Some((r0, o0, t0)), Some((r1, o1, t1))) if r0 == r1 && t1.since(*t0) >= MIN_SPAN && o1 >= o0 => {
                Some((o1 - o0) as f64 / t1.since(*t0).as_secs_f64())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> ReplId {
        ReplId::parse(c.to_string().repeat(40).as_bytes()).expect("40 chars")
    }

    fn secs(s: f64) -> Timestamp {
        Timestamp::from_secs_f64(s)
    }

    #[test]
    fn from_the_stream_over_the_window_and_falling_when_idle() {
        let mut w = WriteRate::new();
        for i in 0..=200 {
            w.observe_offset(id('a'), 1000 + i * 5_000, secs(i as f64 * 0.1)); // 50 kB/s for 20 s
        }
        let r = w.rate(secs(20.0)).expect("rate");
        assert!((r - 50_000.0).abs() < 600.0, "{r}");
        let idle = w.rate(secs(25.0)).expect("rate");
        assert!(idle < r * 0.7, "5 s of silence lowers it: {idle}");
        assert_eq!(w.rate(secs(40.0)), None, "nothing in the window: no stream rate, no FULLRESYNC pair");
    }

    #[test]
    fn from_successive_fullresyncs_of_one_history() {
        let mut w = WriteRate::new();
        // The example: offsets 2724002738232 and 2724138480914, 38 s apart: 3.57 MB/s.
        w.observe_fullresync(id('a'), 2_724_002_738_232, secs(100.0));
        w.observe_fullresync(id('a'), 2_724_138_480_914, secs(138.0));
        let r = w.rate(secs(140.0)).expect("rate");
        assert!((r - 3_572_175.8).abs() < 1.0, "{r}");
        w.observe_fullresync(id('b'), 10, secs(150.0));
        assert_eq!(w.rate(secs(151.0)), None, "a new history has no pair yet");
    }

    #[test]
    fn a_new_history_restarts_the_stream_estimate() {
        let mut w = WriteRate::new();
        w.observe_offset(id('a'), 1_000_000, secs(0.0));
        w.observe_offset(id('a'), 2_000_000, secs(5.0));
        w.observe_offset(id('b'), 100, secs(5.5));
        w.observe_offset(id('b'), 10_100, secs(6.5));
        let r = w.rate(secs(6.5)).expect("rate");
        assert!((r - 10_000.0).abs() < 1.0, "{r}");
    }
}
