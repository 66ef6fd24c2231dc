//! Field encryption for storage: ChaCha20-Poly1305 with a random 96-bit
//! nonce per value.
//!
//! An encrypted field is stored as `{"$encrypted": base64(nonce ‖ ciphertext
//! ‖ tag)}`, the plaintext being the field's JSON text. The AEAD tag makes a
//! wrong key or a corrupted value fail loudly instead of yielding garbage.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The marker key of an encrypted value.
pub const MARKER: &str = "$encrypted";

/// Why a key could not be loaded or a value decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Not base64 of exactly 32 bytes.
    #[error("encryption key must be base64 of exactly 32 bytes ({0})")]
    BadKey(String),
    /// Authentication failed.
    #[error("cannot decrypt field `{0}`: wrong encryption key or corrupted data")]
    Decrypt(String),
}

/// A 256-bit storage key.
#[derive(Clone)]
pub struct FieldKey(ChaCha20Poly1305);

impl std::fmt::Debug for FieldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldKey(<redacted>)")
    }
}

impl FieldKey {
    /// Parse a base64-encoded 32-byte key (surrounding whitespace ignored).
    pub fn from_base64(s: &str) -> Result<FieldKey, CryptoError> {
        let raw = B64
            .decode(s.trim())
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        if raw.len() != 32 {
            return Err(CryptoError::BadKey(format!("got {} bytes", raw.len())));
        }
        Ok(FieldKey(
            ChaCha20Poly1305::new_from_slice(&raw).expect("32-byte key"),
        ))
    }

    fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).expect("OS randomness");
        let ct = self
            .0
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        B64.encode(out)
    }

    /// Open one sealed value (`path` names it in the error).
    pub(crate) fn open(&self, sealed: &str, path: &str) -> Result<Vec<u8>, CryptoError> {
        let raw = B64
            .decode(sealed)
            .map_err(|_| CryptoError::Decrypt(path.to_owned()))?;
        if raw.len() < 12 + 16 {
            return Err(CryptoError::Decrypt(path.to_owned()));
        }
        self.0
            .decrypt(Nonce::from_slice(&raw[..12]), &raw[12..])
            .map_err(|_| CryptoError::Decrypt(path.to_owned()))
    }

    /// Replace each field named by a dot path with its encrypted form.
    pub fn encrypt_fields(&self, data: &mut Value, paths: &[String]) {
        for p in paths {
            if let Some(v) = lookup_mut(data, p) {
                let plain = serde_json::to_vec(v).expect("value serialises");
                *v = serde_json::json!({ MARKER: self.seal(&plain) });
            }
        }
    }

    /// Seal each field named by a dot path in `data`, the JSON text of a
    /// record's `data` as the client sent it, leaving every other byte as it
    /// is (numbers digit for digit, key order, whitespace). The plaintext
    /// sealed is the field's own text, so a reader that splices it back
    /// returns exactly what was sent. Paths that are not there are skipped,
    /// as in [`FieldKey::encrypt_fields`]. `None` when a path cannot be
    /// followed in the text: the caller then seals the parsed value instead.
    pub fn encrypt_fields_text(&self, data: &[u8], paths: &[String]) -> Option<Vec<u8>> {
        let mut text = data.to_vec();
        for p in paths {
            let Some((start, end)) = text_span(&text, p)? else {
                continue;
            };
            let sealed = self.seal(&text[start..end]);
            let mut out = Vec::with_capacity(text.len() + sealed.len());
            out.extend_from_slice(&text[..start]);
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(MARKER.as_bytes());
            out.extend_from_slice(b"\":\"");
            out.extend_from_slice(sealed.as_bytes());
            out.extend_from_slice(b"\"}");
            out.extend_from_slice(&text[end..]);
            text = out;
        }
        Some(text)
    }

    /// Decrypt every encrypted field found under the given paths.
    pub fn decrypt_fields(&self, data: &mut Value, paths: &[String]) -> Result<(), CryptoError> {
        for p in paths {
            if let Some(v) = lookup_mut(data, p) {
                if let Some(sealed) = sealed_of(v) {
                    let plain = self.open(&sealed, p)?;
                    *v = serde_json::from_slice(&plain)
                        .map_err(|_| CryptoError::Decrypt(p.clone()))?;
                }
            }
        }
        Ok(())
    }

    /// Decrypt every `{"$encrypted": ..}` anywhere in `data` (read-back does
    /// not need to know which paths were configured when it was written).
    pub fn decrypt_all(&self, data: &mut Value) -> Result<(), CryptoError> {
        walk(data, "", &mut |v, path| {
            if let Some(sealed) = sealed_of(v) {
                let plain = self.open(&sealed, path)?;
                *v = serde_json::from_slice(&plain)
                    .map_err(|_| CryptoError::Decrypt(path.to_owned()))?;
            }
            Ok(())
        })
    }
}

fn sealed_of(v: &Value) -> Option<String> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    o.get(MARKER)?.as_str().map(str::to_owned)
}

fn walk(
    v: &mut Value,
    path: &str,
    f: &mut impl FnMut(&mut Value, &str) -> Result<(), CryptoError>,
) -> Result<(), CryptoError> {
    if sealed_of(v).is_some() {
        return f(v, path);
    }
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(child, &p, f)?;
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                walk(child, &format!("{path}[{i}]"), f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Where the value at a dot path is in the JSON text `text` (validated):
/// `Some(None)` when it is not there. Keys written with escapes match.
fn text_span(text: &[u8], path: &str) -> Option<Option<(usize, usize)>> {
    let base = text.as_ptr() as usize;
    let mut cur = text;
    for seg in path.split('.') {
        let body = cur.trim_ascii_start();
        if body.first() != Some(&b'{') {
            return Some(None);
        }
        // Keys written with escapes are decoded, so absent means absent.
        match crate::protocol::scan::Field::from_validated(body).get(seg) {
            Some(v) => cur = v.raw(),
            None => return Some(None),
        }
    }
    let start = cur.as_ptr() as usize - base;
    Some(Some((start, start + cur.len())))
}

/// The value at a dot path (`location.lat`) inside objects.
pub fn lookup_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = cur.as_object_mut()?.get_mut(seg)?;
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(b: u8) -> FieldKey {
        FieldKey::from_base64(&B64.encode([b; 32])).unwrap()
    }

    #[test]
    fn round_trip_dot_paths() {
        let k = key(7);
        let orig =
            json!({"user_data": {"name": "ann"}, "location": {"lat": 51.5, "lon": -0.1}, "t": 20});
        let mut v = orig.clone();
        let paths = vec![
            "user_data".to_string(),
            "location.lat".to_string(),
            "missing.x".to_string(),
        ];
        k.encrypt_fields(&mut v, &paths);
        assert!(v["user_data"][MARKER].is_string());
        assert!(v["location"]["lat"][MARKER].is_string());
        assert_eq!(v["location"]["lon"], -0.1);
        assert!(!v.to_string().contains("ann"));
        let mut a = v.clone();
        k.decrypt_fields(&mut a, &paths).unwrap();
        assert_eq!(a, orig);
        let mut b = v.clone();
        k.decrypt_all(&mut b).unwrap();
        assert_eq!(b, orig);
        // Same plaintext, different nonce: different ciphertext.
        let mut w = orig.clone();
        k.encrypt_fields(&mut w, &paths);
        assert_ne!(v["user_data"], w["user_data"]);
    }

    #[test]
    fn text_sealing_keeps_every_other_byte() {
        let k = key(3);
        let data = br#"{ "user_data" : {"name":"ann", "n":0.026279616940263262},
            "location":{"lat":51.50720000000000001,"lon":-0.1},"z":123456789012345678901234567890}"#;
        let paths = vec![
            "user_data".to_string(),
            "location.lat".to_string(),
            "nope.x".to_string(),
        ];
        let sealed = k.encrypt_fields_text(data, &paths).unwrap();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(!text.contains("ann") && !text.contains("51.5072"), "{text}");
        assert!(
            text.starts_with(r#"{ "user_data" : {"$encrypted":""#),
            "{text}"
        );
        assert!(
            text.ends_with(r#"},"lon":-0.1},"z":123456789012345678901234567890}"#),
            "{text}"
        );
        // Each sealed value is the field's own text.
        let v: Value = serde_json::from_slice(&sealed).unwrap();
        let open = |v: &Value| {
            let s = v[MARKER].as_str().unwrap();
            String::from_utf8(k.open(s, "p").unwrap()).unwrap()
        };
        assert_eq!(
            open(&v["user_data"]),
            r#"{"name":"ann", "n":0.026279616940263262}"#
        );
        assert_eq!(open(&v["location"]["lat"]), "51.50720000000000001");
        // A key written with an escape is the same key: sealed too, the
        // key's spelling kept.
        let t = k
            .encrypt_fields_text(br#"{"user\u005fdata":1}"#, &paths)
            .unwrap();
        let t = String::from_utf8(t).unwrap();
        assert!(
            t.starts_with(r#"{"user\u005fdata":{""#) && t.contains(MARKER),
            "{t}"
        );
        // Not an object, or the path is missing: nothing sealed.
        assert_eq!(k.encrypt_fields_text(b"[1]", &paths).unwrap(), b"[1]");
    }

    #[test]
    fn wrong_key_fails_clearly() {
        let mut v = json!({"secret": 1});
        key(1).encrypt_fields(&mut v, &["secret".to_string()]);
        let err = key(2).decrypt_all(&mut v).unwrap_err();
        assert_eq!(err, CryptoError::Decrypt("secret".into()));
        assert!(err.to_string().contains("wrong encryption key"));
    }

    #[test]
    fn bad_keys() {
        assert!(FieldKey::from_base64("not base64!").is_err());
        assert!(FieldKey::from_base64(&B64.encode([0u8; 16])).is_err());
    }
}
