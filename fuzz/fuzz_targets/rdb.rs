//! The RDB payload on its own: `$<len>` framing (the length from the input) or `$EOF:<mark>` framing (the
//! mark from the input), the payload split at a point the input picks, fed as the reply decoder feeds it.
//! Never panics, never takes more than it was given, and the split changes neither what it found, nor
//! where the payload ended, nor the trailer's verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replscope::wire::payload::{EOF_MARK_LEN, PayloadDecoder};
use replscope_fuzz::split_point;

fn decoder(data: &[u8]) -> Option<(PayloadDecoder, &[u8])> {
    let (&kind, rest) = data.split_first()?;
    if kind & 1 == 0 {
        let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) % (1 << 24);
        Some((PayloadDecoder::sized(len), &rest[8..]))
    } else {
        let mark: [u8; EOF_MARK_LEN] = rest.get(..EOF_MARK_LEN)?.try_into().ok()?;
        Some((PayloadDecoder::eof_marked(mark), &rest[EOF_MARK_LEN..]))
    }
}

/// Feeds the parts as the reply decoder does: each part until the payload ends, nothing after. Returns
/// what it found, the bytes consumed, and how it ended.
fn run(mut p: PayloadDecoder, parts: &[&[u8]]) -> (Vec<String>, usize, Option<String>) {
    let mut found = Vec::new();
    let mut consumed = 0;
    for part in parts {
        let step = p.feed(part);
        assert!(step.consumed <= part.len());
        consumed += step.consumed;
        if let Some(f) = step.finding {
            found.push(format!("{f:?}"));
        }
        if let Some(end) = step.end {
            assert!(p.received() <= consumed as u64);
            return (found, consumed, Some(format!("{end:?}")));
        }
        assert_eq!(step.consumed, part.len(), "a payload that goes on takes the whole slice");
    }
    (found, consumed, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((_, rest)) = decoder(data) else { return };
    let (at, bytes) = split_point(rest);
    let Some((whole, _)) = decoder(data) else { return };
    let Some((split, _)) = decoder(data) else { return };
    assert_eq!(run(whole, &[bytes]), run(split, &[&bytes[..at], &bytes[at..]]));
});
