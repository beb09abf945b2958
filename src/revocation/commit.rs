//! Queuing revocation records on the durable group commit (`crate::durable::commit`):
//! framed into the pending batch and applied to the dictionary under the committer's
//! lock, so memory and file agree on the order of changes.

use crate::durable::Committer;

use super::dict::Dictionary;
use super::log::LogError;
use super::record::{Record, RECORD_LEN};

/// Appends `records` (applying them to `dict` in file order, if given) and returns once
/// they are written and fsynced.
pub(crate) fn commit(
    committer: &Committer,
    records: &[Record],
    dict: Option<&Dictionary>,
) -> Result<(), LogError> {
    if records.is_empty() {
        return Ok(());
    }
    committer.commit_with(|pending| {
        pending.reserve(records.len() * RECORD_LEN);
        for r in records {
            r.encode_into(pending);
            if let Some(dict) = dict {
                r.apply(dict);
            }
        }
    })
}
#[cfg(test)]
mod tests {
    use super::super::dict::digest;
    use super::super::log::Log;
    use super::*;

    #[test]
    fn concurrent_appends_from_8_threads_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let (log, _) = Log::open_at(&path, 0, 0).unwrap();
        let key = |t: u64, i: u64| digest(&(t * 1000 + i).to_le_bytes());
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..50 {
                        let r = Record::RevokeToken {
                            key: key(t, i),
                            exp: 10 + i,
                        };
                        log.append(&[r]).unwrap();
                    }
                });
            }
        });
        drop(log);
        let (_, replay) = Log::open_at(&path, 0, 0).unwrap();
        assert_eq!(replay.records, 400);
        for t in 0..8u64 {
            for i in 0..50 {
                assert!(replay.dict.is_revoked(key(t, i), None, None).is_some());
            }
        }
    }

    #[test]
    fn dictionary_follows_file_order_under_contention() {
        // Each round, threads released together revoke and unrevoke one key; the dictionary
        // must then agree with the last record the file holds for it, as a replay would.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let (log, replay) = Log::open_at(&path, 0, 0).unwrap();
        let dict = replay.dict;
        let key = digest(b"contended");
        for round in 0..100 {
            let start = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                for t in 0..4 {
                    let (log, dict, start) = (&log, &dict, &start);
                    s.spawn(move || {
                        let r = if t % 2 == 0 {
                            Record::RevokeToken { key, exp: 99 }
                        } else {
                            Record::UnrevokeToken { key }
                        };
                        start.wait();
                        log.append_and_apply(&[r], dict).unwrap();
                    });
                }
            });
            let bytes = std::fs::read(&path).unwrap();
            let (records, _) = super::super::record::decode_file(&bytes).unwrap();
            let revoked_on_disk = matches!(records.last(), Some(Record::RevokeToken { .. }));
            let revoked_in_memory = dict.is_revoked(key, None, None).is_some();
            assert_eq!(revoked_in_memory, revoked_on_disk, "round {round}");
        }
    }
}
