//! The real `portcullis` binary as a child process: [`GatewayProcess`] runs `run --config`
//! and learns the ports the gateway actually bound from its `portcullis listening` log line
//! (config addresses stay `127.0.0.1:0`; nothing binds a port, drops it and hopes), and
//! [`cli`] / [`portcullis`] run the other commands.
//!
//! The log line is read in either format (`[log] format = "json"` or the default text), so a
//! config may choose its format freely; it must not raise the level above `info`, or the
//! line is never written.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Setup;

/// How long the binary may take from spawn to its `portcullis listening` line (a debug build
/// on a busy machine, plus `[dev] generate_missing` writing a certificate).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The message of the log line that names the bound addresses.
const LISTENING: &str = "portcullis listening";

/// `portcullis ARGS` with a clean logging environment: `RUST_LOG` removed (the config's
/// `[log] level` decides), colours off, and no admin token inherited from the caller.
pub fn portcullis(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(args);
    clean_env(&mut cmd);
    cmd
}

/// `WRAPPER.. portcullis ARGS`: the binary started by another program (`unshare`, say),
/// with the environment [`portcullis`] gives it.
pub fn portcullis_via(wrapper: &[&str], args: &[&str]) -> Command {
    let (program, rest) = wrapper.split_first().expect("a wrapper program");
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .arg(env!("CARGO_BIN_EXE_portcullis"))
        .args(args);
    clean_env(&mut cmd);
    cmd
}

fn clean_env(cmd: &mut Command) {
    cmd.env_remove("RUST_LOG")
        .env_remove("PORTCULLIS_ADMIN_TOKEN")
        .env("NO_COLOR", "1");
}

/// What a CLI command printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// stdout followed by stderr, for assertions on "what the user saw".
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run `cmd` to completion off the async workers (a command may call back into a server
/// the test runs on this runtime).
pub async fn output(mut cmd: Command) -> CliOutput {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run portcullis"))
        .await
        .expect("CLI task");
    CliOutput {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `portcullis ARGS` (see [`portcullis`]) run to completion.
pub async fn cli(args: &[&str]) -> CliOutput {
    output(portcullis(args)).await
}

/// The gateway binary running `run --config FILE`; SIGKILLed when dropped.
///
/// Everything it writes to stdout and stderr is copied to [`GatewayProcess::log_path`], so a
/// test can read the whole log after the process exits.
pub struct GatewayProcess {
    child: Child,
    /// The proxy listener, as logged.
    pub addr: SocketAddr,
    /// The admin listener, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    log_path: PathBuf,
    copier: Option<JoinHandle<()>>,
}

impl GatewayProcess {
    /// Spawn `portcullis run --config CONFIG` (see [`portcullis`] for the environment) and
    /// block until it logs the addresses it bound; the log is kept in `log_path`. Panics with
    /// the log so far when the process exits first or stays silent past [`START_TIMEOUT`].
    pub fn spawn_blocking(config: &Path, log_path: &Path) -> GatewayProcess {
        Self::spawn_command(
            portcullis(&["run", "--config", &config.display().to_string()]),
            log_path,
        )
    }

    /// [`GatewayProcess::spawn_blocking`] off the async workers, with the log beside the
    /// config (`gateway.log`).
    pub async fn spawn(config: &Path) -> GatewayProcess {
        let config = config.to_path_buf();
        let log = config.with_file_name("gateway.log");
        tokio::task::spawn_blocking(move || GatewayProcess::spawn_blocking(&config, &log))
            .await
            .expect("spawn task")
    }

    /// Spawn a prepared `run` command (extra environment, say) and wait for its addresses.
    pub fn spawn_command(mut cmd: Command, log_path: &Path) -> GatewayProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis run");
        let mut file = std::fs::File::create(log_path).expect("gateway log file");
        let (tx, rx) = mpsc::channel::<String>();
        // Both pipes feed one channel; the copier writes every line to the file (so a full
        // pipe never blocks the gateway) and hands it to the waiting test.
        let mut feeders = Vec::new();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        for pipe in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            feeders.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(tx);
        let (found_tx, found_rx) = mpsc::channel::<String>();
        let copier = std::thread::spawn(move || {
            let mut found = Some(found_tx);
            for line in rx {
                let _ = writeln!(file, "{line}");
                let _ = file.flush();
                if found.is_some() && strip_ansi(&line).contains(LISTENING) {
                    if let Some(tx) = found.take() {
                        let _ = tx.send(line);
                    }
                }
            }
            for f in feeders {
                let _ = f.join();
            }
        });
        let mut process = GatewayProcess {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: None,
            log_path: log_path.to_owned(),
            copier: Some(copier),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let line = loop {
            match found_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = process.wait_exit(Duration::from_secs(5));
                    panic!(
                        "portcullis run exited ({status}) before listening:\n{}",
                        process.log()
                    );
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "portcullis run did not log `{LISTENING}` within {START_TIMEOUT:?}:\n{}",
                    process.log()
                );
            }
        };
        let (addr, admin) = parse_listening(&line)
            .unwrap_or_else(|| panic!("cannot read the listening addresses from {line}"));
        process.addr = addr;
        process.admin = admin;
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process has not exited (yet).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// The admin listener (panics when the config has no `[admin]`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the config has an [admin] listener")
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Every log line so far (complete after [`GatewayProcess::wait_exit`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM: the graceful shutdown path.
    pub fn sigterm(&self) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Wait (bounded) for the process to exit, then for its log to be copied in full.
    /// Panics with the log when it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the gateway did not exit within {limit:?}:\n{}",
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(copier) = self.copier.take() {
            let _ = copier.join();
        }
        status
    }

    /// [`GatewayProcess::wait_exit`] off the async workers.
    pub async fn wait_exit_async(mut self, limit: Duration) -> (ExitStatus, String) {
        tokio::task::spawn_blocking(move || {
            let status = self.wait_exit(limit);
            (status, self.log())
        })
        .await
        .expect("wait task")
    }

    /// SIGKILL: no shutdown code runs, nothing is flushed that was not already. (What
    /// dropping does; the name says it at the call site.)
    pub fn kill_9(self) {}
}

impl Drop for GatewayProcess {
    /// SIGKILL and reap, so no gateway outlives its test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy and admin addresses from a `portcullis listening` line: JSON
/// (`"addr":"127.0.0.1:P"`, `"admin":"127.0.0.1:Q"`) or text (`addr=... admin=...`).
pub fn parse_listening(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let line = strip_ansi(line);
    let (addr, admin) = match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(v) => (
            v["addr"].as_str()?.to_owned(),
            v["admin"].as_str().unwrap_or("None").to_owned(),
        ),
        Err(_) => {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .map(str::to_owned)
            };
            (field("addr")?, field("admin").unwrap_or("None".into()))
        }
    };
    let addr = addr.parse().ok()?;
    // `admin` is the address, absent without an admin listener.
    let admin = match admin.as_str() {
        "None" => None,
        a => Some(a.parse().ok()?),
    };
    Some((addr, admin))
}

/// Remove ANSI colour sequences, in case the log writer colours despite `NO_COLOR`.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The TCP ports process `pid` listens on, read from /proc (its socket inodes matched
/// against the LISTEN rows of /proc/net/tcp and tcp6). Tells "our server got the port" from
/// "somebody else's server answers there".
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: Vec<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            const LISTEN: &str = "0A";
            if *state != LISTEN || !inodes.iter().any(|i| i == inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// The binary run on a [`Setup`]'s rendered template (see [`Setup::spawn`]), with HTTPS
/// clients for it. The temp dir lives as long as this.
pub struct BinaryGateway {
    pub process: GatewayProcess,
    pub setup: Setup,
}

impl Setup {
    /// Render `template` to `config.toml` and run the binary on it (log in `gateway.log`).
    pub async fn spawn(self, template: &str) -> BinaryGateway {
        let config = self.write_config(template);
        BinaryGateway {
            process: GatewayProcess::spawn(&config).await,
            setup: self,
        }
    }
}

impl BinaryGateway {
    /// A client builder for the proxy listener (see [`super::https_client`]).
    pub fn builder(&self) -> reqwest::ClientBuilder {
        super::https_client(self.process.addr, &self.setup.cert_pem)
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.process.addr.port())
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}
