//! TLS (`wss://`): the operator's PEM files turned into the rustls
//! [`ServerConfig`] every new connection is served with, kept current
//! without a restart, and the device identity a client certificate names.
//!
//! Why it looks like this:
//! - **One `ServerConfig`, swapped whole.** A handshake takes the current
//!   `Arc<ServerConfig>` from an [`ArcSwap`] (a lock-free load on accept)
//!   and keeps it for the connection's life, so a reload changes what new
//!   connections get and never touches an open one: nothing is dropped, and
//!   a connection's keys cannot change under it.
//! - **A bad new file keeps the old certificate.** [`TlsReloader::reload`]
//!   builds the new config completely (certificates parsed, key loaded and
//!   checked against the certificate, client CA parsed) before anything is
//!   swapped; any failure is returned (the caller logs it) and the old
//!   config stays. At start the same failure is a start error.
//! - **Change detection by (mtime, size).** The watcher compares the files'
//!   modification times and sizes with those of the last attempt, so a bad
//!   file is reported once, not every interval, and a certificate and key
//!   replaced one after the other are picked up once both are there.
//! - **The ring provider only**, fixed here rather than through rustls's
//!   process-wide default: no aws-lc (a C build), no OpenSSL, and no
//!   dependency on which other crate installed a default first.
//!
//! Sits above [`crate::config`] and below the shard, which drives the
//! connections (`shard::driver::tls`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{Config, TlsIdentity, TlsVersion};

/// The one application protocol offered by ALPN: the WebSocket upgrade is
/// HTTP/1.1. A client that offers ALPN without it is refused in the
/// handshake (`no_application_protocol`); one that offers none is served.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why the TLS files could not be turned into a server configuration. The
/// text names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {setting} {}: {source}", .path.display())]
    Read {
        /// The setting that names the file (`tls_cert`, `tls_key`, `tls_client_ca`).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file was read but holds no usable PEM block of the kind expected.
    #[error("{setting} {}: {message}", .path.display())]
    Pem {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the certificate and key (a key that does not belong
    /// to the certificate, an unsupported key type, ...).
    #[error("tls_cert / tls_key refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The files and choices a [`ServerConfig`] is built from.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    min_version: TlsVersion,
}

impl Files {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(self.cert.as_path()), Some(self.key.as_path())]
            .into_iter()
            .chain([self.client_ca.as_deref()])
            .flatten()
    }
}

/// Modification time and size of each file (`None`: unreadable), in
/// [`Files::paths`] order.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// The server's current TLS configuration and how to rebuild it.
#[derive(Debug)]
pub struct TlsReloader {
    files: Files,
    identity: TlsIdentity,
    current: ArcSwap<ServerConfig>,
    /// The files as they were at the last (re)load attempt.
    seen: Mutex<Stamp>,
}

impl TlsReloader {
    /// Read the files `cfg` names: `Ok(None)` without TLS settings, an
    /// error (naming the setting and file) if they are unusable.
    pub fn load(cfg: &Config) -> Result<Option<TlsReloader>, TlsError> {
        let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
            return Ok(None);
        };
        let files = Files {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: cfg.tls_client_ca.clone(),
            min_version: cfg.tls_min_version,
        };
        let seen = stamp(&files);
        let config = build(&files)?;
        Ok(Some(TlsReloader {
            files,
            identity: cfg.tls_identity,
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(seen),
        }))
    }

    /// The configuration new connections are served with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Which part of a client certificate names the device.
    pub fn identity(&self) -> TlsIdentity {
        self.identity
    }

    /// Whether client certificates are required (mutual TLS).
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Read the files again and serve new connections with them. On error
    /// the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let now = stamp(&self.files);
        let built = build(&self.files);
        // This version of the files was tried: a bad one is reported once.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = now;
        self.current.store(Arc::new(built?));
        Ok(())
    }

    /// [`reload`](Self::reload) if any file changed (modification time or
    /// size) since the last attempt; `None` if none did.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamp(&self.files);
        if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return None;
        }
        Some(self.reload())
    }
}

fn stamp(files: &Files) -> Stamp {
    files
        .paths()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(setting: &'static str, path: &Path, message: String) -> TlsError {
    TlsError::Pem {
        setting,
        path: path.to_owned(),
        message,
    }
}

/// Every `CERTIFICATE` block of a PEM file, in order (at least one).
fn read_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(setting, path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            setting,
            path,
            "no CERTIFICATE block found".to_owned(),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("tls_key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        pem_error(
            "tls_key",
            path,
            format!(
                "no usable private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block): {e}"
            ),
        )
    })
}

fn build(f: &Files) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs("tls_cert", &f.cert)?;
    let key = read_key(&f.key)?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match f.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let builder = match &f.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs("tls_client_ca", path)? {
                roots
                    .add(c)
                    .map_err(|e| pem_error("tls_client_ca", path, e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| pem_error("tls_client_ca", path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// The device identity in a (verified) client certificate: its subject's
/// common name, or its first DNS or URI subject alternative name. `None` if
/// the certificate does not parse or has no such name.
pub fn identity_of(cert_der: &[u8], which: TlsIdentity) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let name = match which {
        TlsIdentity::Cn => cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_owned(),
        TlsIdentity::San => {
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|g| match g {
                GeneralName::DNSName(s) | GeneralName::URI(s) => Some((*s).to_owned()),
                _ => None,
            })?
        }
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new(); // no default CN
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn identity_is_the_cn_or_the_first_dns_or_uri_san() {
        let ip = SanType::IpAddress("10.0.0.1".parse().unwrap());
        let uri = SanType::URI("spiffe://fleet/dev-1".to_owned().try_into().unwrap());
        let dns = SanType::DnsName("dev-1.example".to_owned().try_into().unwrap());
        let der = cert(Some("dev-1-cn"), vec![ip.clone(), uri, dns.clone()]);
        assert_eq!(
            identity_of(&der, TlsIdentity::Cn).as_deref(),
            Some("dev-1-cn")
        );
        assert_eq!(
            identity_of(&der, TlsIdentity::San).as_deref(),
            Some("spiffe://fleet/dev-1"),
            "IP addresses are skipped, the first DNS or URI name counts"
        );
        let der = cert(None, vec![ip, dns]);
        assert_eq!(identity_of(&der, TlsIdentity::Cn), None, "no CN");
        assert_eq!(
            identity_of(&der, TlsIdentity::San).as_deref(),
            Some("dev-1.example")
        );
        assert_eq!(
            identity_of(&cert(Some("x"), vec![]), TlsIdentity::San),
            None
        );
        assert_eq!(identity_of(b"not DER", TlsIdentity::Cn), None);
    }
}
