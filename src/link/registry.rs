//! The links of one route, by id, and the pairing of the two connections of a two-channel sync.
//!
//! Client ids are per master, so one [`Links`] serves one route (one master).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::link::write_rate::WriteRate;
use crate::link::{Link, LinkKind, PairKey, Phase, TransportEvent};
use crate::time::Timestamp;
use crate::wire::{Direction, Event, MasterReply, WireEvent};

/// A link's id: unique within its [`Links`], never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct LinkId(pub u64);

/// The links of one route.
#[derive(Debug, Default)]
pub struct Links {
    links: BTreeMap<LinkId, Link>,
    /// Connections waiting for their other half: (key, is the RDB channel) → link.
    unpaired: HashMap<(PairKey, bool), LinkId>,
    next_id: u64,
    write_rate: WriteRate,
}

impl Links {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a connection accepted at `now`.
    pub fn open(&mut self, peer_ip: Option<IpAddr>, now: Timestamp) -> LinkId {
        self.next_id += 1;
        let id = LinkId(self.next_id);
        self.links.insert(id, Link::new(peer_ip, now));
        id
    }

    /// A link, open or not yet removed.
    pub fn get(&self, id: LinkId) -> Option<&Link> {
        self.links.get(&id)
    }

    /// All links, by id.
    pub fn iter(&self) -> impl Iterator<Item = (LinkId, &Link)> {
        self.links.iter().map(|(id, link)| (*id, link))
    }

    /// How many links are held.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether no link is held.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Forgets a link (the driver keeps closed ones elsewhere), returning it.
    pub fn remove(&mut self, id: LinkId) -> Option<Link> {
        self.unpaired.retain(|_, v| *v != id);
        self.links.remove(&id)
    }

    /// Feeds bytes forwarded on a link; returns the events they produced. Unknown ids are ignored.
    pub fn on_bytes(&mut self, id: LinkId, direction: Direction, bytes: &[u8], now: Timestamp) -> &[WireEvent] {
        let Some(link) = self.links.get_mut(&id) else {
            return &[];
        };
        link.on_bytes(direction, bytes, now);
        self.after_update(id);
        self.observe_write_rate(id, now);
        self.links.get(&id).map_or(&[], Link::last_events)
    }

    /// The master's replication write rate (bytes per second), from the links of this route.
    pub fn write_rate(&self, now: Timestamp) -> Option<f64> {
        self.write_rate.rate(now)
    }

    fn observe_write_rate(&mut self, id: LinkId, now: Timestamp) {
        let Some(link) = self.links.get(&id) else { return };
        for e in link.last_events() {
            if let Event::Reply {
                reply: MasterReply::FullResync { replid, offset } | MasterReply::EndOffset { replid, offset, .. },
            } = &e.event
            {
                self.write_rate.observe_fullresync(*replid, *offset, e.at);
            }
        }
        let streaming = link.phase() == Phase::Streaming || link.stream.bytes > 0;
        if link.kind == LinkKind::Replication
            && streaming
            && let (Some(replid), Some(offset)) = (link.master_replid, link.master_offset())
        {
            self.write_rate.observe_offset(replid, offset, now);
        }
    }

    /// Runs `f` on a link, if it exists.
    pub fn with_link<T>(&mut self, id: LinkId, f: impl FnOnce(&mut Link) -> T) -> Option<T> {
        self.links.get_mut(&id).map(f)
    }

    /// Feeds a socket event to a link. Unknown ids are ignored.
    pub fn on_transport(&mut self, id: LinkId, event: TransportEvent, now: Timestamp) {
        if let Some(link) = self.links.get_mut(&id) {
            link.on_transport(event, now);
        }
    }

    /// Pairs a link once its key is known, and keeps a main channel in step with its RDB channel.
    fn after_update(&mut self, id: LinkId) {
        let Some(link) = self.links.get(&id) else { return };
        if link.partner.is_none() {
            let Some((key, is_rdb)) = link.pair_key() else { return };
            match self.unpaired.remove(&(key, !is_rdb)) {
                Some(other) if other != id && self.links.contains_key(&other) => {
                    for (a, b) in [(id, other), (other, id)] {
                        if let Some(l) = self.links.get_mut(&a) {
                            l.partner = Some(b);
                        }
                    }
                }
                _ => {
                    self.unpaired.insert((key, is_rdb), id);
                    return;
                }
            }
        }
        let Some(link) = self.links.get(&id) else { return };
        let Some(partner) = link.partner else { return };
        let (main, rdb) = if link.kind == crate::link::LinkKind::RdbChannel { (partner, id) } else { (id, partner) };
        // Both links are needed at once: take the RDB channel out for the moment.
        let Some(rdb_link) = self.links.remove(&rdb) else { return };
        if let Some(main_link) = self.links.get_mut(&main) {
            main_link.adopt_from_rdb_channel(&rdb_link, rdb);
        }
        self.links.insert(rdb, rdb_link);
    }
}
