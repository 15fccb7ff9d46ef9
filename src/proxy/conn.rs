//! One proxied connection: dial the master, then two pumps, one per direction. A pump waits for its
//! source without holding a buffer, borrows one from the [`BufferPool`] when bytes are waiting (a large
//! one, up to `--buffer`, while its last read brought at least 16 KiB), reads at most that buffer, lets the
//! link look at the bytes in place, and writes the same bytes out before it gives the buffer back and
//! reads again. So at most one buffer per direction is held, only while data flows, and a slow reader
//! slows the sender exactly as it would without the proxy. A connection starts on the control plane
//! and moves to the data plane once a direction carries a transfer ([`crate::proxy::planes`]), so new
//! links are accepted, dialled and answered while others transfer at full speed; after each [`TURN`]
//! bytes a pump lets the other tasks of its plane run. A FIN is passed on as a FIN (half-close), a
//! reset as a reset. Time spent waiting for a receiver that is not reading is measured.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fault::delay::{DelayLine, LATENCY_WINDOW};
use crate::link::{CloseHow, ClosedBy, LinkId, Reader, Side, TransportEvent};
use crate::proxy::planes::{self, Forwarding};
use crate::proxy::pool::SMALL;
use crate::proxy::route::Route;
use crate::wire::Direction;

/// How long dialling the master may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes a pump moves before it lets other tasks run (at least one read, however large).
pub const TURN: usize = 64 * 1024;

/// TCP keepalive idle time on both sockets: a dead peer is noticed in minutes, not hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Sets TCP_NODELAY and keepalive; failures are harmless and ignored.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&keepalive);
}

/// Dials the master, resolving its name anew each time (masters move).
pub async fn dial(master: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(ErrorKind::NotFound, format!("{master} resolved to no address"));
    for addr in tokio::net::lookup_host(master).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Serves one accepted replica-side connection to its end: dials the master and forwards both ways,
/// here until a direction carries a transfer, then on the data plane (see [`crate::proxy::planes`]).
pub async fn serve(
    route: Arc<Route>,
    master: Arc<str>,
    buffer: usize,
    forwarding: Arc<Forwarding>,
    replica: TcpStream,
    id: LinkId,
    shutdown: CancellationToken,
) {
    tune(&replica);
    let dialled = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, dial(&master)) => r,
        _ = shutdown.cancelled() => {
            route.on_transport(id, TransportEvent::Closed { by: ClosedBy::Proxy, how: CloseHow::Fin });
            route.finish(id);
            return;
        }
    };
    let master_stream = match dialled {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            route.connect_failed(id, &e);
            route.finish(id);
            return;
        }
        Err(_) => {
            let e = std::io::Error::new(
                ErrorKind::TimedOut,
                format!("no connection to {master} within {CONNECT_TIMEOUT:?}"),
            );
            route.connect_failed(id, &e);
            route.finish(id);
            return;
        }
    };
    tune(&master_stream);
    if let Ok(local) = master_stream.local_addr() {
        // How the master names this connection (CLIENT LIST's addr), for introspection to match.
        route.on_transport(id, TransportEvent::Dialled { local });
    }
    let conn = Conn {
        route,
        id,
        buffer,
        forwarding,
        ends: Ends {
            abort: shutdown.child_token(),
            reset: [AtomicBool::new(false), AtomicBool::new(false)],
            reader: Mutex::new(Reader::new()),
        },
    };
    let window = LATENCY_WINDOW.max(buffer);
    let (up, down) = halves(replica, master_stream, [DelayLine::new(window), DelayLine::new(window)]);
    let handover = conn.forwarding.data_plane().map(|_| CancellationToken::new());
    let (up, down) = tokio::join!(
        pump(&conn, up, Direction::ReplicaToMaster, handover.as_ref()),
        pump(&conn, down, Direction::MasterToReplica, handover.as_ref()),
    );
    let conn = match (up, down, conn.forwarding.data_plane().cloned()) {
        (Pumped::HandedOver(up), Pumped::HandedOver(down), Some(data)) => hand_over(conn, up, down, &data).await,
        (up, down, _) => {
            // One direction ended as the other handed over: the rest stays here.
            tokio::join!(
                resume(&conn, up, Direction::ReplicaToMaster),
                resume(&conn, down, Direction::MasterToReplica)
            );
            Some(conn)
        }
    };
    if let Some(conn) = conn {
        if shutdown.is_cancelled() {
            conn.route.on_transport(conn.id, TransportEvent::Closed { by: ClosedBy::Proxy, how: CloseHow::Fin });
        }
        conn.route.finish(conn.id);
        conn.forwarding.pool.note_freed();
    }
}

/// A connection's two sockets as the two directions' halves (replica → master, master → replica), each
/// with its delay line.
fn halves(replica: TcpStream, master: TcpStream, [up, down]: [DelayLine; 2]) -> (Halves, Halves) {
    let (replica_rd, replica_wr) = replica.into_split();
    let (master_rd, master_wr) = master.into_split();
    (Halves { from: replica_rd, to: master_wr, line: up }, Halves { from: master_rd, to: replica_wr, line: down })
}

/// A connection that could not be moved to the data plane is closed, and says why.
fn not_moved(conn: &Conn, e: &std::io::Error) {
    tracing::warn!(route = conn.route.name(), link = conn.id.0, error = %e, "could not move a link to the data plane; it is closed");
    conn.route.on_transport(conn.id, TransportEvent::Closed { by: ClosedBy::Proxy, how: CloseHow::Error(e.kind()) });
}

/// Moves the connection to the data plane and forwards there to its end. `None` if the data plane's
/// task did not come back (the process is stopping); the connection is then over.
async fn hand_over(conn: Conn, up: Halves, down: Halves, data: &Handle) -> Option<Conn> {
    let detached =
        planes::detach(up.from, down.to).and_then(|replica| Ok((replica, planes::detach(down.from, up.to)?)));
    let (replica, master) = match detached {
        Ok(sockets) => sockets,
        Err(e) => {
            not_moved(&conn, &e);
            return Some(conn);
        }
    };
    let lines = [up.line, down.line];
    let task = data.spawn(async move {
        let attached = planes::attach(replica).and_then(|r| Ok((r, planes::attach(master)?)));
        let (replica, master) = match attached {
            Ok(sockets) => sockets,
            Err(e) => {
                not_moved(&conn, &e);
                return conn;
            }
        };
        let (up, down) = halves(replica, master, lines);
        tokio::join!(
            pump(&conn, up, Direction::ReplicaToMaster, None),
            pump(&conn, down, Direction::MasterToReplica, None),
        );
        conn
    });
    task.await.ok()
}

/// Goes on forwarding a direction that handed over (on this plane, for good); nothing for one that ended.
async fn resume(conn: &Conn, pumped: Pumped, direction: Direction) {
    if let Pumped::HandedOver(halves) = pumped {
        pump(conn, halves, direction, None).await;
    }
}

fn sides(direction: Direction) -> (Side, Side) {
    match direction {
        Direction::MasterToReplica => (Side::Master, Side::Replica),
        Direction::ReplicaToMaster => (Side::Replica, Side::Master),
    }
}

/// One connection as its pumps see it.
struct Conn {
    route: Arc<Route>,
    id: LinkId,
    buffer: usize,
    forwarding: Arc<Forwarding>,
    ends: Ends,
}

/// One direction's sockets, and its chunks still in flight under a latency fault.
struct Halves {
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    line: DelayLine,
}

/// How a pump stopped.
enum Pumped {
    /// Its direction is over (the source ended, a side failed, or the connection was cut or stopped).
    Ended,
    /// The connection moves to the data plane, between two reads.
    HandedOver(Halves),
}

/// What the two pumps of a connection share: a way to stop both, and which sides must be closed with a
/// reset (a reset from one side is passed on as a reset to the other).
struct Ends {
    abort: CancellationToken,
    /// Indexed by [`Side::index`].
    reset: [AtomicBool; 2],
    /// The connection's reader, shared by its two pumps (each holds it only while it decodes a read).
    reader: Mutex<Reader>,
}

impl Ends {
    fn pass_reset_to(&self, side: Side) {
        self.reset[side.index()].store(true, Ordering::SeqCst);
        self.abort.cancel();
    }

    fn must_reset(&self, side: Side) -> bool {
        self.reset[side.index()].load(Ordering::SeqCst)
    }
}

/// Reads under faults are at most this large: a paced or delayed chunk is decoded (and counted as
/// transferred) when it is read, so a large one would run the link's progress ahead of the wire.
const FAULT_READ: usize = 256 * 1024;

/// How much a pump asks the pool for: a large buffer while its source is busy (at most [`FAULT_READ`]
/// under faults), else a small one.
fn read_size(busy: bool, faults: bool, buffer: usize) -> usize {
    match (busy, faults) {
        (false, _) => buffer.min(SMALL),
        (true, false) => buffer,
        (true, true) => buffer.min(FAULT_READ),
    }
}

/// How often a pump looks at the faults while its source is idle (so time triggers act on quiet links).
const FAULT_TICK: Duration = Duration::from_millis(100);

/// Completes when the connection is to move to the data plane; never without a `handover` token.
async fn handed_over(handover: Option<&CancellationToken>) {
    match handover {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Moves bytes one way until the source ends, a side fails, the connection is aborted, or a fault
/// cuts it; or, given a `handover` token, until this direction carries a transfer (it then cancels the
/// token) or the other one does (the token is cancelled). Under a latency fault the chunks wait in a
/// bounded [`DelayLine`] while reading goes on.
async fn pump(conn: &Conn, halves: Halves, direction: Direction, handover: Option<&CancellationToken>) -> Pumped {
    let Conn { route, id, buffer, forwarding, ends } = conn;
    let (route, id, buffer, pool) = (&**route, *id, *buffer, &forwarding.pool);
    let Halves { from, mut to, mut line } = halves;
    let (source, sink) = sides(direction);
    let abort = &ends.abort;
    // Whether the last read brought more than a small buffer holds (or filled one): the source is busy,
    // so the next read asks for a large buffer.
    let mut busy = false;
    let mut turn = 0usize;
    let mut moved = 0u64;
    loop {
        if turn >= TURN {
            turn = 0;
            tokio::task::yield_now().await;
        }
        let ticking = route.faults_present();
        let due_in = line.next_due().map(|due| due.since(route.now()));
        let mut lease = None;
        let read = tokio::select! {
            r = from.readable(), if line.has_room() => match r {
                Ok(()) => {
                    let buf = lease.insert(pool.lend(read_size(busy, ticking, buffer)));
                    match from.try_read(buf.room()) {
                        Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                        r => Some(r),
                    }
                }
                Err(e) => Some(Err(e)),
            },
            _ = tokio::time::sleep(due_in.unwrap_or_default()), if due_in.is_some() => {
                if send_due(route, id, &mut to, sink, &mut line, ends).await.is_ok() {
                    continue;
                }
                if ends.must_reset(sink) {
                    reset(to);
                }
                return Pumped::Ended;
            }
            _ = tokio::time::sleep(FAULT_TICK), if ticking => None,
            _ = handed_over(handover) => return Pumped::HandedOver(Halves { from, to, line }),
            _ = abort.cancelled() => {
                if ends.must_reset(sink) {
                    reset(to);
                }
                return Pumped::Ended;
            }
        };
        let n = match read {
            // An idle tick: faults triggered by time may stall or cut this link.
            None => {
                let plan = route.plan(id, direction, 0);
                let done = if plan.stall.is_some() || plan.cut.is_some() {
                    drain(route, id, &mut to, sink, &mut line, ends).await
                } else {
                    Ok(())
                };
                if done.is_ok() && carry_out(route, id, &mut to, direction, &[], plan, ends).await.is_ok() {
                    continue;
                }
                if ends.must_reset(sink) {
                    reset(to);
                }
                return Pumped::Ended;
            }
            Some(Ok(0)) => {
                route.on_transport(id, TransportEvent::Closed { by: source.into(), how: CloseHow::Fin });
                // What is still in flight arrives before the FIN, as it would on the wire.
                if drain(route, id, &mut to, sink, &mut line, ends).await.is_ok() {
                    let _ = to.shutdown().await;
                }
                return Pumped::Ended;
            }
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == ErrorKind::Interrupted => continue,
            Some(Err(e)) => {
                let how =
                    if e.kind() == ErrorKind::ConnectionReset { CloseHow::Reset } else { CloseHow::Error(e.kind()) };
                route.on_transport(id, TransportEvent::Closed { by: source.into(), how });
                ends.pass_reset_to(sink);
                reset(to);
                return Pumped::Ended;
            }
        };
        let Some(lease) = lease else { continue };
        busy = n >= SMALL || n == lease.len();
        turn += n;
        moved += n as u64;
        let data = &lease.as_slice()[..n];
        {
            let mut reader = ends.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            route.on_bytes(id, direction, data, &mut reader);
        }
        let result = if route.faults_present() || !line.is_empty() {
            let plan = route.plan(id, direction, n);
            delay_or_carry_out(route, id, &mut to, direction, data, plan, &mut line, ends).await
        } else {
            forward(route, id, &mut to, sink, data, ends).await
        };
        drop(lease);
        if result.is_err() {
            if ends.must_reset(sink) {
                reset(to);
            }
            return Pumped::Ended;
        }
        if let Some(token) = handover
            && planes::carries_a_transfer(n, moved)
        {
            token.cancel();
            return Pumped::HandedOver(Halves { from, to, line });
        }
    }
}

/// A chunk under faults: into the delay line while a latency fault holds it (or chunks before it are
/// still in flight), paced first by any bandwidth fault; otherwise, once what is in flight has gone,
/// carried out as its plan says (a stall or a cut acts after the bytes before it).
#[allow(clippy::too_many_arguments)]
async fn delay_or_carry_out(
    route: &Route,
    id: LinkId,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    data: &[u8],
    plan: crate::fault::Plan,
    line: &mut DelayLine,
    ends: &Ends,
) -> Result<(), ()> {
    let (_, sink) = sides(direction);
    let delayed = !plan.delay.is_zero() || !line.is_empty();
    if delayed && plan.stall.is_none() && plan.cut.is_none() {
        if plan.throttle {
            wait(route.throttle(id, direction, data.len()), ends).await?;
        }
        line.push(data, route.now().plus(plan.delay));
        return Ok(());
    }
    drain(route, id, to, sink, line, ends).await?;
    carry_out(route, id, to, direction, data, plan, ends).await
}

/// Waits `d` (nothing for zero); `Err` if the connection is aborted meanwhile.
async fn wait(d: Duration, ends: &Ends) -> Result<(), ()> {
    if d.is_zero() {
        return Ok(());
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = ends.abort.cancelled() => Err(()),
    }
}

/// Forwards the chunks of the delay line that are due.
async fn send_due(
    route: &Route,
    id: LinkId,
    to: &mut OwnedWriteHalf,
    sink: Side,
    line: &mut DelayLine,
    ends: &Ends,
) -> Result<(), ()> {
    while let Some(chunk) = line.pop_due(route.now()) {
        forward(route, id, to, sink, &chunk, ends).await?;
        line.recycle(chunk);
    }
    Ok(())
}

/// Forwards everything in the delay line, each chunk when it is due.
async fn drain(
    route: &Route,
    id: LinkId,
    to: &mut OwnedWriteHalf,
    sink: Side,
    line: &mut DelayLine,
    ends: &Ends,
) -> Result<(), ()> {
    while let Some(due) = line.next_due() {
        wait(due.since(route.now()), ends).await?;
        send_due(route, id, to, sink, line, ends).await?;
    }
    Ok(())
}

/// Writes `data` toward `sink`, recording blocked time; `Err` when the link is over.
async fn forward(
    route: &Route,
    id: LinkId,
    to: &mut OwnedWriteHalf,
    sink: Side,
    data: &[u8],
    ends: &Ends,
) -> Result<(), ()> {
    match write_all(to, data, &ends.abort).await {
        Ok(blocked) => {
            if !blocked.is_zero() {
                route.on_transport(id, TransportEvent::WriteBlocked { side: sink, duration: blocked });
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => Err(()),
        Err(e) => {
            let how = match e.kind() {
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => CloseHow::Reset,
                kind => CloseHow::Error(kind),
            };
            route.on_transport(id, TransportEvent::Closed { by: sink.into(), how });
            // The sink is gone; the source learns it the same way. Its write half is the other pump's.
            ends.pass_reset_to(if sink == Side::Master { Side::Replica } else { Side::Master });
            Err(())
        }
    }
}

/// Carries out a fault plan for a chunk: stall, delay, throttle, forward, cut. `Err` when the link is
/// over (cut, or a side failed); the caller then closes its sink as [`Ends`] says.
async fn carry_out(
    route: &Route,
    id: LinkId,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    data: &[u8],
    plan: crate::fault::Plan,
    ends: &Ends,
) -> Result<(), ()> {
    let (_, sink) = sides(direction);
    wait(plan.stall.unwrap_or_default() + plan.delay, ends).await?;
    let (data, cut) = match plan.cut {
        Some(c) => (&data[..c.after.min(data.len())], Some(c.how)),
        None => (data, None),
    };
    if plan.throttle {
        // Small pieces, each waiting for its tokens: the rate holds within a percent over seconds.
        let rate = route.rate(id, direction).unwrap_or(1 << 20);
        let piece = usize::try_from(rate / 20).unwrap_or(usize::MAX).clamp(1024, 64 * 1024);
        for chunk in data.chunks(piece) {
            wait(route.throttle(id, direction, chunk.len()), ends).await?;
            forward(route, id, to, sink, chunk, ends).await?;
        }
    } else if !data.is_empty() {
        forward(route, id, to, sink, data, ends).await?;
    }
    if let Some(how) = cut {
        route.on_transport(id, TransportEvent::Closed { by: ClosedBy::Proxy, how });
        if how == CloseHow::Reset {
            ends.pass_reset_to(Side::Master);
            ends.pass_reset_to(Side::Replica);
        } else {
            ends.abort.cancel();
        }
        return Err(());
    }
    Ok(())
}

/// Makes the socket behind `half` send a reset when it is closed: SO_LINGER 0, and no FIN first
/// (dropping a write half would shut it down with a FIN; `forget` leaves the close to the read half).
fn reset(half: OwnedWriteHalf) {
    let stream: &TcpStream = half.as_ref();
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    half.forget();
}

/// Writes all of `data`, returning how long it waited for the receiver to make room.
async fn write_all(to: &mut OwnedWriteHalf, mut data: &[u8], abort: &CancellationToken) -> std::io::Result<Duration> {
    let mut blocked = Duration::ZERO;
    while !data.is_empty() {
        match to.try_write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let waited = Instant::now();
                tokio::select! {
                    r = to.writable() => r?,
                    _ = abort.cancelled() => return Err(ErrorKind::Interrupted.into()),
                }
                blocked += waited.elapsed();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(blocked)
}
