//! Forwarding buffers, lent per read: a pump holds no buffer while its socket is quiet, borrows one when
//! bytes are waiting, and gives it back once they are written out. A direction whose last read brought
//! at least a small buffer's worth is lent a large one (up to the route's `--buffer`, 256 KiB under
//! faults) while the pool's budget for large buffers lasts; everything else reads through a small one. So an idle or handshaking link costs no buffer, a
//! lone busy link gets the throughput of a large one, and 500 busy links share a bounded amount.
//!
//! Buffers given back are kept for reuse up to a small reserve while data flows; the rest are freed, and
//! the reserve too once a whole tick of the proxy's clock passed without a read ([`BufferPool::idle`]).
//! The allocator is then asked to hand freed memory back to the system ([`crate::proxy::memory`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The size of a small buffer: what a quiet or crowded direction reads through.
pub const SMALL: usize = 16 * 1024;

/// `--buffer-pool`'s default: bytes of large buffers lent out at once, process-wide.
pub const DEFAULT_BUDGET: usize = 16 << 20;

/// Free buffers kept for reuse, in bytes; beyond this, a buffer given back is freed.
const RESERVE: usize = 4 << 20;

/// The process's forwarding buffers.
#[derive(Debug)]
pub struct BufferPool {
    budget: usize,
    large_out: AtomicUsize,
    free: Mutex<Free>,
    /// Set when a buffer was freed rather than kept: memory the allocator may give back.
    released: AtomicBool,
    /// Set by every lend; cleared by [`BufferPool::idle`].
    lent: AtomicBool,
}

#[derive(Debug, Default)]
struct Free {
    buffers: Vec<Box<[u8]>>,
    bytes: usize,
}

impl BufferPool {
    /// A pool lending at most `budget` bytes of large buffers at once.
    pub fn new(budget: usize) -> Self {
        BufferPool {
            budget,
            large_out: AtomicUsize::new(0),
            free: Mutex::new(Free::default()),
            released: AtomicBool::new(false),
            lent: AtomicBool::new(false),
        }
    }

    /// Lends a buffer: `want` bytes if it is small or the budget allows, else a small one.
    pub fn lend(&self, want: usize) -> Lease<'_> {
        let want = want.max(1);
        let fits = want <= SMALL
            || self
                .large_out
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |out| {
                    (out + want <= self.budget).then_some(out + want)
                })
                .is_ok();
        let size = if fits { want } else { SMALL };
        self.lent.store(true, Ordering::Relaxed);
        let buf = self.take(size).unwrap_or_else(|| vec![0u8; size].into_boxed_slice());
        Lease { pool: self, buf: Some(buf) }
    }

    /// Bytes of large buffers lent out now.
    pub fn large_out(&self) -> usize {
        self.large_out.load(Ordering::Acquire)
    }

    /// Free buffers kept for reuse, in bytes.
    pub fn reserved(&self) -> usize {
        self.lock().bytes
    }

    /// Notes that memory was freed elsewhere (a link ended), so the next trim returns it too.
    pub fn note_freed(&self) {
        self.released.store(true, Ordering::Release);
    }

    /// Whether buffers were freed since the last call (the allocator may then give memory back).
    pub fn take_released(&self) -> bool {
        self.released.swap(false, Ordering::AcqRel)
    }

    /// Called once per tick: frees the reserve if nothing was lent since the last call (no link read
    /// anything), so a proxy whose links went quiet holds no buffers. Returns whether it freed any.
    pub fn idle(&self) -> bool {
        if self.lent.swap(false, Ordering::AcqRel) {
            return false;
        }
        let buffers = {
            let mut free = self.lock();
            free.bytes = 0;
            std::mem::take(&mut free.buffers)
        };
        let freed = !buffers.is_empty();
        drop(buffers);
        if freed {
            self.released.store(true, Ordering::Release);
        }
        freed
    }

    fn take(&self, size: usize) -> Option<Box<[u8]>> {
        let mut free = self.lock();
        let i = free.buffers.iter().position(|b| b.len() == size)?;
        let buf = free.buffers.swap_remove(i);
        free.bytes -= buf.len();
        Some(buf)
    }

    fn give_back(&self, buf: Box<[u8]>) {
        if buf.len() > SMALL {
            self.large_out.fetch_sub(buf.len(), Ordering::AcqRel);
        }
        let mut free = self.lock();
        if free.bytes + buf.len() <= RESERVE {
            free.bytes += buf.len();
            free.buffers.push(buf);
        } else {
            drop(free);
            drop(buf);
            self.released.store(true, Ordering::Release);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        self.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A lent buffer, given back when dropped.
#[derive(Debug)]
pub struct Lease<'a> {
    pool: &'a BufferPool,
    buf: Option<Box<[u8]>>,
}

impl Lease<'_> {
    /// The buffer, to read into.
    pub fn room(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or_default()
    }

    /// The buffer, to read from.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }

    /// Its size.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether it has no room (never, for a lent buffer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give_back(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_are_lent_within_the_budget_and_small_ones_beyond_it() {
        let pool = BufferPool::new(2 << 20);
        let a = pool.lend(1 << 20);
        let b = pool.lend(1 << 20);
        let c = pool.lend(1 << 20);
        assert_eq!((a.len(), b.len(), c.len()), (1 << 20, 1 << 20, SMALL));
        assert_eq!(pool.large_out(), 2 << 20);
        drop(a);
        assert_eq!(pool.large_out(), 1 << 20);
        assert_eq!(pool.lend(1 << 20).len(), 1 << 20, "room again once one came back");
        drop((b, c));
        assert_eq!(pool.large_out(), 0);
    }

    #[test]
    fn the_reserve_is_freed_after_a_tick_without_a_read_and_kept_while_reads_go_on() {
        let pool = BufferPool::new(64 << 20);
        drop(pool.lend(1 << 20));
        assert!(!pool.idle(), "a read since the last tick: the reserve stays");
        assert_eq!(pool.reserved(), 1 << 20);
        let out = pool.lend(1 << 20);
        drop(pool.lend(SMALL));
        assert!(!pool.idle());
        assert!(pool.idle(), "a tick without a read frees the reserve");
        assert_eq!(pool.reserved(), 0);
        assert!(pool.take_released(), "and says the allocator may give it back");
        assert!(!pool.idle(), "nothing left to free");
        assert_eq!(out.len(), 1 << 20, "a buffer lent out is not the pool's to free");
    }

    #[test]
    fn buffers_are_reused_up_to_the_reserve_and_freed_beyond_it() {
        let pool = BufferPool::new(64 << 20);
        let leases: Vec<_> = (0..8).map(|_| pool.lend(1 << 20)).collect();
        assert!(!pool.take_released());
        drop(leases);
        assert_eq!(pool.reserved(), RESERVE);
        assert!(pool.take_released(), "what did not fit the reserve was freed");
        assert!(!pool.take_released());
        let again = pool.lend(1 << 20);
        assert_eq!(pool.reserved(), RESERVE - (1 << 20), "a kept buffer was lent again");
        drop(again);
        let small = pool.lend(100);
        assert_eq!(small.len(), 100);
    }
}
