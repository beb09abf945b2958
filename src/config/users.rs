//! The users file (`[signin] users_file`): who may sign in.
//!
//! TOML (`[[users]]` tables) or JSON (`{"users": [...]}`), chosen by the file's extension.
//! Each entry holds an id (what the gateway puts in `sub`), a username (what the client
//! types) and a password hash: argon2id as a PHC string, or bcrypt (`$2b$`, `$2a$`, `$2y$`)
//! for users imported from another system. `portcullis users add|passwd|remove` edits the
//! file with [`UsersFile::save`], which replaces it atomically with mode 0600. Checking a
//! password against an entry is sign-in's job (`signin::users`).

use std::path::Path;

use argon2::password_hash::PasswordHash;
use serde::{Deserialize, Serialize};

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
    pub fn load(path: &Path) -> Result<UsersFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let file: UsersFile = if is_json(path) {
            serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))?
        } else {
            toml::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))?
        };
        file.check()
            .map_err(|e| format!("`{}`: {e}", path.display()))?;
        Ok(file)
    }

    /// The file, or an empty list when it does not exist yet.
    pub fn load_or_empty(path: &Path) -> Result<UsersFile, String> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(UsersFile::default())
        }
    }

    /// Ids and usernames unique and non-empty, every hash in a supported format.
    pub fn check(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if u.id.is_empty() || u.username.is_empty() {
                return Err(format!("users[{i}]: id and username must not be empty"));
            }
            if !ids.insert(u.id.as_str()) {
                return Err(format!("users[{i}]: id `{}` appears twice", u.id));
            }
            if !names.insert(u.username.as_str()) {
                return Err(format!(
                    "users[{i}]: username `{}` appears twice",
                    u.username
                ));
            }
            if let Err(e) = check_hash(&u.password_hash) {
                return Err(format!("users[{i}] ({}): password_hash {e}", u.username));
            }
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
    pub fn add(&mut self, id: &str, username: &str, password_hash: String) -> Result<(), String> {
        if id.is_empty() || username.is_empty() {
            return Err("--id and --username must not be empty".into());
        }
        if self.users.iter().any(|u| u.id == id) {
            return Err(format!("a user with id `{id}` already exists"));
        }
        if self.users.iter().any(|u| u.username == username) {
            return Err(format!(
                "username `{username}` is taken (use `users passwd` to change its password)"
            ));
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
    pub fn set_password(&mut self, who: &str, password_hash: String) -> Result<(), String> {
        let u = self
            .find_mut(who)
            .ok_or_else(|| format!("no user with username or id `{who}`"))?;
        u.password_hash = password_hash;
        Ok(())
    }

    /// Remove a user (`portcullis users remove`).
    pub fn remove(&mut self, who: &str) -> Result<UserEntry, String> {
        let i = self
            .users
            .iter()
            .position(|u| u.username == who)
            .or_else(|| self.users.iter().position(|u| u.id == who))
            .ok_or_else(|| format!("no user with username or id `{who}`"))?;
        Ok(self.users.remove(i))
    }
}

/// Is this a hash the gateway can verify?
pub fn check_hash(hash: &str) -> Result<(), String> {
    if is_bcrypt(hash) {
        return if hash.len() == 60 {
            Ok(())
        } else {
            Err("looks like bcrypt but is not 60 characters long".into())
        };
    }
    let parsed = PasswordHash::new(hash).map_err(|e| {
        format!("is not an argon2id PHC string or a bcrypt hash ($2b$/$2a$/$2y$): {e}")
    })?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "uses `{}`; only argon2id (or imported bcrypt) is accepted",
            parsed.algorithm
        ));
    }
    argon2::Params::try_from(&parsed).map_err(|e| format!("has unusable parameters: {e}"))?;
    Ok(())
}

pub fn is_bcrypt(hash: &str) -> bool {
    ["$2b$", "$2a$", "$2y$"].iter().any(|p| hash.starts_with(p))
}
