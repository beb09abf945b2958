//! TLS: the rustls server configuration (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`) and the
//! development certificate generated for the shipped config.

use std::sync::Arc;

use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use std::fmt;
use std::path::PathBuf;

/// PEM bytes of a certificate chain and its private key, already checked to parse.
#[derive(Clone)]
pub struct TlsMaterial {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsMaterial {
    // The key stays out of every log line and panic message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Why a certificate and key do not build a server configuration; each names the file.
/// Causes are named in the message, not chained as `source()`: a chain printer (`{:#}`, as
/// `main` prints a start-up error) would print them twice.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_cert `{}` is not PEM: {error}", path.display())]
    CertNotPem { path: PathBuf, error: PemError },
    #[error("tls_cert `{}` holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("tls_key `{}` holds no usable private key: {error}", path.display())]
    NoPrivateKey { path: PathBuf, error: PemError },
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
    #[error(
        "tls_cert `{}` and tls_key `{}` do not form a usable pair: {error}",
        cert_path.display(),
        key_path.display()
    )]
    NotAPair {
        cert_path: PathBuf,
        key_path: PathBuf,
        error: rustls::Error,
    },
}

/// Why a `[listen] hsts` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HstsError {
    #[error("only applies with TLS (set tls_cert and tls_key)")]
    WithoutTls,
    #[error(
        "`{value}` must start with max-age=<seconds>, e.g. \"max-age=31536000; includeSubDomains\""
    )]
    NoMaxAge { value: String },
    #[error("`{value}` is not a valid header value")]
    NotAHeaderValue { value: String },
}

/// Build a rustls server config from PEM material; the error says what is wrong with it.
pub fn server_config(m: &TlsMaterial) -> Result<ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&m.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::CertNotPem {
            path: m.cert_path.clone(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: m.cert_path.clone(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(&m.key_pem).map_err(|error| TlsError::NoPrivateKey {
            path: m.key_path.clone(),
            error,
        })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| TlsError::NotAPair {
            cert_path: m.cert_path.clone(),
            key_path: m.key_path.clone(),
            error,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our cipher suite order (strongest first), not the client's: a client offering a weak
    // suite first is not allowed to pick it over a strong one both sides support.
    config.ignore_client_order = true;
    // Stateless resumption tickets spare returning clients a full handshake.
    if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Ok(config)
}

/// The rustls client configuration for a route's `https://` upstreams: verified against
/// `ca_pem` (`upstream_ca_file`) when given, else the system's roots; with a client
/// certificate when `client` (`upstream_client_cert`, `upstream_client_key`) is given. ALPN
/// is left empty: the upstream client sets it from `upstream_protocol`. The error says what
/// is wrong, for the config key named by the caller.
pub fn upstream_client_config(
    ca_pem: Option<&[u8]>,
    client: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("upstream_ca_file is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("upstream_ca_file holds an unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("upstream_ca_file holds no certificate".into());
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "no system CA certificates found to verify https upstreams; set upstream_ca_file"
                        .into(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("upstream_client_cert is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err("upstream_client_cert holds no certificate".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| format!("upstream_client_key holds no usable private key: {e}"))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!(
                    "upstream_client_cert and upstream_client_key do not form a usable pair: {e}"
                )
            })
        }
    }
}

/// Validate `[listen] hsts`: a `Strict-Transport-Security` value (RFC 6797 section 6.1)
/// starting with `max-age=<seconds>`, only meaningful with TLS (browsers ignore the header
/// over plain HTTP, section 8.1).
pub fn hsts_value(v: &str, tls: bool) -> Result<http::HeaderValue, HstsError> {
    if !tls {
        return Err(HstsError::WithoutTls);
    }
    let max_age = v
        .split(';')
        .next()
        .map(str::trim)
        .and_then(|d| d.strip_prefix("max-age="));
    if !max_age.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) {
        return Err(HstsError::NoMaxAge { value: v.into() });
    }
    http::HeaderValue::from_str(v).map_err(|_| HstsError::NotAHeaderValue { value: v.into() })
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, as (cert PEM, key PEM).
pub fn generate_dev_cert() -> Result<(Vec<u8>, Vec<u8>), rcgen::Error> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let cert = rcgen::generate_simple_self_signed(names)?;
    Ok((
        cert.cert.pem().into_bytes(),
        cert.signing_key.serialize_pem().into_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> TlsMaterial {
        TlsMaterial {
            cert_path: "c.pem".into(),
            key_path: "k.pem".into(),
            cert_pem,
            key_pem,
        }
    }

    #[test]
    fn dev_cert_builds_a_server_config() {
        let (cert_pem, key_pem) = generate_dev_cert().unwrap();
        let cfg = server_config(&material(cert_pem, key_pem)).unwrap();
        assert_eq!(cfg.alpn_protocols[0], b"h2");
    }

    #[test]
    fn garbage_is_refused_with_the_path() {
        let m = material(b"nope".to_vec(), b"nope".to_vec());
        assert!(server_config(&m).unwrap_err().to_string().contains("c.pem"));
    }

    /// The cause is in the message and not chained again, so `{:#}` (how `main` prints a
    /// start-up error) shows it once.
    #[test]
    fn a_bad_key_names_its_file_and_cause_once() {
        let (cert_pem, _) = generate_dev_cert().unwrap();
        let e = server_config(&material(cert_pem, b"nope".to_vec())).unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with("tls_key `k.pem` holds no usable private key: "),
            "{message}"
        );
        assert_eq!(format!("{:#}", anyhow::Error::from(e)), message);
    }
}
