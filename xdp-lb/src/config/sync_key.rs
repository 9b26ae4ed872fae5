//! `sync.key_file`: the shared sync key, read once when the config is validated and carried in
//! it ([`SyncKey`]). A file of at least 32 bytes (taken as they are; `head -c 32 /dev/urandom >
//! key` makes one), owned by root and unreadable to anyone else, since whoever holds it can
//! install flows on every node. The path itself must be the file, not a symlink: a link could
//! be pointed elsewhere by whoever owns its directory.

use std::{fmt, fs, io, os::unix::fs::MetadataExt as _, path::Path};

use thiserror::Error;

/// HMAC-SHA-256's key should be at least its output's length (RFC 2104 §3).
pub const MIN_KEY_LEN: usize = 32;
/// A key file is a key, not a document: larger files are refused rather than read.
pub const MAX_KEY_LEN: usize = 4096;

/// The key's bytes. Its `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SyncKey(Vec<u8>);

impl SyncKey {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncKey({} bytes)", self.0.len())
    }
}

/// Why a key file is refused; the message says how to fix it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{0}")]
    Unreadable(String),
    #[error("not a regular file (a symlink or a directory); name the key file itself")]
    NotAFile,
    #[error("owned by uid {0}; the key must belong to root (chown root:root)")]
    NotRoot(u32),
    #[error("mode {0:04o} lets group or others access it; chmod 600")]
    TooOpen(u32),
    #[error("{0} bytes; a key file holds {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes")]
    TooLong(u64),
    #[error(
        "{0} bytes; the key needs at least {MIN_KEY_LEN} (e.g. head -c 32 /dev/urandom > FILE)"
    )]
    TooShort(usize),
}

impl From<io::Error> for KeyError {
    fn from(e: io::Error) -> Self {
        KeyError::Unreadable(e.to_string())
    }
}

/// Reads the key, or says why the file is refused.
pub fn load(path: &Path) -> Result<SyncKey, KeyError> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() {
        return Err(KeyError::NotAFile);
    }
    check_permissions(meta.uid(), meta.mode())?;
    if meta.len() > MAX_KEY_LEN as u64 {
        return Err(KeyError::TooLong(meta.len()));
    }
    let key = fs::read(path)?;
    if key.len() < MIN_KEY_LEN {
        return Err(KeyError::TooShort(key.len()));
    }
    Ok(SyncKey(key))
}

/// Owned by root, and no permission bit for group or others (`chmod 600` or `400`).
pub fn check_permissions(uid: u32, mode: u32) -> Result<(), KeyError> {
    if uid != 0 {
        return Err(KeyError::NotRoot(uid));
    }
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen(mode & 0o7777));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn only_root_only_files_are_keys() {
        assert_eq!(check_permissions(0, 0o100600), Ok(()));
        assert_eq!(check_permissions(0, 0o100400), Ok(()));
        assert!(
            check_permissions(0, 0o100640)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        assert!(
            check_permissions(0, 0o100604)
                .unwrap_err()
                .to_string()
                .contains("0604")
        );
        assert_eq!(
            check_permissions(1000, 0o100600),
            Err(KeyError::NotRoot(1000))
        );
    }

    #[test]
    fn a_key_file_is_read_only_when_it_is_one() {
        let dir = std::env::temp_dir().join(format!("xlb-key-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sync.key");
        fs::write(&path, [7u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        // The tests run as root (the integration tests need it); elsewhere the owner check
        // refuses, which is what it is for.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(load(&path).unwrap().bytes(), [7u8; 32]);
            assert_eq!(format!("{:?}", load(&path).unwrap()), "SyncKey(32 bytes)");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(load(&path), Err(KeyError::TooOpen(0o644)));
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            fs::write(&path, [7u8; 16]).unwrap();
            assert_eq!(load(&path), Err(KeyError::TooShort(16)));
        } else {
            assert!(matches!(load(&path), Err(KeyError::NotRoot(_))));
        }
        assert_eq!(load(&dir), Err(KeyError::NotAFile));
        assert!(matches!(
            load(&dir.join("missing")),
            Err(KeyError::Unreadable(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
