//! The seed's Example 1, IoT temperature sensor: authenticated sensors send
//! readings; a reading over 30 °C is published on `temperature-alerts`.
//!
//! ```sh
//! cargo run --example iot_temperature            # serve on 127.0.0.1:8080 until Ctrl-C
//! cargo run --example iot_temperature -- --demo  # plus a scripted sensor and dashboard, then exit
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
        port: if demo { 0 } else { 8080 },
        enable_authentication: true,
        auth_token: Some("sensor-secret-123".into()),
        db_table_name: "temperature_readings".into(),
        required_fields: vec!["temperature".into(), "sensor_id".into()],
        enable_data_validation: true,
        // Readings are stored durably; the demo keeps them in a temp dir.
        data_dir: if demo {
            std::env::temp_dir().join(format!("wshandler-iot-demo-{}", std::process::id()))
        } else {
            "./wshandler-data".into()
        },
        ..Config::default()
    });
    server.start().await?;
    let handle = server.handle()?;
    server.on("data-received", move |event| {
        if let Event::DataReceived {
            data, data_type, ..
        } = event
        {
            if data_type == "sensor" {
                println!(
                    "Temperature: {}°C from sensor {}",
                    data["temperature"], data["sensor_id"]
                );
                if data["temperature"].as_f64().unwrap_or(0.0) > 30.0 {
                    let alert = json!({
                        "message": "High temperature detected!",
                        "temperature": data["temperature"],
                        "sensor": data["sensor_id"],
                    });
                    let _ = handle.publish("temperature-alerts", &alert, None);
                }
            }
        }
    });
    let addr = server.local_addr().expect("started");
    println!("IoT server on ws://{addr}");
    if demo {
        let url = format!("ws://{addr}/");
        let (mut dashboard, _) = tokio_tungstenite::connect_async(&url).await?;
        let (mut sensor, _) = tokio_tungstenite::connect_async(&url).await?;
        for m in [
            json!({"type": "auth", "token": "sensor-secret-123"}),
            json!({"type": "subscribe", "topic": "temperature-alerts"}),
        ] {
            dashboard.send(Message::text(m.to_string())).await?;
        }
        // Wait until the subscription is active before the sensor reports.
        loop {
            let v: serde_json::Value =
                serde_json::from_str(&dashboard.next().await.expect("open")?.into_text()?)?;
            if v["type"] == "subscribe_response" {
                break;
            }
        }
        for m in [
            json!({"type": "handshake", "clientType": "microcontroller", "version": "1.0.0"}),
            json!({"type": "auth", "token": "sensor-secret-123"}),
            json!({"type": "sensor_data", "temperature": 24.5, "humidity": 40, "sensor_id": "ESP32_DHT22_01"}),
            json!({"type": "sensor_data", "temperature": 31.2, "humidity": 38, "sensor_id": "ESP32_DHT22_01"}),
        ] {
            sensor.send(Message::text(m.to_string())).await?;
        }
        while let Some(msg) =
            tokio::time::timeout(std::time::Duration::from_secs(5), dashboard.next()).await?
        {
            let text = msg?.into_text()?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            if v["type"] == "publish" {
                println!("dashboard got alert: {}", v["data"]);
                break;
            }
        }
    } else {
        tokio::signal::ctrl_c().await?;
    }
    server.stop().await;
    Ok(())
}
