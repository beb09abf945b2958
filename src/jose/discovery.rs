//! OpenID Connect Discovery 1.0: where an issuer says its key set is published.
//!
//! `GET {issuer}/.well-known/openid-configuration` (section 4) answers a JSON document whose
//! `issuer` must be exactly the issuer asked about (section 4.3: otherwise a document served
//! by, or swapped in for, another party could point the gateway at keys that are not the
//! issuer's) and whose `jwks_uri` names the key set. Only those two members are read.
//!
//! [`super::jwks`] calls [`jwks_uri`] before each fetch of a [`super::jwks::Source::Discovery`]
//! source, so a moved `jwks_uri` is followed at the next refresh like a rotated key.

use http::Uri;
use serde::Deserialize;

use super::jwks::{get, is_safe_url, FetchOptions, JwksError};

/// Where the discovery document of `issuer` lives: the issuer without its trailing `/`,
/// then `/.well-known/openid-configuration` (section 4.1).
pub fn document_url(issuer: &str) -> Result<Uri, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.host().is_none() || !is_safe_url(&uri) {
        return Err(
            "an issuer to discover must be an https:// URL (or http:// to a loopback address)"
                .into(),
        );
    }
    Ok(uri)
}

/// The members of a discovery document the gateway reads.
#[derive(Deserialize)]
struct Document {
    issuer: String,
    jwks_uri: String,
}

/// Fetch the discovery document at `document` and return its `jwks_uri`, after checking its
/// `issuer` is `expected` byte for byte.
pub(super) async fn jwks_uri(
    document: &Uri,
    expected: &str,
    opts: &FetchOptions,
) -> Result<Uri, JwksError> {
    let body = tokio::time::timeout(opts.timeout, get(document, opts, "application/json"))
        .await
        .map_err(|_| JwksError::Timeout(opts.timeout))??;
    read_document(&body, expected)
}

fn read_document(body: &[u8], expected: &str) -> Result<Uri, JwksError> {
    let doc: Document = serde_json::from_slice(body).map_err(|e| {
        JwksError::Discovery(format!(
            "the discovery document is not JSON with string members issuer and jwks_uri: {e}"
        ))
    })?;
    if doc.issuer != expected {
        return Err(JwksError::Discovery(format!(
            "the discovery document names issuer `{}`, not the configured `{expected}` \
             (OpenID Connect Discovery 4.3); its keys are not used",
            doc.issuer
        )));
    }
    let uri: Uri = doc
        .jwks_uri
        .parse()
        .map_err(|e| JwksError::Discovery(format!("jwks_uri is not a URL: {e}")))?;
    if uri.host().is_none() || !is_safe_url(&uri) {
        return Err(JwksError::Discovery(format!(
            "jwks_uri `{}` is not an https:// URL (or http:// to a loopback address)",
            doc.jwks_uri
        )));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_url_follows_section_4_1() {
        for issuer in ["https://id.example.com/", "https://id.example.com"] {
            assert_eq!(
                document_url(issuer).unwrap().to_string(),
                "https://id.example.com/.well-known/openid-configuration"
            );
        }
        assert_eq!(
            document_url("https://id.example.com/tenant/")
                .unwrap()
                .to_string(),
            "https://id.example.com/tenant/.well-known/openid-configuration"
        );
        assert!(document_url("http://127.0.0.1:9000/").is_ok());
        assert!(document_url("http://id.example.com/").is_err());
        assert!(document_url("id.example.com").is_err());
    }

    #[test]
    fn the_issuer_must_match_exactly() {
        let doc = br#"{"issuer":"https://id.example.com/","jwks_uri":"https://id.example.com/keys","extra":1}"#;
        assert_eq!(
            read_document(doc, "https://id.example.com/")
                .unwrap()
                .to_string(),
            "https://id.example.com/keys"
        );
        // No trailing slash is another issuer (section 4.3 compares exactly).
        let e = read_document(doc, "https://id.example.com").unwrap_err();
        assert!(e.to_string().contains("4.3"), "{e}");
        for bad in [
            &br#"{"issuer":"https://id.example.com/"}"#[..],
            br#"{"issuer":1,"jwks_uri":"https://id.example.com/keys"}"#,
            br#"{"issuer":"https://id.example.com/","jwks_uri":"http://id.example.com/keys"}"#,
            b"not json",
        ] {
            assert!(read_document(bad, "https://id.example.com/").is_err());
        }
    }
}
