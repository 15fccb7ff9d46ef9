//! A bounded buffer for one line (or one small frame) that may arrive split across reads.
//!
//! The buffer never holds more than its limit, and it is wiped (zeroed) when a line is consumed, because
//! replica-side lines can hold an `AUTH` password for the moment they are parsed. Its `Debug` shows only
//! the length.

use std::fmt;

/// Accumulates bytes up to a limit.
pub struct BoundedBuf {
    buf: Vec<u8>,
    limit: usize,
}

impl fmt::Debug for BoundedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoundedBuf({} of {} bytes)", self.buf.len(), self.limit)
    }
}

/// The outcome of feeding a line.
#[derive(Debug, PartialEq, Eq)]
pub enum LineFeed {
    /// All of the input was taken; the line is not finished.
    Partial,
    /// The line ended (its `\n` included) after `consumed` bytes of the input.
    Complete {
        /// Bytes of the input that were taken.
        consumed: usize,
    },
    /// The line would exceed the limit.
    TooLong,
}

impl BoundedBuf {
    /// An empty buffer that will hold at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        BoundedBuf { buf: Vec::new(), limit }
    }

    /// What is held.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Room left before the limit.
    pub fn room(&self) -> usize {
        self.limit - self.buf.len()
    }

    /// Appends bytes (the caller keeps within [`BoundedBuf::room`]).
    pub fn extend(&mut self, bytes: &[u8]) {
        let take = bytes.len().min(self.room());
        self.buf.extend_from_slice(&bytes[..take]);
    }

    /// Takes input up to and including the next `\n`.
    pub fn feed_line(&mut self, input: &[u8]) -> LineFeed {
        let (take, complete) = match memchr::memchr(b'\n', input) {
            Some(p) => (p + 1, true),
            None => (input.len(), false),
        };
        if take > self.room() {
            return LineFeed::TooLong;
        }
        self.buf.extend_from_slice(&input[..take]);
        if complete { LineFeed::Complete { consumed: take } } else { LineFeed::Partial }
    }

    /// Drops the first `n` bytes, zeroing them first.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf[..n].fill(0);
        self.buf.drain(..n);
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        }
    }

    /// Drops everything, zeroing it first.
    pub fn clear(&mut self) {
        self.consume(self.buf.len());
    }
}

/// A line without its trailing `\r\n` or `\n`.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_anywhere_are_joined_and_bounded() {
        let mut b = BoundedBuf::new(8);
        assert_eq!(b.feed_line(b"+O"), LineFeed::Partial);
        assert_eq!(b.feed_line(b"K\r\n+PONG"), LineFeed::Complete { consumed: 3 });
        assert_eq!(trim_eol(b.bytes()), b"+OK");
        b.clear();
        assert_eq!(b.feed_line(b"+TOOLONGLINE\r\n"), LineFeed::TooLong);
        assert!(b.is_empty());
        assert_eq!(format!("{b:?}"), "BoundedBuf(0 of 8 bytes)");
    }
}
