//! The settings that say who may connect and what they may do: static token
//! entries (`auth_tokens`), the `[jwt]` table of verification keys, and the
//! permission sets both carry. Only the shape and the checks that need no
//! files live here; reading keys is `crate::auth`'s job (it runs again on
//! every reload, when files may have changed).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::duration_serde;

/// A permission set as written in a token entry's `permissions` table or a
/// JWT's `perm` claim: patterns in the topic syntax per operation. A list
/// left out allows nothing of that kind; `{device}` stands for the
/// connection's device id. Compiled by `auth::Permissions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermSpec {
    /// Topics and patterns that may be subscribed to.
    pub subscribe: Vec<String>,
    /// Topics that may be published to.
    pub publish: Vec<String>,
    /// Topics whose history may be read.
    pub history: Vec<String>,
    /// Data types (and tables) that may be stored or queried.
    pub ingest: Vec<String>,
    /// Request endpoints and RPC methods that may be called.
    pub call: Vec<String>,
    /// Service names that may be registered.
    pub register: Vec<String>,
}

/// An accepted static token: a plain string (any client type, no device),
/// or an entry with what it grants.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AuthToken {
    /// Any client type may use it.
    Plain(String),
    /// A token (in clear or as its SHA-256) with its grant.
    Entry(Box<TokenEntry>),
}

/// A token entry: `{ sha256 = "<hex>", device_id = "...", client_type =
/// "...", permissions = {...}, expires = "RFC 3339" }` or the same with
/// `token = "<clear text>"` instead of `sha256`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenEntry {
    /// The secret in clear (prefer `sha256`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Lower-case hex of the token's SHA-256 (`wshandler token hash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The device this token is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The only client type it may claim (any type no credential is bound
    /// to if unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_type: Option<String>,
    /// What it may do (everything if unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<PermSpec>,
    /// When it stops being accepted (RFC 3339, e.g. `2027-01-01T00:00:00Z`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl AuthToken {
    /// A clear-text token bound to `client_type` (any type if `None`).
    pub fn bound(token: impl Into<String>, client_type: Option<&str>) -> Self {
        AuthToken::Entry(Box::new(TokenEntry {
            token: Some(token.into()),
            client_type: client_type.map(str::to_owned),
            ..TokenEntry::default()
        }))
    }

    /// The secret in clear, if the entry holds it so.
    pub fn token(&self) -> Option<&str> {
        match self {
            AuthToken::Plain(t) => Some(t),
            AuthToken::Entry(e) => e.token.as_deref(),
        }
    }

    /// The entry's fields (a plain token is an entry with only `token`).
    pub fn entry(&self) -> TokenEntry {
        match self {
            AuthToken::Plain(t) => TokenEntry {
                token: Some(t.clone()),
                ..TokenEntry::default()
            },
            AuthToken::Entry(e) => (**e).clone(),
        }
    }

    /// The client type it is bound to, if any.
    pub fn client_type(&self) -> Option<&str> {
        match self {
            AuthToken::Plain(_) => None,
            AuthToken::Entry(e) => e.client_type.as_deref(),
        }
    }

    /// The same entry with its secret replaced by `<redacted>` (a hash is
    /// kept: it is what the operator compares against).
    pub fn redacted(&self) -> AuthToken {
        match self {
            AuthToken::Plain(_) => AuthToken::Plain(REDACTED.to_owned()),
            AuthToken::Entry(e) => {
                let mut e = (**e).clone();
                if e.token.is_some() {
                    e.token = Some(REDACTED.to_owned());
                }
                AuthToken::Entry(Box::new(e))
            }
        }
    }

    /// Checks that need no files: exactly one of `token`/`sha256`, a
    /// well-formed hash and expiry. The message names what is wrong, never
    /// the secret.
    pub fn check(&self) -> Result<(), String> {
        let e = self.entry();
        match (&e.token, &e.sha256) {
            (Some(t), None) if t.is_empty() => return Err("a token must not be empty".into()),
            (Some(_), None) => {}
            (None, Some(h)) => {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(
                        "sha256 must be 64 hex digits (the output of `wshandler token hash`)"
                            .into(),
                    );
                }
            }
            (Some(_), Some(_)) => return Err("set either token or sha256, not both".into()),
            (None, None) => return Err("an entry needs token or sha256".into()),
        }
        if let Some(d) = &e.device_id {
            if d.is_empty() || d.contains(['.', '*', '>']) || d.chars().any(char::is_whitespace) {
                return Err(format!(
                    "device_id `{d}` must be non-empty, without `.`, `*`, `>` or spaces"
                ));
            }
        }
        if let Some(x) = &e.expires {
            parse_expiry(x)?;
        }
        Ok(())
    }
}

/// Parse an RFC 3339 expiry (`2027-01-01T00:00:00Z`).
pub fn parse_expiry(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z').trim_end_matches('z'))
        .or_else(|_| humantime::parse_rfc3339(s))
        .map_err(|e| format!("expires `{s}` is not an RFC 3339 time: {e}"))
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.entry();
        f.debug_struct("AuthToken")
            .field("token", &e.token.as_ref().map(|_| REDACTED))
            .field("sha256", &e.sha256)
            .field("device_id", &e.device_id)
            .field("client_type", &e.client_type)
            .field("permissions", &e.permissions)
            .field("expires", &e.expires)
            .finish()
    }
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&AuthToken::Entry(Box::new(self.clone())), f)
    }
}

/// A public key file in `[jwt] public_key_files`: a PEM path (the algorithm
/// follows from the key: RSA → RS256, EC → ES256, Ed25519 → EdDSA), or a
/// table naming the algorithm and a `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyFile {
    /// A PEM file; algorithm from the key type.
    Path(PathBuf),
    /// A PEM file with its algorithm and key id fixed.
    Spec {
        /// The PEM file.
        file: PathBuf,
        /// `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `ES256`,
        /// `ES384` or `EdDSA`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alg: Option<String>,
        /// The `kid` a token must name to be checked against this key (any
        /// if unset).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kid: Option<String>,
    },
}

impl KeyFile {
    /// The PEM file.
    pub fn file(&self) -> &std::path::Path {
        match self {
            KeyFile::Path(p) | KeyFile::Spec { file: p, .. } => p,
        }
    }
}

/// The `[jwt]` table: how device JWTs are verified. No key configured → no
/// JWT is accepted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256/HS384/HS512 tokens (`WSH_JWT_HMAC_SECRET`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// A file holding the HMAC secret (trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret_file: Option<PathBuf>,
    /// Public keys (PEM) for RS*/PS*/ES*/EdDSA tokens.
    pub public_key_files: Vec<KeyFile>,
    /// A JWKS document on disk; a token's `kid` picks the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Required `aud` (unchecked if unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Required `iss` (unchecked if unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Refuse tokens without `exp`. Default true.
    pub require_exp: bool,
    /// Clock skew allowed on `exp` and `nbf`. Default 30s.
    #[serde(with = "duration_serde")]
    pub leeway: Duration,
    /// After `token_expired`, how long a connection has to `refresh` before
    /// it is closed with 4001. Default 25s.
    #[serde(with = "duration_serde")]
    pub expired_grace: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hmac_secret: None,
            hmac_secret_file: None,
            public_key_files: Vec::new(),
            jwks_file: None,
            audience: None,
            issuer: None,
            require_exp: true,
            leeway: Duration::from_secs(30),
            expired_grace: Duration::from_secs(25),
        }
    }
}

impl JwtConfig {
    /// Is any verification key configured?
    pub fn enabled(&self) -> bool {
        self.hmac_secret.as_deref().is_some_and(|s| !s.is_empty())
            || self.hmac_secret_file.is_some()
            || !self.public_key_files.is_empty()
            || self.jwks_file.is_some()
    }

    /// The same with the secret replaced by `<redacted>`.
    pub fn redacted(&self) -> JwtConfig {
        let mut j = self.clone();
        if j.hmac_secret.is_some() {
            j.hmac_secret = Some(REDACTED.to_owned());
        }
        j
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = self.redacted();
        f.debug_struct("JwtConfig")
            .field("hmac_secret", &j.hmac_secret)
            .field("hmac_secret_file", &j.hmac_secret_file)
            .field("public_key_files", &j.public_key_files)
            .field("jwks_file", &j.jwks_file)
            .field("audience", &j.audience)
            .field("issuer", &j.issuer)
            .field("require_exp", &j.require_exp)
            .field("leeway", &j.leeway)
            .field("expired_grace", &j.expired_grace)
            .finish()
    }
}
