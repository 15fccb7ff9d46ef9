//! A minimal byte-forwarding relay for tests (not the proxy): every byte of every connection is forwarded
//! unchanged and also fed, with its time, to one route's links ([`Fed`]). It lets the `wire`/`link` core be
//! checked against real servers before (and independently of) the tokio driver. It can also write what it
//! forwards as a recording (the format of `tests/data/captures/README.md`): that is how the Redis 8.2
//! recordings were made (`tests/record.rs`).

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use replscope::link::{CloseHow, ClosedBy, Fed, LinkId, TransportEvent};
use replscope::time::Timestamp;
use replscope::wire::Direction;

/// Shared state of a relay.
struct Shared {
    links: Mutex<Fed>,
    ids: Mutex<Vec<LinkId>>,
    start: Instant,
    stop: AtomicBool,
    recording: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl Shared {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.start.elapsed().as_micros() as u64)
    }

    /// Feeds one read (or, with no bytes, one side's end of file) to the links and to the recording. One
    /// lock for both keeps the recording in the order the core saw the reads.
    fn read(&self, id: LinkId, dir: Direction, bytes: Option<&[u8]>, close: Option<TransportEvent>) {
        let mut links = lock(&self.links);
        let now = self.now();
        match (bytes, close) {
            (Some(b), _) => {
                links.on_bytes(id, dir, b, now);
            }
            (None, Some(event)) => links.on_transport(id, event, now),
            (None, None) => {}
        }
        let Some(recording) = &self.recording else { return };
        let conn = lock(&self.ids).iter().position(|i| *i == id).map_or(0, |p| p + 1);
        let dir = if dir == Direction::MasterToReplica { "m2r" } else { "r2m" };
        let t = now.as_micros() as f64 / 1e6;
        let line = match bytes {
            Some(b) => serde_json::json!({"t": t, "conn": conn, "dir": dir, "len": b.len(), "hex": hex::encode(b)}),
            None => serde_json::json!({"t": t, "conn": conn, "dir": dir, "eof": true}),
        };
        let mut out = lock(recording);
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// A relay listening on a loopback port, forwarding to a master.
pub struct Relay {
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(master_port: u16) -> Relay {
        Self::start_with(master_port, None)
    }

    /// A relay that also writes every read to `path` as a recording.
    pub fn recording(master_port: u16, path: &std::path::Path) -> Relay {
        let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self::start_with(master_port, Some(Mutex::new(std::io::BufWriter::new(file))))
    }

    fn start_with(master_port: u16, recording: Option<Mutex<std::io::BufWriter<std::fs::File>>>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            links: Mutex::new(Fed::new()),
            ids: Mutex::new(Vec::new()),
            start: Instant::now(),
            stop: AtomicBool::new(false),
            recording,
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            let mut pumps = Vec::new();
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((replica, peer)) => {
                        replica.set_nonblocking(false).expect("blocking");
                        let id = lock(&s.links).open(Some(peer.ip()), s.now());
                        lock(&s.ids).push(id);
                        let Ok(master) = TcpStream::connect(("127.0.0.1", master_port)) else {
                            lock(&s.links).on_transport(
                                id,
                                TransportEvent::Closed {
                                    by: ClosedBy::Proxy,
                                    how: CloseHow::Error(ErrorKind::ConnectionRefused),
                                },
                                s.now(),
                            );
                            continue;
                        };
                        for (from, to, dir, by) in [
                            (&replica, &master, Direction::ReplicaToMaster, ClosedBy::Replica),
                            (&master, &replica, Direction::MasterToReplica, ClosedBy::Master),
                        ] {
                            let (from, to) = (from.try_clone().expect("clone"), to.try_clone().expect("clone"));
                            let s = Arc::clone(&s);
                            pumps.push(std::thread::spawn(move || pump(&s, id, from, to, dir, by)));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
            for p in pumps {
                let _ = p.join();
            }
        });
        Relay { port, shared, accept: Some(accept) }
    }

    /// The links, locked.
    pub fn links(&self) -> MutexGuard<'_, Fed> {
        lock(&self.shared.links)
    }

    /// Link ids in accept order.
    pub fn ids(&self) -> Vec<LinkId> {
        lock(&self.shared.ids).clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            // Pumps end when the servers (killed by their own Drop) close the sockets; do not wait here.
            drop(a);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pump(s: &Shared, id: LinkId, mut from: TcpStream, mut to: TcpStream, dir: Direction, by: ClosedBy) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let how = match from.read(&mut buf) {
            Ok(0) => CloseHow::Fin,
            Ok(n) => {
                s.read(id, dir, Some(&buf[..n]), None);
                if to.write_all(&buf[..n]).is_ok() {
                    continue;
                }
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => CloseHow::Reset,
            Err(e) => CloseHow::Error(e.kind()),
        };
        s.read(id, dir, None, Some(TransportEvent::Closed { by, how }));
        let _ = to.shutdown(Shutdown::Write);
        return;
    }
}
