//! The users file (`[signin] users_file`): who may sign in.
//!
//! TOML (`[[users]]` tables) or JSON (`{"users": [...]}`), chosen by the file's extension.
//! Each entry holds an id (what the gateway puts in `sub`), a username (what the client
//! types) and a password hash: argon2id as a PHC string, or bcrypt (`$2b$`, `$2a$`, `$2y$`)
//! for users imported from another system. `portcullis users add|passwd|remove` edits the
//! file with [`UsersFile::save`], which replaces it atomically with mode 0600. Checking a
//! password against an entry is sign-in's job (`signin::users`).

use std::path::{Path, PathBuf};

use argon2::password_hash::PasswordHash;
use serde::{Deserialize, Serialize};

/// Why a users file cannot be used; each names the file.
/// Causes are named in the message, not chained as `source()`: a chain printer (`{:#}`, as
/// `main` prints a start-up error) would print them twice.
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    #[error("cannot read `{}`: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("`{}`: {error}", path.display())]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("`{}`: {error}", path.display())]
    Toml {
        path: PathBuf,
        error: toml::de::Error,
    },
    #[error("`{}`: {error}", path.display())]
    Entry { path: PathBuf, error: EntryError },
}

/// An entry of the users file that breaks a rule; `index` is its place in `users`.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("users[{index}]: id and username must not be empty")]
    Empty { index: usize },
    #[error("users[{index}]: id `{id}` appears twice")]
    DuplicateId { index: usize, id: String },
    #[error("users[{index}]: username `{username}` appears twice")]
    DuplicateUsername { index: usize, username: String },
    #[error("users[{index}] ({username}): password_hash {error}")]
    Hash {
        index: usize,
        username: String,
        error: HashError,
    },
}

/// Why `portcullis users add|passwd|remove` refuses an edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("--id and --username must not be empty")]
    Empty,
    #[error("a user with id `{id}` already exists")]
    IdTaken { id: String },
    #[error("username `{username}` is taken (use `users passwd` to change its password)")]
    UsernameTaken { username: String },
    #[error("no user with username or id `{who}`")]
    NoSuchUser { who: String },
}

/// A password hash the gateway cannot verify; the message follows `password_hash`.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("looks like bcrypt but is not 60 characters long")]
    BcryptLength { len: usize },
    #[error("is not an argon2id PHC string or a bcrypt hash ($2b$/$2a$/$2y$): {0}")]
    NotPhc(argon2::password_hash::Error),
    #[error("uses `{algorithm}`; only argon2id (or imported bcrypt) is accepted")]
    NotArgon2id { algorithm: String },
    #[error("has unusable parameters: {0}")]
    Params(argon2::password_hash::Error),
}

/// The file as written: a list of users.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    pub users: Vec<UserEntry>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub id: String,
    pub username: String,
    pub password_hash: String,
}

impl std::fmt::Debug for UserEntry {
    // The hash stays out of logs: it is an offline-cracking target.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEntry")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

impl UsersFile {
    /// Read and check a users file; a missing file is an error (the CLI uses
    /// [`UsersFile::load_or_empty`]).
    pub fn load(path: &Path) -> Result<UsersFile, UsersFileError> {
        let path_buf = || path.to_path_buf();
        let text = std::fs::read_to_string(path).map_err(|error| UsersFileError::Read {
            path: path_buf(),
            error,
        })?;
        let file: UsersFile = if is_json(path) {
            serde_json::from_str(&text).map_err(|error| UsersFileError::Json {
                path: path_buf(),
                error,
            })?
        } else {
            toml::from_str(&text).map_err(|error| UsersFileError::Toml {
                path: path_buf(),
                error,
            })?
        };
        file.check().map_err(|error| UsersFileError::Entry {
            path: path_buf(),
            error,
        })?;
        Ok(file)
    }

    /// The file, or an empty list when it does not exist yet.
    pub fn load_or_empty(path: &Path) -> Result<UsersFile, UsersFileError> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(UsersFile::default())
        }
    }

    /// Ids and usernames unique and non-empty, every hash in a supported format.
    pub fn check(&self) -> Result<(), EntryError> {
        let mut ids = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for (index, u) in self.users.iter().enumerate() {
            if u.id.is_empty() || u.username.is_empty() {
                return Err(EntryError::Empty { index });
            }
            if !ids.insert(u.id.as_str()) {
                return Err(EntryError::DuplicateId {
                    index,
                    id: u.id.clone(),
                });
            }
            if !names.insert(u.username.as_str()) {
                return Err(EntryError::DuplicateUsername {
                    index,
                    username: u.username.clone(),
                });
            }
            check_hash(&u.password_hash).map_err(|error| EntryError::Hash {
                index,
                username: u.username.clone(),
                error,
            })?;
        }
        Ok(())
    }

    /// Replace the file atomically: write a temporary file beside it (mode 0600), fsync,
    /// rename over the old one, fsync the folder. A reader sees the old file or the new one,
    /// never half of one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let text = if is_json(path) {
            serde_json::to_string_pretty(self).map_err(std::io::Error::other)? + "\n"
        } else {
            toml::to_string(self).map_err(std::io::Error::other)?
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other("the users file path has no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let result = (|| {
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

impl UsersFile {
    /// Add a user (`portcullis users add`); the id and the username must be new.
    pub fn add(
        &mut self,
        id: &str,
        username: &str,
        password_hash: String,
    ) -> Result<(), EditError> {
        if id.is_empty() || username.is_empty() {
            return Err(EditError::Empty);
        }
        if self.users.iter().any(|u| u.id == id) {
            return Err(EditError::IdTaken { id: id.into() });
        }
        if self.users.iter().any(|u| u.username == username) {
            return Err(EditError::UsernameTaken {
                username: username.into(),
            });
        }
        self.users.push(UserEntry {
            id: id.to_owned(),
            username: username.to_owned(),
            password_hash,
        });
        Ok(())
    }

    /// The user named by `username` (or, failing that, by id).
    fn find_mut(&mut self, who: &str) -> Option<&mut UserEntry> {
        let i = self
            .users
            .iter()
            .position(|u| u.username == who)
            .or_else(|| self.users.iter().position(|u| u.id == who))?;
        self.users.get_mut(i)
    }

    /// Replace a user's password hash (`portcullis users passwd`).
    pub fn set_password(&mut self, who: &str, password_hash: String) -> Result<(), EditError> {
        let u = self
            .find_mut(who)
            .ok_or_else(|| EditError::NoSuchUser { who: who.into() })?;
        u.password_hash = password_hash;
        Ok(())
    }

    /// Remove a user (`portcullis users remove`).
    pub fn remove(&mut self, who: &str) -> Result<UserEntry, EditError> {
        let i = self
            .users
            .iter()
            .position(|u| u.username == who)
            .or_else(|| self.users.iter().position(|u| u.id == who))
            .ok_or_else(|| EditError::NoSuchUser { who: who.into() })?;
        Ok(self.users.remove(i))
    }
}

/// Is this a hash the gateway can verify?
pub fn check_hash(hash: &str) -> Result<(), HashError> {
    if is_bcrypt(hash) {
        return if hash.len() == 60 {
            Ok(())
        } else {
            Err(HashError::BcryptLength { len: hash.len() })
        };
    }
    let parsed = PasswordHash::new(hash).map_err(HashError::NotPhc)?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(HashError::NotArgon2id {
            algorithm: parsed.algorithm.to_string(),
        });
    }
    argon2::Params::try_from(&parsed).map_err(HashError::Params)?;
    Ok(())
}

pub fn is_bcrypt(hash: &str) -> bool {
    ["$2b$", "$2a$", "$2y$"].iter().any(|p| hash.starts_with(p))
}
