//! `https://` upstreams (issue 16): verified against `upstream_ca_file` (a private CA made
//! here), SNI from the URL host, a client certificate when the upstream asks for one (mTLS),
//! and a certificate the gateway cannot verify answered 502, never a silent downgrade.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{Setup, TestGateway, Upstream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA, a `localhost` server certificate and a client certificate it signed.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "upstream test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// The upstream's TLS: `localhost` certificate, ALPN h2 and http/1.1, and (for mTLS) only
/// clients with a certificate from the same CA.
fn server_config(p: &Pki, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(p.server_cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(p.server_key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let mut cfg = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(p.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap()
    } else {
        builder
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap()
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

const ADMIN_TOKEN: &str = "admin-token-0123456789";

async fn gateway(setup: Setup, up: &Upstream, route_extra: &str) -> TestGateway {
    let config = format!(
        r#"{{listen}}
[admin]
token = "{ADMIN_TOKEN}"
addr = "127.0.0.1:0"

[[routes]]
prefix = "/"
upstream = "{}"
auth = "public"
timeout = "5s"
{route_extra}
"#,
        up.https_url()
    );
    setup.start(&config).await
}

async fn upstream_failures(gw: &TestGateway) -> u64 {
    common::admin_upstreams(gw, ADMIN_TOKEN).await["routes"][0]["targets"][0]["failures"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn private_ca_upstream_is_verified_and_reached_over_tls() {
    let p = pki();
    let up = Upstream::start_auto(Some(server_config(&p, false))).await;
    let setup = Setup::new();
    setup.write("certs/ca.pem", &p.ca_pem);
    let gw = gateway(setup, &up, "upstream_ca_file = \"certs/ca.pem\"").await;
    let r = gw.get("/tls/hello", None).await;
    let echo = r.echo();
    assert_eq!(echo.path, "/tls/hello");
    assert_eq!(
        echo.version, "HTTP/1.1",
        "upstream_protocol defaults to http1"
    );
    // The client's Host travels on; TLS (SNI, verification) used the URL's host.
    assert_eq!(
        echo.one("host"),
        Some(format!("localhost:{}", gw.port()).as_str())
    );
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn https_upstream_with_h2_negotiates_http2_by_alpn() {
    let p = pki();
    let up = Upstream::start_auto(Some(server_config(&p, false))).await;
    let setup = Setup::new();
    setup.write("certs/ca.pem", &p.ca_pem);
    for protocol in ["h2", "auto"] {
        let gw = gateway(
            Setup::new(),
            &up,
            &format!(
                "upstream_ca_file = \"{}\"\nupstream_protocol = \"{protocol}\"",
                setup.path("certs/ca.pem").display()
            ),
        )
        .await;
        let echo = gw.get("/alpn", None).await.echo();
        assert_eq!(echo.version, "HTTP/2.0", "{protocol}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn mtls_upstream_gets_the_client_certificate() {
    let p = pki();
    let up = Upstream::start_auto(Some(server_config(&p, true))).await;

    // Without a client certificate the upstream refuses the handshake: 502.
    let setup = Setup::new();
    setup.write("certs/ca.pem", &p.ca_pem);
    let gw = gateway(setup, &up, "upstream_ca_file = \"certs/ca.pem\"").await;
    let r = gw.get("/mtls", None).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(up.hits(), 0);
    gw.shutdown().await;

    let setup = Setup::new();
    setup.write("certs/ca.pem", &p.ca_pem);
    setup.write("certs/gw.pem", &p.client_cert);
    setup.write("certs/gw-key.pem", &p.client_key);
    let gw = gateway(
        setup,
        &up,
        "upstream_ca_file = \"certs/ca.pem\"\nupstream_client_cert = \"certs/gw.pem\"\nupstream_client_key = \"certs/gw-key.pem\"",
    )
    .await;
    let r = gw.get("/mtls", None).await;
    assert_eq!(r.echo().path, "/mtls");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_certificate_the_gateway_cannot_verify_is_502() {
    let p = pki();
    let other = pki();
    let up = Upstream::start_auto(Some(server_config(&p, false))).await;
    // Trusts another CA: the upstream's certificate does not verify.
    let setup = Setup::new();
    setup.write("certs/ca.pem", &other.ca_pem);
    let gw = gateway(setup, &up, "upstream_ca_file = \"certs/ca.pem\"").await;
    let r = gw.get("/wrong-ca", None).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_gateway");
    assert_eq!(up.hits(), 0, "nothing may reach an unverified upstream");
    assert!(upstream_failures(&gw).await >= 1);
    gw.shutdown().await;

    // The system roots do not know a private CA either.
    let gw = gateway(Setup::new(), &up, "").await;
    let r = gw.get("/system-roots", None).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn tls_settings_on_a_plain_upstream_are_refused() {
    let setup = Setup::new();
    let text = setup.render(
        r#"{listen}
[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "public"
upstream_ca_file = "ca.pem"
"#,
    );
    let err = portcullis::Config::from_toml(&text, setup.dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("routes[0].upstream_ca_file") && err.contains("https"),
        "{err}"
    );
}

/// What the log line of that 502 says: the upstream client's own error names the
/// certificate problem (the gateway logs it as `upstream failure`, `error = ...`).
#[tokio::test]
async fn the_502_reason_names_the_certificate_problem() {
    use portcullis::upstream::{Outgoing, Pool, SendError, TargetSet, UpstreamBody};
    let p = pki();
    let other = pki();
    let up = Upstream::start_auto(Some(server_config(&p, false))).await;
    let setup = Setup::new();
    setup.write("certs/ca.pem", &other.ca_pem);
    let text = setup.render(&format!(
        r#"{{listen}}
[[routes]]
prefix = "/"
upstream = "{}"
upstream_ca_file = "certs/ca.pem"
auth = "public"
"#,
        up.https_url()
    ));
    let config = portcullis::Config::from_toml(&text, setup.dir.path()).unwrap();
    let route = config.routes.iter().next().unwrap();
    let metrics = portcullis::telemetry::metrics::Metrics::new();
    let set = std::sync::Arc::new(TargetSet::new("/", route, &config.limits, &metrics));
    let pool = Pool::new(set);
    let out = Outgoing {
        req: http::Request::new(UpstreamBody::empty()),
        path: http::uri::PathAndQuery::from_static("/x"),
        grpc: false,
    };
    match pool
        .send(out, None, std::time::Duration::from_secs(5))
        .await
    {
        Err(SendError::Connect(reason)) => {
            assert!(reason.contains("invalid peer certificate"), "{reason}")
        }
        Err(other) => panic!("not a connect failure: {other}"),
        Ok(r) => panic!("an unverifiable upstream answered: {}", r.status()),
    }
    assert_eq!(up.hits(), 0);
}
