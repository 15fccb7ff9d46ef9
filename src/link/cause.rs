//! Why a replication link ended: exactly one cause from a fixed set, with the evidence behind it, and how
//! that answer matures.
//!
//! The first answer comes from the close alone ([`crate::link::rules`]: an ordered list of rules over facts
//! computed once). Each rule also says how its answer settles ([`Settlement`]): at once, once the master's
//! write rate is known, once the replica comes back, or once the window for later facts
//! ([`CAME_BACK_WINDOW`]) has passed. Later facts ([`Later`]) refine it ([`refine`], [`learn_write_rate`])
//! and the window closes it ([`settle`]); whether an answer is settled is decided in one place,
//! [`Diagnosis::reached_settlement`].

use std::time::Duration;

use crate::link::settings::SettingUsed;
use crate::link::{CloseHow, ClosedBy, Phase, Side, SyncRequest};
use crate::time::Timestamp;
use crate::wire::{ErrorCode, PsyncId};

/// How long a replica has to come back before its close counts as leaving: replicas reconnect at once
/// (6.2+) or at the next 1 Hz cron tick (≤ 6.0); 10 s leaves room for a slow handshake.
pub const CAME_BACK_WINDOW: Duration = Duration::from_secs(10);

crate::labelled! {
    /// Why a link ended. The order is the order of preference when several failures share the blame
    /// (a replica's record names the most frequent, ties going to the earlier one).
    pub enum Cause {
        /// The master closed during a full sync while writes piled up for the replica, or while streaming
        /// toward it was backed up: `client-output-buffer-limit replica`.
        OutputBufferLimit => "output_buffer_limit",
        /// The master closed after the replica went silent (no ACK, no `\n`), or after a diskless transfer
        /// toward it stalled: the master's `repl-timeout`.
        MasterTimeout => "master_timeout",
        /// The replica closed after the master went silent: the replica's `repl-timeout`.
        ReplicaTimeout => "replica_timeout",
        /// The replica closed while loading and came back for another full sync.
        ReplicaLoadFailed => "replica_load_failed",
        /// The replica closed in the middle of a stream command of a megabyte or more, and came back: its
        /// `client-query-buffer-limit` (Redis 6.2 and older apply it to the master's link too).
        ReplicaQueryBufferLimit => "replica_query_buffer_limit",
        /// The RDB trailer did not match the bytes forwarded.
        ChecksumMismatch => "checksum_mismatch",
        /// The replica closed right after bytes the decoders could not follow.
        ProtocolError => "protocol_error",
        /// The replica closed and did not come back.
        ReplicaLeft => "replica_left",
        /// The master shut down (GETACK then close, or the next connection refused).
        MasterShutdown => "master_shutdown",
        /// Any other master close (CLIENT KILL, crash, failover).
        MasterClosed => "master_closed",
        /// The master answered the handshake with an error.
        HandshakeRejected => "handshake_rejected",
        /// The master could not be reached.
        ConnectFailed => "connect_failed",
        /// One of replscope's faults closed it.
        FaultInjected => "fault_injected",
        /// replscope stopped.
        ProxyShutdown => "proxy_shutdown",
        /// A TCP reset nothing above explains.
        NetworkReset => "network_reset",
        /// A snapshot client (`redis-cli --rdb`, `--replica`) took the whole payload and hung up: the
        /// normal end, no failure.
        Completed => "completed",
    }
}

/// When an answer stops changing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Nothing later can change it.
    AtOnce,
    /// A full buffer during a full sync waits for the master's write rate (the next FULLRESYNC gives it)
    /// to say how much had piled up; outside a full sync it is settled at once.
    WriteRate,
    /// Waits for the replica to come back: a replica that timed out reconnects; one that never does left.
    ReplicaReturn,
    /// Waits for the replica to come back asking for a full sync (a load that failed is retried so).
    ReplicaReturnForFullSync,
    /// Waits out the window: the master refusing the next connection within it makes it a shutdown.
    MasterRefusal,
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
    /// The server settings the cause was judged against, each read from the `master`, `assumed` (stated
    /// by the operator) or the `default`; every other number here was observed on the wire or read from
    /// the master (the accumulated bytes are an estimate from observed rates).
    pub settings: Vec<SettingUsed>,
    /// The replica connection's output buffer on the master just before the close, as introspection
    /// read it, when it did.
    pub output_buffer: Option<crate::link::output_buffer::BufferAtClose>,
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
    /// How the current answer settles.
    #[serde(skip)]
    pub settlement: Settlement,
    /// Whether the replica came back within the window, and if so whether it asked for a full sync.
    #[serde(skip)]
    pub came_back: Option<bool>,
}

impl Diagnosis {
    /// A first answer, settled if its rule says nothing later can change it.
    pub fn new(cause: Cause, settlement: Settlement, evidence: Evidence) -> Self {
        let mut d = Diagnosis { first: cause, cause, settled: false, evidence, settlement, came_back: None };
        d.settled = d.reached_settlement();
        d
    }

    /// Whether the facts this answer waits for are in (the window passing is [`settle`]'s).
    pub fn reached_settlement(&self) -> bool {
        match self.settlement {
            Settlement::AtOnce => true,
            Settlement::WriteRate => {
                self.evidence.write_rate.is_some() || self.evidence.seconds_since_fullresync.is_none()
            }
            Settlement::ReplicaReturn => self.came_back.is_some(),
            Settlement::ReplicaReturnForFullSync => self.came_back == Some(true),
            Settlement::MasterRefusal => false,
        }
    }

    /// Changes the answer to `cause`, which settles as `settlement`.
    fn become_(&mut self, cause: Cause, settlement: Settlement) {
        self.cause = cause;
        self.settlement = settlement;
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
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

impl Later {
    /// When it happened.
    pub fn at(&self) -> Timestamp {
        match self {
            Later::CameBack { at, .. } | Later::MasterRefused { at } => *at,
        }
    }
}

/// Refines a diagnosis with a later fact. Taking the same fact again changes nothing, so the caller may
/// offer every fact it knows on every pass: the replica's first return is told (and its first return
/// asking for a full sync, if that came later), not every connection from it since (a replica in a
/// loop, or hundreds from one host, would otherwise grow the evidence without bound).
pub fn refine(d: &mut Diagnosis, closed_at: Timestamp, fact: Later) {
    if d.settled {
        return;
    }
    match fact {
        Later::CameBack { at, asked_full } => {
            let after = at.since(closed_at);
            let news = match d.came_back {
                None => true,
                Some(full) => asked_full && !full,
            };
            if after > CAME_BACK_WINDOW || !news {
                return;
            }
            d.evidence.later.push(format!(
                "the replica came back after {:.1} s{}",
                secs(after),
                if asked_full { " asking for a full sync" } else { "" }
            ));
            d.came_back = Some(asked_full || d.came_back == Some(true));
            // It came back, so it did not leave; a reset is all the link says.
            if d.first == Cause::ReplicaLeft && d.evidence.how == CloseHow::Reset {
                d.become_(Cause::NetworkReset, Settlement::AtOnce);
            }
        }
        Later::MasterRefused { at } => {
            if d.first == Cause::MasterClosed && at.since(closed_at) <= CAME_BACK_WINDOW {
                d.evidence
                    .later
                    .push(format!("the master refused a connection {:.1} s later", secs(at.since(closed_at))));
                d.become_(Cause::MasterShutdown, Settlement::AtOnce);
            }
        }
    }
    d.settled = d.reached_settlement();
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
    if d.cause == Cause::OutputBufferLimit && rate <= 0.0 {
        d.become_(Cause::MasterClosed, Settlement::MasterRefusal);
    }
    d.settled = d.reached_settlement();
}

/// Settles a diagnosis whose window for later facts has passed.
pub fn settle(d: &mut Diagnosis, closed_at: Timestamp, now: Timestamp) {
    if d.settled || now.since(closed_at) < CAME_BACK_WINDOW {
        return;
    }
    if matches!(d.cause, Cause::ReplicaLoadFailed | Cause::ReplicaTimeout | Cause::ReplicaQueryBufferLimit)
        && d.came_back.is_none()
    {
        // It never came back: it left (or was stopped), whatever the link looked like when it closed.
        d.evidence.later.push(format!("the replica did not come back within {} s", CAME_BACK_WINDOW.as_secs()));
        d.become_(Cause::ReplicaLeft, Settlement::AtOnce);
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
    use crate::link::{Fed, Link, Links, TransportEvent};
    use crate::wire::Direction;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    use crate::wire::encode_command as resp;

    /// A replica on port 6390 that got to streaming at 1 s (ACK at 1.0 s).
    fn streaming(links: &mut Fed, at: u64) -> crate::link::LinkId {
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

    fn close(links: &mut Fed, id: crate::link::LinkId, by: ClosedBy, how: CloseHow, at: u64) {
        links.on_transport(id, TransportEvent::Closed { by, how }, ms(at));
        links.diagnose(ms(at));
    }

    fn cause(links: &Fed, id: crate::link::LinkId) -> (Cause, Cause, bool) {
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        (d.first, d.cause, d.settled)
    }

    /// A client on 10.0.0.2 that asks for a snapshot (`rdb-only`, or no listening port) and takes a
    /// small RDB.
    fn snapshot(links: &mut Fed, rdb_only: bool, at: u64) -> crate::link::LinkId {
        let id = links.open(Some([10, 0, 0, 2].into()), ms(at));
        let (r2m, m2r) = (Direction::ReplicaToMaster, Direction::MasterToReplica);
        if rdb_only {
            links.on_bytes(id, r2m, &resp(&["REPLCONF", "rdb-only", "1"]), ms(at));
            links.on_bytes(id, m2r, b"+OK\r\n", ms(at));
        }
        links.on_bytes(id, r2m, b"SYNC\r\n", ms(at));
        links.on_bytes(id, m2r, b"$18\r\nREDIS0011\xff\0\0\0\0\0\0\0\0", ms(at + 10));
        id
    }

    #[test]
    fn a_close_is_diagnosed_alone_and_the_comeback_counts_at_the_next_pass_even_once_its_link_is_gone() {
        let mut links = Fed::new();
        let replica = streaming(&mut links, 0);
        links.on_transport(replica, TransportEvent::Closed { by: ClosedBy::Replica, how: CloseHow::Fin }, ms(1050));
        assert!(links.diagnose_closed(replica, ms(1050)), "diagnosed at its close");
        assert_eq!(cause(&links, replica), (Cause::ReplicaLeft, Cause::ReplicaLeft, false));
        // It comes back and that connection is over and put away before any pass ran.
        let again = streaming(&mut links, 1350);
        links.on_transport(again, TransportEvent::Closed { by: ClosedBy::Replica, how: CloseHow::Fin }, ms(2400));
        links.diagnose_closed(again, ms(2400));
        assert!(links.remove(again).is_some());
        let told =
            |links: &Fed| links.get(replica).and_then(|l| l.diagnosis.clone()).expect("diagnosed").evidence.later;
        assert!(told(&links).is_empty(), "facts wait for the pass");
        links.diagnose(ms(3000));
        assert_eq!(told(&links), ["the replica came back after 0.3 s"]);
    }

    #[test]
    fn a_snapshot_that_took_its_payload_completed_and_is_nobody_coming_back() {
        let mut links = Fed::new();
        let replica = streaming(&mut links, 0);
        close(&mut links, replica, ClosedBy::Replica, CloseHow::Fin, 2000);
        // Two backups from the replica's own host right after it left.
        for (n, rdb_only) in [(0, true), (1, false)] {
            let id = snapshot(&mut links, rdb_only, 2100 + n * 100);
            assert_eq!(links.get(id).map(|l| l.kind), Some(crate::link::LinkKind::Snapshot));
            close(&mut links, id, ClosedBy::Replica, CloseHow::Fin, 2150 + n * 100);
            assert_eq!(cause(&links, id), (Cause::Completed, Cause::Completed, true));
        }
        links.diagnose(ms(13_000));
        assert_eq!(cause(&links, replica).1, Cause::ReplicaLeft, "the backups were not the replica coming back");
        // Cut short, a snapshot is diagnosed like any link.
        let cut = links.open(Some([10, 0, 0, 3].into()), ms(20_000));
        links.on_bytes(cut, Direction::ReplicaToMaster, b"SYNC\r\n", ms(20_000));
        links.on_bytes(cut, Direction::MasterToReplica, b"$1000\r\nREDIS0011", ms(20_010));
        close(&mut links, cut, ClosedBy::Master, CloseHow::Fin, 20_020);
        assert_ne!(cause(&links, cut).0, Cause::Completed);
    }

    #[test]
    fn a_full_sync_dropped_soon_after_streaming_failed_and_a_long_one_did_not() {
        let mut links = Fed::new();
        let full = |links: &mut Fed, at: u64| {
            let id = links.open(Some([10, 0, 0, 2].into()), ms(at));
            let (r2m, m2r) = (Direction::ReplicaToMaster, Direction::MasterToReplica);
            links.on_bytes(id, r2m, &resp(&["REPLCONF", "listening-port", "6390"]), ms(at));
            links.on_bytes(id, r2m, &resp(&["PSYNC", "?", "-1"]), ms(at));
            let answer = "+FULLRESYNC 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 0\r\n$18\r\nREDIS0011";
            links.on_bytes(id, m2r, answer.as_bytes(), ms(at + 10));
            links.on_bytes(id, m2r, b"\xff\0\0\0\0\0\0\0\0", ms(at + 10));
            links.on_bytes(id, r2m, &resp(&["REPLCONF", "ACK", "0"]), ms(at + 1000));
            id
        };
        let soon = full(&mut links, 0);
        links.on_transport(soon, TransportEvent::Closed { by: ClosedBy::Master, how: CloseHow::Fin }, ms(5000));
        let late = full(&mut links, 100_000);
        links.on_transport(late, TransportEvent::Closed { by: ClosedBy::Master, how: CloseHow::Fin }, ms(200_000));
        assert!(links.get(soon).and_then(Link::failed_full_sync).is_some(), "dropped 4 s into streaming");
        assert!(links.get(late).and_then(Link::failed_full_sync).is_none(), "streamed 99 s: it made it");
    }

    #[test]
    fn a_silent_replica_closed_by_its_master_is_a_master_timeout() {
        let mut links = Fed::new();
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 3500);
        assert_eq!(cause(&links, id), (Cause::MasterTimeout, Cause::MasterTimeout, true));
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert!((d.evidence.replica_silent_seconds - 2.5).abs() < 0.01);
    }

    #[test]
    fn a_health_probe_is_no_link_that_ended_but_a_silent_master_is() {
        let mut links = Fed::new();
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
        let mut links = Fed::with_links(Links::with_settings(settings));
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 3500);
        assert_eq!(cause(&links, id).0, Cause::MasterClosed);
        // 59.5 s of silence is, within the servers' clock ticks; the evidence names the stated setting.
        let mut links = Fed::with_links(Links::with_settings(settings));
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 60_500);
        assert_eq!(cause(&links, id), (Cause::MasterTimeout, Cause::MasterTimeout, true));
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert_eq!(d.evidence.settings, vec![settings.repl_timeout().1]);
        assert_eq!(d.evidence.settings[0].source, crate::link::settings::Source::Assumed);
        // Without a stated timeout, the default is no evidence.
        let mut links = Fed::new();
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 3500);
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert_eq!((d.cause, d.evidence.settings.len()), (Cause::MasterTimeout, 0));
    }

    #[test]
    fn a_replica_that_closes_and_never_returns_left_even_after_a_quiet_spell() {
        let mut links = Fed::new();
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
        let mut links = Fed::new();
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Replica, CloseHow::Fin, 5000);
        // It reconnects at once; the master does not answer its PING, so it cannot announce its port.
        let back = links.open(Some([10, 0, 0, 2].into()), ms(5002));
        links.on_bytes(back, Direction::ReplicaToMaster, &resp(&["PING"]), ms(5002));
        links.diagnose(ms(5003));
        assert_eq!(cause(&links, id), (Cause::ReplicaTimeout, Cause::ReplicaTimeout, true));
    }

    #[test]
    fn a_replica_that_comes_back_again_and_again_is_told_once_in_the_evidence() {
        let mut links = Fed::new();
        let id = streaming(&mut links, 0);
        // A master close waits for a refused connection, so every return is offered to it, pass after pass.
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 1500);
        for i in 0..50u64 {
            let at = 1600 + i * 10;
            let back = links.open(Some([10, 0, 0, 2].into()), ms(at));
            links.on_bytes(back, Direction::ReplicaToMaster, &resp(&["REPLCONF", "listening-port", "6390"]), ms(at));
            links.diagnose(ms(at + 1));
            if i == 20 {
                links.on_bytes(back, Direction::ReplicaToMaster, &resp(&["PSYNC", "?", "-1"]), ms(at + 2));
                links.diagnose(ms(at + 3));
            }
        }
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert_eq!(
            d.evidence.later,
            vec!["the replica came back after 0.1 s", "the replica came back after 0.3 s asking for a full sync"],
        );
        assert_eq!(d.came_back, Some(true));
    }

    #[test]
    fn a_master_close_then_refused_connections_is_a_shutdown() {
        let mut links = Fed::new();
        let id = streaming(&mut links, 0);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 1500);
        assert_eq!(cause(&links, id), (Cause::MasterClosed, Cause::MasterClosed, false));
        let next = links.open(Some([10, 0, 0, 2].into()), ms(1600));
        links.on_connect_failed(
            next,
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)".into(),
            ms(1601),
        );
        links.diagnose(ms(1602));
        assert_eq!(cause(&links, id), (Cause::MasterClosed, Cause::MasterShutdown, true));
        assert_eq!(cause(&links, next), (Cause::ConnectFailed, Cause::ConnectFailed, true));
    }

    /// A replica on port 6390 asked for a full sync and was granted one at 10 ms.
    fn granted(links: &mut Fed) -> crate::link::LinkId {
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
        let mut links = Fed::new();
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
    fn loaded(links: &mut Fed) -> crate::link::LinkId {
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
        let mut links = Fed::new();
        let id = loaded(&mut links);
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 500);
        assert_eq!(cause(&links, id).0, Cause::MasterClosed);
        // The same close after forwarding toward the loading replica backed up: the buffer.
        let mut links = Fed::new();
        let id = loaded(&mut links);
        let blocked = TransportEvent::WriteBlocked { side: Side::Replica, duration: Duration::from_secs(3) };
        links.on_transport(id, blocked, ms(3400));
        close(&mut links, id, ClosedBy::Master, CloseHow::Fin, 3500);
        assert_eq!(cause(&links, id).0, Cause::OutputBufferLimit);
    }

    #[test]
    fn a_refused_auth_is_a_handshake_rejection_with_its_code() {
        let mut links = Fed::new();
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
    use crate::link::{Fed, TransportEvent};
    use crate::wire::Direction;
    use crate::wire::encode_command as resp;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    fn attempt(links: &mut Fed, start: u64, offset: i64) -> crate::link::LinkId {
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
        let mut links = Fed::new();
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
    use crate::link::{Fed, TransportEvent};
    use crate::wire::Direction;

    #[test]
    fn a_reconnect_that_is_then_refused_counts_as_both_facts() {
        let ms = |n: u64| Timestamp::from_micros(n * 1000);
        let mut links = Fed::new();
        let id = links.open(Some([10, 0, 0, 2].into()), ms(0));
        links.on_bytes(id, Direction::ReplicaToMaster, &crate::wire::encode_command(&["PING"]), ms(0));
        links.on_transport(id, TransportEvent::Closed { by: ClosedBy::Master, how: CloseHow::Fin }, ms(100));
        links.diagnose(ms(100));
        // The replica reconnects (seen as coming back) and only then does the dial fail.
        let again = links.open(Some([10, 0, 0, 2].into()), ms(101));
        links.diagnose(ms(101));
        links.on_connect_failed(again, std::io::ErrorKind::ConnectionRefused, "Connection refused".into(), ms(102));
        links.diagnose(ms(102));
        let d = links.get(id).and_then(|l| l.diagnosis.clone()).expect("diagnosed");
        assert_eq!((d.first, d.cause, d.settled), (Cause::MasterClosed, Cause::MasterShutdown, true));
    }
}
