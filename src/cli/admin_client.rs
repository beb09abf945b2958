//! A minimal client of the admin API for the CLI (`portcullis revoke`, `portcullis
//! revocations list`): one HTTP/1.1 request over TCP or TLS.

use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Where and how to reach the admin API.
pub struct AdminClient {
    pub base: Uri,
    pub token: String,
    /// PEM file with the CA (or self-signed certificate) to trust for `https://`.
    pub cacert: Option<std::path::PathBuf>,
}

impl AdminClient {
    /// Send one request; returns the status and the body text.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, String)> {
        let scheme = self.base.scheme_str().unwrap_or("http");
        let authority = self
            .base
            .authority()
            .context("--admin must be a URL such as http://127.0.0.1:9443")?
            .clone();
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("cannot connect to the admin API at {}", self.base))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if !payload.is_empty() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(payload)))?;
        match scheme {
            "http" => send(TokioIo::new(tcp), req).await,
            "https" => {
                let connector = tokio_rustls::TlsConnector::from(Arc::new(self.tls_config()?));
                let name = ServerName::try_from(host.clone()).context("invalid admin host name")?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake with the admin API failed")?;
                send(TokioIo::new(tls), req).await
            }
            other => bail!("unsupported scheme `{other}` in --admin (use http or https)"),
        }
    }

    fn tls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let path = self
            .cacert
            .as_ref()
            .context("an https admin URL needs --cacert (the admin certificate or its CA, PEM)")?;
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> anyhow::Result<(u16, String)>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
