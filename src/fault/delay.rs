//! The latency fault's delay line, with time as input: chunks leave in the order they came, each one its
//! delay after it arrived, while later chunks keep arriving behind it — as on a long network path, where
//! latency holds bytes back without capping throughput at one read per delay. What is in flight is
//! capped ([`LATENCY_WINDOW`], like a TCP window): a full line stops the pump from reading, so memory stays
//! bounded and the sender still meets real backpressure.

use std::collections::VecDeque;

use crate::time::Timestamp;

/// The most bytes a latency fault holds in flight per link and direction. A real path's throughput is at
/// most its window ÷ its round trip; 4 MiB is in the range of Linux's default largest receive window, so
/// a latency fault slows a transfer about as much as that much real latency would.
pub const LATENCY_WINDOW: usize = 4 << 20;

/// Chunks in flight, oldest first.
#[derive(Debug)]
pub struct DelayLine {
    queue: VecDeque<(Timestamp, Vec<u8>)>,
    bytes: usize,
    window: usize,
    last_due: Timestamp,
    /// Buffers of chunks already sent, reused for the next ones.
    spare: Vec<Vec<u8>>,
}

impl DelayLine {
    /// An empty line holding at most `window` bytes (at least one chunk always fits).
    pub fn new(window: usize) -> Self {
        DelayLine { queue: VecDeque::new(), bytes: 0, window, last_due: Timestamp::ZERO, spare: Vec::new() }
    }

    /// Whether another chunk may be read into the line.
    pub fn has_room(&self) -> bool {
        self.bytes < self.window
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes in flight.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Puts a copy of `chunk` in the line, to leave at `due` — or later, behind the chunk before it, so
    /// jitter never reorders bytes.
    pub fn push(&mut self, chunk: &[u8], due: Timestamp) {
        let due = due.max(self.last_due);
        self.last_due = due;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(chunk);
        self.bytes += buf.len();
        self.queue.push_back((due, buf));
    }

    /// When the oldest chunk is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.queue.front().map(|(due, _)| *due)
    }

    /// The oldest chunk, if it is due at `now`; hand it back with [`DelayLine::recycle`] once written.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<Vec<u8>> {
        if self.next_due()? > now {
            return None;
        }
        let (_, buf) = self.queue.pop_front()?;
        self.bytes -= buf.len();
        Some(buf)
    }

    /// Returns a written chunk's buffer for reuse (a few are kept).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 4 {
            self.spare.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    #[test]
    fn chunks_leave_in_order_each_after_its_delay_while_others_arrive() {
        let mut line = DelayLine::new(1 << 20);
        line.push(b"one", ms(200));
        line.push(b"two", ms(210));
        assert_eq!(line.pop_due(ms(199)), None, "not yet");
        assert_eq!(line.pop_due(ms(200)).as_deref(), Some(&b"one"[..]));
        assert_eq!(line.next_due(), Some(ms(210)));
        // Jitter gave the third an earlier time than the second's: it waits behind it.
        line.push(b"three", ms(205));
        assert_eq!(line.pop_due(ms(209)), None);
        assert_eq!(line.pop_due(ms(210)).as_deref(), Some(&b"two"[..]));
        assert_eq!(line.pop_due(ms(210)).as_deref(), Some(&b"three"[..]));
        assert!(line.is_empty());
    }

    #[test]
    fn a_full_line_has_no_room_until_a_chunk_leaves() {
        let mut line = DelayLine::new(100);
        line.push(&[0u8; 60], ms(10));
        assert!(line.has_room());
        line.push(&[0u8; 60], ms(10));
        assert!(!line.has_room(), "120 bytes in flight, window 100");
        assert_eq!(line.bytes(), 120);
        let first = line.pop_due(ms(10)).expect("due");
        line.recycle(first);
        assert!(line.has_room());
        line.push(b"reused", ms(11));
        assert_eq!(line.pop_due(ms(10)).map(|b| b.len()), Some(60));
        assert_eq!(line.next_due(), Some(ms(11)));
        assert_eq!(line.pop_due(ms(11)), Some(b"reused".to_vec()));
    }

    #[test]
    fn throughput_is_a_window_per_delay_not_a_chunk_per_delay() {
        // 200 ms of latency, 256 KiB reads arriving back to back: in 1 s of virtual time the line lets
        // through about a window per 200 ms, where a chunk-per-delay pump would pass 5 chunks.
        let mut line = DelayLine::new(LATENCY_WINDOW);
        let chunk = vec![0u8; 256 << 10];
        let (mut now, mut sent) = (ms(0), 0usize);
        while now < ms(1000) {
            while line.has_room() {
                line.push(&chunk, now.plus(std::time::Duration::from_millis(200)));
            }
            while let Some(buf) = line.pop_due(now) {
                sent += buf.len();
                line.recycle(buf);
            }
            now = now.plus(std::time::Duration::from_millis(1));
        }
        let windows = sent as f64 / LATENCY_WINDOW as f64;
        assert!((3.5..=4.5).contains(&windows), "{windows} windows in 1 s at 200 ms");
        assert!(sent > 5 * chunk.len() * 10, "{sent} bytes");
    }
}
