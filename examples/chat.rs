//! The seed's Example 2, chat: `data` messages of type `chat` are published
//! to everyone on `chat-room`.
//!
//! ```sh
//! cargo run --example chat            # serve on 127.0.0.1:3000 until Ctrl-C
//! cargo run --example chat -- --demo  # plus two scripted users, then exit
//! ```

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wshandler::{Config, Event, WebSocketHandler};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let demo = std::env::args().any(|a| a == "--demo");
    let mut server = WebSocketHandler::new(Config {
        host: "127.0.0.1".into(),
        port: if demo { 0 } else { 3000 },
        enable_pub_sub: true,
        enable_authentication: false,
        persist: false,
        ..Config::default()
    });
    server.start().await?;
    let handle = server.handle()?;
    server.on("data-received", move |event| {
        if let Event::DataReceived {
            data, data_type, ..
        } = event
        {
            if data_type == "chat" {
                let msg = json!({
                    "user": data["username"],
                    "message": data["message"],
                    "timestamp": wshandler::protocol::json::now_iso(),
                });
                let _ = handle.publish("chat-room", &msg, None);
            }
        }
    });
    let addr = server.local_addr().expect("started");
    println!("chat server on ws://{addr}");
    if demo {
        let url = format!("ws://{addr}/");
        let (mut alice, _) = tokio_tungstenite::connect_async(&url).await?;
        let (mut bob, _) = tokio_tungstenite::connect_async(&url).await?;
        bob.send(Message::text(
            json!({"type": "subscribe", "topic": "chat-room"}).to_string(),
        ))
        .await?;
        // Wait for bob's subscription to be active before alice speaks.
        loop {
            let v: serde_json::Value =
                serde_json::from_str(&bob.next().await.expect("open")?.into_text()?)?;
            if v["type"] == "subscribe_response" {
                break;
            }
        }
        let hello = json!({"type": "data", "dataType": "chat", "data": {"username": "alice", "message": "hi bob"}});
        alice.send(Message::text(hello.to_string())).await?;
        loop {
            let v: serde_json::Value =
                serde_json::from_str(&bob.next().await.expect("open")?.into_text()?)?;
            if v["type"] == "publish" {
                println!("bob sees: {}: {}", v["data"]["user"], v["data"]["message"]);
                break;
            }
        }
    } else {
        tokio::signal::ctrl_c().await?;
    }
    server.stop().await;
    Ok(())
}
