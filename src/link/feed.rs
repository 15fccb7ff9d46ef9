//! Readers and links kept together, for code that reads bytes and updates the model in one place:
//! tests, `replscope replay`, benchmarks. They take the same two steps the proxy takes (which keeps each
//! connection's [`Reader`] apart, to read outside its route's lock): [`Reader::read`], then
//! `on_decoded`. The changes of the last update are kept for a look, then dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::{Deref, DerefMut};

use crate::link::{Change, Link, LinkId, Links, Reader, TransportEvent};
use crate::time::Timestamp;
use crate::wire::{Direction, WireEvent};

/// A route's links, each with its reader.
#[derive(Debug, Default)]
pub struct Fed {
    links: Links,
    readers: HashMap<LinkId, Reader>,
    changes: Vec<Change>,
}

impl Fed {
    /// No links yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Around existing links (e.g. judged against stated settings).
    pub fn with_links(links: Links) -> Self {
        Fed { links, ..Self::default() }
    }

    /// Reads bytes forwarded on link `id` and updates it; returns the events they produced.
    pub fn on_bytes(&mut self, id: LinkId, direction: Direction, bytes: &[u8], now: Timestamp) -> &[WireEvent] {
        let reader = self.readers.entry(id).or_default();
        let decoded = reader.read(direction, bytes, now);
        self.links.on_decoded(id, decoded, now);
        self.keep_changes();
        self.readers.get(&id).map_or(&[], Reader::events)
    }

    /// A socket event on link `id`.
    pub fn on_transport(&mut self, id: LinkId, event: TransportEvent, now: Timestamp) {
        self.links.on_transport(id, event, now);
        self.keep_changes();
    }

    /// Diagnoses, refines and settles, as [`Links::diagnose`] does; returns the links whose diagnosis changed.
    pub fn diagnose(&mut self, now: Timestamp) -> Vec<LinkId> {
        let changed = self.links.diagnose(now);
        self.keep_changes();
        changed
    }

    /// What the last update changed.
    pub fn last_changes(&self) -> &[Change] {
        &self.changes
    }

    fn keep_changes(&mut self) {
        self.changes.clear();
        self.changes.extend(self.links.drain_changes());
    }
}

impl Deref for Fed {
    type Target = Links;
    fn deref(&self) -> &Links {
        &self.links
    }
}

impl DerefMut for Fed {
    fn deref_mut(&mut self) -> &mut Links {
        &mut self.links
    }
}

/// One link and its reader, outside any route (what its updates changed is dropped).
#[derive(Debug)]
pub struct FedLink {
    link: Link,
    reader: Reader,
    /// Reused for each update's changes.
    changes: Vec<Change>,
}

impl FedLink {
    /// A connection accepted at `now` from `peer_ip`.
    pub fn new(peer_ip: Option<IpAddr>, now: Timestamp) -> Self {
        FedLink { link: Link::new(LinkId(1), peer_ip, now), reader: Reader::new(), changes: Vec::new() }
    }

    /// Reads bytes forwarded in `direction` at `now` and updates the link; returns the events they produced.
    pub fn on_bytes(&mut self, direction: Direction, bytes: &[u8], now: Timestamp) -> &[WireEvent] {
        self.changes.clear();
        let decoded = self.reader.read(direction, bytes, now);
        self.link.on_decoded(decoded, now, &mut self.changes);
        self.reader.events()
    }

    /// A socket event.
    pub fn on_transport(&mut self, event: TransportEvent, now: Timestamp) {
        self.changes.clear();
        self.link.on_transport(event, now, &mut self.changes);
    }
}

impl Deref for FedLink {
    type Target = Link;
    fn deref(&self) -> &Link {
        &self.link
    }
}

impl DerefMut for FedLink {
    fn deref_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}
