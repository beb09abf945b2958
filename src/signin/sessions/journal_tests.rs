//! Tests of the session journal: replay, damage and recovery, locking, compaction.
use super::super::tests::{issued, rotate, session, state, NOW};
use super::super::Index;
use super::*;
use crate::signin::sessions::RefreshError;
use std::fs::OpenOptions;

fn samples() -> Vec<Change> {
    vec![
        Change::Start {
            id: [1; 16],
            user: "u-1 ünïcode".into(),
            access: issued(1),
            refresh: [1; 32],
            refresh_exp: NOW + 3600,
        },
        Change::Rotate {
            id: [1; 16],
            old: [1; 32],
            old_exp: NOW + 3600,
            next: [2; 32],
            next_exp: NOW + 7200,
            access: issued(2),
        },
        Change::End { id: [1; 16] },
        Change::Family {
            id: [3; 16],
            user: "u-3".into(),
            current: [3; 32],
            current_exp: NOW + 3600,
            access: vec![issued(3), issued(4)],
        },
        Change::Spent {
            digest: [5; 32],
            id: [3; 16],
            until: NOW + 10,
        },
    ]
}

fn encoded(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in changes {
        encode(&mut out, c);
    }
    out
}

fn decoded(body: &[u8]) -> (Vec<Change>, Scan) {
    let mut out = Vec::new();
    let s = scan(body, |c| out.push(c));
    (out, s)
}

#[test]
fn records_round_trip() {
    let body = encoded(&samples());
    let (got, s) = decoded(&body);
    assert_eq!(got, samples());
    assert_eq!(s.good_len, body.len());
    assert_eq!((s.damaged.len(), s.tail), (0, 0));
}

#[test]
fn every_single_bit_flip_of_a_record_is_rejected() {
    for c in samples() {
        let raw = encoded(std::slice::from_ref(&c));
        for bit in 0..raw.len() * 8 {
            let mut bad = raw.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decoded(&bad).1.records, 0, "bit {bit} of {c:?}");
        }
    }
}

#[test]
fn a_torn_tail_is_cut_and_a_damaged_middle_record_skipped() {
    let recs = samples();
    let body = encoded(&recs);
    let first = encoded(&recs[..1]).len();
    let last = encoded(&recs[4..]).len();
    // Half of the last record reached the disk.
    let torn = &body[..body.len() - last / 2];
    let (got, s) = decoded(torn);
    assert_eq!(got, recs[..4].to_vec());
    assert_eq!(s.tail, last - last / 2);
    assert_eq!(s.good_len, body.len() - last);
    // The body of the first record is damaged, its length intact: the rest loads.
    let mut damaged = body.clone();
    damaged[first - 6] ^= 0xff;
    let (got, s) = decoded(&damaged);
    assert_eq!(got, recs[1..].to_vec());
    assert_eq!((s.damaged.len(), s.tail), (1, 0));
}

#[test]
fn a_damaged_length_field_loses_only_its_record() {
    let recs = samples();
    let body = encoded(&recs);
    let first = encoded(&recs[..1]).len();
    let second = encoded(&recs[1..2]).len();
    // The second record's length claims more than it holds (and then less): the scan
    // finds the third record anyway.
    for len in [u32::MAX, 5, (second + 40) as u32] {
        let mut damaged = body.clone();
        damaged[first..first + 4].copy_from_slice(&len.to_le_bytes());
        let (got, s) = decoded(&damaged);
        let mut want = recs.clone();
        want.remove(1);
        assert_eq!(got, want, "length {len}");
        assert_eq!((s.damaged.len(), s.tail, s.good_len), (1, 0, body.len()));
    }
    // Zeroes (a block the file system never wrote) in the middle: the same.
    let mut zeroed = body.clone();
    zeroed[first..first + second].fill(0);
    let (got, s) = decoded(&zeroed);
    assert_eq!(got.len(), recs.len() - 1);
    assert_eq!((s.damaged.len(), s.tail), (1, 0));
    // Garbage after the last record is a torn tail, cut at the last intact record.
    let mut tail = body.clone();
    tail.extend_from_slice(&[0xff, 0x01, 0, 0, 7, 7, 7]);
    let (got, s) = decoded(&tail);
    assert_eq!((got.len(), s.tail, s.good_len), (recs.len(), 7, body.len()));
}

#[test]
fn garbage_never_panics() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let valid = encoded(&samples());
    for round in 0..5_000 {
        let mut buf: Vec<u8> = if round % 2 == 0 {
            (0..next() % 300).map(|_| next() as u8).collect()
        } else {
            let mut v = valid.clone();
            v.truncate((next() as usize) % (v.len() + 1));
            for _ in 0..(next() % 4) {
                if !v.is_empty() {
                    let i = (next() as usize) % v.len();
                    v[i] ^= next() as u8;
                }
            }
            v
        };
        buf.extend_from_slice(&[0xff; 3]);
        let s = scan(&buf, |_| {});
        assert_eq!(s.good_len + s.tail, buf.len());
    }
}

/// Opens the journal at `path` as of [`NOW`].
fn open(path: &Path) -> (JournalSessions, Loaded) {
    JournalSessions::open_at(path, NOW).expect("open journal")
}

fn index_state(j: &JournalSessions) -> Vec<String> {
    state(&j.inner.index.lock().unwrap())
}

#[test]
fn state_survives_reopen_including_spent_tokens_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log.sessions");
    let (j, loaded) = open(&path);
    assert_eq!(loaded.records, 0);
    j.execute(Op::Start(session("alice", 1), None), NOW)
        .unwrap();
    j.execute(Op::Start(session("alice", 2), None), NOW)
        .unwrap();
    j.execute(Op::Start(session("bob", 3), None), NOW).unwrap();
    j.execute(rotate(1, 4), NOW).unwrap();
    j.execute(Op::EndByAccess("bob".into(), [3; 16]), NOW)
        .unwrap();
    let before = index_state(&j);
    drop(j);

    let (j, loaded) = open(&path);
    assert_eq!((loaded.families, loaded.spent), (2, 1));
    assert_eq!(index_state(&j), before);
    // The spent token is still known as spent: reuse ends alice's first family.
    assert_eq!(
        j.execute(rotate(1, 9), NOW).unwrap(),
        Outcome::Rotated(Err(RefreshError::Reused(vec![issued(1), issued(4)])))
    );
    // Bob's family stayed ended.
    assert_eq!(
        j.execute(rotate(3, 8), NOW).unwrap(),
        Outcome::Rotated(Err(RefreshError::Invalid))
    );
    assert_eq!(
        j.execute(rotate(2, 5), NOW).unwrap(),
        Outcome::Rotated(Ok("alice".into()))
    );
}

#[test]
fn a_torn_last_record_loses_only_that_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (j, _) = open(&path);
    j.execute(Op::Start(session("alice", 1), None), NOW)
        .unwrap();
    j.execute(rotate(1, 2), NOW).unwrap();
    drop(j);
    let len = fs::metadata(&path).unwrap().len();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);

    let (j, loaded) = open(&path);
    assert_eq!((loaded.records, loaded.families, loaded.spent), (1, 1, 0));
    assert!(loaded.truncated > 0);
    // The rotation never completed: the old token is still the current one.
    assert_eq!(
        j.execute(rotate(1, 3), NOW).unwrap(),
        Outcome::Rotated(Ok("alice".into()))
    );
    drop(j);
    assert_eq!(open(&path).1.records, 2, "appends after the repair load");
}

#[test]
fn compaction_round_trip_keeps_the_state_and_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (j, _) = open(&path);
    for n in 0..50u8 {
        j.execute(Op::Start(session(&format!("u{n}"), n), None), NOW)
            .unwrap();
    }
    // Churn: ended families are dead weight in the file.
    for n in 0..40u8 {
        j.execute(Op::EndAll(format!("u{n}")), NOW).unwrap();
    }
    j.execute(rotate(45, 200), NOW).unwrap();
    let before = index_state(&j);
    let (bytes_before, bytes_after) = j.inner.compact(NOW).unwrap();
    assert!(bytes_after < bytes_before, "{bytes_after} < {bytes_before}");
    assert_eq!(fs::metadata(&path).unwrap().len(), bytes_after);
    assert!(!dir.path().join("j.tmp").exists());
    // Appends go to the new file.
    j.execute(rotate(200, 201), NOW).unwrap();
    let after = index_state(&j);
    drop(j);
    let (j, loaded) = open(&path);
    assert_eq!((loaded.families, loaded.spent), (10, 2));
    assert_eq!(index_state(&j), after);
    assert_ne!(before, after);
    assert_eq!(
        j.execute(rotate(45, 9), NOW).unwrap(),
        Outcome::Rotated(Err(RefreshError::Reused(vec![
            issued(45),
            issued(200),
            issued(201)
        ])))
    );
}

#[test]
fn a_file_that_is_not_a_journal_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    fs::write(&path, b"PCRVLOG\x01 a revocation log").unwrap();
    assert!(JournalSessions::open_at(&path, NOW).is_err());
    assert_eq!(fs::read(&path).unwrap(), b"PCRVLOG\x01 a revocation log");
}

#[test]
fn expired_state_is_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (j, _) = open(&path);
    j.execute(Op::Start(session("alice", 1), None), NOW)
        .unwrap();
    j.execute(rotate(1, 2), NOW).unwrap();
    drop(j);
    let (_, loaded) = JournalSessions::open_at(&path, NOW + 100_000).unwrap();
    assert_eq!((loaded.records, loaded.families, loaded.spent), (2, 0, 0));
}

/// Inserts, deletes and overwrites bytes at random offsets (many seeds): after a
/// recovering open the index is exactly what the intact records build, and an open
/// without `recover` refuses and changes nothing (or finds only a torn end).
#[test]
fn random_damage_loses_no_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    let changes: Vec<Change> = (0..120u32)
        .map(|n| {
            let b = n.to_le_bytes();
            Change::Start {
                id: [b[0], b[1], 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7],
                user: format!("user-{n}"),
                access: Issued {
                    key: [b[0], b[1], 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9],
                    exp: NOW + 600,
                },
                refresh: [b[0].wrapping_add(b[1]); 32],
                refresh_exp: NOW + 3600 + u64::from(n),
            }
        })
        .collect();
    let frames: Vec<Vec<u8>> = changes
        .iter()
        .map(|c| encoded(std::slice::from_ref(c)))
        .collect();
    let mut original = MAGIC.to_vec();
    frames.iter().for_each(|f| original.extend_from_slice(f));
    for seed in 1..=200u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 4 {
            let at = MAGIC.len() + (next() as usize) % (bytes.len() - MAGIC.len());
            let len = 1 + (next() as usize) % 80;
            match next() % 3 {
                0 => {
                    let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    bytes.splice(at..at, junk);
                }
                1 => {
                    bytes.drain(at..(at + len).min(bytes.len()));
                }
                _ => {
                    for b in bytes.iter_mut().skip(at).take(len) {
                        *b = next() as u8;
                    }
                }
            }
        }
        let mut want = Index::default();
        for (c, f) in changes.iter().zip(&frames) {
            if bytes.windows(f.len()).any(|w| w == &f[..]) {
                want.apply(c);
            }
        }
        want.sweep(NOW);
        let path = dir.path().join(format!("s{seed}"));
        fs::write(&path, &bytes).unwrap();
        match JournalSessions::open_at(&path, NOW) {
            Ok((j, _)) => {
                assert_eq!(index_state(&j), state(&want), "seed {seed}");
                continue;
            }
            Err(JournalError::Damaged { .. }) => {
                assert_eq!(fs::read(&path).unwrap(), bytes, "seed {seed}")
            }
            Err(e) => panic!("seed {seed}: {e}"),
        }
        let (j, _) = JournalSessions::open_with(&path, NOW, true).unwrap();
        assert_eq!(index_state(&j), state(&want), "seed {seed}");
        drop(j);
        let (j, loaded) = open(&path);
        assert_eq!((loaded.corrupt, loaded.truncated), (0, 0), "seed {seed}");
        assert_eq!(index_state(&j), state(&want), "seed {seed}");
    }
}

#[test]
fn a_second_open_of_the_same_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (j, _) = open(&path);
    let err = JournalSessions::open_at(&path, NOW).unwrap_err();
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    drop(j);
    open(&path);
}

#[test]
fn a_version_1_journal_is_converted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut v1 = b"PCSESSJ\x01".to_vec();
    for c in &samples()[..2] {
        let mut body = Vec::new();
        encode_body(&mut body, c);
        let len = (body.len() as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len);
        crc.update(&body);
        v1.extend_from_slice(&len);
        v1.extend_from_slice(&body);
        v1.extend_from_slice(&crc.finalize().to_le_bytes());
    }
    fs::write(&path, &v1).unwrap();
    let (_, loaded) = open(&path);
    assert_eq!((loaded.records, loaded.families), (2, 1));
    assert_eq!(&fs::read(&path).unwrap()[..MAGIC.len()], &MAGIC);
}

#[test]
fn journal_path_sits_beside_the_log() {
    assert_eq!(
        journal_path(Path::new("data/revocations.log")),
        PathBuf::from("data/revocations.log.sessions")
    );
}
