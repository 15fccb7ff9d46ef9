//! Replica→master: the command decoder (flat RESP arrays, inline commands, `\n`) on any bytes, fed whole
//! and split at a point the input picks. Never panics, and the split changes no event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replscope::time::Timestamp;
use replscope::wire::{Decoder, Direction, Event};
use replscope_fuzz::split_point;

fn events(parts: &[&[u8]]) -> Vec<Event> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for p in parts {
        d.feed(Direction::ReplicaToMaster, p, Timestamp::ZERO, &mut out);
    }
    let fed: usize = parts.iter().map(|p| p.len()).sum();
    assert_eq!(d.bytes(Direction::ReplicaToMaster), fed as u64);
    out.into_iter().map(|e| e.event).collect()
}

fuzz_target!(|data: &[u8]| {
    let (at, bytes) = split_point(data);
    let whole = events(&[bytes]);
    let split = events(&[&bytes[..at], &bytes[at..]]);
    assert_eq!(whole, split);
    assert!(whole.iter().filter(|e| matches!(e, Event::Desync { .. })).count() <= 1);
});
