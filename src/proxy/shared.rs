//! What the routes of one process share: one clock (so a fault's times and every link's times count from
//! the same instant), link ids unique across routes (the API names a link by its id alone), and the
//! injected faults, which a `route` filter confines to one route or leaves to all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use crate::fault::{Fault, FaultSpec, Faults};
use crate::link::LinkId;
use crate::observe::api::WallClock;
use crate::time::Timestamp;

/// The process-wide state every route holds a reference to.
pub struct Shared {
    epoch: Instant,
    /// The wall-clock time of `epoch`, for the API's RFC 3339 times.
    wall: WallClock,
    last_link: AtomicU64,
    faults: Mutex<Faults>,
    /// Whether any fault is in force: read on every chunk without taking a lock.
    faults_present: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    /// The clock starts now; no link, no fault.
    pub fn new() -> Self {
        Shared {
            epoch: Instant::now(),
            wall: WallClock { epoch: std::time::SystemTime::now() },
            last_link: AtomicU64::new(0),
            faults: Mutex::new(Faults::new()),
            faults_present: AtomicBool::new(false),
        }
    }

    /// The time now, as the core counts it.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The wall-clock time of the core's zero.
    pub fn wall(&self) -> &WallClock {
        &self.wall
    }

    /// A fresh link id.
    pub fn next_link(&self) -> LinkId {
        LinkId(self.last_link.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The faults, locked. Taken after a route's own lock, never before it.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        // A panic elsewhere must not stop forwarding: the faults are still consistent enough to serve.
        self.faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records whether any fault is in force after a change made under `faults`.
    pub fn note_faults(&self, faults: &Faults) {
        self.faults_present.store(faults.any(), Ordering::Relaxed);
    }

    /// Whether any fault is in force (cheap; no lock).
    pub fn faults_present(&self) -> bool {
        self.faults_present.load(Ordering::Relaxed)
    }

    /// Installs a fault; `open` are the links open now, on every route (for the `open` scope).
    pub fn add_fault(&self, spec: FaultSpec, open: Vec<LinkId>) -> Fault {
        let now = self.now();
        let mut faults = self.faults();
        let fault = faults.add(spec, now, open);
        self.note_faults(&faults);
        let route = fault.spec.route.as_deref().unwrap_or("*");
        tracing::info!(
            fault = fault.id,
            route,
            kind = fault.spec.kind.fault_type().as_str(),
            "fault {} installed",
            fault.id
        );
        fault
    }

    /// The faults in force.
    pub fn list_faults(&self) -> Vec<Fault> {
        let now = self.now();
        let mut faults = self.faults();
        faults.expire(now);
        self.note_faults(&faults);
        faults.list()
    }

    /// Removes a fault; whether it existed.
    pub fn remove_fault(&self, id: u64) -> bool {
        let mut faults = self.faults();
        let removed = faults.remove(id);
        self.note_faults(&faults);
        if removed {
            tracing::info!(fault = id, "fault {id} removed");
        }
        removed
    }

    /// Removes every fault; how many there were.
    pub fn clear_faults(&self) -> usize {
        let mut faults = self.faults();
        let n = faults.clear();
        self.note_faults(&faults);
        tracing::info!("{n} faults removed");
        n
    }

    /// Changes a bandwidth fault's rate.
    pub fn set_fault_rate(&self, id: u64, rate: u64) -> Option<Fault> {
        let fault = self.faults().set_rate(id, rate)?;
        tracing::info!(fault = id, rate, "fault {id}: rate now {rate} B/s");
        Some(fault)
    }
}
