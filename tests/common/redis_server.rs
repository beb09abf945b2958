//! A throwaway `redis-server` (or replica, or Sentinel) for the cluster-mode tests
//! (`tests/cluster.rs`, `tests/sessions.rs`, `tests/sentinel.rs`): started on an ephemeral
//! loopback port in a temp dir, killed with SIGKILL when dropped.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// How long `redis-server` may take to answer after it is started.
const START_WAIT: Duration = Duration::from_secs(8);
/// Ports tried by [`RedisServer::start`] before giving up (each found taken by the time
/// redis-server bound it), and restarts tried by [`RedisServer::launch`].
const LAUNCH_ATTEMPTS: usize = 5;

/// A throwaway `redis-server` on an ephemeral loopback port, without persistence, so a
/// restart loses every key (the worst case for the gateways).
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// TLS only: listen with `--port 0 --tls-port PORT` and these arguments.
    tls_args: Option<Vec<String>>,
    /// Arguments before all others: a config file (and `--sentinel`).
    leading_args: Vec<String>,
    /// Arguments after the standard ones (`--replicaof HOST PORT`).
    extra_args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::unlaunched(tempfile::tempdir().expect("temp dir")).first_launch()
    }

    /// Not started yet: port 0, plain TCP, no extra arguments, files in `dir`.
    fn unlaunched(dir: TempDir) -> RedisServer {
        RedisServer {
            port: 0,
            dir,
            child: None,
            tls_args: None,
            leading_args: Vec::new(),
            extra_args: Vec::new(),
        }
    }

    /// A replica of the server on `master_port` (`--replicaof`).
    pub fn start_replica_of(master_port: u16) -> RedisServer {
        let mut server = Self::unlaunched(tempfile::tempdir().expect("temp dir"));
        server.extra_args = ["--replicaof", "127.0.0.1", &master_port.to_string()]
            .map(str::to_owned)
            .to_vec();
        server.first_launch()
    }

    /// A Sentinel (`redis-server CONF --sentinel`) whose config file holds `config` (its
    /// `sentinel monitor ...` lines); Sentinel rewrites that file, so it lives in its own
    /// temp dir. Answers PING like a server once it is up.
    pub fn start_sentinel(config: &str) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(&conf, config).expect("write sentinel config");
        let mut server = Self::unlaunched(dir);
        server.leading_args = vec![conf.display().to_string(), "--sentinel".to_owned()];
        server.first_launch()
    }

    /// A `redis-server` speaking only TLS, with a password, its certificate issued for
    /// `localhost` by a fresh CA; returns it with the CA certificate (PEM).
    pub fn start_tls(password: &str) -> (RedisServer, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = super::private_ca_for_localhost();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("ca.pem"), &pki.ca_pem).expect("write CA");
        std::fs::write(path("cert.pem"), &pki.cert_pem).expect("write cert");
        std::fs::write(path("key.pem"), &pki.key_pem).expect("write key");
        let tls_args = [
            "--tls-cert-file",
            &path("cert.pem"),
            "--tls-key-file",
            &path("key.pem"),
            "--tls-ca-cert-file",
            &path("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]
        .map(str::to_owned)
        .to_vec();
        let mut server = Self::unlaunched(dir);
        server.tls_args = Some(tls_args);
        let server = server.first_launch();
        (server, pki.ca_pem)
    }

    /// redis-server cannot bind port 0 and report it, so a port is picked free and the start
    /// retried on another one when redis-server finds it taken by then.
    fn first_launch(mut self) -> RedisServer {
        for _ in 0..LAUNCH_ATTEMPTS {
            self.port = free_port();
            if self.try_launch() {
                return self;
            }
        }
        panic!("redis-server found {LAUNCH_ATTEMPTS} free ports taken");
    }

    /// Start (again) on the same port and wait until it answers PING. A restart may find the
    /// port briefly taken (another test's outgoing connection): it retries, then panics.
    pub fn launch(&mut self) {
        for _ in 0..LAUNCH_ATTEMPTS {
            if self.try_launch() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("redis-server could not listen on port {}", self.port);
    }

    /// Spawn on `self.port`; true once this very process listens there (checked through
    /// /proc, so a server of another test on the same port is never mistaken for ours) and,
    /// without TLS, answers PING. False when it exited first (the port was taken).
    fn try_launch(&mut self) -> bool {
        let port = self.port.to_string();
        let listen = match &self.tls_args {
            Some(tls) => [
                vec!["--port".into(), "0".into(), "--tls-port".into(), port],
                tls.clone(),
            ]
            .concat(),
            None => vec!["--port".into(), port],
        };
        let child = Command::new("redis-server")
            .args(&self.leading_args)
            .args(listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + START_WAIT;
        loop {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return false;
            }
            // TLS: no plain PING; our process listening on the port is enough.
            let ours = super::process::listening_ports(pid).contains(&self.port);
            if ours && (self.tls_args.is_some() || ping(self.port)) {
                return true;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: no shutdown, no save.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL redis-server");
            child.wait().expect("reap redis-server");
        }
    }

    /// Sends `signal` ("STOP", "CONT") to the server: a stopped Redis is slow, not dead
    /// (its sockets stay open and queue what is sent to them).
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let ok = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{signal} redis-server");
        }
    }

    /// A connection for checking what the gateways stored.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A loopback port nobody listens on right now, and may by the time it is used: only for
/// servers that cannot bind port 0 themselves (redis-server), and only with a check that the
/// server really got it (see [`RedisServer::try_launch`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

pub fn ping(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
