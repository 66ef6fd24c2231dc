//! The only code that touches sockets: one module per I/O driver, the
//! listeners they accept on ([`listen`]), and TLS over either ([`tls`]).
//!
//! Both drivers expose the same owned-buffer interface (the shape io_uring
//! needs: the kernel owns the buffer while an operation is in flight), so the
//! connection logic in [`super::conn`] is written once, generic over
//! [`Stream`], and the whole test suite runs against either driver.

use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

pub(crate) mod epoll;
pub(crate) mod listen;
pub(crate) mod tls;
pub(crate) mod uring;

/// A connected TCP stream, used from one shard thread.
///
/// Dropping it releases the socket at once, even if an operation on it was
/// cut off (a read under a timeout, a write to a peer that stopped reading):
/// every path that ends a connection relies on this to give the fd back
/// against a peer that never closes (see [`uring`]).
pub(crate) trait Stream: 'static {
    /// Read into `buf`'s spare capacity, first making room for `want` bytes.
    /// Returns the count read (0 at EOF) and the buffer.
    async fn read(&self, buf: BytesMut, want: usize) -> (io::Result<usize>, BytesMut);
    /// Write as much of `bufs` as one vectored write takes; returns the count
    /// and the buffers (so the caller can requeue what was not written).
    async fn writev(&self, bufs: Vec<Bytes>) -> (io::Result<usize>, Vec<Bytes>);
    /// Send FIN (shut down the write half).
    fn shutdown_write(&self);
}

/// Write `b` completely; false on error, or if the peer has not taken it
/// within `limit` (a peer that never reads cannot hold a task forever).
pub(crate) async fn write_all<S: Stream>(stream: &S, b: Bytes, limit: std::time::Duration) -> bool {
    let write = async move {
        let mut b = b;
        while !b.is_empty() {
            let (res, mut v) = stream.writev(vec![b]).await;
            b = v.pop().unwrap_or_default();
            match res {
                Ok(n) if n > 0 => bytes::Buf::advance(&mut b, n),
                _ => return false,
            }
        }
        true
    };
    tokio::time::timeout(limit, write).await.unwrap_or(false)
}

/// A listening socket on one shard.
pub(crate) trait Listener: 'static {
    /// The stream type it produces.
    type Stream: Stream;
    /// Accept one connection.
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)>;
}
