//! JWT verification with `jsonwebtoken`: the keys of the `[jwt]` table
//! (an HMAC secret, PEM public keys, a JWKS file), each with its algorithm
//! fixed when it is loaded. A token is checked only against keys of the
//! algorithm its header names, so `alg: none` (not an algorithm here) and
//! an HS256 token "signed" with an RSA public key (the classic confusion)
//! find no key and are invalid.

use std::collections::HashSet;
use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::AuthError;
use crate::config::{JwtConfig, KeyFile, PermSpec};

/// One verification key.
struct Key {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

/// The claims we read; others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    ctype: Option<String>,
    perm: Option<serde_json::Value>,
}

/// What a valid token says.
pub(super) struct Verified {
    pub(super) sub: String,
    pub(super) exp: Option<u64>,
    pub(super) ctype: Option<String>,
    pub(super) perm: Option<PermSpec>,
}

/// The loaded `[jwt]` keys and checks.
pub(super) struct JwtKeys {
    keys: Vec<Key>,
    audience: Option<String>,
    issuer: Option<String>,
    require_exp: bool,
    leeway: u64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("keys", &self.keys.len())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

fn cfg_err(what: &Path, e: impl std::fmt::Display) -> AuthError {
    AuthError::Config(format!("{}: {e}", what.display()))
}

fn parse_alg(a: &str) -> Option<Algorithm> {
    Some(match a {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A PEM public key and the algorithm it is for (named, or by key type).
fn pem_key(path: &Path, alg: Option<&str>) -> Result<(Algorithm, DecodingKey), AuthError> {
    let pem = std::fs::read(path).map_err(|e| cfg_err(path, e))?;
    let named = match alg {
        Some(a) => {
            Some(parse_alg(a).ok_or_else(|| cfg_err(path, format!("unknown algorithm {a}")))?)
        }
        None => None,
    };
    let rsa = || DecodingKey::from_rsa_pem(&pem);
    let ec = || DecodingKey::from_ec_pem(&pem);
    let ed = || DecodingKey::from_ed_pem(&pem);
    let bad = |e: jsonwebtoken::errors::Error| cfg_err(path, e);
    Ok(match named {
        Some(
            a @ (Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512),
        ) => (a, rsa().map_err(bad)?),
        Some(a @ (Algorithm::ES256 | Algorithm::ES384)) => (a, ec().map_err(bad)?),
        Some(Algorithm::EdDSA) => (Algorithm::EdDSA, ed().map_err(bad)?),
        Some(a) => {
            return Err(cfg_err(
                path,
                format!("{a:?} is not a public-key algorithm"),
            ))
        }
        None => {
            if let Ok(k) = rsa() {
                (Algorithm::RS256, k)
            } else if let Ok(k) = ec() {
                (Algorithm::ES256, k)
            } else if let Ok(k) = ed() {
                (Algorithm::EdDSA, k)
            } else {
                return Err(cfg_err(
                    path,
                    "not a PEM RSA, EC (P-256) or Ed25519 public key",
                ));
            }
        }
    })
}

/// The keys of a JWKS document. A key's algorithm is its `alg`, or follows
/// from its type (RSA → RS256, EC P-256 → ES256, P-384 → ES384, Ed25519 →
/// EdDSA); symmetric (`oct`) keys need an explicit `alg`.
fn jwks_keys(path: &Path) -> Result<Vec<Key>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| cfg_err(path, e))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| cfg_err(path, e))?;
    let mut out = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let named = match jwk.common.key_algorithm {
            // `KeyAlgorithm`'s names are the JOSE names (`RS256`, `EdDSA`);
            // the encryption ones (`RSA-OAEP`) are not signature algorithms.
            Some(ka) => Some(parse_alg(&format!("{ka:?}")).ok_or_else(|| {
                cfg_err(
                    path,
                    format!("key {i}: {ka:?} is not a signature algorithm"),
                )
            })?),
            None => None,
        };
        let alg = match (&jwk.algorithm, named) {
            (_, Some(a)) => a,
            (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err(cfg_err(path, format!("key {i}: unsupported curve"))),
            },
            (AlgorithmParameters::OctetKeyPair(_), None) => Algorithm::EdDSA,
            (AlgorithmParameters::OctetKey(_), None) => {
                return Err(cfg_err(path, format!("key {i}: an oct key needs \"alg\"")))
            }
            (_, None) => return Err(cfg_err(path, format!("key {i}: unsupported key type"))),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| cfg_err(path, format!("key {i}: {e}")))?;
        out.push(Key {
            alg,
            kid: jwk.common.key_id.clone(),
            key,
        });
    }
    Ok(out)
}

impl JwtKeys {
    /// Load every configured key; `None` when no key is configured.
    pub(super) fn load(cfg: &JwtConfig) -> Result<Option<Self>, AuthError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let mut keys = Vec::new();
        let secret = match (&cfg.hmac_secret, &cfg.hmac_secret_file) {
            (Some(s), _) => Some(s.as_bytes().to_vec()),
            (None, Some(p)) => {
                let s = std::fs::read_to_string(p).map_err(|e| cfg_err(p, e))?;
                let s = s.trim_end_matches(['\n', '\r']);
                if s.len() < 32 {
                    return Err(cfg_err(p, "the HMAC secret must be at least 32 bytes"));
                }
                Some(s.as_bytes().to_vec())
            }
            (None, None) => None,
        };
        if let Some(s) = secret {
            let key = DecodingKey::from_secret(&s)
                .map_err(|e| AuthError::Config(format!("jwt.hmac_secret: {e}")))?;
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                keys.push(Key {
                    alg,
                    kid: None,
                    key: key.clone(),
                });
            }
        }
        for kf in &cfg.public_key_files {
            let (alg, kid) = match kf {
                KeyFile::Path(_) => (None, None),
                KeyFile::Spec { alg, kid, .. } => (alg.as_deref(), kid.clone()),
            };
            let (alg, key) = pem_key(kf.file(), alg)?;
            keys.push(Key { alg, kid, key });
        }
        if let Some(p) = &cfg.jwks_file {
            keys.extend(jwks_keys(p)?);
        }
        Ok(Some(Self {
            keys,
            audience: cfg.audience.clone(),
            issuer: cfg.issuer.clone(),
            require_exp: cfg.require_exp,
            leeway: cfg.leeway.as_secs(),
        }))
    }

    /// Verify a compact JWS. Only keys of the header's algorithm (and its
    /// `kid`, when it names one a key has) are tried.
    pub(super) fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let by_kid = header
            .kid
            .as_deref()
            .filter(|k| self.keys.iter().any(|key| key.kid.as_deref() == Some(*k)));
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.required_spec_claims = if self.require_exp {
            HashSet::from(["exp".to_owned()])
        } else {
            HashSet::new()
        };
        match &self.audience {
            Some(a) => validation.set_audience(&[a]),
            None => validation.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            validation.set_issuer(&[i]);
        }
        let mut last = AuthError::Invalid;
        for key in self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| match by_kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => true,
            })
        {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return claims(data.claims),
                Err(e) => {
                    let err = match e.kind() {
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidAudience => AuthError::Refused("wrong audience".into()),
                        ErrorKind::InvalidIssuer => AuthError::Refused("wrong issuer".into()),
                        ErrorKind::MissingRequiredClaim(c) => {
                            AuthError::Refused(format!("no {c} claim"))
                        }
                        _ => continue,
                    };
                    // The signature checked out; the claims did not.
                    last = err;
                    break;
                }
            }
        }
        Err(last)
    }
}

fn claims(c: Claims) -> Result<Verified, AuthError> {
    let sub = c
        .sub
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::Refused("no sub claim (the device id)".into()))?;
    let perm = match c.perm {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<PermSpec>(v)
                .map_err(|e| AuthError::Refused(format!("bad perm claim: {e}")))?,
        ),
    };
    Ok(Verified {
        sub,
        exp: c.exp,
        ctype: c.ctype,
        perm,
    })
}
