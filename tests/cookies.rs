//! Cookie mode (`[signin.cookies]`) over real sockets and real TLS: login sets the three
//! cookies and keeps the tokens out of the body; the access cookie authenticates proxied
//! requests, which never show the token cookies to the upstream; a state-changing request by
//! cookie needs the CSRF header (403 without it, and the upstream never sees the request),
//! a request with `Authorization` does not; refresh and logout by cookie; cookie mode off
//! ignores cookies.
//!
//! The client keeps no cookie jar: each test sends exactly the `Cookie` header it means to.

// Test code: a failed unwrap is a failed test. The gateway itself denies these (Cargo.toml
// [lints]); clippy.toml covers #[test] functions, this covers the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{hmac_key_toml, users_toml, Env, Reply, Setup, TestGateway};
use serde_json::json;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const ACCESS: &str = "__Host-portcullis";
const REFRESH: &str = "__Secure-portcullis-refresh";
const CSRF: &str = "__Host-portcullis-csrf";

/// A gateway with sign-in (alice/wonderland = u-1), `cookies` as the `[signin.cookies]`
/// section (none when empty), a public route `/public` and a JWT route `/`.
async fn env(cookies: &str) -> Env {
    let setup = Setup::new();
    setup.write("users.toml", users_toml(&[("u-1", "alice", "wonderland")]));
    let config = format!(
        "{{listen}}\n{}\n[revocation]\nstore = \"memory\"\n\n[signin]\nusers_file = \"users.toml\"\nsigning_kid = \"hs1\"\naccess_ttl = \"10m\"\nrefresh_ttl = \"1d\"\n\n{cookies}\n\n[[routes]]\nprefix = \"/public\"\nupstream = \"{{up}}\"\nauth = \"public\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"jwt\"\n",
        hmac_key_toml("hs1", "HS256", SECRET),
    );
    Env::start(setup, &config).await
}

async fn cookie_env() -> Env {
    env("[signin.cookies]\nenabled = true").await
}

/// The cookies a login or refresh set: `name -> (value, attributes)`.
struct Jar(Vec<(String, String, String)>);

impl Jar {
    fn from(r: &Reply) -> Jar {
        Jar(r
            .headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| {
                let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
                let (name, value) = pair.split_once('=').expect("name=value");
                (name.to_owned(), value.to_owned(), attrs.trim().to_owned())
            })
            .collect())
    }

    fn value(&self, name: &str) -> &str {
        self.get(name).0
    }

    fn attrs(&self, name: &str) -> &str {
        self.get(name).1
    }

    fn get(&self, name: &str) -> (&str, &str) {
        let all: Vec<_> = self.0.iter().filter(|(n, _, _)| n == name).collect();
        assert_eq!(all.len(), 1, "Set-Cookie {name}: {:?}", self.0);
        (&all[0].1, &all[0].2)
    }
}

async fn login(gw: &TestGateway) -> Reply {
    let req = gw
        .h1()
        .post(gw.url("/auth/login"))
        .json(&json!({ "username": "alice", "password": "wonderland" }));
    TestGateway::send(req).await
}

/// Log in and return the cookies set, failing on anything but 200.
async fn session(gw: &TestGateway) -> Jar {
    let r = login(gw).await;
    assert_eq!(r.status, 200, "login: {}", r.text());
    Jar::from(&r)
}

/// `method path` with a `Cookie` header (when not empty) and extra headers.
async fn send(
    gw: &TestGateway,
    method: &str,
    path: &str,
    cookie: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = gw
        .h1()
        .request(method.parse().expect("method"), gw.url(path));
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    TestGateway::send(req).await
}

fn cookie_header(jar: &Jar) -> String {
    format!("{ACCESS}={}; {CSRF}={}", jar.value(ACCESS), jar.value(CSRF))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_three_cookies_and_no_token_in_the_body() {
    let Env { gw, up } = cookie_env().await;
    let r = login(&gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let j = r.json();
    assert_eq!(j["token_type"], "cookie");
    assert_eq!(j["expires_in"], 600);
    assert!(j.get("access_token").is_none(), "{j}");
    assert!(j.get("refresh_token").is_none(), "{j}");

    let jar = Jar::from(&r);
    assert_eq!(jar.0.len(), 3, "{:?}", jar.0);
    assert_eq!(
        jar.attrs(ACCESS),
        "Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Strict"
    );
    assert_eq!(
        jar.attrs(REFRESH),
        "Path=/auth/refresh; Max-Age=86400; HttpOnly; Secure; SameSite=Strict"
    );
    assert_eq!(
        jar.attrs(CSRF),
        "Path=/; Max-Age=86400; Secure; SameSite=Strict",
        "the page must be able to read the CSRF cookie"
    );
    assert_eq!(jar.value(ACCESS).split('.').count(), 3, "a JWT");
    assert_eq!(jar.value(REFRESH).len(), 43, "256 bits, base64url");
    let csrf = jar.value(CSRF);
    assert_eq!(csrf.len(), 43, "256 bits, base64url");
    assert_eq!(j["csrf_token"], csrf, "the body repeats the CSRF token");
    assert!(!r.text().contains(jar.value(ACCESS)));
    assert!(!r.text().contains(jar.value(REFRESH)));
    assert_ne!(session(&gw).await.value(CSRF), csrf, "a new one per login");
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_cookie_authenticates_and_never_reaches_the_upstream() {
    let Env { gw, up } = cookie_env().await;
    let jar = session(&gw).await;
    let token = jar.value(ACCESS).to_owned();
    let cookie = format!(
        "theme=dark; {ACCESS}={token}; {REFRESH}={}; {CSRF}={}",
        jar.value(REFRESH),
        jar.value(CSRF)
    );
    let echo = send(&gw, "GET", "/api/me", &cookie, &[]).await.echo();
    assert_eq!(echo.one("x-user-id"), Some("u-1"));
    let forwarded = echo.one("cookie").expect("other cookies are forwarded");
    assert_eq!(
        forwarded,
        format!("theme=dark; {CSRF}={}", jar.value(CSRF)),
        "no gateway credential goes upstream"
    );
    assert!(echo.one("authorization").is_none());

    // HTTP/2 clients may split the list into several Cookie fields; the token cookie is
    // found in any of them and still stripped.
    let req = gw
        .h2()
        .get(gw.url("/api/me"))
        .header("cookie", "theme=dark")
        .header("cookie", format!("{ACCESS}={token}"));
    let r = TestGateway::send(req).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    let echo = r.echo();
    assert_eq!(echo.one("x-user-id"), Some("u-1"));
    assert_eq!(echo.all("cookie"), ["theme=dark"]);

    // Public routes never see the token either.
    let echo = send(&gw, "GET", "/public/x", &cookie, &[]).await.echo();
    assert!(echo.one("x-user-id").is_none());
    assert!(!echo.one("cookie").unwrap_or_default().contains(&token));

    // Two access cookies: one was planted; refused rather than guessed.
    let two = format!("{ACCESS}={token}; {ACCESS}=planted");
    assert_eq!(send(&gw, "GET", "/api/me", &two, &[]).await.status, 401);
    let hits = up.hits();
    assert_eq!(send(&gw, "GET", "/api/me", "", &[]).await.status, 401);
    assert_eq!(up.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_changing_request_by_cookie_needs_the_csrf_header() {
    let Env { gw, up } = cookie_env().await;
    let jar = session(&gw).await;
    let cookie = cookie_header(&jar);
    let csrf = jar.value(CSRF);

    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = send(&gw, method, "/api/orders", &cookie, &[]).await;
        assert_eq!(r.status, 403, "{method} without the header: {}", r.text());
        assert_eq!(r.json()["error"], "forbidden");
        assert!(r.header("www-authenticate").is_none());
    }
    let wrong = format!("{}x", &csrf[..csrf.len() - 1]);
    let r = send(
        &gw,
        "POST",
        "/api/orders",
        &cookie,
        &[("x-csrf-token", &wrong)],
    )
    .await;
    assert_eq!(r.status, 403, "wrong token");
    // The header alone, without the CSRF cookie, is not enough either.
    let only_access = format!("{ACCESS}={}", jar.value(ACCESS));
    let r = send(
        &gw,
        "POST",
        "/api/orders",
        &only_access,
        &[("x-csrf-token", csrf)],
    )
    .await;
    assert_eq!(r.status, 403, "no CSRF cookie");
    assert_eq!(up.hits(), 0, "no refused request reached the upstream");

    let r = send(
        &gw,
        "POST",
        "/api/orders",
        &cookie,
        &[("x-csrf-token", csrf)],
    )
    .await;
    let echo = r.echo();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.one("x-user-id"), Some("u-1"));
    assert_eq!(up.hits(), 1);

    // Safe methods need no CSRF header.
    assert_eq!(
        send(&gw, "GET", "/api/orders", &cookie, &[]).await.status,
        200
    );
    assert_eq!(
        send(&gw, "HEAD", "/api/orders", &cookie, &[]).await.status,
        200
    );

    // A request with Authorization is not subject to CSRF, cookies or not.
    let bearer = format!("Bearer {}", jar.value(ACCESS));
    for c in ["", cookie.as_str()] {
        let r = send(&gw, "POST", "/api/orders", c, &[("authorization", &bearer)]).await;
        assert_eq!(r.status, 200, "bearer, cookie {c:?}: {}", r.text());
    }
    // ... and is authenticated by that header alone: a bad one is not rescued by the cookie.
    let r = send(
        &gw,
        "GET",
        "/api/orders",
        &cookie,
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_by_cookie_needs_csrf_and_rotates_the_cookies() {
    let Env { gw, .. } = cookie_env().await;
    let jar = session(&gw).await;
    let refresh_cookie = format!(
        "{REFRESH}={}; {CSRF}={}",
        jar.value(REFRESH),
        jar.value(CSRF)
    );
    let r = send(&gw, "POST", "/auth/refresh", &refresh_cookie, &[]).await;
    assert_eq!(r.status, 403, "no CSRF header: {}", r.text());
    assert!(Jar::from(&r).0.is_empty());
    let bad = [("x-csrf-token", "not-the-token")];
    assert_eq!(
        send(&gw, "POST", "/auth/refresh", &refresh_cookie, &bad)
            .await
            .status,
        403
    );

    let ok = [("x-csrf-token", jar.value(CSRF))];
    let r = send(&gw, "POST", "/auth/refresh", &refresh_cookie, &ok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token_type"], "cookie");
    assert!(r.json().get("access_token").is_none());
    let next = Jar::from(&r);
    assert_ne!(next.value(ACCESS), jar.value(ACCESS), "new access token");
    assert_ne!(next.value(REFRESH), jar.value(REFRESH), "rotated");
    assert_eq!(
        next.value(CSRF),
        jar.value(CSRF),
        "the page's CSRF token stays"
    );
    assert_eq!(r.json()["csrf_token"], jar.value(CSRF));
    assert!(next
        .attrs(REFRESH)
        .starts_with("Path=/auth/refresh; Max-Age=86400; HttpOnly"));
    let cookie = cookie_header(&next);
    assert_eq!(send(&gw, "GET", "/api/me", &cookie, &[]).await.status, 200);

    // The spent refresh cookie again: reuse ends the family.
    let r = send(&gw, "POST", "/auth/refresh", &refresh_cookie, &ok).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(send(&gw, "GET", "/api/me", &cookie, &[]).await.status, 401);

    // No refresh cookie and no body: a plain 400.
    let r = send(&gw, "POST", "/auth/refresh", "", &[]).await;
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_by_cookie_needs_csrf_clears_the_cookies_and_revokes() {
    let Env { gw, .. } = cookie_env().await;
    let jar = session(&gw).await;
    let cookie = cookie_header(&jar);
    let r = send(&gw, "POST", "/auth/logout", &cookie, &[]).await;
    assert_eq!(r.status, 403, "no CSRF header: {}", r.text());
    assert_eq!(send(&gw, "GET", "/api/me", &cookie, &[]).await.status, 200);

    let r = send(
        &gw,
        "POST",
        "/auth/logout",
        &cookie,
        &[("x-csrf-token", jar.value(CSRF))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cleared = Jar::from(&r);
    assert_eq!(cleared.0.len(), 3, "{:?}", cleared.0);
    for name in [ACCESS, REFRESH, CSRF] {
        assert_eq!(cleared.value(name), "", "{name}");
        assert!(cleared.attrs(name).contains("Max-Age=0"), "{name}");
    }
    assert!(cleared.attrs(REFRESH).starts_with("Path=/auth/refresh;"));

    let r = send(&gw, "GET", "/api/me", &cookie, &[]).await;
    assert_eq!(r.status, 401, "the old access cookie is revoked");
    assert_eq!(r.json()["error_description"], "token revoked");
    let refresh_cookie = format!(
        "{REFRESH}={}; {CSRF}={}",
        jar.value(REFRESH),
        jar.value(CSRF)
    );
    let r = send(
        &gw,
        "POST",
        "/auth/refresh",
        &refresh_cookie,
        &[("x-csrf-token", jar.value(CSRF))],
    )
    .await;
    assert_eq!(r.status, 401, "the family ended: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_login_is_refused_in_cookie_mode() {
    let Env { gw, .. } = cookie_env().await;
    let creds = json!({ "username": "alice", "password": "wonderland" });
    let cross = gw
        .h1()
        .post(gw.url("/auth/login"))
        .header("sec-fetch-site", "cross-site")
        .json(&creds);
    let r = TestGateway::reply(cross.send().await.expect("request")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(Jar::from(&r).0.is_empty());
    let same = gw
        .h1()
        .post(gw.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .json(&creds);
    let r = TestGateway::reply(same.send().await.expect("request")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// POST `path` with a JSON body; the answer.
async fn post_json(gw: &TestGateway, path: &str, body: serde_json::Value) -> Reply {
    let req = gw.h1().post(gw.url(path)).json(&body);
    TestGateway::send(req).await
}

/// A mobile app in front of a cookie-mode gateway with `bearer_clients = true`: it asks for
/// its tokens in the body, refreshes with the token in the body, and never gets a cookie,
/// while a browser's login on the same gateway still gets only cookies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_clients_of_a_cookie_gateway_get_their_tokens_in_the_body() {
    let Env { gw, up } = env("[signin.cookies]\nenabled = true\nbearer_clients = true").await;
    let creds = json!({ "username": "alice", "password": "wonderland", "token_delivery": "body" });
    let r = post_json(&gw, "/auth/login", creds).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        Jar::from(&r).0.is_empty(),
        "no Set-Cookie for a bearer client"
    );
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    let access = j["access_token"].as_str().expect("access_token").to_owned();
    let refresh = j["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    // A bearer token needs no CSRF header, even for a POST.
    let auth = format!("Bearer {access}");
    let r = send(&gw, "POST", "/api/orders", "", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.hits(), 1);

    let r = post_json(&gw, "/auth/refresh", json!({ "refresh_token": refresh })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        Jar::from(&r).0.is_empty(),
        "no Set-Cookie on a body refresh"
    );
    assert_eq!(r.json()["token_type"], "Bearer");
    assert_ne!(r.json()["refresh_token"], refresh.as_str(), "rotated");
    // Reuse detection is the same as ever.
    let r = post_json(&gw, "/auth/refresh", json!({ "refresh_token": refresh })).await;
    assert_eq!(r.status, 401, "{}", r.text());

    // The browser's login on the same gateway: cookies only.
    let r = login(&gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token_type"], "cookie");
    assert!(r.json().get("access_token").is_none());
    assert_eq!(Jar::from(&r).0.len(), 3);
}

/// Without `bearer_clients`, a cookie-mode gateway never puts a token where a script could
/// read it, whatever the client asks; and `token_delivery` is checked on every gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_delivery_is_checked_and_body_delivery_is_off_by_default() {
    let Env { gw, .. } = cookie_env().await;
    let ask = |delivery: &str| json!({ "username": "alice", "password": "wonderland", "token_delivery": delivery });
    let r = post_json(&gw, "/auth/login", ask("body")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("bearer_clients"), "{}", r.text());
    assert!(Jar::from(&r).0.is_empty());
    let r = post_json(&gw, "/auth/login", ask("cookie")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let jar = Jar::from(&r);
    // A refresh token sent in the body is still answered with cookies only.
    let r = post_json(
        &gw,
        "/auth/refresh",
        json!({ "refresh_token": jar.value(REFRESH) }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("access_token").is_none(), "{}", r.text());
    assert_eq!(Jar::from(&r).0.len(), 3);

    let Env { gw, .. } = env("").await;
    let r = post_json(&gw, "/auth/login", ask("cookie")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post_json(&gw, "/auth/login", ask("smoke-signals")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post_json(&gw, "/auth/login", ask("body")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token_type"], "Bearer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cookie_mode_off_cookies_are_ignored() {
    let Env { gw, up } = env("").await;
    let r = login(&gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(Jar::from(&r).0.is_empty(), "no Set-Cookie");
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    let token = j["access_token"].as_str().expect("access_token");
    let cookie = format!("{ACCESS}={token}");
    let r = send(&gw, "GET", "/api/me", &cookie, &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.hits(), 0);
    let r = send(&gw, "POST", "/auth/logout", &cookie, &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    // Without cookie mode the gateway leaves cookies alone.
    let echo = gw.get("/api/me", Some(token)).await.echo();
    assert!(echo.one("cookie").is_none());
    let echo = send(&gw, "GET", "/public/x", &cookie, &[]).await.echo();
    assert_eq!(echo.one("cookie"), Some(cookie.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_cookies_are_refused_on_a_tls_listener() {
    let setup = Setup::new();
    setup.write("users.toml", "users = []\n");
    let text = |cookies: &str| {
        setup.render(&format!(
            "{{listen}}\n{}\n[signin]\nusers_file = \"users.toml\"\n\n[signin.cookies]\nenabled = true\n{cookies}\n\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"jwt\"\n",
            hmac_key_toml("hs1", "HS256", SECRET)
        ))
    };
    let load = |cookies: &str| portcullis::Config::from_toml(&text(cookies), setup.dir.path());
    assert!(load("").is_ok());
    let e = load("secure = false").unwrap_err().to_string();
    assert!(e.contains("signin.cookies.secure"), "{e}");
    let e = load("same_site = \"none\"").unwrap_err().to_string();
    assert!(e.contains("signin.cookies.same_site"), "{e}");
    let e = load("samesite = \"lax\"").unwrap_err().to_string();
    assert!(e.contains("samesite"), "{e}");
}
