//! The transport of one WebSocket connection: upgrade, reader loop, writer
//! task. Protocol-free: it calls the handlers' `on_open`, `on_message` and
//! `on_close` and moves the connection's out-queue to the socket.
//!
//! Written once, generic over the driver's [`Stream`]. The reader owns the
//! read buffer and the WebSocket session; frames anyone on the shard wants
//! to send go into the connection's out-queue ([`Conn`]), and a writer task
//! flushes it with vectored writes. Both tasks and everything that pushes
//! frames run on the same shard thread, so the shared state is `Rc` +
//! `RefCell`/`Cell`: no atomics, no locks.
//!
//! Back-pressure has three faces:
//! - replies to a connection's own messages (echo, responses): when the
//!   queue is over `max_backpressure`, the reader stops reading until the
//!   writer drains it, so TCP pushes back on the client;
//! - frames pushed by others (broadcast, pub/sub, server-issued requests):
//!   a consumer whose queue is already over the bound is a slow consumer
//!   and is closed with 1008 and a `client-error` event — memory never
//!   grows without limit;
//! - the store writer is behind: every reader on the shard waits for the
//!   shard's store queue ([`crate::store::StoreQueue::ready`]).

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::{debug, trace};

use super::admission::{Refusal, RefusalKind, Ticket};
use super::client::{Conn, CLOSE_TIMEOUT};
use super::ctx::ShardCtx;
use super::driver::tls::TlsStream;
use super::driver::Stream;
use super::http;
use super::seclog::SecEvent;
use crate::events::Event;
use crate::metrics::{CloseLabel, RejectReason};
use crate::ws::close;
use crate::ws::deflate::{self, Deflate, DeflatePolicy};
use crate::ws::handshake::{self, Decision, Rejection};
use crate::ws::Message;

/// Smallest read issued; also the read buffer an idle io_uring connection holds.
const MIN_READ: usize = 512;
/// Largest single read.
const MAX_READ: usize = 256 * 1024;
/// Buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// How long the writer may take to flush before the socket is dropped.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How the reader loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The close handshake completed (either side started it).
    Closed,
    /// We failed the connection (protocol error) and queued a close.
    Failed,
    /// The peer went away without a close, or a socket error.
    Dropped,
    /// Killed (close timeout, write error).
    Killed,
}

/// Serve one accepted TCP connection to the end.
pub(crate) async fn serve<S: Stream>(stream: S, peer: SocketAddr, ctx: Rc<ShardCtx>) {
    let deadline = tokio::time::Instant::now() + ctx.shared.config.handshake_timeout;
    serve_upgraded(stream, peer, ctx, deadline, None).await
}

/// Serve one connection accepted on `admin_listen`: one HTTP request
/// (no upgrades there).
pub(crate) async fn serve_admin<S: Stream>(stream: S, peer: SocketAddr, ctx: Rc<ShardCtx>) {
    let deadline = tokio::time::Instant::now() + ctx.shared.config.handshake_timeout;
    let mut buf = BytesMut::new();
    let _ = Box::pin(handshake_phase(
        &stream,
        &mut buf,
        peer,
        &ctx,
        deadline,
        http::Listener::Admin,
    ))
    .await;
    Box::pin(linger(&stream)).await;
}

/// Serve one accepted TCP connection on a TLS listener: the TLS handshake,
/// then [`serve`]'s upgrade and connection over the decrypted stream. The
/// TLS handshake and the HTTP upgrade together get `handshake_timeout`
/// (the slow-loris guard covers both).
pub(crate) async fn serve_tls<S: Stream>(stream: S, peer: SocketAddr, ctx: Rc<ShardCtx>) {
    let deadline = tokio::time::Instant::now() + ctx.shared.config.handshake_timeout;
    let Some(tls) = ctx.shared.tls.as_ref() else {
        return; // a TLS listener exists only with TLS configured
    };
    // The configuration current now stays this connection's for its life:
    // a reload changes what later connections get.
    let stream = match TlsStream::new(stream, tls.current(), tls.identity()) {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, error = %e, "TLS connection could not be set up");
            return;
        }
    };
    let done = tokio::time::timeout_at(deadline, Box::pin(stream.handshake())).await;
    let failure = match done {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("TLS handshake timeout".to_owned()),
    };
    if let Some(reason) = failure {
        ctx.m.rejected[RejectReason::Tls as usize].inc();
        ctx.seclog
            .log(SecEvent::TlsHandshake, ctx.id, peer, "-", || reason);
        // The alert is out; let the peer read it before the socket closes.
        Box::pin(linger(stream.inner())).await;
        return;
    }
    let identity = if tls.mutual() {
        cert_identity(&stream, ctx.shared.config.max_id_length)
    } else {
        None
    };
    serve_upgraded(stream, peer, ctx, deadline, identity).await
}

/// The device identity of a mutual-TLS client certificate, if it names
/// one no longer than `max_id_length` (the bound every device id has).
fn cert_identity<S: Stream>(stream: &TlsStream<S>, max_id_length: usize) -> Option<String> {
    let id = stream.peer_identity()?;
    if id.len() > max_id_length {
        debug!(
            len = id.len(),
            max_id_length, "client certificate identity too long: not used"
        );
        return None;
    }
    Some(id)
}

/// Mark `conn` authenticated as the device its client certificate names
/// (mutual TLS): it needs no token. Done before `on_open`, so the welcome
/// already reflects it. Returns the identity, which `on_open_with` then
/// installs as the connection's credential (it wins over a token the
/// upgrade request carried: the certificate was verified in the handshake).
fn grant_cert_identity(conn: &Conn, id: &str) -> crate::auth::Identity {
    let identity = crate::auth::Identity {
        device_id: Some(id.into()),
        client_type: None,
        permissions: None,
        expires_at: None,
        scope: format!("cert:{id}").into(),
    };
    let mut c = conn.client.borrow_mut();
    c.grant = Some(identity.clone());
    c.authenticated = true;
    c.device_id = Some(id.to_owned());
    identity
}

/// The upgrade and the connection, over a plain or a TLS stream;
/// `cert_id` is the device a client certificate proved (mutual TLS).
async fn serve_upgraded<S: Stream>(
    stream: S,
    peer: SocketAddr,
    ctx: Rc<ShardCtx>,
    deadline: tokio::time::Instant,
    cert_id: Option<String>,
) {
    let stream = Rc::new(stream);
    let mut buf = BytesMut::new();
    // Boxed: the handshake's state is freed once it is done instead of
    // staying inline (as dead space) in every connection's task.
    let Some(Upgraded {
        deflate,
        credential,
        ticket,
        client_ip,
    }) = Box::pin(handshake_phase(
        &*stream,
        &mut buf,
        peer,
        &ctx,
        deadline,
        http::Listener::Main,
    ))
    .await
    else {
        Box::pin(linger(&*stream)).await;
        return;
    };
    if buf.is_empty() {
        buf = BytesMut::new(); // the read loop sizes its own buffer
    }
    // From here on we hold one slot of max_connections (taken in handshake_phase).
    let conn = ctx.new_conn(peer, deflate);
    conn.client_ip.set(client_ip);
    let credential = match &cert_id {
        Some(id) => Some(Ok(grant_cert_identity(&conn, id))),
        None => credential,
    };
    ctx.insert(conn.clone());
    // Releases the slot (registry entry, max_connections count, the
    // address's place under max_connections_per_ip) however this task ends,
    // a panic in a handler included.
    let _slot = Slot {
        ctx: ctx.clone(),
        conn: conn.clone(),
        ticket: Some(ticket),
    };
    ctx.shared.events.emit(|| Event::ClientConnected {
        client_id: conn.client_id.clone(),
        remote_addr: peer,
    });
    ctx.connlog.opened();
    debug!(client = %conn.client_id, %peer, "connected");

    ctx.on_open_with(&conn, credential);
    let writer = tokio::task::spawn_local(write_loop(stream.clone(), conn.clone()));
    let end = read_loop(&*stream, &conn, buf, &ctx).await;
    trace!(client = %conn.client_id, ?end, "reader done");

    conn.closing.set(true);
    conn.wake_writer();
    if end != End::Killed {
        let abort = writer.abort_handle();
        if Box::pin(tokio::time::timeout(FLUSH_TIMEOUT, writer))
            .await
            .is_err()
        {
            abort.abort();
        }
    } else {
        writer.abort();
    }
    if end != End::Killed {
        Box::pin(linger(&*stream)).await;
    }
    debug!(client = %conn.client_id, peer = %conn.peer, ?end, "disconnected");
}

/// A connection's place on the shard; dropping it frees the place.
struct Slot {
    ctx: Rc<ShardCtx>,
    conn: Rc<Conn>,
    /// Its address's place among that address's open connections.
    ticket: Option<Ticket>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (ctx, conn) = (&self.ctx, &self.conn);
        conn.abort();
        ctx.on_close(conn);
        ctx.remove(conn.key);
        // Before the count and the event: whoever sees either may connect again.
        drop(self.ticket.take());
        ctx.shared.conn_count.fetch_sub(1, Ordering::AcqRel);
        ctx.m.closes[CloseLabel::of(conn.close_code.get()) as usize].inc();
        ctx.connlog.closed();
        let duration = conn.connected_at.elapsed().as_millis() as u64;
        ctx.shared.events.emit(|| Event::ClientDisconnected {
            client_id: conn.client_id.clone(),
            connected_duration_ms: duration,
            code: conn.close_code.get(),
        });
    }
}

/// What an accepted upgrade agreed.
struct Upgraded {
    /// The deflate state (`None`: no compression).
    deflate: Option<Deflate>,
    /// A credential the request carried (`Authorization: Bearer`, or
    /// `?token=` when `allow_query_token`), verified; `None` if none was
    /// presented or authentication is off.
    credential: Option<Result<crate::auth::Identity, crate::auth::AuthError>>,
    /// The address's place under `limits.max_connections_per_ip`.
    ticket: Ticket,
    /// The client's address: the peer's, or what a trusted proxy forwarded.
    client_ip: IpAddr,
}

/// Read the upgrade request and answer it. Returns what was agreed, or
/// `None` if the connection is done (refused, health check, timeout).
async fn handshake_phase<S: Stream>(
    stream: &S,
    buf: &mut BytesMut,
    peer: SocketAddr,
    ctx: &ShardCtx,
    deadline: tokio::time::Instant,
    on: http::Listener,
) -> Option<Upgraded> {
    let (req, head_len) = loop {
        match handshake::parse_request(buf) {
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(e) => {
                let status = match e {
                    handshake::HandshakeError::TooLarge => 431,
                    handshake::HandshakeError::Malformed(_) => 400,
                };
                let r = Rejection {
                    status,
                    message: e.to_string(),
                };
                ctx.m.rejected[RejectReason::BadHandshake as usize].inc();
                write_all(stream, handshake::reject_response(&r).into()).await;
                return None;
            }
        }
        let b = std::mem::take(buf);
        let read = tokio::time::timeout_at(deadline, stream.read(b, 1024)).await;
        match read {
            Ok((Ok(n), b)) if n > 0 => *buf = b,
            _ => return None,
        }
    };
    bytes::Buf::advance(buf, head_len);
    if http::is_route(&req, on) {
        http::serve(stream, &req, buf, ctx, deadline, on).await;
        return None;
    }
    if on == http::Listener::Admin {
        let r = Rejection {
            status: 400,
            message: "WebSocket upgrades are not served on admin_listen".into(),
        };
        write_all(stream, handshake::reject_response(&r).into()).await;
        return None;
    }
    match req.decide() {
        Decision::Health => {
            let body = ctx.shared.health_json();
            write_all(stream, handshake::json_response(200, &body).into()).await;
            None
        }
        Decision::Reject(r) => {
            ctx.m.rejected[RejectReason::BadHandshake as usize].inc();
            ctx.connlog.refused();
            debug!(status = r.status, reason = %r.message, "handshake refused");
            write_all(stream, handshake::reject_response(&r).into()).await;
            None
        }
        Decision::Accept { accept_key } => {
            let shared = &ctx.shared;
            let client_ip = shared.admission.client_ip(peer.ip(), &req.forwarded_for);
            // Before the max_connections slot: a refused address must not
            // hold one, even for a moment.
            let ticket = if shared.stopping.load(Ordering::Acquire) {
                Ticket::none() // refused just below
            } else {
                match shared.admission.admit(client_ip, req.origin.as_deref()) {
                    Ok(t) => t,
                    Err(r) => {
                        ctx.m.rejected[RejectReason::Admission as usize].inc();
                        ctx.connlog.refused();
                        refuse_upgrade(stream, ctx, peer, client_ip, &r).await;
                        return None;
                    }
                }
            };
            let refuse = if shared.stopping.load(Ordering::Acquire) {
                ctx.m.rejected[RejectReason::ShuttingDown as usize].inc();
                Some("server is shutting down".to_owned())
            } else if shared.conn_count.fetch_add(1, Ordering::AcqRel)
                >= shared.config.max_connections
            {
                shared.conn_count.fetch_sub(1, Ordering::AcqRel);
                ctx.m.rejected[RejectReason::MaxConnections as usize].inc();
                Some(format!(
                    "max_connections ({}) reached",
                    shared.config.max_connections
                ))
            } else {
                None
            };
            if let Some(message) = refuse {
                ctx.connlog.refused();
                debug!(%peer, reason = %message, "handshake refused");
                let r = Rejection {
                    status: 503,
                    message,
                };
                write_all(stream, handshake::reject_response(&r).into()).await;
                return None;
            }
            let agreed = if shared.config.enable_compression {
                let c = &shared.config;
                let policy = DeflatePolicy {
                    window_bits: c.compression_window_bits,
                    mem_level: c.compression_mem_level,
                    context_takeover: c.compression_context_takeover,
                };
                deflate::negotiate(&policy, req.extensions.iter().map(String::as_str))
            } else {
                None
            };
            let resp =
                handshake::accept_response(&accept_key, agreed.as_ref().map(|(_, s)| s.as_str()));
            if !write_all(stream, resp.into()).await {
                shared.conn_count.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            ctx.m.accepted.inc();
            let mem_level = shared.config.compression_mem_level;
            let credential = if shared.config.enable_authentication {
                let query;
                let token = match req.bearer_token() {
                    Some(t) => Some(t),
                    None if shared.config.allow_query_token => {
                        query = req.query_param("token");
                        query.as_deref()
                    }
                    None => None,
                };
                token.map(|t| shared.auth.load().verify(t, std::time::SystemTime::now()))
            } else {
                None
            };
            Some(Upgraded {
                deflate: agreed.map(|(p, _)| Deflate::with_mem_level(p, mem_level)),
                credential,
                ticket,
                client_ip,
            })
        }
    }
}

/// Answer an upgrade the `[limits]` checks refused, and log it (rate-limited).
async fn refuse_upgrade<S: Stream>(
    stream: &S,
    ctx: &ShardCtx,
    peer: SocketAddr,
    client_ip: IpAddr,
    r: &Refusal,
) {
    let ev = match r.kind() {
        RefusalKind::Origin => SecEvent::OriginRefused,
        RefusalKind::AuthBackoff => SecEvent::AuthBackoff,
        RefusalKind::Rate => SecEvent::RateLimited,
        RefusalKind::PerIpConnections => SecEvent::PerIpConnections,
        RefusalKind::TrackedIpsFull => SecEvent::TrackedIpsFull,
    };
    ctx.seclog.log(ev, ctx.id, peer, "-", || {
        let via = if client_ip == peer.ip().to_canonical() {
            String::new()
        } else {
            format!(" (client {client_ip}, forwarded)")
        };
        match r {
            Refusal::Origin { origin } => format!("Origin `{}`{via}", origin_clip(origin)),
            other => format!("{other}{via}"),
        }
    });
    let resp = handshake::refusal_response(r.status(), r.code(), &r.to_string(), r.retry_after());
    write_all(stream, resp.into()).await;
}

/// An `Origin` header for the log: at most 128 bytes.
fn origin_clip(o: &str) -> &str {
    let mut end = o.len().min(128);
    while !o.is_char_boundary(end) {
        end -= 1;
    }
    &o[..end]
}

/// Write one buffer (a handshake-phase response) completely; false on error,
/// or if the peer has not taken it within [`CLOSE_TIMEOUT`]: a peer that
/// never reads cannot hold the connection open.
async fn write_all<S: Stream>(stream: &S, b: Bytes) -> bool {
    super::driver::write_all(stream, b, CLOSE_TIMEOUT).await
}

/// After our FIN, read and discard until the peer closes (or a short
/// timeout), so unread input doesn't turn our close into a reset.
async fn linger<S: Stream>(stream: &S) {
    stream.shutdown_write();
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    let mut b = BytesMut::new();
    loop {
        b.clear();
        match tokio::time::timeout_at(deadline, stream.read(b, 4096)).await {
            Ok((Ok(n), back)) if n > 0 => b = back,
            _ => return,
        }
    }
}

async fn read_loop<S: Stream>(
    stream: &S,
    conn: &Rc<Conn>,
    mut buf: BytesMut,
    ctx: &Rc<ShardCtx>,
) -> End {
    let mut read_size = MIN_READ;
    loop {
        // Everything already buffered first (the handshake may have carried frames).
        loop {
            let r = {
                let mut session = conn.session.borrow_mut();
                session.read(&mut buf, &mut conn.out.borrow_mut())
            };
            match r {
                Ok(Some(Message::Close(cf))) => {
                    if conn.close_code.get().is_none() {
                        conn.close_code.set(cf.code.or(Some(close::NORMAL)));
                    }
                    return End::Closed;
                }
                Ok(Some(msg)) => {
                    conn.msgs_in.set(conn.msgs_in.get() + 1);
                    ctx.on_message(conn, msg)
                }
                Ok(None) => break,
                Err(e) => {
                    ctx.seclog.log(
                        SecEvent::ProtocolError,
                        ctx.id,
                        conn.peer,
                        &conn.client_id,
                        || format!("{e} (close {})", e.close_code()),
                    );
                    conn.session
                        .borrow_mut()
                        .fail(&e, &mut conn.out.borrow_mut());
                    conn.close_code.set(Some(e.close_code()));
                    ctx.shared.events.emit(|| Event::ClientError {
                        client_id: conn.client_id.clone(),
                        message: e.to_string(),
                        code: e.close_code(),
                    });
                    return End::Failed;
                }
            }
        }
        if conn.dead.get() {
            return End::Killed;
        }
        if !conn.out.borrow().is_empty() {
            conn.wake_writer();
        }
        // The store writer is behind: stop reading until it catches up
        // (TCP back-pressure instead of an unbounded queue).
        if let Some(q) = ctx.store.as_ref().filter(|q| q.is_blocked()) {
            tokio::select! {
                _ = q.ready() => {}
                _ = conn.kill.wait() => return End::Killed,
            }
        }
        // Our own replies are piling up: stop reading until they drain.
        while conn.out.borrow().bytes() > conn.max_backpressure {
            conn.drained.wait().await;
            if conn.dead.get() {
                return End::Killed;
            }
        }
        let need = conn.session.borrow().wanted(&buf).saturating_sub(buf.len());
        let want = need.clamp(read_size, MAX_READ.max(read_size));
        let want = want
            .min(ctx.shared.config.max_message_size() + 14)
            .max(MIN_READ);
        if buf.is_empty() && buf.capacity() > 4 * want {
            buf = BytesMut::new(); // give back a buffer grown for a burst
        }
        let (res, b) = tokio::select! {
            r = stream.read(buf, want) => r,
            _ = conn.kill.wait() => return End::Killed,
        };
        buf = b;
        match res {
            Ok(0) => return End::Dropped,
            Ok(n) => {
                ctx.m.wire_in.add(n as u64);
                conn.last_seen.set(ctx.tick.get());
                if n >= want {
                    read_size = (read_size * 2).min(64 * 1024);
                } else if n < read_size / 4 {
                    read_size = (read_size / 2).max(MIN_READ);
                }
            }
            Err(e) => {
                trace!(client = %conn.client_id, error = %e, "read error");
                return End::Dropped;
            }
        }
    }
}

async fn write_loop<S: Stream>(stream: Rc<S>, conn: Rc<Conn>) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        if conn.dead.get() {
            return;
        }
        if conn.out.borrow().is_empty() {
            if conn.closing.get() {
                return;
            }
            batch = Vec::new(); // hold nothing while idle
            conn.writer.wait().await;
            continue;
        }
        conn.out.borrow_mut().take_batch(&mut batch, MAX_IOVECS);
        let (res, mut b) = stream.writev(batch).await;
        match res {
            Ok(n) if n > 0 => {
                conn.m.wire_out.add(n as u64);
                conn.out.borrow_mut().written(&mut b, n);
                batch = b;
                if conn.out.borrow().bytes() <= conn.max_backpressure {
                    conn.drained.notify();
                }
            }
            _ => {
                conn.abort();
                return;
            }
        }
    }
}
