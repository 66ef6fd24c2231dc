//! TLS over any driver's [`Stream`]: rustls's sans-IO `ServerConnection`
//! driven by our own reads and writes, so `wss://` works the same on the
//! io_uring and the epoll driver (tokio-rustls needs `AsyncRead` /
//! `AsyncWrite`, which tokio-uring's owned-buffer streams are not).
//!
//! [`TlsStream`] is itself a [`Stream`]: reads return plaintext, writes
//! take plaintext, and the connection code above (`conn::serve`) is the
//! same for `ws://` and `wss://`.
//!
//! Concurrency. A connection's reader and writer tasks use the stream at
//! the same time, on one thread. The rustls state is in a `RefCell` that is
//! never borrowed across an `.await`. Both sides may produce TLS records:
//! the writer its data, the reader handshake messages, alerts, key-update
//! answers and `close_notify`. Whoever takes records out of rustls does so
//! holding [`TlsStream::wlock`] and writes them all before letting go, so
//! records reach the socket in the order rustls produced them (a TLS peer
//! fails the connection on a record out of order).
//!
//! Copies: ciphertext is read into a buffer of ours, copied into rustls
//! (which decrypts in place) and the plaintext copied into the caller's
//! buffer; outbound, rustls encrypts the caller's buffers into one new
//! buffer per write. rustls's unbuffered API would save a copy each way at
//! the cost of managing its buffers here; docs/benchmarks.md has what the
//! buffered one costs.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use rustls::{ServerConfig, ServerConnection};

use super::Stream;
use crate::config::TlsIdentity;

/// Smallest ciphertext read: a TLS record is up to ~16 KiB, and reading
/// less than a few KiB at a time only adds reads.
const MIN_TLS_READ: usize = 4096;

/// A TLS server connection over `S`.
pub(crate) struct TlsStream<S> {
    inner: S,
    tls: RefCell<ServerConnection>,
    /// Ciphertext read from `inner` that rustls has not taken yet.
    rbuf: Cell<BytesMut>,
    /// Plaintext rustls holds for us (from the last `process_new_packets`).
    plain: Cell<usize>,
    /// The peer sent `close_notify`.
    peer_closed: Cell<bool>,
    /// Held while records taken out of rustls are written to `inner`.
    wlock: tokio::sync::Mutex<()>,
    /// `shutdown_write` was asked for: `close_notify` is queued, the FIN
    /// goes once it is written.
    fin: Cell<bool>,
    identity: TlsIdentity,
}

impl<S: Stream> TlsStream<S> {
    /// A server connection over `inner` with `config` (the handshake has
    /// not started: call [`handshake`](Self::handshake)).
    pub(crate) fn new(
        inner: S,
        config: Arc<ServerConfig>,
        identity: TlsIdentity,
    ) -> Result<Self, rustls::Error> {
        Ok(TlsStream {
            inner,
            tls: RefCell::new(ServerConnection::new(config)?),
            rbuf: Cell::new(BytesMut::new()),
            plain: Cell::new(0),
            peer_closed: Cell::new(false),
            wlock: tokio::sync::Mutex::new(()),
            fin: Cell::new(false),
            identity,
        })
    }

    /// Run the TLS handshake to its end. On failure (bad client
    /// certificate, no shared version, garbage) the alert rustls queued is
    /// sent before the error is returned. The caller bounds it in time.
    pub(crate) async fn handshake(&self) -> io::Result<()> {
        loop {
            self.flush().await?;
            if !self.tls.borrow().is_handshaking() {
                return Ok(());
            }
            match self.feed() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Err(self.failed(e).await),
            }
            let rb = self.rbuf.take();
            let (res, rb) = self.inner.read(rb, MIN_TLS_READ).await;
            self.rbuf.set(rb);
            match res {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during the TLS handshake",
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The stream under the TLS layer (to linger on after a failed handshake).
    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }

    /// The device identity of the verified client certificate (mutual TLS;
    /// `None` without one or if it names nothing, see [`crate::tls::identity_of`]).
    pub(crate) fn peer_identity(&self) -> Option<String> {
        let tls = self.tls.borrow();
        let cert = tls.peer_certificates()?.first()?;
        crate::tls::identity_of(cert, self.identity)
    }

    /// Send what rustls queued for the peer (the alert), and hand back `e`.
    async fn failed(&self, e: io::Error) -> io::Error {
        let _ = self.flush().await;
        e
    }

    /// Give rustls the next part of the buffered ciphertext and process it.
    /// `Ok(false)` if there was none; an error is a TLS error (rustls then
    /// has an alert queued).
    fn feed(&self) -> io::Result<bool> {
        let mut rb = self.rbuf.take();
        if rb.is_empty() {
            self.rbuf.set(rb);
            return Ok(false);
        }
        let res = (|| {
            let mut tls = self.tls.borrow_mut();
            let mut src: &[u8] = &rb;
            let n = tls.read_tls(&mut src)?;
            if n == 0 {
                // Only when rustls's buffers are full, which draining the
                // plaintext first rules out.
                return Err(io::Error::other("TLS receive buffer full"));
            }
            rb.advance(n);
            let state = tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.plain.set(state.plaintext_bytes_to_read());
            self.peer_closed.set(state.peer_has_closed());
            Ok(true)
        })();
        self.rbuf.set(rb);
        res
    }

    /// Move the plaintext rustls holds into `buf`; returns the count.
    fn take_plaintext(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let n = self.plain.replace(0);
        if n == 0 {
            return Ok(0);
        }
        let at = buf.len();
        buf.resize(at + n, 0);
        let mut tls = self.tls.borrow_mut();
        let mut got = 0;
        while got < n {
            match tls.reader().read(&mut buf[at + got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    buf.truncate(at + got);
                    return Err(e);
                }
            }
        }
        buf.truncate(at + got);
        Ok(got)
    }

    /// The records rustls has ready for the peer, as one buffer (empty if none).
    fn take_records(&self) -> io::Result<Bytes> {
        let mut tls = self.tls.borrow_mut();
        let mut out = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut out)?;
        }
        Ok(Bytes::from(out))
    }

    /// Write `b` to `inner` completely.
    async fn write_all(&self, mut b: Bytes) -> io::Result<()> {
        while !b.is_empty() {
            let (res, mut v) = self.inner.writev(vec![b]).await;
            b = v.pop().unwrap_or_default();
            match res? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => b.advance(n),
            }
        }
        Ok(())
    }

    /// Write every record rustls has ready (handshake, alerts, key updates,
    /// `close_notify`), then the FIN if one was asked for.
    async fn flush(&self) -> io::Result<()> {
        if !self.tls.borrow().wants_write() && !self.fin.get() {
            return Ok(());
        }
        let _turn = self.wlock.lock().await;
        loop {
            let out = self.take_records()?;
            if out.is_empty() {
                break;
            }
            self.write_all(out).await?;
        }
        if self.fin.replace(false) {
            self.inner.shutdown_write();
        }
        Ok(())
    }
}

impl<S: Stream> Stream for TlsStream<S> {
    async fn read(&self, mut buf: BytesMut, want: usize) -> (io::Result<usize>, BytesMut) {
        let mut got = 0;
        loop {
            match self.take_plaintext(&mut buf) {
                Ok(n) => got += n,
                Err(e) => return (Err(e), buf),
            }
            // Up to `want` per call: more ciphertext is left for the next.
            if got >= want {
                return (Ok(got), buf);
            }
            match self.feed() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return (Err(self.failed(e).await), buf),
            }
            if got > 0 || self.peer_closed.get() {
                // Plaintext, or end of stream (`close_notify`).
                return (Ok(got), buf);
            }
            // Whatever the peer is owed (a key-update answer, our
            // close_notify) goes before we wait for it.
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
            let rb = self.rbuf.take();
            let (res, rb) = self.inner.read(rb, want.max(MIN_TLS_READ)).await;
            self.rbuf.set(rb);
            match res {
                // End of stream without close_notify: also the end.
                Ok(0) => return (Ok(0), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
    }

    async fn writev(&self, bufs: Vec<Bytes>) -> (io::Result<usize>, Vec<Bytes>) {
        let _turn = self.wlock.lock().await;
        let taken = {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            // One vectored write: rustls packs the buffers into full records
            // (up to its buffer limit; the caller requeues the rest).
            self.tls.borrow_mut().writer().write_vectored(&slices)
        };
        let n = match taken {
            Ok(n) => n,
            Err(e) => return (Err(e), bufs),
        };
        loop {
            let out = match self.take_records() {
                Ok(out) if out.is_empty() => break,
                Ok(out) => out,
                Err(e) => return (Err(e), bufs),
            };
            if let Err(e) = self.write_all(out).await {
                return (Err(e), bufs);
            }
        }
        (Ok(n), bufs)
    }

    fn shutdown_write(&self) {
        // Sent (with the FIN after it) by the next read, which is how every
        // close path goes on (`conn::linger`): writing needs an await.
        self.tls.borrow_mut().send_close_notify();
        self.fin.set(true);
    }
}
