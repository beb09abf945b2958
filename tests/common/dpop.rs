//! DPoP proofs made by an implementation independent of portcullis: Python jwcrypto, through
//! `scripts/dpop_proof.py`. A [`Client`] holds one private key and signs proofs for the specs
//! it is given (see the script for the members). Used by `dpop.rs` and `dpop_signin.rs`.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// A client key held by jwcrypto, and the proofs it signed.
pub struct Client {
    pub key: Value,
    pub jkt: String,
}

/// Run `scripts/dpop_proof.py` on `request`; `None` (after saying why) when Python or
/// jwcrypto is not installed (`.ci/run` installs both).
pub fn proof_maker(request: &Value) -> Option<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dpop_proof.py");
    let mut child = match Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP: python3 not runnable ({e}); install python3 and jwcrypto");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No module named 'jwcrypto'") {
            eprintln!("SKIP: jwcrypto not installed (pip install jwcrypto)");
            return None;
        }
        panic!("dpop_proof.py failed: {err}");
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

impl Client {
    pub fn new(kty: &str) -> Option<Client> {
        let out = proof_maker(&json!({ "kty": kty }))?;
        Some(Client {
            key: out["key"].clone(),
            jkt: out["jkt"].as_str().unwrap().to_owned(),
        })
    }

    /// Proofs for each spec (see the script for the members).
    pub fn proofs(&self, specs: &[Value]) -> Vec<String> {
        let out = proof_maker(&json!({ "key": self.key, "proofs": specs })).unwrap();
        out["proofs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    }

    pub fn proof(&self, spec: Value) -> String {
        self.proofs(&[spec]).remove(0)
    }
}
