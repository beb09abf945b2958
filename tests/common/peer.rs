//! A peer in its own process (a fixture from tests/fixtures: the python HTTP target, the
//! grpcio server) that binds its own port and announces it as its first line, `PORT <n>`.
//! Its own process, so a test can really kill it with SIGKILL ([`PeerProcess::kill_9`]);
//! dropping it does the same, so no peer outlives its test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running peer and the port it said it bound.
pub struct PeerProcess {
    child: Child,
    pub port: u16,
}

impl PeerProcess {
    /// Run `python3 ARGS` and wait for its `PORT <n>` line (panics with what it said
    /// instead).
    pub fn python(args: &[&str]) -> PeerProcess {
        let mut child = Command::new("python3")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start python3 {args:?}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped"))
            .read_line(&mut line)
            .expect("read the peer's first line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("python3 {args:?} said {line:?}, not `PORT <n>`"));
        PeerProcess { child, port }
    }

    /// `kill -9` (std's `Child::kill` sends SIGKILL on Unix), then reap.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("kill -9 the peer");
        self.child.wait().expect("reap the peer");
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
