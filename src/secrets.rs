//! Named credentials: where they come from and how their values are held. Bearer keys, HMAC
//! secrets and a function's `[secrets]` are never written in a function file, only the name of
//! a credential, read from systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`,
//! `ImportCredential=`, `systemd-creds encrypt`; systemd.exec(5) "Credentials") or, outside
//! systemd, from the `credentials_dir` faas.toml names for development.
//!
//! A value is a [`Secret`]: its `Debug` and `Display` never show the bytes, so no log line,
//! error, metric or `/_/functions` entry can carry one by accident, and it is zeroed when
//! dropped (best effort: copies the allocator made while it grew are not reached).

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The most bytes one credential may hold: systemd's own cap (CREDENTIAL_SIZE_MAX, 1 MiB).
pub const MAX_CREDENTIAL: u64 = 1 << 20;

/// The environment variable systemd sets for a unit with credentials.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// A credential's value. Shows as `<secret, N bytes>`, never as its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes (tests; the daemon reads them with `read`).
    #[cfg(test)]
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The value, for the few places that must use it: the auth check, the sandbox's file.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "<secret, {} bytes>", self.0.len())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        // Keeps the writes above from being dropped as dead stores.
        std::hint::black_box(&self.0);
    }
}

/// Where credentials are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `$CREDENTIALS_DIRECTORY`, set by systemd for `LoadCredential=` and friends.
    Systemd(PathBuf),
    /// `credentials_dir` in faas.toml (development, outside systemd).
    Config(PathBuf),
    /// Neither: every credential is missing.
    None,
}

impl Source {
    /// systemd's directory when the daemon runs with credentials, else faas.toml's.
    pub fn find(configured: Option<&Path>) -> Source {
        match std::env::var_os(CREDENTIALS_ENV) {
            Some(dir) if !dir.is_empty() => Source::Systemd(PathBuf::from(dir)),
            _ => configured.map_or(Source::None, |d| Source::Config(d.to_owned())),
        }
    }

    fn dir(&self) -> Option<&Path> {
        match self {
            Source::Systemd(d) | Source::Config(d) => Some(d),
            Source::None => None,
        }
    }
}

/// Why a credential cannot be used. Names the credential and the directory, never a value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The name could escape the directory or is not a credential name at all.
    #[error("{0:?} is not a credential name")]
    BadName(String),
    /// No directory to read from.
    #[error("credential {0:?} is needed, but there is no credentials directory\nhint: under systemd, give faas.service LoadCredential={0}:/path or ImportCredential={0}; outside it, set credentials_dir in faas.toml")]
    NoDirectory(String),
    /// The directory has no such file.
    #[error("credential {name:?} is missing from {}\nhint: {}", dir.display(), missing_hint(name, systemd))]
    Missing { name: String, dir: PathBuf, systemd: bool },
    /// It exists but cannot be read.
    #[error("failed to read credential {name:?} in {}: {source}", dir.display())]
    Read {
        name: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Larger than systemd allows.
    #[error("credential {name:?} is larger than {MAX_CREDENTIAL} bytes")]
    TooLarge { name: String },
}

fn missing_hint(name: &str, systemd: &bool) -> String {
    if *systemd {
        format!("add LoadCredential={name}:/path (or LoadCredentialEncrypted=, ImportCredential=) to faas.service and restart it")
    } else {
        format!("write the value to a file named {name} there, readable by root only (chmod 0400)")
    }
}

/// Whether `name` can be a credential: a plain file name (systemd's rule), ASCII, no `/`,
/// not `.` or `..`, at most 255 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name.bytes().all(|c| c.is_ascii_graphic() && c != b'/')
}

/// Reads credential `name` from `source`: the whole file, at most [`MAX_CREDENTIAL`] bytes.
/// Whitespace is kept as written (a key with a trailing newline is that key with a newline),
/// except that one final newline is dropped, since `echo KEY >file` is how most are made.
pub fn read(source: &Source, name: &str) -> Result<Secret, CredentialError> {
    if !valid_name(name) {
        return Err(CredentialError::BadName(name.to_owned()));
    }
    let Some(dir) = source.dir() else { return Err(CredentialError::NoDirectory(name.to_owned())) };
    let path = dir.join(name);
    let read_err = |source| CredentialError::Read { name: name.to_owned(), dir: dir.to_owned(), source };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialError::Missing {
                name: name.to_owned(),
                dir: dir.to_owned(),
                systemd: matches!(source, Source::Systemd(_)),
            })
        }
        Err(e) => return Err(read_err(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CREDENTIAL + 1).read_to_end(&mut bytes).map_err(read_err)?;
    let mut secret = Secret(bytes);
    if secret.0.len() as u64 > MAX_CREDENTIAL {
        return Err(CredentialError::TooLarge { name: name.to_owned() });
    }
    if secret.0.last() == Some(&b'\n') {
        secret.0.pop();
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_its_bytes() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "<secret, 7 bytes>");
        assert_eq!(s.expose(), b"hunter2");
    }

    #[test]
    fn names_stay_in_the_directory() {
        assert!(valid_name("github-webhook.secret"));
        assert!(valid_name("api_key@prod"));
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn reading_drops_one_final_newline_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "abc\n\n").unwrap();
        let source = Source::Config(dir.path().to_owned());
        assert_eq!(read(&source, "key").unwrap().expose(), b"abc\n");
        let err = read(&source, "nope").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "credential \"nope\" is missing from {}\nhint: write the value to a file named nope there, readable by root only (chmod 0400)",
                dir.path().display()
            )
        );
        assert!(matches!(read(&Source::None, "key"), Err(CredentialError::NoDirectory(_))));
        assert!(matches!(read(&source, "../key"), Err(CredentialError::BadName(_))));
        std::fs::write(dir.path().join("big"), vec![b'x'; MAX_CREDENTIAL as usize + 1]).unwrap();
        assert!(matches!(read(&source, "big"), Err(CredentialError::TooLarge { .. })));
    }
}
