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
