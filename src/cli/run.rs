//! `portcullis run`: load the config, serve until SIGTERM or SIGINT, reload on SIGHUP.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;

/// Load and validate `path`; the error lists every problem.
pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration\n{e}"))
}

/// Serve with the config at `path` until a stop signal has drained the gateway.
pub fn run(path: PathBuf, recover: bool) -> anyhow::Result<()> {
    let mut config = load(&path)?;
    config.revocation.recover |= recover;
    crate::telemetry::init_logging(config.log.format, &config.log.level);
    config.write_dev_files()?;
    // The one command that mints a token this gateway accepts, for whoever just started it.
    let try_token = config.jwt.keys.signing_key(None).is_some().then(|| {
        let me = std::env::args()
            .next()
            .unwrap_or_else(|| "portcullis".into());
        format!("{me} token --config {} --sub alice", path.display())
    });
    // Worker 0, the admin API and background tasks share this thread; `start` adds one
    // thread-per-core worker for each further core (see `server`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let mut signals = Signals::new();
        let gateway = crate::start(config).await?;
        if let Some(command) = try_token {
            tracing::info!(%command, "mint a test token with");
        }
        while let Signal::Reload = signals.next().await {
            // The outcome is logged (and counted in metrics) by the reloader.
            let _ = gateway.reload().await;
        }
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        gateway.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

enum Signal {
    /// SIGHUP: re-read the config file.
    Reload,
    /// SIGTERM or SIGINT: drain and exit.
    Stop,
}

/// Signal streams, registered once so no signal is lost between two waits.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(hup)) => Some((term, hup)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some((term, hup)) = &mut self.streams {
            return tokio::select! {
                _ = term.recv() => Signal::Stop,
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}
