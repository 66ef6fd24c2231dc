//! io_uring driver: tokio-uring's owned-buffer reads, vectored writes and accepts.
//!
//! # Releasing sockets
//!
//! An operation handed to the kernel holds its own reference to the socket,
//! and tokio-uring never cancels one whose future is dropped: it keeps the
//! reference until the kernel completes the operation. A read cut off by a
//! timeout or a `select!`, a write to a peer that stopped reading, an accept
//! pending when the listener goes: each keeps its socket open after our
//! handle is gone, and against a peer that stays silent with its end open
//! that is forever (issue 9 item 6: 300 silent clients held 323 fds while
//! `/health` said 0 connections; at the fd limit every new connect timed
//! out). So dropping a [`UringStream`] or [`UringListener`] first shuts the
//! socket down, which completes every operation still pending on it at once
//! (reads see end of stream, writes fail with `EPIPE`, accepts fail); the
//! last reference then goes and the fd is closed, whichever close path got
//! us here.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use tokio_uring::buf::BoundedBuf;

use super::{Listener, Stream};

/// Submission queue size. Operations are pushed to the kernel when the
/// queue fills or the shard goes idle, so this is also how many writes one
/// `io_uring_enter` carries at most. Measured with 1,000 subscribers on one
/// core (docs/benchmarks.md): 1,024 entries gave ~1.1-1.5M deliveries/s,
/// 4,096 ~1.3M, 256 ~1.57-1.65M; 64 lost ~10% of ingest. Submitting in
/// smaller groups gets the first subscribers' bytes out while the shard is
/// still queueing for the rest.
const SQ_ENTRIES: u32 = 256;

/// How long after a read completed the next read tries a plain `recv`
/// first (see `UringStream::read`).
const OPPORTUNISTIC_AFTER: Duration = Duration::from_micros(20);

/// Completion queue size: completions of every connection's pending read
/// can arrive in one burst; past this the kernel keeps them on its overflow
/// list, which is slower but loses nothing.
const CQ_ENTRIES: u32 = 8192;

/// Build this shard's io_uring runtime; fails where io_uring is unavailable
/// (old kernel, `kernel.io_uring_disabled`, seccomp in containers).
///
/// The ring is set up with `IORING_SETUP_COOP_TASKRUN` (Linux 5.19+): a
/// completion that arrives while the shard runs user code waits for the
/// shard's next syscall instead of interrupting it with an IPI. Without it,
/// perf showed ~20% of a busy shard's time in `irqentry_exit_to_user_mode`
/// running completions it would have picked up a moment later anyway; with
/// it, ingest on one core went from ~600k to ~700k acks/s
/// (docs/benchmarks.md). Kernels that reject the flags get a plain ring.
pub(crate) fn runtime() -> io::Result<tokio_uring::Runtime> {
    let mut tuned = tokio_uring::uring_builder();
    tuned.setup_coop_taskrun().setup_cqsize(CQ_ENTRIES);
    match tokio_uring::Runtime::new(
        tokio_uring::builder()
            .entries(SQ_ENTRIES)
            .uring_builder(&tuned),
    ) {
        Ok(rt) => Ok(rt),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tokio_uring::Runtime::new(tokio_uring::builder().entries(SQ_ENTRIES))
        }
        Err(e) => Err(e),
    }
}

pub(crate) struct UringStream {
    inner: tokio_uring::net::TcpStream,
    /// When the last read that returned data completed: more may have
    /// arrived since.
    maybe_more: Cell<Option<Instant>>,
}

impl UringStream {
    fn new(inner: tokio_uring::net::TcpStream) -> Self {
        UringStream {
            inner,
            maybe_more: Cell::new(None),
        }
    }

    /// A non-blocking `recv` into `buf`'s spare capacity: `Some(n)` if it
    /// read `n > 0` bytes or saw end of stream (`n == 0`), `None` if nothing
    /// was waiting (or on an error, which the ring read then reports).
    #[allow(unsafe_code)]
    fn try_recv(&self, buf: &mut BytesMut) -> Option<usize> {
        let spare = buf.spare_capacity_mut();
        // SAFETY: the fd is open for as long as `self.inner` lives, and
        // `spare` is writable memory of exactly `spare.len()` bytes owned by
        // `buf`; recv writes at most that many bytes into it.
        let n = unsafe {
            libc::recv(
                self.inner.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        let n = usize::try_from(n).ok()?;
        // SAFETY: recv initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Some(n)
    }
}

impl Stream for UringStream {
    async fn read(&self, mut buf: BytesMut, want: usize) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() - buf.len() < want {
            buf.reserve(want);
        }
        // Opportunistic read: when handling the last read took a while (a
        // publish fanned out to many subscribers), take what arrived
        // meanwhile with a plain non-blocking recv in this task turn, as
        // the epoll driver does. Going through the ring instead lets every
        // woken writer flush first, with fewer messages per write: on one
        // core this took fan-out from ~1.1-1.5M to ~1.6-1.7M deliveries/s
        // (docs/benchmarks.md). After a quick turn (a few records) the
        // recv would mostly find nothing and cost a syscall, so the ring
        // read goes first; an idle connection only waits on the ring.
        if self
            .maybe_more
            .get()
            .is_some_and(|t| t.elapsed() >= OPPORTUNISTIC_AFTER)
        {
            // This path never waits, so it takes from tokio's per-task
            // budget like an epoll read does: a client that keeps the
            // socket full cannot keep the shard from its other tasks.
            tokio::task::coop::consume_budget().await;
            if let Some(n) = self.try_recv(&mut buf) {
                self.maybe_more.set(Some(Instant::now()));
                return (Ok(n), buf);
            }
            self.maybe_more.set(None);
        }
        // Read into the spare capacity so the read appends (tokio-uring reads
        // into a slice's range; a bare BytesMut would be read into from 0).
        let len = buf.len();
        let (res, slice) = self.inner.read(buf.slice(len..)).await;
        self.maybe_more
            .set(matches!(res, Ok(n) if n > 0).then(Instant::now));
        (res, slice.into_inner())
    }

    async fn writev(&self, bufs: Vec<Bytes>) -> (io::Result<usize>, Vec<Bytes>) {
        self.inner.writev(bufs).await
    }

    fn shutdown_write(&self) {
        let _ = self.inner.shutdown(std::net::Shutdown::Write);
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        // Completes any read or write still in flight, so the fd is closed
        // now rather than whenever the peer next sends or closes (module
        // docs). Our FIN goes out as close(2) would have sent it; unread
        // input is dropped as close(2) would have dropped it.
        let _ = self.inner.shutdown(std::net::Shutdown::Both);
    }
}

pub(crate) struct UringListener(tokio_uring::net::TcpListener);

impl Drop for UringListener {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // Stops listening now, though an accept may still be in flight
        // (module docs): the socket leaves the `SO_REUSEPORT` group, so a
        // connection arriving during the drain goes to a shard still
        // listening, or is refused, instead of waiting in a backlog nobody
        // accepts from.
        // SAFETY: shutdown(2) takes no pointers; the fd is open for as long
        // as `self.0` lives, so it names this listener and no other file.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

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
        Ok((UringStream::new(s), addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The opportunistic `recv` (and its `unsafe`): it takes what is
    /// waiting, falls back to the ring when nothing is, gives the shard's
    /// other tasks a turn while a socket stays full, and reports end of
    /// stream as a 0-byte read.
    #[test]
    fn opportunistic_recv_takes_waiting_bytes_yields_and_sees_eof() {
        let Ok(rt) = runtime() else {
            eprintln!("io_uring unavailable here; the epoll driver is tested instead");
            return;
        };
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            let s = UringStream::new(tokio_uring::net::TcpStream::from_std(server));
            let long_ago = || Some(Instant::now() - Duration::from_millis(5));

            // Bytes already waiting: taken by recv, in this turn.
            client.write_all(b"hello world").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.maybe_more.set(long_ago());
            let (n, buf) = s.read(BytesMut::new(), 512).await;
            assert_eq!(n.unwrap(), 11);
            assert_eq!(&buf[..], b"hello world");
            assert!(
                s.maybe_more.get().is_some(),
                "recv got data: more may follow"
            );

            // Nothing waiting: recv finds nothing, the ring read waits for
            // the next bytes and appends them.
            s.maybe_more.set(long_ago());
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                client.write_all(b"!").unwrap();
                client
            });
            let (n, buf) = s.read(buf, 512).await;
            assert_eq!(n.unwrap(), 1);
            assert_eq!(&buf[..], b"hello world!");

            // A socket that always has data waiting: the reader still
            // yields to the shard's other tasks (tokio's budget).
            let mut client = writer.join().unwrap();
            // 64 KiB fits in the loopback socket buffers, so it is all
            // waiting before the reader starts; 64-byte reads make ~1,000
            // reads, far past the budget (128).
            client.write_all(&vec![b'x'; 64 * 1024]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let ticks = std::rc::Rc::new(std::cell::Cell::new(0u32));
            let ticker = {
                let ticks = ticks.clone();
                tokio_uring::spawn(async move {
                    loop {
                        ticks.set(ticks.get() + 1);
                        tokio::task::yield_now().await;
                    }
                })
            };
            let mut got = 0;
            while got < 64 * 1024 {
                s.maybe_more.set(long_ago());
                let (n, _) = s.read(BytesMut::with_capacity(64), 64).await;
                got += n.unwrap();
            }
            ticker.abort();
            assert!(ticks.get() > 0, "the reader never yielded");

            // The peer closed: recv reports end of stream.
            drop(client);
            std::thread::sleep(Duration::from_millis(20));
            s.maybe_more.set(long_ago());
            let (n, buf) = s.read(buf, 512).await;
            assert_eq!(n.unwrap(), 0);
            assert_eq!(&buf[..], b"hello world!");
        });
    }

    /// What `/proc/self/fd/<fd>` points at (`socket:[inode]`), if open.
    fn fd_target(fd: i32) -> Option<std::path::PathBuf> {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
    }

    /// Wait (bounded) until `fd` no longer names the socket it named
    /// (closed, or reused for another file by a test running beside us).
    async fn released(fd: i32, was: &std::path::Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if fd_target(fd).as_deref() != Some(was) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Issue 9 item 6: a stream dropped while a read or a write on it is
    /// still in the ring (cut off by a timeout) closes its fd, though the
    /// peer stays silent with its end open.
    #[test]
    fn issue9_item6_dropped_stream_releases_fd_with_op_in_flight() {
        let Ok(rt) = runtime() else {
            eprintln!("io_uring unavailable here; the epoll driver is tested instead");
            return;
        };
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();

            // A read the peer never answers, cut off by a timeout.
            let _silent = std::net::TcpStream::connect(addr).unwrap();
            let (server, _) = listener.accept().unwrap();
            let s = UringStream::new(tokio_uring::net::TcpStream::from_std(server));
            let fd = s.inner.as_raw_fd();
            let was = fd_target(fd).unwrap();
            let read = s.read(BytesMut::new(), 512);
            assert!(tokio::time::timeout(Duration::from_millis(50), read)
                .await
                .is_err());
            drop(s);
            assert!(released(fd, &was).await, "read in flight kept the fd open");

            // A write to a peer that never reads, cut off once the socket
            // buffers are full (bounded: loopback buffers hold a few MiB).
            let _stalled = std::net::TcpStream::connect(addr).unwrap();
            let (server, _) = listener.accept().unwrap();
            let s = UringStream::new(tokio_uring::net::TcpStream::from_std(server));
            let fd = s.inner.as_raw_fd();
            let was = fd_target(fd).unwrap();
            let chunk = Bytes::from(vec![0u8; 1 << 20]);
            let mut blocked = false;
            for _ in 0..1024 {
                let write = s.writev(vec![chunk.clone()]);
                if tokio::time::timeout(Duration::from_millis(100), write)
                    .await
                    .is_err()
                {
                    blocked = true;
                    break;
                }
            }
            assert!(blocked, "1 GiB went into a socket nobody reads");
            drop(s);
            assert!(released(fd, &was).await, "write in flight kept the fd open");
        });
    }

    /// Issue 9 item 6, the listener's side: dropped with an accept in the
    /// ring, it stops listening (connects are refused) and closes its fd.
    #[test]
    fn issue9_item6_dropped_listener_stops_listening_with_accept_in_flight() {
        let Ok(rt) = runtime() else {
            eprintln!("io_uring unavailable here; the epoll driver is tested instead");
            return;
        };
        rt.block_on(async {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std_listener.local_addr().unwrap();
            let l = UringListener::from_std(std_listener);
            let fd = l.0.as_raw_fd();
            let was = fd_target(fd).unwrap();
            assert!(tokio::time::timeout(Duration::from_millis(50), l.accept())
                .await
                .is_err());
            drop(l);
            let refused = std::net::TcpStream::connect(addr);
            assert!(
                refused.is_err(),
                "a dropped listener still accepts connects"
            );
            assert!(
                released(fd, &was).await,
                "accept in flight kept the fd open"
            );
        });
    }
}
