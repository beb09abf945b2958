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
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::keys::{parse_jwks, Family, VerifyKey};

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
    /// OpenID Connect Discovery: the `jwks_uri` of the document at `document`, whose
    /// `issuer` must be `issuer` (looked up again before every fetch, see [`super::discovery`]).
    Discovery {
        issuer: String,
        document: Uri,
    },
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
            Source::Discovery { document, .. } => write!(f, "{document}"),
        }
    }
}

/// `https://`, or `http://` to this host only: keys fetched in clear text over a network
/// could be swapped by anyone on the path, who could then sign any token.
pub fn is_safe_url(uri: &Uri) -> bool {
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => {
            let host = uri.host().unwrap_or_default();
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// How to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The cause is in the message, not chained: a chain printer would show it twice.
    #[error("cannot read the JWKS file: {0}")]
    File(std::io::Error),
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
    /// The OpenID Connect discovery document is unusable (wrong `issuer`, no `jwks_uri`).
    #[error("discovery: {0}")]
    Discovery(String),
}

/// Fetch and parse a key set. Symmetric (`oct`) keys are refused from a URL: a JWKS
/// endpoint is normally public, and a shared secret published there lets anyone sign.
pub async fn fetch(source: &Source, opts: &FetchOptions) -> Result<Vec<VerifyKey>, JwksError> {
    let bytes = fetch_document(source, opts).await?;
    parse_document(source, &bytes)
}

/// The raw JWKS document, at most [`MAX_JWKS_BYTES`].
async fn fetch_document(source: &Source, opts: &FetchOptions) -> Result<Vec<u8>, JwksError> {
    let bytes = match source {
        Source::File(path) => tokio::fs::read(path).await.map_err(JwksError::File)?,
        Source::Url(uri) => get_jwks(uri, opts).await?,
        Source::Discovery { issuer, document } => {
            let uri = super::discovery::jwks_uri(document, issuer, opts).await?;
            get_jwks(&uri, opts).await?
        }
    };
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    Ok(bytes)
}

async fn get_jwks(uri: &Uri, opts: &FetchOptions) -> Result<Vec<u8>, JwksError> {
    let accept = "application/jwk-set+json, application/json";
    let body = tokio::time::timeout(opts.timeout, get(uri, opts, accept))
        .await
        .map_err(|_| JwksError::Timeout(opts.timeout))??;
    Ok(body.to_vec())
}

/// Parse a JWKS document from `source` with the rules of [`fetch`] (used by config
/// validation to check a file source without the runtime).
pub fn parse_document(source: &Source, bytes: &[u8]) -> Result<Vec<VerifyKey>, JwksError> {
    let name = match source {
        Source::Url(u) => format!("[jwt.jwks] url {u}"),
        Source::File(p) => format!("[jwt.jwks] file {}", p.display()),
        Source::Discovery { issuer, .. } => format!("the jwks_uri of issuer {issuer}"),
    };
    let keys = parse_jwks(bytes, &name).map_err(JwksError::Parse)?;
    if !matches!(source, Source::File(_)) {
        if let Some(k) = keys.iter().find(|k| k.alg.family() == Family::Hmac) {
            return Err(JwksError::Parse(format!(
                "{name} kid {:?}: a JWKS fetched over the network may not carry symmetric \
                 (oct) keys: a published secret is no secret",
                k.kid.as_deref().unwrap_or("(none)")
            )));
        }
    }
    if keys.is_empty() {
        return Err(JwksError::Parse("the JWKS holds no signature key".into()));
    }
    Ok(keys)
}

/// One `GET` over a fresh HTTP/1.1 connection (a refresh every few minutes needs no pool).
pub(super) async fn get(uri: &Uri, opts: &FetchOptions, accept: &str) -> Result<Bytes, JwksError> {
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
        send(TokioIo::new(tls), &authority, &path, accept).await
    } else {
        send(TokioIo::new(tcp), &authority, &path, accept).await
    }
}

async fn send<I>(io: I, authority: &str, path: &str, accept: &str) -> Result<Bytes, JwksError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| JwksError::Connect(e.to_string()))?;
    // Aborted however this function ends, a timeout dropping it included: a server that
    // holds the connection open must not keep a task alive per attempt.
    let driver = AbortOnDrop(tokio::spawn(conn));
    let request = Request::get(path)
        .header(HOST, authority)
        .header(ACCEPT, accept)
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
    drop(driver);
    Ok(body)
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
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

/// What one fetch did to the key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// A different document was published: the new set is in force.
    Changed,
    /// The same document as before: the set in force stays (and so do cached verifications).
    Unchanged,
    /// Unreachable, refused, or unparsable: the previous set stays in force.
    Failed,
}

impl Refreshed {
    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refreshed::Changed => "changed",
            Refreshed::Unchanged => "unchanged",
            Refreshed::Failed => "failed",
        }
    }
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
    /// SHA-256 of the document in force, to tell a new publication from the same one.
    digest: Mutex<Option<[u8; 32]>>,
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
            digest: Mutex::new(None),
            early: Notify::new(),
        })
    }

    /// Fetch the first set, then return a refresher starting from it; the error says why
    /// there is no first set (the caller should not serve without one).
    pub async fn start(
        source: Source,
        opts: FetchOptions,
        interval: Duration,
        min_interval: Duration,
    ) -> Result<Arc<Refresher>, JwksError> {
        let doc = fetch_document(&source, &opts).await?;
        let keys = parse_document(&source, &doc)?;
        let r = Refresher::new(source, opts, keys, interval, min_interval);
        *lock(&r.digest) = Some(Sha256::digest(&doc).into());
        Ok(r)
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The key set in force. Cheap: an atomic load, no lock.
    pub fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.current.load_full()
    }

    /// The key set in force without touching its reference count, for the request path.
    pub fn current(&self) -> arc_swap::Guard<Arc<Vec<VerifyKey>>> {
        self.current.load()
    }

    /// A token named a `kid` no key has: ask for an early refresh. Rate-limited by
    /// [`Refresher::run`] to one fetch per `min_interval`; calling it often costs nothing.
    pub fn unknown_kid(&self) {
        self.early.notify_one();
    }

    fn since_last_fetch(&self) -> Duration {
        lock(&self.last_fetch).map_or(Duration::MAX, |t| t.elapsed())
    }

    /// Fetch now unless the last fetch started less than `min_interval` ago (`None`).
    /// On failure the previous set stays and the error is logged.
    pub async fn refresh(&self) -> Option<Refreshed> {
        {
            let mut last = lock(&self.last_fetch);
            if last.is_some_and(|t| t.elapsed() < self.min_interval) {
                return None;
            }
            *last = Some(Instant::now());
        }
        Some(self.fetch_now().await)
    }

    /// Fetch now, whatever the rate limit says: for an operator's explicit request (a reload),
    /// never for anything a client can trigger. On failure the previous set stays.
    pub async fn refresh_now(&self) -> Refreshed {
        *lock(&self.last_fetch) = Some(Instant::now());
        self.fetch_now().await
    }

    async fn fetch_now(&self) -> Refreshed {
        let fetched = match fetch_document(&self.source, &self.opts).await {
            Ok(doc) => parse_document(&self.source, &doc).map(|keys| (doc, keys)),
            Err(e) => Err(e),
        };
        match fetched {
            Ok((doc, keys)) => {
                let digest: [u8; 32] = Sha256::digest(&doc).into();
                let mut known = lock(&self.digest);
                if *known == Some(digest) {
                    tracing::debug!(source = %self.source, "JWKS unchanged");
                    return Refreshed::Unchanged;
                }
                let kids: Vec<&str> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                tracing::info!(source = %self.source, keys = keys.len(), ?kids, "JWKS refreshed");
                self.current.store(Arc::new(keys));
                *known = Some(digest);
                Refreshed::Changed
            }
            Err(e) => {
                tracing::warn!(source = %self.source, error = %e, "JWKS refresh failed; keeping the previous key set");
                Refreshed::Failed
            }
        }
    }

    /// Refresh every `interval`, and early (rate-limited) after [`Refresher::unknown_kid`],
    /// until dropped; `on_fetch` hears the outcome of each fetch (after a `Changed` one the
    /// new set is already in force, e.g. to forget verifications made with a retired key).
    pub async fn run(self: Arc<Self>, on_fetch: impl Fn(Refreshed)) {
        // An interval shorter than the rate limit would wake the loop only to be refused.
        let interval = self.interval.max(self.min_interval);
        loop {
            // No key at all (an issuer whose first fetch failed): try again as often as the
            // rate limit allows rather than leave its tokens refused for a whole interval.
            let interval = if self.current.load().is_empty() {
                self.min_interval
            } else {
                interval
            };
            let due = interval.saturating_sub(self.since_last_fetch());
            tokio::select! {
                _ = tokio::time::sleep(due) => {}
                _ = self.early.notified() => {
                    // Hold an early request until the rate limit allows it (measured now, not
                    // when the loop went to sleep).
                    let wait = self.min_interval.saturating_sub(self.since_last_fetch());
                    tokio::time::sleep(wait).await;
                }
            }
            let outcome = self.refresh().await;
            // Misses reported before this fetch are answered by it: drop a pending wake-up
            // so a burst of unknown kids costs one fetch, not two.
            let _ = futures_util::FutureExt::now_or_never(self.early.notified());
            if let Some(outcome) = outcome {
                on_fetch(outcome);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const RSA_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"r1","alg":"RS256","use":"sig",
        "n":"u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw",
        "e":"AQAB"}]}"#;
    /// The same key as [`RSA_JWKS`] under another kid: a different document.
    const RSA_JWKS_2: &str = r#"{"keys":[{"kty":"RSA","kid":"r2","alg":"RS256",
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
        assert_eq!(r.refresh().await, None);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            r.refresh().await,
            Some(Refreshed::Failed),
            "500: kept the previous (empty) set"
        );
        assert!(r.keys().is_empty());
        assert_eq!(r.refresh().await, None, "rate-limited");
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // An unknown kid wakes the task, which waits out the rate limit, then fetches.
        let changes = Arc::new(AtomicUsize::new(0));
        let seen = changes.clone();
        let task = tokio::spawn(r.clone().run(move |outcome| {
            assert_eq!(outcome, Refreshed::Changed);
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

    #[tokio::test]
    async fn the_same_document_again_is_unchanged() {
        let (uri, hits) = server(vec![(200, RSA_JWKS)]).await;
        let r = Refresher::start(
            Source::Url(uri),
            FetchOptions::default(),
            Duration::from_secs(3600),
            Duration::from_millis(50),
        )
        .await
        .unwrap();
        let first = r.keys();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(r.refresh().await, Some(Refreshed::Unchanged));
        assert!(Arc::ptr_eq(&first, &r.keys()), "the set in force stays");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_early_refresh_waits_only_for_the_rest_of_the_rate_limit() {
        let (uri, hits) = server(vec![(200, RSA_JWKS), (200, RSA_JWKS_2)]).await;
        let r = Refresher::start(
            Source::Url(uri),
            FetchOptions::default(),
            Duration::from_secs(3600),
            Duration::from_millis(400),
        )
        .await
        .unwrap();
        let task = tokio::spawn(r.clone().run(|_| {}));
        // The loop went to sleep at start-up; a miss well past the rate limit must be
        // answered at once, not one more `min_interval` later.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let asked = Instant::now();
        r.unknown_kid();
        while hits.load(Ordering::SeqCst) < 2 {
            assert!(asked.elapsed() < Duration::from_secs(5), "no early refresh");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            asked.elapsed() < Duration::from_millis(300),
            "waited {:?} though the rate limit had passed",
            asked.elapsed()
        );
        task.abort();
    }
}
