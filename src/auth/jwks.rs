//! Key sets published as a JWKS (RFC 7517): fetched from an `http(s)://` URL or a file,
//! refreshed periodically and early when a token names a `kid` we do not know
//! (rate-limited), the previous set kept whenever a refresh fails. Rotating keys across a
//! fleet is then publishing a new JWKS: every instance picks it up within one refresh.
//!
//! This module only fetches and parses ([`fetch`]) and keeps the current set
//! ([`Refresher`]); the validator reads [`Refresher::keys`] (or is handed each new set by
//! [`Refresher::run`]'s callback) and calls [`Refresher::unknown_kid`] on a miss.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::keys::{parse_jwks, VerifyKey};

/// Largest JWKS document accepted, in bytes (a set of a dozen RSA-4096 keys is ~10 KiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Time allowed for one fetch: connect, TLS, request and the whole body.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the set is fetched again when nothing asks earlier.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Least time between two fetches, whatever asks: an attacker sending tokens with random
/// `kid`s must not turn the gateway into a load generator against the key server.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Where a key set is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `http://` or `https://` (the latter verified against the system roots, or `ca`).
    Url(Uri),
    File(PathBuf),
}

impl Source {
    /// `http(s)://...` is a URL, anything else a file path.
    pub fn parse(s: &str) -> Result<Source, JwksError> {
        if s.starts_with("http://") || s.starts_with("https://") {
            let uri: Uri = s
                .parse()
                .map_err(|e| JwksError::Config(format!("not a URL: {e}")))?;
            if uri.host().is_none() {
                return Err(JwksError::Config("the URL has no host".into()));
            }
            Ok(Source::Url(uri))
        } else if s.contains("://") {
            Err(JwksError::Config(
                "only http://, https:// or a file path".into(),
            ))
        } else {
            Ok(Source::File(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(u) => write!(f, "{u}"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub timeout: Duration,
    /// PEM CA certificates to trust for `https://` instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: DEFAULT_FETCH_TIMEOUT,
            ca_pem: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("{0}")]
    Config(String),
    #[error("cannot read the JWKS file: {0}")]
    File(#[source] std::io::Error),
    #[error("cannot reach the JWKS server: {0}")]
    Connect(String),
    #[error("the JWKS server answered {0}")]
    Status(StatusCode),
    #[error("the JWKS document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Parse(String),
}

/// Fetch and parse a key set. Symmetric (`oct`) keys are refused from a URL: a JWKS
/// endpoint is normally public, and a shared secret published there lets anyone sign.
pub async fn fetch(source: &Source, opts: &FetchOptions) -> Result<Vec<VerifyKey>, JwksError> {
    let bytes = match source {
        Source::File(path) => tokio::fs::read(path).await.map_err(JwksError::File)?,
        Source::Url(uri) => tokio::time::timeout(opts.timeout, get(uri, opts))
            .await
            .map_err(|_| JwksError::Timeout(opts.timeout))??
            .to_vec(),
    };
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let keys = parse_jwks(&bytes).map_err(JwksError::Parse)?;
    if matches!(source, Source::Url(_))
        && keys
            .iter()
            .any(|k| k.alg.family() == jsonwebtoken::AlgorithmFamily::Hmac)
    {
        return Err(JwksError::Parse(
            "a JWKS fetched over the network may not carry symmetric (oct) keys".into(),
        ));
    }
    if keys.is_empty() {
        return Err(JwksError::Parse("the JWKS holds no signature key".into()));
    }
    Ok(keys)
}

/// One `GET` over a fresh HTTP/1.1 connection (a refresh every few minutes needs no pool).
async fn get(uri: &Uri, opts: &FetchOptions) -> Result<Bytes, JwksError> {
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or_else(|| JwksError::Config("the URL has no host".into()))?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // `[::1]` in a URL is `::1` to connect to and to name in TLS.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| JwksError::Connect(e.to_string()))?;
    let authority = uri.authority().map_or(host, |a| a.as_str()).to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if https {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(opts)?));
        let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned())
            .map_err(|e| JwksError::Config(format!("not a TLS server name: {e}")))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| JwksError::Connect(format!("TLS: {e}")))?;
        send(TokioIo::new(tls), &authority, &path).await
    } else {
        send(TokioIo::new(tcp), &authority, &path).await
    }
}

async fn send<I>(io: I, authority: &str, path: &str) -> Result<Bytes, JwksError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| JwksError::Connect(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let request = Request::get(path)
        .header(HOST, authority)
        .header(ACCEPT, "application/jwk-set+json, application/json")
        .header(
            USER_AGENT,
            concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| JwksError::Config(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| JwksError::Connect(e.to_string()))?;
    if response.status() != StatusCode::OK {
        driver.abort();
        return Err(JwksError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                JwksError::TooLarge
            } else {
                JwksError::Connect(e.to_string())
            }
        })?
        .to_bytes();
    driver.abort();
    Ok(body)
}

fn tls_config(opts: &FetchOptions) -> Result<rustls::ClientConfig, JwksError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match &opts.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| JwksError::Config(format!("CA file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| JwksError::Config(format!("CA file: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(JwksError::Config(
            "no CA certificate to verify the JWKS server with".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| JwksError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Keeps the current key set of one [`Source`] fresh. Share it as `Arc<Refresher>`; spawn
/// [`Refresher::run`] once.
pub struct Refresher {
    source: Source,
    opts: FetchOptions,
    interval: Duration,
    min_interval: Duration,
    current: ArcSwap<Vec<VerifyKey>>,
    /// When the last fetch started (successful or not), for the rate limit.
    last_fetch: Mutex<Option<Instant>>,
    early: Notify,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("source", &self.source)
            .field("keys", &self.current.load().len())
            .finish_non_exhaustive()
    }
}

impl Refresher {
    /// A refresher starting from `initial` (what start-up fetched; start-up should refuse to
    /// start without a first set, since no token could verify).
    pub fn new(
        source: Source,
        opts: FetchOptions,
        initial: Vec<VerifyKey>,
        interval: Duration,
        min_interval: Duration,
    ) -> Arc<Refresher> {
        Arc::new(Refresher {
            source,
            opts,
            interval,
            min_interval,
            current: ArcSwap::from_pointee(initial),
            last_fetch: Mutex::new(Some(Instant::now())),
            early: Notify::new(),
        })
    }

    /// The key set in force. Cheap: an atomic load, no lock.
    pub fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.current.load_full()
    }

    /// A token named a `kid` no key has: ask for an early refresh. Rate-limited by
    /// [`Refresher::run`] to one fetch per `min_interval`; calling it often costs nothing.
    pub fn unknown_kid(&self) {
        self.early.notify_one();
    }

    /// Fetch now unless the last fetch started less than `min_interval` ago. Returns whether
    /// the key set was replaced; on failure the previous set stays and the error is logged.
    pub async fn refresh(&self) -> bool {
        {
            let mut last = self
                .last_fetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < self.min_interval) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match fetch(&self.source, &self.opts).await {
            Ok(keys) => {
                let kids: Vec<&str> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                tracing::info!(source = %self.source, keys = keys.len(), ?kids, "JWKS refreshed");
                self.current.store(Arc::new(keys));
                true
            }
            Err(e) => {
                tracing::warn!(source = %self.source, error = %e, "JWKS refresh failed; keeping the previous key set");
                false
            }
        }
    }

    /// Refresh every `interval`, and early (rate-limited) after [`Refresher::unknown_kid`],
    /// until dropped; `on_change` gets each new set (e.g. to rebuild the validator).
    pub async fn run(self: Arc<Self>, on_change: impl Fn(Arc<Vec<VerifyKey>>)) {
        loop {
            let since = self
                .last_fetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map_or(Duration::MAX, |t| t.elapsed());
            let due = self.interval.saturating_sub(since);
            tokio::select! {
                _ = tokio::time::sleep(due) => {}
                _ = self.early.notified() => {
                    // Hold an early request until the rate limit allows it.
                    let wait = self.min_interval.saturating_sub(since);
                    tokio::time::sleep(wait).await;
                }
            }
            let replaced = self.refresh().await;
            // Misses reported before this fetch are answered by it: drop a pending wake-up
            // so a burst of unknown kids costs one fetch, not two.
            let _ = futures_util::FutureExt::now_or_never(self.early.notified());
            if replaced {
                on_change(self.keys());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const RSA_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"r1","alg":"RS256","use":"sig",
        "n":"u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw",
        "e":"AQAB"}]}"#;
    const HMAC_JWKS: &str = r#"{"keys":[{"kty":"oct","kid":"h1","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM0NQ"}]}"#;

    /// An HTTP server answering every request with the next (status, body) in `answers`
    /// (the last one repeats), counting requests.
    async fn server(answers: Vec<(u16, &'static str)>) -> (Uri, Arc<AtomicUsize>) {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (counter, answers) = (counter.clone(), answers.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = answers[n.min(answers.len() - 1)];
                        async move {
                            let mut r = http::Response::new(http_body_util::Full::new(
                                Bytes::from_static(body.as_bytes()),
                            ));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}/jwks.json").parse().unwrap(), hits)
    }

    #[test]
    fn sources_parse() {
        assert!(matches!(
            Source::parse("https://idp.example/jwks"),
            Ok(Source::Url(_))
        ));
        assert!(matches!(
            Source::parse("keys/jwks.json"),
            Ok(Source::File(_))
        ));
        assert!(Source::parse("ftp://x/jwks").is_err());
    }

    #[tokio::test]
    async fn fetches_over_http_and_from_a_file() {
        let (uri, hits) = server(vec![(200, RSA_JWKS)]).await;
        let keys = fetch(&Source::Url(uri), &FetchOptions::default())
            .await
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r1"));
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, HMAC_JWKS).unwrap();
        // A file may hold a shared secret (it is as private as the config)...
        let keys = fetch(&Source::File(path), &FetchOptions::default())
            .await
            .unwrap();
        assert_eq!(keys[0].kid.as_deref(), Some("h1"));
    }

    #[tokio::test]
    async fn refuses_bad_answers() {
        // ...a network endpoint may not.
        let (uri, _) = server(vec![(200, HMAC_JWKS)]).await;
        let e = fetch(&Source::Url(uri), &FetchOptions::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("symmetric"), "{e}");
        let (uri, _) = server(vec![(503, "down")]).await;
        let e = fetch(&Source::Url(uri), &FetchOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, JwksError::Status(s) if s == 503), "{e}");
        let (uri, _) = server(vec![(200, "{\"keys\": []}")]).await;
        assert!(fetch(&Source::Url(uri), &FetchOptions::default())
            .await
            .is_err());
        let closed: Uri = "http://127.0.0.1:9/jwks".parse().unwrap();
        assert!(matches!(
            fetch(&Source::Url(closed), &FetchOptions::default()).await,
            Err(JwksError::Connect(_))
        ));
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_previous_set_and_refreshes_are_rate_limited() {
        let (uri, hits) = server(vec![(500, "oops"), (200, RSA_JWKS)]).await;
        let r = Refresher::new(
            Source::Url(uri),
            FetchOptions::default(),
            Vec::new(),
            Duration::from_secs(3600),
            Duration::from_millis(200),
        );
        // Created just now: the first refresh waits for the rate limit.
        assert!(!r.refresh().await);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!r.refresh().await, "500: kept the previous (empty) set");
        assert!(r.keys().is_empty());
        assert!(!r.refresh().await, "rate-limited");
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // An unknown kid wakes the task, which waits out the rate limit, then fetches.
        let changes = Arc::new(AtomicUsize::new(0));
        let seen = changes.clone();
        let task = tokio::spawn(r.clone().run(move |keys| {
            assert_eq!(keys.len(), 1);
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        for _ in 0..50 {
            r.unknown_kid();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while changes.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "no early refresh");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(r.keys()[0].kid.as_deref(), Some("r1"));
        // Fifty misses, one fetch.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        task.abort();
    }
}
