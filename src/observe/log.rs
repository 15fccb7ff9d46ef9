//! Log lines, read from the link model as its changes arrive: one INFO line per phase a link enters,
//! carrying that phase's facts; a WARN line when a replication link ends (who, how, in which phase, and
//! why, as the caller explains it) or a decoder gives up.

use crate::link::history::{LoopChange, LoopKind, ReplicaHistory};
use crate::link::{Cause, ClosedBy, DesyncFacts, Link, LinkId, LinkKind, Phase, SyncAnswer, SyncRequest};
use crate::observe::words::{human_bytes, short, trailer_words};
use crate::wire::{PayloadFraming, PsyncId};

/// What entering `phase` means for this link, in a few words.
pub fn phase_facts(link: &Link, phase: Phase) -> String {
    match phase {
        Phase::Handshake => match link.peer_ip {
            Some(ip) => format!("connection from {ip}"),
            None => "connection".into(),
        },
        Phase::WaitingBgsave => {
            let asked = match &link.request {
                Some(SyncRequest::Psync { replid: PsyncId::Unknown, .. }) => "PSYNC ? -1".to_string(),
                Some(SyncRequest::Psync { replid: PsyncId::Id(id), offset, .. }) => {
                    format!("PSYNC {}…:{offset}", short(id.as_str()))
                }
                Some(SyncRequest::Sync { .. }) => "SYNC".into(),
                None => "-".into(),
            };
            match &link.answer {
                Some(SyncAnswer::FullResync { replid, offset, .. }) => {
                    format!("full resync {}…:{offset} (asked {asked})", short(replid.as_str()))
                }
                Some(SyncAnswer::DualChannelSync { .. }) => format!("full resync over a dual channel (asked {asked})"),
                Some(SyncAnswer::RdbChannelSync { client_id, .. }) => {
                    format!("full resync over an rdb channel, main client {client_id} (asked {asked})")
                }
                Some(SyncAnswer::EndOffset { offset, replid, client_id, .. }) => {
                    format!("rdb channel {client_id}: RDB at {}…:{offset}", short(replid.as_str()))
                }
                _ => format!("full sync (asked {asked})"),
            }
        }
        Phase::RdbTransfer => match &link.rdb {
            Some(rdb) => match rdb.framing {
                PayloadFraming::Sized { len } => format!("RDB {}, disk-framed", human_bytes(len as f64)),
                PayloadFraming::EofMark => "RDB of unknown size, diskless (EOF-marked)".into(),
            },
            None => "RDB".into(),
        },
        Phase::Loading => match &link.rdb {
            Some(rdb) => {
                let secs = rdb.completed_at.map_or(0.0, |d| d.since(rdb.started_at).as_secs_f64());
                let rate = link.rdb_rate(rdb.completed_at.unwrap_or(rdb.started_at));
                let rate = rate.map_or(String::new(), |r| format!(", {}/s", human_bytes(r)));
                let check = trailer_words(rdb.trailer);
                let version = rdb.server_version().map(|v| format!(", written by {v}")).unwrap_or_default();
                let took = if secs < 10.0 { format!("{secs:.3} s") } else { format!("{secs:.1} s") };
                format!("RDB done: {} in {took}{rate}, {check}{version}", human_bytes(rdb.transferred as f64))
            }
            None => "payload complete".into(),
        },
        Phase::Streaming => match (&link.answer, link.master_offset()) {
            (Some(SyncAnswer::Continue { .. }), Some(off)) => format!("partial resync accepted, streaming from {off}"),
            (_, Some(off)) => format!("replica loaded, streaming at offset {off}"),
            _ => "streaming".into(),
        },
        Phase::Closed => close_facts(link),
    }
}

/// Who closed a link, how, in which phase and how far its RDB had got.
pub fn close_facts(link: &Link) -> String {
    let Some(c) = &link.close else { return "closed".into() };
    let mut s = format!(
        "closed by the {} ({}) in {} after {:.1} s",
        crate::observe::words::closer(c.by),
        crate::observe::words::how(c.how),
        c.phase.as_str(),
        c.time_in_phase.as_secs_f64()
    );
    if let Some(rdb) = &link.rdb
        && rdb.completed_at.is_none()
    {
        match rdb.size() {
            Some(size) if size > 0 => s.push_str(&format!(
                ", RDB {} of {} ({:.0}%)",
                human_bytes(rdb.transferred as f64),
                human_bytes(size as f64),
                rdb.transferred as f64 * 100.0 / size as f64
            )),
            _ => s.push_str(&format!(", RDB {} so far", human_bytes(rdb.transferred as f64))),
        }
    }
    if c.by == ClosedBy::Proxy
        && let Some(f) = link.faults.iter().rev().find(|f| f.kind.closes_link())
    {
        s.push_str(&format!(", by fault {} ({})", f.fault, f.kind));
    }
    if let Some(err) = &link.connect_error {
        s.push_str(&format!(", master unreachable: {err}"));
    }
    s
}

/// Logs a phase a link entered.
pub fn phase_entered(route: &str, id: LinkId, link: &Link, phase: Phase) {
    if link.kind == LinkKind::Client {
        return;
    }
    let replica = link.replica_endpoint().unwrap_or_else(|| "-".into());
    let facts = phase_facts(link, phase);
    if phase == Phase::Closed {
        return; // `closed` says it, with the evidence, at WARN.
    }
    tracing::info!(route, link = id.0, replica, kind = link.kind.as_str(), phase = phase.as_str(), "{facts}");
}

/// Logs the end of a link that needs no diagnosis (a plain client, a health probe).
pub fn closed(route: &str, id: LinkId, link: &Link) {
    tracing::debug!(route, link = id.0, kind = link.kind.as_str(), "{}", close_facts(link));
}

/// Logs that a replication link ended and its cause is not settled yet: the facts only, at INFO (what
/// later facts may still change is not stated before they happen).
pub fn cause_pending(route: &str, id: LinkId, link: &Link) {
    let replica = link.replica_endpoint().unwrap_or_else(|| "-".into());
    let Some(c) = &link.close else { return };
    tracing::info!(
        route,
        link = id.0,
        replica,
        kind = link.kind.as_str(),
        phase = c.phase.as_str(),
        "ended: {}; cause pending",
        close_facts(link)
    );
}

/// Logs the settled cause of a link that ended, with its explanation: once per link, at WARN (at INFO
/// for a snapshot client's normal end).
pub fn ended(route: &str, id: LinkId, link: &Link, explanation: &str) {
    let replica = link.replica_endpoint().unwrap_or_else(|| "-".into());
    let (Some(c), Some(d)) = (&link.close, &link.diagnosis) else { return };
    let facts = close_facts(link);
    let cause = d.cause.as_str();
    let later = if d.evidence.later.is_empty() { String::new() } else { format!(" ({})", d.evidence.later.join("; ")) };
    let (kind, phase) = (link.kind.as_str(), c.phase.as_str());
    if d.cause == Cause::Completed {
        tracing::info!(route, link = id.0, replica, kind, phase, cause, "{facts}: {cause} — {explanation}");
    } else {
        tracing::warn!(route, link = id.0, replica, kind, phase, cause, "{facts}: {cause}{later} — {explanation}");
    }
}

/// Logs why a partial resync was refused, as the caller explains it.
pub fn refusal(route: &str, id: LinkId, link: &Link, r: &crate::link::PsyncRefusal, why: &str) {
    let replica = link.replica_endpoint().unwrap_or_else(|| "-".into());
    tracing::info!(route, link = id.0, replica, reason = r.reason.as_str(), "partial resync refused: {why}");
}

/// Logs a two-channel sync's replica that stopped reading its main channel, as the caller explains it.
pub fn replica_buffer_full(route: &str, id: LinkId, link: &Link, why: &str) {
    let replica = link.replica_endpoint().unwrap_or_else(|| "-".into());
    tracing::warn!(route, link = id.0, replica, kind = link.kind.as_str(), "replica buffer full: {why}");
}

/// Logs an injected fault acting on a link.
pub fn fault_acted(route: &str, id: LinkId, link: &Link, fault: u64, kind: crate::link::FaultType, action: &str) {
    let replica = link.replica_endpoint().unwrap_or_else(|| "-".into());
    tracing::warn!(route, link = id.0, replica, fault, kind = kind.as_str(), "fault {fault}: {action}");
}

/// Logs a decoder giving up.
pub fn desync(route: &str, id: LinkId, link: &Link, d: &DesyncFacts) {
    let replica = link.replica_endpoint().unwrap_or_else(|| "-".into());
    tracing::warn!(
        route,
        link = id.0,
        replica,
        direction = d.direction.as_str(),
        "stopped following this direction at byte {} ({:?}, link in {}): {}; still forwarding",
        d.offset,
        d.phase,
        d.link_phase.as_str(),
        d.reason
    );
}

/// Logs a replica entering or leaving a replication loop; `limit` is the output-buffer limit in force.
pub fn replication_loop(
    route: &str,
    replica: &str,
    kind: LoopKind,
    change: LoopChange,
    h: &ReplicaHistory,
    limit: &crate::link::settings::SettingUsed,
) {
    let loop_kind = kind.as_str();
    match (change, kind) {
        (LoopChange::Entered, LoopKind::Full) => {
            let cause = h.dominant_cause().map_or("unknown", |c| c.as_str());
            tracing::warn!(
                route,
                replica,
                loop_kind,
                cause,
                "replication loop: {} full syncs in a row failed before streaming for {} s, within {:.1} min, mostly {cause}; it will not stop by itself",
                h.full.attempts.len(),
                crate::link::history::LOOP_CLEARS_AFTER.as_secs(),
                h.full.span().as_secs_f64() / 60.0
            );
        }
        (LoopChange::Entered, LoopKind::Partial) => {
            tracing::warn!(route, replica, loop_kind, "{}", crate::observe::explain::partial_loop(h, limit));
        }
        (LoopChange::Cleared, _) => {
            tracing::info!(
                route,
                replica,
                loop_kind,
                "{loop_kind} replication loop over: a sync has streamed for {} s",
                crate::link::history::LOOP_CLEARS_AFTER.as_secs()
            );
        }
    }
}

/// Logs a replica forgotten after a while with no open link.
pub fn forgotten(route: &str, replica: &str) {
    tracing::info!(route, replica, "no link from this replica for the forget-after: its record and series are dropped");
}
