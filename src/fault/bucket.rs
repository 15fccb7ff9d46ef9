//! A token bucket with time as input: how long bytes must wait to keep to a rate.
//!
//! Tokens refill at `rate` bytes per second up to a burst of 50 ms worth (at least 4 KiB), so over any
//! window of seconds the bytes let through stay within a percent of the rate. Taking more than is there
//! puts the bucket in debt and says how long to wait before sending; the rate can change at any time.

use std::time::Duration;

use crate::time::Timestamp;

/// The burst: this fraction of a second's worth of bytes.
const BURST_SECONDS: f64 = 0.05;
/// The smallest burst, so very low rates still move whole small writes.
const MIN_BURST: f64 = 4096.0;

/// A token bucket.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Timestamp,
}

impl TokenBucket {
    /// An empty bucket refilling at `rate` bytes per second from `now`.
    pub fn new(rate: u64, now: Timestamp) -> Self {
        let rate = rate.max(1) as f64;
        TokenBucket { rate, burst: (rate * BURST_SECONDS).max(MIN_BURST), tokens: 0.0, last: now }
    }

    /// The rate, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Changes the rate from `now` on.
    pub fn set_rate(&mut self, rate: u64, now: Timestamp) {
        self.refill(now);
        self.rate = rate.max(1) as f64;
        self.burst = (self.rate * BURST_SECONDS).max(MIN_BURST);
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Timestamp) {
        if now > self.last {
            self.tokens = (self.tokens + self.rate * now.since(self.last).as_secs_f64()).min(self.burst);
            self.last = now;
        }
    }

    /// Takes `n` bytes' worth at `now`; returns how long to wait before sending them.
    pub fn take(&mut self, n: u64, now: Timestamp) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `total` bytes in `piece`-byte writes, waiting as told; returns when the last byte went.
    fn send(bucket: &mut TokenBucket, start: Timestamp, total: u64, piece: u64) -> Timestamp {
        let mut now = start;
        let mut sent = 0;
        while sent < total {
            now = now.plus(bucket.take(piece, now));
            sent += piece;
        }
        now
    }

    #[test]
    fn keeps_to_the_rate_within_a_percent_over_seconds() {
        let rate = 4 << 20;
        let mut b = TokenBucket::new(rate, Timestamp::ZERO);
        let done = send(&mut b, Timestamp::ZERO, 5 * rate, 16 * 1024);
        let secs = done.since(Timestamp::ZERO).as_secs_f64();
        assert!((secs - 5.0).abs() < 0.05, "5 s worth took {secs} s");
    }

    #[test]
    fn every_five_second_window_of_a_busy_link_is_within_five_percent() {
        // 30 s of 64 KiB writes at 4 MiB/s, each sent when the bucket allows it.
        let rate = 4u64 << 20;
        let piece = 64 * 1024;
        let mut b = TokenBucket::new(rate, Timestamp::ZERO);
        let mut now = Timestamp::ZERO;
        let mut sent_at = Vec::new();
        while now.as_micros() < 30_000_000 {
            now = now.plus(b.take(piece, now));
            sent_at.push(now.as_micros());
        }
        // Slide a 5 s window in 10 ms steps over the whole run and count the bytes sent inside it.
        let window = 5_000_000;
        let expected = rate as f64 * 5.0;
        let mut start = 0;
        while start + window <= 30_000_000 {
            let n = sent_at.iter().filter(|t| **t >= start && **t < start + window).count() as f64 * piece as f64;
            assert!((n / expected - 1.0).abs() <= 0.05, "{n} bytes in the 5 s from {start} µs, expected {expected}");
            start += 10_000;
        }
    }

    #[test]
    fn an_idle_bucket_allows_only_a_small_burst() {
        let rate = 1 << 20;
        let mut b = TokenBucket::new(rate, Timestamp::ZERO);
        let later = Timestamp::from_micros(60_000_000);
        assert_eq!(b.take(50_000, later), Duration::ZERO, "50 ms worth is free after a rest");
        assert!(b.take(1 << 20, later) > Duration::from_millis(900), "a second's worth is not");
    }

    #[test]
    fn the_rate_changes_at_run_time() {
        let mut b = TokenBucket::new(1 << 20, Timestamp::ZERO);
        let t1 = send(&mut b, Timestamp::ZERO, 2 << 20, 8192);
        b.set_rate(4 << 20, t1);
        let t2 = send(&mut b, t1, 4 << 20, 8192);
        assert!((t1.since(Timestamp::ZERO).as_secs_f64() - 2.0).abs() < 0.02);
        assert!((t2.since(t1).as_secs_f64() - 1.0).abs() < 0.02, "{:?}", t2.since(t1));
        assert_eq!(b.rate(), 4 << 20);
    }
}
