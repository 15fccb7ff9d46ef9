//! `proxy`: the driver. The only code that touches sockets and clocks: for each route it accepts replica
//! connections, dials the master, forwards bytes both ways through bounded buffers and feeds the link
//! model; for the process it serves one HTTP API over every route and applies reloads. Everything it
//! knows about the protocol comes from `wire` and `link`.

pub mod conn;
pub mod http;
pub mod http_serve;
pub mod introspect;
pub mod memory;
pub mod planes;
pub mod pool;
pub mod route;
pub mod shared;
pub mod table;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use planes::Forwarding;
use pool::BufferPool;
pub use route::Route;
pub use shared::Shared;
pub use table::RouteTable;

/// How long, at shutdown, open links get to close before the proxy exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One route: a master and where its replicas connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// The route's name (the `route` label).
    pub name: String,
    /// The master, `host:port`; resolved for each new connection.
    pub master: String,
    /// Where replicas connect.
    pub listen: String,
    /// Bytes buffered per direction per link.
    pub buffer: usize,
    /// Most connections open at once on this route; more are refused.
    pub max_links: usize,
    /// The master's settings as the operator states them (`--assume-*`).
    pub settings: crate::link::settings::ServerSettings,
    /// How long a replica with no open link keeps its record and series (`None`: for ever).
    pub forget_after: Option<Duration>,
    /// Whether and how replscope asks the master about itself (`None`: it does not).
    pub introspect: Option<crate::introspect::Introspection>,
}

/// What a proxy needs to run. Its `Debug` leaves the admin token out.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Where `/metrics` and `/api` are served, for every route.
    pub http: String,
    /// Whether `/api/faults` may be used.
    pub enable_faults: bool,
    /// The bearer token changes to faults need when `--http` is not on loopback.
    pub admin_token: Option<String>,
    /// Faults installed at start (a `route` in one confines it to that route).
    pub faults: Vec<crate::fault::FaultSpec>,
    /// The routes, at least one, with distinct names.
    pub routes: Vec<RouteConfig>,
    /// Bytes of large forwarding buffers lent out at once, process-wide (`--buffer-pool`).
    pub buffer_pool: usize,
    /// How long and how many HTTP clients are served.
    pub http_limits: http_serve::HttpLimits,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("http", &self.http)
            .field("enable_faults", &self.enable_faults)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("faults", &self.faults)
            .field("routes", &self.routes)
            .field("buffer_pool", &self.buffer_pool)
            .field("http_limits", &self.http_limits)
            .finish()
    }
}

/// Why a proxy could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listening address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Which listener.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// Faults would be open to the network without a token.
    #[error(
        "refusing --enable-faults with --http on {addr}, which is not loopback, without --admin-token (or REPLSCOPE_ADMIN_TOKEN)"
    )]
    FaultsUnprotected {
        /// The HTTP address.
        addr: SocketAddr,
    },
    /// Faults given at start without fault injection allowed: they would act on every link while the
    /// API, which answers 403 when faults are off, denied they exist.
    #[error("--fault needs --enable-faults (or REPLSCOPE_ENABLE_FAULTS=true, or enable-faults = true in the file)")]
    FaultsNotEnabled,
    /// An admin token that is empty or only blanks: anyone would pass it.
    #[error("--admin-token (REPLSCOPE_ADMIN_TOKEN) is blank: give a token, or leave it unset")]
    BlankToken,
    /// A route that would refuse every connection.
    #[error("route {route:?}: max-links is 0, which refuses every connection: give 1 or more")]
    NoLinks {
        /// The route.
        route: String,
    },
    /// The routes cannot run together.
    #[error("{0}")]
    Routes(String),
    /// The HTTP server failed.
    #[error("HTTP server on {addr}: {source}")]
    Http {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Refuses a configuration that would quietly do harm: faults acting while fault injection is off, a
/// token anyone passes, a route that accepts nothing.
fn safe_to_start(config: &ProxyConfig) -> Result<(), ProxyError> {
    if !config.faults.is_empty() && !config.enable_faults {
        return Err(ProxyError::FaultsNotEnabled);
    }
    if config.admin_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(ProxyError::BlankToken);
    }
    if let Some(r) = config.routes.iter().find(|r| r.max_links == 0) {
        return Err(ProxyError::NoLinks { route: r.name.clone() });
    }
    Ok(())
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Routes started.
    pub added: Vec<String>,
    /// Routes that stopped accepting; their open links finish.
    pub removed: Vec<String>,
    /// Routes whose settings changed (new links get them).
    pub changed: Vec<String>,
    /// Routes as they were.
    pub unchanged: Vec<String>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(",") };
        write!(
            f,
            "added {}; removed {}; changed {}; unchanged {}",
            list(&self.added),
            list(&self.removed),
            list(&self.changed),
            list(&self.unchanged)
        )
    }
}

type ReloadReply = oneshot::Sender<Result<ReloadReport, ProxyError>>;

/// Asks a running proxy to take a new set of routes.
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::Sender<(Vec<RouteConfig>, ReloadReply)>,
    table: Arc<RouteTable>,
}

impl Reloader {
    /// Replaces the routes: new ones start, removed ones stop accepting and let their open links finish,
    /// changed ones apply to new links. Nothing changes unless every new listener could be bound.
    pub async fn reload(&self, routes: Vec<RouteConfig>) -> Result<ReloadReport, ProxyError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ProxyError::Routes("the proxy is stopping".into());
        self.tx.send((routes, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// A reload that failed before it reached the proxy (a bad file): counted, nothing changes.
    pub fn failed(&self) {
        self.table.reloaded(false);
    }
}

/// A route the driver runs.
struct Slot {
    route: Arc<Route>,
    /// The route's configuration; accept loops read it for each new link.
    config: watch::Sender<Arc<RouteConfig>>,
    /// Where it accepts now (`None`: draining), and the token that stops that accept loop.
    accepting: Option<(String, CancellationToken)>,
    /// A listener bound but not yet accepting (before `run`).
    pending: Option<TcpListener>,
    /// Accept loops still running (one, or two just after its address changed), by number.
    loops: HashSet<u64>,
    /// Stops the route's introspection, when it runs.
    introspection: Option<CancellationToken>,
}

impl Slot {
    /// Starts (or restarts, after a change) asking the master about itself, if the route says to.
    fn introspect(&mut self, stop: &CancellationToken) {
        if let Some(old) = self.introspection.take() {
            old.cancel();
        }
        let config = self.config.borrow().clone();
        let Some(how) = config.introspect.clone() else { return };
        let token = stop.child_token();
        self.introspection = Some(token.clone());
        tokio::spawn(introspect::run(Arc::clone(&self.route), config.master.clone(), how, token));
    }
}

/// A bound proxy, ready to run.
pub struct Proxy {
    config: ProxyConfig,
    http: Option<TcpListener>,
    table: Arc<RouteTable>,
    slots: Vec<Slot>,
    reloads: mpsc::Receiver<(Vec<RouteConfig>, ReloadReply)>,
    reloader: Reloader,
    /// Cancelled when the proxy stops: every accept loop and every link end.
    stop: CancellationToken,
    /// The number of the last accept loop started.
    last_loop: u64,
    /// Every link's forwarding buffers, and the data plane links move to.
    forwarding: Arc<Forwarding>,
}

async fn bind_route(r: &RouteConfig) -> Result<(TcpListener, String), ProxyError> {
    let bind_error =
        |source| ProxyError::Bind { addr: r.listen.clone(), what: format!("listen, route {}", r.name), source };
    let listener = TcpListener::bind(&r.listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr.to_string()))
}

fn distinct_names(routes: &[RouteConfig]) -> Result<(), ProxyError> {
    if routes.is_empty() {
        return Err(ProxyError::Routes("no route to serve".into()));
    }
    let mut seen = HashSet::new();
    match routes.iter().find(|r| !seen.insert(r.name.as_str())) {
        Some(r) => Err(ProxyError::Routes(format!("two routes are named {:?}", r.name))),
        None => Ok(()),
    }
}

impl Proxy {
    /// Binds every route's listener and the HTTP listener.
    pub async fn bind(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        distinct_names(&config.routes)?;
        safe_to_start(&config)?;
        let http = TcpListener::bind(&config.http).await.map_err(|source| ProxyError::Bind {
            addr: config.http.clone(),
            what: "--http".into(),
            source,
        })?;
        let http_addr = http.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.http.clone(),
            what: "--http".into(),
            source,
        })?;
        if config.enable_faults && !http_addr.ip().is_loopback() && config.admin_token.is_none() {
            return Err(ProxyError::FaultsUnprotected { addr: http_addr });
        }
        if let Some(route) = config
            .faults
            .iter()
            .filter_map(|f| f.route.as_deref())
            .find(|r| !config.routes.iter().any(|c| c.name == *r))
        {
            let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
            return Err(ProxyError::Routes(format!("a fault names route {route:?}, which is not one of {names:?}")));
        }
        let shared = Arc::new(Shared::new());
        let table = Arc::new(RouteTable::new(Arc::clone(&shared)));
        let stop = CancellationToken::new();
        let mut slots = Vec::new();
        for r in &config.routes {
            let (listener, addr) = bind_route(r).await?;
            let route = Arc::new(Route::new(&r.name, r.settings, Arc::clone(&shared)));
            route.set_forget_after(r.forget_after);
            slots.push(Slot {
                route,
                config: watch::Sender::new(Arc::new(r.clone())),
                accepting: Some((addr, stop.child_token())),
                pending: Some(listener),
                loops: HashSet::new(),
                introspection: None,
            });
        }
        for spec in &config.faults {
            shared.add_fault(spec.clone(), Vec::new());
        }
        let (tx, reloads) = mpsc::channel(4);
        let reloader = Reloader { tx, table: Arc::clone(&table) };
        let forwarding = Arc::new(Forwarding::new(BufferPool::new(config.buffer_pool), None));
        let proxy = Proxy { config, http: Some(http), table, slots, reloads, reloader, stop, last_loop: 0, forwarding };
        proxy.publish();
        Ok(proxy)
    }

    /// Forwards transfers on `data` (a multi-thread runtime): each link starts on the runtime that runs
    /// the proxy and moves to `data` once it carries a transfer, so accepting, the HTTP API and new
    /// links' handshakes never wait behind busy links. Without it every link stays on the proxy's runtime.
    pub fn with_data_plane(mut self, data: tokio::runtime::Handle) -> Proxy {
        self.forwarding = Arc::new(Forwarding::new(BufferPool::new(self.config.buffer_pool), Some(data)));
        self
    }

    /// Where the first route's replicas connect.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.slots.first()?.accepting.as_ref()?.0.parse().ok()
    }

    /// Where the HTTP API is.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref()?.local_addr().ok()
    }

    /// The routes (links, metrics), as the API reads them.
    pub fn table(&self) -> Arc<RouteTable> {
        Arc::clone(&self.table)
    }

    /// A handle to reload the running proxy.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Tells the table what runs now: the routes in order, draining ones last.
    fn publish(&self) {
        let entry = |s: &Slot| table::Entry {
            route: Arc::clone(&s.route),
            master: s.config.borrow().master.clone(),
            listen: s.accepting.as_ref().map(|(a, _)| a.clone()),
        };
        let active = self.slots.iter().filter(|s| s.accepting.is_some());
        let draining = self.slots.iter().filter(|s| s.accepting.is_none());
        self.table.set(active.chain(draining).map(entry).collect());
    }

    /// Runs until `shutdown` completes: then stops accepting, closes every link, and returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
        let stop = self.stop.clone();
        let Some(http) = self.http.take() else { return Ok(()) };
        let http_addr = http
            .local_addr()
            .map_err(|source| ProxyError::Http { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })?;
        // Off loopback, changes need the token; on loopback they need none.
        let token = if http_addr.ip().is_loopback() { None } else { self.config.admin_token.clone() };
        let app =
            http::router(Arc::clone(&self.table), http::FaultAccess { enabled: self.config.enable_faults, token });
        let http_task = tokio::spawn(http_serve::serve(
            http,
            app,
            self.config.http_limits,
            self.table.http_counters(),
            stop.clone(),
        ));
        let mut loops: JoinSet<(String, u64)> = JoinSet::new();
        for slot in &mut self.slots {
            let Some(listener) = slot.pending.take() else { continue };
            let master = slot.config.borrow().master.clone();
            warn_unresolved(&slot.route, &master).await;
            start_loop(&mut loops, &mut self.last_loop, slot, listener, &stop, &self.forwarding);
            slot.introspect(&stop);
        }
        let listens: Vec<String> =
            self.slots.iter().filter_map(|s| s.accepting.as_ref().map(|(a, _)| a.clone())).collect();
        tracing::info!(
            routes = %self.table.names().join(","),
            listen = %listens.join(","),
            http = %http_addr,
            "replscope proxy ready"
        );
        // Diagnoses settle with time (a replica that does not come back has left): look every second.
        // And memory freed since (buffers, closed links) goes back to the system.
        let ticker_table = Arc::clone(&self.table);
        let ticker_stop = stop.clone();
        let ticker_forwarding = Arc::clone(&self.forwarding);
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        ticker_table.tick();
                        ticker_forwarding.pool.idle();
                        if ticker_forwarding.pool.take_released() {
                            memory::trim();
                        }
                    }
                    _ = ticker_stop.cancelled() => return,
                }
            }
        });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((routes, reply)) = self.reloads.recv() => {
                    let result = self.apply(routes, &mut loops).await;
                    self.table.reloaded(result.is_ok());
                    let _ = reply.send(result);
                }
                Some(ended) = loops.join_next(), if !loops.is_empty() => {
                    if let Ok((name, n)) = ended {
                        self.loop_ended(&name, n);
                    }
                }
            }
        }
        stop.cancel();
        let _ = ticker.await;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while loops.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            loops.abort_all();
        }
        let _ = http_task.await;
        Ok(())
    }

    /// An accept loop ended (its route was removed or moved, and its links have finished).
    fn loop_ended(&mut self, name: &str, n: u64) {
        let Some(i) = self.slots.iter().position(|s| s.route.name() == name) else { return };
        self.slots[i].loops.remove(&n);
        if self.slots[i].accepting.is_none() && self.slots[i].loops.is_empty() {
            let slot = self.slots.remove(i);
            if let Some(t) = slot.introspection {
                t.cancel();
            }
            tracing::info!(route = name, "route drained: its last link has ended");
            self.publish();
        }
    }

    /// Takes a new set of routes: binds every new address first (and changes nothing if one fails),
    /// then starts, moves, changes and drains routes.
    async fn apply(
        &mut self,
        routes: Vec<RouteConfig>,
        loops: &mut JoinSet<(String, u64)>,
    ) -> Result<ReloadReport, ProxyError> {
        distinct_names(&routes)?;
        let order: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
        let mut bound: Vec<Option<(TcpListener, String)>> = Vec::new();
        for r in &routes {
            let slot = self.slots.iter().find(|s| s.route.name() == r.name);
            let same_listen = slot.is_some_and(|s| s.accepting.is_some() && s.config.borrow().listen == r.listen);
            bound.push(if same_listen { None } else { Some(bind_route(r).await?) });
        }
        let mut report = ReloadReport::default();
        let names: HashSet<String> = routes.iter().map(|r| r.name.clone()).collect();
        for slot in &mut self.slots {
            if !names.contains(slot.route.name())
                && let Some((addr, token)) = slot.accepting.take()
            {
                token.cancel();
                report.removed.push(slot.route.name().to_string());
                let open = slot.route.open_links();
                tracing::info!(route = slot.route.name(), listen = %addr, open_links = open, "route removed: no longer accepting; its open links finish");
            }
        }
        for (r, listener) in routes.into_iter().zip(bound) {
            let existing = self.slots.iter().position(|s| s.route.name() == r.name);
            let i = match existing {
                Some(i) => i,
                None => {
                    let shared = Arc::clone(self.table.shared());
                    let route = Arc::new(Route::new(&r.name, r.settings, shared));
                    route.set_forget_after(r.forget_after);
                    self.slots.push(Slot {
                        route,
                        config: watch::Sender::new(Arc::new(r.clone())),
                        accepting: None,
                        pending: None,
                        loops: HashSet::new(),
                        introspection: None,
                    });
                    report.added.push(r.name.clone());
                    self.slots.len() - 1
                }
            };
            let slot = &mut self.slots[i];
            if existing.is_some() {
                let was = slot.config.borrow().clone();
                if *was != r || slot.accepting.is_none() {
                    report.changed.push(r.name.clone());
                } else {
                    report.unchanged.push(r.name.clone());
                }
                slot.route.set_settings(r.settings);
                slot.route.set_forget_after(r.forget_after);
                slot.config.send_replace(Arc::new(r.clone()));
                if was.master != r.master || was.introspect != r.introspect || slot.introspection.is_none() {
                    slot.introspect(&self.stop);
                }
            } else {
                slot.introspect(&self.stop);
            }
            if let Some((listener, addr)) = listener {
                if let Some((_, old)) = slot.accepting.take() {
                    old.cancel();
                }
                slot.accepting = Some((addr, self.stop.child_token()));
                start_loop(loops, &mut self.last_loop, slot, listener, &self.stop, &self.forwarding);
            }
        }
        // The table in the file's order, draining routes last (as they were).
        self.slots.sort_by_key(|s| order.iter().position(|n| n == s.route.name()).unwrap_or(usize::MAX));
        self.publish();
        Ok(report)
    }
}

/// A master whose name does not resolve now is worth saying (it is resolved again for every link).
async fn warn_unresolved(route: &Route, master: &str) {
    if let Err(e) = tokio::net::lookup_host(master).await {
        tracing::warn!(route = route.name(), master, error = %e, "the master's address does not resolve (yet); replicas cannot be served until it does");
    }
}

/// Starts an accept loop on `listener` for `slot`, stopped by the token `slot.accepting` holds; its
/// links end early only when `stop` is cancelled.
fn start_loop(
    loops: &mut JoinSet<(String, u64)>,
    last_loop: &mut u64,
    slot: &mut Slot,
    listener: TcpListener,
    stop: &CancellationToken,
    forwarding: &Arc<Forwarding>,
) {
    let Some((addr, accepting)) = slot.accepting.clone() else { return };
    let forwarding = Arc::clone(forwarding);
    *last_loop += 1;
    let n = *last_loop;
    slot.loops.insert(n);
    let config = slot.config.subscribe();
    let route = Arc::clone(&slot.route);
    tracing::info!(route = route.name(), master = %config.borrow().master, listen = %addr, "route accepting");
    let stop = stop.clone();
    loops.spawn(async move {
        accept_loop(Arc::clone(&route), listener, config, accepting, stop, forwarding).await;
        (route.name().to_string(), n)
    });
}

/// Accepts replicas on one listener until `accepting` is cancelled, then lets the links it started
/// finish (they end early only when `stop` is cancelled: the process is stopping).
async fn accept_loop(
    route: Arc<Route>,
    listener: TcpListener,
    config: watch::Receiver<Arc<RouteConfig>>,
    accepting: CancellationToken,
    stop: CancellationToken,
    forwarding: Arc<Forwarding>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = accepting.cancelled() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: wait a little rather than spin.
                        tracing::warn!(route = route.name(), error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let r = Arc::clone(&config.borrow());
                if route.open_links() >= r.max_links {
                    tracing::warn!(route = route.name(), %peer, max_links = r.max_links, "refusing a connection: max-links reached");
                    drop(stream);
                    continue;
                }
                let id = route.open(peer);
                let master: Arc<str> = Arc::from(r.master.as_str());
                conns.spawn(conn::serve(
                    Arc::clone(&route),
                    master,
                    r.buffer,
                    Arc::clone(&forwarding),
                    stream,
                    id,
                    stop.child_token(),
                ));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}
