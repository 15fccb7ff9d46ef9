//! The links of one route, by id: the pairing of the two connections of a two-channel sync, the
//! master's write rate, and the diagnosis of the links that end, with what each update changed.
//!
//! Client ids are per master, so one [`Links`] serves one route (one master). Every update appends its
//! [`Change`]s to a buffer the driver drains ([`Links::drain_changes`]) and hands to the observers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::introspect::{ConfigValues, MasterReport, Pace, ServerVersion};
use crate::link::history::LoopKind;
use crate::link::output_buffer::{BufferSample, MasterView, NEAR_HARD};
use crate::link::settings::ServerSettings;
use crate::link::write_rate::WriteRate;
use crate::link::{Change, Decoded, FaultTouch, Link, LinkKind, PairKey, Phase, TransportEvent};
use crate::time::Timestamp;
use crate::wire::{Event, MasterReply, WireEvent};

/// What one diagnosis pass did, for the steps after it.
#[derive(Debug, Default)]
struct Pass {
    /// Links whose diagnosis changed.
    changed: Vec<LinkId>,
    /// Links whose diagnosis settled in this pass.
    newly_settled: Vec<LinkId>,
    /// Links diagnosed in this pass.
    newly_diagnosed: Vec<LinkId>,
}

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
    /// Closed links that need no diagnosis (clients, RDB channels that delivered their RDB).
    undiagnosable: HashSet<LinkId>,
    /// Per-replica records: failed full syncs, loops.
    histories: crate::link::history::Histories,
    /// What changed since the driver last drained.
    changes: Vec<Change>,
    /// What the operator stated about the master's settings.
    settings: ServerSettings,
    /// Whether the master is Valkey 8.0 or later (its default backlog is 10mb, not 1mb), as the first RDB
    /// on this route said, or since then the RDB of a link whose refusal was being judged.
    master_valkey_8: Option<bool>,
    /// How long a replica with no open link is remembered.
    forget_after: Option<Duration>,
    /// What the master last said about itself (introspection), if it was asked.
    master: Option<MasterState>,
    /// The later facts of links already removed, oldest first, kept while a diagnosis could take them.
    departed: VecDeque<Fact>,
}

/// A later fact and where it came from: the link, the replica's endpoint and address, what happened.
type Fact = (LinkId, Option<String>, Option<IpAddr>, crate::link::cause::Later);

/// Facts of removed links kept at most (a flood of short connections keeps the newest).
const MAX_DEPARTED_FACTS: usize = 4096;

/// What a link tells the diagnoses of others: that its replica came back (it connected again), or that
/// the master refused a connection.
fn later_facts(id: LinkId, link: &Link) -> impl Iterator<Item = Fact> {
    use crate::link::cause::{self, Later};
    // A health probe from the replica's host is not the replica coming back.
    let came_back = (matches!(link.kind, LinkKind::Replication | LinkKind::Pending)
        && link.connect_error.is_none()
        && !crate::link::rules::is_probe(link))
    .then(|| {
        let fact = Later::CameBack { at: link.opened_at, asked_full: cause::asks_full(&link.request) };
        (id, link.replica_endpoint(), link.peer_ip, fact)
    });
    let refused = match (&link.connect_error, &link.close) {
        (Some(err), Some(c)) if err.contains("refused") => Some((id, None, None, Later::MasterRefused { at: c.at })),
        _ => None,
    };
    came_back.into_iter().chain(refused)
}

/// What the master last said about itself, route-wide.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MasterState {
    /// When it last answered.
    pub at: Timestamp,
    /// Its settings, as last read (kept when a later `CONFIG GET` fails).
    pub config: Option<ConfigValues>,
    /// Its version.
    pub version: Option<ServerVersion>,
    /// Its `INFO replication`, as last read.
    pub replication: Option<crate::introspect::ReplicationInfo>,
}

impl Links {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set whose diagnoses are judged against the settings the operator stated.
    pub fn with_settings(settings: ServerSettings) -> Self {
        Links { settings, ..Self::default() }
    }

    /// Records a connection accepted at `now`.
    pub fn open(&mut self, peer_ip: Option<IpAddr>, now: Timestamp) -> LinkId {
        self.next_id += 1;
        self.open_as(LinkId(self.next_id), peer_ip, now)
    }

    /// Records a connection accepted at `now` under an id the driver chose (unique across the routes of a
    /// process, so the API can name a link by its id alone). The driver never mixes this with [`open`].
    ///
    /// [`open`]: Links::open
    pub fn open_as(&mut self, id: LinkId, peer_ip: Option<IpAddr>, now: Timestamp) -> LinkId {
        let mut link = Link::new(id, peer_ip, now);
        link.settings = self.settings;
        self.links.insert(id, link);
        self.changes.push(Change::PhaseEntered { link: id, phase: Phase::Handshake });
        id
    }

    /// The settings new links are judged against.
    pub fn settings(&self) -> ServerSettings {
        self.settings
    }

    /// Changes the settings for links opened from now on; open links keep the ones they opened with.
    /// What the master said of its own settings stays: it is no choice of the operator's.
    pub fn set_settings(&mut self, settings: ServerSettings) {
        self.settings = ServerSettings { master: self.settings.master, ..settings };
    }

    /// Takes what the master said about itself: its settings (for every link, open ones included: they
    /// are facts about the master now, not a choice made when the link opened), and each replica
    /// connection's output buffer, matched to its link by the address replscope dialled from.
    pub fn on_master_report(&mut self, report: &MasterReport) {
        let state = self.master.get_or_insert_with(MasterState::default);
        state.at = report.at;
        if report.config.is_some() {
            state.config = report.config;
        }
        if report.version.is_some() {
            state.version.clone_from(&report.version);
        }
        if report.replication.is_some() {
            state.replication.clone_from(&report.replication);
        }
        let mut m = self.settings.master;
        if let Some(c) = &state.config {
            m.repl_timeout = c.repl_timeout;
            m.output_buffer_limit = c.output_buffer_limit;
            m.backlog = c.backlog;
        }
        // INFO shows the backlog even to a user that may not read the configuration.
        if m.backlog.is_none() {
            m.backlog = state.replication.as_ref().and_then(|r| r.backlog);
        }
        m.raises_hard_limit_to_backlog = state.version.as_ref().is_some_and(|v| v.raises_hard_limit_to_backlog());
        self.settings.master = m;
        let replicas = state.replication.as_ref().map(|r| r.replicas.as_slice()).unwrap_or_default();
        for link in self.links.values_mut().filter(|l| l.close.is_none()) {
            link.settings.master = m;
            let Some(addr) = link.outgoing_addr else { continue };
            let Some(clients) = &report.clients else { continue };
            let Some(client) = clients.iter().find(|c| c.addr == addr) else {
                if let Some(v) = link.master_view.as_mut() {
                    v.missing(report.at);
                }
                continue;
            };
            let soft = link.settings.output_buffer_limit().0.soft;
            let view = link.master_view.get_or_insert_with(MasterView::default);
            let sample = BufferSample { at: report.at, omem: client.omem, obl: client.obl, oll: client.oll };
            view.record(client.id, sample, soft);
            // INFO names a replica by its announced address (else the connection's) and listening port.
            if let Some(port) = link.handshake.listening_port {
                let ip = link.handshake.ip_address.clone().unwrap_or_else(|| addr.ip().to_string());
                if let Some(line) = replicas.iter().find(|r| r.port == port && r.ip == ip) {
                    view.state = Some(line.state.clone());
                }
            }
        }
    }

    /// Asking the master about itself failed.
    pub fn on_introspection_failed(&mut self, failure: crate::introspect::Failure) {
        self.changes.push(Change::IntrospectionFailed { failure });
    }

    /// What the master last said about itself, if it was asked.
    pub fn master(&self) -> Option<&MasterState> {
        self.master.as_ref()
    }

    /// How often the master should be asked now: often while a replica's output buffer nears its limit,
    /// every second while a full sync or a lag is under way, rarely otherwise.
    pub fn introspection_pace(&self, now: Timestamp) -> Pace {
        let mut pace = Pace::Idle;
        for link in self.links.values().filter(|l| l.close.is_none()) {
            let (limit, _) = link.settings.output_buffer_limit();
            if let Some(v) = &link.master_view {
                let near = (limit.hard > 0
                    && v.projected(now).is_some_and(|p| p >= 0.6 * NEAR_HARD * limit.hard as f64))
                    || v.over_soft_since.is_some();
                if near && v.last.is_some_and(|l| l.omem > 0) {
                    return Pace::Close;
                }
            }
            let syncing = matches!(link.phase(), Phase::WaitingBgsave | Phase::RdbTransfer | Phase::Loading);
            let lagging = link.phase() == Phase::Streaming
                && link.stream.lag().is_some_and(|l| l > 0)
                && link.stream.last_ack.is_some_and(|a| now.since(a.at) > Duration::from_secs(1));
            if syncing || lagging {
                pace = Pace::Busy;
            }
        }
        pace
    }

    /// What changed since the last call, oldest first.
    pub fn drain_changes(&mut self) -> std::vec::Drain<'_, Change> {
        self.changes.drain(..)
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
        self.undiagnosable.remove(&id);
        let link = self.links.remove(&id)?;
        // What it says about other links (a replica came back, the master refused it) outlives it for as
        // long as a diagnosis could still take it.
        for fact in later_facts(id, &link) {
            if self.departed.len() == MAX_DEPARTED_FACTS {
                self.departed.pop_front();
            }
            self.departed.push_back(fact);
        }
        Some(link)
    }

    /// Takes what a connection's [`Reader`](crate::link::Reader) made of bytes forwarded on a link: the
    /// one way bytes reach the model. Unknown ids are ignored.
    pub fn on_decoded(&mut self, id: LinkId, decoded: Decoded<'_>, now: Timestamp) {
        let Some(link) = self.links.get_mut(&id) else { return };
        link.on_decoded(decoded, now, &mut self.changes);
        self.after_update(id);
        self.observe_write_rate(id, decoded.events, now);
        self.judge_refusal(id, now);
    }

    /// The master could not be reached for a link: the proxy closed the replica's connection.
    pub fn on_connect_failed(&mut self, id: LinkId, kind: std::io::ErrorKind, message: String, now: Timestamp) {
        if let Some(link) = self.links.get_mut(&id) {
            link.on_connect_failed(kind, message, now, &mut self.changes);
        }
    }

    /// An injected fault acted on a link.
    pub fn on_fault(&mut self, id: LinkId, touch: FaultTouch) {
        if let Some(link) = self.links.get_mut(&id) {
            link.on_fault(touch, &mut self.changes);
        }
    }

    /// Diagnoses one link that just closed, without looking at any other: what the driver calls on a close,
    /// so a close costs the same with 10 links open or 10 000, and a thousand links closing at once cost
    /// a thousand of these. Later facts (the replica coming back, the master refusing a connection) and
    /// settling are the periodic pass's ([`Links::diagnose`]). Returns whether the link was diagnosed.
    pub fn diagnose_closed(&mut self, id: LinkId, now: Timestamp) -> bool {
        let write_rate = self.write_rate.rate(now);
        let mut pass = Pass::default();
        self.classify(id, write_rate, &mut pass);
        self.after_pass(&mut pass);
        !pass.changed.is_empty()
    }

    /// Diagnoses links that closed, refines the diagnoses still open with what happened since, and settles
    /// those whose window has passed; clears the records of replicas streaming long enough and forgets
    /// those gone for the forget-after. One pass costs O(links + open diagnoses × the facts that can still
    /// concern them), so the driver runs it on its clock's tick, not per event. Returns the links whose
    /// diagnosis changed.
    pub fn diagnose(&mut self, now: Timestamp) -> Vec<LinkId> {
        let write_rate = self.write_rate.rate(now);
        let mut pass = Pass::default();
        let closed: Vec<LinkId> =
            self.links.iter().filter(|(id, l)| self.awaits_diagnosis(**id, l)).map(|(id, _)| *id).collect();
        for id in closed {
            self.classify(id, write_rate, &mut pass);
        }
        self.refine_open(write_rate, now, &mut pass);
        self.after_pass(&mut pass);
        self.clear_streaming(now);
        self.forget_replicas(now);
        pass.changed
    }

    /// Whether a link is closed and not yet diagnosed, nor known to need no diagnosis.
    fn awaits_diagnosis(&self, id: LinkId, link: &Link) -> bool {
        link.close.is_some() && link.diagnosis.is_none() && !self.undiagnosable.contains(&id)
    }

    /// Classifies a closed, undiagnosed link (nothing if it is open, diagnosed, or needs no diagnosis).
    fn classify(&mut self, id: LinkId, write_rate: Option<f64>, pass: &mut Pass) {
        use crate::link::rules::{self, Context};
        if !self.links.get(&id).is_some_and(|l| self.awaits_diagnosis(id, l)) {
            return;
        }
        let Some(link) = self.links.get_mut(&id) else { return };
        match rules::classify(link, Context { write_rate, settings: link.settings }) {
            Some(d) => {
                self.changes.push(Change::Diagnosed { link: id, cause: d.cause });
                if d.settled {
                    pass.newly_settled.push(id);
                }
                link.diagnosis = Some(d);
                pass.changed.push(id);
                pass.newly_diagnosed.push(id);
            }
            None => {
                self.undiagnosable.insert(id);
            }
        }
    }

    /// Offers the open diagnoses the later facts that may concern them, teaches them the write rate, and
    /// settles those whose window has passed.
    fn refine_open(&mut self, write_rate: Option<f64>, now: Timestamp, pass: &mut Pass) {
        use crate::link::cause::{self, Later};
        // Nothing is open: no fact can change anything (the common case, and the one that must be cheap).
        if !self.links.values().any(|l| l.diagnosis.as_ref().is_some_and(|d| !d.settled)) {
            return;
        }
        // Later facts: replicas coming back, connections to the master refused, from the links here and
        // those removed lately. A replica coming back is known by its endpoint, or, before it could
        // announce one (a master that does not answer PING), by its address.
        let oldest = now.minus(cause::CAME_BACK_WINDOW + Duration::from_secs(2));
        while self.departed.front().is_some_and(|(_, _, _, f)| f.at() < oldest) {
            self.departed.pop_front();
        }
        let mut facts: Vec<Fact> = self.departed.iter().cloned().collect();
        for (id, link) in &self.links {
            facts.extend(later_facts(*id, link));
        }
        // Which facts may concern a replica: by its endpoint, or by its address for links that could not
        // announce one (the test below still decides), so each link looks at its own replica's facts only;
        // each list in time order, so a diagnosis looks only at the facts from after its close.
        let mut by_endpoint: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_ip: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        let mut by_ip_without_endpoint: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        let mut refused = Vec::new();
        for (i, (_, ep, ip, fact)) in facts.iter().enumerate() {
            match fact {
                Later::MasterRefused { .. } => refused.push(i),
                Later::CameBack { .. } => {
                    if let Some(ep) = ep {
                        by_endpoint.entry(ep.as_str()).or_default().push(i);
                    }
                    if let Some(ip) = ip {
                        by_ip.entry(*ip).or_default().push(i);
                        if ep.is_none() {
                            by_ip_without_endpoint.entry(*ip).or_default().push(i);
                        }
                    }
                }
            }
        }
        let at = |i: &usize| facts[*i].3.at();
        for list in by_endpoint.values_mut().chain(by_ip.values_mut()).chain(by_ip_without_endpoint.values_mut()) {
            list.sort_by_key(at);
        }
        refused.sort_by_key(at);
        // Where the facts of a list from `since` on begin.
        let from = |list: &[usize], since: Timestamp| list.partition_point(|i| at(i) < since);
        let mut candidates = Vec::new();
        for (id, link) in self.links.iter_mut() {
            if link.diagnosis.as_ref().is_none_or(|d| d.settled) {
                continue;
            }
            let endpoint = link.replica_endpoint();
            let peer = link.peer_ip;
            let (Some(d), Some(close)) = (link.diagnosis.as_mut(), link.close) else { continue };
            let before = (d.cause, d.settled, d.evidence.later.len());
            // A replica may reconnect before the proxy has read its close: allow a second.
            let came_back_since = close.at.minus(Duration::from_secs(1));
            candidates.clear();
            candidates.extend_from_slice(&refused[from(&refused, close.at)..]);
            // Two endpoints must be equal; an address is compared only when one side has no endpoint.
            let by_address = if endpoint.is_some() { &by_ip_without_endpoint } else { &by_ip };
            // A replica known to have come back asking for a full sync has nothing more to tell.
            if let Some(ep) = &endpoint
                && d.came_back != Some(true)
                && let Some(list) = by_endpoint.get(ep.as_str())
            {
                candidates.extend_from_slice(&list[from(list, came_back_since)..]);
            }
            // Known by its address alone, one connection coming back is as good as many: once the link
            // has one, the others from its host are not looked at again.
            if let Some(peer) = peer
                && d.came_back.is_none()
                && let Some(list) = by_address.get(&peer)
            {
                candidates.extend_from_slice(&list[from(list, came_back_since)..]);
            }
            candidates.sort_unstable();
            candidates.dedup();
            for (other, ep, ip, fact) in candidates.iter().map(|&i| &facts[i]) {
                let after_close = match fact {
                    Later::CameBack { at, .. } => at.plus(Duration::from_secs(1)) >= close.at,
                    Later::MasterRefused { at } => *at >= close.at,
                };
                let same_replica = match fact {
                    Later::CameBack { .. } => match (ep, &endpoint) {
                        (Some(a), Some(b)) => a == b,
                        _ => ip.is_some() && *ip == peer,
                    },
                    Later::MasterRefused { .. } => true,
                };
                if other != id && after_close && same_replica {
                    cause::refine(d, close.at, *fact);
                }
            }
            if let Some(rate) = write_rate {
                cause::learn_write_rate(d, rate);
            }
            cause::settle(d, close.at, now);
            if before != (d.cause, d.settled, d.evidence.later.len()) {
                pass.changed.push(*id);
            }
            if d.settled {
                pass.newly_settled.push(*id);
            }
        }
    }

    /// What a pass's new and settled diagnoses mean beyond their links: the changes that say so, and the
    /// replicas' records.
    fn after_pass(&mut self, pass: &mut Pass) {
        pass.changed.sort();
        pass.changed.dedup();
        pass.newly_settled.sort();
        pass.newly_settled.dedup();
        for id in &pass.newly_settled {
            if let Some(d) = self.links.get(id).and_then(|l| l.diagnosis.as_ref()) {
                self.changes.push(Change::Settled { link: *id, cause: d.cause, first: d.first });
            }
        }
        // Failed full syncs (ended before streaming) go on the replica's record once their cause settles;
        // a replica streaming long enough clears it.
        for id in &pass.newly_settled {
            let Some(link) = self.links.get(id) else { continue };
            let (Some(d), Some(ep)) = (&link.diagnosis, link.replica_endpoint()) else { continue };
            if let Some(close) = link.failed_full_sync()
                && let Some(change) = self.histories.full_sync_failed(&ep, close.at, d.cause)
            {
                self.changes.push(Change::LoopChanged { replica: ep, kind: LoopKind::Full, change });
            }
        }
        // A partial resync the master dropped soon after accepting it counts at once (it is a fact of the
        // close, whatever its cause); any other end of the replica's link breaks the row.
        for id in &pass.newly_diagnosed {
            let Some(link) = self.links.get(id) else { continue };
            let Some(ep) = link.replica_endpoint().filter(|_| link.kind == LinkKind::Replication) else { continue };
            match link.dropped_partial_resync() {
                Some((at, drop)) => {
                    if let Some(change) = self.histories.partial_dropped(&ep, at, drop) {
                        self.changes.push(Change::LoopChanged { replica: ep, kind: LoopKind::Partial, change });
                    }
                }
                None => self.histories.partial_row_broken(&ep),
            }
        }
    }

    /// Clears the records of replicas whose link has been streaming long enough.
    fn clear_streaming(&mut self, now: Timestamp) {
        let mut cleared = Vec::new();
        for link in self.links.values() {
            if link.kind == LinkKind::Replication
                && link.close.is_none()
                && link.phase() == Phase::Streaming
                && let (Some(ep), Some(since)) = (link.replica_endpoint(), link.phase_at(Phase::Streaming))
            {
                for (kind, change) in self.histories.streaming(&ep, since, now) {
                    cleared.push(Change::LoopChanged { replica: ep.clone(), kind, change });
                }
            }
        }
        self.changes.extend(cleared);
    }

    /// Notes which replicas have an open link, and forgets those that have had none (and no closed link
    /// still settling) for the forget-after.
    fn forget_replicas(&mut self, now: Timestamp) {
        let mut open: HashMap<String, bool> = HashMap::new();
        for link in self.links.values() {
            if link.kind != LinkKind::Replication {
                continue;
            }
            if let Some(ep) = link.replica_endpoint() {
                // A closed link still waiting for its cause keeps its replica as if open.
                let settling =
                    link.diagnosis.as_ref().is_none_or(|d| !d.settled) && !self.undiagnosable.contains(&link.id);
                *open.entry(ep).or_default() |= link.close.is_none() || settling;
            }
        }
        let known: Vec<String> = self.histories.iter().map(|(r, _)| r.clone()).collect();
        for replica in known {
            let is_open = open.remove(&replica).unwrap_or(false);
            self.histories.seen(&replica, is_open, now);
        }
        for (replica, is_open) in open {
            self.histories.seen(&replica, is_open, now);
        }
        if let Some(after) = self.forget_after {
            for replica in self.histories.forget(now, after) {
                self.changes.push(Change::ReplicaForgotten { replica });
            }
        }
    }

    /// Forgets a replica (its record, and through the observers its series) once it has had no open link
    /// for `after`; never, by default.
    pub fn set_forget_after(&mut self, after: Option<Duration>) {
        self.forget_after = after;
    }

    /// The per-replica records.
    pub fn histories(&self) -> &crate::link::history::Histories {
        &self.histories
    }

    /// Whether a closed link is done with: no diagnosis needed, or its diagnosis settled.
    pub fn is_settled(&self, id: LinkId) -> bool {
        self.undiagnosable.contains(&id)
            || self.links.get(&id).and_then(|l| l.diagnosis.as_ref()).is_some_and(|d| d.settled)
    }

    /// The master's replication write rate (bytes per second), from the links of this route.
    pub fn write_rate(&self, now: Timestamp) -> Option<f64> {
        self.write_rate.rate(now)
    }

    fn observe_write_rate(&mut self, id: LinkId, events: &[WireEvent], now: Timestamp) {
        let Some(link) = self.links.get(&id) else { return };
        for e in events {
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

    /// Puts the backlog a refused partial resync is judged against on its refusal (the stated one, or the
    /// default of the master's version once an RDB has shown it), and the write rate it lasts at.
    fn judge_refusal(&mut self, id: LinkId, now: Timestamp) {
        let Some(link) = self.links.get_mut(&id) else { return };
        let unjudged = link
            .psync_refusal
            .as_ref()
            .is_some_and(|r| r.reason == crate::link::RefusalReason::OffsetOutOfRange && !r.backlog_final);
        if !unjudged && self.master_valkey_8.is_some() {
            return;
        }
        // The master's version, from this link's RDB (final) or, until it arrives, from the route's first.
        let own = link.rdb.as_ref().and_then(|r| r.header.as_ref()).map(|h| {
            h.aux.valkey_ver.as_deref().is_some_and(|v| {
                v.split('.').next().and_then(|major| major.parse::<u32>().ok()).is_some_and(|m| m >= 8)
            })
        });
        if own.is_some() {
            self.master_valkey_8 = own;
        }
        let Some(refusal) = link.psync_refusal.as_mut() else { return };
        if refusal.reason != crate::link::RefusalReason::OffsetOutOfRange || refusal.backlog_final {
            return;
        }
        refusal.write_rate = refusal.write_rate.or_else(|| self.write_rate.rate(now));
        refusal.backlog = Some(link.settings.backlog(self.master_valkey_8.unwrap_or(false)).1);
        // A link past its transfer (or whose RDB came on another channel) will learn no more.
        let past_rdb = !matches!(link.phase(), Phase::Handshake | Phase::WaitingBgsave | Phase::RdbTransfer);
        let Some(refusal) = link.psync_refusal.as_mut() else { return };
        refusal.backlog_final = link.settings.known_backlog().is_some() || own.is_some() || past_rdb;
    }

    /// Feeds a socket event to a link. Unknown ids are ignored.
    pub fn on_transport(&mut self, id: LinkId, event: TransportEvent, now: Timestamp) {
        if let Some(link) = self.links.get_mut(&id) {
            link.on_transport(event, now, &mut self.changes);
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
            main_link.adopt_from_rdb_channel(&rdb_link, &mut self.changes);
        }
        self.links.insert(rdb, rdb_link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Fed;
    use crate::link::settings::Source;
    use crate::wire::Direction;
    use crate::wire::encode_command as resp;

    const ID: &str = "8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39";

    /// A replica that asks to resume at 1001 and is refused with a full sync from 500000; its RDB says
    /// it was written by `server` (`valkey-ver`), if any.
    fn refused(links: &mut Fed, server: Option<&str>) -> LinkId {
        let t = Timestamp::from_micros(1000);
        let id = links.open(None, t);
        links.on_bytes(id, Direction::ReplicaToMaster, &resp(&["PSYNC", ID, "1001"]), t);
        let answer = format!("+FULLRESYNC {ID} 500000\r\n$100\r\nREDIS0011");
        links.on_bytes(id, Direction::MasterToReplica, answer.as_bytes(), t);
        if let Some(v) = server {
            let mut aux = vec![0xFA, 10];
            aux.extend_from_slice(b"valkey-ver");
            aux.push(v.len() as u8);
            aux.extend_from_slice(v.as_bytes());
            aux.extend_from_slice(&[0xFE, 0x00]);
            links.on_bytes(id, Direction::MasterToReplica, &aux, t);
        }
        id
    }

    fn backlog(links: &Fed, id: LinkId) -> (String, Source) {
        let b = links.get(id).and_then(|l| l.psync_refusal.clone()).and_then(|r| r.backlog).expect("judged");
        (b.value, b.source)
    }

    #[test]
    fn a_refusal_is_judged_against_the_stated_backlog_or_the_masters_default() {
        let mut links = Fed::new();
        let redis = refused(&mut links, None);
        assert_eq!(backlog(&links, redis), ("1mb".into(), Source::Default));
        let valkey = refused(&mut links, Some("9.1.2"));
        assert_eq!(backlog(&links, valkey), ("10mb".into(), Source::Default), "Valkey 8+ defaults to 10mb");
        let old_valkey = refused(&mut links, Some("7.2.5"));
        assert_eq!(backlog(&links, old_valkey), ("1mb".into(), Source::Default));
        let mut links =
            Fed::with_links(Links::with_settings(ServerSettings { backlog: Some(16 << 10), ..Default::default() }));
        let stated = refused(&mut links, Some("9.1.2"));
        assert_eq!(backlog(&links, stated), ("16kb".into(), Source::Assumed));
    }
}
