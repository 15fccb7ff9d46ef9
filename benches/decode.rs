//! Decoder throughput, release build: the RDB path (framing, look-ahead, CRC-64 in flight) over a
//! 1 GiB payload of incompressible values in both framings, and the command stream of small SETs.
//!
//! Also the same stream through a whole link, and through the proxy's per-read core path (reader, links,
//! observer).
//!
//! Run: `cargo bench --bench decode`. Bytes are fed in 64 KiB slices, as a proxy reading a socket
//! would; the payload is generated once and fed from memory so only the decoder is measured.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use replscope::time::Timestamp;
use replscope::wire::{Decoder, Direction, Event, WireEvent};

const RDB_SIZE: usize = 1 << 30;
const SLICE: usize = 64 * 1024;
const MARK: &[u8; 40] = b"0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c";

/// xorshift64*: incompressible bytes, cheaply.
fn noise(buf: &mut [u8], mut state: u64) {
    for chunk in buf.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// An RDB of `size` bytes: header, string keys with random 1 KiB values, trailer with the real CRC.
fn big_rdb(size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(b"REDIS0011\xfa\x09redis-ver\x057.2.4\xfa\x0aredis-bits\xc0\x40\xfe\x00");
    let mut value = vec![0u8; 1024];
    let mut i = 0u64;
    while v.len() + 1100 < size - 9 {
        let key = format!("key:{i:012}");
        v.push(0);
        v.push(key.len() as u8);
        v.extend_from_slice(key.as_bytes());
        v.extend_from_slice(&[0x44, 0x00]); // 14-bit length 1024
        noise(&mut value, i.wrapping_add(0x9E37_79B9));
        v.extend_from_slice(&value);
        i += 1;
    }
    v.resize(size - 9, 0);
    v.push(0xff);
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, &v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn preamble(eof: bool, len: usize) -> Vec<u8> {
    let mut p = b"+FULLRESYNC 0123456789abcdef0123456789abcdef01234567 0\r\n".to_vec();
    if eof {
        p.extend_from_slice(b"$EOF:");
        p.extend_from_slice(MARK);
        p.extend_from_slice(b"\r\n");
    } else {
        p.extend_from_slice(format!("${len}\r\n").as_bytes());
    }
    p
}

/// Feeds a whole sync through a fresh decoder; returns the events so the work is not optimised away.
fn run(pre: &[u8], body: &[u8], post: &[u8], out: &mut Vec<WireEvent>) -> usize {
    let mut d = Decoder::new();
    out.clear();
    let t = Timestamp::ZERO;
    d.feed(Direction::ReplicaToMaster, b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n", t, out);
    d.feed(Direction::MasterToReplica, pre, t, out);
    for slice in body.chunks(SLICE) {
        d.feed(Direction::MasterToReplica, slice, t, out);
    }
    d.feed(Direction::MasterToReplica, post, t, out);
    out.len()
}

fn rdb_path(c: &mut Criterion) {
    let body = big_rdb(RDB_SIZE);
    let mut g = c.benchmark_group("rdb_1GiB");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    let mut out = Vec::new();
    for (name, eof) in [("sized", false), ("eof_mark", true)] {
        let pre = preamble(eof, body.len());
        let post: &[u8] = if eof { MARK } else { b"" };
        // Check once that the decoder really read the payload and its trailer.
        run(&pre, &body, post, &mut out);
        assert!(
            out.iter().any(|e| matches!(
                e.event,
                Event::PayloadEnd { trailer: replscope::wire::TrailerCheck::Ok { .. }, .. }
            )),
            "{name}: payload not verified"
        );
        g.bench_function(name, |b| b.iter(|| black_box(run(&pre, &body, post, &mut out))));
    }
    g.finish();
}

/// 64 MiB of `SET key:<n> <16 random bytes as hex>`: 57-60 bytes per command, like a cache write load.
fn small_sets() -> Vec<u8> {
    let mut stream = Vec::with_capacity(64 << 20);
    let mut n = 0u64;
    while stream.len() < 64 << 20 {
        let key = format!("key:{n}");
        let val = format!("{:016x}{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15), n);
        stream.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{val}\r\n", key.len(), val.len()).as_bytes(),
        );
        n += 1;
    }
    stream
}

fn command_stream(c: &mut Criterion) {
    let stream = small_sets();
    let pre = b"+CONTINUE 0123456789abcdef0123456789abcdef01234567\r\n";
    let mut g = c.benchmark_group("stream_64MiB_small_sets");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.sample_size(20);
    let mut out = Vec::with_capacity(SLICE);
    let mut d = Decoder::new();
    d.feed(Direction::ReplicaToMaster, b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n", Timestamp::ZERO, &mut out);
    d.feed(Direction::MasterToReplica, pre, Timestamp::ZERO, &mut out);
    g.bench_function("sets", |b| {
        b.iter(|| {
            let mut commands = 0usize;
            for slice in stream.chunks(SLICE) {
                out.clear();
                d.feed(Direction::MasterToReplica, slice, Timestamp::ZERO, &mut out);
                for e in &out {
                    if let Event::Stream(t) = &e.event {
                        commands += t.commands as usize;
                    }
                }
            }
            assert!(!d.is_opaque(Direction::MasterToReplica));
            black_box(commands)
        })
    });
    // The same bytes through a whole Link: decoding plus the story (counts, offsets, traffic).
    let mut link = replscope::link::FedLink::new(None, Timestamp::ZERO);
    link.on_bytes(Direction::ReplicaToMaster, b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n", Timestamp::ZERO);
    link.on_bytes(Direction::MasterToReplica, pre, Timestamp::ZERO);
    g.bench_function("sets_through_link", |b| {
        b.iter(|| {
            for slice in stream.chunks(SLICE) {
                link.on_bytes(Direction::MasterToReplica, slice, Timestamp::ZERO);
            }
            assert!(link.desyncs.is_empty());
            black_box(link.master_offset())
        })
    });
    g.finish();
}

fn link_rdb(c: &mut Criterion) {
    let body = big_rdb(256 << 20);
    let pre = preamble(false, body.len());
    let mut g = c.benchmark_group("rdb_256MiB_through_link");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(10);
    g.bench_function("sized", |b| {
        b.iter(|| {
            let mut link = replscope::link::FedLink::new(None, Timestamp::ZERO);
            link.on_bytes(Direction::ReplicaToMaster, b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n", Timestamp::ZERO);
            link.on_bytes(Direction::MasterToReplica, &pre, Timestamp::ZERO);
            for slice in body.chunks(SLICE) {
                link.on_bytes(Direction::MasterToReplica, slice, Timestamp::ZERO);
            }
            assert!(matches!(
                link.rdb.as_ref().and_then(|r| r.trailer),
                Some(replscope::wire::TrailerCheck::Ok { .. })
            ));
            black_box(link.phase())
        })
    });
    g.finish();
}

/// The per-read path of the proxy's core, without sockets: the connection's reader decodes a read, the
/// route's links take it, and the observer takes the changes (metrics, logs). Small SETs in 64 KiB reads
/// are the worst case for per-read work.
fn route_core(c: &mut Criterion) {
    use replscope::link::{Change, Links, Reader};
    use replscope::observe::observer::Observer;

    let stream = small_sets();
    let mut g = c.benchmark_group("stream_64MiB_small_sets");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.sample_size(20);
    let mut links = Links::new();
    let mut observer = Observer::new("r");
    let id = links.open(None, Timestamp::ZERO);
    let mut reader = Reader::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut feed = |links: &mut Links, observer: &mut Observer, dir, bytes: &[u8]| {
        links.on_decoded(id, reader.read(dir, bytes, Timestamp::ZERO), Timestamp::ZERO);
        changes.extend(links.drain_changes());
        for c in changes.drain(..) {
            observer.on_change(&c, links, Timestamp::ZERO);
        }
    };
    let handshake = replscope::wire::encode_command(&["REPLCONF", "listening-port", "6390"]);
    feed(&mut links, &mut observer, Direction::ReplicaToMaster, &handshake);
    let psync = replscope::wire::encode_command(&["PSYNC", "0123456789abcdef0123456789abcdef01234567", "1"]);
    feed(&mut links, &mut observer, Direction::ReplicaToMaster, &psync);
    let answer = b"+OK\r\n+CONTINUE 0123456789abcdef0123456789abcdef01234567\r\n";
    feed(&mut links, &mut observer, Direction::MasterToReplica, answer);
    g.bench_function("sets_through_links_and_observer", |b| {
        b.iter(|| {
            for slice in stream.chunks(SLICE) {
                feed(&mut links, &mut observer, Direction::MasterToReplica, slice);
            }
            black_box(links.get(id).and_then(|l| l.master_offset()))
        })
    });
    g.finish();
}

/// The cost of each read apart from the bytes: an RDB of one repeated byte (CRC aside, nothing to look at)
/// in 4 KiB and 16 KiB reads through the proxy's per-read core path (reader, links, observer).
fn per_read(c: &mut Criterion) {
    use replscope::link::{Change, Links, Reader};
    use replscope::observe::observer::Observer;

    let body = vec![7u8; 64 << 20];
    let mut g = c.benchmark_group("per_read_64MiB_rdb");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(20);
    for slice in [4096usize, 16384] {
        let mut links = Links::new();
        let mut observer = Observer::new("r");
        let id = links.open(None, Timestamp::ZERO);
        let mut reader = Reader::new();
        let mut changes: Vec<Change> = Vec::new();
        let mut feed = |links: &mut Links, observer: &mut Observer, dir, bytes: &[u8], now| {
            links.on_decoded(id, reader.read(dir, bytes, now), now);
            changes.extend(links.drain_changes());
            for c in changes.drain(..) {
                observer.on_change(&c, links, now);
            }
        };
        let handshake = replscope::wire::encode_command(&["REPLCONF", "listening-port", "6390"]);
        feed(&mut links, &mut observer, Direction::ReplicaToMaster, &handshake, Timestamp::ZERO);
        let psync = replscope::wire::encode_command(&["PSYNC", "?", "-1"]);
        feed(&mut links, &mut observer, Direction::ReplicaToMaster, &psync, Timestamp::ZERO);
        let answer: &[u8] =
            b"+OK\r\n+FULLRESYNC 0123456789abcdef0123456789abcdef01234567 0\r\n$999999999999\r\nREDIS0011\xfe\x00";
        feed(&mut links, &mut observer, Direction::MasterToReplica, answer, Timestamp::ZERO);
        let mut t = 1u64;
        g.bench_function(format!("reads_of_{slice}"), |b| {
            b.iter(|| {
                for s in body.chunks(slice) {
                    t += 1;
                    feed(&mut links, &mut observer, Direction::MasterToReplica, s, Timestamp::from_micros(t));
                }
                black_box(links.get(id).map(|l| l.traffic[0].bytes))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, rdb_path, command_stream, link_rdb, route_core, per_read);
criterion_main!(benches);
