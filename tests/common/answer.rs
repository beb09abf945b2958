//! An HTTPS server that answers every request with one settable `(status, body)` (or, for a
//! path given its own answer, that one) and counts requests, its certificate issued for
//! `localhost` by a fresh private CA: the stand-in for a remote document the gateway fetches
//! (a JWKS key set, an OpenID discovery document), swapped or broken by the test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A running answer server; it serves until the test's runtime ends.
pub struct AnswerServer {
    /// `https://localhost:PORT` (clients must resolve `localhost` to 127.0.0.1).
    pub base: String,
    /// The private CA that issued its certificate (PEM), for the client's `ca_file`.
    pub ca_pem: String,
    answer: Arc<Mutex<(u16, String)>>,
    paths: Arc<Mutex<HashMap<String, (u16, String)>>>,
    hits: Arc<AtomicUsize>,
}

impl AnswerServer {
    /// Bind 127.0.0.1:0 and answer `(status, body)` until told otherwise.
    pub async fn start(status: u16, body: &str) -> AnswerServer {
        let pki = super::private_ca_for_localhost();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(pki.cert_der.clone())],
                PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).expect("key"),
            )
            .expect("server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answer = Arc::new(Mutex::new((status, body.to_owned())));
        let hits = Arc::new(AtomicUsize::new(0));
        let paths: Arc<Mutex<HashMap<String, (u16, String)>>> = Arc::default();
        let (a, h, p) = (answer.clone(), hits.clone(), paths.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, a, h, p) = (acceptor.clone(), a.clone(), h.clone(), p.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let own = p.lock().expect("paths").get(req.uri().path()).cloned();
                        let (status, body) =
                            own.unwrap_or_else(|| a.lock().expect("answer").clone());
                        async move {
                            let mut r = http::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        AnswerServer {
            base: format!("https://localhost:{port}"),
            ca_pem: pki.ca_pem,
            answer,
            paths,
            hits,
        }
    }

    /// Answer every later request for `path` with `(status, body)`.
    pub fn answer_path(&self, path: &str, status: u16, body: &str) {
        self.paths
            .lock()
            .expect("paths")
            .insert(path.to_owned(), (status, body.to_owned()));
    }

    /// Answer every later request with `(status, body)`.
    pub fn answer_with(&self, status: u16, body: &str) {
        *self.answer.lock().expect("answer") = (status, body.to_owned());
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
