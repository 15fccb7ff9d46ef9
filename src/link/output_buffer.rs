//! A replica connection's output buffer on the master, as introspection reads it (`CLIENT LIST`'s `omem`,
//! `obl`, `oll`), and what those readings say when the master closes the link: whether the buffer was at
//! its `client-output-buffer-limit replica` (then the kill is proven, not inferred), or clearly far from
//! it (then it was not the buffer).
//!
//! Readings come every second during a full sync, every 100 ms once the buffer nears its limit
//! ([`Link::introspection_pace`](crate::link::Link::introspection_pace)), so the last one before a kill
//! is at most that old; the buffer's size at the kill is the last reading moved forward at the growth
//! seen between the last two.

use std::time::Duration;

use crate::link::forecast::OutputBufferLimit;
use crate::time::Timestamp;

/// A buffer read at least this share of the hard limit before the close was at the limit: readings come
/// every 100 ms near it, so the last one before the kill is within a tenth of a second of writes of it.
pub const NEAR_HARD: f64 = 0.9;

/// A reading this fresh that shows the buffer below [`FAR_BELOW`] of the hard limit and under the soft
/// one rules the buffer out.
pub const FRESH: Duration = Duration::from_millis(1500);

/// See [`FRESH`].
pub const FAR_BELOW: f64 = 0.25;

/// How far a reading may be moved forward to the close. The proxy may see the close well after the kill
/// (bytes the master sent before it are still being forwarded), so a reading is not moved far.
const PROJECT_AT_MOST: Duration = Duration::from_secs(1);

/// Slack on the soft limit's seconds: the server counts them on its 1 Hz clock.
const SOFT_SLACK: Duration = Duration::from_secs(1);

/// One reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BufferSample {
    /// When it was read.
    pub at: Timestamp,
    /// `omem`: bytes queued for the replica.
    pub omem: u64,
    /// `obl`: bytes in the fixed reply buffer.
    pub obl: u64,
    /// `oll`: entries in the reply list (7.0+: with the shared replication blocks referenced).
    pub oll: u64,
}

/// What the master said about this connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MasterView {
    /// The master's client id for this connection.
    pub client_id: Option<u64>,
    /// The first reading.
    pub first: Option<BufferSample>,
    /// The last reading.
    pub last: Option<BufferSample>,
    /// The one before it.
    #[serde(skip)]
    pub previous: Option<BufferSample>,
    /// The largest reading.
    pub peak: Option<BufferSample>,
    /// Since when the readings have been above the soft limit in force.
    pub over_soft_since: Option<Timestamp>,
    /// How many readings.
    pub readings: u64,
    /// `INFO replication`'s state for this replica (`wait_bgsave`, `send_bulk`, `online`, …).
    pub state: Option<String>,
    /// The first reading that no longer listed the connection while the proxy still held it open: the
    /// master had dropped it by then (the proxy may see the close later, while it still forwards what
    /// the master sent before).
    pub gone_at: Option<Timestamp>,
}

impl MasterView {
    /// Takes a reading; `soft` is the soft limit in force (0: none).
    pub fn record(&mut self, client_id: u64, sample: BufferSample, soft: u64) {
        if self.last.is_some_and(|l| l.at >= sample.at) {
            return;
        }
        self.client_id = Some(client_id);
        self.first.get_or_insert(sample);
        self.previous = self.last.replace(sample);
        if self.peak.is_none_or(|p| sample.omem > p.omem) {
            self.peak = Some(sample);
        }
        self.over_soft_since = match (soft > 0 && sample.omem > soft, self.over_soft_since) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(sample.at),
            (false, _) => None,
        };
        self.readings += 1;
    }

    /// How fast the buffer grew between the last two readings, bytes per second (0 if it shrank).
    pub fn growth(&self) -> Option<f64> {
        let (a, b) = (self.previous?, self.last?);
        let dt = b.at.since(a.at).as_secs_f64();
        (dt > 0.0).then(|| (b.omem as f64 - a.omem as f64).max(0.0) / dt)
    }

    /// How fast the buffer grew from the first reading to the last, bytes per second: the pile-up rate
    /// the master itself measures (needs readings at least a second apart).
    pub fn average_growth(&self) -> Option<f64> {
        let (a, b) = (self.first?, self.last?);
        let dt = b.at.since(a.at).as_secs_f64();
        (dt >= 1.0).then(|| (b.omem as f64 - a.omem as f64).max(0.0) / dt)
    }

    /// The buffer's size at `at`, from the last reading and the growth (moved forward at most 1 s).
    pub fn projected(&self, at: Timestamp) -> Option<f64> {
        let last = self.last?;
        let dt = at.since(last.at).min(PROJECT_AT_MOST).as_secs_f64();
        Some(last.omem as f64 + self.growth().unwrap_or(0.0) * dt)
    }

    /// A reading at `at` did not list the connection.
    pub fn missing(&mut self, at: Timestamp) {
        if self.last.is_some_and(|l| l.at < at) {
            self.gone_at.get_or_insert(at);
        }
    }

    /// What the readings say about a master close that reached the proxy at `closed_at`, against `limit`
    /// (as the master applies it) written `limit_words`; `None` without a reading. The buffer is judged
    /// when the master dropped the connection, if a reading showed it gone before the close arrived.
    pub fn at_close(&self, closed_at: Timestamp, limit: OutputBufferLimit, limit_words: &str) -> Option<BufferAtClose> {
        let last = self.last?;
        let at = self.gone_at.map_or(closed_at, |g| g.min(closed_at));
        let projected = self.projected(at)?;
        let soft_for = self.over_soft_since.map(|s| at.since(s));
        let hard = limit.hard as f64;
        let reached = if limit.hard > 0 && (last.omem as f64 >= NEAR_HARD * hard || projected >= hard) {
            Some(LimitReached::Hard)
        } else if limit.soft > 0 && soft_for.is_some_and(|d| d + SOFT_SLACK >= Duration::from_secs(limit.soft_seconds))
        {
            Some(LimitReached::Soft)
        } else {
            None
        };
        let fresh = at.since(last.at) <= FRESH;
        let far_below = fresh
            && reached.is_none()
            && (limit.hard == 0 || projected < FAR_BELOW * limit.hard as f64)
            && (limit.soft == 0 || projected < limit.soft as f64);
        Some(BufferAtClose {
            omem: last.omem,
            obl: last.obl,
            oll: last.oll,
            seconds_before_close: closed_at.since(last.at).as_secs_f64(),
            seconds_before_gone: self.gone_at.map(|g| g.since(last.at).as_secs_f64()),
            projected_omem: projected.round() as u64,
            peak_omem: self.peak.map_or(last.omem, |p| p.omem),
            growth_bytes_per_second: self.average_growth(),
            seconds_over_soft: soft_for.map(|d| d.as_secs_f64()),
            limit: limit_words.to_string(),
            reached,
            far_below,
        })
    }
}

crate::labelled! {
    /// Which part of `client-output-buffer-limit replica` the buffer reached.
    pub enum LimitReached {
        /// At (or within 10 % of) the hard limit.
        Hard => "hard",
        /// Above the soft limit for its seconds.
        Soft => "soft",
    }
}

/// The replica's output buffer on the master at a close, as the evidence shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BufferAtClose {
    /// The last `omem` read before the close.
    pub omem: u64,
    /// Its `obl`.
    pub obl: u64,
    /// Its `oll`.
    pub oll: u64,
    /// How long before replscope saw the close it was read.
    pub seconds_before_close: f64,
    /// How long before the next reading, which found the connection gone, it was read (when one did
    /// before the close arrived): the kill came within this time after the reading.
    pub seconds_before_gone: Option<f64>,
    /// `omem` at the close, moved forward at the growth seen.
    pub projected_omem: u64,
    /// The largest `omem` read on the link.
    pub peak_omem: u64,
    /// How fast `omem` grew from the first reading to the last, bytes per second.
    pub growth_bytes_per_second: Option<f64>,
    /// How long the readings had been above the soft limit.
    pub seconds_over_soft: Option<f64>,
    /// The limit as the master applies it (`8mb 4mb 5`).
    pub limit: String,
    /// The part of the limit reached, if the buffer was at it.
    pub reached: Option<LimitReached>,
    /// A fresh reading showed the buffer far below both limits.
    #[serde(skip)]
    pub far_below: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_micros(ms * 1000)
    }

    fn reading(ms: u64, omem: u64) -> BufferSample {
        BufferSample { at: at(ms), omem, obl: 0, oll: omem / 16384 }
    }

    const LIMIT: OutputBufferLimit = OutputBufferLimit { hard: 8 << 20, soft: 4 << 20, soft_seconds: 5 };

    #[test]
    fn a_buffer_read_near_its_hard_limit_just_before_the_close_reached_it() {
        let mut v = MasterView::default();
        v.record(7, reading(1000, 6_000_000), LIMIT.soft);
        v.record(7, reading(1100, 7_800_000), LIMIT.soft);
        assert_eq!(v.growth(), Some(18_000_000.0));
        let c = v.at_close(at(1150), LIMIT, "8mb 4mb 5").expect("read");
        assert_eq!((c.reached, c.omem, c.projected_omem), (Some(LimitReached::Hard), 7_800_000, 8_700_000));
        assert!((c.seconds_before_close - 0.05).abs() < 1e-9);
        // Read at 90 % of it: at the limit whatever the growth.
        let mut v = MasterView::default();
        v.record(7, reading(0, 7_600_000), LIMIT.soft);
        assert_eq!(v.at_close(at(900), LIMIT, "8mb 4mb 5").and_then(|c| c.reached), Some(LimitReached::Hard));
    }

    #[test]
    fn above_the_soft_limit_for_its_seconds_reached_it_and_a_small_fresh_buffer_rules_it_out() {
        let mut v = MasterView::default();
        for (ms, omem) in [(0, 1 << 20), (1000, 5 << 20), (2000, 5 << 20), (5000, 5 << 20)] {
            v.record(1, reading(ms, omem), LIMIT.soft);
        }
        assert_eq!(v.over_soft_since, Some(at(1000)));
        let c = v.at_close(at(5200), LIMIT, "8mb 4mb 5").expect("read");
        assert_eq!(c.reached, Some(LimitReached::Soft), "{c:?}");
        // A CLIENT KILL with 1 MB queued, read 0.5 s before.
        let mut v = MasterView::default();
        v.record(1, reading(0, 1 << 20), LIMIT.soft);
        let c = v.at_close(at(500), LIMIT, "8mb 4mb 5").expect("read");
        assert!(c.reached.is_none() && c.far_below, "{c:?}");
        // The same reading 3 s old says nothing either way …
        let c = v.at_close(at(3000), LIMIT, "8mb 4mb 5").expect("read");
        assert!(c.reached.is_none() && !c.far_below, "{c:?}");
        // … unless the next reading, 0.1 s after it, found the connection gone: the kill came then.
        v.missing(at(100));
        let c = v.at_close(at(3000), LIMIT, "8mb 4mb 5").expect("read");
        assert!(c.far_below && c.seconds_before_gone == Some(0.1), "{c:?}");
    }
}
