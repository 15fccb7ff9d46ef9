//! The shared state of one route: its links, the last closed ones, and the observer that turns their
//! changes into metrics and logs. Every update goes through here, under one short lock that is never
//! held across an await; each drains the changes it made to the observer before the lock is released.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::fault::{Fault, FaultSpec, Faults, Plan};
use crate::link::settings::ServerSettings;
use crate::link::{Change, Link, LinkId, Links, Reader, TransportEvent};
use crate::observe::api::{LinkView, WallClock};
use crate::observe::observer::Observer;
use crate::time::Timestamp;
use crate::wire::Direction;

/// How many closed links with a diagnosis (replicas' links) the API keeps.
pub const CLOSED_KEPT: usize = 256;

/// How many other closed links (plain clients, health probes) it keeps, apart, so a probe every few
/// seconds cannot push the replicas' stories out.
pub const CLOSED_OTHERS_KEPT: usize = 32;

/// A link whose connection ended and whose diagnosis settled: it no longer changes, so the API reads it
/// without holding the route's lock.
#[derive(Clone)]
struct ClosedLink {
    id: LinkId,
    link: Arc<Link>,
    peer: Option<SocketAddr>,
    /// The explanation as it read when the link was laid to rest (a later loop does not rewrite it).
    explanation: Option<String>,
}

struct Inner {
    links: Links,
    peers: HashMap<LinkId, SocketAddr>,
    /// Closed links with a diagnosis, oldest first.
    closed: VecDeque<ClosedLink>,
    /// Other closed links, oldest first.
    closed_others: VecDeque<ClosedLink>,
    observer: Observer,
    /// Changes drained from the links, on their way to the observer (reused).
    changes: Vec<Change>,
    faults: Faults,
    /// Connections that ended; their links move to `closed` once their diagnosis settles.
    finishing: HashSet<LinkId>,
}

/// One route (one master) and its links.
pub struct Route {
    name: String,
    epoch: Instant,
    /// The wall-clock time of `epoch`, for the API's RFC 3339 times.
    wall: WallClock,
    inner: Mutex<Inner>,
    /// Whether any fault is in force: read on every chunk without taking the lock.
    faults_present: AtomicBool,
}

impl Route {
    /// A route named `name`; its clock starts now.
    pub fn new(name: &str) -> Self {
        Self::with_settings(name, ServerSettings::default())
    }

    /// A route whose links are judged against the master's settings as the operator stated them.
    pub fn with_settings(name: &str, settings: ServerSettings) -> Self {
        Route {
            name: name.to_string(),
            epoch: Instant::now(),
            wall: WallClock { epoch: std::time::SystemTime::now() },
            inner: Mutex::new(Inner {
                links: Links::with_settings(settings),
                peers: HashMap::new(),
                closed: VecDeque::new(),
                closed_others: VecDeque::new(),
                observer: Observer::new(name, settings),
                changes: Vec::new(),
                faults: Faults::new(),
                finishing: HashSet::new(),
            }),
            faults_present: AtomicBool::new(false),
        }
    }

    /// Forgets a replica (its record and series) once it has had no open link for `after`.
    pub fn set_forget_after(&self, after: Option<Duration>) {
        self.lock().links.set_forget_after(after);
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The time now, as the core counts it.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not stop forwarding: the state is still consistent enough to serve.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a new connection.
    pub fn open(&self, peer: SocketAddr) -> LinkId {
        let now = self.now();
        let mut inner = self.lock();
        let id = inner.links.open(Some(peer.ip()), now);
        inner.peers.insert(id, peer);
        publish(&mut inner, now);
        id
    }

    /// Open links right now.
    pub fn open_links(&self) -> usize {
        self.lock().links.iter().filter(|(_, l)| l.close.is_none()).count()
    }

    /// Feeds forwarded bytes to the link. They are read with the connection's own [`Reader`] before the
    /// route's lock is taken, so the CRC and the framing of one link never hold up the others; under
    /// the lock the link only takes the events.
    pub fn on_bytes(&self, id: LinkId, direction: Direction, bytes: &[u8], reader: &mut Reader) {
        let now = self.now();
        let decoded = reader.read(direction, bytes, now);
        // A replica asking to sync may be one coming back: earlier diagnoses may change.
        let asked = decoded.events.iter().any(|e| {
            matches!(
                &e.event,
                crate::wire::Event::Command {
                    command: crate::wire::ReplicaCommand::Psync { .. } | crate::wire::ReplicaCommand::Sync
                }
            )
        });
        let mut inner = self.lock();
        inner.links.on_decoded(id, decoded, now);
        if asked {
            self.diagnose(&mut inner, now);
        } else {
            publish(&mut inner, now);
        }
    }

    /// Feeds a socket event to the link.
    pub fn on_transport(&self, id: LinkId, event: TransportEvent) {
        let now = self.now();
        let mut inner = self.lock();
        inner.links.on_transport(id, event, now);
        if matches!(event, TransportEvent::Closed { .. }) {
            self.diagnose(&mut inner, now);
        } else {
            publish(&mut inner, now);
        }
    }

    /// The master could not be reached for this link.
    pub fn connect_failed(&self, id: LinkId, error: &std::io::Error) {
        let now = self.now();
        let mut inner = self.lock();
        inner.links.on_connect_failed(id, error.kind(), error.to_string(), now);
        self.diagnose(&mut inner, now);
    }

    /// The connection is over: the link moves to the closed ones once its diagnosis has settled.
    pub fn finish(&self, id: LinkId) {
        let now = self.now();
        let mut inner = self.lock();
        inner.faults.forget(id);
        inner.finishing.insert(id);
        self.diagnose(&mut inner, now);
    }

    /// Settles diagnoses whose time has come (the proxy calls this every second).
    pub fn tick(&self) {
        let now = self.now();
        let mut inner = self.lock();
        self.diagnose(&mut inner, now);
    }

    fn diagnose(&self, inner: &mut Inner, now: Timestamp) {
        inner.links.diagnose(now);
        publish(inner, now);
        let done: Vec<LinkId> = inner.finishing.iter().copied().filter(|id| inner.links.is_settled(*id)).collect();
        for id in done {
            inner.finishing.remove(&id);
            let peer = inner.peers.remove(&id);
            if let Some(link) = inner.links.remove(id) {
                let explanation = self.explain(&link, inner.links.histories());
                let (ring, kept) = if link.diagnosis.is_some() {
                    (&mut inner.closed, CLOSED_KEPT)
                } else {
                    (&mut inner.closed_others, CLOSED_OTHERS_KEPT)
                };
                if ring.len() == kept {
                    ring.pop_front();
                }
                ring.push_back(ClosedLink { id, link: Arc::new(link), peer, explanation });
            }
        }
    }

    /// Prometheus text for this route.
    pub fn render_metrics(&self) -> String {
        let now = self.now();
        let mut inner = self.lock();
        inner.faults.expire(now);
        let Inner { links, observer, faults, .. } = &mut *inner;
        let active = faults.active_by_type();
        self.faults_present.store(faults.any(), Ordering::Relaxed);
        observer.render(links, &active, now)
    }

    /// Whether any fault is in force (cheap; no lock).
    pub fn faults_present(&self) -> bool {
        self.faults_present.load(Ordering::Relaxed)
    }

    /// What the faults say about `n` bytes about to go `direction` on a link (0 on an idle tick). Their
    /// actions are recorded in the link's story, logged and counted.
    pub fn plan(&self, id: LinkId, direction: Direction, n: usize) -> Plan {
        let now = self.now();
        let mut inner = self.lock();
        let Inner { links, faults, .. } = &mut *inner;
        let plan = match links.get(id) {
            Some(link) => faults.plan(id, &self.name, link, direction, n, now),
            None => Plan::default(),
        };
        self.faults_present.store(faults.any(), Ordering::Relaxed);
        for touch in &plan.touches {
            links.on_fault(id, touch.clone().at(now));
        }
        if !plan.touches.is_empty() {
            publish(&mut inner, now);
        }
        plan
    }

    /// How long `n` bytes must wait for the bandwidth faults on this link and direction.
    pub fn throttle(&self, id: LinkId, direction: Direction, n: usize) -> Duration {
        let now = self.now();
        self.lock().faults.throttle(id, direction, n, now)
    }

    /// The bandwidth cap in force on a link's direction.
    pub fn rate(&self, id: LinkId, direction: Direction) -> Option<u64> {
        self.lock().faults.rate(id, direction)
    }

    /// Installs a fault.
    pub fn add_fault(&self, spec: FaultSpec) -> Fault {
        let now = self.now();
        let mut inner = self.lock();
        let open: Vec<LinkId> = inner.links.iter().filter(|(_, l)| l.close.is_none()).map(|(id, _)| id).collect();
        let fault = inner.faults.add(spec, now, open);
        self.faults_present.store(true, Ordering::Relaxed);
        tracing::info!(route = %self.name, fault = fault.id, kind = fault.spec.kind.fault_type().as_str(), "fault {} installed", fault.id);
        fault
    }

    /// The faults in force.
    pub fn faults(&self) -> Vec<Fault> {
        let now = self.now();
        let mut inner = self.lock();
        inner.faults.expire(now);
        self.faults_present.store(inner.faults.any(), Ordering::Relaxed);
        inner.faults.list()
    }

    /// Removes a fault; whether it existed.
    pub fn remove_fault(&self, id: u64) -> bool {
        let mut inner = self.lock();
        let removed = inner.faults.remove(id);
        self.faults_present.store(inner.faults.any(), Ordering::Relaxed);
        if removed {
            tracing::info!(route = %self.name, fault = id, "fault {id} removed");
        }
        removed
    }

    /// Removes every fault; how many there were.
    pub fn clear_faults(&self) -> usize {
        let mut inner = self.lock();
        let n = inner.faults.clear();
        self.faults_present.store(false, Ordering::Relaxed);
        tracing::info!(route = %self.name, "{n} faults removed");
        n
    }

    /// Changes a bandwidth fault's rate.
    pub fn set_fault_rate(&self, id: u64, rate: u64) -> Option<Fault> {
        let fault = self.lock().faults.set_rate(id, rate)?;
        tracing::info!(route = %self.name, fault = id, rate, "fault {id}: rate now {rate} B/s");
        Some(fault)
    }

    /// Every open link and the last closed ones, by id, as the API shows them. Only the open links are
    /// rendered under the lock; the closed ones (most of the answer) after it is released.
    pub fn links_json(&self) -> serde_json::Value {
        let now = self.now();
        let (mut views, closed) = {
            let inner = self.lock();
            let histories = inner.links.histories();
            let open: Vec<serde_json::Value> = inner
                .links
                .iter()
                .map(|(id, link)| {
                    let explanation = self.explain(link, histories);
                    view(id, &self.name, inner.peers.get(&id).copied(), link, now, explanation, &self.wall)
                })
                .collect();
            let closed: Vec<ClosedLink> = inner.closed.iter().chain(&inner.closed_others).cloned().collect();
            (open, closed)
        };
        views.extend(
            closed.iter().map(|c| view(c.id, &self.name, c.peer, &c.link, now, c.explanation.clone(), &self.wall)),
        );
        views.sort_by_key(|v| v["id"].as_u64());
        serde_json::Value::Array(views)
    }

    /// Every replica's record (failed full syncs, loops), as the API shows it.
    pub fn replicas_json(&self) -> serde_json::Value {
        let inner = self.lock();
        let mut v: Vec<serde_json::Value> = inner
            .links
            .histories()
            .iter()
            .map(|(replica, h)| {
                let mut v = serde_json::json!({
                    "replica": replica,
                    "in_loop": h.full.in_loop,
                    "loop_since": h.full.since,
                    "dominant_cause": h.dominant_cause().map(|c| c.as_str()),
                    "failed_full_syncs": h.full.attempts.iter().map(|(at, c)| serde_json::json!({"at": at, "cause": c.as_str()})).collect::<Vec<_>>(),
                    "in_partial_loop": h.partial.in_loop,
                    "partial_loop_since": h.partial.since,
                    "partial_drops": h.partial.attempts.iter().map(|(at, d)| serde_json::json!({"at": at, "after_ms": d.after_ms, "largest_command_bytes": d.largest_command_bytes})).collect::<Vec<_>>(),
                });
                self.wall.annotate(&mut v);
                v
            })
            .collect();
        v.sort_by(|a, b| a["replica"].as_str().cmp(&b["replica"].as_str()));
        serde_json::Value::Array(v)
    }

    /// One link as the API shows it.
    pub fn link_json(&self, id: LinkId) -> Option<serde_json::Value> {
        let now = self.now();
        let closed = {
            let inner = self.lock();
            if let Some(link) = inner.links.get(id) {
                let explanation = self.explain(link, inner.links.histories());
                return Some(view(id, &self.name, inner.peers.get(&id).copied(), link, now, explanation, &self.wall));
            }
            inner.closed.iter().chain(&inner.closed_others).find(|c| c.id == id).cloned()
        }?;
        Some(view(closed.id, &self.name, closed.peer, &closed.link, now, closed.explanation, &self.wall))
    }

    fn explain(&self, link: &Link, histories: &crate::link::history::Histories) -> Option<String> {
        let d = link.diagnosis.as_ref()?;
        let record = link.replica_endpoint().and_then(|ep| histories.get(&ep).cloned());
        Some(crate::observe::explain::explain(link, d, record.as_ref()))
    }
}

fn view(
    id: LinkId,
    route: &str,
    peer: Option<SocketAddr>,
    link: &Link,
    now: Timestamp,
    explanation: Option<String>,
    wall: &WallClock,
) -> serde_json::Value {
    let mut v = serde_json::to_value(LinkView::new(id, route, peer.map(|p| p.to_string()), link, now, explanation))
        .unwrap_or_else(|e| serde_json::json!({ "id": id, "error": e.to_string() }));
    wall.annotate(&mut v);
    v
}

/// Hands the changes the links made to the observer, oldest first.
fn publish(inner: &mut Inner, now: Timestamp) {
    let Inner { links, observer, changes, .. } = inner;
    changes.extend(links.drain_changes());
    for change in changes.drain(..) {
        observer.on_change(&change, links, now);
    }
}
