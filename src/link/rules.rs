//! The first answer for a link that closed: the facts of the close, computed once ([`CloseFacts`]), and an
//! ordered list of rules over them ([`RULES`]). The first rule that holds names the cause, says how that
//! answer settles and what it cites; the order is the priority. The rules follow PROTOCOL.md §7 and the
//! thresholds below, each with its reason.
//!
//! Adding a cause: a variant of [`Cause`] (with its label) and a rule here; the compiler then asks for
//! its explanation in `observe::explain`.

use std::time::Duration;

use crate::link::cause::{Cause, Diagnosis, Evidence, Settlement};
use crate::link::settings::ServerSettings;
use crate::link::{Close, CloseHow, ClosedBy, ErrorReply, HandshakeStep, Link, LinkKind, Phase, Side};
use crate::wire::{Direction, ErrorCode, PayloadFraming, TrailerCheck};

/// A desync this close before the replica closed is what made it close.
pub const DESYNC_BEFORE_CLOSE: Duration = Duration::from_secs(1);

/// A blocked write toward the replica that ended this close to a master close means the master's
/// output buffer for it was backed up ...
pub const BACKED_UP_WITHIN: Duration = Duration::from_secs(2);

/// ... if it waited at least this long. Shorter waits are the flow control of any transfer at full
/// speed (the socket toward a replica that reads fills for a moment): taking them as a sign made the same
/// close right after a complete RDB `output_buffer_limit` or `master_closed` by chance.
pub const BACKED_UP_FOR: Duration = Duration::from_millis(250);

/// A two-channel sync's replica that did not read its main channel for this long before it was loading
/// had its stream buffer full ([`ReplicaBufferFull`](crate::link::facts::ReplicaBufferFull)); shorter waits
/// are ordinary scheduling and socket-buffer hiccups.
pub const REPLICA_BUFFER_FULL_AFTER: Duration = Duration::from_secs(1);

/// A `REPLCONF GETACK` this close before a master close, with nothing streamed after it, is a graceful
/// shutdown (7.0+ asks lagging replicas for their offset, then waits up to `shutdown-timeout`, 10 s).
pub const GETACK_BEFORE_SHUTDOWN: Duration = Duration::from_secs(11);

/// The smallest `client-query-buffer-limit` a server accepts: a replica that hangs up in the middle of a
/// command at least this large may have hit it.
pub const SMALLEST_QUERY_BUFFER_LIMIT: u64 = 1 << 20;

/// What the rest of the route knows when a link closes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// The master's write rate, bytes per second.
    pub write_rate: Option<f64>,
    /// What the operator stated about the master's settings.
    pub settings: ServerSettings,
}

/// Everything the rules look at, computed once when a link is diagnosed.
#[derive(Clone, Debug)]
pub struct CloseFacts<'a> {
    /// The link.
    pub link: &'a Link,
    /// How it closed.
    pub close: Close,
    /// What the route knew.
    pub ctx: Context,
    /// Time since the master last sent a byte.
    pub master_silent: Duration,
    /// Time since the replica last sent a byte (ACK or `\n`).
    pub replica_silent: Duration,
    /// The silence a peer's timeout needs ([`ServerSettings::silence_for_timeout`]).
    pub silence: Duration,
    /// Closed during a full sync: seconds since FULLRESYNC.
    pub since_fullresync: Option<f64>,
    /// Closed during a full sync with a known write rate: bytes piled up for the replica since FULLRESYNC.
    pub accumulated: Option<f64>,
    /// The RDB came EOF-marked (a diskless master).
    pub diskless: bool,
    /// A write toward the replica waited at least [`BACKED_UP_FOR`], and ended within [`BACKED_UP_WITHIN`]
    /// of the close.
    pub backed_up: bool,
    /// Such a wait lasted at least `silence`: the transfer toward the replica stalled.
    pub stalled_toward_replica: bool,
    /// The master writes (or its rate is not known yet).
    pub writing: bool,
    /// The handshake error that ended the handshake, if it ended in one (PING's `-NOAUTH` is answered
    /// with AUTH, so it ends nothing).
    pub handshake_error: Option<&'a ErrorReply>,
    /// A desync within [`DESYNC_BEFORE_CLOSE`] of the close.
    pub recent_desync: bool,
    /// A `REPLCONF GETACK` within [`GETACK_BEFORE_SHUTDOWN`] of the close.
    pub recent_getack: bool,
    /// One of replscope's faults that close links acted on this one.
    pub cut_by_fault: bool,
    /// The RDB's trailer did not match its bytes.
    pub checksum_mismatch: bool,
    /// A stream command of at least [`SMALLEST_QUERY_BUFFER_LIMIT`] was in flight at the close, or
    /// completed within [`BACKED_UP_WITHIN`] of it (forwarded whole, the replica may not have read it):
    /// its size.
    pub large_command: Option<u64>,
    /// The output buffer on the master at the close, as introspection read it (against the limit the
    /// master applies).
    pub buffer: Option<crate::link::output_buffer::BufferAtClose>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl<'a> CloseFacts<'a> {
    /// The facts of a closed link; `None` while it is open.
    pub fn new(link: &'a Link, ctx: Context) -> Option<Self> {
        let close = link.close?;
        let now = close.at;
        let m2r = &link.traffic[Direction::MasterToReplica.index()];
        let r2m = &link.traffic[Direction::ReplicaToMaster.index()];
        let replica_last = r2m.last_at.max(r2m.last_newline_at).unwrap_or(link.opened_at);
        let silence = ctx.settings.silence_for_timeout();
        let in_full_sync = matches!(close.phase, Phase::WaitingBgsave | Phase::RdbTransfer | Phase::Loading);
        let since_fullresync = link.phase_at(Phase::WaitingBgsave).filter(|_| in_full_sync).map(|t| secs(now.since(t)));
        let toward_replica = link.last_blocked[Side::Replica.index()];
        Some(CloseFacts {
            link,
            close,
            ctx,
            master_silent: now.since(m2r.last_at.unwrap_or(link.opened_at)),
            replica_silent: now.since(replica_last),
            silence,
            since_fullresync,
            accumulated: since_fullresync.zip(ctx.write_rate).map(|(s, rate)| rate * s),
            diskless: link.rdb.as_ref().is_some_and(|r| r.framing == PayloadFraming::EofMark),
            backed_up: toward_replica.is_some_and(|(end, d)| now.since(end) <= BACKED_UP_WITHIN && d >= BACKED_UP_FOR),
            stalled_toward_replica: toward_replica
                .is_some_and(|(end, d)| d >= silence && now.since(end) <= BACKED_UP_WITHIN),
            writing: ctx.write_rate.is_none_or(|r| r > 0.0),
            handshake_error: link.handshake.errors.iter().rev().find(|e| {
                matches!(e.to, Some(HandshakeStep::Auth | HandshakeStep::Psync | HandshakeStep::Sync))
                    || (e.to == Some(HandshakeStep::Ping) && e.code != ErrorCode::Noauth)
            }),
            recent_desync: link.desyncs.iter().any(|d| now.since(d.at) <= DESYNC_BEFORE_CLOSE),
            recent_getack: link.stream.getack_last_at.is_some_and(|t| now.since(t) <= GETACK_BEFORE_SHUTDOWN),
            cut_by_fault: link.faults.iter().any(|f| f.kind.closes_link()),
            checksum_mismatch: matches!(link.rdb.as_ref().and_then(|r| r.trailer), Some(TrailerCheck::Mismatch { .. })),
            large_command: large_command(link, now),
            buffer: link.master_view.as_ref().and_then(|v| {
                let (limit, used) = ctx.settings.output_buffer_limit();
                v.at_close(now, limit, used.in_effect.as_deref().unwrap_or(&used.value))
            }),
        })
    }

    fn by(&self, who: ClosedBy) -> bool {
        self.close.by == who
    }

    fn reset(&self) -> bool {
        self.close.how == CloseHow::Reset
    }

    /// Whether the replica's output buffer on the master was full: as the master's own readings show it
    /// (at its limit, or clearly far from it, just before the close), else as far as the wire can tell.
    pub fn buffer_full(&self) -> bool {
        if let Some(b) = &self.buffer {
            if b.reached.is_some() {
                return true;
            }
            if b.far_below {
                return false;
            }
        }
        match self.close.phase {
            // Before the RDB is through, every write since FULLRESYNC waits in the replica's buffer.
            Phase::WaitingBgsave | Phase::RdbTransfer => self.writing,
            // With the RDB delivered, a disk-based master is already sending the replica its writes
            // (PROTOCOL.md §7.1): only a sign of them piling up makes it the buffer — forwarding toward
            // the replica backed up (it does not read while it loads), or more written since FULLRESYNC
            // than the limit in force allows. Without one it is any other close (a CLIENT KILL just after
            // a small sync). A diskless master buffers until the first ACK, as before the RDB.
            Phase::Loading if self.diskless => self.writing || self.backed_up,
            Phase::Loading => self.backed_up || self.over_limit(),
            Phase::Streaming => self.backed_up,
            _ => false,
        }
    }

    /// Whether the bytes piled up reach the soft limit in force (the hard one when there is no soft one).
    fn over_limit(&self) -> bool {
        let (limit, _) = self.ctx.settings.output_buffer_limit();
        let bar = if limit.soft > 0 { limit.soft } else { limit.hard };
        self.accumulated.is_some_and(|a| bar > 0 && a >= bar as f64)
    }
}

/// A stream command of at least [`SMALLEST_QUERY_BUFFER_LIMIT`] in flight at `now`, or completed within
/// [`BACKED_UP_WITHIN`] before it.
pub fn large_command(link: &Link, now: crate::time::Timestamp) -> Option<u64> {
    let recent = link.stream.largest_command.filter(|c| now.since(c.at) <= BACKED_UP_WITHIN).map_or(0, |c| c.bytes);
    let size = recent.max(link.stream.pending_command_bytes);
    (size >= SMALLEST_QUERY_BUFFER_LIMIT).then_some(size)
}

/// One rule: the cause it names, when it holds, how its answer settles, and what it adds to the evidence
/// (the settings it was judged against, an error code).
pub struct Rule {
    /// The cause.
    pub cause: Cause,
    /// Whether it holds.
    pub when: fn(&CloseFacts<'_>) -> bool,
    /// How the answer settles.
    pub settles: Settlement,
    /// What it adds to the evidence.
    pub cites: fn(&CloseFacts<'_>, &mut Evidence),
}

fn nothing(_: &CloseFacts<'_>, _: &mut Evidence) {}

/// The default repl-timeout is not evidence: a timeout that fired proves the setting was shorter than
/// the silence, whatever the default says.
fn stated_repl_timeout(f: &CloseFacts<'_>, e: &mut Evidence) {
    if f.ctx.settings.known_repl_timeout().is_some() {
        e.settings.push(f.ctx.settings.repl_timeout().1);
    }
}

fn output_buffer_limit(f: &CloseFacts<'_>, e: &mut Evidence) {
    e.settings.push(f.ctx.settings.output_buffer_limit().1);
}

fn handshake_error(f: &CloseFacts<'_>, e: &mut Evidence) {
    e.error_code = f.handshake_error.map(|err| err.code.clone());
}

/// The rules, first match wins. Closes by replscope first (they say themselves why), then what the
/// bytes prove whoever closed (a bad checksum, a refused handshake), then the master's closes and the
/// replica's, the specific before the general. Every close matches one: each side ends in a catch-all.
pub const RULES: &[Rule] = &[
    Rule {
        cause: Cause::ConnectFailed,
        when: |f| f.by(ClosedBy::Proxy) && f.link.connect_error.is_some(),
        settles: Settlement::AtOnce,
        cites: nothing,
    },
    Rule {
        cause: Cause::FaultInjected,
        when: |f| f.by(ClosedBy::Proxy) && f.cut_by_fault,
        settles: Settlement::AtOnce,
        cites: nothing,
    },
    Rule { cause: Cause::ProxyShutdown, when: |f| f.by(ClosedBy::Proxy), settles: Settlement::AtOnce, cites: nothing },
    Rule { cause: Cause::ChecksumMismatch, when: |f| f.checksum_mismatch, settles: Settlement::AtOnce, cites: nothing },
    Rule {
        // A backup or `redis-cli --replica` that took the whole payload and hung up: the normal end.
        cause: Cause::Completed,
        when: |f| {
            f.link.kind == LinkKind::Snapshot
                && f.by(ClosedBy::Replica)
                && f.link.rdb.as_ref().is_some_and(|r| r.completed_at.is_some())
        },
        settles: Settlement::AtOnce,
        cites: nothing,
    },
    Rule {
        cause: Cause::HandshakeRejected,
        when: |f| f.close.phase == Phase::Handshake && f.handshake_error.is_some(),
        settles: Settlement::AtOnce,
        cites: handshake_error,
    },
    Rule {
        cause: Cause::ProtocolError,
        when: |f| f.by(ClosedBy::Replica) && f.recent_desync,
        settles: Settlement::AtOnce,
        cites: nothing,
    },
    // The master closed.
    Rule {
        cause: Cause::MasterShutdown,
        when: |f| f.by(ClosedBy::Master) && f.recent_getack,
        settles: Settlement::AtOnce,
        cites: nothing,
    },
    Rule {
        cause: Cause::MasterTimeout,
        when: |f| f.by(ClosedBy::Master) && f.close.phase == Phase::Streaming && f.replica_silent >= f.silence,
        settles: Settlement::AtOnce,
        cites: stated_repl_timeout,
    },
    Rule {
        // A diskless transfer the replica stopped reading: the master times out its writes.
        cause: Cause::MasterTimeout,
        when: |f| {
            f.by(ClosedBy::Master) && f.close.phase == Phase::RdbTransfer && f.diskless && f.stalled_toward_replica
        },
        settles: Settlement::AtOnce,
        cites: stated_repl_timeout,
    },
    Rule {
        cause: Cause::OutputBufferLimit,
        when: |f| f.by(ClosedBy::Master) && f.buffer_full(),
        settles: Settlement::WriteRate,
        cites: output_buffer_limit,
    },
    Rule {
        cause: Cause::NetworkReset,
        when: |f| f.by(ClosedBy::Master) && f.reset(),
        settles: Settlement::AtOnce,
        cites: nothing,
    },
    Rule {
        cause: Cause::MasterClosed,
        when: |f| f.by(ClosedBy::Master),
        settles: Settlement::MasterRefusal,
        cites: nothing,
    },
    // The replica closed.
    Rule {
        // Within moments of a stream command larger than the smallest query-buffer limit: the replica
        // refused to buffer it (a reset, as it closed with the bytes unread). A disk-based master streams
        // right behind the RDB, so the replica may meet it before its first ACK (still `loading` here); a
        // replica that fails to load closes before reading any stream. Believed once it comes back.
        cause: Cause::ReplicaQueryBufferLimit,
        when: |f| {
            f.by(ClosedBy::Replica)
                && matches!(f.close.phase, Phase::Loading | Phase::Streaming)
                && f.large_command.is_some()
        },
        settles: Settlement::ReplicaReturn,
        cites: nothing,
    },
    Rule {
        cause: Cause::ReplicaLoadFailed,
        when: |f| f.by(ClosedBy::Replica) && f.close.phase == Phase::Loading,
        settles: Settlement::ReplicaReturnForFullSync,
        cites: nothing,
    },
    Rule {
        // Only believed once the replica comes back (one sent away with `REPLICAOF NO ONE` during a quiet
        // spell does not).
        cause: Cause::ReplicaTimeout,
        when: |f| f.by(ClosedBy::Replica) && f.master_silent >= f.silence,
        settles: Settlement::ReplicaReturn,
        cites: stated_repl_timeout,
    },
    Rule {
        cause: Cause::NetworkReset,
        when: |f| f.by(ClosedBy::Replica) && f.reset(),
        settles: Settlement::AtOnce,
        cites: nothing,
    },
    Rule {
        cause: Cause::ReplicaLeft,
        when: |f| f.by(ClosedBy::Replica),
        settles: Settlement::ReplicaReturn,
        cites: nothing,
    },
];

/// Whether a closed connection never showed itself a replica: it sent nothing, or only PING or AUTH
/// that the master answered without an error, and closed it itself. That is a health check (a TCP
/// probe, `redis-cli ping`), not a replication link that ended: a real replica that got its `+PONG`
/// goes on with `REPLCONF`, and one whose master stays silent or refuses has an unanswered command or an
/// error to show for it.
pub fn is_probe(link: &Link) -> bool {
    link.kind == LinkKind::Pending
        && link.close.is_some_and(|c| c.by == ClosedBy::Replica)
        && link.connect_error.is_none()
        && link.handshake.errors.is_empty()
        && link.handshake.listening_port.is_none()
        && link.request.is_none()
        && link.unanswered_commands() == 0
}

/// Whether a closed link is a replication link that ended, and so has a cause: not a plain client, not a
/// health probe, not an RDB channel that delivered its RDB (its close is the normal end).
pub fn needs_diagnosis(link: &Link) -> bool {
    link.close.is_some()
        && !is_probe(link)
        && match link.kind {
            LinkKind::Client => false,
            LinkKind::RdbChannel => link.rdb.as_ref().is_none_or(|r| r.completed_at.is_none()),
            LinkKind::Pending | LinkKind::Replication | LinkKind::Snapshot => true,
        }
}

/// The evidence every cause shows.
fn evidence(f: &CloseFacts<'_>) -> Evidence {
    let link = f.link;
    let (bm, br) = (link.blocked[Side::Master.index()], link.blocked[Side::Replica.index()]);
    let rdb = link.rdb.as_ref();
    let mut faults: Vec<u64> = link.faults.iter().map(|t| t.fault).collect();
    faults.dedup();
    Evidence {
        phase: f.close.phase,
        closed_by: f.close.by,
        how: f.close.how,
        seconds_in_phase: secs(f.close.time_in_phase),
        rdb_bytes: rdb.map(|r| r.transferred),
        rdb_size: rdb.and_then(|r| r.size()),
        rdb_percent: rdb.and_then(|r| r.size().filter(|s| *s > 0).map(|s| r.transferred as f64 * 100.0 / s as f64)),
        rdb_rate: link.rdb_rate(f.close.at),
        blocked_master_seconds: secs(bm),
        blocked_replica_seconds: secs(br),
        slow_end: match (bm.is_zero(), br.is_zero()) {
            (true, true) => None,
            _ if br >= bm => Some(Side::Replica),
            _ => Some(Side::Master),
        },
        master_silent_seconds: secs(f.master_silent),
        replica_silent_seconds: secs(f.replica_silent),
        last_ack: link.stream.last_ack.map(|a| a.offset),
        lag_bytes: link.stream.lag(),
        write_rate: f.ctx.write_rate,
        accumulated_bytes: f.accumulated,
        seconds_since_fullresync: f.since_fullresync,
        faults,
        error_code: None,
        later: Vec::new(),
        settings: Vec::new(),
        output_buffer: f.buffer.clone(),
    }
}

/// The first answer for a link that just closed; `None` for links that need none
/// ([`needs_diagnosis`]).
pub fn classify(link: &Link, ctx: Context) -> Option<Diagnosis> {
    if !needs_diagnosis(link) {
        return None;
    }
    let facts = CloseFacts::new(link, ctx)?;
    let rule = RULES.iter().find(|r| (r.when)(&facts))?;
    let mut evidence = evidence(&facts);
    (rule.cites)(&facts, &mut evidence);
    // The master's own reading of the buffer at its limit proves the kill: nothing later can add to it.
    let settles = match facts.buffer.as_ref().and_then(|b| b.reached) {
        Some(_) if rule.cause == Cause::OutputBufferLimit => Settlement::AtOnce,
        _ => rule.settles,
    };
    Some(Diagnosis::new(rule.cause, settles, evidence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_a_rule_and_every_close_matches_one() {
        let named: Vec<Cause> = RULES.iter().map(|r| r.cause).collect();
        for cause in Cause::ALL {
            assert!(named.contains(cause), "{cause} has no rule");
        }
        // The last rule for each closer is a catch-all, so `classify` always answers.
        for (who, last) in [
            (ClosedBy::Master, Cause::MasterClosed),
            (ClosedBy::Replica, Cause::ReplicaLeft),
            (ClosedBy::Proxy, Cause::ProxyShutdown),
        ] {
            let mut link = Link::new(crate::link::LinkId(1), None, crate::time::Timestamp::ZERO);
            link.close = Some(Close {
                by: who,
                how: CloseHow::Fin,
                at: crate::time::Timestamp::from_micros(1),
                phase: Phase::Handshake,
                time_in_phase: Duration::from_micros(1),
            });
            link.kind = LinkKind::Replication;
            let d = classify(&link, Context::default()).expect("diagnosed");
            assert_eq!(d.first, last, "{who:?}");
        }
    }
}
