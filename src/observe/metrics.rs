//! Prometheus metrics for one route: counters and histograms from the model's changes
//! ([`Metrics::on_change`]), gauges computed from the links as they are when scraped ([`Metrics::render`]).
//!
//! Each metric is declared once — name, help and label names — right beside the code that emits it, and
//! emitted with exactly as many label values as it declares (the compiler checks the count). Labels are
//! the route, the replica endpoint (`ip:listening-port`) and small enums, never link ids. The series are
//! this route's own ([`Series`]), so several routes can live in one process and a forgotten replica's
//! series go with it ([`Change::ReplicaForgotten`]).
//!
//! Adding a metric: declare it (`const X: Counter<2> = Counter::new("replscope_…_total", "…", ["route",
//! "replica"]);`) where it is emitted, emit it there (`self.count(&X, [route, replica], 1)`), add it to
//! [`DECLARED`] and to the README's table (tests hold both).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::link::history::LoopKind;
use crate::link::{Cause, Change, FaultType, Link, LinkId, LinkKind, Links, Phase, Side, SyncKind, SyncRequest};
use crate::observe::series::{Def, Exposition, Series, Type};
use crate::observe::words::closer;
use crate::time::Timestamp;
use crate::wire::Direction;

pub use crate::observe::series::DURATION_BUCKETS;

/// The label used when a link has not announced its listening port (yet).
pub const UNKNOWN_REPLICA: &str = "unknown";

macro_rules! def_kind {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name<const N: usize>(pub Def<N>);

        impl<const N: usize> $name<N> {
            /// Declares it.
            pub const fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
                $name(Def { name, help, labels })
            }

            /// Its name.
            pub const fn name(&self) -> &'static str {
                self.0.name
            }

            /// Shows it in `series` before its first series.
            fn declare(&self, series: &mut Series) {
                series.declare(&self.0, Type::$name);
            }
        }
    };
}

/// Declares every family named, so each is shown from the first scrape.
macro_rules! declare {
    ($series:expr; $($metric:ident),* $(,)?) => {
        $( $metric.declare($series); )*
    };
}

def_kind!(
    /// A counter.
    Counter
);
def_kind!(
    /// A gauge.
    Gauge
);
def_kind!(
    /// A histogram.
    Histogram
);

/// Counts held back for a link that has not announced its replica endpoint yet, so they are not counted
/// under a label it will never use again (a link that ends unannounced is `unknown`).
#[derive(Default)]
struct Held {
    bytes: [u64; 2],
    blocked: [Duration; 2],
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
    /// The last refused PSYNC's gap.
    psync_gap: Option<i64>,
    /// When its links ended, and why (settled causes), the newest last, within [`RECENT_WINDOW`].
    recent: VecDeque<(Timestamp, Cause)>,
}

/// How far back [`RECENT_DISCONNECTS`] counts.
pub const RECENT_WINDOW: Duration = Duration::from_secs(30 * 60);

/// The most ends a replica's recent record keeps (a replica dropped every second for half an hour is
/// counted up to here).
const RECENT_KEPT: usize = 256;

impl ReplicaGauges {
    fn update(&mut self, id: LinkId, link: &Link, now: Timestamp) {
        self.link = Some(id);
        self.phase = Some(link.phase());
        if let Some(rdb) = &link.rdb {
            self.rdb_size = rdb.size();
            self.rdb_transferred = Some(rdb.transferred);
            self.rdb_rate = link.rdb_rate(now);
            if rdb.completed_at.is_some() {
                self.last_complete_rdb = Some(rdb.transferred);
            }
        }
        self.master_offset = link.master_offset().or(self.master_offset);
        if let Some(ack) = link.stream.last_ack {
            self.ack_offset = Some(ack.offset);
            self.ack_at = Some(ack.at);
        }
    }
}

/// One route's metrics.
pub struct Metrics {
    route: Arc<str>,
    series: Series,
    held: HashMap<LinkId, Held>,
    replicas: HashMap<String, ReplicaGauges>,
}

/// The replica label of a link: its endpoint, `unknown` once it ended without one, `None` while it may
/// still announce one.
fn replica_label(link: &Link) -> Option<String> {
    match link.replica_endpoint() {
        Some(ep) => Some(ep),
        None if link.close.is_some() => Some(UNKNOWN_REPLICA.to_string()),
        None => None,
    }
}

/// Whether a link is, or is becoming, a replica's (its close counts as a disconnect).
fn is_replica(link: &Link) -> bool {
    matches!(link.kind, LinkKind::Replication | LinkKind::RdbChannel)
        || (link.kind == LinkKind::Pending && link.handshake.listening_port.is_some())
}

const FORWARDED: Counter<3> = Counter::new(
    "replscope_forwarded_bytes_total",
    "Bytes forwarded, by direction.",
    ["route", "replica", "direction"],
);
const WRITE_BLOCKED: Counter<3> = Counter::new(
    "replscope_write_blocked_seconds_total",
    "Time forwarding waited on a side that was not reading.",
    ["route", "replica", "side"],
);
const STREAM_COMMANDS: Counter<2> = Counter::new(
    "replscope_stream_commands_total",
    "Stream commands by name (a fixed set; the rest is other).",
    ["route", "command"],
);
const SYNCS: Counter<3> =
    Counter::new("replscope_syncs_total", "Syncs begun, by kind: full or partial.", ["route", "replica", "kind"]);
const PSYNC_REJECTED: Counter<3> = Counter::new(
    "replscope_psync_rejected_total",
    "PSYNCs answered with a full sync, by reason: no_history, replid_mismatch, offset_out_of_range, replica_ahead.",
    ["route", "replica", "reason"],
);
const PSYNC_GAP: Gauge<2> = Gauge::new(
    "replscope_psync_gap_bytes",
    "The last refused PSYNC's gap: FULLRESYNC offset minus the replica's offset (same replication id).",
    ["route", "replica"],
);
const CHECKSUM_FAILURES: Counter<2> = Counter::new(
    "replscope_rdb_checksum_failures_total",
    "RDB trailers that did not match the bytes forwarded.",
    ["route", "replica"],
);
const REPLICA_BUFFER_FULL: Counter<2> = Counter::new(
    "replscope_replica_buffer_full_total",
    "Two-channel full syncs whose replica stopped reading its main channel before the RDB was through (its \
     own stream buffer was full; the stream piled up on the master instead).",
    ["route", "replica"],
);
const DESYNCS: Counter<2> =
    Counter::new("replscope_desyncs_total", "Streams the decoders gave up on, by direction.", ["route", "direction"]);
const FULL_SYNC_FAILURES: Counter<3> = Counter::new(
    "replscope_full_sync_failures_total",
    "Full syncs that ended before streaming, or within 60 s of it, by settled cause.",
    ["route", "replica", "cause"],
);
const DISCONNECTS: Counter<5> = Counter::new(
    "replscope_disconnects_total",
    "Replication links that ended, by who closed (master, replica, proxy), the phase, and the settled cause.",
    ["route", "replica", "closed_by", "phase", "cause"],
);
const FAULT_ACTIONS: Counter<2> = Counter::new(
    "replscope_fault_actions_total",
    "Actions of injected faults (fired, stalled, cut …), by kind.",
    ["route", "kind"],
);
const BGSAVE_WAIT: Histogram<1> =
    Histogram::new("replscope_bgsave_wait_seconds", "FULLRESYNC to the first payload byte.", ["route"]);
const RDB_TRANSFER: Histogram<1> =
    Histogram::new("replscope_rdb_transfer_seconds", "Completed RDB transfers.", ["route"]);
const REPLICA_LOAD: Histogram<1> =
    Histogram::new("replscope_replica_load_seconds", "Payload complete to the replica's first ACK.", ["route"]);
const FULL_SYNC: Histogram<1> =
    Histogram::new("replscope_full_sync_seconds", "PSYNC to streaming, for completed full syncs.", ["route"]);

const BUILD_INFO: Gauge<1> =
    Gauge::new("replscope_build_info", "Always 1; the version label says which build.", ["version"]);
const LINKS: Gauge<2> = Gauge::new(
    "replscope_links",
    "Open connections by kind: replication, rdb_channel, snapshot, client, pending.",
    ["route", "kind"],
);
const LINK_PHASE: Gauge<3> = Gauge::new(
    "replscope_link_phase",
    "1 for the replica's current phase, 0 for the others.",
    ["route", "replica", "phase"],
);
const RDB_SIZE: Gauge<2> = Gauge::new(
    "replscope_rdb_size_bytes",
    "RDB size announced by $<len> for the current or last transfer (EOF framing: the real size once known).",
    ["route", "replica"],
);
const RDB_TRANSFERRED: Gauge<2> = Gauge::new(
    "replscope_rdb_transferred_bytes",
    "RDB bytes forwarded in the current or last transfer.",
    ["route", "replica"],
);
const RDB_RATE: Gauge<2> = Gauge::new(
    "replscope_rdb_transfer_rate_bytes_per_second",
    "RDB transfer rate: over the last second during a transfer, the last transfer's average after it.",
    ["route", "replica"],
);
const MASTER_OFFSET: Gauge<2> = Gauge::new(
    "replscope_master_offset_bytes",
    "The master's replication offset, from the wire.",
    ["route", "replica"],
);
const ACK_OFFSET: Gauge<2> =
    Gauge::new("replscope_replica_ack_offset_bytes", "The last REPLCONF ACK offset.", ["route", "replica"]);
const LAG: Gauge<2> =
    Gauge::new("replscope_replica_lag_bytes", "Master offset minus the last ACK offset.", ["route", "replica"]);
const ACK_AGE: Gauge<2> =
    Gauge::new("replscope_replica_ack_age_seconds", "Time since the last REPLCONF ACK.", ["route", "replica"]);
const REPLICATION_LOOP: Gauge<3> = Gauge::new(
    "replscope_replication_loop",
    "1 while the replica is in a replication loop: full (3 full syncs in a row within 30 min failed before streaming for 60 s) \
     or partial (3 partial resyncs in a row within 10 min dropped by the master within 60 s).",
    ["route", "replica", "kind"],
);
const SYNC_BUFFER_FORECAST: Gauge<2> = Gauge::new(
    "replscope_sync_buffer_forecast_bytes",
    "During a full sync: bytes that will have piled up for the replica on the master when the transfer ends (0 otherwise).",
    ["route", "replica"],
);
const SYNC_DOOMED: Gauge<2> = Gauge::new(
    "replscope_sync_doomed",
    "1 while the forecast exceeds the client-output-buffer-limit replica read from the master (introspection), \
     else the one assumed (--assume-output-buffer-limit); absent on a route with neither.",
    ["route", "replica"],
);
const WRITE_RATE: Gauge<1> = Gauge::new(
    "replscope_master_write_rate_bytes_per_second",
    "The master's replication write rate: from the stream, else from successive FULLRESYNC offsets.",
    ["route"],
);
const RECENT_DISCONNECTS: Gauge<3> = Gauge::new(
    "replscope_recent_disconnects",
    "The replica's links that ended in the last 30 minutes, by settled cause (exact from the first one, \
     unlike increase() over a counter series that appears with its first event).",
    ["route", "replica", "cause"],
);
const REPLICA_OUTPUT_BUFFER: Gauge<2> = Gauge::new(
    "replscope_replica_output_buffer_bytes",
    "The replica connection's output buffer on the master (CLIENT LIST omem), as introspection last read it; \
     0 while the replica has no open link. Absent without introspection.",
    ["route", "replica"],
);
const MASTER_SETTING: Gauge<2> = Gauge::new(
    "replscope_master_setting",
    "A setting as the master reports it (introspection, CONFIG GET): sizes in bytes, times in seconds, yes/no as 1/0. \
     setting: client-output-buffer-limit-replica-hard, -soft, -soft-seconds (the hard limit as the master applies it), \
     repl-backlog-size, repl-timeout, repl-diskless-sync, repl-diskless-sync-delay, repl-diskless-sync-max-replicas.",
    ["route", "setting"],
);
const INTROSPECTION_ERRORS: Counter<2> = Counter::new(
    "replscope_introspection_errors_total",
    "Failures asking the master about itself, by reason: connect, auth, forbidden (an ACL refused a command), \
     reply (an error or a malformed answer), io (no answer in time, or the connection broke).",
    ["route", "reason"],
);
const FAULTS_ACTIVE: Gauge<2> =
    Gauge::new("replscope_faults_active", "Injected faults in force, by kind.", ["route", "kind"]);

// The process's own, not a route's.
const ROUTES: Gauge<1> = Gauge::new(
    "replscope_routes",
    "Routes served, by state: active (accepting replicas) or draining (removed by a reload; its open links finish).",
    ["state"],
);
const RELOADS: Counter<1> = Counter::new(
    "replscope_config_reloads_total",
    "Configuration reloads (SIGHUP), by result: success or failure (the running configuration stays).",
    ["result"],
);
const HTTP_REFUSED: Counter<0> = Counter::new(
    "replscope_http_connections_refused_total",
    "HTTP connections closed at once because the most the API serves at a time were open.",
    [],
);
const RELOAD_OK: Gauge<0> = Gauge::new(
    "replscope_config_last_reload_successful",
    "1 if the last configuration reload succeeded (or none was asked for), 0 if it failed.",
    [],
);
const RELOAD_TIME: Gauge<0> = Gauge::new(
    "replscope_config_last_reload_success_timestamp_seconds",
    "When the running configuration was loaded (at start or by the last successful reload), in Unix time.",
    [],
);

/// The name of every metric declared here, a route's and the process's (the README's table lists each;
/// a unit test checks this list against the declarations above).
pub const DECLARED: &[&str] = &[
    FORWARDED.name(),
    WRITE_BLOCKED.name(),
    STREAM_COMMANDS.name(),
    SYNCS.name(),
    PSYNC_REJECTED.name(),
    PSYNC_GAP.name(),
    CHECKSUM_FAILURES.name(),
    REPLICA_BUFFER_FULL.name(),
    DESYNCS.name(),
    FULL_SYNC_FAILURES.name(),
    DISCONNECTS.name(),
    FAULT_ACTIONS.name(),
    BGSAVE_WAIT.name(),
    RDB_TRANSFER.name(),
    REPLICA_LOAD.name(),
    FULL_SYNC.name(),
    BUILD_INFO.name(),
    LINKS.name(),
    LINK_PHASE.name(),
    RDB_SIZE.name(),
    RDB_TRANSFERRED.name(),
    RDB_RATE.name(),
    MASTER_OFFSET.name(),
    ACK_OFFSET.name(),
    LAG.name(),
    ACK_AGE.name(),
    REPLICATION_LOOP.name(),
    SYNC_BUFFER_FORECAST.name(),
    SYNC_DOOMED.name(),
    WRITE_RATE.name(),
    FAULTS_ACTIVE.name(),
    RECENT_DISCONNECTS.name(),
    REPLICA_OUTPUT_BUFFER.name(),
    MASTER_SETTING.name(),
    INTROSPECTION_ERRORS.name(),
    ROUTES.name(),
    RELOADS.name(),
    RELOAD_OK.name(),
    RELOAD_TIME.name(),
    HTTP_REFUSED.name(),
];

/// The process's metrics, apart from any route's: the build, the routes served, configuration reloads.
#[derive(Debug)]
pub struct ProcessMetrics {
    series: Series,
}

impl ProcessMetrics {
    /// The metrics of a process whose configuration was loaded at `loaded_at` (Unix seconds).
    pub fn new(loaded_at: f64) -> Self {
        let mut series = Series::new();
        declare!(&mut series; BUILD_INFO, ROUTES, RELOADS, RELOAD_OK, RELOAD_TIME, HTTP_REFUSED);
        series.set(&BUILD_INFO.0, [env!("CARGO_PKG_VERSION")], 1.0);
        series.set(&RELOAD_OK.0, [], 1.0);
        series.set(&RELOAD_TIME.0, [], loaded_at);
        ProcessMetrics { series }
    }

    /// A reload at `at` (Unix seconds) succeeded or failed.
    pub fn reloaded(&mut self, ok: bool, at: f64) {
        self.series.add(&RELOADS.0, [if ok { "success" } else { "failure" }], 1.0);
        self.series.set(&RELOAD_OK.0, [], if ok { 1.0 } else { 0.0 });
        if ok {
            self.series.set(&RELOAD_TIME.0, [], at);
        }
    }

    /// Adds the process's families to `out`, with the routes as they are now and the HTTP connections
    /// refused so far.
    pub fn render_into(&mut self, active: usize, draining: usize, http_refused: u64, out: &mut Exposition) {
        self.series.set(&HTTP_REFUSED.0, [], http_refused as f64);
        self.series.set(&ROUTES.0, ["active"], active as f64);
        self.series.set(&ROUTES.0, ["draining"], draining as f64);
        out.add(&self.series);
    }
}

impl Metrics {
    /// The metrics of `route`; full syncs are judged doomed against the `client-output-buffer-limit
    /// replica` the operator stated for their link, if any.
    pub fn new(route: &str) -> Self {
        let mut series = Series::new();
        declare!(&mut series;
            FORWARDED, WRITE_BLOCKED, STREAM_COMMANDS, SYNCS, PSYNC_REJECTED, PSYNC_GAP, CHECKSUM_FAILURES,
            REPLICA_BUFFER_FULL, DESYNCS, FULL_SYNC_FAILURES, DISCONNECTS, FAULT_ACTIONS, BGSAVE_WAIT, RDB_TRANSFER,
            REPLICA_LOAD, FULL_SYNC, LINKS, LINK_PHASE, RDB_SIZE, RDB_TRANSFERRED, RDB_RATE, MASTER_OFFSET,
            ACK_OFFSET, LAG, ACK_AGE, REPLICATION_LOOP, SYNC_BUFFER_FORECAST, SYNC_DOOMED, WRITE_RATE,
            RECENT_DISCONNECTS, FAULTS_ACTIVE, REPLICA_OUTPUT_BUFFER, MASTER_SETTING, INTROSPECTION_ERRORS,
        );
        Metrics { route: route.into(), series, held: HashMap::new(), replicas: HashMap::new() }
    }

    fn count<const N: usize>(&mut self, m: &Counter<N>, values: [&str; N], n: u64) {
        self.series.add(&m.0, values, n as f64);
    }

    fn set<const N: usize>(&mut self, m: &Gauge<N>, values: [&str; N], v: f64) {
        self.series.set(&m.0, values, v);
    }

    fn record<const N: usize>(&mut self, m: &Histogram<N>, values: [&str; N], v: f64) {
        self.series.observe(&m.0, values, v);
    }

    /// Takes one change of the model; `links` as they are after it.
    pub fn on_change(&mut self, change: &Change, links: &Links, now: Timestamp) {
        let route = Arc::clone(&self.route);
        let route = &*route;
        let link_id = change.link();
        let link = link_id.and_then(|id| links.get(id));
        let replica = link.and_then(replica_label);
        if let (Some(id), Some(replica)) = (link_id, &replica)
            && let Some(held) = self.held.remove(&id)
        {
            self.add_traffic(replica, held);
        }
        match change {
            Change::Forwarded { link: id, direction, bytes } => match &replica {
                Some(r) => self.count(&FORWARDED, [route, r, direction.as_str()], *bytes),
                None => self.held.entry(*id).or_default().bytes[direction.index()] += bytes,
            },
            Change::WriteBlocked { link: id, side, duration } => match &replica {
                Some(r) => self.series.add(&WRITE_BLOCKED.0, [route, r, side_label(*side)], duration.as_secs_f64()),
                None => self.held.entry(*id).or_default().blocked[side.index()] += *duration,
            },
            Change::Commands { name, count, .. } => self.count(&STREAM_COMMANDS, [route, name.as_str()], *count),
            Change::SyncDecided { kind, .. } => {
                if let Some(l) = link.filter(|l| l.kind == LinkKind::Replication) {
                    let kind = match kind {
                        SyncKind::Full => "full",
                        SyncKind::Partial => "partial",
                    };
                    self.count(&SYNCS, [route, &endpoint(l), kind], 1);
                }
            }
            Change::Refused { .. } => {
                if let Some(l) = link
                    && let Some(r) = &l.psync_refusal
                {
                    let ep = endpoint(l);
                    self.count(&PSYNC_REJECTED, [route, &ep, r.reason.as_str()], 1);
                    if let Some(gap) = r.gap_bytes {
                        self.replicas.entry(ep).or_default().psync_gap = Some(gap);
                    }
                }
            }
            Change::ChecksumFailed { .. } => {
                if let Some(l) = link.filter(|l| l.kind != LinkKind::RdbChannel) {
                    self.count(&CHECKSUM_FAILURES, [route, &endpoint(l)], 1);
                }
            }
            Change::Desync { direction, .. } => self.count(&DESYNCS, [route, direction.as_str()], 1),
            Change::IntrospectionFailed { failure } => self.count(&INTROSPECTION_ERRORS, [route, failure.as_str()], 1),
            Change::ReplicaBufferFull { .. } => {
                if let Some(l) = link {
                    self.count(&REPLICA_BUFFER_FULL, [route, &endpoint(l)], 1);
                }
            }
            Change::Settled { cause, .. } => {
                if let Some(l) = link
                    && let Some(close) = l.close
                {
                    let ep = endpoint(l);
                    if l.failed_full_sync().is_some() {
                        self.count(&FULL_SYNC_FAILURES, [route, &ep, cause.as_str()], 1);
                    }
                    let cut_snapshot = l.kind == LinkKind::Snapshot && *cause != crate::link::Cause::Completed;
                    if is_replica(l) || l.connect_error.is_some() || cut_snapshot {
                        let labels = [route, &ep, closer(close.by), close.phase.as_str(), cause.as_str()];
                        self.count(&DISCONNECTS, labels, 1);
                        if ep != UNKNOWN_REPLICA {
                            let recent = &mut self.replicas.entry(ep.clone()).or_default().recent;
                            if recent.len() == RECENT_KEPT {
                                recent.pop_front();
                            }
                            recent.push_back((close.at, *cause));
                        }
                    }
                }
            }
            Change::PhaseEntered { phase, .. } => {
                if let Some(l) = link.filter(|l| l.kind == LinkKind::Replication) {
                    self.durations(l, *phase);
                }
            }
            Change::FaultActed { kind, .. } => self.count(&FAULT_ACTIONS, [route, kind.as_str()], 1),
            Change::ReplicaForgotten { replica } => {
                self.series.drop_labelled("replica", replica);
                self.replicas.remove(replica);
            }
            Change::Closed { .. } | Change::Diagnosed { .. } | Change::LoopChanged { .. } => {}
        }
        if let (Some(id), Some(l), Some(ep)) = (link_id, link, replica)
            && l.kind == LinkKind::Replication
            && ep != UNKNOWN_REPLICA
        {
            if self.replicas.get(&ep).is_none_or(|g| g.link.is_none()) {
                // A counter alerts only from a 0 before its first event: `increase()` cannot see the
                // first one of a series that appears with it.
                self.count(&CHECKSUM_FAILURES, [route, &ep], 0);
            }
            self.replicas.entry(ep).or_default().update(id, l, now);
        }
    }

    fn add_traffic(&mut self, replica: &str, held: Held) {
        let route = Arc::clone(&self.route);
        for d in Direction::BOTH {
            if held.bytes[d.index()] > 0 {
                self.count(&FORWARDED, [&route, replica, d.as_str()], held.bytes[d.index()]);
            }
        }
        for side in [Side::Master, Side::Replica] {
            if !held.blocked[side.index()].is_zero() {
                let secs = held.blocked[side.index()].as_secs_f64();
                self.series.add(&WRITE_BLOCKED.0, [&route, replica, side_label(side)], secs);
            }
        }
    }

    /// The histograms a phase change completes.
    fn durations(&mut self, link: &Link, entered: Phase) {
        let route = Arc::clone(&self.route);
        let route = &*route;
        match entered {
            Phase::RdbTransfer => {
                if let (Some(granted), Some(rdb)) = (link.phase_at(Phase::WaitingBgsave), &link.rdb) {
                    self.record(&BGSAVE_WAIT, [route], rdb.started_at.since(granted).as_secs_f64());
                }
            }
            Phase::Loading => {
                if let Some(rdb) = &link.rdb
                    && let Some(done) = rdb.completed_at
                {
                    self.record(&RDB_TRANSFER, [route], done.since(rdb.started_at).as_secs_f64());
                }
            }
            Phase::Streaming => {
                let Some(loading) = link.phase_at(Phase::Loading) else { return };
                let Some(streaming) = link.phase_at(Phase::Streaming) else { return };
                self.record(&REPLICA_LOAD, [route], streaming.since(loading).as_secs_f64());
                let asked = match link.request {
                    Some(SyncRequest::Psync { at, .. } | SyncRequest::Sync { at }) => at,
                    None => return,
                };
                self.record(&FULL_SYNC, [route], streaming.since(asked).as_secs_f64());
            }
            _ => {}
        }
    }

    /// Renders every metric of the route in the Prometheus text format, the gauges computed from `links`
    /// at `now`: a gauge that does not apply now (the ACK age of a replica with no open link) is absent.
    pub fn render(&mut self, links: &Links, faults: &HashMap<FaultType, u64>, now: Timestamp) -> String {
        let mut exposition = Exposition::new();
        self.render_into(links, faults, now, &mut exposition);
        let mut out = String::new();
        exposition.render(&mut out);
        out
    }

    /// Adds every metric of the route to `out` (which may hold other routes'), the gauges computed afresh.
    pub fn render_into(
        &mut self,
        links: &Links,
        faults: &HashMap<FaultType, u64>,
        now: Timestamp,
        out: &mut Exposition,
    ) {
        let route = Arc::clone(&self.route);
        let route = &*route;
        self.series.clear_gauges();
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
        let replicas: Vec<(String, ReplicaGauges)> =
            self.replicas.iter().map(|(r, g)| (r.clone(), g.clone())).collect();
        for (replica, g) in &replicas {
            let labels = [route, replica.as_str()];
            let live = g.link.and_then(|id| links.get(id)).filter(|l| l.close.is_none());
            // The forecast of a replica in a full sync; 0 for the others.
            let f =
                live.and_then(|l| crate::link::forecast::sync_buffer_forecast(l, write_rate, g.last_complete_rdb, now));
            self.set(&SYNC_BUFFER_FORECAST, labels, f.map_or(0.0, |f| f.bytes));
            // The limit stated when the live link opened; without one, the route's for new links.
            let stated = live.map_or_else(|| links.settings(), |l| l.settings).known_output_buffer_limit();
            if let Some(lim) = stated {
                let doomed = f.is_some_and(|f| lim.exceeded_by(f.bytes, f.seconds));
                self.set(&SYNC_DOOMED, labels, if doomed { 1.0 } else { 0.0 });
            }
            if let Some(current) = g.phase {
                for phase in Phase::ALL {
                    let v = if phase == current { 1.0 } else { 0.0 };
                    self.set(&LINK_PHASE, [route, replica, phase.as_str()], v);
                }
            }
            // The buffer as the master last reported it; nothing queued once the link is gone.
            let buffer = match live {
                Some(l) => l.master_view.as_ref().and_then(|v| v.last).map(|s| s.omem as f64),
                None => links.master().map(|_| 0.0),
            };
            let values = [
                (&REPLICA_OUTPUT_BUFFER, buffer),
                (&RDB_SIZE, g.rdb_size.map(|v| v as f64)),
                (&RDB_TRANSFERRED, g.rdb_transferred.map(|v| v as f64)),
                (&RDB_RATE, g.rdb_rate),
                (&MASTER_OFFSET, g.master_offset.map(|v| v as f64)),
                (&ACK_OFFSET, g.ack_offset.map(|v| v as f64)),
                (&LAG, g.master_offset.zip(g.ack_offset).map(|(m, a)| (m - a) as f64)),
                (&PSYNC_GAP, g.psync_gap.map(|v| v as f64)),
                // Rising without an open link would say nothing but how long ago it left.
                (&ACK_AGE, g.ack_at.filter(|_| live.is_some()).map(|at| now.since(at).as_secs_f64())),
            ];
            for (gauge, value) in values {
                if let Some(v) = value {
                    self.set(gauge, labels, v);
                }
            }
            let mut by_cause: Vec<(Cause, u32)> = Vec::new();
            for (_, cause) in g.recent.iter().filter(|(at, _)| now.since(*at) < RECENT_WINDOW) {
                match by_cause.iter_mut().find(|(c, _)| c == cause) {
                    Some((_, n)) => *n += 1,
                    None => by_cause.push((*cause, 1)),
                }
            }
            for (cause, n) in by_cause {
                self.set(&RECENT_DISCONNECTS, [route, replica, cause.as_str()], f64::from(n));
            }
        }
        for (replica, h) in links.histories().iter() {
            for kind in LoopKind::ALL {
                let v = if h.in_loop_of(*kind) { 1.0 } else { 0.0 };
                self.set(&REPLICATION_LOOP, [route, replica, kind.as_str()], v);
            }
        }
        if let Some(rate) = write_rate {
            self.set(&WRITE_RATE, [route], rate);
        }
        if let Some(c) = links.master().and_then(|m| m.config) {
            let applied = links.settings().known_output_buffer_limit().filter(|_| c.output_buffer_limit.is_some());
            let yes = |b: bool| if b { 1.0 } else { 0.0 };
            let settings = [
                ("client-output-buffer-limit-replica-hard", applied.map(|l| l.hard as f64)),
                ("client-output-buffer-limit-replica-soft", applied.map(|l| l.soft as f64)),
                ("client-output-buffer-limit-replica-soft-seconds", applied.map(|l| l.soft_seconds as f64)),
                ("repl-backlog-size", c.backlog.map(|v| v as f64)),
                ("repl-timeout", c.repl_timeout.map(|t| t.as_secs_f64())),
                ("repl-diskless-sync", c.diskless_sync.map(yes)),
                ("repl-diskless-sync-delay", c.diskless_sync_delay.map(|v| v as f64)),
                ("repl-diskless-sync-max-replicas", c.diskless_sync_max_replicas.map(|v| v as f64)),
            ];
            for (setting, value) in settings {
                if let Some(v) = value {
                    self.set(&MASTER_SETTING, [route, setting], v);
                }
            }
        }
        for kind in FaultType::ALL {
            let n = faults.get(kind).copied().unwrap_or(0);
            self.set(&FAULTS_ACTIVE, [route, kind.as_str()], n as f64);
        }
        for kind in LinkKind::ALL {
            let n = by_kind.get(&kind).copied().unwrap_or(0);
            self.set(&LINKS, [route, kind.as_str()], n as f64);
        }
        out.add(&self.series);
    }
}

fn side_label(side: Side) -> &'static str {
    match side {
        Side::Master => "master",
        Side::Replica => "replica",
    }
}

/// A link's replica label for counters counted when it is known to be a replica's.
fn endpoint(link: &Link) -> String {
    link.replica_endpoint().unwrap_or_else(|| UNKNOWN_REPLICA.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{CloseHow, ClosedBy, Fed, TransportEvent};
    use crate::wire::encode_command as resp;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    #[test]
    fn bytes_wait_for_the_replica_label_and_every_metric_has_its_help() {
        let mut fed = Fed::new();
        let mut metrics = Metrics::new("r");
        let feed = |fed: &mut Fed, metrics: &mut Metrics, id, dir, bytes: &[u8], at| {
            fed.on_bytes(id, dir, bytes, at);
            for c in fed.last_changes().to_vec() {
                metrics.on_change(&c, fed, at);
            }
        };
        let id = fed.open(Some([10, 0, 0, 2].into()), ms(0));
        feed(&mut fed, &mut metrics, id, Direction::ReplicaToMaster, &resp(&["PING"]), ms(0));
        let text = metrics.render(&fed, &HashMap::new(), ms(1));
        assert!(!text.contains("replscope_forwarded_bytes_total{"), "held until the label is known: {text}");
        feed(
            &mut fed,
            &mut metrics,
            id,
            Direction::ReplicaToMaster,
            &resp(&["REPLCONF", "listening-port", "6390"]),
            ms(2),
        );
        let text = metrics.render(&fed, &HashMap::new(), ms(3));
        let both = resp(&["PING"]).len() + resp(&["REPLCONF", "listening-port", "6390"]).len();
        assert!(
            text.contains(&format!(
                "replscope_forwarded_bytes_total{{route=\"r\",replica=\"10.0.0.2:6390\",direction=\"replica_to_master\"}} {both}"
            )),
            "{text}"
        );
        fed.on_transport(id, TransportEvent::Closed { by: ClosedBy::Replica, how: CloseHow::Fin }, ms(4));
        for c in fed.last_changes().to_vec() {
            metrics.on_change(&c, &fed, ms(4));
        }
        let text = metrics.render(&fed, &HashMap::new(), ms(5));
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# HELP {base} ")), "{base} has no help");
        }
    }

    #[test]
    fn every_declared_metric_is_shown_from_the_first_scrape() {
        let mut out = Exposition::new();
        Metrics::new("r").render_into(&Links::new(), &HashMap::new(), ms(0), &mut out);
        ProcessMetrics::new(0.0).render_into(1, 0, 0, &mut out);
        let mut text = String::new();
        out.render(&mut text);
        for name in DECLARED {
            assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}:\n{text}");
        }
    }

    #[test]
    fn every_declared_metric_is_listed() {
        let source = include_str!("metrics.rs");
        let mut found = Vec::new();
        for (i, _) in source.match_indices("::new(") {
            let rest = source[i..].trim_start_matches("::new(").trim_start();
            if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next())
                && name.starts_with("replscope_")
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                found.push(name);
            }
        }
        found.sort_unstable();
        let mut declared = DECLARED.to_vec();
        declared.sort_unstable();
        assert_eq!(found, declared);
    }
}
