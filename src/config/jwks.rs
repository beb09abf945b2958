//! `[jwt.jwks]`: a published key set (URL or file), validated into [`JwksSettings`].
//!
//! Validation never touches the network (`portcullis check` must work offline): a URL is
//! checked for shape only and fetched by start-up; a file is read and parsed here.

use std::path::Path;
use std::time::Duration;

use crate::jose::jwks::{self, FetchOptions, Source};

use super::{file, resolve, Checker};

/// Smallest `min_refresh_interval` accepted: it is what keeps a flood of tokens with random
/// `kid`s from becoming a flood of fetches against the issuer.
pub const MIN_MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// Where the key set is published and how often it is fetched again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    pub source: Source,
    pub fetch: FetchOptions,
    pub refresh_interval: Duration,
    pub min_refresh_interval: Duration,
}

/// The fetch keys `[jwt.jwks]` and each `[[jwt.issuers]]` entry share.
pub(super) struct Schedule<'f> {
    pub refresh_interval: Option<&'f String>,
    pub min_refresh_interval: Option<&'f String>,
    pub timeout: Option<&'f String>,
    pub ca_file: Option<&'f std::path::PathBuf>,
}

impl Checker<'_> {
    /// Every problem of a `[jwt.jwks]` section, each naming its key.
    pub(super) fn jwks(&mut self, j: &file::Jwks) -> Option<JwksSettings> {
        let source = match (&j.url, &j.file) {
            (Some(_), Some(_)) => {
                self.problems.push(
                    "jwt.jwks: set either url or file, not both (one key set, one publisher)"
                        .into(),
                );
                None
            }
            (None, None) => {
                self.problems.push(
                    "jwt.jwks: set url (e.g. \"https://issuer.example/.well-known/jwks.json\") or file"
                        .into(),
                );
                None
            }
            (Some(url), None) => self.jwks_url("jwt.jwks.url", url),
            (None, Some(p)) => Some(Source::File(resolve(self.base, p))),
        };
        if let Some(Source::File(path)) = &source {
            if j.timeout.is_some() {
                self.problems
                    .push("jwt.jwks.timeout: only applies to a url".into());
            }
            self.jwks_file(path);
        }
        let schedule = Schedule {
            refresh_interval: j.refresh_interval.as_ref(),
            min_refresh_interval: j.min_refresh_interval.as_ref(),
            timeout: j.timeout.as_ref(),
            ca_file: j.ca_file.as_ref(),
        };
        self.jwks_schedule("jwt.jwks", source, schedule)
    }

    /// The refresh intervals, fetch timeout and CA of a key set published at `source`;
    /// problems are named under `section` (`jwt.jwks`, `jwt.issuers[i]`).
    pub(super) fn jwks_schedule(
        &mut self,
        section: &str,
        source: Option<Source>,
        j: Schedule<'_>,
    ) -> Option<JwksSettings> {
        let refresh_interval = self.duration(
            &format!("{section}.refresh_interval"),
            j.refresh_interval,
            jwks::DEFAULT_REFRESH_INTERVAL,
        );
        let min_refresh_interval = self.duration(
            &format!("{section}.min_refresh_interval"),
            j.min_refresh_interval,
            jwks::DEFAULT_MIN_REFRESH_INTERVAL,
        );
        if min_refresh_interval < MIN_MIN_REFRESH_INTERVAL {
            self.problems.push(format!(
                "{section}.min_refresh_interval: must be at least {MIN_MIN_REFRESH_INTERVAL:?}; it limits how often \
                 tokens naming unknown kids can make the gateway fetch the key set"
            ));
        }
        if refresh_interval < min_refresh_interval {
            self.problems.push(format!(
                "{section}.refresh_interval: {refresh_interval:?} is shorter than min_refresh_interval \
                 ({min_refresh_interval:?}), which no fetch may beat"
            ));
        }
        let timeout = self.duration(
            &format!("{section}.timeout"),
            j.timeout,
            jwks::DEFAULT_FETCH_TIMEOUT,
        );
        if timeout.is_zero() {
            self.problems.push(format!(
                "{section}.timeout: must be more than 0 (e.g. \"5s\")"
            ));
        }
        let https = match &source {
            Some(Source::Url(u)) | Some(Source::Discovery { document: u, .. }) => {
                u.scheme_str() == Some("https")
            }
            _ => false,
        };
        let ca_pem = match j.ca_file {
            None => None,
            Some(_) if !https => {
                self.problems.push(format!(
                    "{section}.ca_file: only applies to an https:// url"
                ));
                None
            }
            Some(p) => self.jwks_ca(&format!("{section}.ca_file"), &resolve(self.base, p)),
        };
        Some(JwksSettings {
            source: source?,
            fetch: FetchOptions { timeout, ca_pem },
            refresh_interval,
            min_refresh_interval,
        })
    }

    /// An `https://` URL, or `http://` to this host only: keys fetched in clear text over a
    /// network could be swapped by anyone on the path, who could then sign any token.
    pub(super) fn jwks_url(&mut self, key: &str, url: &str) -> Option<Source> {
        let uri = match Source::parse(url) {
            Ok(Source::Url(uri)) => uri,
            _ => {
                self.problems.push(format!(
                    "{key}: `{url}` is not an https:// URL with a host; for a local file use jwt.jwks.file"
                ));
                return None;
            }
        };
        if !jwks::is_safe_url(&uri) {
            self.problems.push(format!(
                "{key}: `{url}` is plain http to another host; use https:// (anyone on the \
                 path could publish their own keys), or http:// only to a loopback address"
            ));
            return None;
        }
        Some(Source::Url(uri))
    }

    fn jwks_ca(&mut self, key: &str, path: &Path) -> Option<Vec<u8>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let pem = self.read(key, path)?;
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
        match certs {
            Ok(c) if !c.is_empty() => Some(pem),
            _ => {
                self.problems.push(format!(
                    "{key}: `{}` holds no PEM certificate",
                    path.display()
                ));
                None
            }
        }
    }

    /// A file source is read and parsed now, so `check` reports a broken file.
    fn jwks_file(&mut self, path: &Path) {
        let Some(bytes) = self.read("jwt.jwks.file", path) else {
            return;
        };
        if let Err(e) = jwks::parse_document(&Source::File(path.to_path_buf()), &bytes) {
            self.problems
                .push(format!("jwt.jwks.file: `{}`: {e}", path.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn load(jwks: &str) -> Result<Config, String> {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n\n[jwt.jwks]\n{jwks}\n\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:8080\"\nauth = \"jwt\"\n"
        );
        Config::from_toml(&text, Path::new("/nonexistent")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_url_alone_satisfies_a_jwt_route_with_defaults() {
        let c = load("url = \"https://issuer.example/.well-known/jwks.json\"").unwrap();
        let j = c.jwt.jwks.expect("[jwt.jwks] is loaded");
        assert_eq!(
            j.refresh_interval,
            crate::jose::jwks::DEFAULT_REFRESH_INTERVAL
        );
        assert_eq!(
            j.min_refresh_interval,
            crate::jose::jwks::DEFAULT_MIN_REFRESH_INTERVAL
        );
        assert_eq!(j.fetch.timeout, crate::jose::jwks::DEFAULT_FETCH_TIMEOUT);
        assert!(j.fetch.ca_pem.is_none());
        assert!(load("url = \"http://127.0.0.1:8080/jwks\"").is_ok());
        assert!(load("url = \"http://[::1]:8080/jwks\"").is_ok());
    }

    #[test]
    fn each_problem_names_its_key() {
        for (section, key) in [
            ("url = \"https://a.example/j\"\nfile = \"j.json\"", "jwt.jwks: set either url or file"),
            ("refresh_interval = \"1m\"", "jwt.jwks: set url"),
            ("url = \"http://issuer.example/j\"", "jwt.jwks.url"),
            ("url = \"ftp://issuer.example/j\"", "jwt.jwks.url"),
            ("url = \"keys/j.json\"", "jwt.jwks.url"),
            ("url = \"https://a.example/j\"\nmin_refresh_interval = \"10ms\"", "jwt.jwks.min_refresh_interval"),
            ("url = \"https://a.example/j\"\nrefresh_interval = \"5s\"\nmin_refresh_interval = \"10s\"", "jwt.jwks.refresh_interval"),
            ("url = \"https://a.example/j\"\ntimeout = \"0s\"", "jwt.jwks.timeout"),
            ("url = \"https://a.example/j\"\nrefresh_interval = \"soon\"", "jwt.jwks.refresh_interval"),
            ("url = \"http://127.0.0.1/j\"\nca_file = \"ca.pem\"", "jwt.jwks.ca_file: only applies"),
            ("url = \"https://a.example/j\"\nca_file = \"ca.pem\"", "jwt.jwks.ca_file"),
            ("file = \"missing.json\"", "jwt.jwks.file"),
            ("url = \"https://a.example/j\"\nrefresh = \"1m\"", "refresh"),
        ] {
            let e = load(section).expect_err(section);
            assert!(e.contains(key), "{section}: want {key} in {e}");
        }
    }

    #[test]
    fn a_file_source_is_parsed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let load_in = |jwks: &str| {
            let text = format!(
                "[listen]\naddr = \"127.0.0.1:0\"\n\n[jwt.jwks]\n{jwks}\n\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:8080\"\nauth = \"jwt\"\n"
            );
            Config::from_toml(&text, dir.path()).map_err(|e| e.to_string())
        };
        std::fs::write(dir.path().join("bad.json"), "{\"keys\": 3}").unwrap();
        let e = load_in("file = \"bad.json\"").unwrap_err();
        assert!(e.contains("jwt.jwks.file") && e.contains("bad.json"), "{e}");
        std::fs::write(
            dir.path().join("good.json"),
            r#"{"keys":[{"kty":"oct","kid":"h","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM0NQ"}]}"#,
        )
        .unwrap();
        let c = load_in("file = \"good.json\"").unwrap();
        assert!(matches!(
            c.jwt.jwks.unwrap().source,
            crate::jose::jwks::Source::File(_)
        ));
        let e = load_in("file = \"good.json\"\ntimeout = \"1s\"").unwrap_err();
        assert!(e.contains("jwt.jwks.timeout"), "{e}");
    }
}
