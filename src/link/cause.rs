//! Why a replication link ended: exactly one cause from a fixed set, with the evidence behind it.
//!
//! [`classify`] gives the first answer from what the link saw up to its close. Later facts refine it
//! ([`refine`]): whether the replica came back within [`CAME_BACK_WINDOW`] and what it asked for, and
//! whether the master refused the next connection. The rules follow PROTOCOL.md §7 and the thresholds are
//! below, each with its reason.

use std::time::Duration;

use crate::link::settings::{ServerSettings, SettingUsed};
use crate::link::{CloseHow, ClosedBy, HandshakeStep, Link, LinkKind, Phase, Side, SyncRequest};
use crate::time::Timestamp;
use crate::wire::{Direction, ErrorCode, PayloadFraming, PsyncId, TrailerCheck};

/// Silence that counts as a timeout's cause. Replicas ACK once a second and masters stream, ping or send
/// `\n` at least every few seconds in a healthy link, so 2 s without a byte is already abnormal; the
/// server's own `repl-timeout` (60 s by default) is longer, so any real timeout passes this bar. When the
/// operator states `repl-timeout` (`--assume-repl-timeout`) the bar rises to it
/// ([`ServerSettings::silence_for_timeout`]).
pub const SILENCE: Duration = Duration::from_secs(2);

/// How long a replica has to come back before its close counts as leaving: replicas reconnect at once
/// (6.2+) or at the next 1 Hz cron tick (≤ 6.0); 10 s leaves room for a slow handshake.
pub const CAME_BACK_WINDOW: Duration = Duration::from_secs(10);

/// A desync this close before the replica closed is what made it close.
pub const DESYNC_BEFORE_CLOSE: Duration = Duration::from_secs(1);

/// A blocked write toward the replica that ended this close to a master close means the master's
/// output buffer for it was backed up.
pub const BACKED_UP_WITHIN: Duration = Duration::from_secs(2);

/// A `REPLCONF GETACK` this close before a master close, with nothing streamed after it, is a graceful
/// shutdown (7.0+ asks lagging replicas for their offset, then waits up to `shutdown-timeout`, 10 s).
pub const GETACK_BEFORE_SHUTDOWN: Duration = Duration::from_secs(11);

/// Why a link ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The master closed during a full sync while writes piled up for the replica, or while streaming
    /// toward it was backed up: `client-output-buffer-limit replica`.
    OutputBufferLimit,
    /// The master closed after the replica went silent (no ACK, no `\n`), or after a diskless transfer
    /// toward it stalled: the master's `repl-timeout`.
    MasterTimeout,
    /// The replica closed after the master went silent: the replica's `repl-timeout`.
    ReplicaTimeout,
    /// The replica closed while loading and came back for another full sync.
    ReplicaLoadFailed,
    /// The RDB trailer did not match the bytes forwarded.
    ChecksumMismatch,
    /// The replica closed right after bytes the decoders could not follow.
    ProtocolError,
    /// The replica closed and did not come back.
    ReplicaLeft,
    /// The master shut down (GETACK then close, or the next connection refused).
    MasterShutdown,
    /// Any other master close (CLIENT KILL, crash, failover).
    MasterClosed,
    /// The master answered the handshake with an error.
    HandshakeRejected,
    /// The master could not be reached.
    ConnectFailed,
    /// One of replscope's faults closed it.
    FaultInjected,
    /// replscope stopped.
    ProxyShutdown,
    /// A TCP reset nothing above explains.
    NetworkReset,
}

impl Cause {
    /// Every cause.
    pub const ALL: [Cause; 14] = [
        Cause::OutputBufferLimit,
        Cause::MasterTimeout,
        Cause::ReplicaTimeout,
        Cause::ReplicaLoadFailed,
        Cause::ChecksumMismatch,
        Cause::ProtocolError,
        Cause::ReplicaLeft,
        Cause::MasterShutdown,
        Cause::MasterClosed,
        Cause::HandshakeRejected,
        Cause::ConnectFailed,
        Cause::FaultInjected,
        Cause::ProxyShutdown,
        Cause::NetworkReset,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::OutputBufferLimit => "output_buffer_limit",
            Cause::MasterTimeout => "master_timeout",
            Cause::ReplicaTimeout => "replica_timeout",
            Cause::ReplicaLoadFailed => "replica_load_failed",
            Cause::ChecksumMismatch => "checksum_mismatch",
            Cause::ProtocolError => "protocol_error",
            Cause::ReplicaLeft => "replica_left",
            Cause::MasterShutdown => "master_shutdown",
            Cause::MasterClosed => "master_closed",
            Cause::HandshakeRejected => "handshake_rejected",
            Cause::ConnectFailed => "connect_failed",
            Cause::FaultInjected => "fault_injected",
            Cause::ProxyShutdown => "proxy_shutdown",
            Cause::NetworkReset => "network_reset",
        }
    }
}

/// The facts behind a cause.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Evidence {
    /// The phase it ended in.
    pub phase: Phase,
    /// Who closed.
    pub closed_by: ClosedBy,
    /// How.
    pub how: CloseHow,
    /// Seconds in that phase.
    pub seconds_in_phase: f64,
    /// RDB bytes forwarded, its size and the share, when a transfer had begun.
    pub rdb_bytes: Option<u64>,
    /// The RDB's size, when known.
    pub rdb_size: Option<u64>,
    /// Percent of the RDB forwarded.
    pub rdb_percent: Option<f64>,
    /// The RDB transfer rate, bytes per second.
    pub rdb_rate: Option<f64>,
    /// Seconds forwarding waited on each side.
    pub blocked_master_seconds: f64,
    /// Seconds forwarding waited on the replica.
    pub blocked_replica_seconds: f64,
    /// Which side was the slow end (the one forwarding waited on more), if either waited.
    pub slow_end: Option<Side>,
    /// Seconds since the master last sent a byte.
    pub master_silent_seconds: f64,
    /// Seconds since the replica last sent a byte (ACK or `\n`).
    pub replica_silent_seconds: f64,
    /// The last ACK and the lag behind the master's offset.
    pub last_ack: Option<i64>,
    /// Bytes.
    pub lag_bytes: Option<i64>,
    /// The master's write rate, bytes per second, when known.
    pub write_rate: Option<f64>,
    /// During a full sync: write rate × time since FULLRESYNC, the bytes piled up for the replica.
    pub accumulated_bytes: Option<f64>,
    /// During a full sync: seconds from FULLRESYNC to the close (what the writes piled up over).
    pub seconds_since_fullresync: Option<f64>,
    /// The faults that acted on the link.
    pub faults: Vec<u64>,
    /// The handshake error that ended it.
    pub error_code: Option<ErrorCode>,
    /// What the later facts said (came back after N s, asked for a full sync, …).
    pub later: Vec<String>,
    /// The server settings the cause was judged against, each `assumed` (stated by the operator) or
    /// `default`; every other number here was observed on the wire (the accumulated bytes are an
    /// estimate from observed rates).
    pub settings: Vec<SettingUsed>,
}

/// A link's diagnosis: the first answer, and the final one once later facts settled it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Diagnosis {
    /// The answer at close.
    pub first: Cause,
    /// The answer now (final once `settled`).
    pub cause: Cause,
    /// Whether later facts can still change it.
    pub settled: bool,
    /// The evidence.
    pub evidence: Evidence,
    /// The later facts already taken into account: (the link they came from, which kind of fact: 0 came
    /// back, 1 came back asking for a full sync, 2 the master refused it).
    #[serde(skip)]
    pub facts_seen: Vec<(u64, u8)>,
}

/// What the rest of the route knows when a link closes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// The master's write rate, bytes per second.
    pub write_rate: Option<f64>,
    /// What the operator stated about the master's settings.
    pub settings: ServerSettings,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

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

/// The first answer for a link that just closed; `None` for links that are no replication link (plain
/// clients, health probes), or an RDB channel that delivered its RDB (its close is the normal end).
pub fn classify(link: &Link, ctx: Context) -> Option<Diagnosis> {
    let close = link.close?;
    if is_probe(link) {
        return None;
    }
    match link.kind {
        LinkKind::Client => return None,
        LinkKind::RdbChannel if link.rdb.as_ref().is_some_and(|r| r.completed_at.is_some()) => return None,
        _ => {}
    }
    let now = close.at;
    let m2r = &link.traffic[Direction::MasterToReplica.index()];
    let r2m = &link.traffic[Direction::ReplicaToMaster.index()];
    let master_silent = now.since(m2r.last_at.unwrap_or(link.opened_at));
    let replica_last = r2m.last_at.max(r2m.last_newline_at).unwrap_or(link.opened_at);
    let replica_silent = now.since(replica_last);
    let (bm, br) = (link.blocked[Side::Master.index()], link.blocked[Side::Replica.index()]);
    let in_full_sync = matches!(close.phase, Phase::WaitingBgsave | Phase::RdbTransfer | Phase::Loading);
    let since_fullresync = link.phase_at(Phase::WaitingBgsave).filter(|_| in_full_sync).map(|t| secs(now.since(t)));
    let accumulated = since_fullresync.zip(ctx.write_rate).map(|(s, rate)| rate * s);
    let rdb = link.rdb.as_ref();
    let mut evidence = Evidence {
        phase: close.phase,
        closed_by: close.by,
        how: close.how,
        seconds_in_phase: secs(close.time_in_phase),
        rdb_bytes: rdb.map(|r| r.transferred),
        rdb_size: rdb.and_then(|r| r.size()),
        rdb_percent: rdb.and_then(|r| r.size().filter(|s| *s > 0).map(|s| r.transferred as f64 * 100.0 / s as f64)),
        rdb_rate: link.rdb_rate(now),
        blocked_master_seconds: secs(bm),
        blocked_replica_seconds: secs(br),
        slow_end: match (bm.is_zero(), br.is_zero()) {
            (true, true) => None,
            _ if br >= bm => Some(Side::Replica),
            _ => Some(Side::Master),
        },
        master_silent_seconds: secs(master_silent),
        replica_silent_seconds: secs(replica_silent),
        last_ack: link.stream.last_ack.map(|a| a.offset),
        lag_bytes: link.stream.lag(),
        write_rate: ctx.write_rate,
        accumulated_bytes: accumulated,
        seconds_since_fullresync: since_fullresync,
        faults: {
            let mut f: Vec<u64> = link.faults.iter().map(|t| t.fault).collect();
            f.dedup();
            f
        },
        error_code: None,
        later: Vec::new(),
        settings: Vec::new(),
    };
    let cause = first_cause(link, close.by, close.how, master_silent, replica_silent, ctx, &mut evidence);
    match cause {
        // The default repl-timeout is not evidence: a timeout that fired proves the setting was shorter
        // than the silence, whatever the default says.
        Cause::MasterTimeout | Cause::ReplicaTimeout if ctx.settings.repl_timeout.is_some() => {
            evidence.settings.push(ctx.settings.repl_timeout().1)
        }
        Cause::OutputBufferLimit => evidence.settings.push(ctx.settings.output_buffer_limit().1),
        _ => {}
    }
    let settled = is_final(cause, &evidence);
    Some(Diagnosis { first: cause, cause, settled, evidence, facts_seen: Vec::new() })
}

/// Causes no later fact can change. A replica timeout is only believed once the replica comes back (a
/// replica that times out reconnects; one sent away with `REPLICAOF NO ONE` during a quiet spell does not).
/// A full buffer whose write rate was not known yet waits for it (the next FULLRESYNC gives it) to say
/// how much had piled up.
fn is_final(cause: Cause, evidence: &Evidence) -> bool {
    match cause {
        Cause::ReplicaLeft | Cause::ReplicaLoadFailed | Cause::MasterClosed | Cause::ReplicaTimeout => false,
        Cause::OutputBufferLimit => evidence.write_rate.is_some() || evidence.seconds_since_fullresync.is_none(),
        _ => true,
    }
}

/// The master's write rate became known after the close (from the next FULLRESYNC, or a streaming link):
/// a full sync's diagnosis learns what had piled up. A master that writes nothing filled no buffer.
pub fn learn_write_rate(d: &mut Diagnosis, rate: f64) {
    if d.settled || d.evidence.write_rate.is_some() {
        return;
    }
    let Some(seconds) = d.evidence.seconds_since_fullresync else { return };
    d.evidence.write_rate = Some(rate);
    d.evidence.accumulated_bytes = Some(rate * seconds);
    d.evidence.later.push(format!("the master's write rate became known later: {:.0} B/s", rate));
    if d.cause == Cause::OutputBufferLimit {
        if rate <= 0.0 {
            d.cause = Cause::MasterClosed;
        }
        d.settled = d.cause != Cause::MasterClosed;
    }
}

#[allow(clippy::too_many_arguments)]
fn first_cause(
    link: &Link,
    by: ClosedBy,
    how: CloseHow,
    master_silent: Duration,
    replica_silent: Duration,
    ctx: Context,
    evidence: &mut Evidence,
) -> Cause {
    let Some(close) = link.close else { return Cause::NetworkReset };
    if by == ClosedBy::Proxy {
        if link.connect_error.is_some() {
            return Cause::ConnectFailed;
        }
        if link.faults.iter().any(|f| f.kind == "cut" || f.kind == "limit") {
            return Cause::FaultInjected;
        }
        return Cause::ProxyShutdown;
    }
    if matches!(link.rdb.as_ref().and_then(|r| r.trailer), Some(TrailerCheck::Mismatch { .. })) {
        return Cause::ChecksumMismatch;
    }
    // The handshake: an error that ended it (PING's -NOAUTH is answered with AUTH, so it ends nothing).
    if close.phase == Phase::Handshake
        && let Some(err) = link.handshake.errors.iter().rev().find(|e| {
            matches!(e.to, Some(HandshakeStep::Auth | HandshakeStep::Psync | HandshakeStep::Sync))
                || (e.to == Some(HandshakeStep::Ping) && e.code != ErrorCode::Noauth)
        })
    {
        evidence.error_code = Some(err.code.clone());
        return Cause::HandshakeRejected;
    }
    if by == ClosedBy::Replica && link.desyncs.iter().any(|d| close.at.since(d.at) <= DESYNC_BEFORE_CLOSE) {
        return Cause::ProtocolError;
    }
    let silence = ctx.settings.silence_for_timeout();
    match by {
        ClosedBy::Master => {
            if link.stream.getack_last_at.is_some_and(|t| close.at.since(t) <= GETACK_BEFORE_SHUTDOWN) {
                return Cause::MasterShutdown;
            }
            if close.phase == Phase::Streaming && replica_silent >= silence {
                return Cause::MasterTimeout;
            }
            let diskless = link.rdb.as_ref().is_some_and(|r| r.framing == PayloadFraming::EofMark);
            let stalled_toward_replica = link.last_blocked[Side::Replica.index()]
                .is_some_and(|(end, d)| d >= silence && close.at.since(end) <= BACKED_UP_WITHIN);
            if close.phase == Phase::RdbTransfer && diskless && stalled_toward_replica {
                return Cause::MasterTimeout;
            }
            let backed_up = link.last_blocked[Side::Replica.index()]
                .is_some_and(|(end, _)| close.at.since(end) <= BACKED_UP_WITHIN);
            let writing = ctx.write_rate.is_none_or(|r| r > 0.0);
            let buffer_full = match close.phase {
                // Before the RDB is through, every write since FULLRESYNC waits in the replica's buffer.
                Phase::WaitingBgsave | Phase::RdbTransfer => writing,
                // With the RDB delivered, a disk-based master is already sending the replica its writes
                // (PROTOCOL.md §7.1): only a sign of them piling up makes it the buffer — forwarding toward
                // the replica backed up (it does not read while it loads), or more written since FULLRESYNC
                // than the limit in force allows. Without one it is any other close (a CLIENT KILL just
                // after a small sync). A diskless master buffers until the first ACK, as before the RDB.
                Phase::Loading if diskless => writing || backed_up,
                Phase::Loading => backed_up || over_limit(evidence.accumulated_bytes, ctx.settings),
                Phase::Streaming => backed_up,
                _ => false,
            };
            if buffer_full {
                return Cause::OutputBufferLimit;
            }
            if how == CloseHow::Reset {
                return Cause::NetworkReset;
            }
            Cause::MasterClosed
        }
        ClosedBy::Replica => {
            if close.phase == Phase::Loading {
                return Cause::ReplicaLoadFailed;
            }
            if master_silent >= silence {
                return Cause::ReplicaTimeout;
            }
            if how == CloseHow::Reset {
                return Cause::NetworkReset;
            }
            Cause::ReplicaLeft
        }
        ClosedBy::Proxy => Cause::ProxyShutdown,
    }
}

/// Whether `accumulated` bytes reach the soft limit in force (the hard one when there is no soft one).
fn over_limit(accumulated: Option<f64>, settings: ServerSettings) -> bool {
    let (limit, _) = settings.output_buffer_limit();
    let bar = if limit.soft > 0 { limit.soft } else { limit.hard };
    accumulated.is_some_and(|a| bar > 0 && a >= bar as f64)
}

/// What happened after a link closed, as far as its diagnosis cares.
#[derive(Clone, Copy, Debug)]
pub enum Later {
    /// The same replica connected again and asked this (`?` = a full sync from scratch).
    CameBack {
        /// When.
        at: Timestamp,
        /// Whether it asked for a full sync (`PSYNC ? -1` or `SYNC`).
        asked_full: bool,
    },
    /// A connection to the master was refused.
    MasterRefused {
        /// When.
        at: Timestamp,
    },
}

/// Refines a diagnosis with a later fact from link `source` (each fact is taken once).
pub fn refine(d: &mut Diagnosis, closed_at: Timestamp, source: u64, fact: Later) {
    if d.settled {
        return;
    }
    let kind = match fact {
        Later::CameBack { asked_full: false, .. } => 0,
        Later::CameBack { asked_full: true, .. } => 1,
        Later::MasterRefused { .. } => 2,
    };
    let key = (source, kind);
    if d.facts_seen.contains(&key) {
        return;
    }
    d.facts_seen.push(key);
    match fact {
        Later::CameBack { at, asked_full } => {
            let after = at.since(closed_at);
            if after > CAME_BACK_WINDOW {
                return;
            }
            d.evidence.later.push(format!(
                "the replica came back after {:.1} s{}",
                secs(after),
                if asked_full { " asking for a full sync" } else { "" }
            ));
            d.cause = match d.first {
                // Back for another full sync: the load failed. Back otherwise: not yet known.
                Cause::ReplicaLoadFailed if asked_full => Cause::ReplicaLoadFailed,
                // It came back, so it did not leave; a reset is all the link says.
                Cause::ReplicaLeft if d.evidence.how == CloseHow::Reset => Cause::NetworkReset,
                other => other,
            };
            d.settled = match d.cause {
                Cause::ReplicaLoadFailed => asked_full,
                Cause::MasterClosed => false,
                // Back for another full sync, whose FULLRESYNC will give the write rate still missing.
                Cause::OutputBufferLimit => is_final(d.cause, &d.evidence),
                _ => true,
            };
        }
        Later::MasterRefused { at } => {
            if d.first == Cause::MasterClosed && at.since(closed_at) <= CAME_BACK_WINDOW {
                d.evidence
                    .later
                    .push(format!("the master refused a connection {:.1} s later", secs(at.since(closed_at))));
                d.cause = Cause::MasterShutdown;
                d.settled = true;
            }
        }
    }
}

/// Settles a diagnosis whose window for later facts has passed.
pub fn settle(d: &mut Diagnosis, closed_at: Timestamp, now: Timestamp) {
    if d.settled || now.since(closed_at) < CAME_BACK_WINDOW {
        return;
    }
    let came_back = !d.evidence.later.is_empty();
    if matches!(d.cause, Cause::ReplicaLoadFailed | Cause::ReplicaTimeout) && !came_back {
        // It never came back: it left (or was stopped), whatever the link looked like when it closed.
        d.evidence.later.push(format!("the replica did not come back within {} s", CAME_BACK_WINDOW.as_secs()));
        d.cause = Cause::ReplicaLeft;
    }
    d.settled = true;
}

/// Whether a request asks for a full sync from scratch.
pub fn asks_full(request: &Option<SyncRequest>) -> bool {
    matches!(request, Some(SyncRequest::Psync { replid: PsyncId::Unknown, .. } | SyncRequest::Sync { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{Links, TransportEvent};

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    use crate::wire::encode_command as resp;

    /// A replica on port 6390 that got to streaming at 1 s (ACK at 1.0 s).
    fn streaming(links: &mut Links, at: u64) -> crate::link::LinkId {
        let id = links.open(Some([10, 0, 0, 2].into()), ms(at));
        let r2m = Direction::ReplicaToMaster;
        let m2r = Direction::MasterToReplica;
        links.on_bytes(id, r2m, &resp(&["REPLCONF", "listening-port", "6390"]), ms(at));
        links.on_bytes(id, m2r, b"+OK\r\n", ms(at));
        links.on_bytes(id, r2m, &resp(&["PSYNC", "8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39", "1"]), ms(at));
        links.on_bytes(id, m2r, b"+CONTINUE 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39\r\n", ms(at));
        links.on_bytes(id, r2m, &resp(&["REPLCONF", "ACK", "0"]), ms(at + 1000));
        id
    }

    fn close(links: &mut Links, id: crate::link::LinkId, by: ClosedBy, how: CloseHow, at: u64) {
        links.on_transport(id, TransportEvent::Closed { by, how }, ms(at));
        links.diagnose(ms(at));
    }

    fn cause(links: &Links, id: crate::link::LinkId) -> (Cause, Cause, bool) {
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        (d.first, d.cause, d.settled)
    }

    #[test]
    fn a_silent_replica_closed_by_its_master_is_a_master_timeout() {
        let mut links = Links::new();
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 3500);
        assert_eq!(cause(&links, id), (Cause::MasterTimeout, Cause::MasterTimeout, true));
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert!((d.evidence.replica_silent_seconds - 2.5).abs() < 0.01);
    }

    #[test]
    fn a_health_probe_is_no_link_that_ended_but_a_silent_master_is() {
        let mut links = Links::new();
        // A TCP probe, and `redis-cli ping`: closed by the caller, every command answered.
        let tcp = links.open(Some([10, 0, 0, 9].into()), ms(0));
        close(&mut links, tcp, ClosedBy::Replica, CloseHow::Fin, 1);
        let ping = links.open(Some([10, 0, 0, 9].into()), ms(0));
        links.on_bytes(ping, Direction::ReplicaToMaster, &resp(&["PING"]), ms(0));
        links.on_bytes(ping, Direction::MasterToReplica, b"+PONG\r\n", ms(1));
        close(&mut links, ping, ClosedBy::Replica, CloseHow::Fin, 2);
        for id in [tcp, ping] {
            assert!(links.get(id).is_some_and(|l| l.diagnosis.is_none()), "{id:?} is a probe");
            assert!(links.is_settled(id), "and needs no diagnosis");
        }
        // A replica whose PING its stopped master never answered is still a replica that gave up.
        let waiting = links.open(Some([10, 0, 0, 2].into()), ms(0));
        links.on_bytes(waiting, Direction::ReplicaToMaster, &resp(&["PING"]), ms(0));
        close(&mut links, waiting, ClosedBy::Replica, CloseHow::Fin, 3000);
        assert_eq!(cause(&links, waiting).0, Cause::ReplicaTimeout);
    }

    #[test]
    fn a_stated_repl_timeout_rules_out_a_short_silence_and_is_cited_as_assumed() {
        let settings =
            crate::link::settings::ServerSettings { repl_timeout: Some(Duration::from_secs(60)), ..Default::default() };
        // 2.5 s of silence is no 60 s timeout: the master closed it for some other reason.
        let mut links = Links::with_settings(settings);
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 3500);
        assert_eq!(cause(&links, id).0, Cause::MasterClosed);
        // 59.5 s of silence is, within the servers' clock ticks; the evidence names the stated setting.
        let mut links = Links::with_settings(settings);
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 60_500);
        assert_eq!(cause(&links, id), (Cause::MasterTimeout, Cause::MasterTimeout, true));
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert_eq!(d.evidence.settings, vec![settings.repl_timeout().1]);
        assert_eq!(d.evidence.settings[0].source, crate::link::settings::Source::Assumed);
        // Without a stated timeout, the default is no evidence.
        let mut links = Links::new();
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 3500);
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert_eq!((d.cause, d.evidence.settings.len()), (Cause::MasterTimeout, 0));
    }

    #[test]
    fn a_replica_that_closes_and_never_returns_left_even_after_a_quiet_spell() {
        let mut links = Links::new();
        let id = streaming(&mut links, 0);
        // The master said nothing for 4 s (a quiet master pings every 10 s): looks like a timeout …
        close(&mut links, id, ClosedBy::Replica, CloseHow::Fin, 5000);
        assert_eq!(cause(&links, id), (Cause::ReplicaTimeout, Cause::ReplicaTimeout, false));
        // … but it never came back: it left (REPLICAOF NO ONE).
        links.diagnose(ms(15_001));
        assert_eq!(cause(&links, id), (Cause::ReplicaTimeout, Cause::ReplicaLeft, true));
    }

    #[test]
    fn a_timed_out_replica_that_returns_stays_a_replica_timeout() {
        let mut links = Links::new();
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Replica, CloseHow::Fin, 5000);
        // It reconnects at once; the master does not answer its PING, so it cannot announce its port.
        let back = links.open(Some([10, 0, 0, 2].into()), ms(5002));
        links.on_bytes(back, Direction::ReplicaToMaster, &resp(&["PING"]), ms(5002));
        links.diagnose(ms(5003));
        assert_eq!(cause(&links, id), (Cause::ReplicaTimeout, Cause::ReplicaTimeout, true));
    }

    #[test]
    fn a_master_close_then_refused_connections_is_a_shutdown() {
        let mut links = Links::new();
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 1500);
        assert_eq!(cause(&links, id), (Cause::MasterClosed, Cause::MasterClosed, false));
        let next = links.open(Some([10, 0, 0, 2].into()), ms(1600));
        links.with_link(next, |l| {
            l.on_connect_failed(
                std::io::ErrorKind::ConnectionRefused,
                "Connection refused (os error 111)".into(),
                ms(1601),
            )
        });
        links.diagnose(ms(1602));
        assert_eq!(cause(&links, id), (Cause::MasterClosed, Cause::MasterShutdown, true));
        assert_eq!(cause(&links, next), (Cause::ConnectFailed, Cause::ConnectFailed, true));
    }

    /// A replica on port 6390 asked for a full sync and was granted one at 10 ms.
    fn granted(links: &mut Links) -> crate::link::LinkId {
        let id = links.open(Some([10, 0, 0, 2].into()), ms(0));
        links.on_bytes(id, Direction::ReplicaToMaster, &resp(&["REPLCONF", "listening-port", "6390"]), ms(0));
        links.on_bytes(id, Direction::ReplicaToMaster, &resp(&["PSYNC", "?", "-1"]), ms(0));
        links.on_bytes(
            id,
            Direction::MasterToReplica,
            b"+OK\r\n+FULLRESYNC 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 0\r\n",
            ms(10),
        );
        id
    }

    #[test]
    fn a_master_close_during_a_full_sync_is_the_output_buffer_limit() {
        let mut links = Links::new();
        let id = granted(&mut links);
        links.on_bytes(id, Direction::MasterToReplica, b"$1000000\r\nREDIS0011", ms(100));
        links.on_bytes(id, Direction::MasterToReplica, &[0u8; 400_000], ms(900));
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 1000);
        // Named at once; settled once the write rate is known, or when the window has passed.
        assert_eq!(cause(&links, id), (Cause::OutputBufferLimit, Cause::OutputBufferLimit, false));
        links.diagnose(ms(11_001));
        assert_eq!(cause(&links, id), (Cause::OutputBufferLimit, Cause::OutputBufferLimit, true));
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert_eq!((d.evidence.phase, d.evidence.rdb_bytes), (Phase::RdbTransfer, Some(400_009)));
        assert!(d.evidence.rdb_percent.is_some_and(|p| (p - 40.0).abs() < 0.01));
    }

    /// A disk-based full sync whose small RDB was delivered at 100 ms; the replica has not ACKed yet.
    fn loaded(links: &mut Links) -> crate::link::LinkId {
        let id = granted(links);
        let mut rdb = b"$18\r\nREDIS0011\xff".to_vec();
        rdb.extend_from_slice(&[0u8; 8]);
        links.on_bytes(id, Direction::MasterToReplica, &rdb, ms(100));
        assert_eq!(links.get(id).map(Link::phase), Some(Phase::Loading));
        id
    }

    #[test]
    fn a_kill_while_a_delivered_rdb_loads_is_the_buffer_only_with_a_sign_of_it() {
        // CLIENT KILL right after a small disk-based sync, before the first ACK: nothing piled up.
        let mut links = Links::new();
        let id = loaded(&mut links);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 500);
        assert_eq!(cause(&links, id).0, Cause::MasterClosed);
        // The same close after forwarding toward the loading replica backed up: the buffer.
        let mut links = Links::new();
        let id = loaded(&mut links);
        let blocked = TransportEvent::WriteBlocked { side: Side::Replica, duration: Duration::from_secs(3) };
        links.on_transport(id, blocked, ms(3400));
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 3500);
        assert_eq!(cause(&links, id).0, Cause::OutputBufferLimit);
    }

    #[test]
    fn a_refused_auth_is_a_handshake_rejection_with_its_code() {
        let mut links = Links::new();
        let id = links.open(Some([10, 0, 0, 2].into()), ms(0));
        links.on_bytes(id, Direction::ReplicaToMaster, &resp(&["PING"]), ms(0));
        links.on_bytes(id, Direction::MasterToReplica, b"-NOAUTH Authentication required.\r\n", ms(1));
        links.on_bytes(id, Direction::ReplicaToMaster, &resp(&["AUTH", "wrong-password"]), ms(2));
        links.on_bytes(id, Direction::MasterToReplica, b"-WRONGPASS invalid username-password pair\r\n", ms(3));
        close(&mut links, id, ClosedBy::Replica, CloseHow::Reset, 4);
        assert_eq!(cause(&links, id).1, Cause::HandshakeRejected);
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert_eq!(d.evidence.error_code, Some(ErrorCode::Wrongpass));
        assert!(!format!("{d:?}").contains("wrong-password"));
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;
    use crate::link::{Links, TransportEvent};
    use crate::wire::encode_command as resp;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    fn attempt(links: &mut Links, start: u64, offset: i64) -> crate::link::LinkId {
        let id = links.open(Some([10, 0, 0, 2].into()), ms(start));
        links.on_bytes(id, Direction::ReplicaToMaster, &resp(&["REPLCONF", "listening-port", "6390"]), ms(start));
        links.on_bytes(id, Direction::ReplicaToMaster, &resp(&["PSYNC", "?", "-1"]), ms(start));
        let fr =
            format!("+OK\r\n+FULLRESYNC 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 {offset}\r\n$1000000\r\nREDIS0011");
        links.on_bytes(id, Direction::MasterToReplica, fr.as_bytes(), ms(start + 10));
        links.on_bytes(id, Direction::MasterToReplica, &[0u8; 100_000], ms(start + 1000));
        links.on_transport(id, TransportEvent::Closed { by: ClosedBy::Master, how: CloseHow::Fin }, ms(start + 2000));
        links.diagnose(ms(start + 2000));
        id
    }

    #[test]
    fn the_second_fullresync_gives_both_attempts_the_write_rate() {
        let mut links = Links::new();
        let first = attempt(&mut links, 0, 1_000_000);
        let second = attempt(&mut links, 5000, 9_000_000);
        let ev = |id| {
            links
                .get(id)
                .and_then(|l| l.diagnosis.clone())
                .map(|d| (d.evidence.write_rate, d.evidence.accumulated_bytes))
        };
        for id in [first, second] {
            let (rate, piled) = ev(id).expect("diagnosed");
            assert!(rate.is_some_and(|r| (r - 1.6e6).abs() < 1.0), "{rate:?}");
            assert!(piled.is_some_and(|p| (p - 1.6e6 * 1.99).abs() < 1e4), "{piled:?}");
        }
        // The first attempt learnt it from the second's FULLRESYNC, and says so; then it settled.
        let d = links.get(first).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert!(d.settled && d.evidence.later.iter().any(|l| l.contains("write rate became known")), "{d:?}");
    }
}

#[cfg(test)]
mod refusal_after_return_tests {
    use super::*;
    use crate::link::{Links, TransportEvent};

    #[test]
    fn a_reconnect_that_is_then_refused_counts_as_both_facts() {
        let ms = |n: u64| Timestamp::from_micros(n * 1000);
        let mut links = Links::new();
        let id = links.open(Some([10, 0, 0, 2].into()), ms(0));
        links.on_bytes(id, Direction::ReplicaToMaster, &crate::wire::encode_command(&["PING"]), ms(0));
        links.on_transport(id, TransportEvent::Closed { by: ClosedBy::Master, how: CloseHow::Fin }, ms(100));
        links.diagnose(ms(100));
        // The replica reconnects (seen as coming back) and only then does the dial fail.
        let again = links.open(Some([10, 0, 0, 2].into()), ms(101));
        links.diagnose(ms(101));
        links.with_link(again, |l| {
            l.on_connect_failed(std::io::ErrorKind::ConnectionRefused, "Connection refused".into(), ms(102))
        });
        links.diagnose(ms(102));
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert_eq!((d.first, d.cause, d.settled), (Cause::MasterClosed, Cause::MasterShutdown, true));
    }
}
