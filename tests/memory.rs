//! Memory per link does not grow with the RDB or with value sizes: a counting allocator watches the heap
//! while a link is fed a 32 MiB payload (both framings), a 16 MiB value in the stream, and a client's
//! 16 MiB command, in 64 KiB slices as a proxy would.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use replscope::link::FedLink;
use replscope::time::Timestamp;
use replscope::wire::Direction;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(live, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::SeqCst) + new_size - layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SLICE: usize = 64 * 1024;
const MARK: &str = "5e2b1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a33";
const M2R: Direction = Direction::MasterToReplica;
const R2M: Direction = Direction::ReplicaToMaster;

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Feeds `total` bytes produced by `fill` in 64 KiB slices from one reused buffer, after `warmup` slices;
/// returns how far the heap rose above what it held after the warm-up.
fn growth(link: &mut FedLink, dir: Direction, total: usize, mut fill: impl FnMut(usize, &mut [u8])) -> usize {
    let mut buf = vec![0u8; SLICE];
    let mut fed = 0;
    let mut baseline = None;
    let mut slice_no = 0;
    while fed < total {
        let n = SLICE.min(total - fed);
        fill(fed, &mut buf[..n]);
        link.on_bytes(dir, &buf[..n], Timestamp::from_micros(fed as u64));
        fed += n;
        slice_no += 1;
        if slice_no == 4 {
            let live = LIVE.load(Ordering::SeqCst);
            PEAK.store(live, Ordering::SeqCst);
            baseline = Some(live);
        }
    }
    PEAK.load(Ordering::SeqCst).saturating_sub(baseline.unwrap_or(0))
}

/// Bytes that never contain the EOF mark (which is hex digits): every byte is ≥ 0x80.
fn payload_bytes(at: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = 0x80 | ((at + i).wrapping_mul(31) >> 3) as u8;
    }
}

fn synced_link() -> FedLink {
    let mut link = FedLink::new(None, Timestamp::ZERO);
    link.on_bytes(R2M, &resp(&[b"PSYNC", b"?", b"-1"]), Timestamp::ZERO);
    link.on_bytes(M2R, b"+FULLRESYNC 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 0\r\n", Timestamp::ZERO);
    link
}

#[test]
fn memory_does_not_grow_with_payload_or_value_size() {
    const LIMIT: usize = 64 * 1024;
    const BIG: usize = 32 << 20;

    // An EOF-marked payload.
    let mut link = synced_link();
    link.on_bytes(M2R, format!("$EOF:{MARK}\r\nREDIS0011").as_bytes(), Timestamp::ZERO);
    let grew = growth(&mut link, M2R, BIG, payload_bytes);
    assert!(grew < LIMIT, "EOF payload: heap grew {grew} bytes over {BIG} payload bytes");
    link.on_bytes(M2R, MARK.as_bytes(), Timestamp::ZERO);
    assert_eq!(link.rdb.as_ref().map(|r| r.transferred), Some(BIG as u64 + 9));

    // A sized payload, then a stream command holding one 16 MiB value.
    let mut link = synced_link();
    link.on_bytes(M2R, format!("${}\r\nREDIS0011", BIG + 9).as_bytes(), Timestamp::ZERO);
    let grew = growth(&mut link, M2R, BIG, payload_bytes);
    assert!(grew < LIMIT, "sized payload: heap grew {grew} bytes");
    let value = 16usize << 20;
    link.on_bytes(M2R, format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${value}\r\n").as_bytes(), Timestamp::ZERO);
    let grew = growth(&mut link, M2R, value, payload_bytes);
    assert!(grew < LIMIT, "a 16 MiB stream value: heap grew {grew} bytes");
    link.on_bytes(M2R, b"\r\n", Timestamp::ZERO);
    assert_eq!(link.stream.count(replscope::wire::CommandName::Set), 1);
    assert!(link.desyncs.is_empty());

    // A client's 16 MiB command.
    let mut link = FedLink::new(None, Timestamp::ZERO);
    link.on_bytes(R2M, format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${value}\r\n").as_bytes(), Timestamp::ZERO);
    let grew = growth(&mut link, R2M, value, payload_bytes);
    assert!(grew < 2 * LIMIT, "a client's 16 MiB command: heap grew {grew} bytes");
    assert_eq!(link.kind, replscope::link::LinkKind::Client);
}
