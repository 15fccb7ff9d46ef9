//! The introspection driver of one route: its own client connection to the master (never a replica's),
//! which asks the questions of [`crate::introspect::Poll`] at the pace the links need
//! ([`Route::introspection_pace`]) and hands the answers to the route. It only moves bytes: what to ask
//! and what the answers mean is `introspect`'s.
//!
//! Failures are counted (`replscope_introspection_errors_total`) and logged once each until the next
//! success; the connection is retried with a growing pause. A master that forbids `CONFIG GET` is
//! still asked the rest, and links are judged against the `--assume-*` settings or the defaults.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::introspect::{Failure, Introspection, Pace, Poll, Problem, Question};
use crate::proxy::conn::{dial, tune};
use crate::proxy::route::Route;
use crate::wire::resp::{FrameReader, Limits, Value};

/// How long dialling, and each round of answers, may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest pause between two attempts to connect.
const RETRY_AT_MOST: Duration = Duration::from_secs(10);

/// How long a master that forbade `CONFIG GET` is not asked it again (an operator may grant it).
const CONFIG_RETRY: Duration = Duration::from_secs(60);

/// The most a round of answers may hold (CLIENT LIST of thousands of replicas is well below it).
const ANSWER_AT_MOST: usize = 16 << 20;

/// Why a session with the master ended.
struct Ended {
    failure: Failure,
    detail: String,
}

impl Ended {
    fn io(detail: impl std::fmt::Display) -> Self {
        Ended { failure: Failure::Io, detail: detail.to_string() }
    }
}

/// Asks `master` about itself for `route` until `stop` is cancelled.
pub async fn run(route: Arc<Route>, master: String, how: Introspection, stop: CancellationToken) {
    let mut said = Said::default();
    let mut pause = Duration::from_secs(1);
    loop {
        let ended = tokio::select! {
            e = session(&route, &master, &how, &mut said) => e,
            _ = stop.cancelled() => return,
        };
        route.introspection_failed(ended.failure);
        let key = (None, ended.failure);
        if said.problems.insert(key) {
            tracing::warn!(
                route = route.name(),
                master = %master,
                reason = ended.failure.as_str(),
                "introspection: cannot ask the master about itself ({}); links are judged against --assume-* or the defaults until it answers; retrying",
                ended.detail
            );
        }
        if said.connected {
            pause = Duration::from_secs(1);
            said.connected = false;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
        pause = (pause * 2).min(RETRY_AT_MOST);
    }
}

/// What has been logged, so each problem is said once until things change.
#[derive(Default)]
struct Said {
    /// Problems logged: (question, failure); `None` for the connection's own.
    problems: HashSet<(Option<Question>, Failure)>,
    /// Whether a session got as far as an answer.
    connected: bool,
    /// Whether the master's version and settings were logged.
    greeted: bool,
}

async fn session(route: &Route, master: &str, how: &Introspection, said: &mut Said) -> Ended {
    let mut stream = match tokio::time::timeout(ANSWER_TIMEOUT, dial(master)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Ended { failure: Failure::Connect, detail: format!("connecting to {master}: {e}") },
        Err(_) => return Ended { failure: Failure::Connect, detail: format!("no connection to {master} within 5 s") },
    };
    tune(&stream);
    let mut conn = Conn { buf: Vec::with_capacity(64 << 10), reader: FrameReader::new(ANSWER_LIMITS) };
    if let Some(auth) = how.auth_request() {
        let reply = match conn.ask(&mut stream, &auth, 1).await {
            Ok(mut r) => r.pop(),
            Err(e) => return e,
        };
        if let Some(Value::Error(e)) = reply {
            // The master's words name the user at most, never the password.
            return Ended { failure: Failure::Auth, detail: format!("the master refused AUTH {}: {e}", how.who()) };
        }
    }
    // So an operator reading CLIENT LIST sees who this is; a user not allowed to is no problem.
    if let Err(e) = conn.ask(&mut stream, &crate::wire::encode_command(&["CLIENT", "SETNAME", "replscope"]), 1).await {
        return e;
    }
    let mut config = true;
    let mut forbidden_at: Option<Instant> = None;
    let mut poll = Poll { server: true, ..Poll::full(config) };
    let mut last_full = Instant::now();
    loop {
        let asked_at = Instant::now();
        if poll.replication {
            last_full = asked_at;
        }
        let replies = match conn.ask(&mut stream, &poll.request(), poll.replies()).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        let (report, problems) = poll.answer(&replies, route.now());
        route.on_master_report(&report);
        said.connected = true;
        for p in &problems {
            route.introspection_failed(p.failure);
            if p.question == Question::Config && p.failure == Failure::Forbidden {
                config = false;
                forbidden_at = Some(Instant::now());
            }
            if said.problems.insert((Some(p.question), p.failure)) {
                warn_problem(route, how, p);
            }
        }
        if problems.is_empty() {
            said.problems.retain(|(q, _)| q.is_some_and(|q| !poll.asks(q)));
        }
        if !said.greeted && report.version.is_some() {
            said.greeted = true;
            let version = report.version.as_ref().map_or_else(String::new, |v| v.describe());
            let limit = route.settings_in_force();
            tracing::info!(
                route = route.name(),
                master = %master,
                "introspection: asking the master ({version}) {} every {} s while a full sync or a lag runs; {limit}",
                how.who(),
                crate::introspect::BUSY.as_secs()
            );
        }
        // The next round when the pace the links need says so (looked at every tick, so a full sync that
        // starts during an idle wait is asked about within a tick): a quick look at the buffers while
        // one nears its limit, the full round at least every second then.
        loop {
            tokio::time::sleep(crate::introspect::CLOSE).await;
            let pace = route.introspection_pace();
            if asked_at.elapsed() >= pace.interval() {
                config |= forbidden_at.is_some_and(|t| t.elapsed() >= CONFIG_RETRY);
                let full = pace != Pace::Close || last_full.elapsed() >= crate::introspect::BUSY;
                poll = if full { Poll::full(config) } else { Poll::clients_only() };
                break;
            }
        }
    }
}

fn warn_problem(route: &Route, how: &Introspection, p: &Problem) {
    let fallback = match p.question {
        Question::Config => {
            "the master's settings are not read: links are judged against --assume-* or the defaults (grant +config|get)"
        }
        Question::ClientList => "the replicas' output buffers are not read (grant +client|list)",
        Question::InfoReplication | Question::InfoServer => "the master's replication state is not read (grant +info)",
    };
    tracing::warn!(
        route = route.name(),
        reason = p.failure.as_str(),
        "introspection: {} asked {} failed ({}): {fallback}",
        p.question.command(),
        how.who(),
        p.detail
    );
}

/// How deep an answer may nest: `CONFIG GET` is an array of bulk strings, `INFO` and `CLIENT LIST` one
/// bulk string; one more level is allowed for a server that wraps them. A master that answers deeper is
/// wrong (or hostile), and gets the answer refused instead of a recursion as deep as it likes.
pub const ANSWER_LIMITS: Limits = Limits { max_depth: 2, max_elements: 64 * 1024 };

/// The client side of the connection: one buffer for the answers.
struct Conn {
    buf: Vec<u8>,
    /// The answer at the front of `buf`, checked as far as it has arrived.
    reader: FrameReader,
}

impl Conn {
    /// Writes `request` and reads `n` replies, within [`ANSWER_TIMEOUT`].
    async fn ask(&mut self, stream: &mut TcpStream, request: &[u8], n: usize) -> Result<Vec<Value>, Ended> {
        match tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(stream, request, n)).await {
            Ok(r) => r,
            Err(_) => Err(Ended::io("no answer within 5 s")),
        }
    }

    async fn exchange(&mut self, stream: &mut TcpStream, request: &[u8], n: usize) -> Result<Vec<Value>, Ended> {
        stream.write_all(request).await.map_err(Ended::io)?;
        let mut replies = Vec::with_capacity(n);
        while replies.len() < n {
            // Check, then parse: a reply is taken only once it is whole.
            match self.reader.next(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    replies.push(frame);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Ended { failure: Failure::Reply, detail: format!("an answer that is not RESP: {e}") });
                }
            }
            if self.buf.len() > ANSWER_AT_MOST {
                return Err(Ended { failure: Failure::Reply, detail: "an answer larger than 16 MiB".into() });
            }
            let mut chunk = [0u8; 16 << 10];
            let got = stream.read(&mut chunk).await.map_err(Ended::io)?;
            if got == 0 {
                return Err(Ended::io("the master closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(replies)
    }
}
