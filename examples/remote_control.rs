//! The seed's Example 3, remote control: RPC methods `turnOnLight` and
//! `getTemperature` for authenticated clients.
//!
//! ```sh
//! cargo run --example remote_control            # serve on 127.0.0.1:4000 until Ctrl-C
//! cargo run --example remote_control -- --demo  # plus a scripted controller, then exit
//! ```

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wshandler::{Config, WebSocketHandler};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let demo = std::env::args().any(|a| a == "--demo");
    let mut server = WebSocketHandler::new(Config {
        host: "127.0.0.1".into(),
        port: if demo { 0 } else { 4000 },
        enable_rpc: true,
        enable_authentication: true,
        auth_token: Some(std::env::var("CONTROL_TOKEN").unwrap_or_else(|_| "control-token".into())),
        persist: false,
        ..Config::default()
    });
    server.register_rpc_method("turnOnLight", |_, params| async move {
        let room = params["roomId"]
            .as_str()
            .ok_or("roomId is required")?
            .to_owned();
        let brightness = params["brightness"].as_u64().unwrap_or(100).min(100);
        // A real system would talk to the light here.
        Ok(json!({"roomId": room, "on": true, "brightness": brightness}))
    });
    server.register_rpc_method("getTemperature", |_, params| async move {
        let room = params["roomId"].as_str().ok_or("roomId is required")?;
        Ok(json!({"roomId": room, "temperature": 21.5}))
    });
    server.start().await?;
    let addr = server.local_addr().expect("started");
    println!("control server on ws://{addr}");
    if demo {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
        for m in [
            json!({"type": "auth", "token": "control-token"}),
            json!({"type": "rpc_call", "requestId": "1", "method": "turnOnLight", "params": {"roomId": "kitchen", "brightness": 80}}),
            json!({"type": "rpc_call", "requestId": "2", "method": "getTemperature", "params": {"roomId": "kitchen"}}),
        ] {
            ws.send(Message::text(m.to_string())).await?;
        }
        let mut answered = 0;
        while answered < 2 {
            let v: serde_json::Value =
                serde_json::from_str(&ws.next().await.expect("open")?.into_text()?)?;
            if v["type"] == "rpc_response" {
                println!("{} -> {}", v["requestId"], v["data"]);
                answered += 1;
            }
        }
    } else {
        tokio::signal::ctrl_c().await?;
    }
    server.stop().await;
    Ok(())
}
