//! Shared test helpers: loading the recordings in `tests/data/captures` and feeding them to the core.

#![allow(dead_code)]

use std::path::PathBuf;

use replscope::wire::Direction;

pub use replscope::recording::Read;

/// The folder holding the recordings the tests replay: `tests/data/captures` in this repository.
pub fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures")
}

/// Every recording's file name, sorted.
pub fn capture_names() -> Vec<String> {
    let dir = captures_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
}

/// Loads one recording.
pub fn load(name: &str) -> Vec<Read> {
    replscope::recording::load(&captures_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

use replscope::link::{CloseHow, ClosedBy, Fed, LinkId, TransportEvent};
use replscope::wire::{Event, ReplconfOption, ReplicaCommand, WireEvent};
use std::collections::BTreeMap;

/// What a replay produced.
pub struct Replay {
    pub links: Fed,
    /// Recording connection number → link id.
    pub ids: BTreeMap<u32, LinkId>,
    /// Every event, per recording connection, in order.
    pub events: BTreeMap<u32, Vec<WireEvent>>,
    /// Every `REPLCONF ACK` with the master offset the link showed when it arrived, and whether the
    /// stream had passed through that exact offset (a command boundary or its start).
    pub acks: Vec<AckSeen>,
}

/// A `REPLCONF ACK` seen in a replay.
#[derive(Debug)]
pub struct AckSeen {
    pub conn: u32,
    pub ack: i64,
    pub master_offset: Option<i64>,
    pub on_a_boundary: bool,
}

/// Replays a recording into one route's links ([`Fed`]), splitting each read with `split` (which returns the
/// lengths of the pieces). End-of-file lines become FIN closes by that side.
pub fn replay(reads: &[Read], mut split: impl FnMut(&[u8]) -> Vec<usize>) -> Replay {
    let mut links = Fed::new();
    let mut ids = BTreeMap::new();
    let mut events: BTreeMap<u32, Vec<WireEvent>> = BTreeMap::new();
    let mut acks = Vec::new();
    let mut boundaries: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for r in reads {
        let id = *ids.entry(r.conn).or_insert_with(|| links.open(Some([127, 0, 0, 1].into()), r.at));
        if r.eof {
            let by = match r.direction {
                Direction::MasterToReplica => ClosedBy::Master,
                Direction::ReplicaToMaster => ClosedBy::Replica,
            };
            links.on_transport(id, TransportEvent::Closed { by, how: CloseHow::Fin }, r.at);
            continue;
        }
        let mut start = 0;
        for len in split(&r.bytes) {
            let piece = &r.bytes[start..start + len];
            start += len;
            let out = links.on_bytes(id, r.direction, piece, r.at).to_vec();
            let link = links.get(id).expect("link is open");
            let offset = link.master_offset();
            let reached = boundaries.entry(r.conn).or_default();
            reached.extend(link.stream.start_offset);
            // The link counts complete commands only, so its offset is always a boundary. (A Redis 8 main
            // channel's decoder never learns the offset — its start comes from the rdb channel — so its
            // command events carry none; the link's offset is the one that counts.)
            reached.extend(offset);
            for e in &out {
                match &e.event {
                    Event::Stream(t) => reached.extend(t.offset),
                    Event::Command { command: ReplicaCommand::Replconf(opts) } => {
                        for o in opts {
                            if let ReplconfOption::Ack(ack) = o {
                                let on_a_boundary = reached.contains(ack);
                                acks.push(AckSeen { conn: r.conn, ack: *ack, master_offset: offset, on_a_boundary });
                            }
                        }
                    }
                    _ => {}
                }
            }
            events.entry(r.conn).or_default().extend(out);
        }
        assert_eq!(start, r.bytes.len(), "split must cover the read");
    }
    Replay { links, ids, events, acks }
}

/// Splits nothing: the reads as recorded.
pub fn whole(b: &[u8]) -> Vec<usize> {
    vec![b.len()]
}

/// One byte at a time.
pub fn bytewise(b: &[u8]) -> Vec<usize> {
    vec![1; b.len()]
}

pub mod load;
pub mod modes;
pub mod proxy;
pub mod relay;
pub mod server;
