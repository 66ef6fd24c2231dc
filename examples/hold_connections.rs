//! Open N WebSocket connections to a server on loopback, hold them idle for a
//! while, and report how many are still open; used for the idle-memory
//! figure in docs/benchmarks.md.
//!
//! ```sh
//! cargo run --release --example hold_connections -- 127.0.0.1:9001 10000 30
//! ```
//! Arguments: address (loopback only), connection count, seconds to hold.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn open(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut b = [0u8; 256];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&b[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    Ok(s)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args
        .get(1)
        .map_or("127.0.0.1:9001", |s| s)
        .parse()
        .expect("address");
    assert!(addr.ip().is_loopback(), "loopback targets only");
    let n: usize = args.get(2).map_or(10_000, |s| s.parse().expect("count"));
    let hold = Duration::from_secs(args.get(3).map_or(30, |s| s.parse().expect("seconds")));
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let batch = futures_util::future::join_all(chunk.iter().map(|_| open(addr))).await;
        for r in batch {
            match r {
                Ok(s) => conns.push(s),
                Err(e) => {
                    failed += 1;
                    if failed == 1 {
                        eprintln!("first failure: {e}");
                    }
                }
            }
        }
    }
    println!(
        "opened {} connections ({failed} failed) in {:.2?}; holding {hold:?}",
        conns.len(),
        t0.elapsed()
    );
    tokio::time::sleep(hold).await;
    // Count connections the server closed while we held them.
    let mut alive = 0;
    for s in &conns {
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => alive += 1,
            _ => {}
        }
    }
    println!("alive at end: {alive}/{}", conns.len());
}
