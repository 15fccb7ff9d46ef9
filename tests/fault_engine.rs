//! The fault engine and its token bucket on tokio's paused clock: virtual time moves only when the test
//! sleeps, so rates, triggers and expiries are checked to the microsecond without waiting.

use std::time::Duration;

use replscope::fault::{FaultRequest, FaultSpec, Faults};
use replscope::link::{CloseHow, FaultType, FedLink, Link, LinkId, Phase};
use replscope::time::Timestamp;
use replscope::wire::Direction;
use tokio::time::Instant;

const M2R: Direction = Direction::MasterToReplica;
const R2M: Direction = Direction::ReplicaToMaster;

struct Clock(Instant);

impl Clock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.0.elapsed().as_micros() as u64)
    }
}

fn spec(words: &str) -> FaultSpec {
    FaultRequest::from_words(words).and_then(FaultRequest::into_spec).expect(words)
}

use replscope::wire::encode_command as resp;

/// A replica link up to the start of a `len`-byte disk-framed RDB.
fn link_in_transfer(len: usize, now: Timestamp) -> FedLink {
    let mut l = FedLink::new(Some([127, 0, 0, 1].into()), now);
    l.on_bytes(R2M, &resp(&["REPLCONF", "listening-port", "6390"]), now);
    l.on_bytes(R2M, &resp(&["PSYNC", "?", "-1"]), now);
    l.on_bytes(M2R, b"+OK\r\n+FULLRESYNC 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 0\r\n", now);
    l.on_bytes(M2R, format!("${len}\r\nREDIS0011").as_bytes(), now);
    l
}

#[tokio::test(start_paused = true)]
async fn a_bandwidth_fault_paces_bytes_to_its_rate_and_follows_a_rate_change() {
    let clock = Clock(Instant::now());
    let mut faults = Faults::new();
    let id = LinkId(1);
    let link = link_in_transfer(64 << 20, clock.now());
    let f = faults.add(spec("bandwidth rate=4MiB/s direction=master-to-replica"), clock.now(), []);
    let start = Instant::now();
    for _ in 0..20 {
        send(&mut faults, id, &link, &clock, 1 << 20).await;
    }
    let secs = start.elapsed().as_secs_f64();
    assert!((secs - 5.0).abs() < 0.05, "20 MiB at 4 MiB/s took {secs} s");
    assert!(!faults.plan(id, "main", &link, R2M, 100, clock.now()).throttle, "the other direction is free");

    assert!(faults.set_rate(f.id, 8 << 20).is_some());
    let start = Instant::now();
    for _ in 0..16 {
        send(&mut faults, id, &link, &clock, 1 << 20).await;
    }
    let secs = start.elapsed().as_secs_f64();
    assert!((secs - 2.0).abs() < 0.05, "16 MiB at the new 8 MiB/s took {secs} s");
}

/// What the driver does with a chunk: plan it, then pace 64 KiB pieces through the bucket, sleeping as
/// told before each.
async fn send(faults: &mut Faults, id: LinkId, link: &Link, clock: &Clock, total: usize) {
    let plan = faults.plan(id, "main", link, M2R, total, clock.now());
    assert!(plan.throttle);
    let mut sent = 0;
    while sent < total {
        tokio::time::sleep(faults.throttle(id, M2R, 65536, clock.now())).await;
        sent += 65536;
    }
}

#[tokio::test(start_paused = true)]
async fn triggers_fire_on_the_link_s_progress_and_time_in_phase() {
    let clock = Clock(Instant::now());
    let mut faults = Faults::new();
    let id = LinkId(7);
    let mut link = link_in_transfer(1000, clock.now());
    faults.add(spec("cut how=reset when=rdb-percent=50"), clock.now(), []);
    faults.add(spec("stall duration=3s when=phase=rdb-transfer+2s direction=master-to-replica"), clock.now(), []);

    // 9 of 1000 bytes: neither fires.
    let plan = faults.plan(id, "main", &link, M2R, 9, clock.now());
    assert_eq!((plan.cut, plan.stall), (None, None));
    // Half of the RDB: the cut fires, with a reset, before this chunk goes.
    link.on_bytes(M2R, &[0u8; 491], clock.now());
    let plan = faults.plan(id, "main", &link, M2R, 491, clock.now());
    assert_eq!(plan.cut.map(|c| (c.how, c.after)), Some((CloseHow::Reset, 0)));
    assert!(plan.touches.iter().any(|t| t.kind == FaultType::Cut && t.action.contains("fired (after 50% of the RDB)")));

    // Two seconds into rdb_transfer, the stall fires, once.
    tokio::time::sleep(Duration::from_millis(1999)).await;
    assert_eq!(faults.plan(id, "main", &link, M2R, 0, clock.now()).stall, None);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(link.phase(), Phase::RdbTransfer);
    assert_eq!(faults.plan(id, "main", &link, M2R, 0, clock.now()).stall, Some(Duration::from_secs(3)));
    assert_eq!(faults.plan(id, "main", &link, M2R, 0, clock.now()).stall, None, "a stall fires once per link");
}

#[tokio::test(start_paused = true)]
async fn expiry_times_scope_and_targets() {
    let clock = Clock(Instant::now());
    let mut faults = Faults::new();
    let link = link_in_transfer(1000, clock.now());

    // `for`: gone after its time.
    faults.add(spec("latency delay=250ms for=10s"), clock.now(), []);
    assert_eq!(faults.plan(LinkId(1), "main", &link, M2R, 10, clock.now()).delay, Duration::from_millis(250));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(faults.plan(LinkId(1), "main", &link, M2R, 10, clock.now()).delay, Duration::ZERO);
    assert!(!faults.any());

    // `times`: fires on one link, not the next; expires once that link has ended.
    faults.add(spec("cut times=1"), clock.now(), []);
    assert!(faults.plan(LinkId(2), "main", &link, M2R, 10, clock.now()).cut.is_some());
    assert!(faults.plan(LinkId(3), "main", &link, M2R, 10, clock.now()).cut.is_none());
    assert!(faults.any(), "still in force while the link it cut is being closed");
    faults.forget(LinkId(2));
    faults.expire(clock.now());
    assert!(!faults.any(), "expired");

    // `scope=open`: only the links open when it was made.
    faults.add(spec("cut scope=open"), clock.now(), [LinkId(4)]);
    assert!(faults.plan(LinkId(5), "main", &link, M2R, 10, clock.now()).cut.is_none());
    assert!(faults.plan(LinkId(4), "main", &link, M2R, 10, clock.now()).cut.is_some());
    faults.clear();

    // Route and replica targets.
    faults.add(spec("cut route=other"), clock.now(), []);
    faults.add(spec("stall duration=1s replica=10.9.9.9:6390"), clock.now(), []);
    let plan = faults.plan(LinkId(6), "main", &link, M2R, 10, clock.now());
    assert_eq!((plan.cut, plan.stall), (None, None));
    faults.add(spec("stall duration=1s replica=127.0.0.1:6390"), clock.now(), []);
    assert_eq!(faults.plan(LinkId(6), "main", &link, M2R, 10, clock.now()).stall, Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn a_limit_lets_exactly_its_bytes_through_then_cuts_and_jitter_stays_in_bounds() {
    let clock = Clock(Instant::now());
    let mut faults = Faults::new();
    let link = link_in_transfer(1 << 20, clock.now());
    faults.add(spec("limit bytes=1000 direction=master-to-replica"), clock.now(), []);
    let id = LinkId(1);
    assert!(faults.plan(id, "main", &link, R2M, 5000, clock.now()).cut.is_none(), "other direction");
    assert!(faults.plan(id, "main", &link, M2R, 600, clock.now()).cut.is_none());
    let plan = faults.plan(id, "main", &link, M2R, 600, clock.now());
    assert_eq!(plan.cut.map(|c| (c.how, c.after)), Some((CloseHow::Fin, 400)), "600 + 400 = 1000 bytes, then the cut");
    faults.clear();

    faults.add(spec("latency delay=200ms jitter=50ms"), clock.now(), []);
    let delays: Vec<Duration> = (0..500).map(|_| faults.plan(id, "main", &link, M2R, 1, clock.now()).delay).collect();
    assert!(delays.iter().all(|d| *d >= Duration::from_millis(150) && *d <= Duration::from_millis(250)));
    let spread = delays.iter().max().copied().unwrap_or_default() - delays.iter().min().copied().unwrap_or_default();
    assert!(spread > Duration::from_millis(80), "jitter spreads the delays: {spread:?}");
}
