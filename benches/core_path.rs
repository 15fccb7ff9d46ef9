//! The per-chunk path of the proxy's core, without sockets: a connection's reader decodes a read, the
//! route's links take it, and the observer takes the changes (metrics, logs). A stream of small SETs in
//! 64 KiB reads, the worst case for per-read work.
//!
//! Run: `cargo bench --bench core_path`.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use replscope::link::settings::ServerSettings;
use replscope::link::{Change, Links, Reader};
use replscope::observe::observer::Observer;
use replscope::time::Timestamp;
use replscope::wire::Direction;
use std::hint::black_box;
const SLICE: usize = 64 << 10;
fn bench(c: &mut Criterion) {
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
    let mut g = c.benchmark_group("core_path");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.sample_size(20);
    let mut links = Links::new();
    let mut obs = Observer::new("r", ServerSettings::default());
    let id = links.open(None, Timestamp::ZERO);
    let mut d = Reader::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut feed = |links: &mut Links, obs: &mut Observer, d: &mut Reader, dir, b: &[u8], t| {
        links.on_decoded(id, d.read(dir, b, t), t);
        changes.extend(links.drain_changes());
        for c in changes.drain(..) {
            obs.on_change(&c, links, t);
        }
    };
    feed(&mut links, &mut obs, &mut d, Direction::ReplicaToMaster, b"*3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n$4\r\n6390\r\n*3\r\n$5\r\nPSYNC\r\n$40\r\n0123456789abcdef0123456789abcdef01234567\r\n$1\r\n1\r\n", Timestamp::ZERO);
    feed(
        &mut links,
        &mut obs,
        &mut d,
        Direction::MasterToReplica,
        b"+OK\r\n+CONTINUE 0123456789abcdef0123456789abcdef01234567\r\n",
        Timestamp::ZERO,
    );
    g.bench_function("sets_decode_links_observer", |b| {
        b.iter(|| {
            for slice in stream.chunks(SLICE) {
                feed(&mut links, &mut obs, &mut d, Direction::MasterToReplica, slice, Timestamp::ZERO);
            }
            black_box(links.get(id).and_then(|l| l.master_offset()))
        })
    });
    g.finish();
}
criterion_group!(benches, bench);
criterion_main!(benches);
