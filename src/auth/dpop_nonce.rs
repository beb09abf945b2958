//! Server-provided DPoP nonces (RFC 9449 section 8): stateless, so any worker checks what
//! any other issued. A nonce is the rotation period's number and an HMAC of it under a
//! per-process random secret; the current period's nonce and the previous one are accepted,
//! so a client that fetched a nonce just before a rotation is not refused at once.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Issues and checks nonces that rotate every `interval`.
pub struct Nonces {
    secret: [u8; 32],
    interval: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// `interval` is `[dpop] nonce_interval` (at least one second, checked at load).
    pub fn new(interval: Duration) -> Self {
        Nonces {
            secret: rand::random(),
            interval: interval.as_secs().max(1),
        }
    }

    /// The nonce of the period holding `now` (unix seconds): what a client should send next.
    pub fn current(&self, now: u64) -> String {
        self.nonce(now / self.interval)
    }

    /// Was `nonce` issued for the current period or the one before?
    pub fn accepts(&self, nonce: &str, now: u64) -> bool {
        let period = now / self.interval;
        [period, period.saturating_sub(1)]
            .iter()
            .any(|p| bool::from(self.nonce(*p).as_bytes().ct_eq(nonce.as_bytes())))
    }

    fn nonce(&self, period: u64) -> String {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).map(|mut m| {
            m.update(b"portcullis dpop nonce v1\0");
            m.update(&period.to_be_bytes());
            m.finalize().into_bytes()
        });
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&period.to_be_bytes());
        if let Ok(mac) = mac {
            out[8..].copy_from_slice(&mac[..16]);
        }
        URL_SAFE_NO_PAD.encode(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_and_previous_period_accepted_older_and_foreign_refused() {
        let n = Nonces::new(Duration::from_secs(300));
        let t = 1_800_000_000;
        let nonce = n.current(t);
        assert!(n.accepts(&nonce, t));
        assert!(n.accepts(&nonce, t + 300));
        assert!(!n.accepts(&nonce, t + 600));
        assert_ne!(n.current(t + 300), nonce, "rotates every interval");
        let other = Nonces::new(Duration::from_secs(300));
        assert!(!other.accepts(&nonce, t));
        assert!(!n.accepts("", t));
        assert!(!n.accepts("garbage", t));
    }
}
