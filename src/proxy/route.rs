//! The shared state of one route: its links, the last closed ones, and the observer that turns their
//! changes into metrics and logs. Every update goes through here, under one short lock that is never
//! held across an await.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use crate::link::{Link, LinkId, Links, TransportEvent};
use crate::observe::api::LinkView;
use crate::observe::metrics::Observer;
use crate::time::Timestamp;
use crate::wire::Direction;

/// How many closed links the API keeps.
pub const CLOSED_KEPT: usize = 256;

struct Inner {
    links: Links,
    peers: HashMap<LinkId, SocketAddr>,
    closed: VecDeque<(LinkId, Link, Option<SocketAddr>)>,
    observer: Observer,
}

/// One route (one master) and its links.
pub struct Route {
    name: String,
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl Route {
    /// A route named `name`; its clock starts now.
    pub fn new(name: &str) -> Self {
        Route {
            name: name.to_string(),
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                links: Links::new(),
                peers: HashMap::new(),
                closed: VecDeque::new(),
                observer: Observer::new(name),
            }),
        }
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
        let Inner { links, observer, .. } = &mut *inner;
        if let Some(link) = links.get(id) {
            observer.after_update(id, link, now);
        }
        id
    }

    /// Open links right now.
    pub fn open_links(&self) -> usize {
        self.lock().links.iter().filter(|(_, l)| l.close.is_none()).count()
    }

    /// Feeds forwarded bytes to the link.
    pub fn on_bytes(&self, id: LinkId, direction: Direction, bytes: &[u8]) {
        let now = self.now();
        let mut inner = self.lock();
        let Inner { links, observer, .. } = &mut *inner;
        links.on_bytes(id, direction, bytes, now);
        report(links, observer, id, now);
    }

    /// Feeds a socket event to the link.
    pub fn on_transport(&self, id: LinkId, event: TransportEvent) {
        let now = self.now();
        let mut inner = self.lock();
        let Inner { links, observer, .. } = &mut *inner;
        links.on_transport(id, event, now);
        report(links, observer, id, now);
    }

    /// The master could not be reached for this link.
    pub fn connect_failed(&self, id: LinkId, error: &std::io::Error) {
        let now = self.now();
        let mut inner = self.lock();
        let Inner { links, observer, .. } = &mut *inner;
        links.with_link(id, |l| l.on_connect_failed(error.kind(), error.to_string(), now));
        report(links, observer, id, now);
    }

    /// The connection is over: the link moves to the closed ones.
    pub fn finish(&self, id: LinkId) {
        let mut inner = self.lock();
        let peer = inner.peers.remove(&id);
        if let Some(link) = inner.links.remove(id) {
            inner.observer.forget(id);
            if inner.closed.len() == CLOSED_KEPT {
                inner.closed.pop_front();
            }
            inner.closed.push_back((id, link, peer));
        }
    }

    /// Prometheus text for this route.
    pub fn render_metrics(&self) -> String {
        let now = self.now();
        let mut inner = self.lock();
        let Inner { links, observer, .. } = &mut *inner;
        observer.render(links, now)
    }

    /// Every open link and the last closed ones, by id, as the API shows them.
    pub fn links_json(&self) -> serde_json::Value {
        let now = self.now();
        let inner = self.lock();
        let mut views: Vec<serde_json::Value> = Vec::new();
        for (id, link, peer) in &inner.closed {
            views.push(view(*id, &self.name, *peer, link, now));
        }
        for (id, link) in inner.links.iter() {
            views.push(view(id, &self.name, inner.peers.get(&id).copied(), link, now));
        }
        views.sort_by_key(|v| v["id"].as_u64());
        serde_json::Value::Array(views)
    }

    /// One link as the API shows it.
    pub fn link_json(&self, id: LinkId) -> Option<serde_json::Value> {
        let now = self.now();
        let inner = self.lock();
        if let Some(link) = inner.links.get(id) {
            return Some(view(id, &self.name, inner.peers.get(&id).copied(), link, now));
        }
        inner.closed.iter().find(|(i, ..)| *i == id).map(|(id, link, peer)| view(*id, &self.name, *peer, link, now))
    }
}

fn view(id: LinkId, route: &str, peer: Option<SocketAddr>, link: &Link, now: Timestamp) -> serde_json::Value {
    serde_json::to_value(LinkView::new(id, route, peer.map(|p| p.to_string()), link, now))
        .unwrap_or_else(|e| serde_json::json!({ "id": id, "error": e.to_string() }))
}

/// Reports a link and, for a two-channel sync, its partner (whose story the update may have changed).
fn report(links: &Links, observer: &mut Observer, id: LinkId, now: Timestamp) {
    if let Some(link) = links.get(id) {
        observer.after_update(id, link, now);
        if let Some(partner) = link.partner
            && let Some(p) = links.get(partner)
        {
            observer.after_update(partner, p, now);
        }
    }
}
