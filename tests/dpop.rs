//! DPoP sender-constrained tokens (RFC 9449), outside in: proofs made by an independent
//! implementation (Python jwcrypto, `scripts/dpop_proof.py`), sent to the real gateway over
//! TLS, checked against what the real upstream received. One accepted proof per key type,
//! then each rule failing on its own: every refusal is a 401 with a `DPoP` challenge and
//! never reaches the upstream.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::dpop::Client;
use common::tokens::{self, HS256_SECRET};
use common::{hmac_key_toml, Reply, Setup, TestGateway, Upstream};
use serde_json::{json, Value};

/// An access token for `sub`, bound to `jkt` when given.
fn token(sub: &str, jkt: Option<&str>) -> String {
    let mut claims = tokens::claims(sub);
    if let Some(jkt) = jkt {
        claims["cnf"] = json!({ "jkt": jkt });
    }
    tokens::hs256(Some("hs"), &claims)
}

async fn start(up: &Upstream) -> TestGateway {
    start_with(up, "").await
}

/// The gateway with `extra` appended to `[dpop]`.
async fn start_with(up: &Upstream, extra: &str) -> TestGateway {
    let config = format!(
        r#"{{listen}}
{}
[identity]
user_header = "x-user-id"
user_claim = "sub"

[identity.claims]
"x-dpop-jkt" = "cnf.jkt"

[dpop]
max_age = "60s"
algs = ["ES256", "EdDSA", "RS256", "PS256"]
{extra}

[[routes]]
prefix = "/payments"
upstream = "{{up}}"
auth = "jwt"
dpop = "required"

[[routes]]
prefix = "/optional"
upstream = "{{up}}"
auth = "jwt"
dpop = "optional"

[[routes]]
prefix = "/public"
upstream = "{{up}}"
auth = "public"

[[routes]]
prefix = "/"
upstream = "{{up}}"
auth = "jwt"
"#,
        hmac_key_toml("hs", "HS256", HS256_SECRET)
    )
    .replace("{extra}", extra);
    Setup::new().var("up", up.url()).start(&config).await
}

/// Send `method url` with `Authorization: <scheme> <token>` and each `DPoP` header given.
async fn send(
    client: reqwest::Client,
    method: &str,
    url: &str,
    authorization: &str,
    proofs: &[&str],
) -> Reply {
    let mut req = client
        .request(method.parse().unwrap(), url)
        .header("authorization", authorization);
    for p in proofs {
        req = req.header("dpop", *p);
    }
    TestGateway::reply(req.send().await.expect("request")).await
}

fn assert_dpop_refusal(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("DPoP ")
            && challenge.contains("error=\"invalid_dpop_proof\"")
            && challenge.contains("algs=\"ES256 EdDSA RS256 PS256\""),
        "{what}: {challenge}"
    );
    assert_eq!(r.json()["error"], "invalid_dpop_proof", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_tokens_with_valid_proofs_reach_the_upstream_without_the_proof() {
    let Some(ec) = Client::new("EC") else { return };
    let up = Upstream::start().await;
    let gw = start(&up).await;
    for kty in ["EC", "OKP", "RSA"] {
        let client = Client::new(kty).unwrap();
        let at = token("alice", Some(&client.jkt));
        let url = gw.url("/payments/charge");
        let proof = client.proof(json!({"htm": "POST", "htu": url, "token": at}));
        let r = send(gw.h1(), "POST", &url, &format!("DPoP {at}"), &[&proof]).await;
        assert_eq!(r.status, 200, "{kty}: {}", r.text());
        let echo = r.echo();
        assert_eq!(echo.one("x-user-id"), Some("alice"));
        assert_eq!(echo.one("x-dpop-jkt"), Some(client.jkt.as_str()));
        assert_eq!(
            echo.all("dpop"),
            Vec::<&str>::new(),
            "the proof is never forwarded"
        );
    }
    // HTTP/2: htu is built from :authority.
    let at = token("bob", Some(&ec.jkt));
    let url = gw.url("/payments/h2");
    let proof = ec.proof(json!({"htm": "GET", "htu": url, "token": at}));
    let r = send(gw.h2(), "GET", &url, &format!("DPoP {at}"), &[&proof]).await;
    assert_eq!(r.status, 200, "h2: {}", r.text());
    assert_eq!(r.echo().one("x-user-id"), Some("bob"));
    // Query strings are not part of htu.
    let proof = ec.proof(json!({"htm": "GET", "htu": gw.url("/payments/q"), "token": at}));
    let url = gw.url("/payments/q?page=2");
    let r = send(gw.h1(), "GET", &url, &format!("DPoP {at}"), &[&proof]).await;
    assert_eq!(r.status, 200, "query: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_proof_check_fails_on_its_own() {
    let Some(client) = Client::new("EC") else {
        return;
    };
    let other = Client::new("EC").unwrap();
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let at = token("alice", Some(&client.jkt));
    let url = gw.url("/payments/charge");
    let base = |extra: Value| {
        let mut spec = json!({"htm": "GET", "htu": url, "token": at});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let cases: Vec<(&str, Value)> = vec![
        ("wrong htm", base(json!({"htm": "POST"}))),
        (
            "htu with another host",
            base(json!({"htu": gw.other_host_url("/payments/charge")})),
        ),
        (
            "htu with a query",
            base(json!({"htu": format!("{url}?amount=1")})),
        ),
        (
            "htu with another path",
            base(json!({"htu": gw.url("/payments/other")})),
        ),
        ("old iat", base(json!({"iat_offset": -300}))),
        ("iat in the future", base(json!({"iat_offset": 300}))),
        ("missing ath", base(json!({"variant": "no_ath"}))),
        (
            "mismatched ath",
            base(json!({"token": token("alice", Some(&other.jkt))})),
        ),
        ("jwk with d", base(json!({"variant": "private_jwk"}))),
        ("alg none", base(json!({"variant": "alg_none"}))),
        ("HS256 proof", base(json!({"variant": "hs256"}))),
    ];
    let specs: Vec<Value> = cases.iter().map(|(_, s)| s.clone()).collect();
    let proofs = client.proofs(&specs);
    for ((what, _), proof) in cases.iter().zip(&proofs) {
        let r = send(gw.h1(), "GET", &url, &format!("DPoP {at}"), &[proof]).await;
        assert_dpop_refusal(&r, what);
    }

    // The token bound to another key: a valid proof by this key does not prove it.
    let foreign = token("alice", Some(&other.jkt));
    let proof = client.proof(json!({"htm": "GET", "htu": url, "token": foreign}));
    let r = send(gw.h1(), "GET", &url, &format!("DPoP {foreign}"), &[&proof]).await;
    assert_dpop_refusal(&r, "wrong thumbprint");

    // Two DPoP headers, each valid on its own.
    let two = client.proofs(&[base(json!({})), base(json!({}))]);
    let r = send(
        gw.h1(),
        "GET",
        &url,
        &format!("DPoP {at}"),
        &[&two[0], &two[1]],
    )
    .await;
    assert_dpop_refusal(&r, "two DPoP headers");

    // No proof at all.
    let r = send(gw.h1(), "GET", &url, &format!("DPoP {at}"), &[]).await;
    assert_dpop_refusal(&r, "no proof");

    // Replay: the same proof twice; the first passes.
    let proof = client.proof(base(json!({})));
    let r = send(gw.h1(), "GET", &url, &format!("DPoP {at}"), &[&proof]).await;
    assert_eq!(r.status, 200, "first use: {}", r.text());
    let r = send(gw.h1(), "GET", &url, &format!("DPoP {at}"), &[&proof]).await;
    assert_dpop_refusal(&r, "replayed jti");

    assert_eq!(
        up.hits(),
        1,
        "only the one valid proof reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_is_never_a_bearer_token_and_required_routes_take_only_proofs() {
    let Some(client) = Client::new("EC") else {
        return;
    };
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let bound = token("alice", Some(&client.jkt));
    for path in ["/payments/x", "/optional/x", "/other/x"] {
        let url = gw.url(path);
        // Even with a valid proof alongside: the scheme says bearer.
        let proof = client.proof(json!({"htm": "GET", "htu": url, "token": bound}));
        let r = send(gw.h1(), "GET", &url, &format!("Bearer {bound}"), &[&proof]).await;
        assert_dpop_refusal(&r, &format!("bound token as Bearer on {path}"));
    }
    assert_eq!(up.hits(), 0);

    // An unbound token: refused where DPoP is required, a bearer token elsewhere.
    let unbound = token("bob", None);
    let r = send(
        gw.h1(),
        "GET",
        &gw.url("/payments/x"),
        &format!("Bearer {unbound}"),
        &[],
    )
    .await;
    assert_dpop_refusal(&r, "bearer token on a required route");
    for path in ["/optional/x", "/other/x"] {
        let r = send(
            gw.h1(),
            "GET",
            &gw.url(path),
            &format!("Bearer {unbound}"),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    // An unbound token under the DPoP scheme has no key to be proven with.
    let url = gw.url("/optional/y");
    let proof = client.proof(json!({"htm": "GET", "htu": url, "token": unbound}));
    let r = send(gw.h1(), "GET", &url, &format!("DPoP {unbound}"), &[&proof]).await;
    assert_dpop_refusal(&r, "unbound token under the DPoP scheme");

    // A public route: the proof header is stripped all the same.
    let url = gw.url("/public/z");
    let proof = client.proof(json!({"htm": "GET", "htu": url}));
    let r = send(gw.h1(), "GET", &url, "Basic eDp5", &[&proof]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().all("dpop"), Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_challenge_then_retry_with_the_server_nonce() {
    let Some(client) = Client::new("EC") else {
        return;
    };
    let up = Upstream::start().await;
    let gw = start_with(&up, "nonce = true\nnonce_interval = \"5m\"").await;
    let at = token("alice", Some(&client.jkt));
    let url = gw.url("/payments/charge");
    let auth = format!("DPoP {at}");
    for (what, spec) in [
        ("no nonce", json!({"htm": "POST", "htu": url, "token": at})),
        (
            "a nonce the server never issued",
            json!({"htm": "POST", "htu": url, "token": at, "nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        ),
    ] {
        let r = send(gw.h1(), "POST", &url, &auth, &[&client.proof(spec)]).await;
        assert_eq!(r.status, 401, "{what}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("DPoP ") && challenge.contains("error=\"use_dpop_nonce\""),
            "{what}: {challenge}"
        );
        assert_eq!(r.json()["error"], "use_dpop_nonce");
        assert!(
            r.header("dpop-nonce").is_some_and(|n| !n.is_empty()),
            "{what}"
        );
    }
    let r = send(
        gw.h1(),
        "POST",
        &url,
        &auth,
        &[&client.proof(json!({"htm": "POST", "htu": url, "token": at}))],
    )
    .await;
    let nonce = r.header("dpop-nonce").unwrap().to_owned();
    let retry = client.proof(json!({"htm": "POST", "htu": url, "token": at, "nonce": nonce}));
    let r = send(gw.h1(), "POST", &url, &auth, &[&retry]).await;
    assert_eq!(r.status, 200, "retry with the nonce: {}", r.text());
    assert_eq!(up.hits(), 1);
}
