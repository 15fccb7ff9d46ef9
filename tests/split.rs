//! Property tests: the recordings re-split at random points, or fed byte by byte, give identical events
//! and identical stories; random garbage never panics and never changes what valid input before it said.

mod support;

use proptest::prelude::*;
use replscope::time::Timestamp;
use replscope::wire::{Decoder, Direction, Event, WireEvent};
use support::{Read, bytewise, load, replay, whole};

/// A deterministic stream of numbers from a seed (splitmix64), so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Random piece lengths covering `len` bytes, mostly small, sometimes large.
    fn pieces(&mut self, len: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut left = len;
        while left > 0 {
            let cap = if self.next().is_multiple_of(4) { 4096 } else { 64 };
            let n = (1 + self.next() as usize % cap).min(left);
            out.push(n);
            left -= n;
        }
        if out.is_empty() {
            out.push(0);
        }
        out
    }
}

/// The story of every link, as JSON (what the API will show), in connection order.
fn stories(r: &support::Replay) -> Vec<String> {
    r.ids.values().map(|id| serde_json::to_string(r.links.get(*id).expect("link")).expect("serialises")).collect()
}

#[test]
fn byte_by_byte_gives_the_same_events_and_stories() {
    for name in support::capture_names() {
        let reads = load(&name);
        let expected = replay(&reads, whole);
        let got = replay(&reads, bytewise);
        assert_eq!(tallies_merged(&got.events), tallies_merged(&expected.events), "{name}");
        assert_eq!(stories(&got), stories(&expected), "{name}");
    }
}

/// Merges each run of consecutive reads of one connection and direction and re-splits it at random
/// points, across the recorded read boundaries. Each piece carries the time of the read its last byte
/// came from. Returns the new reads.
fn rechunk(reads: &[Read], rng: &mut Rng) -> Vec<Read> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < reads.len() {
        let first = &reads[i];
        if first.eof {
            out.push(first.clone());
            i += 1;
            continue;
        }
        let mut j = i;
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        while j < reads.len() && !reads[j].eof && reads[j].conn == first.conn && reads[j].direction == first.direction {
            bytes.extend_from_slice(&reads[j].bytes);
            ends.push((bytes.len(), reads[j].at));
            j += 1;
        }
        let mut start = 0;
        for n in rng.pieces(bytes.len()) {
            let end = start + n;
            let at = ends.iter().find(|(e, _)| *e >= end).map_or(first.at, |(_, t)| *t);
            out.push(Read {
                at,
                conn: first.conn,
                direction: first.direction,
                bytes: bytes[start..end].to_vec(),
                eof: false,
            });
            start = end;
        }
        i = j;
    }
    out
}

fn without_time(events: &std::collections::BTreeMap<u32, Vec<WireEvent>>) -> Vec<(u32, Direction, Event)> {
    tallies_merged(events)
        .iter()
        .flat_map(|(c, es)| es.iter().map(move |e| (*c, e.direction, e.event.clone())))
        .collect()
}

/// The events of each connection with its stream tallies (one per read, so as many as the split made)
/// taken out and summed into one at the end, stamped with the time of the last: what every split must agree on.
fn tallies_merged(
    events: &std::collections::BTreeMap<u32, Vec<WireEvent>>,
) -> std::collections::BTreeMap<u32, Vec<WireEvent>> {
    events
        .iter()
        .map(|(conn, es)| {
            let mut kept = Vec::new();
            let mut sum: Option<WireEvent> = None;
            for e in es {
                let Event::Stream(t) = &e.event else {
                    kept.push(e.clone());
                    continue;
                };
                let Some(WireEvent { event: Event::Stream(total), at, .. }) = &mut sum else {
                    sum = Some(e.clone());
                    continue;
                };
                for (n, add) in total.counts.iter_mut().zip(t.counts) {
                    *n += add;
                }
                total.commands += t.commands;
                if let Some((_, len)) = t.largest
                    && total.largest.is_none_or(|(_, l)| l < len)
                {
                    total.largest = t.largest;
                }
                total.last = t.last;
                total.stream_bytes = t.stream_bytes;
                total.offset = t.offset;
                *at = e.at;
            }
            kept.extend(sum);
            (*conn, kept)
        })
        .collect()
}

/// A piece of traffic for the property tests: random bytes, or a piece of what replication links carry
/// and what a hostile peer would send instead.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let fixed = |b: &'static [u8]| Just(b.to_vec());
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        (1usize..2000).prop_map(|n| b"*1\r\n".repeat(n)),
        fixed(b"*3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n$4\r\n6380\r\n"),
        fixed(b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n"),
        fixed(b"+FULLRESYNC 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 100\r\n"),
        fixed(b"+CONTINUE\r\n"),
        fixed(b"$EOF:0123456789012345678901234567890123456789\r\n"),
        fixed(b"$18\r\nREDIS0011\xff\0\0\0\0\0\0\0\0"),
        fixed(b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n"),
        fixed(b"$9223372036854775807\r\n"),
        fixed(b"*9223372036854775807\r\n"),
        fixed(b"$-5\r\n"),
        fixed(b"*-3\r\n"),
        fixed(b"\n"),
        (1usize..5000).prop_map(|n| vec![b'x'; n]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random splits inside each recorded read: identical events, times included (the stream's tallies
    /// summed), and identical stories.
    #[test]
    fn random_splits_within_reads_change_nothing(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        for name in support::capture_names() {
            let reads = load(&name);
            let expected = replay(&reads, whole);
            let got = replay(&reads, |b| rng.pieces(b.len()));
            prop_assert_eq!(tallies_merged(&got.events), tallies_merged(&expected.events), "{}", name);
            prop_assert_eq!(stories(&got), stories(&expected), "{}", name);
        }
    }

    /// Random splits across recorded read boundaries: identical events (times aside).
    #[test]
    fn random_splits_across_reads_give_the_same_events(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        for name in support::capture_names() {
            let reads = load(&name);
            let expected = replay(&reads, whole);
            let got = replay(&rechunk(&reads, &mut rng), whole);
            prop_assert_eq!(without_time(&got.events), without_time(&expected.events), "{}", name);
        }
    }

    /// Arbitrary bytes in either direction never panic, give at most one desync per direction, and
    /// whatever precedes a desync is decoded as it would be alone.
    #[test]
    fn garbage_never_panics(
        chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..40)
    ) {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut fed = [0u64; 2];
        for (i, (m2r, bytes)) in chunks.iter().enumerate() {
            let dir = if *m2r { Direction::MasterToReplica } else { Direction::ReplicaToMaster };
            fed[dir.index()] += bytes.len() as u64;
            d.feed(dir, bytes, Timestamp::from_micros(i as u64), &mut out);
        }
        for dir in Direction::BOTH {
            let desyncs = out.iter().filter(|e| e.direction == dir && matches!(e.event, Event::Desync { .. })).count();
            prop_assert!(desyncs <= 1);
            prop_assert_eq!(d.bytes(dir), fed[dir.index()]);
            if desyncs == 1 {
                prop_assert!(d.is_opaque(dir));
                let last = out.iter().rfind(|e| e.direction == dir);
                prop_assert!(matches!(last.map(|e| &e.event), Some(Event::Desync { .. })), "nothing after a desync");
            }
        }
    }

    /// Any bytes, both directions interleaved, garbage mixed with pieces of valid traffic (nested arrays,
    /// huge and negative lengths, payload and stream lines), fed whole and split at random points: never a
    /// panic, every byte counted, and the same events either way (times aside, stream tallies summed).
    #[test]
    fn any_bytes_split_anywhere_give_the_same_events(
        chunks in proptest::collection::vec((any::<bool>(), fragment()), 0..30),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let (mut whole, mut split) = (Decoder::new(), Decoder::new());
        let (mut whole_out, mut split_out) = (Vec::new(), Vec::new());
        let mut fed = [0u64; 2];
        for (i, (m2r, bytes)) in chunks.iter().enumerate() {
            let dir = if *m2r { Direction::MasterToReplica } else { Direction::ReplicaToMaster };
            let at = Timestamp::from_micros(i as u64);
            fed[dir.index()] += bytes.len() as u64;
            whole.feed(dir, bytes, at, &mut whole_out);
            let mut start = 0;
            for n in rng.pieces(bytes.len()) {
                split.feed(dir, &bytes[start..start + n], at, &mut split_out);
                start += n;
            }
        }
        for dir in Direction::BOTH {
            prop_assert_eq!(whole.bytes(dir), fed[dir.index()]);
            prop_assert_eq!(split.bytes(dir), fed[dir.index()]);
        }
        let one = |out: Vec<WireEvent>| std::collections::BTreeMap::from([(1u32, out)]);
        prop_assert_eq!(without_time(&one(split_out)), without_time(&one(whole_out)));
    }

    /// A valid recording followed by garbage on the master side: the events before it are unchanged.
    #[test]
    fn garbage_after_valid_input_keeps_what_came_before(
        garbage in proptest::collection::vec(any::<u8>(), 1..200),
        which in 0usize..8,
    ) {
        let names = support::capture_names();
        let name = &names[which % names.len()];
        let reads = load(name);
        let expected = replay(&reads, whole);
        let last_conn = *expected.ids.keys().last().expect("a connection");
        let mut with_garbage: Vec<Read> = reads.iter().filter(|r| !r.eof).cloned().collect();
        let at = with_garbage.last().map_or(Timestamp::ZERO, |r| r.at);
        with_garbage.push(Read { at, conn: last_conn, direction: Direction::MasterToReplica, bytes: garbage, eof: false });
        let got = replay(&with_garbage, whole);
        for (conn, events) in &expected.events {
            let got_events = &got.events[conn];
            prop_assert_eq!(&got_events[..events.len()], &events[..], "{}", name);
        }
    }
}
