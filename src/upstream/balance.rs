//! Picking a target for one request: round robin, least requests in flight, or sticky by
//! user (rendezvous hashing), among the targets in rotation. When none is in rotation the
//! pick falls back to every target (an upstream that might answer beats a certain 503).
//! Pure functions over atomics: no allocation, no lock (see `benches/balance.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::target::TargetState;
use crate::routing::Balance;

/// What a pick may depend on besides the targets' state.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext<'a> {
    /// The authenticated user's id (`user_hash`); `None` on public routes.
    pub user: Option<&'a [u8]>,
    /// A target already tried for this request (a retry goes elsewhere).
    pub exclude: Option<usize>,
}

/// The index of the target for this request, or `None` when the only target is excluded.
/// `rr` is the caller's rotation counter (one per worker and route: no shared cache line).
#[inline]
pub fn pick(
    balance: Balance,
    targets: &[TargetState],
    now: u64,
    rr: &AtomicUsize,
    ctx: PickContext<'_>,
) -> Option<usize> {
    let n = targets.len();
    let allowed = |i: usize| Some(i) != ctx.exclude;
    let up = |i: usize| allowed(i) && targets[i].available(now);
    let found = match (balance, ctx.user) {
        (Balance::UserHash, Some(user)) => {
            let key = hash64(user);
            (0..n)
                .filter(|&i| up(i))
                .max_by_key(|&i| mix(key ^ targets[i].seed))
        }
        (Balance::LeastRequests, _) => {
            // Start the scan at a rotating index, so ties do not all land on target 0.
            let start = rr.fetch_add(1, Ordering::Relaxed);
            (0..n)
                .map(|k| (start.wrapping_add(k)) % n)
                .filter(|&i| up(i))
                .min_by_key(|&i| targets[i].in_flight())
        }
        _ => {
            let start = rr.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|k| (start.wrapping_add(k)) % n).find(|&i| up(i))
        }
    };
    found.or_else(|| {
        // Nothing in rotation: try any target not excluded, in turn.
        let start = rr.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start.wrapping_add(k)) % n)
            .find(|&i| allowed(i))
    })
}

/// FNV-1a, then a finaliser: stable across processes and releases (unlike `RandomState`),
/// so a user keeps their target across gateway restarts and instances.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The splitmix64 finaliser: spreads every input bit over the output.
#[inline]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::UpstreamTarget;

    fn targets(n: usize) -> Vec<TargetState> {
        (0..n)
            .map(|i| {
                TargetState::new(UpstreamTarget::new(
                    http::uri::Scheme::HTTP,
                    format!("10.0.0.{i}:80").parse().unwrap(),
                ))
            })
            .collect()
    }

    fn ctx(user: Option<&[u8]>) -> PickContext<'_> {
        PickContext {
            user,
            exclude: None,
        }
    }

    #[test]
    fn round_robin_visits_every_target_and_skips_ejected_ones() {
        let t = targets(3);
        let rr = AtomicUsize::new(0);
        let picks: Vec<_> = (0..6)
            .map(|_| pick(Balance::RoundRobin, &t, 10, &rr, ctx(None)).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        t[1].connect_failed(10);
        for _ in 0..10 {
            assert_ne!(pick(Balance::RoundRobin, &t, 10, &rr, ctx(None)), Some(1));
        }
    }

    #[test]
    fn everything_down_falls_back_to_any_target_but_the_excluded_one() {
        let t = targets(2);
        let rr = AtomicUsize::new(0);
        t[0].set_healthy(false);
        t[1].set_healthy(false);
        assert!(pick(Balance::RoundRobin, &t, 10, &rr, ctx(None)).is_some());
        let c = PickContext {
            user: None,
            exclude: Some(0),
        };
        assert_eq!(pick(Balance::RoundRobin, &t, 10, &rr, c), Some(1));
        let one = targets(1);
        let c = PickContext {
            user: None,
            exclude: Some(0),
        };
        assert_eq!(pick(Balance::RoundRobin, &one, 10, &rr, c), None);
    }

    #[test]
    fn least_requests_prefers_the_idle_target() {
        let t = targets(3);
        let rr = AtomicUsize::new(0);
        let _busy0 = t[0].start(true);
        let _busy2 = t[2].start(true);
        for _ in 0..5 {
            assert_eq!(
                pick(Balance::LeastRequests, &t, 10, &rr, ctx(None)),
                Some(1)
            );
        }
    }

    #[test]
    fn user_hash_is_sticky_and_moves_only_the_users_of_a_lost_target() {
        let t = targets(3);
        let rr = AtomicUsize::new(0);
        let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
        let first: Vec<usize> = users
            .iter()
            .map(|u| pick(Balance::UserHash, &t, 10, &rr, ctx(Some(u.as_bytes()))).unwrap())
            .collect();
        for (u, want) in users.iter().zip(&first) {
            let again = pick(Balance::UserHash, &t, 10, &rr, ctx(Some(u.as_bytes())));
            assert_eq!(again, Some(*want));
        }
        for i in 0..3 {
            let share = first.iter().filter(|&&p| p == i).count();
            assert!(share > 50, "target {i} got {share} of 300 users");
        }
        t[2].set_healthy(false);
        for (u, was) in users.iter().zip(&first) {
            let now = pick(Balance::UserHash, &t, 10, &rr, ctx(Some(u.as_bytes()))).unwrap();
            if *was != 2 {
                assert_eq!(now, *was, "{u} moved although its target is up");
            } else {
                assert_ne!(now, 2);
            }
        }
    }

    #[test]
    fn hash_is_stable() {
        // A changed hash would move every user to another target after an upgrade.
        assert_eq!(hash64(b"alice"), hash64(b"alice"));
        assert_ne!(hash64(b"alice"), hash64(b"alicf"));
    }
}
