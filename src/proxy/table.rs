//! The routes a process serves, as the HTTP API and the metrics see them: each route with its master,
//! the address it listens on, and whether it is active or draining (removed by a reload, its open
//! links finishing). The driver changes the table; readers take a copy of the list and never hold its
//! lock while they read a route.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::link::LinkId;
use crate::observe::metrics::ProcessMetrics;
use crate::observe::series::Exposition;
use crate::proxy::route::Route;
use crate::proxy::shared::Shared;

/// One route in the table.
#[derive(Clone)]
pub struct Entry {
    /// Its state.
    pub route: Arc<Route>,
    /// The master new links dial.
    pub master: String,
    /// Where it accepts replicas (the bound address), `None` while draining.
    pub listen: Option<String>,
}

/// The routes of a process, in the order of the configuration, draining ones last.
pub struct RouteTable {
    shared: Arc<Shared>,
    entries: Mutex<Vec<Entry>>,
    process: Mutex<ProcessMetrics>,
    /// What the HTTP server counts.
    http: Arc<crate::proxy::http_serve::HttpCounters>,
}

impl RouteTable {
    /// An empty table over `shared`; the configuration was loaded now.
    pub fn new(shared: Arc<Shared>) -> Self {
        let loaded_at = unix_now();
        RouteTable {
            shared,
            entries: Mutex::new(Vec::new()),
            process: Mutex::new(ProcessMetrics::new(loaded_at)),
            http: Arc::default(),
        }
    }

    /// What the routes share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the list (the driver, after a start or a reload).
    pub fn set(&self, entries: Vec<Entry>) {
        *self.lock() = entries;
    }

    /// The routes, in order.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.lock().iter().find(|e| e.route.name() == name).map(|e| Arc::clone(&e.route))
    }

    /// The routes' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.lock().iter().map(|e| e.route.name().to_string()).collect()
    }

    /// Records a reload's result.
    pub fn reloaded(&self, ok: bool) {
        self.process.lock().unwrap_or_else(|p| p.into_inner()).reloaded(ok, unix_now());
    }

    /// Settles what time settles, on every route (the driver calls this every second).
    pub fn tick(&self) {
        for e in self.entries() {
            e.route.tick();
        }
    }

    /// What the HTTP server counts, for it to count into.
    pub fn http_counters(&self) -> Arc<crate::proxy::http_serve::HttpCounters> {
        Arc::clone(&self.http)
    }

    /// Every route's metrics and the process's, in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let entries = self.entries();
        let mut exposition = Exposition::new();
        for e in &entries {
            e.route.render_into(&mut exposition);
        }
        let draining = entries.iter().filter(|e| e.listen.is_none()).count();
        let http_refused = self.http.refused.load(std::sync::atomic::Ordering::Relaxed);
        self.process.lock().unwrap_or_else(|p| p.into_inner()).render_into(
            entries.len() - draining,
            draining,
            http_refused,
            &mut exposition,
        );
        let mut text = String::new();
        exposition.render(&mut text);
        crate::observe::process::render(&mut text);
        text
    }

    /// Every route's links, by id.
    pub fn links_json(&self) -> serde_json::Value {
        let mut all: Vec<serde_json::Value> = Vec::new();
        for e in self.entries() {
            if let serde_json::Value::Array(links) = e.route.links_json() {
                all.extend(links);
            }
        }
        all.sort_by_key(|v| v["id"].as_u64());
        serde_json::Value::Array(all)
    }

    /// One link, whichever route it is on.
    pub fn link_json(&self, id: LinkId) -> Option<serde_json::Value> {
        self.entries().iter().find_map(|e| e.route.link_json(id))
    }

    /// Every route's replicas, by route then replica.
    pub fn replicas_json(&self) -> serde_json::Value {
        let mut all: Vec<serde_json::Value> = Vec::new();
        for e in self.entries() {
            if let serde_json::Value::Array(replicas) = e.route.replicas_json() {
                all.extend(replicas);
            }
        }
        serde_json::Value::Array(all)
    }

    /// The routes as `/api/routes` shows them.
    pub fn routes_json(&self) -> serde_json::Value {
        let routes: Vec<serde_json::Value> = self
            .entries()
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.route.name(),
                    "state": if e.listen.is_some() { "active" } else { "draining" },
                    "master": e.master,
                    "listen": e.listen,
                    "open_links": e.route.open_links(),
                })
            })
            .collect();
        serde_json::Value::Array(routes)
    }

    /// The ids of the links open now, on every route.
    pub fn open_ids(&self) -> Vec<LinkId> {
        self.entries().iter().flat_map(|e| e.route.open_ids()).collect()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
