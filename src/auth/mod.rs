//! Credentials and what they grant: a token presented by a client (in the
//! `auth` message, an `Authorization: Bearer` header or a `?token=` query
//! parameter) is verified here into an [`Identity`]: the device it is, the
//! client type it may claim, the topics it may touch, and when it expires.
//!
//! Sits above [`crate::config`] and below the shard: the shard asks
//! [`Authenticator::verify`] and enforces what comes back; it never looks
//! at secrets itself. An `Authenticator` is immutable: reloading keys or
//! tokens (SIGHUP) builds a new one and swaps it in.

pub mod perm;

use std::sync::Arc;
use std::time::SystemTime;

use subtle::ConstantTimeEq;

pub use perm::{Op, PermError, Permissions};

use crate::config::Config;

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

/// Verifies credentials against the configured tokens (and, later, keys).
#[derive(Debug)]
pub struct Authenticator {
    /// (secret, client type, scope) per accepted static token.
    tokens: Vec<(String, Option<String>, Arc<str>)>,
}

impl Authenticator {
    /// Build from the configuration (the validated one).
    pub fn new(cfg: &Config) -> Result<Self, AuthError> {
        let mut tokens = Vec::new();
        if let Some(a) = cfg.auth_token.as_deref().filter(|a| !a.is_empty()) {
            tokens.push((a.to_owned(), None, Arc::from("token")));
        }
        for (i, at) in cfg.auth_tokens.iter().enumerate() {
            tokens.push((
                at.token().to_owned(),
                at.client_type().map(str::to_owned),
                Arc::from(format!("token:{i}")),
            ));
        }
        Ok(Self { tokens })
    }

    /// Client types some credential is bound to: only that credential may
    /// claim them.
    pub fn reserved_type(&self, ct: &str) -> bool {
        self.tokens.iter().any(|t| t.1.as_deref() == Some(ct))
    }

    /// Verify `token` at time `now`. Compared in constant time against every
    /// static token.
    pub fn verify(&self, token: &str, _now: SystemTime) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Invalid);
        }
        let t = token.as_bytes();
        let mut found = None;
        for (secret, ct, scope) in &self.tokens {
            if bool::from(secret.as_bytes().ct_eq(t)) && found.is_none() {
                found = Some(Identity {
                    device_id: None,
                    client_type: ct.clone(),
                    permissions: None,
                    expires_at: None,
                    scope: scope.clone(),
                });
            }
        }
        found.ok_or(AuthError::Invalid)
    }
}
