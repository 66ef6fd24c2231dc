//! Binding the shards' SO_REUSEPORT listeners (socket2).
//!
//! All sockets are bound on the calling thread before any shard starts, so a
//! port that is taken fails `start()` with an error naming the address, and
//! `port = 0` resolves to one ephemeral port shared by every shard.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

/// Why the listeners could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process listens on the address.
    #[error("address {addr} is already in use")]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding failed for another reason.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The host did not resolve.
    #[error("cannot resolve host {host:?}: {message}")]
    Resolve {
        /// The configured host.
        host: String,
        /// The resolver's message.
        message: String,
    },
}

impl BindError {
    /// The error for `source` while binding `addr` (the one place that
    /// tells a taken port from other failures).
    fn at(addr: SocketAddr, source: io::Error) -> BindError {
        if source.kind() == io::ErrorKind::AddrInUse {
            BindError::AddrInUse { addr }
        } else {
            BindError::Bind { addr, source }
        }
    }
}

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

fn bind_one(addr: SocketAddr, backlog: u32) -> Result<TcpListener, BindError> {
    let s = socket_for(addr, true).map_err(|e| BindError::at(addr, e))?;
    s.bind(&addr.into()).map_err(|e| BindError::at(addr, e))?;
    // The config bounds it to 1..=65535.
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    s.listen(backlog).map_err(|e| BindError::at(addr, e))?;
    Ok(s.into())
}

/// The address `l` listens on (`port` names it in the error).
pub(crate) fn local_addr(l: &TcpListener, port: u16) -> Result<SocketAddr, BindError> {
    l.local_addr()
        .map_err(|e| BindError::at(SocketAddr::from(([0, 0, 0, 0], port)), e))
}

/// Resolve `host:port` and bind `n` listeners sharing it, each with an
/// accept queue of `backlog`.
pub(crate) fn bind_all(
    host: &str,
    port: u16,
    n: usize,
    backlog: u32,
) -> Result<Vec<TcpListener>, BindError> {
    let resolve = |message: String| BindError::Resolve {
        host: host.to_owned(),
        message,
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| resolve(e.to_string()))?
        .next()
        .ok_or_else(|| resolve("no address".into()))?;
    if port != 0 {
        // SO_REUSEPORT would let us silently share a port with another
        // process of the same user: probe with a plain socket first.
        let probe = socket_for(addr, false).map_err(|e| BindError::at(addr, e))?;
        probe
            .bind(&addr.into())
            .map_err(|e| BindError::at(addr, e))?;
        drop(probe);
    }
    let first = bind_one(addr, backlog)?;
    let actual = first.local_addr().map_err(|e| BindError::at(addr, e))?;
    let mut out = vec![first];
    for _ in 1..n {
        out.push(bind_one(actual, backlog)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_addr_in_use_and_port_zero_is_shared() {
        let ls = bind_all("127.0.0.1", 0, 2, 16).unwrap();
        let addr = ls[0].local_addr().unwrap();
        assert_eq!(
            ls[1].local_addr().unwrap(),
            addr,
            "one port for every shard"
        );
        let err = bind_all("127.0.0.1", addr.port(), 1, 16).unwrap_err();
        assert!(
            matches!(err, BindError::AddrInUse { addr: a } if a == addr),
            "{err}"
        );
        assert!(matches!(
            bind_all("no-such-host.invalid", 0, 1, 16),
            Err(BindError::Resolve { .. })
        ));
    }
}
