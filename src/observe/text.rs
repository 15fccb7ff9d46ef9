//! A link's story as a few lines a person reads at a glance.

use std::fmt::Write as _;

use crate::link::{CloseHow, Link, LinkKind, SyncAnswer, SyncRequest};
use crate::observe::words::short;
use crate::time::Timestamp;
use crate::wire::{CommandName, Direction, PsyncId};

fn secs(t: Timestamp) -> String {
    format!("{:.3}s", t.as_micros() as f64 / 1e6)
}

/// Describes one link in a few lines.
pub fn describe(label: &str, link: &Link) -> String {
    let mut s = String::new();
    let endpoint = link.replica_endpoint().unwrap_or_else(|| "-".into());
    let _ = write!(s, "{label}  {}  replica {endpoint}", link.kind.as_str());
    match &link.close {
        Some(c) => {
            let how = match c.how {
                CloseHow::Fin => "fin".to_string(),
                CloseHow::Reset => "reset".to_string(),
                CloseHow::Error(kind) => format!("error: {kind}"),
            };
            let _ = writeln!(
                s,
                "  closed by {} ({how}) in {} after {:.3}s",
                format!("{:?}", c.by).to_lowercase(),
                c.phase.as_str(),
                c.time_in_phase.as_secs_f64()
            );
        }
        None => {
            let _ = writeln!(s, "  open, {}", link.phase().as_str());
        }
    }
    let phases: Vec<String> = link.phases.iter().map(|p| format!("{} {}", p.phase.as_str(), secs(p.at))).collect();
    let _ = writeln!(s, "  phases   {}", phases.join(" → "));
    let request = match &link.request {
        Some(SyncRequest::Psync { replid: PsyncId::Unknown, offset, .. }) => format!("PSYNC ? {offset}"),
        Some(SyncRequest::Psync { replid: PsyncId::Id(id), offset, .. }) => {
            format!("PSYNC {}… {offset}", short(id.as_str()))
        }
        Some(SyncRequest::Sync { .. }) => "SYNC".into(),
        None => "-".into(),
    };
    let answer = match &link.answer {
        Some(SyncAnswer::FullResync { replid, offset, .. }) => {
            format!("FULLRESYNC {}… {offset}", short(replid.as_str()))
        }
        Some(SyncAnswer::Continue { replid: Some(id), .. }) => format!("CONTINUE {}…", short(id.as_str())),
        Some(SyncAnswer::Continue { replid: None, .. }) => "CONTINUE".into(),
        Some(SyncAnswer::DualChannelSync { .. }) => "DUALCHANNELSYNC".into(),
        Some(SyncAnswer::RdbChannelSync { client_id, .. }) => format!("RDBCHANNELSYNC {client_id}"),
        Some(SyncAnswer::EndOffset { offset, client_id, .. }) => format!("ENDOFF {offset} (client {client_id})"),
        Some(SyncAnswer::BulkPayload { .. }) => "payload".into(),
        Some(SyncAnswer::Error { code, .. }) => format!("-{code:?}").to_uppercase(),
        None => "-".into(),
    };
    let kind = link.sync_kind.map(|k| format!(" ({k:?})").to_lowercase()).unwrap_or_default();
    let _ = writeln!(s, "  sync     {request} → {answer}{kind}");
    if let Some(rdb) = &link.rdb {
        let version = rdb.header.as_ref().map_or("?".into(), |h| format!("{:?} {}", h.magic, h.version));
        let server = rdb.server_version().unwrap_or("?");
        let size = rdb.size().map_or("?".into(), |n| n.to_string());
        let trailer = crate::observe::words::trailer_words(rdb.trailer);
        let _ = writeln!(
            s,
            "  rdb      {:?} · {version} (server {server}) · {} of {size} bytes · {trailer}",
            rdb.framing, rdb.transferred
        );
    }
    let offset = link.master_offset().map_or("-".into(), |o| o.to_string());
    let ack = link.stream.last_ack.map_or("-".into(), |a| a.offset.to_string());
    let lag = link.stream.lag().map_or(String::new(), |l| format!(" (lag {l})"));
    let counts: Vec<String> = CommandName::ALL
        .iter()
        .filter(|n| link.stream.count(**n) > 0)
        .map(|n| format!("{} {}", n.as_str(), link.stream.count(*n)))
        .collect();
    if link.kind != LinkKind::RdbChannel && link.stream.start_offset.is_some() {
        let _ = writeln!(s, "  stream   offset {offset} · last ack {ack}{lag} · {}", counts.join(" "));
    }
    let (m2r, r2m) =
        (&link.traffic[Direction::MasterToReplica.index()], &link.traffic[Direction::ReplicaToMaster.index()]);
    let _ = writeln!(
        s,
        "  traffic  master→replica {} B ({} \\n) · replica→master {} B ({} \\n)",
        m2r.bytes, m2r.newlines, r2m.bytes, r2m.newlines
    );
    for d in &link.desyncs {
        let _ = writeln!(
            s,
            "  DESYNC   {} at byte {} ({:?}, link {}): {}",
            d.direction.as_str(),
            d.offset,
            d.phase,
            d.link_phase.as_str(),
            d.reason
        );
    }
    s
}
