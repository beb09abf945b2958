//! [`Env`], the world of most integration tests: the gateway started in-process on port 0
//! (see [`Setup::start`]) and the upstream(s) it forwards to, named in the config template by
//! the placeholders their [`Upstreams`] implementation defines (`{up}` for one upstream).

use std::path::PathBuf;

use super::faulty::FaultyUpstream;
use super::{Setup, TestGateway, Upstream};

/// A running gateway and its upstream(s): [`Upstream`] (recording echo server) unless a test
/// needs another kit ([`FaultyUpstream`]) or several (a struct implementing [`Upstreams`]).
pub struct Env<U = Upstream> {
    pub gw: TestGateway,
    pub up: U,
}

/// Upstreams a config template can name: each defines its placeholders on the [`Setup`].
pub trait Upstreams {
    fn define(&self, setup: Setup) -> Setup;
}

/// Borrowed upstreams, for several gateways in a row in front of the same ones.
impl<T: Upstreams> Upstreams for &T {
    fn define(&self, setup: Setup) -> Setup {
        (*self).define(setup)
    }
}

impl Upstreams for Upstream {
    /// `{up}`: the upstream's `http://127.0.0.1:PORT`.
    fn define(&self, setup: Setup) -> Setup {
        setup.var("up", self.url())
    }
}

impl Upstreams for FaultyUpstream {
    /// `{up}`: the faulty upstream's `http://127.0.0.1:PORT`.
    fn define(&self, setup: Setup) -> Setup {
        setup.var("up", self.url())
    }
}

impl Env<FaultyUpstream> {
    /// A fresh [`FaultyUpstream`] behind one public route on `/` with the route `timeout`
    /// (`"1s"`), panics in gateway tasks watched.
    pub async fn faulty(timeout: &str) -> Env<FaultyUpstream> {
        super::watch_panics();
        let config = format!(
            "{{listen}}\n[[routes]]\nprefix = \"/\"\nupstream = \"{{up}}\"\nauth = \"public\"\ntimeout = \"{timeout}\"\n"
        );
        Env::start_with(Setup::new(), FaultyUpstream::start().await, &config).await
    }
}

impl Env {
    /// A fresh recording [`Upstream`] as `{up}`, and the gateway on `template`.
    pub async fn start(setup: Setup, template: &str) -> Env {
        Env::start_with(setup, Upstream::start().await, template).await
    }

    /// Like [`Env::start`], but the config is written to `config.toml` and loaded from there,
    /// so a reload (`POST /reload`) has a file to re-read.
    pub async fn start_from_file(setup: Setup, template: &str) -> Env {
        Env::start_from_file_with(setup, Upstream::start().await, template).await
    }
}

impl<U: Upstreams> Env<U> {
    /// The gateway on `template`, with `up`'s placeholders defined.
    pub async fn start_with(setup: Setup, up: U, template: &str) -> Env<U> {
        let gw = up.define(setup).start(template).await;
        Env { gw, up }
    }

    /// [`Env::start_with`] through a config file (see [`Env::start_from_file`]).
    pub async fn start_from_file_with(setup: Setup, up: U, template: &str) -> Env<U> {
        let setup = up.define(setup);
        let path: PathBuf = setup.write_config(template);
        let config = portcullis::Config::load(&path)
            .unwrap_or_else(|e| panic!("test config {} is invalid: {e}", path.display()));
        let gw = setup.start_with(config).await;
        Env { gw, up }
    }
}
