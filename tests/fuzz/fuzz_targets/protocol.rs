//! The JSON protocol layer of one shard, no sockets: each input is a short
//! conversation of messages through the shard's protocol handlers (the same
//! `on_message` a connection's reader calls). The first byte picks the mode:
//! raw bytes (split into messages at 0xff bytes, each one as a text message
//! if it is UTF-8, else as a binary one) or structure-aware messages built
//! from the protocol's types and field names with values of every JSON
//! type, so deep handler paths are reached and not only the parser.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wshandler::{Config, ProtocolHarness};

const FIELDS: &[&str] = &[
    "clientType", "deviceId", "token", "data", "dataType", "table", "messageId",
    "requestId", "endpoint", "method", "params", "kind", "name", "topic", "streamId",
    "streamType", "sequenceNumber", "success", "error", "metadata",
];
const STRINGS: &[&str] = &[
    "service", "application", "microcontroller", "echo", "server.status", "store.query",
    "endpoint", "method", "a.b", "a.*", "a.>", ">", "", "AAEC", "srv-0-1-0000000000000000",
    "\\ud800", "\\ud83d\\ude00", "\\u0000",
];

#[derive(Debug)]
struct Json(String);

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut s = String::new();
        value(u, &mut s, 0)?;
        Ok(Json(s))
    }
}

fn value(u: &mut Unstructured<'_>, out: &mut String, depth: u32) -> arbitrary::Result<()> {
    let pick = if depth > 4 { u.int_in_range(0..=5)? } else { u.int_in_range(0..=7)? };
    match pick {
        0 => out.push_str("null"),
        1 => out.push_str(if u.arbitrary()? { "true" } else { "false" }),
        2 => out.push_str(&u.arbitrary::<i64>()?.to_string()),
        3 => out.push_str(["1e400", "-0.0", "18446744073709551616", "0.026279616940263262", "6.5"][u.choose_index(5)?]),
        4 => {
            out.push('"');
            out.push_str(STRINGS[u.choose_index(STRINGS.len())?]);
            out.push('"');
        }
        5 => {
            let s: String = u.arbitrary()?;
            out.push_str(&serde_json::to_string(&s).unwrap());
        }
        6 => {
            out.push('[');
            for i in 0..u.int_in_range(0..=3)? {
                if i > 0 {
                    out.push(',');
                }
                value(u, out, depth + 1)?;
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..u.int_in_range(0..=3)? {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(FIELDS[u.choose_index(FIELDS.len())?]);
                out.push_str("\":");
                value(u, out, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn message(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    // Every protocol type, and one the server does not know.
    let types = wshandler::protocol::kind::ALL;
    let i = u.choose_index(types.len() + 1)?;
    let ty = types.get(i).map_or("bogus", |t| t.as_str());
    let mut m = format!("{{\"type\":\"{ty}\"");
    for _ in 0..u.int_in_range(0..=5)? {
        let f = FIELDS[u.choose_index(FIELDS.len())?];
        let Json(v) = u.arbitrary()?;
        m.push_str(&format!(",\"{f}\":{v}"));
    }
    m.push('}');
    Ok(m)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut cfg = Config::default();
    cfg.enable_authentication = mode & 2 != 0;
    cfg.auth_token = Some("t".into());
    cfg.max_payload_size = 1 << 16;
    let mut h = ProtocolHarness::new(cfg);
    if mode & 1 == 0 {
        for piece in rest.split(|&b| b == 0xff).take(32) {
            match std::str::from_utf8(piece) {
                Ok(t) => drop(h.text(t)),
                Err(_) => drop(h.binary(piece)),
            }
        }
    } else {
        let mut u = Unstructured::new(rest);
        for _ in 0..16 {
            let Ok(m) = message(&mut u) else { break };
            drop(h.text(&m));
            if u.is_empty() {
                break;
            }
        }
    }
});
