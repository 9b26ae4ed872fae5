//! The shared sync key: a file of at least 32 bytes (taken as they are; `head -c 32
//! /dev/urandom > key` makes one), owned by root and unreadable to anyone else, since whoever
//! holds it can install flows on every node.

use std::{fs, os::unix::fs::MetadataExt as _, path::Path};

/// HMAC-SHA-256's key should be at least its output's length (RFC 2104 §3).
pub const MIN_KEY_LEN: usize = 32;
/// A key file is a key, not a document: larger files are refused rather than read.
pub const MAX_KEY_LEN: usize = 4096;

/// Reads the key, or says why the file is refused (the reason goes to the log and the config
/// error as it is).
pub fn load(path: &Path) -> Result<Vec<u8>, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    check_permissions(meta.uid(), meta.mode())
        .map_err(|why| format!("{}: {why}", path.display()))?;
    if meta.len() > MAX_KEY_LEN as u64 {
        return Err(format!(
            "{}: {} bytes; a key file holds {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes",
            path.display(),
            meta.len()
        ));
    }
    let key = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "{}: {} bytes; the key needs at least {MIN_KEY_LEN} (e.g. head -c 32 /dev/urandom > {})",
            path.display(),
            key.len(),
            path.display()
        ));
    }
    Ok(key)
}

/// Owned by root, and no permission bit for group or others (`chmod 600` or `400`).
pub fn check_permissions(uid: u32, mode: u32) -> Result<(), String> {
    if uid != 0 {
        return Err(format!(
            "owned by uid {uid}; the key must belong to root (chown root:root)"
        ));
    }
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {:04o} lets group or others access it; chmod 600",
            mode & 0o7777
        ));
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
                .contains("chmod 600")
        );
        assert!(check_permissions(0, 0o100604).unwrap_err().contains("0604"));
        assert!(
            check_permissions(1000, 0o100600)
                .unwrap_err()
                .contains("uid 1000")
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
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(load(&path).unwrap(), vec![7u8; 32]);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(load(&path).unwrap_err().contains("chmod 600"));
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            fs::write(&path, [7u8; 16]).unwrap();
            assert!(load(&path).unwrap_err().contains("at least 32"));
        } else {
            assert!(load(&path).unwrap_err().contains("owned by uid"));
        }
        assert!(load(&dir).unwrap_err().contains("not a regular file"));
        assert!(load(&dir.join("missing")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
