//! Binding the shards' SO_REUSEPORT listeners (socket2).
//!
//! All sockets are bound on the calling thread before any shard starts, so a
//! port that is taken fails `start()` with an error naming the address, and
//! `port = 0` resolves to one ephemeral port shared by every shard.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

use crate::server::ServerError;

const BACKLOG: i32 = 4096;

fn socket_for(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn bind_one(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let bind_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ServerError::AddrInUse { addr }
        } else {
            ServerError::Bind { addr, source }
        }
    };
    let s = socket_for(addr, true).map_err(bind_err)?;
    s.bind(&addr.into()).map_err(bind_err)?;
    s.listen(BACKLOG).map_err(bind_err)?;
    Ok(s.into())
}

/// Resolve `host:port` and bind `n` listeners sharing it.
pub(crate) fn bind_all(host: &str, port: u16, n: usize) -> Result<Vec<TcpListener>, ServerError> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| ServerError::Resolve {
            host: host.to_owned(),
            message: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ServerError::Resolve {
            host: host.to_owned(),
            message: "no address".into(),
        })?;
    if port != 0 {
        // SO_REUSEPORT would let us silently share a port with another
        // process of the same user: probe with a plain socket first.
        let probe = socket_for(addr, false).map_err(|source| ServerError::Bind { addr, source })?;
        probe.bind(&addr.into()).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                ServerError::AddrInUse { addr }
            } else {
                ServerError::Bind { addr, source }
            }
        })?;
        drop(probe);
    }
    let first = bind_one(addr)?;
    let actual = first
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let mut out = vec![first];
    for _ in 1..n {
        out.push(bind_one(actual)?);
    }
    Ok(out)
}
