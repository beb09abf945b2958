//! `[cors]`: which browser origins may call the gateway cross-origin, validated into the
//! header values the data path sends (computed once here, never per request).
//!
//! The Fetch standard (CORS protocol) is the reference: a preflight names a method and
//! headers; the answer echoes the origin, and `*` may never be combined with credentials.

use std::time::Duration;

use http::header::HeaderValue;

use super::file;

/// Methods allowed when `allowed_methods` is absent: the CORS-safelisted ones.
pub const DEFAULT_ALLOWED_METHODS: &[&str] = &["GET", "HEAD", "POST"];
/// How long a browser may cache a preflight answer when `max_age` is absent.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// The validated `[cors]` section.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins (`scheme://host[:port]`, lower-case); empty when `any_origin`.
    pub allowed_origins: Vec<String>,
    /// `"*"` was listed: any origin (never with credentials).
    pub any_origin: bool,
    /// Upper-case method names.
    pub allowed_methods: Vec<String>,
    /// Lower-case header names.
    pub allowed_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: Duration,
    /// `Access-Control-Allow-Methods` of a preflight answer.
    pub methods_value: HeaderValue,
    /// `Access-Control-Allow-Headers` of a preflight answer (none when the list is empty).
    pub headers_value: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers` of every answer (none when the list is empty).
    pub expose_value: Option<HeaderValue>,
    /// `Access-Control-Max-Age`, in seconds.
    pub max_age_value: HeaderValue,
}

impl Cors {
    /// Is `origin` (the request's `Origin` header, as sent) allowed? Compared
    /// case-insensitively: browsers serialise scheme and host in lower case already.
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        if origin.is_empty() {
            return false;
        }
        self.any_origin
            || self
                .allowed_origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
    }

    /// Validate `[cors]`; every problem goes to `problems`, naming its key.
    pub fn validate(f: &file::Cors, problems: &mut Vec<String>) -> Option<Cors> {
        let before = problems.len();
        let allow_credentials = f.allow_credentials.unwrap_or(false);
        let mut allowed_origins = Vec::new();
        let mut any_origin = false;
        for (i, o) in f.allowed_origins.iter().enumerate() {
            if o == "*" {
                any_origin = true;
                continue;
            }
            match check_origin(o) {
                Ok(o) => allowed_origins.push(o),
                Err(e) => problems.push(format!("cors.allowed_origins[{i}]: `{o}` {e}")),
            }
        }
        if any_origin && allow_credentials {
            problems.push(
                "cors.allowed_origins: \"*\" cannot be combined with allow_credentials = true (browsers refuse it, and any site could read a user's answers); list the exact origins instead".into(),
            );
        }
        if any_origin {
            allowed_origins.clear();
        }
        let allowed_methods: Vec<String> = match &f.allowed_methods {
            None => DEFAULT_ALLOWED_METHODS
                .iter()
                .map(|m| m.to_string())
                .collect(),
            Some(list) => list.iter().map(|m| m.trim().to_ascii_uppercase()).collect(),
        };
        for (i, m) in allowed_methods.iter().enumerate() {
            if m.is_empty() || http::Method::from_bytes(m.as_bytes()).is_err() {
                problems.push(format!(
                    "cors.allowed_methods[{i}]: `{m}` is not an HTTP method; write e.g. \"GET\", \"PUT\""
                ));
            }
        }
        let allowed_headers = header_names("cors.allowed_headers", &f.allowed_headers, problems);
        let expose_headers = header_names("cors.expose_headers", &f.expose_headers, problems);
        let max_age = match &f.max_age {
            None => DEFAULT_MAX_AGE,
            Some(s) => super::parse_duration(s).unwrap_or_else(|e| {
                problems.push(format!("cors.max_age: {e}"));
                DEFAULT_MAX_AGE
            }),
        };
        if problems.len() > before {
            return None;
        }
        let methods_value = list_value(&allowed_methods)?;
        let headers_value = list_value(&allowed_headers);
        let expose_value = list_value(&expose_headers);
        let max_age_value = HeaderValue::from(max_age.as_secs());
        Some(Cors {
            allowed_origins,
            any_origin,
            allowed_methods,
            allowed_headers,
            allow_credentials,
            max_age,
            methods_value,
            headers_value,
            expose_value,
            max_age_value,
        })
    }
}

/// An origin as a browser serialises it: `scheme://host[:port]`, no path, no trailing `/`.
fn check_origin(o: &str) -> Result<String, &'static str> {
    let lower = o.trim().to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return Err(
            "is not an origin; write scheme://host[:port], e.g. \"https://app.example.com\"",
        );
    };
    if !matches!(scheme, "http" | "https") {
        return Err("must start with http:// or https://");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err("must be scheme://host[:port] with no path, query or trailing slash");
    }
    Ok(lower)
}

/// Lower-cased header names, each checked.
fn header_names(key: &str, list: &[String], problems: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let h = h.trim().to_ascii_lowercase();
        if http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
            problems.push(format!("{key}[{i}]: `{h}` is not a valid HTTP header name"));
        } else {
            out.push(h);
        }
    }
    out
}

/// `a, b, c` as one header value; `None` for an empty list.
fn list_value(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> file::Cors {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn star_with_credentials_is_refused() {
        let mut problems = Vec::new();
        let f = section("allowed_origins = [\"*\"]\nallow_credentials = true");
        assert!(Cors::validate(&f, &mut problems).is_none());
        assert!(problems[0].contains("allow_credentials"), "{problems:?}");
    }

    #[test]
    fn star_without_credentials_allows_any_origin() {
        let mut problems = Vec::new();
        let f = section("allowed_origins = [\"*\"]");
        let c = Cors::validate(&f, &mut problems).unwrap();
        assert!(c.allows_origin(b"https://anything.example"));
        assert!(!c.allows_origin(b""));
    }

    #[test]
    fn origins_are_exact() {
        let mut problems = Vec::new();
        let f = section("allowed_origins = [\"https://App.example.com\"]\nmax_age = \"10m\"");
        let c = Cors::validate(&f, &mut problems).unwrap();
        assert!(c.allows_origin(b"https://app.example.com"));
        assert!(!c.allows_origin(b"https://app.example.com.evil.test"));
        assert!(!c.allows_origin(b"http://app.example.com"));
        assert!(!c.allows_origin(b"null"));
        assert_eq!(c.max_age_value, "600");
        assert_eq!(c.methods_value, "GET, HEAD, POST");
        assert!(c.headers_value.is_none());
    }

    #[test]
    fn bad_entries_name_their_key() {
        let mut problems = Vec::new();
        let f = section(
            "allowed_origins = [\"app.example.com\", \"https://a.example/\"]\nallowed_methods = [\"GE T\"]\nallowed_headers = [\"bad header\"]\nmax_age = \"soon\"",
        );
        assert!(Cors::validate(&f, &mut problems).is_none());
        let all = problems.join("\n");
        for key in [
            "cors.allowed_origins[0]",
            "cors.allowed_origins[1]",
            "cors.allowed_methods[0]",
            "cors.allowed_headers[0]",
            "cors.max_age",
        ] {
            assert!(all.contains(key), "{key} missing from {all}");
        }
    }
}
