//! Serves the HTTP API (the router of [`crate::proxy::http`]) with the limits a process that sits on a
//! replication link needs, so no HTTP client can hold it up:
//!
//! - a request's head must arrive within [`HttpLimits::header_read`] (also between two requests on a
//!   kept-alive connection), or the connection is closed: a client that sends half a request and waits
//!   holds a connection for that long, not for ever;
//! - at most [`HttpLimits::max_connections`] connections at once, well below the process's file
//!   descriptors: past it a new connection is closed at once (and counted), so replicas can still connect
//!   and the other HTTP clients still get answers;
//! - a connection lasts at most [`HttpLimits::lifetime`], then is asked to close (its request in flight
//!   finishes) and dropped [`HttpLimits::drain`] later: a client that trickles a body or never reads its
//!   answer holds its slot for that long, not for ever (Prometheus just opens a new connection);
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
    /// How long shutdown (or the end of a connection's lifetime) waits for a request in flight.
    pub drain: Duration,
    /// The longest a connection is kept.
    pub lifetime: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read: Duration::from_secs(10),
            max_connections: 128,
            drain: Duration::from_secs(3),
            lifetime: Duration::from_secs(120),
        }
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
                        _ = conn.as_mut() => return,
                        _ = stopping.cancelled() => {}
                        _ = tokio::time::sleep(limits.lifetime) => {}
                    }
                    // Shutdown or the end of its lifetime: the request in flight may finish, briefly.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.drain, conn).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const LIMITS: HttpLimits = HttpLimits {
        header_read: Duration::from_millis(500),
        max_connections: 2,
        drain: Duration::from_millis(300),
        lifetime: Duration::from_secs(2),
    };

    async fn start() -> (std::net::SocketAddr, Arc<HttpCounters>, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/echo", post(|body: axum::body::Bytes| async move { body }));
        let counters = Arc::new(HttpCounters::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, LIMITS, Arc::clone(&counters), stop.clone()));
        (addr, counters, stop, task)
    }

    /// Reads until the server closes; returns what came and how long it took.
    async fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
        let started = tokio::time::Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => panic!("still open after 10 s"),
            }
        }
    }

    #[tokio::test]
    async fn a_request_whose_head_never_ends_is_closed_after_the_header_timeout() {
        let (addr, ..) = start().await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("write");
        let (_, took) = until_closed(&mut s).await;
        assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "closed after {took:?}");
        // And a kept-alive connection that goes quiet after an answer, the same.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let (got, _) = until_closed(&mut s).await;
        assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    }

    #[tokio::test]
    async fn past_the_cap_a_connection_is_closed_at_once_and_counted() {
        let (addr, counters, ..) = start().await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\n").await.expect("write");
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let (got, took) = until_closed(&mut third).await;
        assert!(got.is_empty() && took < Duration::from_millis(400), "{got:?} after {took:?}");
        assert_eq!(counters.refused.load(Ordering::Relaxed), 1);
        // Once the held ones time out, there is room again.
        for s in &mut held {
            until_closed(s).await;
        }
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
        assert!(until_closed(&mut s).await.0.ends_with(b"ok\n"));
    }

    #[tokio::test]
    async fn a_body_that_trickles_holds_its_connection_for_the_lifetime_at_most() {
        let (addr, ..) = start().await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc").await.expect("write");
        let (_, took) = until_closed(&mut s).await;
        assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(6), "closed after {took:?}");
    }

    #[tokio::test]
    async fn shutdown_waits_for_no_client_longer_than_the_drain() {
        let (addr, _, stop, task) = start().await;
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let asked = tokio::time::Instant::now();
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("served out").expect("no panic");
        assert!(asked.elapsed() < Duration::from_secs(2), "shutdown took {:?}", asked.elapsed());
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }
}
