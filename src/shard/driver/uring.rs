//! io_uring driver: tokio-uring's owned-buffer reads, vectored writes and accepts.

use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use tokio_uring::buf::BoundedBuf;

use super::{Listener, Stream};

/// Build this shard's io_uring runtime; fails where io_uring is unavailable
/// (old kernel, `kernel.io_uring_disabled`, seccomp in containers).
pub(crate) fn runtime() -> io::Result<tokio_uring::Runtime> {
    tokio_uring::Runtime::new(tokio_uring::builder().entries(1024))
}

pub(crate) struct UringStream(tokio_uring::net::TcpStream);

impl Stream for UringStream {
    async fn read(&self, mut buf: BytesMut, want: usize) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() - buf.len() < want {
            buf.reserve(want);
        }
        // Read into the spare capacity so the read appends (tokio-uring reads
        // into a slice's range; a bare BytesMut would be read into from 0).
        let len = buf.len();
        let (res, slice) = self.0.read(buf.slice(len..)).await;
        (res, slice.into_inner())
    }

    async fn writev(&self, bufs: Vec<Bytes>) -> (io::Result<usize>, Vec<Bytes>) {
        self.0.writev(bufs).await
    }

    fn shutdown_write(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

pub(crate) struct UringListener(tokio_uring::net::TcpListener);

impl UringListener {
    pub(crate) fn from_std(l: std::net::TcpListener) -> Self {
        UringListener(tokio_uring::net::TcpListener::from_std(l))
    }
}

impl Listener for UringListener {
    type Stream = UringStream;

    async fn accept(&self) -> io::Result<(UringStream, SocketAddr)> {
        let (s, addr) = self.0.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((UringStream(s), addr))
    }
}
