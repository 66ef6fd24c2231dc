//! Credentials and what they grant: a token presented by a client (in the
//! `auth` message, an `Authorization: Bearer` header or a `?token=` query
//! parameter) is verified here into an [`Identity`]: the device it is, the
//! client type it may claim, the topics it may touch, and when it expires.
//!
//! Sits above [`crate::config`] and below the shard: the shard asks
//! [`Authenticator::verify`] and enforces what comes back; it never looks
//! at secrets itself. An `Authenticator` is immutable: reloading keys or
//! tokens (SIGHUP) builds a new one and swaps it in.

mod jwt;
pub mod perm;

use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use perm::{Op, PermError, Permissions};

use crate::config::{parse_expiry, Config, PermSpec, TokenEntry};

/// Why a credential was refused. The `Display` text is safe to send to the
/// client: it never contains the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No configured credential matches.
    #[error("invalid token")]
    Invalid,
    /// Valid, but past its expiry.
    #[error("token expired")]
    Expired,
    /// Valid, but not yet (`nbf`).
    #[error("token not yet valid")]
    NotYetValid,
    /// Well-formed but refused for a stated reason (audience, issuer,
    /// algorithm, a bad permission set in its claims).
    #[error("token refused: {0}")]
    Refused(String),
    /// The auth configuration itself is unusable (bad key file, bad pattern).
    #[error("auth configuration: {0}")]
    Config(String),
}

/// What a verified credential grants, fixed until the connection
/// re-authenticates (`refresh`).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The stable device identity (JWT `sub`, a token entry's `device_id`,
    /// a client certificate's subject). `None` for a shared token without one.
    pub device_id: Option<Arc<str>>,
    /// The only client type this credential may claim (`None`: any type no
    /// credential is bound to).
    pub client_type: Option<String>,
    /// What it may do; `None`: everything (no permission set configured).
    pub permissions: Option<Arc<Permissions>>,
    /// When it stops being valid.
    pub expires_at: Option<SystemTime>,
    /// Which credential it was (`token:<i>`, `token`, `jwt:<sub>`, ...):
    /// scopes message-id de-duplication.
    pub scope: Arc<str>,
}

/// A static token entry, loaded.
struct StaticToken {
    /// SHA-256 of the token (a clear-text entry is hashed at load, so
    /// every comparison is of equal-length digests, in constant time).
    hash: [u8; 32],
    client_type: Option<String>,
    device_id: Option<Arc<str>>,
    permissions: Option<PermSpec>,
    expires_at: Option<SystemTime>,
    scope: Arc<str>,
}

/// Verifies credentials against the configured static tokens and JWT keys.
pub struct Authenticator {
    tokens: Vec<StaticToken>,
    jwt: Option<jwt::JwtKeys>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("jwt", &self.jwt)
            .finish()
    }
}

/// Lower-case hex of `token`'s SHA-256: what `wshandler token hash` prints
/// and a `sha256 = ...` entry holds.
pub fn sha256_hex(token: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(token)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn parse_hex32(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if h.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The files credentials are read from (`[jwt]` secret and key files, the
/// JWKS): watched for changes, so a rotated key is picked up without a
/// restart.
pub fn watched_files(cfg: &Config) -> Vec<std::path::PathBuf> {
    let j = &cfg.jwt;
    j.hmac_secret_file
        .iter()
        .cloned()
        .chain(j.public_key_files.iter().map(|k| k.file().to_owned()))
        .chain(j.jwks_file.iter().cloned())
        .collect()
}

impl Authenticator {
    /// Build from the configuration (the validated one), reading the key
    /// files it names. An error names the file or entry, never a secret.
    pub fn new(cfg: &Config) -> Result<Self, AuthError> {
        let mut tokens = Vec::new();
        let mut push = |entry: TokenEntry, scope: String| -> Result<(), AuthError> {
            let hash = match (&entry.token, &entry.sha256) {
                (Some(t), _) => Sha256::digest(t.as_bytes()).into(),
                (None, Some(h)) => parse_hex32(h)
                    .ok_or_else(|| AuthError::Config(format!("{scope}: bad sha256")))?,
                (None, None) => return Err(AuthError::Config(format!("{scope}: no token"))),
            };
            let expires_at = match &entry.expires {
                Some(x) => Some(parse_expiry(x).map_err(AuthError::Config)?),
                None => None,
            };
            if let Some(p) = &entry.permissions {
                // Checked now so a bad pattern stops startup or a reload,
                // not a device's auth.
                Permissions::compile(p, entry.device_id.as_deref())
                    .map_err(|e| AuthError::Config(format!("{scope}: {e}")))?;
            }
            tokens.push(StaticToken {
                hash,
                client_type: entry.client_type,
                device_id: entry.device_id.map(Arc::from),
                permissions: entry.permissions,
                expires_at,
                scope: Arc::from(scope),
            });
            Ok(())
        };
        if let Some(a) = cfg.auth_token.as_deref().filter(|a| !a.is_empty()) {
            push(
                TokenEntry {
                    token: Some(a.to_owned()),
                    ..TokenEntry::default()
                },
                "token".to_owned(),
            )?;
        }
        for (i, at) in cfg.auth_tokens.iter().enumerate() {
            push(at.entry(), format!("token:{i}"))?;
        }
        Ok(Self {
            tokens,
            jwt: jwt::JwtKeys::load(&cfg.jwt)?,
        })
    }

    /// Client types some static credential is bound to: only that
    /// credential (or a JWT naming the type in `ctype`) may claim them.
    pub fn reserved_type(&self, ct: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| t.client_type.as_deref() == Some(ct))
    }

    /// Verify `token` at time `now`: a JWT (three dot-separated parts) when
    /// JWT keys are configured, else a static token, compared by digest in
    /// constant time against every entry.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Invalid);
        }
        if let Some(keys) = &self.jwt {
            if token.bytes().filter(|&b| b == b'.').count() == 2 {
                return self.verify_jwt(keys, token);
            }
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&StaticToken> = None;
        for t in &self.tokens {
            let eq = bool::from(t.hash.ct_eq(&digest));
            if eq && found.is_none() {
                found = Some(t);
            }
        }
        let t = found.ok_or(AuthError::Invalid)?;
        if t.expires_at.is_some_and(|x| now >= x) {
            return Err(AuthError::Expired);
        }
        let permissions = match &t.permissions {
            Some(p) => Some(Arc::new(
                Permissions::compile(p, t.device_id.as_deref())
                    .map_err(|e| AuthError::Config(e.to_string()))?,
            )),
            None => None,
        };
        Ok(Identity {
            device_id: t.device_id.clone(),
            client_type: t.client_type.clone(),
            permissions,
            expires_at: t.expires_at,
            scope: t.scope.clone(),
        })
    }

    fn verify_jwt(&self, keys: &jwt::JwtKeys, token: &str) -> Result<Identity, AuthError> {
        let v = keys.verify(token)?;
        let permissions = match &v.perm {
            Some(p) => Some(Arc::new(
                Permissions::compile(p, Some(&v.sub))
                    .map_err(|e| AuthError::Refused(format!("bad perm claim: {e}")))?,
            )),
            None => None,
        };
        Ok(Identity {
            scope: Arc::from(format!("jwt:{}", v.sub)),
            device_id: Some(Arc::from(v.sub)),
            client_type: v.ctype,
            permissions,
            expires_at: v
                .exp
                .map(|e| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use base64::Engine as _;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::config::{AuthToken, JwtConfig, KeyFile};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/jwt")
            .join(name)
    }

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(data(name)).unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn auth_with(jwt: JwtConfig) -> Authenticator {
        let cfg = Config {
            enable_authentication: true,
            jwt,
            ..Config::default()
        };
        cfg.validate().unwrap();
        Authenticator::new(&cfg).unwrap()
    }

    fn all_keys() -> Authenticator {
        auth_with(JwtConfig {
            hmac_secret: Some(SECRET.into()),
            public_key_files: vec![
                KeyFile::Path(data("rsa.pub")),
                KeyFile::Path(data("ec.pub")),
                KeyFile::Path(data("ed.pub")),
            ],
            leeway: Duration::ZERO,
            ..JwtConfig::default()
        })
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
        encode(&Header::new(alg), &claims, key).unwrap()
    }

    fn claims(sub: &str) -> serde_json::Value {
        json!({"sub": sub, "exp": now() + 600})
    }

    #[test]
    fn jwt_vectors_each_algorithm() {
        let a = all_keys();
        let keys = [
            (
                Algorithm::HS256,
                EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            ),
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(&pem("rsa.key")).unwrap(),
            ),
            (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(&pem("ec.key")).unwrap(),
            ),
            (
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(&pem("ed.key")).unwrap(),
            ),
        ];
        for (alg, key) in &keys {
            let t = sign(*alg, key, claims("pump-7"));
            let id = a
                .verify(&t, SystemTime::now())
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(id.device_id.as_deref(), Some("pump-7"), "{alg:?}");
            assert!(id.expires_at.is_some());
            assert_eq!(&*id.scope, "jwt:pump-7");
        }
    }

    #[test]
    fn jwt_refusals() {
        let a = all_keys();
        let rsa = EncodingKey::from_rsa_pem(&pem("rsa.key")).unwrap();
        // Signed with a key we do not have.
        let other = EncodingKey::from_rsa_pem(&pem("rsa-other.key")).unwrap();
        let t = sign(Algorithm::RS256, &other, claims("d"));
        assert_eq!(
            a.verify(&t, SystemTime::now()).unwrap_err(),
            AuthError::Invalid
        );
        // alg: none, no signature.
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(claims("d"))
        );
        assert_eq!(
            a.verify(&none, SystemTime::now()).unwrap_err(),
            AuthError::Invalid
        );
        // HS256 "signed" with the RSA public key's PEM as the secret: the
        // algorithm-confusion attack. Only the HMAC secret verifies HS*.
        let confused = EncodingKey::from_secret(&pem("rsa.pub")).unwrap();
        let t = sign(Algorithm::HS256, &confused, claims("d"));
        assert_eq!(
            a.verify(&t, SystemTime::now()).unwrap_err(),
            AuthError::Invalid
        );
        // Expired, not yet valid, no exp.
        let t = sign(
            Algorithm::RS256,
            &rsa,
            json!({"sub": "d", "exp": now() - 60}),
        );
        assert_eq!(
            a.verify(&t, SystemTime::now()).unwrap_err(),
            AuthError::Expired
        );
        let t = sign(
            Algorithm::RS256,
            &rsa,
            json!({"sub": "d", "exp": now() + 600, "nbf": now() + 300}),
        );
        assert_eq!(
            a.verify(&t, SystemTime::now()).unwrap_err(),
            AuthError::NotYetValid
        );
        let t = sign(Algorithm::RS256, &rsa, json!({"sub": "d"}));
        assert!(matches!(
            a.verify(&t, SystemTime::now()),
            Err(AuthError::Refused(_))
        ));
        // No sub: no device identity.
        let t = sign(Algorithm::RS256, &rsa, json!({"exp": now() + 600}));
        assert!(matches!(
            a.verify(&t, SystemTime::now()),
            Err(AuthError::Refused(_))
        ));
        // A bad perm claim.
        let t = sign(
            Algorithm::RS256,
            &rsa,
            json!({"sub": "d", "exp": now() + 600, "perm": {"subscribe": ["a.>.b"]}}),
        );
        assert!(matches!(
            a.verify(&t, SystemTime::now()),
            Err(AuthError::Refused(_))
        ));
        // A tampered payload.
        let t = sign(Algorithm::RS256, &rsa, claims("d"));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = b64(claims("someone-else"));
        parts[1] = &forged;
        assert_eq!(
            a.verify(&parts.join("."), SystemTime::now()).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn jwt_audience_issuer_claims() {
        let a = auth_with(JwtConfig {
            hmac_secret: Some(SECRET.into()),
            audience: Some("wsh".into()),
            issuer: Some("https://issuer.test".into()),
            ..JwtConfig::default()
        });
        let k = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let base = |aud: &str, iss: &str| {
            json!({"sub": "d", "exp": now() + 600, "aud": aud, "iss": iss,
                   "ctype": "microcontroller",
                   "perm": {"publish": ["devices.{device}.>"]}})
        };
        let id = a
            .verify(
                &sign(Algorithm::HS256, &k, base("wsh", "https://issuer.test")),
                SystemTime::now(),
            )
            .unwrap();
        assert_eq!(id.client_type.as_deref(), Some("microcontroller"));
        let p = id.permissions.unwrap();
        assert!(p.allows(Op::Publish, "devices.d.temp"));
        assert!(!p.allows(Op::Publish, "devices.e.temp"));
        assert!(!p.allows(Op::Subscribe, "devices.d.temp"));
        assert_eq!(
            a.verify(
                &sign(Algorithm::HS256, &k, base("other", "https://issuer.test")),
                SystemTime::now()
            )
            .unwrap_err(),
            AuthError::Refused("wrong audience".into())
        );
        assert_eq!(
            a.verify(
                &sign(Algorithm::HS256, &k, base("wsh", "https://evil.test")),
                SystemTime::now()
            )
            .unwrap_err(),
            AuthError::Refused("wrong issuer".into())
        );
    }

    #[test]
    fn jwks_file_kid_picks_the_key() {
        // A JWKS with the EC key under kid "k1" (coordinates from the PEM).
        let dir = tempfile::tempdir().unwrap();
        let spki = pem("ec.pub");
        let text = String::from_utf8(spki).unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                text.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        // SPKI for P-256: the last 65 bytes are 0x04 || X || Y.
        let point = &der[der.len() - 65..];
        assert_eq!(point[0], 4);
        let b = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                                    "x": b(&point[1..33]), "y": b(&point[33..])}]});
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        let a = auth_with(JwtConfig {
            jwks_file: Some(path),
            ..JwtConfig::default()
        });
        let key = EncodingKey::from_ec_pem(&pem("ec.key")).unwrap();
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        let t = encode(&h, &claims("d"), &key).unwrap();
        assert!(a.verify(&t, SystemTime::now()).is_ok());
        // The RSA key is not in the set.
        let rsa = EncodingKey::from_rsa_pem(&pem("rsa.key")).unwrap();
        let t = sign(Algorithm::RS256, &rsa, claims("d"));
        assert_eq!(
            a.verify(&t, SystemTime::now()).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn hashed_and_expiring_static_tokens() {
        let entry = |e: &str| -> AuthToken {
            toml::from_str::<toml::Value>(&format!("v = {e}")).unwrap()["v"]
                .clone()
                .try_into()
                .unwrap()
        };
        let hash = sha256_hex(b"pump-secret");
        let cfg = Config {
            enable_authentication: true,
            auth_tokens: vec![
                entry(&format!(
                    r#"{{ sha256 = "{hash}", device_id = "pump-7", permissions = {{ publish = ["devices.{{device}}.>"] }} }}"#
                )),
                entry(r#"{ token = "old", expires = "2020-01-01T00:00:00Z" }"#),
            ],
            ..Config::default()
        };
        cfg.validate().unwrap();
        let a = Authenticator::new(&cfg).unwrap();
        let id = a.verify("pump-secret", SystemTime::now()).unwrap();
        assert_eq!(id.device_id.as_deref(), Some("pump-7"));
        assert!(id
            .permissions
            .unwrap()
            .allows(Op::Publish, "devices.pump-7.t"));
        assert_eq!(
            a.verify(&hash, SystemTime::now()).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            a.verify("old", SystemTime::now()).unwrap_err(),
            AuthError::Expired
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
