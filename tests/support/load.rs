//! A steady write load on a server: batches of SETs, pipelined on one connection, at a fixed pace, until
//! stopped.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running load; [`Load::stop`] ends it.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Every `every`, `batch` SETs of `value_len`-byte values to keys `<prefix>:<n>` (n cycling over
    /// `keys`), on one connection to `port`.
    pub fn start(port: u16, prefix: &str, batch: usize, value_len: usize, keys: u64, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let prefix = prefix.to_string();
        let thread = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let value = "v".repeat(value_len);
            let mut buf = [0u8; 65536];
            let mut i = 0u64;
            let start = Instant::now();
            let mut rounds = 0u32;
            while !flag.load(Ordering::Relaxed) {
                let mut req = String::new();
                for _ in 0..batch {
                    let key = format!("{prefix}:{}", i % keys);
                    req.push_str(&format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${value_len}\r\n{value}\r\n", key.len()));
                    i += 1;
                }
                if s.write_all(req.as_bytes()).is_err() {
                    return;
                }
                let mut oks = 0;
                while oks < batch {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => oks += buf[..n].iter().filter(|b| **b == b'\n').count(),
                        _ => return,
                    }
                }
                rounds += 1;
                if let Some(wait) = (every * rounds).checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        });
        Load { stop, thread: Some(thread) }
    }

    /// Stops the load and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}
