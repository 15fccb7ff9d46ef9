//! Prometheus metrics, read from the link model.
//!
//! Counters and histograms come from what changed in a link since the observer last looked
//! ([`Observer::after_update`], called by the driver after every update); gauges are computed from the
//! links as they are when scraped ([`Observer::render`]). Labels are the route, the replica endpoint
//! (`ip:listening-port`) and small enums, never link ids. The recorder is this observer's own, so several
//! proxies can live in one process.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use metrics::{Recorder, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::link::settings::ServerSettings;
use crate::link::{Link, LinkId, LinkKind, Links, Phase, Side, SyncKind, SyncRequest};
use crate::observe::log;
use crate::time::Timestamp;
use crate::wire::{CommandName, Direction, TrailerCheck};

/// Histogram buckets for durations, in seconds: a millisecond to four hours.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 7200.0, 14400.0,
];

/// The label used when a link has not announced its listening port (yet).
pub const UNKNOWN_REPLICA: &str = "unknown";

/// What the observer already reported for one link.
#[derive(Default)]
struct Reported {
    phases: usize,
    bytes: [u64; 2],
    commands: Vec<u64>,
    blocked: [Duration; 2],
    desyncs: usize,
    sync_counted: bool,
    checksum_counted: bool,
    close_logged: bool,
    close_counted: bool,
    refusal_counted: bool,
}

/// The latest facts per replica, for the gauges that outlive a link ("current or last transfer").
#[derive(Clone, Default)]
struct ReplicaGauges {
    link: Option<LinkId>,
    phase: Option<Phase>,
    rdb_size: Option<u64>,
    rdb_transferred: Option<u64>,
    rdb_rate: Option<f64>,
    master_offset: Option<i64>,
    ack_offset: Option<i64>,
    ack_at: Option<Timestamp>,
    /// The size of the last complete RDB, standing in for an EOF-framed one in the forecast.
    last_complete_rdb: Option<u64>,
}

/// Turns link updates into metrics and log lines for one route.
pub struct Observer {
    route: String,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    reported: HashMap<LinkId, Reported>,
    replicas: HashMap<String, ReplicaGauges>,
    /// `replscope_write_blocked_seconds_total` by (replica, side): a float counter, rendered by hand
    /// because `metrics` counters are integers.
    blocked_total: HashMap<(String, Side), f64>,
    /// `--assume-output-buffer-limit`, for `replscope_sync_doomed` (only a stated limit dooms a sync).
    assumed_limit: Option<crate::link::forecast::OutputBufferLimit>,
}

impl Observer {
    /// An observer for `route`, with its own recorder.
    pub fn new(route: &str) -> Self {
        Self::with_settings(route, ServerSettings::default())
    }

    /// An observer that also judges full syncs against a stated `client-output-buffer-limit replica`.
    pub fn with_settings(route: &str, settings: ServerSettings) -> Self {
        let assumed_limit = settings.output_buffer_limit;
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        let observer = Observer {
            route: route.to_string(),
            recorder,
            handle,
            reported: HashMap::new(),
            replicas: HashMap::new(),
            blocked_total: HashMap::new(),
            assumed_limit,
        };
        observer.with(describe_all);
        observer.with(|| gauge!("replscope_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0));
        observer
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder as &dyn Recorder, f)
    }

    /// Reports what changed in link `id` since the last call: counters, histograms, log lines.
    pub fn after_update(&mut self, id: LinkId, link: &Link, now: Timestamp) {
        let route = self.route.clone();
        let replica = link.replica_endpoint().unwrap_or_else(|| UNKNOWN_REPLICA.to_string());
        // Until the replica announces its port, its bytes and waits are held back (not lost) so they are
        // not counted under a label it will never use again; a link that ends unannounced is "unknown".
        let label_known = replica != UNKNOWN_REPLICA || link.close.is_some();
        let rep = self.reported.entry(id).or_default();
        let mut phases_entered = Vec::new();
        if link.phases.len() > rep.phases {
            phases_entered = link.phases[rep.phases..].to_vec();
            rep.phases = link.phases.len();
        }
        let bytes_delta = Direction::BOTH.map(|d| {
            if !label_known {
                return 0;
            }
            let now_bytes = link.traffic[d.index()].bytes;
            let delta = now_bytes.saturating_sub(rep.bytes[d.index()]);
            rep.bytes[d.index()] = now_bytes;
            delta
        });
        if rep.commands.len() != link.stream.commands.len() {
            rep.commands = vec![0; link.stream.commands.len()];
        }
        let mut command_deltas = Vec::new();
        for (i, (now_n, was)) in link.stream.commands.iter().zip(rep.commands.iter_mut()).enumerate() {
            if *now_n > *was {
                command_deltas.push((i, *now_n - *was));
                *was = *now_n;
            }
        }
        let blocked_delta = [Side::Master, Side::Replica].map(|s| {
            if !label_known {
                return (s, Duration::ZERO);
            }
            let delta = link.blocked[s.index()].saturating_sub(rep.blocked[s.index()]);
            rep.blocked[s.index()] = link.blocked[s.index()];
            (s, delta)
        });
        let new_desyncs = link.desyncs.get(rep.desyncs..).map(<[_]>::to_vec).unwrap_or_default();
        rep.desyncs = link.desyncs.len();
        let count_sync = !rep.sync_counted && link.sync_kind.is_some() && link.kind == LinkKind::Replication;
        rep.sync_counted |= count_sync;
        let checksum_failed = !rep.checksum_counted
            && link.kind != LinkKind::RdbChannel
            && matches!(link.rdb.as_ref().and_then(|r| r.trailer), Some(TrailerCheck::Mismatch { .. }));
        rep.checksum_counted |= checksum_failed;
        // The end is logged once diagnosed (or at once for links that need none), and counted once the
        // diagnosis has settled, with its final cause.
        let log_close = !rep.close_logged
            && link.close.is_some()
            && (link.diagnosis.is_some()
                || matches!(link.kind, LinkKind::Client)
                || crate::link::cause::is_probe(link));
        rep.close_logged |= log_close;
        let settled = link.diagnosis.as_ref().filter(|d| d.settled && !rep.close_counted).cloned();
        rep.close_counted |= settled.is_some();
        let refusal = if rep.refusal_counted { None } else { link.psync_refusal.clone() };
        rep.refusal_counted |= refusal.is_some();

        for change in &phases_entered {
            log::phase_entered(&route, id, link, change.phase);
        }
        for d in &new_desyncs {
            log::desync(&route, id, link, d);
        }
        if let Some(r) = &refusal {
            log::refusal(&route, id, link, r);
        }
        if log_close {
            let why = link.diagnosis.as_ref().map(|d| crate::observe::explain::explain(link, d, None));
            log::closed(&route, id, link, why.as_deref());
        }
        if let Some(d) = &settled
            && d.cause != d.first
        {
            log::settled(&route, id, link, d);
        }

        let is_replica = matches!(link.kind, LinkKind::Replication | LinkKind::RdbChannel)
            || (link.kind == LinkKind::Pending && link.handshake.listening_port.is_some());
        self.with(|| {
            for d in Direction::BOTH {
                if bytes_delta[d.index()] > 0 {
                    counter!("replscope_forwarded_bytes_total", "route" => route.clone(), "replica" => replica.clone(), "direction" => d.as_str())
                        .increment(bytes_delta[d.index()]);
                }
            }
            for (i, n) in &command_deltas {
                let name = CommandName::ALL.get(*i).map_or("other", |c| c.as_str());
                counter!("replscope_stream_commands_total", "route" => route.clone(), "command" => name).increment(*n);
            }
            if count_sync {
                let kind = match link.sync_kind {
                    Some(SyncKind::Full) => "full",
                    _ => "partial",
                };
                counter!("replscope_syncs_total", "route" => route.clone(), "replica" => replica.clone(), "kind" => kind)
                    .increment(1);
            }
            if let Some(r) = &refusal {
                counter!("replscope_psync_rejected_total", "route" => route.clone(), "replica" => replica.clone(), "reason" => r.reason.as_str())
                    .increment(1);
                if let Some(gap) = r.gap_bytes {
                    gauge!("replscope_psync_gap_bytes", "route" => route.clone(), "replica" => replica.clone()).set(gap as f64);
                }
            }
            if checksum_failed {
                counter!("replscope_rdb_checksum_failures_total", "route" => route.clone(), "replica" => replica.clone())
                    .increment(1);
            }
            for d in &new_desyncs {
                counter!("replscope_desyncs_total", "route" => route.clone(), "direction" => d.direction.as_str())
                    .increment(1);
            }
            if let (Some(d), Some(c)) = (&settled, &link.close)
                && link.kind == LinkKind::Replication
                && link.sync_kind == Some(SyncKind::Full)
                && matches!(c.phase, Phase::WaitingBgsave | Phase::RdbTransfer | Phase::Loading)
            {
                counter!("replscope_full_sync_failures_total", "route" => route.clone(), "replica" => replica.clone(), "cause" => d.cause.as_str())
                    .increment(1);
            }
            if let (Some(d), Some(c), true) = (&settled, &link.close, is_replica || link.connect_error.is_some()) {
                let by = match c.by {
                    crate::link::ClosedBy::Master => "master",
                    crate::link::ClosedBy::Replica => "replica",
                    crate::link::ClosedBy::Proxy => "proxy",
                };
                counter!("replscope_disconnects_total", "route" => route.clone(), "replica" => replica.clone(), "closed_by" => by, "phase" => c.phase.as_str(), "cause" => d.cause.as_str())
                    .increment(1);
            }
            if link.kind == LinkKind::Replication {
                for change in &phases_entered {
                    observe_durations(&route, link, change.phase);
                }
            }
        });
        for (side, delta) in blocked_delta {
            if !delta.is_zero() {
                *self.blocked_total.entry((replica.clone(), side)).or_default() += delta.as_secs_f64();
            }
        }
        if link.kind == LinkKind::Replication && replica != UNKNOWN_REPLICA {
            let g = self.replicas.entry(replica).or_default();
            g.link = Some(id);
            g.phase = Some(link.phase());
            if let Some(rdb) = &link.rdb {
                g.rdb_size = rdb.size();
                g.rdb_transferred = Some(rdb.transferred);
                g.rdb_rate = link.rdb_rate(now);
                if rdb.completed_at.is_some() {
                    g.last_complete_rdb = Some(rdb.transferred);
                }
            }
            g.master_offset = link.master_offset().or(g.master_offset);
            if let Some(ack) = link.stream.last_ack {
                g.ack_offset = Some(ack.offset);
                g.ack_at = Some(ack.at);
            }
        }
    }

    /// Counts one action of an injected fault.
    pub fn fault_action(&self, kind: &'static str) {
        let route = self.route.clone();
        self.with(|| counter!("replscope_fault_actions_total", "route" => route, "kind" => kind).increment(1));
    }

    /// Forgets the per-link bookkeeping of a link that was removed.
    pub fn forget(&mut self, id: LinkId) {
        self.reported.remove(&id);
    }

    /// Renders every metric in the Prometheus text format, the gauges computed from `links` at `now`.
    pub fn render(&mut self, links: &Links, faults: &HashMap<&'static str, u64>, now: Timestamp) -> String {
        let route = self.route.clone();
        let mut by_kind: HashMap<LinkKind, u64> = HashMap::new();
        for (_, link) in links.iter() {
            if link.close.is_none() {
                *by_kind.entry(link.kind).or_default() += 1;
            }
        }
        // Refresh what only the live link knows: a transfer's rate over the last second.
        for g in self.replicas.values_mut() {
            if let Some(link) = g.link.and_then(|id| links.get(id))
                && link.rdb.is_some()
            {
                g.rdb_rate = link.rdb_rate(now);
                g.rdb_transferred = link.rdb.as_ref().map(|r| r.transferred);
                g.rdb_size = link.rdb.as_ref().and_then(|r| r.size());
            }
        }
        let write_rate = links.write_rate(now);
        let loops: Vec<(String, bool)> = links.histories().iter().map(|(r, h)| (r.clone(), h.in_loop)).collect();
        // The forecast of each replica in a full sync; 0 for the others.
        let mut forecasts: Vec<(String, f64, Option<bool>)> = Vec::new();
        for (replica, g) in &self.replicas {
            let live = g.link.and_then(|id| links.get(id)).filter(|l| l.close.is_none());
            let f =
                live.and_then(|l| crate::link::forecast::sync_buffer_forecast(l, write_rate, g.last_complete_rdb, now));
            let doomed = self.assumed_limit.map(|lim| f.is_some_and(|f| lim.exceeded_by(f.bytes, f.seconds)));
            forecasts.push((replica.clone(), f.map_or(0.0, |f| f.bytes), doomed));
        }
        self.with(|| {
            for (replica, bytes, doomed) in &forecasts {
                let labels = [("route", route.clone()), ("replica", replica.clone())];
                gauge!("replscope_sync_buffer_forecast_bytes", &labels).set(*bytes);
                if let Some(d) = doomed {
                    gauge!("replscope_sync_doomed", &labels).set(if *d { 1.0 } else { 0.0 });
                }
            }
            for (replica, in_loop) in &loops {
                gauge!("replscope_replication_loop", "route" => route.clone(), "replica" => replica.clone())
                    .set(if *in_loop { 1.0 } else { 0.0 });
            }
            if let Some(rate) = write_rate {
                gauge!("replscope_master_write_rate_bytes_per_second", "route" => route.clone()).set(rate);
            }
            for kind in crate::fault::FaultKind::LABELS {
                let n = faults.get(kind).copied().unwrap_or(0);
                gauge!("replscope_faults_active", "route" => route.clone(), "kind" => kind).set(n as f64);
            }
            for kind in [LinkKind::Replication, LinkKind::RdbChannel, LinkKind::Client, LinkKind::Pending] {
                let n = by_kind.get(&kind).copied().unwrap_or(0);
                gauge!("replscope_links", "route" => route.clone(), "kind" => kind.as_str()).set(n as f64);
            }
            for (replica, g) in &self.replicas {
                let labels = [("route", route.clone()), ("replica", replica.clone())];
                if let Some(current) = g.phase {
                    for phase in Phase::ALL {
                        let v = if phase == current { 1.0 } else { 0.0 };
                        gauge!("replscope_link_phase", "route" => route.clone(), "replica" => replica.clone(), "phase" => phase.as_str())
                            .set(v);
                    }
                }
                if let Some(v) = g.rdb_size {
                    gauge!("replscope_rdb_size_bytes", &labels).set(v as f64);
                }
                if let Some(v) = g.rdb_transferred {
                    gauge!("replscope_rdb_transferred_bytes", &labels).set(v as f64);
                }
                if let Some(v) = g.rdb_rate {
                    gauge!("replscope_rdb_transfer_rate_bytes_per_second", &labels).set(v);
                }
                if let Some(v) = g.master_offset {
                    gauge!("replscope_master_offset_bytes", &labels).set(v as f64);
                }
                if let Some(v) = g.ack_offset {
                    gauge!("replscope_replica_ack_offset_bytes", &labels).set(v as f64);
                }
                if let (Some(m), Some(a)) = (g.master_offset, g.ack_offset) {
                    gauge!("replscope_replica_lag_bytes", &labels).set((m - a) as f64);
                }
                if let Some(at) = g.ack_at {
                    gauge!("replscope_replica_ack_age_seconds", &labels).set(now.since(at).as_secs_f64());
                }
            }
        });
        let mut out = self.handle.render();
        let _ = writeln!(
            out,
            "# HELP replscope_write_blocked_seconds_total Time forwarding waited on a side that was not reading.\n\
             # TYPE replscope_write_blocked_seconds_total counter"
        );
        let mut blocked: Vec<_> = self.blocked_total.iter().collect();
        blocked.sort_by(|a, b| a.0.0.cmp(&b.0.0).then((a.0.1 as u8).cmp(&(b.0.1 as u8))));
        for ((replica, side), secs) in blocked {
            let side = match side {
                Side::Master => "master",
                Side::Replica => "replica",
            };
            let _ = writeln!(
                out,
                "replscope_write_blocked_seconds_total{{route=\"{}\",replica=\"{}\",side=\"{side}\"}} {secs}",
                escape(&route),
                escape(replica)
            );
        }
        out
    }
}

/// Escapes a label value for the Prometheus text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The histograms a phase change completes.
fn observe_durations(route: &str, link: &Link, entered: Phase) {
    let route = route.to_string();
    match entered {
        Phase::RdbTransfer => {
            if let (Some(granted), Some(rdb)) = (link.phase_at(Phase::WaitingBgsave), &link.rdb) {
                histogram!("replscope_bgsave_wait_seconds", "route" => route)
                    .record(rdb.started_at.since(granted).as_secs_f64());
            }
        }
        Phase::Loading => {
            if let Some(rdb) = &link.rdb
                && let Some(done) = rdb.completed_at
            {
                histogram!("replscope_rdb_transfer_seconds", "route" => route)
                    .record(done.since(rdb.started_at).as_secs_f64());
            }
        }
        Phase::Streaming => {
            let Some(loading) = link.phase_at(Phase::Loading) else { return };
            let Some(streaming) = link.phase_at(Phase::Streaming) else { return };
            histogram!("replscope_replica_load_seconds", "route" => route.clone())
                .record(streaming.since(loading).as_secs_f64());
            let asked = match link.request {
                Some(SyncRequest::Psync { at, .. } | SyncRequest::Sync { at }) => at,
                None => return,
            };
            histogram!("replscope_full_sync_seconds", "route" => route).record(streaming.since(asked).as_secs_f64());
        }
        _ => {}
    }
}

fn describe_all() {
    describe_gauge!("replscope_links", "Open connections by kind: replication, rdb_channel, client, pending.");
    describe_gauge!("replscope_link_phase", "1 for the replica's current phase, 0 for the others.");
    describe_counter!("replscope_forwarded_bytes_total", metrics::Unit::Bytes, "Bytes forwarded, by direction.");
    describe_counter!("replscope_syncs_total", "Syncs begun, by kind: full or partial.");
    describe_gauge!(
        "replscope_rdb_size_bytes",
        metrics::Unit::Bytes,
        "RDB size announced by $<len> for the current or last transfer (EOF framing: the real size once known)."
    );
    describe_gauge!(
        "replscope_rdb_transferred_bytes",
        metrics::Unit::Bytes,
        "RDB bytes forwarded in the current or last transfer."
    );
    describe_gauge!(
        "replscope_rdb_transfer_rate_bytes_per_second",
        "RDB transfer rate: over the last second during a transfer, the last transfer's average after it."
    );
    describe_histogram!("replscope_rdb_transfer_seconds", metrics::Unit::Seconds, "Completed RDB transfers.");
    describe_histogram!(
        "replscope_bgsave_wait_seconds",
        metrics::Unit::Seconds,
        "FULLRESYNC to the first payload byte."
    );
    describe_histogram!(
        "replscope_replica_load_seconds",
        metrics::Unit::Seconds,
        "Payload complete to the replica's first ACK."
    );
    describe_histogram!(
        "replscope_full_sync_seconds",
        metrics::Unit::Seconds,
        "PSYNC to streaming, for completed full syncs."
    );
    describe_counter!("replscope_rdb_checksum_failures_total", "RDB trailers that did not match the bytes forwarded.");
    describe_gauge!(
        "replscope_master_offset_bytes",
        metrics::Unit::Bytes,
        "The master's replication offset, from the wire."
    );
    describe_gauge!("replscope_replica_ack_offset_bytes", metrics::Unit::Bytes, "The last REPLCONF ACK offset.");
    describe_gauge!("replscope_replica_lag_bytes", metrics::Unit::Bytes, "Master offset minus the last ACK offset.");
    describe_gauge!("replscope_replica_ack_age_seconds", metrics::Unit::Seconds, "Time since the last REPLCONF ACK.");
    describe_counter!("replscope_stream_commands_total", "Stream commands by name (a fixed set; the rest is other).");
    describe_counter!(
        "replscope_disconnects_total",
        "Replication links that ended, by who closed (master, replica, proxy), the phase, and the settled cause."
    );
    describe_counter!("replscope_desyncs_total", "Streams the decoders gave up on, by direction.");
    describe_gauge!("replscope_build_info", "Always 1; the version label says which build.");
    describe_gauge!("replscope_faults_active", "Injected faults in force, by kind.");
    describe_counter!(
        "replscope_psync_rejected_total",
        "PSYNCs answered with a full sync, by reason: no_history, replid_mismatch, offset_out_of_range, replica_ahead."
    );
    describe_gauge!(
        "replscope_psync_gap_bytes",
        metrics::Unit::Bytes,
        "The last refused PSYNC's gap: FULLRESYNC offset minus the replica's offset (same replication id)."
    );
    describe_gauge!(
        "replscope_replication_loop",
        "1 while the replica is in a replication loop: 3 full syncs in a row within 30 min failed before streaming."
    );
    describe_counter!(
        "replscope_full_sync_failures_total",
        "Full syncs that ended before streaming, by settled cause."
    );
    describe_gauge!(
        "replscope_sync_buffer_forecast_bytes",
        metrics::Unit::Bytes,
        "During a full sync: bytes that will have piled up for the replica on the master when the transfer ends (0 otherwise)."
    );
    describe_gauge!(
        "replscope_sync_doomed",
        "1 while the forecast exceeds the assumed client-output-buffer-limit replica (--assume-output-buffer-limit)."
    );
    describe_gauge!(
        "replscope_master_write_rate_bytes_per_second",
        "The master's replication write rate: from the stream, else from successive FULLRESYNC offsets."
    );
    describe_counter!("replscope_fault_actions_total", "Actions of injected faults (fired, stalled, cut …), by kind.");
}
