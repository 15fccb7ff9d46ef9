//! The faults in force and what they do to each link, decided from the link model and the time.
//!
//! Sans-IO: the driver asks, for each chunk it is about to forward (and on a 100 ms tick while faults
//! exist, so time triggers act on idle links), what to do with it: forward it now, after a delay, after a
//! stall, throttled by a token bucket, or only its first bytes and then cut the link.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::fault::bucket::TokenBucket;
use crate::fault::spec::{FaultKind, FaultSpec, Scope, Trigger};
use crate::link::{CloseHow, FaultTouch, FaultType, Link, LinkId};
use crate::time::Timestamp;
use crate::wire::Direction;

/// A fault in force, as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fault {
    /// Its id.
    pub id: u64,
    /// What was asked.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// When it was created.
    pub created_at: Timestamp,
    /// How many links it fired on.
    pub fired: u64,
    /// The links it touched.
    pub links: Vec<LinkId>,
}

/// What a fault did to a link, for the link's story, the log and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touch {
    /// The fault.
    pub fault: u64,
    /// Its type.
    pub kind: FaultType,
    /// What happened, in words.
    pub action: String,
}

impl Touch {
    /// As the link's story keeps it.
    pub fn at(self, now: Timestamp) -> FaultTouch {
        FaultTouch { fault: self.fault, kind: self.kind, action: self.action, at: now }
    }
}

/// How to close a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// FIN or reset.
    pub how: CloseHow,
    /// Bytes of the current chunk to forward before closing.
    pub after: usize,
}

/// What to do with a chunk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Stop reading and forwarding for this long, then go on.
    pub stall: Option<Duration>,
    /// Hold the chunk back this long (latency).
    pub delay: Duration,
    /// Pace the chunk through the token bucket ([`Faults::throttle`]).
    pub throttle: bool,
    /// Close the link.
    pub cut: Option<Cut>,
    /// What the faults did, to record.
    pub touches: Vec<Touch>,
}

#[derive(Default)]
struct PerLink {
    fired_at: Option<Timestamp>,
    stalled: bool,
    limit_left: Option<u64>,
}

struct Entry {
    fault: Fault,
    open_at_creation: Option<HashSet<LinkId>>,
    per_link: HashMap<LinkId, PerLink>,
    /// Links it fired on that are still open.
    live: HashSet<LinkId>,
}

impl Entry {
    /// Expired: its time is up, or it fired its `times` and every link it fired on has ended.
    fn expired(&self, now: Timestamp) -> bool {
        let spec = &self.fault.spec;
        spec.expires_after.is_some_and(|d| now.since(self.fault.created_at) >= d)
            || (spec.times.is_some_and(|t| self.fault.fired >= t) && self.live.is_empty())
    }
}

/// The faults of a proxy.
#[derive(Default)]
pub struct Faults {
    next_id: u64,
    entries: Vec<Entry>,
    /// (link, direction) → bucket, for bandwidth faults.
    buckets: HashMap<(LinkId, Direction), TokenBucket>,
    rng: u64,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Faults { rng: 0x9E37_79B9_7F4A_7C15, ..Faults::default() }
    }

    /// Installs a fault at `now`; `open` are the links open now (for the `open` scope).
    pub fn add(&mut self, spec: FaultSpec, now: Timestamp, open: impl IntoIterator<Item = LinkId>) -> Fault {
        self.next_id += 1;
        let open_at_creation = (spec.scope == Scope::OpenNow).then(|| open.into_iter().collect());
        let fault = Fault { id: self.next_id, spec, created_at: now, fired: 0, links: Vec::new() };
        self.entries.push(Entry {
            fault: fault.clone(),
            open_at_creation,
            per_link: HashMap::new(),
            live: HashSet::new(),
        });
        fault
    }

    /// Removes a fault; whether it existed.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.fault.id != id);
        before != self.entries.len()
    }

    /// Removes every fault; how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        self.buckets.clear();
        n
    }

    /// Changes a bandwidth fault's rate; `None` if there is no such bandwidth fault.
    pub fn set_rate(&mut self, id: u64, rate: u64) -> Option<Fault> {
        let e = self.entries.iter_mut().find(|e| e.fault.id == id)?;
        let FaultKind::Bandwidth { rate_bytes_per_second } = &mut e.fault.spec.kind else { return None };
        *rate_bytes_per_second = rate.max(1);
        Some(e.fault.clone())
    }

    /// Drops faults that expired: their time is up, or they fired their `times` on links that have all
    /// ended (a bandwidth fault with `times=1` keeps throttling the link it fired on until that ends).
    pub fn expire(&mut self, now: Timestamp) {
        self.entries.retain(|e| !e.expired(now));
        if self.entries.is_empty() {
            self.buckets.clear();
        }
    }

    /// The faults in force.
    pub fn list(&self) -> Vec<Fault> {
        self.entries.iter().map(|e| e.fault.clone()).collect()
    }

    /// Whether any fault is in force (the driver ticks while there are).
    pub fn any(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Faults in force on `route` (theirs, and those of every route), by type.
    pub fn active_by_type(&self, route: &str) -> HashMap<FaultType, u64> {
        let mut m = HashMap::new();
        for e in self.entries.iter().filter(|e| e.fault.spec.route.as_deref().is_none_or(|r| r == route)) {
            *m.entry(e.fault.spec.kind.fault_type()).or_default() += 1;
        }
        m
    }

    /// Forgets a link that ended.
    pub fn forget(&mut self, id: LinkId) {
        for e in &mut self.entries {
            e.per_link.remove(&id);
            e.live.remove(&id);
        }
        self.buckets.retain(|(l, _), _| *l != id);
    }

    /// What to do with `n` bytes about to go `direction` on link `id` (on route `route`) at `now`.
    /// `n` is 0 on an idle tick.
    pub fn plan(
        &mut self,
        id: LinkId,
        route: &str,
        link: &Link,
        direction: Direction,
        n: usize,
        now: Timestamp,
    ) -> Plan {
        self.expire(now);
        let mut plan = Plan::default();
        let mut jitters = Vec::new();
        for e in &mut self.entries {
            let spec = &e.fault.spec;
            if spec.route.as_deref().is_some_and(|r| r != route)
                || e.open_at_creation.as_ref().is_some_and(|open| !open.contains(&id))
                || link.close.is_some()
            {
                continue;
            }
            if let Some(want) = &spec.replica
                && link.replica_endpoint().as_deref() != Some(want.as_str())
            {
                continue;
            }
            let state = e.per_link.entry(id).or_default();
            if state.fired_at.is_none() {
                let exhausted = spec.times.is_some_and(|t| e.fault.fired >= t);
                if exhausted || !triggered(spec.trigger, link, now) {
                    continue;
                }
                state.fired_at = Some(now);
                e.fault.fired += 1;
                e.fault.links.push(id);
                e.live.insert(id);
                if let FaultKind::Limit { bytes } = spec.kind {
                    state.limit_left = Some(bytes);
                }
                plan.touches.push(Touch {
                    fault: e.fault.id,
                    kind: spec.kind.fault_type(),
                    action: format!("fired ({})", describe_trigger(spec.trigger)),
                });
            }
            if !spec.direction.covers(direction) {
                continue;
            }
            match spec.kind {
                FaultKind::Bandwidth { .. } => plan.throttle = n > 0,
                FaultKind::Latency { delay, jitter } => {
                    if n > 0 {
                        jitters.push((delay, jitter));
                    }
                }
                FaultKind::Stall { duration } => {
                    if !state.stalled {
                        state.stalled = true;
                        plan.stall = Some(plan.stall.map_or(duration, |s| s.max(duration)));
                        plan.touches.push(Touch {
                            fault: e.fault.id,
                            kind: FaultType::Stall,
                            action: format!("stalled {} for {:.1} s", direction.as_str(), duration.as_secs_f64()),
                        });
                    }
                }
                FaultKind::Cut { how } => {
                    plan.cut = Some(Cut { how, after: 0 });
                    plan.touches.push(Touch {
                        fault: e.fault.id,
                        kind: FaultType::Cut,
                        action: format!("cut the link ({})", how_word(how)),
                    });
                }
                FaultKind::Limit { .. } => {
                    let left = state.limit_left.unwrap_or(0);
                    if (n as u64) >= left && (n > 0 || left == 0) {
                        let after = usize::try_from(left).unwrap_or(usize::MAX).min(n);
                        if plan.cut.is_none_or(|c| c.after > after) {
                            plan.cut = Some(Cut { how: CloseHow::Fin, after });
                        }
                        plan.touches.push(Touch {
                            fault: e.fault.id,
                            kind: FaultType::Limit,
                            action: format!(
                                "limit reached after {after} more bytes {}: cut the link",
                                direction.as_str()
                            ),
                        });
                    } else {
                        state.limit_left = Some(left - n as u64);
                    }
                }
            }
        }
        for (delay, jitter) in jitters {
            let d = self.sample(delay, jitter);
            plan.delay = plan.delay.max(d);
        }
        plan
    }

    /// How long `n` bytes going `direction` on link `id` must wait for the tightest bandwidth fault.
    pub fn throttle(&mut self, id: LinkId, direction: Direction, n: usize, now: Timestamp) -> Duration {
        let rate = self
            .entries
            .iter()
            .filter(|e| e.fault.spec.direction.covers(direction))
            .filter(|e| e.per_link.get(&id).is_some_and(|s| s.fired_at.is_some()))
            .filter_map(|e| match e.fault.spec.kind {
                FaultKind::Bandwidth { rate_bytes_per_second } => Some(rate_bytes_per_second),
                _ => None,
            })
            .min();
        let Some(rate) = rate else {
            self.buckets.remove(&(id, direction));
            return Duration::ZERO;
        };
        let bucket = self.buckets.entry((id, direction)).or_insert_with(|| TokenBucket::new(rate, now));
        if bucket.rate() != rate {
            bucket.set_rate(rate, now);
        }
        bucket.take(n as u64, now)
    }

    /// The current bandwidth cap on a link's direction, if any (pieces are sized from it).
    pub fn rate(&self, id: LinkId, direction: Direction) -> Option<u64> {
        self.buckets.get(&(id, direction)).map(TokenBucket::rate)
    }

    /// `delay ± jitter`, uniformly (xorshift; the proxy needs no better randomness).
    fn sample(&mut self, delay: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return delay;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        Duration::from_secs_f64((delay.as_secs_f64() + unit * jitter.as_secs_f64()).max(0.0))
    }
}

fn how_word(how: CloseHow) -> &'static str {
    if how == CloseHow::Reset { "reset" } else { "fin" }
}

fn describe_trigger(t: Trigger) -> String {
    match t {
        Trigger::Now => "now".into(),
        Trigger::Phase { phase } => format!("in {}", phase.as_str()),
        Trigger::InPhaseFor { phase, after } => format!("after {:.1} s in {}", after.as_secs_f64(), phase.as_str()),
        Trigger::RdbBytes { bytes } => format!("after {bytes} RDB bytes"),
        Trigger::RdbPercent { percent } => format!("after {percent}% of the RDB"),
    }
}

/// Whether a trigger holds for the link at `now`.
pub fn triggered(trigger: Trigger, link: &Link, now: Timestamp) -> bool {
    match trigger {
        Trigger::Now => true,
        Trigger::Phase { phase } => link.phase() == phase,
        Trigger::InPhaseFor { phase, after } => link.phase() == phase && now.since(link.phase_since()) >= after,
        Trigger::RdbBytes { bytes } => link.rdb.as_ref().is_some_and(|r| r.transferred >= bytes),
        Trigger::RdbPercent { percent } => link.rdb.as_ref().is_some_and(|r| {
            r.announced_size.is_some_and(|size| size > 0 && r.transferred as f64 * 100.0 >= percent * size as f64)
        }),
    }
}
