//! epoll driver (plain tokio): the fallback where io_uring can't be set up.
//!
//! Reads wait for readiness first and only then reserve buffer space, so an
//! idle connection holds no read buffer at all.

use std::io::{self, IoSlice};
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use super::{Listener, Stream};

/// A current-thread tokio runtime with the I/O and time drivers.
pub(crate) fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

pub(crate) struct EpollStream(tokio::net::TcpStream);

impl Stream for EpollStream {
    async fn read(&self, mut buf: BytesMut, want: usize) -> (io::Result<usize>, BytesMut) {
        if buf.is_empty() && buf.capacity() > 0 {
            buf = BytesMut::new(); // hold nothing while idle
        }
        loop {
            if let Err(e) = self.0.readable().await {
                return (Err(e), buf);
            }
            if buf.capacity() - buf.len() < want {
                buf.reserve(want);
            }
            match self.0.try_read_buf(&mut buf) {
                Ok(n) => return (Ok(n), buf),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), buf),
            }
        }
    }

    async fn writev(&self, bufs: Vec<Bytes>) -> (io::Result<usize>, Vec<Bytes>) {
        loop {
            if let Err(e) = self.0.writable().await {
                return (Err(e), bufs);
            }
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            match self.0.try_write_vectored(&slices) {
                Ok(n) => return (Ok(n), bufs),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), bufs),
            }
        }
    }

    fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(&self.0).shutdown(std::net::Shutdown::Write);
    }
}

pub(crate) struct EpollListener(tokio::net::TcpListener);

impl EpollListener {
    pub(crate) fn from_std(l: std::net::TcpListener) -> io::Result<Self> {
        Ok(EpollListener(tokio::net::TcpListener::from_std(l)?))
    }
}

impl Listener for EpollListener {
    type Stream = EpollStream;

    async fn accept(&self) -> io::Result<(EpollStream, SocketAddr)> {
        let (s, addr) = self.0.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((EpollStream(s), addr))
    }
}
