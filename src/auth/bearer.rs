//! Where a token comes from: the `Authorization: Bearer` header (RFC 6750 section 2.1).

use http::header::AUTHORIZATION;
use http::HeaderMap;

use super::AuthError;

/// The bearer token of a request.
///
/// The scheme name is case-insensitive (RFC 7235 section 2.1) and separated from the token by
/// one or more spaces. Exactly one `Authorization` header is accepted: two are ambiguous (which
/// one did an upstream cache or log see?) and rejected as malformed. A token longer than
/// `max_bytes` is refused before anything parses it.
pub fn from_headers(headers: &HeaderMap, max_bytes: usize) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    parse(value.as_bytes(), max_bytes)
}

/// Parse one `Authorization` header value as `Bearer <token>`.
pub fn parse(value: &[u8], max_bytes: usize) -> Result<&str, AuthError> {
    const SCHEME: &[u8] = b"bearer";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        // Another scheme (Basic, ...) is no bearer token at all.
        return Err(AuthError::Missing);
    }
    let rest = &value[SCHEME.len()..];
    if rest[0] != b' ' {
        return Err(AuthError::Missing);
    }
    let token = trim_spaces(rest);
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > max_bytes {
        return Err(AuthError::TooLarge);
    }
    // b64token (RFC 6750 section 2.1) is ASCII; anything else cannot be one of ours.
    std::str::from_utf8(token).map_err(|_| AuthError::Malformed)
}

/// `b` without leading and trailing spaces and tabs (OWS, RFC 9110 section 5.6.3).
pub(crate) fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr   abc  "] {
            assert_eq!(parse(v.as_bytes(), 100), Ok("abc"), "{v}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_missing() {
        for v in [
            "Basic abc",
            "Bearer",
            "Bearer ",
            "Bearerabc",
            "",
            "Token abc",
        ] {
            assert_eq!(parse(v.as_bytes(), 100), Err(AuthError::Missing), "{v}");
        }
    }

    #[test]
    fn size_is_bounded() {
        let v = format!("Bearer {}", "a".repeat(101));
        assert_eq!(parse(v.as_bytes(), 100), Err(AuthError::TooLarge));
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let mut h = HeaderMap::new();
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(from_headers(&h, 100), Err(AuthError::Malformed));
    }

    #[test]
    fn non_utf8_is_malformed() {
        assert_eq!(parse(b"Bearer \xff\xfe", 100), Err(AuthError::Malformed));
    }
}
