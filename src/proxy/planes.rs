//! Where a link's bytes are forwarded. Every link starts on the control plane: the runtime that accepts
//! connections, dials the master, answers the HTTP API and polls the master, a single thread that only
//! ever runs light work. So a new replica's accept, dial and handshake never queue behind busy
//! transfers. A direction that turns out to carry a transfer (a read of at least [`SMALL`] bytes, or
//! [`HANDOVER_BYTES`] moved) hands the whole connection over to the data plane, a multi-thread runtime
//! where the RDBs and command streams flow; it stays there to its end.
//!
//! The handover happens between reads, with every byte read already written out (or, under a latency
//! fault, held in the direction's delay line, which moves along), so it cannot reorder, drop or hold
//! back a byte. Without a data plane (a proxy embedded in a test's runtime) a link stays where it
//! started.

use std::io;

use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::runtime::Handle;

use crate::proxy::pool::{BufferPool, SMALL};

/// Bytes a direction may move on the control plane before its connection moves to the data plane.
pub const HANDOVER_BYTES: u64 = 1 << 20;

/// What every link's forwarding shares: the buffers, and the data plane (if there is one).
#[derive(Debug)]
pub struct Forwarding {
    /// The process's forwarding buffers.
    pub pool: BufferPool,
    data: Option<Handle>,
}

impl Forwarding {
    /// Forwarding through `pool`; links hand over to `data` when it is given.
    pub fn new(pool: BufferPool, data: Option<Handle>) -> Self {
        Forwarding { pool, data }
    }

    /// The data plane, if links move to one.
    pub fn data_plane(&self) -> Option<&Handle> {
        self.data.as_ref()
    }
}

/// Whether a direction is carrying a transfer: its last read was large, or it has moved enough.
pub fn carries_a_transfer(last_read: usize, moved: u64) -> bool {
    last_read >= SMALL || moved >= HANDOVER_BYTES
}

/// One socket put back together from its halves and taken off this runtime, to be registered on another.
pub fn detach(read: OwnedReadHalf, write: OwnedWriteHalf) -> io::Result<std::net::TcpStream> {
    let stream =
        read.reunite(write).map_err(|_| io::Error::other("the halves handed over belong to different sockets"))?;
    stream.into_std()
}

/// A detached socket registered on the runtime this runs on.
pub fn attach(stream: std::net::TcpStream) -> io::Result<TcpStream> {
    TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_read_or_a_megabyte_moved_is_a_transfer() {
        assert!(!carries_a_transfer(100, 0), "a handshake line");
        assert!(!carries_a_transfer(SMALL - 1, HANDOVER_BYTES - 1));
        assert!(carries_a_transfer(SMALL, 0), "an RDB's first read");
        assert!(carries_a_transfer(10, HANDOVER_BYTES), "a trickle that adds up");
    }

    #[tokio::test]
    async fn a_socket_detached_and_attached_again_keeps_its_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        client.write_all(b"before").await.expect("write");
        let (rd, wr) = server.into_split();
        let std = detach(rd, wr).expect("detach");
        client.write_all(b" and after").await.expect("write");
        let mut server = attach(std).expect("attach");
        let mut got = vec![0u8; 16];
        let mut n = 0;
        while n < 16 {
            n += server.read(&mut got[n..]).await.expect("read");
        }
        assert_eq!(&got, b"before and after");
        server.write_all(b"ok").await.expect("write back");
        let mut back = [0u8; 2];
        client.read_exact(&mut back).await.expect("read back");
        assert_eq!(&back, b"ok");
    }
}
