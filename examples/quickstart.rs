//! The README's quick start, kept here so it is compiled with every build:
//! `cargo run --example quickstart` serves on port 8080 until Ctrl-C.

use serde_json::json;
use wshandler::{Config, Event, WebSocketHandler};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut server = WebSocketHandler::new(Config {
        port: 8080,
        persist: false,
        ..Config::default()
    });
    server.register_rpc_method("calculateAverage", |_ctx, params| async move {
        let v = params["values"]
            .as_array()
            .ok_or("values must be an array")?;
        let sum: f64 = v.iter().filter_map(|x| x.as_f64()).sum();
        Ok(json!(sum / v.len() as f64))
    });
    server.start().await?;
    let handle = server.handle()?;
    server.on("data-received", move |e| {
        if let Event::DataReceived { data, .. } = e {
            if data["temperature"].as_f64() > Some(30.0) {
                let _ = handle.publish("temperature-alerts", data, None);
            }
        }
    });
    tokio::signal::ctrl_c().await?;
    server.stop().await;
    Ok(())
}
