//! `link`: the story of one proxied TCP connection, built from wire events and transport events.
//!
//! A [`Link`] is the model only: what a connection's [`Reader`] (kept beside it) made of each forwarded
//! slice ([`Link::on_decoded`]) and every socket event ([`Link::on_transport`]) make its story — the phase
//! and when each began, the handshake facts, the sync asked for and granted, the RDB, the stream offset
//! and the replica's acknowledgements, the traffic each way and how it ended. Each update says what it
//! changed ([`Change`]). It is deterministic: the same inputs at the same times give the same story.
//! [`Links`] holds the links of one route, joins the two connections of a dual-channel / rdb-channel
//! sync into one story and diagnoses the ones that end ([`cause`], [`rules`]). [`Fed`] keeps readers
//! and links together for code that does both steps in one place (tests, replay, benchmarks).

pub mod cause;
mod change;
mod facts;
mod feed;
pub mod forecast;
pub mod history;
pub mod output_buffer;
mod reader;
pub mod refusal;
mod registry;
pub mod rules;
pub mod settings;
mod touch;
mod transport;
pub mod write_rate;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

pub use cause::Cause;
pub use change::Change;
pub use facts::{
    Ack, AuthFacts, Close, CommandSeen, DesyncFacts, ErrorReply, Handshake, HandshakeStep, LinkKind, MAX_ERRORS_KEPT,
    Phase, PhaseChange, RdbFacts, ReplicaBufferFull, StreamFacts, SyncAnswer, SyncKind, SyncRequest, Traffic,
};
pub use feed::{Fed, FedLink};
pub use reader::{Decoded, Reader};
pub use refusal::{PsyncRefusal, RefusalReason};
pub use registry::{LinkId, Links};
pub use touch::{FaultTouch, FaultType, MAX_FAULT_TOUCHES};
pub use transport::{CloseHow, ClosedBy, Side, TransportEvent};

use crate::time::Timestamp;
use crate::wire::{
    CommandName, Direction, Event, MasterReply, PayloadFraming, PsyncId, ReplId, ReplconfOption, ReplicaCommand,
    TrailerCheck, WireEvent,
};

/// How the two connections of a two-channel sync find each other: the client id the master announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PairKey {
    /// Valkey: the RDB channel's client id (`$ENDOFF` on it, `set-rdb-client-id` on the main channel).
    RdbClientId(u64),
    /// Redis 8: the main channel's client id (`+RDBCHANNELSYNC` on it, `main-ch-client-id` on the RDB one).
    MainClientId(u64),
}

/// The window of the "current" RDB transfer rate.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Keeps (time, bytes) samples at least 100 ms apart, one of them at least [`RATE_WINDOW`] old.
fn sample_rate(samples: &mut VecDeque<(Timestamp, u64)>, now: Timestamp, bytes: u64) {
    if samples.back().is_none_or(|(t, _)| now.since(*t) >= Duration::from_millis(100)) {
        samples.push_back((now, bytes));
    }
    while samples.get(1).is_some_and(|(t, _)| now.since(*t) >= RATE_WINDOW) {
        samples.pop_front();
    }
}

/// How many unanswered replica commands a link tracks (a replica pipelines about six).
const MAX_AWAITING: usize = 64;

/// The story of one connection.
#[derive(Debug, serde::Serialize)]
pub struct Link {
    /// Its id (the API shows it beside the story).
    #[serde(skip)]
    pub id: LinkId,
    /// The replica's address as the proxy saw it.
    pub peer_ip: Option<IpAddr>,
    /// When the connection was accepted.
    pub opened_at: Timestamp,
    /// What it is.
    pub kind: LinkKind,
    /// Phases, in order, with when each began.
    pub phases: Vec<PhaseChange>,
    /// What the replica announced.
    pub handshake: Handshake,
    /// The last sync request.
    pub request: Option<SyncRequest>,
    /// The master's answer to it.
    pub answer: Option<SyncAnswer>,
    /// Full or partial, once decided.
    pub sync_kind: Option<SyncKind>,
    /// When a PSYNC got a full sync: why, and the gap.
    pub psync_refusal: Option<PsyncRefusal>,
    /// The master's replication id, as this link learnt it.
    pub master_replid: Option<ReplId>,
    /// The RDB, for a full sync (on a two-channel main channel: the one its RDB channel carried).
    pub rdb: Option<RdbFacts>,
    /// The command stream.
    pub stream: StreamFacts,
    /// Traffic, indexed by [`Direction::index`] (in JSON, an object by direction name).
    #[serde(serialize_with = "serialize_traffic")]
    pub traffic: [Traffic; 2],
    /// Time forwarding waited on each side, indexed by [`Side::index`].
    #[serde(serialize_with = "serialize_blocked")]
    pub blocked: [Duration; 2],
    /// An error line that came instead of the payload of a granted full sync.
    pub payload_error: Option<ErrorReply>,
    /// A two-channel sync's replica stopped reading this main channel before the RDB was through: its
    /// own stream buffer was full, and the stream piled up on the master instead.
    pub replica_buffer_full: Option<ReplicaBufferFull>,
    /// The master's settings as the operator stated them when this link opened: its diagnosis is judged
    /// against these, so a reload that changes them applies to new links only.
    #[serde(skip)]
    pub settings: crate::link::settings::ServerSettings,
    /// Waits toward the replica that began before it was loading, for [`Link::replica_buffer_full`].
    #[serde(skip)]
    waits_before_loading: Option<ReplicaBufferFull>,
    /// The replica's endpoint, once the handshake announced it ([`Link::replica_endpoint`]).
    #[serde(skip)]
    endpoint: Option<String>,
    /// The last write that waited on each side: when it ended, and the longest wait among it and those
    /// that ended within [`rules::BACKED_UP_WITHIN`] before it.
    #[serde(skip)]
    pub last_blocked: [Option<(Timestamp, Duration)>; 2],
    /// Why it ended, once diagnosed.
    pub diagnosis: Option<cause::Diagnosis>,
    /// Desyncs, at most one per direction.
    pub desyncs: Vec<DesyncFacts>,
    /// How it ended: the first side to close.
    pub close: Option<Close>,
    /// The other connection of a two-channel sync, once paired.
    pub partner: Option<LinkId>,
    /// Why the master could not be reached, when it could not.
    pub connect_error: Option<String>,
    /// The address replscope dialled the master from: how the master names this connection
    /// (`CLIENT LIST`'s `addr`).
    pub outgoing_addr: Option<std::net::SocketAddr>,
    /// What the master said about this connection (introspection): its output buffer, its state.
    pub master_view: Option<output_buffer::MasterView>,
    /// The injected faults that acted on this link, and when (at most [`MAX_FAULT_TOUCHES`]).
    pub faults: Vec<FaultTouch>,
    /// Recent (time, RDB bytes) samples, for the transfer rate over the last second.
    #[serde(skip)]
    rate_samples: VecDeque<(Timestamp, u64)>,
    /// What changed during the update in progress (handed out before it returns).
    #[serde(skip)]
    changes: Vec<Change>,
    /// A `+DUALCHANNELSYNC` was answered: the later `+CONTINUE` is the second step of a full sync.
    #[serde(skip)]
    dual_channel_main: bool,
    /// Commands sent and not yet answered, oldest first (at most [`MAX_AWAITING`]).
    #[serde(skip)]
    awaiting: VecDeque<HandshakeStep>,
    /// The offset of a dual-channel main channel's second PSYNC.
    #[serde(skip)]
    dual_channel_continue_from: Option<i64>,
}

fn serialize_traffic<S: serde::Serializer>(t: &[Traffic; 2], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(2))?;
    for d in Direction::BOTH {
        map.serialize_entry(d.as_str(), &t[d.index()])?;
    }
    map.end()
}

fn serialize_blocked<S: serde::Serializer>(b: &[Duration; 2], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(2))?;
    map.serialize_entry("master", &b[Side::Master.index()].as_secs_f64())?;
    map.serialize_entry("replica", &b[Side::Replica.index()].as_secs_f64())?;
    map.end()
}

impl Link {
    /// Connection `id`, accepted at `now` from `peer_ip`, in its handshake.
    pub fn new(id: LinkId, peer_ip: Option<IpAddr>, now: Timestamp) -> Self {
        Link {
            id,
            peer_ip,
            opened_at: now,
            kind: LinkKind::Pending,
            phases: vec![PhaseChange { phase: Phase::Handshake, at: now }],
            handshake: Handshake::default(),
            request: None,
            answer: None,
            sync_kind: None,
            psync_refusal: None,
            master_replid: None,
            rdb: None,
            stream: StreamFacts::default(),
            traffic: [Traffic::default(); 2],
            blocked: [Duration::ZERO; 2],
            payload_error: None,
            replica_buffer_full: None,
            settings: crate::link::settings::ServerSettings::default(),
            waits_before_loading: None,
            last_blocked: [None, None],
            endpoint: None,
            diagnosis: None,
            desyncs: Vec::new(),
            close: None,
            partner: None,
            connect_error: None,
            outgoing_addr: None,
            master_view: None,
            faults: Vec::new(),
            rate_samples: VecDeque::new(),
            changes: Vec::new(),
            dual_channel_main: false,
            dual_channel_continue_from: None,
            awaiting: VecDeque::new(),
        }
    }

    /// Whether this is the main channel of a two-channel full sync (`+DUALCHANNELSYNC`, `+RDBCHANNELSYNC`):
    /// its replica receives the stream during the transfer and buffers it itself.
    pub fn is_two_channel_main(&self) -> bool {
        matches!(self.answer, Some(SyncAnswer::DualChannelSync { .. } | SyncAnswer::RdbChannelSync { .. }))
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phases.last().map_or(Phase::Handshake, |p| p.phase)
    }

    /// When the current phase began.
    pub fn phase_since(&self) -> Timestamp {
        self.phases.last().map_or(self.opened_at, |p| p.at)
    }

    /// When a phase began, if the link went through it.
    pub fn phase_at(&self, phase: Phase) -> Option<Timestamp> {
        self.phases.iter().find(|p| p.phase == phase).map(|p| p.at)
    }

    /// The replica endpoint, the metrics label: the announced ip (else the peer's) and the listening port.
    pub fn replica_endpoint(&self) -> Option<String> {
        self.endpoint.clone()
    }

    fn endpoint_from_handshake(&self) -> Option<String> {
        let port = self.handshake.listening_port?;
        let ip = match (&self.handshake.ip_address, self.peer_ip) {
            (Some(ip), _) => ip.clone(),
            (None, Some(IpAddr::V6(ip))) => format!("[{ip}]"),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => return None,
        };
        Some(format!("{ip}:{port}"))
    }

    /// Whether the decoder gave up on a direction (it said so with a desync).
    pub fn is_opaque(&self, direction: Direction) -> bool {
        self.desyncs.iter().any(|d| d.direction == direction)
    }

    /// The RDB transfer rate in bytes per second: over the last second while the payload flows, the
    /// transfer's average once it is complete, measured up to the close for a transfer cut short (it does
    /// not decay after), `None` before it starts or for a transfer too quick to time (one read).
    pub fn rdb_rate(&self, now: Timestamp) -> Option<f64> {
        let rdb = self.rdb.as_ref()?;
        let per_second = |bytes: u64, secs: f64| (secs > 0.0).then(|| bytes as f64 / secs);
        if let Some(done) = rdb.completed_at {
            return per_second(rdb.transferred, done.since(rdb.started_at).as_secs_f64());
        }
        let now = self.close.map_or(now, |c| c.at.min(now));
        let window_start = Timestamp::ZERO.plus(now.since(Timestamp::ZERO).saturating_sub(RATE_WINDOW));
        // The newest sample at least a window old; a younger transfer is measured from its start.
        let (t0, b0) =
            self.rate_samples.iter().rev().find(|(t, _)| *t <= window_start).copied().unwrap_or((rdb.started_at, 0));
        per_second(rdb.transferred.saturating_sub(b0), now.since(t0).as_secs_f64())
    }

    /// Records that an injected fault acted on this link.
    pub fn on_fault(&mut self, touch: FaultTouch, out: &mut Vec<Change>) {
        let (fault, kind, action) = (touch.fault, touch.kind, touch.action.clone());
        if self.faults.len() < MAX_FAULT_TOUCHES {
            self.faults.push(touch);
        }
        out.push(Change::FaultActed { link: self.id, fault, kind, action });
    }

    /// The master could not be reached: the proxy closes the replica's connection.
    pub fn on_connect_failed(
        &mut self,
        kind: std::io::ErrorKind,
        message: String,
        now: Timestamp,
        out: &mut Vec<Change>,
    ) {
        self.connect_error = Some(message);
        self.on_transport(TransportEvent::Closed { by: ClosedBy::Proxy, how: CloseHow::Error(kind) }, now, out);
    }

    /// Hands out what the update in progress changed.
    fn flush(&mut self, out: &mut Vec<Change>) {
        out.append(&mut self.changes);
    }

    fn emit(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// How a full sync of this replication link failed, if it did: the close of a full sync that ended
    /// before streaming, or that a side dropped before it had streamed for
    /// [`history::LOOP_CLEARS_AFTER`] (a replica that loads and is dropped at the first large write has not
    /// made it through either). What a replica's record and `replscope_full_sync_failures_total` count.
    pub fn failed_full_sync(&self) -> Option<Close> {
        let close = self.close?;
        if self.kind != LinkKind::Replication || self.sync_kind != Some(SyncKind::Full) {
            return None;
        }
        let before_streaming = matches!(close.phase, Phase::WaitingBgsave | Phase::RdbTransfer | Phase::Loading);
        let soon_after = close.phase == Phase::Streaming
            && close.by != ClosedBy::Proxy
            && self.phase_at(Phase::Streaming).is_some_and(|t| close.at.since(t) < history::LOOP_CLEARS_AFTER);
        (before_streaming || soon_after).then_some(close)
    }

    /// A partial resync the master accepted (`+CONTINUE`) and closed within
    /// [`history::PARTIAL_DROP_WITHIN`]: one attempt of a partial-resync loop, and when it was closed.
    pub fn dropped_partial_resync(&self) -> Option<(Timestamp, history::PartialDrop)> {
        let close = self.close?;
        let Some(SyncAnswer::Continue { at, .. }) = self.answer else { return None };
        let after = close.at.since(at);
        (self.kind == LinkKind::Replication && close.by == ClosedBy::Master && after <= history::PARTIAL_DROP_WITHIN)
            .then(|| {
                let drop = history::PartialDrop {
                    after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                    largest_command_bytes: self.stream.largest_command_bytes(),
                };
                (close.at, drop)
            })
    }

    /// Replica commands still waiting for the master's reply.
    pub fn unanswered_commands(&self) -> usize {
        self.awaiting.len()
    }

    /// The master's replication offset as the wire shows it: the stream's start offset plus every complete
    /// command since (`None` until a sync said where the stream starts).
    pub fn master_offset(&self) -> Option<i64> {
        self.stream.offset.or(self.stream.start_offset.map(|s| s + self.stream.bytes as i64))
    }

    /// Takes what the connection's [`Reader`] made of `len` bytes forwarded at `now`; what changed goes
    /// to `out`.
    pub fn on_decoded(&mut self, d: Decoded<'_>, now: Timestamp, out: &mut Vec<Change>) {
        let traffic = &mut self.traffic[d.direction.index()];
        traffic.bytes += d.len as u64;
        if d.len > 0 {
            traffic.last_at = Some(now);
            self.emit(Change::Forwarded { link: self.id, direction: d.direction, bytes: d.len as u64 });
        }
        for event in d.events {
            self.apply(event);
        }
        if d.direction == Direction::MasterToReplica {
            (self.stream.pending_command_bytes, self.stream.pending_received_bytes) = d.stream_pending;
        }
        if let (Some((_, received)), Some(rdb)) = (d.payload_progress, self.rdb.as_mut()) {
            rdb.transferred = received;
        }
        if let Some(rdb) = &self.rdb
            && rdb.completed_at.is_none()
        {
            sample_rate(&mut self.rate_samples, now, rdb.transferred);
        }
        self.flush(out);
    }

    /// Applies one wire event.
    fn apply(&mut self, e: &WireEvent) {
        let at = e.at;
        match &e.event {
            Event::Command { command } => self.on_command(command, at),
            Event::PlainClient { .. } => self.kind = LinkKind::Client,
            Event::Newline => {
                let t = &mut self.traffic[e.direction.index()];
                t.newlines += 1;
                t.last_newline_at = Some(at);
            }
            Event::Reply { reply } => self.on_reply(reply, at),
            Event::PayloadStart { framing } => {
                if self.answer.is_none() {
                    // After `SYNC` the payload itself is the answer.
                    self.answered();
                    self.answer = Some(SyncAnswer::BulkPayload { at });
                    self.decide(SyncKind::Full);
                }
                self.rdb = Some(RdbFacts {
                    framing: *framing,
                    announced_size: match framing {
                        PayloadFraming::Sized { len } => Some(*len),
                        PayloadFraming::EofMark => None,
                    },
                    transferred: 0,
                    header: None,
                    not_rdb: None,
                    trailer: None,
                    started_at: at,
                    completed_at: None,
                    via_rdb_channel: None,
                });
                self.advance(Phase::RdbTransfer, at);
            }
            Event::RdbHeader { header } => {
                if let Some(rdb) = &mut self.rdb {
                    rdb.header = Some(header.clone());
                }
            }
            Event::NotRdb { prefix } => {
                if let Some(rdb) = &mut self.rdb {
                    rdb.not_rdb = Some(prefix.clone());
                }
            }
            Event::PayloadEnd { bytes, trailer } => {
                if let Some(rdb) = &mut self.rdb {
                    rdb.transferred = *bytes;
                    rdb.trailer = Some(*trailer);
                    rdb.completed_at = Some(at);
                }
                if matches!(trailer, TrailerCheck::Mismatch { .. }) {
                    self.emit(Change::ChecksumFailed { link: self.id });
                }
                self.advance(Phase::Loading, at);
            }
            Event::Stream(tally) => {
                for (name, count) in tally.by_name() {
                    self.emit(Change::Commands { link: self.id, name, count: u64::from(count) });
                }
                let s = &mut self.stream;
                if let Some((name, len)) = tally.largest
                    && s.largest_command.is_none_or(|c| c.bytes < len)
                {
                    s.largest_command = Some(CommandSeen { name, bytes: len, at });
                }
                for (seen, n) in s.commands.iter_mut().zip(tally.counts) {
                    *seen += u64::from(n);
                }
                s.bytes = tally.stream_bytes;
                s.offset = tally.offset.or_else(|| s.start_offset.map(|b| b + tally.stream_bytes as i64));
                s.first_command_at.get_or_insert(at);
                s.last_command_at = Some(at);
                s.getack_last_at = (tally.last == Some(CommandName::Replconf)).then_some(at);
                // A replica that fell back to SYNC never acknowledges: the stream itself says it loaded.
                if matches!(self.answer, Some(SyncAnswer::BulkPayload { .. })) && self.phase() == Phase::Loading {
                    self.advance(Phase::Streaming, at);
                }
            }
            Event::Desync { offset, phase, reason } => {
                self.desyncs.push(DesyncFacts {
                    link_phase: self.phase(),
                    direction: e.direction,
                    offset: *offset,
                    phase: *phase,
                    reason: reason.clone(),
                    at,
                });
                self.emit(Change::Desync { link: self.id, direction: e.direction });
            }
        }
    }

    /// Applies a socket event; what changed goes to `out`.
    pub fn on_transport(&mut self, event: TransportEvent, now: Timestamp, out: &mut Vec<Change>) {
        match event {
            TransportEvent::Closed { by, how } => {
                if self.close.is_none() {
                    self.close = Some(Close {
                        by,
                        how,
                        at: now,
                        phase: self.phase(),
                        time_in_phase: now.since(self.phase_since()),
                    });
                    self.advance(Phase::Closed, now);
                    self.emit(Change::Closed { link: self.id });
                }
            }
            TransportEvent::Dialled { local } => self.outgoing_addr = Some(local),
            TransportEvent::WriteBlocked { side, duration } => {
                self.blocked[side.index()] += duration;
                // The longest of the waits that ended close together: a long wait followed by short ones
                // (a replica that read again after loading) is still a backed-up buffer.
                let longest = match self.last_blocked[side.index()] {
                    Some((end, d)) if now.since(end) <= rules::BACKED_UP_WITHIN => d.max(duration),
                    _ => duration,
                };
                self.last_blocked[side.index()] = Some((now, longest));
                self.emit(Change::WriteBlocked { link: self.id, side, duration });
                if side == Side::Replica {
                    self.replica_waited(now, duration);
                }
            }
        }
        self.flush(out);
    }

    /// A write toward the replica that ended at `now` waited `duration`. On a two-channel main channel, waits
    /// that began before the replica was loading add up to [`ReplicaBufferFull`] once they pass
    /// [`rules::REPLICA_BUFFER_FULL_AFTER`] (a replica busy loading may rightly not read; one still
    /// receiving the RDB reads its main channel unless its buffer for it is full).
    fn replica_waited(&mut self, now: Timestamp, duration: Duration) {
        let two_channel = self.is_two_channel_main();
        let began = Timestamp::from_micros(now.as_micros().saturating_sub(duration.as_micros() as u64));
        let before_loading = self.phase_at(Phase::Loading).is_none_or(|loading| began < loading);
        if !two_channel || !before_loading {
            return;
        }
        let waits =
            self.waits_before_loading.get_or_insert(ReplicaBufferFull { since: began, not_reading: Duration::ZERO });
        waits.not_reading += duration;
        let waits = *waits;
        if waits.not_reading >= rules::REPLICA_BUFFER_FULL_AFTER {
            let first = self.replica_buffer_full.is_none();
            self.replica_buffer_full = Some(waits);
            if first {
                self.emit(Change::ReplicaBufferFull { link: self.id });
            }
        }
    }

    /// Moves to a later phase; earlier or equal phases are ignored.
    fn advance(&mut self, phase: Phase, at: Timestamp) {
        if phase > self.phase() {
            self.phases.push(PhaseChange { phase, at });
            self.emit(Change::PhaseEntered { link: self.id, phase });
        }
    }

    /// The master decided full or partial (the first decision is the link's).
    fn decide(&mut self, kind: SyncKind) {
        if self.sync_kind.is_none() {
            self.emit(Change::SyncDecided { link: self.id, kind });
        }
        self.sync_kind = Some(kind);
    }

    fn become_replication(&mut self) {
        if self.kind == LinkKind::Pending {
            self.kind = LinkKind::Replication;
        }
    }

    /// A sync was asked for: without a `listening-port` (or after `rdb-only 1`) it is a snapshot client,
    /// not a replica. An RDB channel stays one (Valkey's says `rdb-only 1` too).
    fn asked_to_sync(&mut self) {
        self.become_replication();
        if self.kind == LinkKind::Replication && (self.handshake.rdb_only || self.handshake.listening_port.is_none()) {
            self.kind = LinkKind::Snapshot;
        }
    }

    fn on_command(&mut self, command: &ReplicaCommand, at: Timestamp) {
        let step = match command {
            ReplicaCommand::Ping => Some(HandshakeStep::Ping),
            ReplicaCommand::Auth { .. } => Some(HandshakeStep::Auth),
            // ACKs (and the FACK riding on them) are never answered.
            ReplicaCommand::Replconf(options)
                if options.iter().any(|o| matches!(o, ReplconfOption::Ack(_) | ReplconfOption::GetAck)) =>
            {
                None
            }
            ReplicaCommand::Replconf(_) => Some(HandshakeStep::Replconf),
            ReplicaCommand::Psync { .. } => Some(HandshakeStep::Psync),
            ReplicaCommand::Sync => Some(HandshakeStep::Sync),
            ReplicaCommand::Other(_) => Some(HandshakeStep::Other),
        };
        if let Some(step) = step
            && self.awaiting.len() < MAX_AWAITING
        {
            self.awaiting.push_back(step);
        }
        match command {
            ReplicaCommand::Ping | ReplicaCommand::Other(_) => {}
            ReplicaCommand::Auth { user } => {
                self.handshake.auth = Some(AuthFacts { user: user.clone(), at, accepted: None });
            }
            ReplicaCommand::Replconf(options) => {
                for option in options {
                    self.on_replconf(option, at);
                }
            }
            ReplicaCommand::Psync { replid, offset, .. } => {
                self.asked_to_sync();
                if self.dual_channel_main {
                    // Step two of a Valkey dual-channel sync (`PSYNC <replid> <$ENDOFF + 1>`): the request and
                    // answer that decided the sync stay; this one only says where the stream resumes.
                    self.dual_channel_continue_from = Some(*offset);
                } else {
                    self.request = Some(SyncRequest::Psync { replid: *replid, offset: *offset, at });
                    self.answer = None;
                }
            }
            ReplicaCommand::Sync => {
                self.asked_to_sync();
                self.request = Some(SyncRequest::Sync { at });
                self.answer = None;
            }
        }
    }

    fn on_replconf(&mut self, option: &ReplconfOption, at: Timestamp) {
        let h = &mut self.handshake;
        match option {
            ReplconfOption::ListeningPort(p) => {
                h.listening_port = Some(*p);
                self.endpoint = self.endpoint_from_handshake();
            }
            ReplconfOption::IpAddress(ip) => {
                h.ip_address = Some(ip.clone());
                self.endpoint = self.endpoint_from_handshake();
            }
            ReplconfOption::Capa(c) => {
                if !h.capabilities.contains(c) {
                    h.capabilities.push(c.clone());
                }
            }
            ReplconfOption::Version(v) => h.version = Some(v.clone()),
            ReplconfOption::Ack(offset) => {
                self.stream.last_ack = Some(Ack { offset: *offset, fack: None, at });
                self.stream.acks += 1;
                if self.phase() == Phase::Loading {
                    self.advance(Phase::Streaming, at);
                }
            }
            ReplconfOption::Fack(fack) => {
                if let Some(ack) = &mut self.stream.last_ack {
                    ack.fack = Some(*fack);
                }
            }
            ReplconfOption::GetAck | ReplconfOption::Other(_) => {}
            ReplconfOption::RdbOnly(on) => {
                h.rdb_only = *on;
                // Known at once, so a backup started just after a replica dropped is never that replica
                // coming back.
                if *on && matches!(self.kind, LinkKind::Pending | LinkKind::Replication) {
                    self.kind = LinkKind::Snapshot;
                    return;
                }
            }
            ReplconfOption::RdbChannel(on) => {
                if *on {
                    self.kind = LinkKind::RdbChannel;
                }
            }
            ReplconfOption::RdbFilterOnly(f) => h.rdb_filter_only = Some(f.clone()),
            ReplconfOption::MainChClientId(id) => h.main_ch_client_id = Some(*id),
            ReplconfOption::SetRdbClientId(id) => h.set_rdb_client_id = Some(*id),
        }
        self.become_replication();
    }

    /// A full sync answered this link's PSYNC: records why the partial resync was refused.
    fn refused(&mut self, master_replid: ReplId, master_offset: i64) {
        if let Some(SyncRequest::Psync { replid, offset, .. }) = self.request {
            let first = self.psync_refusal.is_none();
            let Some(refusal) = refusal::classify(replid, offset, master_replid, master_offset) else { return };
            self.psync_refusal = Some(refusal);
            if first {
                self.emit(Change::Refused { link: self.id });
            }
        }
    }

    /// Pops the oldest unanswered command: the one a reply answers.
    fn answered(&mut self) -> Option<HandshakeStep> {
        self.awaiting.pop_front()
    }

    fn on_reply(&mut self, reply: &MasterReply, at: Timestamp) {
        let to = self.answered();
        if to == Some(HandshakeStep::Auth)
            && let Some(auth) = &mut self.handshake.auth
        {
            auth.accepted = Some(matches!(reply, MasterReply::Ok));
        }
        match reply {
            MasterReply::Pong | MasterReply::Ok | MasterReply::Other(_) => {}
            MasterReply::Error { code, .. } => {
                if self.handshake.errors.len() < MAX_ERRORS_KEPT {
                    self.handshake.errors.push(ErrorReply { code: code.clone(), to, at });
                }
                if self.phase() == Phase::WaitingBgsave {
                    // A full sync was granted, then an error came where the payload should have been
                    // (e.g. `-ERR BGSAVE failed, replication can't continue`).
                    self.payload_error = Some(ErrorReply { code: code.clone(), to, at });
                } else if self.request.is_some() && self.answer.is_none() {
                    self.answer = Some(SyncAnswer::Error { code: code.clone(), at });
                }
            }
            MasterReply::FullResync { replid, offset } => {
                self.master_replid = Some(*replid);
                self.answer = Some(SyncAnswer::FullResync { replid: *replid, offset: *offset, at });
                self.decide(SyncKind::Full);
                if self.kind != LinkKind::RdbChannel {
                    self.refused(*replid, *offset);
                }
                self.stream.start_offset = Some(*offset);
                self.advance(Phase::WaitingBgsave, at);
            }
            MasterReply::Continue { replid } => {
                if self.dual_channel_main {
                    // Step two of a Valkey dual-channel full sync: the stream resumes at $ENDOFF + 1.
                    if let Some(offset) = self.dual_channel_continue_from {
                        self.stream.start_offset = Some(offset - 1);
                    }
                    return;
                }
                self.answer = Some(SyncAnswer::Continue { replid: *replid, at });
                self.decide(SyncKind::Partial);
                self.master_replid = replid.or(match self.request {
                    Some(SyncRequest::Psync { replid: PsyncId::Id(id), .. }) => Some(id),
                    _ => None,
                });
                if let Some(SyncRequest::Psync { offset, .. }) = self.request {
                    self.stream.start_offset = Some(offset - 1);
                }
                self.advance(Phase::Streaming, at);
            }
            MasterReply::DualChannelSync => {
                self.answer = Some(SyncAnswer::DualChannelSync { at });
                self.decide(SyncKind::Full);
                self.dual_channel_main = true;
                self.advance(Phase::WaitingBgsave, at);
            }
            MasterReply::RdbChannelSync { client_id } => {
                self.answer = Some(SyncAnswer::RdbChannelSync { client_id: *client_id, at });
                self.decide(SyncKind::Full);
                self.advance(Phase::WaitingBgsave, at);
            }
            MasterReply::EndOffset { offset, replid, dbid, client_id } => {
                self.kind = LinkKind::RdbChannel;
                self.master_replid = Some(*replid);
                self.answer = Some(SyncAnswer::EndOffset {
                    offset: *offset,
                    replid: *replid,
                    dbid: *dbid,
                    client_id: *client_id,
                    at,
                });
                self.decide(SyncKind::Full);
                self.stream.start_offset = Some(*offset);
                self.advance(Phase::WaitingBgsave, at);
            }
        }
    }

    /// The key that pairs this connection with the other one of a two-channel sync, and whether this is
    /// the RDB channel.
    pub(crate) fn pair_key(&self) -> Option<(PairKey, bool)> {
        if self.kind == LinkKind::RdbChannel {
            if let Some(SyncAnswer::EndOffset { client_id, .. }) = self.answer {
                return Some((PairKey::RdbClientId(client_id), true));
            }
            return self.handshake.main_ch_client_id.map(|id| (PairKey::MainClientId(id), true));
        }
        if let Some(SyncAnswer::RdbChannelSync { client_id, .. }) = self.answer {
            return Some((PairKey::MainClientId(client_id), false));
        }
        self.handshake.set_rdb_client_id.map(|id| (PairKey::RdbClientId(id), false))
    }

    /// A main channel takes what its RDB channel learnt: the RDB and its phases, and (Redis 8) the start
    /// offset of the stream it is already receiving.
    pub(crate) fn adopt_from_rdb_channel(&mut self, rdb_channel: &Link, out: &mut Vec<Change>) {
        self.adopt(rdb_channel);
        self.flush(out);
    }

    fn adopt(&mut self, rdb_channel: &Link) {
        // The two-channel sync's offset and id come from the RDB channel ($ENDOFF or its FULLRESYNC).
        if self.psync_refusal.is_none()
            && let Some(SyncAnswer::EndOffset { offset, replid, .. } | SyncAnswer::FullResync { offset, replid, .. }) =
                rdb_channel.answer
        {
            self.master_replid = Some(replid);
            self.refused(replid, offset);
        }
        let Some(rdb) = &rdb_channel.rdb else {
            if self.stream.start_offset.is_none() {
                self.adopt_start_offset(rdb_channel);
            }
            return;
        };
        let mut rdb = rdb.clone();
        rdb.via_rdb_channel = Some(rdb_channel.id.0);
        let mismatch = |r: Option<&RdbFacts>| matches!(r.and_then(|r| r.trailer), Some(TrailerCheck::Mismatch { .. }));
        if mismatch(Some(&rdb)) && !mismatch(self.rdb.as_ref()) {
            self.emit(Change::ChecksumFailed { link: self.id });
        }
        let (started, completed) = (rdb.started_at, rdb.completed_at);
        self.rdb = Some(rdb);
        self.advance(Phase::RdbTransfer, started);
        if let Some(done) = completed {
            self.advance(Phase::Loading, done);
        }
        if self.stream.start_offset.is_none() {
            self.adopt_start_offset(rdb_channel);
        }
    }

    fn adopt_start_offset(&mut self, rdb_channel: &Link) {
        if let Some(SyncAnswer::FullResync { offset, .. }) = rdb_channel.answer {
            self.stream.start_offset = Some(offset);
            if self.stream.bytes > 0 {
                self.stream.offset = Some(offset + self.stream.bytes as i64);
            }
        }
    }
}
