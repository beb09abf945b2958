//! Tests of the revocation log: replay, damage and recovery, locking, compaction.
use super::*;
use crate::revocation::dict::{digest, Entry, Kind};
use std::fs::OpenOptions;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::{span, Event, Level, Metadata};

/// Counts WARN events, so tests can assert that a repair was reported.
struct WarnCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, e: &Event<'_>) {
        if *e.metadata().level() == Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

fn warnings<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let n = Arc::new(AtomicUsize::new(0));
    let out = tracing::subscriber::with_default(WarnCounter(Arc::clone(&n)), f);
    (out, n.load(Ordering::SeqCst))
}

const NOW: u64 = 1_000_000;

fn open(path: &Path) -> (Log, Replay) {
    match Log::open_at(path, NOW, 0) {
        Ok(x) => x,
        Err(e) => panic!("open {}: {e}", path.display()),
    }
}

fn key(n: u64) -> crate::revocation::Key {
    digest(&n.to_le_bytes())
}

/// A mix of every record kind, all live at NOW.
fn workload(n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| match i % 10 {
            0..=5 => Record::RevokeToken {
                key: key(i),
                exp: NOW + i,
            },
            6 => Record::UnrevokeToken { key: key(i - 6) },
            7 | 8 => Record::RevokeSubject {
                key: key(i),
                revoked_before: i,
                expires: NOW + 10 * i,
            },
            _ => Record::UnrevokeSubject { key: key(i - 1) },
        })
        .collect()
}

fn listing(d: &Dictionary) -> Vec<Entry> {
    let mut all = d.page(Kind::Token, None, usize::MAX);
    all.extend(d.page(Kind::Subject, None, usize::MAX));
    all
}

fn applied(records: &[Record]) -> Vec<Entry> {
    let d = Dictionary::new();
    records.iter().for_each(|r| r.apply(&d));
    listing(&d)
}

fn write_log(path: &Path, records: &[Record]) {
    let (log, _) = open(path);
    for chunk in records.chunks(7) {
        log.append(chunk).unwrap();
    }
}

#[test]
fn reopen_rebuilds_the_same_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/revocations.log");
    let recs = workload(500);
    write_log(&path, &recs);
    let ((_, replay), warned) = warnings(|| open(&path));
    assert_eq!(warned, 0);
    assert_eq!(replay.records, 500);
    assert_eq!((replay.corrupt, replay.truncated), (0, 0));
    assert_eq!(listing(&replay.dict), applied(&recs));
    let size = fs::metadata(&path).unwrap().len();
    assert_eq!(size, (HEADER_LEN + 500 * RECORD_LEN) as u64);
}

#[test]
fn replay_skips_expired_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let recs = [
        Record::RevokeToken {
            key: key(1),
            exp: NOW - 100,
        },
        Record::RevokeToken {
            key: key(2),
            exp: NOW + 1,
        },
        Record::RevokeSubject {
            key: key(3),
            revoked_before: 1,
            expires: NOW - 100,
        },
    ];
    write_log(&path, &recs);
    let (_, r) = open(&path);
    assert_eq!(
        (r.dict.len_tokens(), r.dict.len_subjects(), r.expired),
        (1, 0, 2)
    );
    // Within the leeway they are still in force.
    let (_, r) = Log::open_at(&path, NOW, 100).unwrap();
    assert_eq!(
        (r.dict.len_tokens(), r.dict.len_subjects(), r.expired),
        (2, 1, 0)
    );
}

#[test]
fn torn_last_record_is_cut_at_every_offset_and_the_log_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.log");
    let recs = workload(40);
    write_log(&full, &recs);
    let bytes = fs::read(&full).unwrap();
    let last_start = HEADER_LEN + 39 * RECORD_LEN;
    assert_eq!(bytes.len(), last_start + RECORD_LEN);

    for cut in 0..RECORD_LEN {
        let path = dir.path().join(format!("cut{cut}.log"));
        fs::write(&path, &bytes[..last_start + cut]).unwrap();
        let ((log, replay), warned) = warnings(|| open(&path));
        assert_eq!(replay.records, 39, "cut {cut}");
        assert_eq!(replay.truncated, cut);
        assert_eq!(warned, usize::from(cut > 0), "cut {cut}");
        assert_eq!(listing(&replay.dict), applied(&recs[..39]));
        assert_eq!(fs::metadata(&path).unwrap().len(), last_start as u64);

        log.append(&recs[39..]).unwrap();
        drop(log);
        let ((_, replay), warned) = warnings(|| open(&path));
        assert_eq!((replay.records, warned), (40, 0), "cut {cut}");
        assert_eq!(listing(&replay.dict), applied(&recs));
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }
}

#[test]
fn damaged_whole_records_at_the_end_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let recs = workload(10);
    write_log(&path, &recs);
    // A crash can extend the file before the data lands: zeros where records should be.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0u8; 2 * RECORD_LEN + 5]).unwrap();
    drop(f);
    let ((_, replay), warned) = warnings(|| open(&path));
    assert_eq!(
        (replay.records, replay.corrupt, replay.truncated),
        (10, 0, 2 * RECORD_LEN + 5)
    );
    assert_eq!(warned, 1);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        (HEADER_LEN + 10 * RECORD_LEN) as u64
    );
}

#[test]
fn damage_in_the_middle_refuses_the_open_and_recover_keeps_every_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let recs = workload(20);
    write_log(&path, &recs);
    let mut bytes = fs::read(&path).unwrap();
    let at = HEADER_LEN + 4 * RECORD_LEN + 20;
    bytes[at] ^= 0x40; // record 4 (a RevokeToken)
    fs::write(&path, &bytes).unwrap();

    // Refused, naming the file, the offset and the way out; the file untouched.
    let err = Log::open_at(&path, NOW, 0).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, LogError::Damaged { first_offset, .. } if first_offset == (HEADER_LEN + 4 * RECORD_LEN) as u64),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("portcullis run --recover"), "{msg}");
    assert!(msg.contains("recover = true"), "{msg}");
    assert_eq!(fs::read(&path).unwrap(), bytes);

    let ((log, replay), warned) = warnings(|| Log::open_with(&path, NOW, 0, true).unwrap());
    assert_eq!(warned, 1);
    assert_eq!(
        (replay.records, replay.corrupt, replay.truncated),
        (19, 1, 0)
    );
    let mut without = recs.clone();
    without.remove(4);
    assert_eq!(listing(&replay.dict), applied(&without));
    // The damaged original is preserved beside the log, byte for byte...
    let preserved = replay.recovery.preserved.clone().unwrap();
    assert!(preserved
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("r.log.damaged-"));
    assert_eq!(fs::read(&preserved).unwrap(), bytes);
    // ...the log now holds the intact records only, and appends land after them.
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        (HEADER_LEN + 19 * RECORD_LEN) as u64
    );
    let extra = Record::RevokeToken {
        key: key(999),
        exp: NOW + 5,
    };
    log.append_and_apply(&[extra], &replay.dict).unwrap();
    drop(log);
    let ((_, again), warned) = warnings(|| open(&path));
    assert_eq!((again.corrupt, warned), (0, 0));
    without.push(extra);
    assert_eq!(listing(&again.dict), applied(&without));
}

/// Inserts, deletes and overwrites bytes at random offsets (many seeds): every record
/// whose bytes survived intact is in force after a recovering open, and an open without
/// `recover` either succeeds with all of them (a torn end only) or refuses and changes
/// nothing.
#[test]
fn random_damage_loses_no_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.log");
    let n = 200u64;
    let recs: Vec<Record> = (0..n)
        .map(|i| Record::RevokeToken {
            key: key(i),
            exp: NOW + 1000 + i,
        })
        .collect();
    write_log(&clean, &recs);
    let original = fs::read(&clean).unwrap();
    let encoded: Vec<Vec<u8>> = recs.iter().map(Record::encode).collect();
    for seed in 1..=300u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 4 {
            // Past the header: a damaged header is a different refusal.
            let at = HEADER_LEN + (next() as usize) % (bytes.len() - HEADER_LEN);
            let len = 1 + (next() as usize) % 60;
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
        let present: std::collections::HashSet<&[u8]> = bytes.windows(RECORD_LEN).collect();
        let intact: Vec<usize> = (0..n as usize)
            .filter(|&i| present.contains(&encoded[i][..]))
            .collect();
        let path = dir.path().join(format!("s{seed}.log"));
        fs::write(&path, &bytes).unwrap();
        match Log::open_at(&path, NOW, 0) {
            Ok((_, replay)) => {
                for &i in &intact {
                    assert!(
                        replay.dict.is_revoked(key(i as u64), None, None).is_some(),
                        "seed {seed} record {i}"
                    );
                }
                continue;
            }
            Err(LogError::Damaged { .. }) => {
                assert_eq!(fs::read(&path).unwrap(), bytes, "seed {seed}")
            }
            Err(e) => panic!("seed {seed}: {e}"),
        }
        let (log, replay) = Log::open_with(&path, NOW, 0, true).unwrap();
        for &i in &intact {
            assert!(
                replay.dict.is_revoked(key(i as u64), None, None).is_some(),
                "seed {seed} record {i}"
            );
        }
        assert_eq!(
            fs::read(replay.recovery.preserved.as_ref().unwrap()).unwrap(),
            bytes
        );
        drop(log);
        // The recovered file opens cleanly with the same records.
        let (_, again) = open(&path);
        assert_eq!(listing(&again.dict), listing(&replay.dict), "seed {seed}");
    }
}

#[test]
fn a_second_open_of_the_same_log_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let (log, replay) = open(&path);
    let err = Log::open_at(&path, NOW, 0).unwrap_err();
    assert!(
        matches!(&err, LogError::Locked { holder: Some(pid), .. } if *pid == std::process::id()),
        "{err}"
    );
    // Compaction swaps the file under the name: the lock goes with it.
    log.append_and_apply(&workload(30), &replay.dict).unwrap();
    log.compact(&replay.dict, NOW, 0).unwrap();
    assert!(matches!(
        Log::open_at(&path, NOW, 0),
        Err(LogError::Locked { .. })
    ));
    drop(log);
    assert_eq!(open(&path).1.dict.len_tokens(), replay.dict.len_tokens());
}

#[test]
fn a_version_1_log_is_converted_and_its_original_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let recs = workload(30);
    let mut v1 = b"PCRVLOG\x01".to_vec();
    for r in &recs {
        v1.extend_from_slice(&r.encode_wire());
    }
    fs::write(&path, &v1).unwrap();
    let (_, replay) = open(&path);
    assert_eq!(listing(&replay.dict), applied(&recs));
    assert_eq!(fs::read(&path).unwrap()[..HEADER_LEN], MAGIC);
    let kept: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("r.log.v1-"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(fs::read(kept[0].path()).unwrap(), v1);
}

#[test]
fn compaction_keeps_the_live_set_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let mut recs = workload(300);
    recs.push(Record::RevokeToken {
        key: key(7777),
        exp: NOW - 10,
    });
    recs.push(Record::RevokeSubject {
        key: key(8888),
        revoked_before: 1,
        expires: NOW - 10,
    });
    let (log, replay) = open(&path);
    log.append_and_apply(&recs, &replay.dict).unwrap();
    let before = log.len_bytes();
    let stats = log.compact(&replay.dict, NOW, 0).unwrap();
    drop(log);

    let live: Vec<Entry> = applied(&recs)
        .into_iter()
        .filter(|e| e.key() != key(7777) && e.key() != key(8888))
        .collect();
    assert_eq!(stats.live, live.len());
    assert_eq!(stats.bytes_before, before);
    assert_eq!(
        stats.bytes_after,
        (HEADER_LEN + live.len() * RECORD_LEN) as u64
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), stats.bytes_after);
    let (_, again) = Log::open_at(&path, NOW, 1000).unwrap();
    assert_eq!(again.expired, 0, "expired entries were not written");
    assert_eq!(listing(&again.dict), live);
    assert!(!Path::new(&format!("{}.tmp", path.display())).exists());
}

#[test]
fn appends_during_compaction_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let (log, replay) = open(&path);
    let dict = replay.dict;
    log.append_and_apply(&workload(2000), &dict).unwrap();
    let recs: Vec<Vec<Record>> = (0..4u64)
        .map(|t| workload(400).into_iter().map(|r| shift(r, t)).collect())
        .collect();
    std::thread::scope(|s| {
        for mine in &recs {
            let (log, dict) = (&log, &dict);
            s.spawn(move || {
                for r in mine {
                    log.append_and_apply(std::slice::from_ref(r), dict).unwrap();
                }
            });
        }
        for _ in 0..5 {
            log.compact(&dict, NOW, 0).unwrap();
        }
    });
    drop(log);
    let (_, again) = open(&path);
    assert_eq!(listing(&again.dict), listing(&dict));
    assert!(again.dict.len_tokens() > 4 * 200);
}

/// Moves a record to keys of its own per thread.
fn shift(r: Record, t: u64) -> Record {
    let k = |k: crate::revocation::Key| {
        let mut k = k;
        k[0] ^= 0x80 | t as u8;
        k
    };
    match r {
        Record::RevokeToken { key, exp } => Record::RevokeToken { key: k(key), exp },
        Record::UnrevokeToken { key } => Record::UnrevokeToken { key: k(key) },
        Record::RevokeSubject {
            key,
            revoked_before,
            expires,
        } => Record::RevokeSubject {
            key: k(key),
            revoked_before,
            expires,
        },
        Record::UnrevokeSubject { key } => Record::UnrevokeSubject { key: k(key) },
    }
}

#[test]
fn a_file_that_is_not_a_log_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    fs::write(&path, b"[revocation]\nstore = \"x\"\n").unwrap();
    let err = Log::open_at(&path, NOW, 0).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Header {
                cause: HeaderError::NotA(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"[revocation]\nstore = \"x\"\n");
}

#[test]
fn partial_header_and_stale_tmp_are_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    fs::write(&path, &MAGIC[..3]).unwrap();
    let tmp = dir.path().join("r.log.tmp");
    fs::write(&tmp, b"half a compaction").unwrap();
    let (log, replay) = open(&path);
    assert_eq!(replay.records, 0);
    assert!(!tmp.exists());
    assert_eq!(fs::read(&path).unwrap(), MAGIC);
    log.append(&workload(3)).unwrap();
    drop(log);
    assert_eq!(open(&path).1.records, 3);
}

#[test]
fn needs_compaction_tracks_dead_weight() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(&dir.path().join("r.log"));
    let churn: Vec<Record> = (0..40_000)
        .flat_map(|i| {
            [
                Record::RevokeToken {
                    key: key(i),
                    exp: NOW,
                },
                Record::UnrevokeToken { key: key(i) },
            ]
        })
        .collect();
    assert!(!log.needs_compaction(0));
    log.append(&churn).unwrap();
    assert!(log.needs_compaction(0));
    assert!(!log.needs_compaction(80_000));
}
