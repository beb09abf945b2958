//! A throwaway `redis-server` for the cluster-mode tests (`tests/cluster.rs`,
//! `tests/sessions.rs`): started on an ephemeral loopback port in a temp dir, killed with
//! SIGKILL when dropped.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// How long `redis-server` may take to answer after it is started.
const START_WAIT: Duration = Duration::from_secs(8);

/// A throwaway `redis-server` on an ephemeral loopback port, without persistence, so a
/// restart loses every key (the worst case for the gateways).
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Replaces `--port PORT` (e.g. `--port 0 --tls-port PORT ...`).
    listen_args: Option<Vec<String>>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            listen_args: None,
        };
        server.launch();
        server
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
        let port = free_port();
        let mut server = RedisServer {
            port,
            listen_args: Some(
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
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
                .to_vec(),
            ),
            dir,
            child: None,
        };
        server.launch();
        (server, pki.ca_pem)
    }

    /// Start (again) on the same port and wait until it answers PING.
    pub fn launch(&mut self) {
        let listen = self
            .listen_args
            .clone()
            .unwrap_or_else(|| vec!["--port".into(), self.port.to_string()]);
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + START_WAIT;
        let up = |port| match self.listen_args {
            // TLS: no plain PING; accepting connections is enough.
            Some(_) => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            None => ping(port),
        };
        while !up(self.port) {
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

/// A loopback port nobody listens on right now.
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
