//! The exclusive lock every store file is held under, so two gateways never share one.
//!
//! `flock(LOCK_EX | LOCK_NB)`: the kernel drops it when the holder
//! exits, however it exits, so a `kill -9` never leaves a stale lock behind. The lock
//! belongs to the open file, not the name: compaction renames a new file over the store,
//! so the new file is locked before the rename, and an opener checks after locking that
//! the name still leads to the file it locked (otherwise it locked a file that was just
//! replaced, and tries again).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{io_err, DurableError};

/// How long an opener waits for a lock that another open file holds before refusing. A
/// gateway handing the store over (its shutdown finishing, its last tasks dropping the file)
/// lets go within moments; a second gateway running on the same store never does, so the
/// refusal below still comes, only this much later.
const LOCK_GRACE: Duration = Duration::from_secs(2);
/// Pause between two attempts while waiting out [`LOCK_GRACE`].
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// Takes the exclusive lock on `file` (opened from `path`), waiting up to [`LOCK_GRACE`]
/// for a holder that is letting go; when another open file still holds it, the error names
/// `path` and, where `/proc/locks` tells, the PID.
pub fn lock(file: &File, path: &Path) -> Result<(), DurableError> {
    let deadline = Instant::now() + LOCK_GRACE;
    loop {
        match try_flock(file) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(DurableError::Locked {
                    path: path.to_path_buf(),
                    holder: file
                        .metadata()
                        .ok()
                        .and_then(|m| holder_pid(m.dev(), m.ino())),
                })
            }
            Err(e) => return Err(io_err(path, "lock")(e)),
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`. (`File::try_lock` does the same from Rust 1.89; the crate
/// still builds with 1.85.)
#[allow(unsafe_code)]
fn try_flock(file: &File) -> io::Result<()> {
    // SAFETY: flock takes a file descriptor and flags and touches no memory of ours; the
    // descriptor stays valid for the call because `file` is borrowed across it.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `path` still names the file `file` has open.
pub fn still_named(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The PID holding a `flock` on the file (`dev`, `ino`), read from `/proc/locks` (Linux):
/// `1: FLOCK  ADVISORY  WRITE 4242 fd:01:123456 0 EOF`, device as hex major:minor.
fn holder_pid(dev: u64, ino: u64) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // glibc's gnu_dev_major / gnu_dev_minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    locks
        .lines()
        .find_map(|line| parse_holder(line, major, minor, ino))
}

fn parse_holder(line: &str, major: u64, minor: u64, ino: u64) -> Option<u32> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // Waiters are listed as `1: -> FLOCK ...`; only the holder counts.
    if fields.get(1) != Some(&"FLOCK") {
        return None;
    }
    let pid = fields.get(4)?.parse().ok()?;
    let mut id = fields.get(5)?.split(':');
    let (maj, min, i) = (id.next()?, id.next()?, id.next()?);
    let same = u64::from_str_radix(maj, 16).ok()? == major
        && u64::from_str_radix(min, 16).ok()? == minor
        && i.parse::<u64>().ok()? == ino;
    same.then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_file_is_refused_with_the_path_and_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let first = File::create(&path).unwrap();
        lock(&first, &path).unwrap();
        let second = File::open(&path).unwrap();
        let err = lock(&second, &path).unwrap_err();
        let DurableError::Locked { path: p, holder } = &err else {
            panic!("{err}");
        };
        assert_eq!(p, &path);
        assert_eq!(*holder, Some(std::process::id()));
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        lock(&second, &path).unwrap();
    }

    #[test]
    fn proc_locks_lines() {
        let line = "3: FLOCK  ADVISORY  WRITE 4242 fd:01:123456 0 EOF";
        assert_eq!(parse_holder(line, 0xfd, 1, 123456), Some(4242));
        assert_eq!(parse_holder(line, 0xfd, 1, 123457), None);
        assert_eq!(
            parse_holder(
                "3: -> FLOCK  ADVISORY  WRITE 9 fd:01:123456 0 EOF",
                0xfd,
                1,
                123456
            ),
            None
        );
        assert_eq!(
            parse_holder(
                "1: POSIX  ADVISORY  WRITE 9 fd:01:123456 0 EOF",
                0xfd,
                1,
                123456
            ),
            None
        );
    }
}
