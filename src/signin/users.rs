//! Checking passwords: hashing new ones, verifying a login against the users file (read and
//! checked by `config::users`), and the directory sign-in looks users up in.

use std::collections::HashMap;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::config::users::is_bcrypt;
pub use crate::config::users::{EditError, UserEntry, UsersFile};

/// Why the directory cannot be built: the hash verified for unknown usernames failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot compute the dummy hash: {0}")]
pub struct DummyHashError(argon2::password_hash::Error);

/// A new argon2id hash of `password` with the crate's default (OWASP-recommended) cost.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
}

/// Does `password` match `hash`? CPU-heavy by design: call it off the async runtime.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if is_bcrypt(hash) {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    match PasswordHash::new(hash) {
        // The verifier takes algorithm, version and cost from the hash itself.
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The users the gateway signs in, indexed by username, plus the hash verified for unknown
/// usernames so that a miss costs as much time as a wrong password.
pub struct Directory {
    by_username: HashMap<String, UserEntry>,
    ids: std::collections::HashSet<String>,
    dummy_hash: String,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("users", &self.by_username.len())
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// Index the file. The dummy hash uses the cost of the file's first argon2id hash (the
    /// default cost when there is none), so both paths take about the same time.
    pub fn new(file: UsersFile) -> Result<Directory, DummyHashError> {
        let params = file
            .users
            .iter()
            .filter_map(|u| PasswordHash::new(&u.password_hash).ok())
            .find_map(|h| argon2::Params::try_from(&h).ok())
            .unwrap_or_default();
        let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut secret = [0u8; 16];
        rand::fill(&mut secret);
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = hasher
            .hash_password(&secret, &salt)
            .map_err(DummyHashError)?
            .to_string();
        Ok(Directory {
            ids: file.users.iter().map(|u| u.id.clone()).collect(),
            by_username: file
                .users
                .into_iter()
                .map(|u| (u.username.clone(), u))
                .collect(),
            dummy_hash,
        })
    }

    /// The user id when `username` exists and `password` matches; always does one full
    /// hash verification. Blocking: run it on a blocking thread.
    pub fn authenticate(&self, username: &str, password: &str) -> Option<String> {
        match self.by_username.get(username) {
            Some(u) => verify_password(password, &u.password_hash).then(|| u.id.clone()),
            None => {
                let _ = verify_password(password, &self.dummy_hash);
                None
            }
        }
    }

    /// Is there (still) a user with this id? A refresh for a removed user is refused.
    pub fn has_id(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    pub fn len(&self) -> usize {
        self.by_username.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_username.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::users::check_hash;

    fn cheap_hash(password: &str) -> String {
        let params = argon2::Params::new(256, 1, 1, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn argon2_and_bcrypt_verify() {
        let h = cheap_hash("pw");
        assert!(verify_password("pw", &h));
        assert!(!verify_password("px", &h));
        let b = bcrypt::hash("pw", 4).unwrap();
        assert!(b.starts_with("$2b$"));
        assert!(verify_password("pw", &b));
        assert!(!verify_password("px", &b));
        let y = b.replacen("$2b$", "$2y$", 1);
        assert!(check_hash(&y).is_ok());
        assert!(verify_password("pw", &y));
    }

    #[test]
    fn bad_hashes_are_refused() {
        assert!(check_hash("plaintext").is_err());
        assert!(check_hash("$2b$04$short").is_err());
        let argon2i = cheap_hash("pw").replacen("argon2id", "argon2i", 1);
        assert!(check_hash(&argon2i).is_err());
    }

    #[test]
    fn duplicate_usernames_are_refused() {
        let u = UserEntry {
            id: "u-1".into(),
            username: "alice".into(),
            password_hash: cheap_hash("pw"),
        };
        let mut v = u.clone();
        v.id = "u-2".into();
        let file = UsersFile { users: vec![u, v] };
        assert!(file.check().unwrap_err().to_string().contains("alice"));
    }

    /// `main` prints a start-up error with its chain (`{:#}`): the cause the message names
    /// must not come out a second time.
    #[test]
    fn a_users_file_error_names_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.toml");
        std::fs::write(
            &p,
            "[[users]]\nid = \"u\"\nusername = \"a\"\npassword_hash = \"x\"\n",
        )
        .unwrap();
        let e = UsersFile::load(&p).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("users[0] (a): password_hash is not an argon2id"),
            "{message}"
        );
        assert_eq!(format!("{:#}", anyhow::Error::from(e)), message);
        let e = UsersFile::load(dir.path()).unwrap_err();
        let message = e.to_string();
        assert!(message.starts_with("cannot read `"), "{message}");
        assert_eq!(format!("{:#}", anyhow::Error::from(e)), message);
    }

    #[test]
    fn directory_answers_only_the_right_password() {
        let file = UsersFile {
            users: vec![UserEntry {
                id: "u-1".into(),
                username: "alice".into(),
                password_hash: cheap_hash("secret"),
            }],
        };
        let d = Directory::new(file).unwrap();
        assert_eq!(d.authenticate("alice", "secret").as_deref(), Some("u-1"));
        assert_eq!(d.authenticate("alice", "wrong"), None);
        assert_eq!(d.authenticate("bob", "secret"), None);
        assert!(d.has_id("u-1"));
        assert!(!d.has_id("alice"));
    }

    #[test]
    fn save_round_trips_toml_and_json_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = UsersFile {
            users: vec![UserEntry {
                id: "u-1".into(),
                username: "alice".into(),
                password_hash: cheap_hash("pw"),
            }],
        };
        for name in ["users.toml", "users.json"] {
            let p = dir.path().join(name);
            file.save(&p).unwrap();
            let back = UsersFile::load(&p).unwrap();
            assert_eq!(back.users[0].username, "alice");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&p).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{name}");
            }
        }
    }
}
