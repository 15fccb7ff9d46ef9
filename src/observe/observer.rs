//! The observer of one route: takes the model's changes as the driver drains them and turns each into
//! its log line ([`super::log`]) and its metrics ([`Metrics`]). It reads the links for the details and
//! never changes them.

use std::collections::HashMap;

use crate::link::rules::is_probe;
use crate::link::{Change, FaultType, LinkKind, Links};
use crate::observe::metrics::Metrics;
use crate::observe::{explain, log};
use crate::time::Timestamp;

/// Logs and metrics for one route.
pub struct Observer {
    route: String,
    metrics: Metrics,
}

impl Observer {
    /// The observer of `route`; full syncs are judged doomed against the limit the operator stated for
    /// their link (see [`Link::settings`](crate::link::Link::settings)).
    pub fn new(route: &str) -> Self {
        Observer { route: route.to_string(), metrics: Metrics::new(route) }
    }

    /// Takes one change; `links` as they are after the update that made it.
    pub fn on_change(&mut self, change: &Change, links: &Links, now: Timestamp) {
        self.log(change, links);
        self.metrics.on_change(change, links, now);
    }

    fn log(&self, change: &Change, links: &Links) {
        let route = self.route.as_str();
        if let Change::LoopChanged { replica, kind, change } = change {
            let record = links.histories().get(replica).cloned().unwrap_or_default();
            let limit = links.settings().output_buffer_limit().1;
            log::replication_loop(route, replica, *kind, *change, &record, &limit);
            return;
        }
        if let Change::ReplicaForgotten { replica } = change {
            log::forgotten(route, replica);
            return;
        }
        let Some(id) = change.link() else { return };
        let Some(link) = links.get(id) else { return };
        match change {
            Change::PhaseEntered { phase, .. } => log::phase_entered(route, id, link, *phase),
            Change::Refused { .. } => {
                if let Some(r) = &link.psync_refusal {
                    log::refusal(route, id, link, r, &explain::refusal(r));
                }
            }
            Change::Desync { direction, .. } => {
                if let Some(d) = link.desyncs.iter().find(|d| d.direction == *direction) {
                    log::desync(route, id, link, d);
                }
            }
            // Links that need no diagnosis end here; the others once their cause is settled, with why.
            Change::Closed { .. } if link.kind == LinkKind::Client || is_probe(link) => log::closed(route, id, link),
            Change::Diagnosed { .. } if link.diagnosis.as_ref().is_some_and(|d| !d.settled) => {
                log::cause_pending(route, id, link)
            }
            Change::Settled { .. } => {
                if let Some(d) = &link.diagnosis {
                    let record = link.replica_endpoint().and_then(|ep| links.histories().get(&ep));
                    log::ended(route, id, link, &explain::explain(link, d, record));
                }
            }
            Change::FaultActed { fault, kind, action, .. } => log::fault_acted(route, id, link, *fault, *kind, action),
            Change::ReplicaBufferFull { .. } => {
                if let Some(full) = &link.replica_buffer_full {
                    log::replica_buffer_full(route, id, link, &explain::replica_buffer_full(link, full));
                }
            }
            _ => {}
        }
    }

    /// Adds the metrics to `out`, which may hold other routes'.
    pub fn render_into(
        &mut self,
        links: &Links,
        faults: &HashMap<FaultType, u64>,
        now: Timestamp,
        out: &mut crate::observe::series::Exposition,
    ) {
        self.metrics.render_into(links, faults, now, out);
    }
}
