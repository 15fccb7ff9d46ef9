//! Master→replica: handshake lines, the PSYNC answer, the payload preamble, the RDB and the stream, on any
//! bytes in pieces the input cuts. Never panics, counts every byte, gives up at most once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replscope::time::Timestamp;
use replscope::wire::{Decoder, Direction, Event};
use replscope_fuzz::pieces;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut fed = 0u64;
    for (i, p) in pieces(data).iter().enumerate() {
        d.feed(Direction::MasterToReplica, p.bytes, Timestamp::from_micros(i as u64), &mut out);
        fed += p.bytes.len() as u64;
    }
    assert_eq!(d.bytes(Direction::MasterToReplica), fed);
    let desyncs = out.iter().filter(|e| matches!(e.event, Event::Desync { .. })).count();
    assert!(desyncs <= 1);
    if desyncs == 1 {
        assert!(d.is_opaque(Direction::MasterToReplica));
    }
});
