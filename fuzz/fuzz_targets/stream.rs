//! The replication stream framer on any bytes, split at a point the input picks: never panics, and the
//! split changes neither the commands framed, nor the bytes counted, nor where it gave up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replscope::wire::CommandName;
use replscope::wire::stream::{StreamFramer, StreamSink};
use replscope_fuzz::split_point;

#[derive(Default, PartialEq, Eq, Debug)]
struct Seen {
    commands: Vec<(CommandName, u64, u64)>,
    newlines: usize,
}

impl StreamSink for Seen {
    fn command(&mut self, name: CommandName, len: u64, stream_bytes: u64) {
        self.commands.push((name, len, stream_bytes));
    }
    fn newline(&mut self) {
        self.newlines += 1;
    }
}

fn frame(parts: &[&[u8]]) -> (Seen, Option<u64>, u64) {
    let mut f = StreamFramer::new(Some(1000));
    let mut seen = Seen::default();
    let mut fed = 0u64;
    for p in parts {
        if let Err((at, _)) = f.feed(p, &mut seen) {
            return (seen, Some(fed + at as u64), f.stream_bytes());
        }
        fed += p.len() as u64;
    }
    (seen, None, f.stream_bytes())
}

fuzz_target!(|data: &[u8]| {
    let (at, bytes) = split_point(data);
    let whole = frame(&[bytes]);
    let split = frame(&[&bytes[..at], &bytes[at..]]);
    assert_eq!(whole, split);
    assert!(whole.2 <= bytes.len() as u64);
});
