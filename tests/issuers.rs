//! Several issuers (`[[jwt.issuers]]`, issue 14 section 3) over real TLS: two OpenID
//! providers served by the test over HTTPS, each with its own private CA (`ca_file`) — one
//! found by discovery, one by `jwks_url` — beside the `[jwt]` issuer's own HS256 key. Tokens
//! of each pass; a route limited to one issuer refuses the others; a token whose `iss` names
//! no issuer is refused; a key of one issuer never verifies a token claiming another (same
//! `kid` on both sides); a discovery document naming another issuer leaves only that issuer
//! unusable (and the binary's log says why, while `portcullis check` fetches nothing); a key
//! rotation at one issuer is picked up without touching the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::answer::AnswerServer;
use common::tokens::{self, PemPair};
use common::{Setup, TestGateway, Upstream};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

/// Both providers name their key `k1`: only the token's `iss` tells them apart.
const KID: &str = "k1";

/// An OpenID provider: an HTTPS server with a discovery document and a key set.
struct Provider {
    server: AnswerServer,
    /// `https://localhost:PORT/`, the exact `iss` of its tokens.
    issuer: String,
    key: PemPair,
}

impl Provider {
    async fn start() -> Provider {
        let server = AnswerServer::start(404, "{}").await;
        let issuer = format!("{}/", server.base);
        let p = Provider {
            issuer,
            key: tokens::ec_p256(),
            server,
        };
        p.discover_as(&p.issuer.clone());
        p.publish(&[p.key.jwk(Algorithm::ES256, KID)]);
        p
    }

    /// Serve a discovery document naming `issuer` (the provider's own, or another).
    fn discover_as(&self, issuer: &str) {
        let doc = serde_json::json!({
            "issuer": issuer,
            "jwks_uri": self.jwks_url(),
            "response_types_supported": ["code"],
        });
        self.server
            .answer_path("/.well-known/openid-configuration", 200, &doc.to_string());
    }

    fn jwks_url(&self) -> String {
        format!("{}/keys", self.server.base)
    }

    fn publish(&self, keys: &[Jwk]) {
        let doc = serde_json::to_string(&JwkSet {
            keys: keys.to_vec(),
        })
        .unwrap();
        self.server.answer_path("/keys", 200, &doc);
    }

    /// A fresh token (never a cache hit) by this provider's key, claiming `iss`.
    fn token(&self, iss: &str, aud: &str, sub: &str) -> String {
        sign_es256(&self.key, KID, iss, aud, sub)
    }
}

fn sign_es256(key: &PemPair, kid: &str, iss: &str, aud: &str, sub: &str) -> String {
    tokens::sign(
        Algorithm::ES256,
        Some(kid),
        &key.encoding(),
        &claims(iss, aud, sub),
    )
}

fn claims(iss: &str, aud: &str, sub: &str) -> Value {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let mut c = tokens::claims(sub);
    if !iss.is_empty() {
        c["iss"] = iss.into();
    }
    c["aud"] = aud.into();
    c["email"] = format!("{sub}@partner.example").into();
    c["jti"] = format!("j{}", SERIAL.fetch_add(1, Ordering::SeqCst)).into();
    c
}

/// A token of the `[jwt]` issuer (HS256, no `[jwt] issuer` set).
fn default_token(iss: &str, sub: &str) -> String {
    tokens::sign(
        Algorithm::HS256,
        Some("hs"),
        &EncodingKey::from_secret(tokens::HS256_SECRET.as_bytes()),
        &claims(iss, "api", sub),
    )
}

/// `idp` by discovery, `partner` by jwks_url (audience "partner", user from `email`), and
/// the `[jwt]` issuer; `/partner` takes only partner tokens, `/internal` only the default's.
fn config(idp: &Provider, partner: &Provider, extra: &str, up: &Upstream) -> String {
    format!(
        r#"{{listen}}
[jwt]
audience = "api"

[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "{secret}"

[[jwt.issuers]]
name = "idp"
issuer = "{idp_iss}"
discovery = true
ca_file = "idp-ca.pem"
audience = ["api"]
min_refresh_interval = "200ms"

[[jwt.issuers]]
name = "partner"
issuer = "{partner_iss}"
jwks_url = "{partner_jwks}"
ca_file = "partner-ca.pem"
audience = "partner"
user_claim = "email"
leeway = "60s"
min_refresh_interval = "200ms"
{extra}
[[routes]]
prefix = "/partner"
upstream = "{up}"
auth = "jwt"
issuers = ["partner"]

[[routes]]
prefix = "/internal"
upstream = "{up}"
auth = "jwt"
issuers = ["default"]

[[routes]]
prefix = "/"
upstream = "{up}"
auth = "jwt"
"#,
        secret = tokens::HS256_SECRET,
        idp_iss = idp.issuer,
        partner_iss = partner.issuer,
        partner_jwks = partner.jwks_url(),
        up = up.url(),
    )
}

struct World {
    idp: Provider,
    partner: Provider,
    gw: TestGateway,
    _up: Upstream,
}

async fn world_with(extra: &str, extra_setup: impl FnOnce(&Setup)) -> World {
    let up = Upstream::start().await;
    let (idp, partner) = (Provider::start().await, Provider::start().await);
    let setup = Setup::new();
    setup.write("idp-ca.pem", &idp.server.ca_pem);
    setup.write("partner-ca.pem", &partner.server.ca_pem);
    extra_setup(&setup);
    let path = setup.write_config(&config(&idp, &partner, extra, &up));
    let gw = setup
        .start_with(portcullis::Config::load(&path).expect("config"))
        .await;
    World {
        idp,
        partner,
        gw,
        _up: up,
    }
}

async fn world() -> World {
    world_with("", |_| {}).await
}

async fn status(gw: &TestGateway, path: &str, token: &str) -> u16 {
    gw.get(path, Some(token)).await.status
}

/// Poll until `token()` (a fresh token each time) is answered `want` on `path`.
async fn until_status(gw: &TestGateway, path: &str, want: u16, token: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = status(gw, path, &token()).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: still {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_every_issuer_pass_with_their_own_user_claim() {
    common::watch_panics();
    let w = world().await;
    let r =
        w.gw.get("/whoami", Some(&w.idp.token(&w.idp.issuer, "api", "alice")))
            .await;
    assert_eq!(r.echo().one("x-user-id"), Some("alice"));
    // The partner's user is its `email` claim (its own user_claim).
    let r =
        w.gw.get(
            "/whoami",
            Some(&w.partner.token(&w.partner.issuer, "partner", "bob")),
        )
        .await;
    assert_eq!(r.echo().one("x-user-id"), Some("bob@partner.example"));
    let r = w.gw.get("/whoami", Some(&default_token("", "carol"))).await;
    assert_eq!(r.echo().one("x-user-id"), Some("carol"));
    // Each issuer's audience: a partner token for "api" is not for this gateway.
    let r =
        w.gw.get(
            "/whoami",
            Some(&w.partner.token(&w.partner.issuer, "api", "bob")),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(common::gateway_panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_limited_to_one_issuer_refuses_the_others_tokens() {
    let w = world().await;
    let idp = w.idp.token(&w.idp.issuer, "api", "alice");
    let partner = w.partner.token(&w.partner.issuer, "partner", "bob");
    let own = default_token("", "carol");

    assert_eq!(status(&w.gw, "/partner/x", &partner).await, 200);
    for refused in [&idp, &own] {
        let r = w.gw.get("/partner/x", Some(refused)).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"], "invalid_token");
        let challenge = r.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("invalid_token"),
            "{challenge}"
        );
    }
    assert_eq!(status(&w.gw, "/internal/x", &own).await, 200);
    assert_eq!(status(&w.gw, "/internal/x", &idp).await, 401);
    assert_eq!(status(&w.gw, "/internal/x", &partner).await, 401);
    // The same tokens, now cached, still pass where they belong.
    assert_eq!(status(&w.gw, "/x", &idp).await, 200);
    assert_eq!(status(&w.gw, "/x", &partner).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_one_issuer_never_verifies_a_token_claiming_another() {
    let w = world().await;
    let (idp, partner) = (&w.idp, &w.partner);
    // Sanity: the idp's key does verify the idp's tokens.
    assert_eq!(
        status(&w.gw, "/x", &idp.token(&idp.issuer, "partner", "a")).await,
        401,
        "wrong audience for the idp"
    );
    assert_eq!(
        status(&w.gw, "/x", &idp.token(&idp.issuer, "api", "a")).await,
        200
    );
    let forged = [
        // The idp's key, same kid as the partner's, claiming the partner.
        idp.token(&partner.issuer, "partner", "mallory"),
        // The partner's key claiming the idp.
        partner.token(&idp.issuer, "api", "mallory"),
        // The `[jwt]` issuer's secret claiming the idp.
        default_token(&idp.issuer, "mallory"),
        // The idp's key claiming no issuer: the `[jwt]` issuer's keys are tried, which do
        // not include it.
        idp.token("", "api", "mallory"),
        // An issuer nobody configured, whatever key signed it (the `[jwt]` issuer, without
        // `[jwt] issuer`, takes only tokens without `iss`).
        idp.token("https://unknown.example/", "api", "mallory"),
        default_token("https://unknown.example/", "mallory"),
    ];
    for (i, token) in forged.iter().enumerate() {
        let r = w.gw.get("/x", Some(token)).await;
        assert_eq!(r.status, 401, "forgery {i}: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iss_naming_no_issuer_is_refused_when_the_jwt_issuer_is_pinned() {
    // With `[jwt] issuer` set, nothing is a catch-all: an unknown `iss` selects nobody.
    let up = Upstream::start().await;
    let idp = Provider::start().await;
    let setup = Setup::new();
    setup.write("idp-ca.pem", &idp.server.ca_pem);
    let gw = setup
        .start(&format!(
            r#"{{listen}}
[jwt]
issuer = "https://gateway.example/"
{key}
[[jwt.issuers]]
name = "idp"
issuer = "{iss}"
discovery = true
ca_file = "idp-ca.pem"

[[routes]]
prefix = "/"
upstream = "{up}"
auth = "jwt"
"#,
            key = common::hmac_key_toml("hs", "HS256", tokens::HS256_SECRET),
            iss = idp.issuer,
            up = up.url(),
        ))
        .await;
    assert_eq!(
        status(&gw, "/x", &idp.token(&idp.issuer, "api", "a")).await,
        200
    );
    for iss in ["", "https://unknown.example/", "https://gateway.example"] {
        let t = tokens::sign(
            Algorithm::HS256,
            Some("hs"),
            &EncodingKey::from_secret(tokens::HS256_SECRET.as_bytes()),
            &claims(iss, "api", "a"),
        );
        assert_eq!(status(&gw, "/x", &t).await, 401, "iss {iss:?}");
    }
    let own = tokens::sign(
        Algorithm::HS256,
        Some("hs"),
        &EncodingKey::from_secret(tokens::HS256_SECRET.as_bytes()),
        &claims("https://gateway.example/", "api", "a"),
    );
    assert_eq!(status(&gw, "/x", &own).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_naming_another_issuer_leaves_only_that_issuer_unusable() {
    let rogue = Provider::start().await;
    // Its document claims to be some other issuer (OpenID Connect Discovery 4.3).
    rogue.discover_as("https://someone-else.example/");
    let rogue_ca = rogue.server.ca_pem.clone();
    let extra = format!(
        r#"
[[jwt.issuers]]
name = "rogue"
issuer = "{}"
discovery = true
ca_file = "rogue-ca.pem"
min_refresh_interval = "200ms"
"#,
        rogue.issuer
    );
    let w = world_with(&extra, |s| {
        s.write("rogue-ca.pem", &rogue_ca);
    })
    .await;
    // The gateway started; the others work, the rogue's tokens are refused.
    assert_eq!(
        status(&w.gw, "/x", &w.idp.token(&w.idp.issuer, "api", "a")).await,
        200
    );
    assert_eq!(
        status(
            &w.gw,
            "/partner/x",
            &w.partner.token(&w.partner.issuer, "partner", "b")
        )
        .await,
        200
    );
    for _ in 0..3 {
        let r =
            w.gw.get("/x", Some(&rogue.token(&rogue.issuer, "api", "r")))
                .await;
        assert_eq!(r.status, 401, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Once its document names it correctly, the next retry picks its keys up.
    rogue.discover_as(&rogue.issuer.clone());
    until_status(&w.gw, "/x", 200, || rogue.token(&rogue.issuer, "api", "r")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_at_one_issuer_leaves_the_other_alone() {
    let w = world().await;
    let new_key = tokens::ec_p256();
    let rotated = |sub: &str| sign_es256(&new_key, "k2", &w.idp.issuer, "api", sub);
    assert_eq!(status(&w.gw, "/x", &rotated("early")).await, 401);
    // Publish k2 beside k1: the unknown kid makes the gateway fetch again.
    w.idp.publish(&[
        w.idp.key.jwk(Algorithm::ES256, KID),
        new_key.jwk(Algorithm::ES256, "k2"),
    ]);
    until_status(&w.gw, "/x", 200, || rotated("new")).await;
    // Retire k1 at the idp: a reload fetches again at once and its k1 tokens stop passing.
    // The partner, whose key is also named k1, keeps working.
    w.idp.publish(&[new_key.jwk(Algorithm::ES256, "k2")]);
    let notes = w.gw.reload().await.expect("reload");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(
        status(&w.gw, "/x", &w.idp.token(&w.idp.issuer, "api", "old")).await,
        401
    );
    assert_eq!(status(&w.gw, "/x", &rotated("after")).await, 200);
    assert_eq!(
        status(
            &w.gw,
            "/x",
            &w.partner.token(&w.partner.issuer, "partner", "b")
        )
        .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fetches_nothing_and_the_log_says_why_an_issuer_is_unusable() {
    let rogue = Provider::start().await;
    rogue.discover_as("https://someone-else.example/");
    let up = Upstream::start().await;
    let setup = Setup::new();
    setup.write("rogue-ca.pem", &rogue.server.ca_pem);
    let template = format!(
        r#"{{listen}}
[[jwt.issuers]]
name = "rogue"
issuer = "{iss}"
discovery = true
ca_file = "rogue-ca.pem"

[[routes]]
prefix = "/"
upstream = "{up}"
auth = "jwt"
"#,
        iss = rogue.issuer,
        up = up.url(),
    );
    let path = setup.write_config(&template);
    let out = common::cli(&["check", "--config", &path.display().to_string()]).await;
    assert!(out.ok, "{}", out.all());
    assert!(
        out.stdout.contains("issuer `rogue`") && out.stdout.contains("not fetched by check"),
        "{}",
        out.all()
    );
    assert_eq!(rogue.server.hits(), 0, "check fetched something");

    // `run` starts anyway, refuses the rogue's tokens, and its log names the reason.
    let gw = setup.spawn(&template).await;
    let client = gw.builder().build().unwrap();
    let r = client
        .get(gw.url("/x"))
        .bearer_auth(rogue.token(&rogue.issuer, "api", "r"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let log = gw.process.log();
    assert!(
        log.contains("rogue")
            && log.contains("someone-else.example")
            && log.contains("OpenID Connect Discovery 4.3"),
        "{log}"
    );
}
