//! `proxy`: the driver. The only code that touches sockets and clocks: it accepts replica connections,
//! dials the master, forwards bytes both ways through bounded buffers, feeds the link model, and serves
//! the HTTP API. Everything it knows about the protocol comes from `wire` and `link`.

pub mod conn;
pub mod http;
pub mod route;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use route::Route;

/// How long, at shutdown, open links get to close before the proxy exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a proxy needs to run. Its `Debug` leaves the admin token out.
#[derive(Clone)]
pub struct ProxyConfig {
    /// The master, `host:port`; resolved for each new connection.
    pub master: String,
    /// Where replicas connect.
    pub listen: String,
    /// The route's name (a metrics label).
    pub name: String,
    /// Where `/metrics` and `/api` are served.
    pub http: String,
    /// Bytes buffered per direction per link.
    pub buffer: usize,
    /// Most connections open at once; more are refused.
    pub max_links: usize,
    /// Whether `/api/faults` may be used.
    pub enable_faults: bool,
    /// The bearer token changes to faults need when `--http` is not on loopback.
    pub admin_token: Option<String>,
    /// Faults installed at start.
    pub faults: Vec<crate::fault::FaultSpec>,
    /// The master's settings as the operator states them (`--assume-*`).
    pub settings: crate::link::settings::ServerSettings,
    /// How long a replica with no open link keeps its record and series (`None`: for ever).
    pub forget_after: Option<Duration>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("master", &self.master)
            .field("listen", &self.listen)
            .field("name", &self.name)
            .field("http", &self.http)
            .field("buffer", &self.buffer)
            .field("max_links", &self.max_links)
            .field("enable_faults", &self.enable_faults)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("faults", &self.faults)
            .field("settings", &self.settings)
            .field("forget_after", &self.forget_after)
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
        what: &'static str,
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
    /// The HTTP server failed.
    #[error("HTTP server on {addr}: {source}")]
    Http {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound proxy, ready to run.
pub struct Proxy {
    config: ProxyConfig,
    listener: TcpListener,
    http: TcpListener,
    route: Arc<Route>,
}

impl Proxy {
    /// Binds the replica listener and the HTTP listener.
    pub async fn bind(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        let listener = TcpListener::bind(&config.listen).await.map_err(|source| ProxyError::Bind {
            addr: config.listen.clone(),
            what: "--listen",
            source,
        })?;
        let http = TcpListener::bind(&config.http).await.map_err(|source| ProxyError::Bind {
            addr: config.http.clone(),
            what: "--http",
            source,
        })?;
        let http_addr = http.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.http.clone(),
            what: "--http",
            source,
        })?;
        if config.enable_faults && !http_addr.ip().is_loopback() && config.admin_token.is_none() {
            return Err(ProxyError::FaultsUnprotected { addr: http_addr });
        }
        let route = Arc::new(Route::with_settings(&config.name, config.settings));
        route.set_forget_after(config.forget_after);
        for spec in &config.faults {
            route.add_fault(spec.clone());
        }
        Ok(Proxy { config, listener, http, route })
    }

    /// Where replicas connect.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Where the HTTP API is.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }

    /// The route's state (links, metrics).
    pub fn route(&self) -> Arc<Route> {
        Arc::clone(&self.route)
    }

    /// Runs until `shutdown` completes: then stops accepting, closes every link, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
        let Proxy { config, listener, http, route } = self;
        let stop = CancellationToken::new();
        let http_addr = http
            .local_addr()
            .map_err(|source| ProxyError::Http { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })?;
        // Off loopback, changes need the token; on loopback they need none.
        let token = if http_addr.ip().is_loopback() { None } else { config.admin_token.clone() };
        let app = http::router(Arc::clone(&route), http::FaultAccess { enabled: config.enable_faults, token });
        let http_stop = stop.clone();
        let http_task = tokio::spawn(async move {
            axum::serve(http, app).with_graceful_shutdown(async move { http_stop.cancelled().await }).await
        });
        // The name is resolved again for every connection; one that does not resolve now is worth saying.
        if let Err(e) = tokio::net::lookup_host(config.master.as_str()).await {
            tracing::warn!(route = route.name(), master = %config.master, error = %e, "the master's address does not resolve (yet); replicas cannot be served until it does");
        }
        tracing::info!(
            route = route.name(),
            master = %config.master,
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            http = %http_addr,
            "replscope proxy ready"
        );
        let master: Arc<str> = Arc::from(config.master.as_str());
        let mut conns = JoinSet::new();
        // Diagnoses settle with time (a replica that does not come back has left): look every second.
        let ticker_route = Arc::clone(&route);
        let ticker_stop = stop.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = every.tick() => ticker_route.tick(),
                    _ = ticker_stop.cancelled() => return,
                }
            }
        });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: wait a little rather than spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    if route.open_links() >= config.max_links {
                        tracing::warn!(%peer, max_links = config.max_links, "refusing a connection: --max-links reached");
                        drop(stream);
                        continue;
                    }
                    let id = route.open(peer);
                    conns.spawn(conn::serve(Arc::clone(&route), Arc::clone(&master), config.buffer, stream, id, stop.child_token()));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        stop.cancel();
        let _ = ticker.await;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            conns.abort_all();
        }
        match http_task.await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(source)) => Err(ProxyError::Http { addr: http_addr, source }),
        }
    }
}
