//! The append-only durable file every embedded store is built on (the revocation log, the
//! sign-in session journal): framing and the resynchronising scan (`frame`), opening and
//! recovery after damage (`store`), group commit with back-off after a failed write
//! (`commit`), and the exclusive lock that keeps a second process off a store (`lock`).
//!
//! A shared leaf: it imports nothing else from the crate, and the stores above it bring
//! only their payload encoding.
//!
//! # The promises
//!
//! * A change is acknowledged only after its batch is written and fsynced.
//! * Opening never deletes bytes it could not parse, except a torn final write (what a
//!   crash in the middle of an append leaves). Any other damage stops the open with an
//!   error naming the file, the byte offset and how to recover; recovery keeps every
//!   intact record and first preserves the whole damaged file beside the store
//!   (`<file>.damaged-<unix time>`).
//! * One process per store file: `flock` taken at open, carried over compaction.
//! * Compaction is write-tmp / fsync / rename / fsync-folder: a crash leaves the old or the
//!   new file whole.

pub mod commit;
pub mod frame;
pub mod lock;
pub mod store;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use commit::Committer;
pub use store::{FileKind, Opened, Recovery, Swap};

/// Each message names its cause itself, and the cause is not also chained as `source()`:
/// a chain printer (`{:#}`, as `main` prints a start-up error) would otherwise print it twice.
#[derive(Debug, Error)]
pub enum DurableError {
    #[error("store file {}: {op}: {cause}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        cause: io::Error,
    },
    #[error("store file {}: {cause}", path.display())]
    Header { path: PathBuf, cause: HeaderError },
    #[error(
        "store file {} is in use by another process{}; one store file serves one gateway \
         (stop the other process first, or give each its own store path)",
        path.display(),
        holder.map(|p| format!(" (PID {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    #[error(
        "{kind} {} is damaged: {damaged_bytes} bytes in {stretches} stretch(es) hold no intact \
         record, the first at byte offset {first_offset}; {records} intact records were found. \
         Nothing was changed. To start anyway, keeping every intact record and preserving the \
         damaged file as {}.damaged-<time>, run `portcullis run --recover` (or set \
         `[revocation] recover = true`)",
        path.display(),
        path.display()
    )]
    Damaged {
        kind: &'static str,
        path: PathBuf,
        first_offset: u64,
        stretches: usize,
        damaged_bytes: u64,
        records: usize,
    },
    /// The last write failed and the back-off delay has not passed: this change was not
    /// queued, nothing changed.
    #[error("store file {}: refusing writes for now after a failed write ({reason}); nothing was stored, retrying with back-off", path.display())]
    Refused { path: PathBuf, reason: String },
    /// A write or fsync failed; appends are refused until a retry after back-off succeeds.
    #[error("store file {}: write failed ({reason}); the change was not stored durably, retrying with back-off", path.display())]
    WriteFailed { path: PathBuf, reason: String },
    /// The file in use may not be the one under the store's name: nothing more is written.
    #[error("store file {} refuses writes after an earlier failure ({reason}); restart to recover", path.display())]
    Failed { path: PathBuf, reason: String },
}

/// Why a file's first bytes are not a store this build can read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not a portcullis {0} (bad magic bytes)")]
    NotA(&'static str),
    #[error("{kind} format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        kind: &'static str,
        found: u8,
        supported: u8,
    },
}

pub fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> DurableError + 'a {
    move |cause| DurableError::Io {
        path: path.to_path_buf(),
        op,
        cause,
    }
}

/// Makes a rename or a new directory entry in `path`'s folder durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// `path` with `suffix` appended to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: `main` prints a start-up error with its chain (`{:#}`); a cause both in the
    /// message and chained as `source()` came out twice.
    #[test]
    fn a_cause_is_named_once_in_a_printed_chain() {
        let header = DurableError::Header {
            path: PathBuf::from("r.log"),
            cause: HeaderError::NotA("revocation log"),
        };
        let text = format!("{:#}", anyhow::Error::from(header));
        assert_eq!(text.matches("bad magic bytes").count(), 1, "{text}");
        let io = io_err(Path::new("r.log"), "open")(io::Error::other("disk on fire"));
        let text = format!("{:#}", anyhow::Error::from(io));
        assert_eq!(text.matches("disk on fire").count(), 1, "{text}");
    }

    /// A leftover compaction file is removed at open; no leftover is not a failure.
    #[test]
    fn open_removes_a_leftover_tmp_and_minds_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        drop(store::open_locked(&path).unwrap());
        std::fs::write(sibling(&path, ".tmp"), b"half a compaction").unwrap();
        drop(store::open_locked(&path).unwrap());
        assert!(!sibling(&path, ".tmp").exists());
    }
}
