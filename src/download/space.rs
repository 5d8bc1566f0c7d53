//! Free space of the file system an export is written to.

use std::io;
use std::path::{Path, PathBuf};

use super::error::DownloadError;

/// Bytes available to an unprivileged writer on the file system holding `path` (or, if `path`
/// does not exist yet, its deepest existing ancestor).
///
/// # Errors
///
/// The `statvfs` error.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let mut probe: PathBuf = path.to_path_buf();
    while std::fs::symlink_metadata(&probe).is_err() {
        if !probe.pop() || probe.as_os_str().is_empty() {
            probe = PathBuf::from(".");
            break;
        }
    }
    let st = rustix::fs::statvfs(&probe).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Fails early when the file system holding `path` has less than `needed` bytes free.
///
/// # Errors
///
/// [`DownloadError::InsufficientSpace`] naming the path, the need and what is available;
/// [`DownloadError::Io`] if the file system cannot be queried.
pub fn check_free_space(path: &Path, needed: u64) -> Result<u64, DownloadError> {
    let available = available_bytes(path).map_err(|source| DownloadError::Io {
        path: path.to_path_buf(),
        action: "query free space of",
        source,
    })?;
    if available < needed {
        return Err(DownloadError::InsufficientSpace {
            path: path.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(available)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_space_and_refuses_impossible_needs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not/yet/there.pst");
        let available = available_bytes(&missing).unwrap();
        assert!(available > 0);
        assert!(check_free_space(&missing, 1).is_ok());
        let err = check_free_space(&missing, u64::MAX).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("not enough free space") && msg.contains(&u64::MAX.to_string()),
            "{msg}"
        );
    }
}
