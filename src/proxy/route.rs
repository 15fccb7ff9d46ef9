//! The shared state of one route: its links, the last closed ones, and the observer that turns their
//! changes into metrics and logs. Every update goes through here, under one short lock that is never
//! held across an await; each drains the changes it made to the observer before the lock is released.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use crate::fault::Plan;
use crate::link::settings::ServerSettings;
use crate::link::{Change, Link, LinkId, Links, Reader, TransportEvent};
use crate::observe::api::{LinkView, WallClock};
use crate::observe::observer::Observer;
use crate::observe::series::Exposition;
use crate::proxy::shared::Shared;
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
    /// Connections that ended; their links move to `closed` once their diagnosis settles.
    finishing: HashSet<LinkId>,
}

/// One route (one master) and its links.
pub struct Route {
    name: String,
    shared: Arc<Shared>,
    inner: Mutex<Inner>,
}

impl Route {
    /// A route whose links are judged against the master's settings as the operator stated them, on
    /// the clock, ids and faults of `shared`.
    pub fn new(name: &str, settings: ServerSettings, shared: Arc<Shared>) -> Self {
        Route {
            name: name.to_string(),
            shared,
            inner: Mutex::new(Inner {
                links: Links::with_settings(settings),
                peers: HashMap::new(),
                closed: VecDeque::new(),
                closed_others: VecDeque::new(),
                observer: Observer::new(name),
                changes: Vec::new(),
                finishing: HashSet::new(),
            }),
        }
    }

    /// Judges links opened from now on against these settings (a reload); open links keep theirs.
    pub fn set_settings(&self, settings: ServerSettings) {
        self.lock().links.set_settings(settings);
    }

    /// What the route shares with the others of its process.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
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
        self.shared.now()
    }

    fn wall(&self) -> &WallClock {
        self.shared.wall()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not stop forwarding: the state is still consistent enough to serve.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a new connection.
    pub fn open(&self, peer: SocketAddr) -> LinkId {
        let now = self.now();
        let mut inner = self.lock();
        let id = inner.links.open_as(self.shared.next_link(), Some(peer.ip()), now);
        inner.peers.insert(id, peer);
        publish(&mut inner, now);
        id
    }

    /// Open links right now.
    pub fn open_links(&self) -> usize {
        self.lock().links.iter().filter(|(_, l)| l.close.is_none()).count()
    }

    /// The ids of the open links.
    pub fn open_ids(&self) -> Vec<LinkId> {
        self.lock().links.iter().filter(|(_, l)| l.close.is_none()).map(|(id, _)| id).collect()
    }

    /// Feeds forwarded bytes to the link. They are read with the connection's own [`Reader`] before the
    /// route's lock is taken, so the CRC and the framing of one link never hold up the others; under
    /// the lock the link only takes the events.
    pub fn on_bytes(&self, id: LinkId, direction: Direction, bytes: &[u8], reader: &mut Reader) {
        let now = self.now();
        let decoded = reader.read(direction, bytes, now);
        let mut inner = self.lock();
        inner.links.on_decoded(id, decoded, now);
        publish(&mut inner, now);
    }

    /// Feeds a socket event to the link.
    pub fn on_transport(&self, id: LinkId, event: TransportEvent) {
        let now = self.now();
        let mut inner = self.lock();
        inner.links.on_transport(id, event, now);
        if matches!(event, TransportEvent::Closed { .. }) {
            inner.links.diagnose_closed(id, now);
        }
        publish(&mut inner, now);
    }

    /// The master could not be reached for this link.
    pub fn connect_failed(&self, id: LinkId, error: &std::io::Error) {
        let now = self.now();
        let mut inner = self.lock();
        inner.links.on_connect_failed(id, error.kind(), error.to_string(), now);
        inner.links.diagnose_closed(id, now);
        publish(&mut inner, now);
    }

    /// The connection is over: the link moves to the closed ones once its diagnosis has settled.
    pub fn finish(&self, id: LinkId) {
        let now = self.now();
        let mut inner = self.lock();
        self.shared.faults().forget(id);
        inner.finishing.insert(id);
        publish(&mut inner, now);
        self.put_away([id], &mut inner);
    }

    /// Takes what the master said about itself (introspection).
    pub fn on_master_report(&self, report: &crate::introspect::MasterReport) {
        let now = self.now();
        let mut inner = self.lock();
        inner.links.on_master_report(report);
        publish(&mut inner, now);
    }

    /// Asking the master about itself failed.
    pub fn introspection_failed(&self, failure: crate::introspect::Failure) {
        let now = self.now();
        let mut inner = self.lock();
        inner.links.on_introspection_failed(failure);
        publish(&mut inner, now);
    }

    /// The settings new links are judged against, with where each came from, for logs.
    pub fn settings_in_force(&self) -> String {
        let s = self.lock().links.settings();
        let valkey_8 = false;
        [s.output_buffer_limit().1, s.backlog(valkey_8).1, s.repl_timeout().1]
            .iter()
            .map(|u| u.describe())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// How often the master should be asked about itself now.
    pub fn introspection_pace(&self) -> crate::introspect::Pace {
        let now = self.now();
        self.lock().links.introspection_pace(now)
    }

    /// Refines and settles diagnoses with what happened since (the replicas that came back, the master
    /// refusing), and puts away the links that are done: the proxy calls this every second. Events only
    /// diagnose the link they concern, so a storm of closes costs one pass here, not one per close.
    pub fn tick(&self) {
        let now = self.now();
        let mut inner = self.lock();
        inner.links.diagnose(now);
        publish(&mut inner, now);
        let mut finishing: Vec<LinkId> = inner.finishing.iter().copied().collect();
        finishing.sort_unstable();
        self.put_away(finishing, &mut inner);
    }

    /// Moves the finished links among `ids` whose diagnosis has settled (or that need none) to the closed
    /// ones, each with its explanation.
    fn put_away(&self, ids: impl IntoIterator<Item = LinkId>, inner: &mut Inner) {
        for id in ids {
            if !inner.finishing.contains(&id) || !inner.links.is_settled(id) {
                continue;
            }
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

    /// Adds this route's metrics to `out`.
    pub fn render_into(&self, out: &mut Exposition) {
        let now = self.now();
        let mut inner = self.lock();
        let active = {
            let mut faults = self.shared.faults();
            faults.expire(now);
            self.shared.note_faults(&faults);
            faults.active_by_type(&self.name)
        };
        let Inner { links, observer, .. } = &mut *inner;
        observer.render_into(links, &active, now, out);
    }

    /// Whether any fault is in force on the process (cheap; no lock).
    pub fn faults_present(&self) -> bool {
        self.shared.faults_present()
    }

    /// What the faults say about `n` bytes about to go `direction` on a link (0 on an idle tick). Their
    /// actions are recorded in the link's story, logged and counted.
    pub fn plan(&self, id: LinkId, direction: Direction, n: usize) -> Plan {
        let now = self.now();
        let mut inner = self.lock();
        let plan = match inner.links.get(id) {
            Some(link) => {
                let mut faults = self.shared.faults();
                let plan = faults.plan(id, &self.name, link, direction, n, now);
                self.shared.note_faults(&faults);
                plan
            }
            None => Plan::default(),
        };
        for touch in &plan.touches {
            inner.links.on_fault(id, touch.clone().at(now));
        }
        if !plan.touches.is_empty() {
            publish(&mut inner, now);
        }
        plan
    }

    /// How long `n` bytes must wait for the bandwidth faults on this link and direction.
    pub fn throttle(&self, id: LinkId, direction: Direction, n: usize) -> Duration {
        let now = self.now();
        self.shared.faults().throttle(id, direction, n, now)
    }

    /// The bandwidth cap in force on a link's direction.
    pub fn rate(&self, id: LinkId, direction: Direction) -> Option<u64> {
        self.shared.faults().rate(id, direction)
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
                    view(id, &self.name, inner.peers.get(&id).copied(), link, now, explanation, self.wall())
                })
                .collect();
            let closed: Vec<ClosedLink> = inner.closed.iter().chain(&inner.closed_others).cloned().collect();
            (open, closed)
        };
        views.extend(
            closed.iter().map(|c| view(c.id, &self.name, c.peer, &c.link, now, c.explanation.clone(), self.wall())),
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
                    "route": self.name,
                    "replica": replica,
                    "in_loop": h.full.in_loop,
                    "loop_since": h.full.since,
                    "dominant_cause": h.dominant_cause().map(|c| c.as_str()),
                    "failed_full_syncs": h.full.attempts.iter().map(|(at, c)| serde_json::json!({"at": at, "cause": c.as_str()})).collect::<Vec<_>>(),
                    "in_partial_loop": h.partial.in_loop,
                    "partial_loop_since": h.partial.since,
                    "partial_drops": h.partial.attempts.iter().map(|(at, d)| serde_json::json!({"at": at, "after_ms": d.after_ms, "largest_command_bytes": d.largest_command_bytes})).collect::<Vec<_>>(),
                });
                self.wall().annotate(&mut v);
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
                return Some(view(id, &self.name, inner.peers.get(&id).copied(), link, now, explanation, self.wall()));
            }
            inner.closed.iter().chain(&inner.closed_others).find(|c| c.id == id).cloned()
        }?;
        Some(view(closed.id, &self.name, closed.peer, &closed.link, now, closed.explanation, self.wall()))
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
