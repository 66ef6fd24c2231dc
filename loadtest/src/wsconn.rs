//! A minimal WebSocket client connection for load generation.
//!
//! Frames are built into one reusable write buffer (masked, as RFC 6455
//! requires of clients) and flushed in one `write_all`; replies are parsed in
//! place with wshandler's own frame parser. No allocation per message on the
//! send path.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wshandler::ws::frame::{FrameHeader, OpCode};
use wshandler::ws::mask::apply_mask;

/// A plain or TLS (`--tls`) stream.
#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Io {
    async fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.write_all(b).await,
            Io::Tls(s) => {
                s.write_all(b).await?;
                // rustls holds records until flushed.
                s.flush().await
            }
        }
    }

    async fn read_buf(&mut self, b: &mut BytesMut) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read_buf(b).await,
            Io::Tls(s) => s.read_buf(b).await,
        }
    }
}

/// An upgraded connection.
#[derive(Debug)]
pub struct WsConn {
    stream: Io,
    rbuf: BytesMut,
    wbuf: BytesMut,
    key: [u8; 4],
    /// The server closed (close frame or EOF).
    pub closed: bool,
}

/// Open a TCP connection from `src` (a loopback address) to `addr`, run
/// the TLS handshake if `tls` is given (the server certificate must name
/// `addr`'s IP), and upgrade it.
pub async fn connect(
    addr: SocketAddr,
    src: Option<IpAddr>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> io::Result<WsConn> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    sock.set_nonblocking(true)?;
    sock.set_nodelay(true)?;
    if let Some(ip) = src {
        // Let the kernel pick the port at connect time: each source address
        // then has its own ephemeral port range.
        bind_address_no_port(&sock);
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    let stream = match sock.connect(&addr.into()) {
        Ok(()) => TcpStream::from_std(sock.into())?,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let s = TcpStream::from_std(sock.into())?;
            s.writable().await?;
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            s
        }
        Err(e) => return Err(e),
    };
    let stream = match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let s = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, stream)
                .await?;
            Io::Tls(Box::new(s))
        }
        None => Io::Plain(stream),
    };
    let mut c = WsConn {
        stream,
        rbuf: BytesMut::with_capacity(8192),
        wbuf: BytesMut::with_capacity(8192),
        key: rand_key(),
        closed: false,
    };
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    c.stream.write_all(req.as_bytes()).await?;
    loop {
        if let Some(i) = memchr::memmem::find(&c.rbuf, b"\r\n\r\n") {
            if !c.rbuf.starts_with(b"HTTP/1.1 101") {
                let head = String::from_utf8_lossy(&c.rbuf[..i]).into_owned();
                return Err(io::Error::other(format!(
                    "upgrade refused: {}",
                    head.lines().next().unwrap_or("")
                )));
            }
            c.rbuf.advance(i + 4);
            return Ok(c);
        }
        if c.stream.read_buf(&mut c.rbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// `IP_BIND_ADDRESS_NO_PORT` (socket2 0.5 has no setter for it).
#[allow(unsafe_code)]
fn bind_address_no_port(sock: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid
    // pointer to a live c_int; the fd is owned by `sock` for the call.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn rand_key() -> [u8; 4] {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (n ^ 0x5bd1_e995).to_le_bytes()
}

impl WsConn {
    /// Queue a masked text frame whose payload `write` produces.
    pub fn queue_text_with(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let start = self.wbuf.len();
        // Reserve a 14-byte header, write the payload, then fix the header up.
        self.wbuf.put_bytes(0, 14);
        write(&mut self.wbuf);
        let len = self.wbuf.len() - start - 14;
        let mut hdr = [0u8; 14];
        hdr[0] = 0x80 | OpCode::Text.as_u8();
        let hl = match len {
            0..=125 => {
                hdr[1] = 0x80 | len as u8;
                2
            }
            126..=65535 => {
                hdr[1] = 0x80 | 126;
                hdr[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                hdr[1] = 0x80 | 127;
                hdr[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        hdr[hl..hl + 4].copy_from_slice(&self.key);
        let total_hdr = hl + 4;
        // Move the payload left over the unused header bytes.
        let payload_start = start + 14;
        self.wbuf.copy_within(payload_start.., start + total_hdr);
        self.wbuf.truncate(start + total_hdr + len);
        self.wbuf[start..start + total_hdr].copy_from_slice(&hdr[..total_hdr]);
        apply_mask(&mut self.wbuf[start + total_hdr..], self.key, 0);
    }

    /// Queue a masked text frame.
    pub fn queue_text(&mut self, payload: &[u8]) {
        self.queue_text_with(|b| b.extend_from_slice(payload));
    }

    /// Queue a masked pong.
    fn queue_pong(&mut self, payload: &[u8]) {
        let mut f = vec![0x80 | OpCode::Pong.as_u8(), 0x80 | payload.len() as u8];
        f.extend_from_slice(&self.key);
        let start = f.len();
        f.extend_from_slice(payload);
        apply_mask(&mut f[start..], self.key, 0);
        self.wbuf.extend_from_slice(&f);
    }

    /// Bytes waiting to be flushed.
    pub fn pending(&self) -> usize {
        self.wbuf.len()
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// The next text message already buffered, without reading.
    pub fn try_next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let h = match FrameHeader::parse(&self.rbuf) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            let total = h.header_len + h.payload_len as usize;
            if self.rbuf.len() < total {
                self.rbuf.reserve(total - self.rbuf.len());
                return Ok(None);
            }
            self.rbuf.advance(h.header_len);
            let payload = self.rbuf.split_to(h.payload_len as usize).freeze();
            match h.opcode {
                OpCode::Text | OpCode::Binary => return Ok(Some(payload)),
                OpCode::Ping => self.queue_pong(&payload),
                OpCode::Close => {
                    self.closed = true;
                    return Ok(None);
                }
                _ => {}
            }
        }
    }

    /// Read until a text message arrives; `None` when the server closed.
    pub async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if let Some(m) = self.try_next()? {
                return Ok(Some(m));
            }
            if self.closed {
                return Ok(None);
            }
            if !self.wbuf.is_empty() {
                self.flush().await?; // pongs
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(8192);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                self.closed = true;
                return Ok(None);
            }
        }
    }
}

/// The value of `"type"` in a JSON message, found by scanning.
pub fn msg_type(m: &[u8]) -> &[u8] {
    str_field(m, b"\"type\":\"").unwrap_or(b"")
}

/// The string after `key` (e.g. `"type":"`) up to the next quote.
pub fn str_field<'a>(m: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let i = memchr::memmem::find(m, key)? + key.len();
    let end = memchr::memchr(b'"', &m[i..])?;
    Some(&m[i..i + end])
}

/// The unsigned integer after `key` (e.g. `"seq":`).
pub fn u64_field(m: &[u8], key: &[u8]) -> Option<u64> {
    let i = memchr::memmem::find(m, key)? + key.len();
    let digits = m[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&m[i..i + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning() {
        let m = br#"{"type":"publish","topic":"t","data":{"p":3,"s":17,"ts":123456}}"#;
        assert_eq!(msg_type(m), b"publish");
        assert_eq!(u64_field(m, b"\"s\":"), Some(17));
        assert_eq!(u64_field(m, b"\"p\":"), Some(3));
        assert_eq!(str_field(m, b"\"topic\":\""), Some(&b"t"[..]));
    }
}
