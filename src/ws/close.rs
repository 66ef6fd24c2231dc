//! Close codes (RFC 6455 §7.4) and close-frame payload validation.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is going away (graceful stop).
pub const GOING_AWAY: u16 = 1001;
/// Protocol error.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Unsupported data (e.g. a message type the endpoint can't take).
pub const UNSUPPORTED: u16 = 1003;
/// A text message was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation (slow consumer, too many errors, failed auth).
pub const POLICY: u16 = 1008;
/// Message too big.
pub const TOO_BIG: u16 = 1009;
/// Internal server error.
pub const INTERNAL: u16 = 1011;
/// The credential expired and was not refreshed in time; the client may
/// reconnect with a new one.
pub const TOKEN_EXPIRED: u16 = 4001;
/// Another connection of the same device replaced this one
/// (`on_duplicate_device = "replace"`).
pub const REPLACED: u16 = 4002;
/// The credential is invalid: do not retry with the same one.
pub const INVALID_CREDENTIALS: u16 = 4003;

/// Whether `code` may appear in a close frame on the wire.
///
/// 1004–1006 and 1015 are reserved for local use, 1012–1014 are not accepted
/// by Autobahn's 7.9.x cases (they were registered after RFC 6455), and
/// 3000–4999 are for libraries and applications.
pub fn is_valid_wire_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// What a received close frame said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code, `None` for an empty close frame.
    pub code: Option<u16>,
    /// The reason text (valid UTF-8 by construction).
    pub reason: String,
}

/// Why a close frame payload was refused, with the close code to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadClose {
    /// One-byte payload or a code that may not be sent.
    Protocol,
    /// The reason is not UTF-8.
    Utf8,
}

/// Parse and validate a close payload.
pub fn parse_close_payload(payload: &[u8]) -> Result<CloseFrame, BadClose> {
    match payload.len() {
        0 => Ok(CloseFrame {
            code: None,
            reason: String::new(),
        }),
        1 => Err(BadClose::Protocol),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_wire_code(code) {
                return Err(BadClose::Protocol);
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| BadClose::Utf8)?;
            Ok(CloseFrame {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_codes() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(is_valid_wire_code(c), "{c}");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_wire_code(c), "{c}");
        }
    }

    #[test]
    fn payloads() {
        assert_eq!(parse_close_payload(&[]).unwrap().code, None);
        assert_eq!(parse_close_payload(&[3]), Err(BadClose::Protocol));
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, b'o', b'k'])
                .unwrap()
                .reason,
            "ok"
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, 0xff]),
            Err(BadClose::Utf8)
        );
        assert_eq!(parse_close_payload(&[0x03, 0xed]), Err(BadClose::Protocol));
    }
}
