//! The RDB payload on the wire: `$<len>\r\n` + exactly `len` bytes, or `$EOF:<mark>\r\n` + bytes + the
//! same 40-byte mark. Finds where the payload ends, whatever the split, and hands the payload bytes (and
//! only those) to the [`RdbInspector`].
//!
//! The end of an EOF-marked payload is the first occurrence of the mark. A mark split across slices is
//! found because up to 39 trailing bytes are held back until the next slice shows they are not the
//! mark's start; that is all this module ever holds.

use memchr::memmem::Finder;

use crate::wire::event::PayloadFraming;
use crate::wire::rdb::{Finding, RdbInspector, TrailerCheck};

/// Length of the EOF mark (`RDB_EOF_MARK_SIZE`).
pub const EOF_MARK_LEN: usize = 40;

/// What a slice of payload gave.
#[derive(Debug, Default)]
pub struct PayloadStep {
    /// Bytes of the slice that belonged to the payload (framing marks included).
    pub consumed: usize,
    /// The header or not-an-RDB verdict, if it became known.
    pub finding: Option<Finding>,
    /// `Some` when the payload ended in this slice: its size and trailer check.
    pub end: Option<(u64, TrailerCheck)>,
}

enum Frame {
    Sized { remaining: u64 },
    Eof(Box<EofFrame>),
}

struct EofFrame {
    finder: Finder<'static>,
    mark: [u8; EOF_MARK_LEN],
    /// Trailing bytes that may be the start of the mark (at most 39).
    held: Vec<u8>,
}

/// Decodes one payload.
pub struct PayloadDecoder {
    frame: Frame,
    inspector: RdbInspector,
    framing: PayloadFraming,
}

impl std::fmt::Debug for PayloadDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadDecoder")
            .field("framing", &self.framing)
            .field("received", &self.inspector.total())
            .finish_non_exhaustive()
    }
}

impl PayloadDecoder {
    /// A `$<len>` payload.
    pub fn sized(len: u64) -> Self {
        PayloadDecoder {
            frame: Frame::Sized { remaining: len },
            inspector: RdbInspector::new(),
            framing: PayloadFraming::Sized { len },
        }
    }

    /// A `$EOF:<mark>` payload.
    pub fn eof_marked(mark: [u8; EOF_MARK_LEN]) -> Self {
        PayloadDecoder {
            frame: Frame::Eof(Box::new(EofFrame {
                finder: Finder::new(&mark).into_owned(),
                mark,
                held: Vec::with_capacity(EOF_MARK_LEN),
            })),
            inspector: RdbInspector::new(),
            framing: PayloadFraming::EofMark,
        }
    }

    /// The framing.
    pub fn framing(&self) -> PayloadFraming {
        self.framing
    }

    /// Payload bytes passed on so far (a held-back possible mark prefix not included).
    pub fn received(&self) -> u64 {
        self.inspector.total()
    }

    /// Looks at the next bytes of the direction; stops at the end of the payload.
    pub fn feed(&mut self, input: &[u8]) -> PayloadStep {
        let mut step = PayloadStep::default();
        match &mut self.frame {
            Frame::Sized { remaining } => {
                let take = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                *remaining -= take as u64;
                step.consumed = take;
                step.finding = self.inspector.feed(&input[..take]);
                if *remaining == 0 {
                    self.finish(&mut step);
                }
            }
            Frame::Eof(eof) => {
                let EofFrame { finder, mark, held } = &mut **eof;
                // A mark that starts in the held-back bytes and ends in this slice.
                let straddling = (0..held.len()).find(|&i| {
                    let in_held = &held[i..];
                    let rest = EOF_MARK_LEN - in_held.len();
                    mark.starts_with(in_held) && input.len() >= rest && input[..rest] == mark[in_held.len()..]
                });
                if let Some(i) = straddling {
                    let needed_from_input = EOF_MARK_LEN - (held.len() - i);
                    held.truncate(i);
                    let before = std::mem::take(held);
                    step.finding = self.inspector.feed(&before);
                    step.consumed = needed_from_input;
                    self.finish(&mut step);
                } else if let Some(j) = finder.find(input) {
                    let before = std::mem::take(held);
                    let f1 = self.inspector.feed(&before);
                    let f2 = self.inspector.feed(&input[..j]);
                    step.finding = f1.or(f2);
                    step.consumed = j + EOF_MARK_LEN;
                    self.finish(&mut step);
                } else {
                    // No mark yet: pass on all but the last 39 bytes seen, which might begin one.
                    let keep = (EOF_MARK_LEN - 1).min(held.len() + input.len());
                    let from_input = keep.min(input.len());
                    let from_held = keep - from_input;
                    let release_held = held.len() - from_held;
                    let f1 = self.inspector.feed(&held[..release_held]);
                    let f2 = self.inspector.feed(&input[..input.len() - from_input]);
                    held.drain(..release_held);
                    held.extend_from_slice(&input[input.len() - from_input..]);
                    step.finding = f1.or(f2);
                    step.consumed = input.len();
                }
            }
        }
        step
    }

    fn finish(&mut self, step: &mut PayloadStep) {
        let (finding, check) = self.inspector.finish();
        if step.finding.is_none() {
            step.finding = finding;
        }
        step.end = Some((self.inspector.total(), check));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &[u8; 40] = b"0123456789abcdef0123456789abcdef01234567";

    fn payload() -> Vec<u8> {
        let mut v = b"REDIS0010\xfe\x00\x00\x01k\x01v".to_vec();
        v.extend(std::iter::repeat_n(b'x', 300));
        v.push(0xff);
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, &v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    fn drive(dec: &mut PayloadDecoder, wire: &[u8], chunk: usize) -> (usize, Option<(u64, TrailerCheck)>) {
        let mut consumed = 0;
        for c in wire.chunks(chunk) {
            let step = dec.feed(c);
            consumed += step.consumed;
            if step.end.is_some() {
                return (consumed, step.end);
            }
            assert_eq!(step.consumed, c.len());
        }
        (consumed, None)
    }

    #[test]
    fn eof_mark_is_found_wherever_it_is_split() {
        let body = payload();
        let mut wire = body.clone();
        wire.extend_from_slice(MARK);
        wire.extend_from_slice(b"*1\r\n$4\r\nping\r\n");
        for chunk in 1..=60 {
            let mut dec = PayloadDecoder::eof_marked(*MARK);
            let (consumed, end) = drive(&mut dec, &wire, chunk);
            assert_eq!(end.map(|e| e.0), Some(body.len() as u64), "chunk {chunk}");
            assert!(matches!(end.map(|e| e.1), Some(TrailerCheck::Ok { .. })), "chunk {chunk}");
            assert_eq!(consumed, body.len() + EOF_MARK_LEN, "chunk {chunk}");
        }
    }

    #[test]
    fn a_partial_mark_inside_the_data_is_not_the_end() {
        let mut body = b"REDIS0010".to_vec();
        body.extend_from_slice(&MARK[..39]);
        body.extend_from_slice(b"zz\xff\0\0\0\0\0\0\0\0");
        let mut wire = body.clone();
        wire.extend_from_slice(MARK);
        for chunk in [1, 5, 39, 40, 41, 1000] {
            let mut dec = PayloadDecoder::eof_marked(*MARK);
            let (_, end) = drive(&mut dec, &wire, chunk);
            assert_eq!(end, Some((body.len() as u64, TrailerCheck::NotComputed)), "chunk {chunk}");
        }
    }

    #[test]
    fn sized_payload_stops_at_its_length() {
        let body = payload();
        let mut wire = body.clone();
        wire.extend_from_slice(b"*1\r\n");
        let mut dec = PayloadDecoder::sized(body.len() as u64);
        let (consumed, end) = drive(&mut dec, &wire, 7);
        assert_eq!(consumed, body.len());
        assert!(matches!(end, Some((n, TrailerCheck::Ok { .. })) if n == body.len() as u64));
    }
}
