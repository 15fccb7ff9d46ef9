//! Introspection's answers: any bytes read as the master's replies (depth-capped RESP, resumed as bytes
//! arrive, split at a point the input picks), then every frame read as each answer a poll expects, and
//! the raw text through the INFO and CLIENT LIST parsers. Never panics; the split changes no frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replscope::introspect::{Poll, parse};
use replscope::proxy::introspect::ANSWER_LIMITS;
use replscope::time::Timestamp;
use replscope::wire::resp::{FrameReader, RespError, Value};
use replscope_fuzz::split_point;

/// Frames read from `parts` fed one after the other into a growing buffer, as the driver does.
fn frames(parts: &[&[u8]]) -> (Vec<Value>, Option<RespError>) {
    let mut reader = FrameReader::new(ANSWER_LIMITS);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for p in parts {
        buf.extend_from_slice(p);
        loop {
            match reader.next(&buf) {
                Ok(Some((v, used))) => {
                    buf.drain(..used);
                    out.push(v);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let (at, bytes) = split_point(data);
    let whole = frames(&[bytes]);
    let split = frames(&[&bytes[..at], &bytes[at..]]);
    assert_eq!(whole, split);
    for config in [true, false] {
        let _ = Poll::full(config).answer(&whole.0, Timestamp::ZERO);
    }
    let text = String::from_utf8_lossy(bytes);
    let _ = parse::info_replication(&text);
    let _ = parse::info_server(&text);
    let _ = parse::client_list(&text);
});
