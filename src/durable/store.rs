//! Opening a store file: lock, read, check the header, scan, and decide what to do with
//! what does not parse (cut a torn final write; refuse other damage unless told to
//! recover, then preserve the damaged file and keep every intact record). Also the file
//! replacement that recovery, format upgrades and compaction share.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::frame::{self, Damage};
use super::lock::{lock, still_named};
use super::{io_err, sibling, sync_parent, DurableError, HeaderError};

/// What kind of store a file holds.
#[derive(Debug, Clone, Copy)]
pub struct FileKind {
    /// For messages: "revocation log", "session journal".
    pub name: &'static str,
    /// The file's first bytes; the last one is the format version.
    pub header: [u8; 8],
    /// Largest record payload this kind writes.
    pub max_payload: usize,
}

pub const HEADER_LEN: usize = 8;

/// A locked store file and its bytes, as [`open_locked`] found it.
#[derive(Debug)]
pub struct Opened {
    pub path: PathBuf,
    pub file: File,
    pub bytes: Vec<u8>,
    /// Where compaction writes the next version of the file.
    pub tmp_path: PathBuf,
}

/// The state of a file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The current format; records start at [`HEADER_LEN`].
    Valid,
    /// Empty, or a prefix of the header: the file was created and the process died before
    /// the header reached the disk. Holds no record, so it is safe to rewrite.
    Incomplete,
    /// This kind of store, in another format version: the caller converts it or refuses.
    Version(u8),
}

pub fn check_header(bytes: &[u8], kind: &FileKind) -> Result<Header, HeaderError> {
    let magic = &kind.header[..HEADER_LEN - 1];
    if bytes.len() < HEADER_LEN {
        return if kind.header.starts_with(bytes) {
            Ok(Header::Incomplete)
        } else {
            Err(HeaderError::NotA(kind.name))
        };
    }
    if &bytes[..HEADER_LEN - 1] != magic {
        return Err(HeaderError::NotA(kind.name));
    }
    match bytes[HEADER_LEN - 1] {
        v if v == kind.header[HEADER_LEN - 1] => Ok(Header::Valid),
        v => Ok(Header::Version(v)),
    }
}

/// Opens (creating it and its folder) the store file at `path` under its exclusive lock,
/// and reads it whole. First removes the `.tmp` sibling compaction writes to, a leftover of
/// one that died before its rename (the file itself is whole then); only once the lock is
/// held, since otherwise it could be another process's compaction in progress.
pub fn open_locked(path: &Path) -> Result<Opened, DurableError> {
    let tmp_path = sibling(path, ".tmp");
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err(path, "create folder"))?;
    }
    // A compaction elsewhere may rename a new file over `path` between our open and our
    // lock; then the lock we got is on the replaced file, and we try again.
    let mut attempts = 0;
    let mut file = loop {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err(path, "open"))?;
        lock(&file, path)?;
        attempts += 1;
        if still_named(&file, path) || attempts >= 5 {
            break file;
        }
    };
    // Only a leftover that exists is removed: on a read-only file system unlinking even a
    // missing file fails (EROFS before the lookup), which used to be reported as a failure
    // to remove a file that was never there. Then the folder is checked the way compaction
    // will use it, so a folder the gateway cannot write is named as that, at start.
    if fs::symlink_metadata(&tmp_path).is_ok() {
        fs::remove_file(&tmp_path).map_err(io_err(&tmp_path, "remove stale compaction file"))?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_path)
        .and_then(|_| fs::remove_file(&tmp_path))
        .map_err(io_err(
            path,
            "the store's folder is not writable (compaction writes and renames files beside the store)",
        ))?;
    let size = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(io_err(path, "read"))?;
    Ok(Opened {
        path: path.to_path_buf(),
        file,
        bytes,
        tmp_path,
    })
}

/// Makes the file hold only its header, durably: for a new file, or one whose creator died
/// before its header was durable.
pub fn reset_to_header(opened: &mut Opened, kind: &FileKind) -> Result<(), DurableError> {
    let path = &opened.path;
    opened.file.set_len(0).map_err(io_err(path, "truncate"))?;
    opened
        .file
        .write_all(&kind.header)
        .map_err(io_err(path, "write header"))?;
    opened.file.sync_all().map_err(io_err(path, "fsync"))?;
    sync_parent(path).map_err(io_err(path, "fsync folder"))?;
    opened.bytes = kind.header.to_vec();
    Ok(())
}

/// Creates the compaction file at `tmp_path` (replacing a leftover), locked, so that the
/// lock is already held when it is renamed over the store.
pub fn create_tmp(tmp_path: &Path) -> Result<File, DurableError> {
    let _ = fs::remove_file(tmp_path);
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(tmp_path)
        .map_err(io_err(tmp_path, "create"))?;
    lock(&file, tmp_path)?;
    Ok(file)
}

/// Replaces the store at `opened.path` with `contents` (tmp file, fsync, rename, fsync of
/// the folder), keeping the lock, and returns the new file.
pub fn replace(opened: &mut Opened, contents: Vec<u8>) -> Result<(), DurableError> {
    let tmp_path = &opened.tmp_path;
    let write = || -> Result<File, DurableError> {
        let file = create_tmp(tmp_path)?;
        (&file)
            .write_all(&contents)
            .and_then(|()| file.sync_all())
            .map_err(io_err(tmp_path, "write"))?;
        fs::rename(tmp_path, &opened.path).map_err(io_err(&opened.path, "rename"))?;
        sync_parent(&opened.path).map_err(io_err(&opened.path, "fsync folder"))?;
        Ok(file)
    };
    let file = write().inspect_err(|_| {
        let _ = fs::remove_file(tmp_path);
    })?;
    opened.file = file;
    opened.bytes = contents;
    Ok(())
}

/// What opening found and did about damage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Intact records loaded.
    pub records: usize,
    /// Bytes of torn final write cut off the end.
    pub truncated: usize,
    /// Damaged stretches (file offsets), skipped under `recover`.
    pub damaged: Vec<Damage>,
    /// Where the damaged file was preserved, when it was.
    pub preserved: Option<PathBuf>,
}

impl Recovery {
    pub fn damaged_bytes(&self) -> usize {
        self.damaged.iter().map(|d| d.len).sum()
    }
}

/// Scans the records after the header, handing each payload to `accept`, then deals with
/// what did not parse:
/// * a torn final write is cut off, with a warning, so the next append lands on a record
///   boundary;
/// * any other damage, without `recover`, is an error ([`DurableError::Damaged`]) and the
///   file is left as it was;
/// * with `recover`, the whole file is first copied to `<path>.damaged-<unix time>`
///   (fsynced), then the store is rewritten to its intact records, and the damage is
///   reported with counts and offsets.
///
/// Returns the file's length afterwards (where appends go).
pub fn load(
    opened: &mut Opened,
    kind: &FileKind,
    recover: bool,
    accept: impl FnMut(&[u8]) -> bool,
) -> Result<(u64, Recovery), DurableError> {
    let body = opened.bytes.get(HEADER_LEN..).unwrap_or_default();
    let found = frame::scan(body, kind.max_payload, accept);
    let path = opened.path.clone();
    let mut recovery = Recovery {
        records: found.records,
        ..Recovery::default()
    };
    let mut damaged: Vec<Damage> = found
        .damaged
        .iter()
        .map(|d| Damage {
            offset: d.offset + HEADER_LEN,
            len: d.len,
        })
        .collect();
    if !found.tail_torn {
        damaged.push(Damage {
            offset: HEADER_LEN + found.good_len,
            len: found.tail,
        });
    }
    if let Some(first) = damaged.first() {
        let total: usize = damaged.iter().map(|d| d.len).sum();
        if !recover {
            return Err(DurableError::Damaged {
                kind: kind.name,
                path,
                first_offset: first.offset as u64,
                stretches: damaged.len(),
                damaged_bytes: total as u64,
                records: found.records,
            });
        }
        let preserved = preserve(&path, &opened.bytes, "damaged")?;
        let mut contents = kind.header.to_vec();
        for &(start, end) in &found.runs {
            contents.extend_from_slice(&body[start..end]);
        }
        let offsets: Vec<String> = damaged
            .iter()
            .take(20)
            .map(|d| format!("{}+{}", d.offset, d.len))
            .collect();
        replace(opened, contents)?;
        tracing::warn!(
            path = %path.display(),
            file = kind.name,
            records = found.records,
            damaged_stretches = damaged.len(),
            damaged_bytes = total,
            offsets = %offsets.join(","),
            preserved = %preserved.display(),
            "recovered a damaged {}: kept every intact record, dropped the damaged bytes \
             (offset+length) from the store, the original is preserved",
            kind.name
        );
        recovery.damaged = damaged;
        recovery.preserved = Some(preserved);
        return Ok((opened.bytes.len() as u64, recovery));
    }
    if found.tail > 0 {
        let good_end = (HEADER_LEN + found.good_len) as u64;
        tracing::warn!(
            path = %path.display(),
            file = kind.name,
            torn_bytes = found.tail,
            kept_records = found.records,
            "{} ends in a torn write (a crash during an append); cutting it off",
            kind.name
        );
        opened
            .file
            .set_len(good_end)
            .map_err(io_err(&path, "truncate torn tail"))?;
        opened.file.sync_all().map_err(io_err(&path, "fsync"))?;
        recovery.truncated = found.tail;
        return Ok((good_end, recovery));
    }
    Ok((opened.bytes.len() as u64, recovery))
}

/// Copies `bytes` to a new `<path>.<tag>-<unix time>[-n]` beside the store, durably.
pub fn preserve(path: &Path, bytes: &[u8], tag: &str) -> Result<PathBuf, DurableError> {
    let now = crate::clock::unix_now();
    for n in 0..1000 {
        let suffix = match n {
            0 => format!(".{tag}-{now}"),
            n => format!(".{tag}-{now}-{n}"),
        };
        let copy = sibling(path, &suffix);
        let file = match OpenOptions::new().write(true).create_new(true).open(&copy) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&copy, "create damaged copy")(e)),
        };
        (&file)
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_parent(&copy))
            .map_err(io_err(&copy, "write damaged copy"))?;
        return Ok(copy);
    }
    Err(io_err(path, "name damaged copy")(io::Error::other(
        "too many damaged copies this second",
    )))
}

/// What a compaction's swap decided.
pub enum Swap {
    /// Nothing changed; appends go on to the old file.
    Keep(DurableError),
    /// The new file is in place under the store's name: appends go to it from now on. If
    /// `durable` is an error, the switch may not survive a crash, so the committer stops
    /// accepting writes.
    Replace {
        file: File,
        end: u64,
        durable: Result<(), DurableError>,
    },
}

/// The end of a compaction: copies the bytes appended to `old` between `base` and `end`
/// onto the fsynced snapshot `tmp` (at `tmp_path`, made by [`create_tmp`]), fsyncs, renames
/// it over `path`, and fsyncs the folder. Runs with appends held.
pub fn swap_in(path: &Path, tmp_path: &Path, old: &File, base: u64, end: u64, tmp: File) -> Swap {
    let copy = || -> io::Result<u64> {
        let tail_len = end.saturating_sub(base);
        let mut tail = Vec::with_capacity(usize::try_from(tail_len).unwrap_or(0));
        let mut old = old;
        old.seek(SeekFrom::Start(base))?;
        old.take(tail_len).read_to_end(&mut tail)?;
        if tail.len() as u64 != tail_len {
            let msg = "store file is shorter than what was written to it";
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        (&tmp).write_all(&tail)?;
        tmp.sync_data()?;
        tmp.metadata().map(|m| m.len())
    };
    let new_end = match copy() {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(tmp_path);
            return Swap::Keep(io_err(tmp_path, "copy appended records")(e));
        }
    };
    if let Err(e) = fs::rename(tmp_path, path) {
        let _ = fs::remove_file(tmp_path);
        return Swap::Keep(io_err(path, "rename compacted file")(e));
    }
    // If the folder is not synced the rename may not survive a crash, and appends to the
    // new file would be lost with it: the committer then refuses further writes.
    Swap::Replace {
        file: tmp,
        end: new_end,
        durable: sync_parent(path).map_err(io_err(path, "fsync folder")),
    }
}
