//! The pre-shared keys senders must prove: read from root-only files at each
//! handshake, so a rollover needs no restart.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use arepl_core::auth::{HmacSha256, Psk, PskError, KEY_ID_LEN};
use hmac::{Hmac, Mac};

/// Where the keys are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// The current key.
    pub current: PathBuf,
    /// The next key, accepted too while keys roll over.
    pub next: Option<PathBuf>,
}

/// One key, ready to use.
#[derive(Debug, Clone)]
pub struct LoadedKey {
    /// The key.
    pub psk: Psk,
    /// Its public id.
    pub id: KeyId,
    /// Which file it came from: "current" or "next".
    pub role: &'static str,
}

/// A key's public id, printed in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// Why a key file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// It cannot be read.
    #[error("key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others than its owner may read it.
    #[error(
        "key file {path} has mode {mode:03o}: a key must be readable by its owner only \
         (chmod 600)"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Its content is not a key.
    #[error("key file {path}: {problem}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: PskError,
    },
}

/// Reads and checks one key file.
pub fn read_key_file(path: &Path) -> Result<Psk, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read(path).map_err(read_error)?;
    Psk::parse(&text).map_err(|problem| KeyError::Malformed {
        path: path.to_path_buf(),
        problem,
    })
}

impl KeyFiles {
    /// The keys as the files hold them now: the current one, then the next one. A next
    /// key that cannot be read is left out with a warning: the current one still works.
    pub fn load(&self) -> Result<Vec<LoadedKey>, KeyError> {
        let mut keys = vec![loaded(read_key_file(&self.current)?, "current")];
        if let Some(next) = &self.next {
            match read_key_file(next) {
                Ok(psk) => keys.push(loaded(psk, "next")),
                Err(err) => tracing::warn!("ignoring the next key: {err}"),
            }
        }
        Ok(keys)
    }

    /// Checks at start that both files hold keys, so a typo fails at once.
    pub fn check(&self) -> Result<(), KeyError> {
        read_key_file(&self.current)?;
        if let Some(next) = &self.next {
            read_key_file(next)?;
        }
        Ok(())
    }
}

fn loaded(psk: Psk, role: &'static str) -> LoadedKey {
    let id = KeyId(psk.id(&SoftHmac).unwrap_or_else(|never| match never {}));
    LoadedKey { psk, id, role }
}

/// HMAC-SHA256 in userspace.
#[derive(Debug, Clone, Copy)]
pub struct SoftHmac;

impl HmacSha256 for SoftHmac {
    type Error = std::convert::Infallible;

    fn hmac(&self, key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], Self::Error> {
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in parts {
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().into())
    }
}

/// Fresh random bytes for a nonce.
pub fn nonce() -> std::io::Result<[u8; arepl_core::auth::NONCE_LEN]> {
    let mut bytes = [0u8; arepl_core::auth::NONCE_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|err| std::io::Error::other(format!("no random bytes for a nonce: {err}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

    fn write_key(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn key_files_must_be_private_and_hold_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_key(dir.path(), "good", KEY, 0o600);
        let psk = read_key_file(&good).unwrap();
        assert_eq!(psk.bytes()[1], 1);
        let open = write_key(dir.path(), "open", KEY, 0o644);
        let err = read_key_file(&open).unwrap_err().to_string();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
        let short = write_key(dir.path(), "short", "abcd\n", 0o400);
        let err = read_key_file(&short).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        assert!(read_key_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_missing_next_key_leaves_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = KeyFiles {
            current: write_key(dir.path(), "cur", KEY, 0o600),
            next: Some(dir.path().join("next")),
        };
        assert!(files.check().is_err());
        let keys = files.load().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].role, "current");
        // The id the golden test in arepl-core pins, printed.
        assert_eq!(keys[0].id.to_string(), "d33921ffa0940b2d");
    }
}
