//! Serves the HTTP API (the router of [`crate::proxy::http`]) with the limits a process that sits on a
//! replication link needs, so no HTTP client can hold it up:
//!
//! - a request's head must arrive within [`HttpLimits::header_read`] (also between two requests on a
//!   kept-alive connection), or the connection is closed: a client that sends half a request and waits
//!   holds a connection for that long, not for ever;
//! - at most [`HttpLimits::max_connections`] connections at once, well below the process's file
//!   descriptors: past it a new connection is closed at once (and counted), so replicas can still connect
//!   and the other HTTP clients still get answers;
//! - at shutdown, requests in flight get [`HttpLimits::drain`] to finish; then every connection is
//!   dropped, so a client that stays never delays the exit beyond it.
//!
//! Accept errors (out of file descriptors) pause accepting for a moment instead of ending the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long and how many: see the module's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// The most a request's head may take to arrive (and a kept-alive connection may sit idle).
    pub header_read: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub drain: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { header_read: Duration::from_secs(10), max_connections: 128, drain: Duration::from_secs(3) }
    }
}

/// Connections closed at once because [`HttpLimits::max_connections`] were open (for the metric).
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Refused connections.
    pub refused: AtomicU64,
}

/// Serves `app` on `listener` until `stop` is cancelled, then drains (see the module's header).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE/ENFILE and the like: the moment passes as connections close.
                        tracing::debug!(error = %e, "HTTP accept failed; pausing");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                let app = app.clone();
                let stopping = stop.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    let _ = stream.set_nodelay(true);
                    let mut builder = http1::Builder::new();
                    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read);
                    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stopping.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}
