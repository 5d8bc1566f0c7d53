//! Private directories: every directory restorectl creates (the state database's, the export
//! tree under `exportRoot`, a search report's) is created with mode 0700, because what it holds
//! (mailbox data, run state) is for the service user alone.
//!
//! A leaf with no restorectl imports, so the lowest layer that creates directories (the store)
//! can use it as well as the download and the run engine.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700 (before the umask). An existing
/// directory is left as it is.
///
/// # Errors
///
/// The I/O error of the first directory that cannot be created; the caller names the path.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_missing_parents_private_and_leaves_existing_ones_alone() {
        let root = tempfile::tempdir().unwrap();
        let existing = root.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = existing.join("a/b");
        create_private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // The umask can only clear bits, so 0700 stays 0700 under any usual umask.
        assert_eq!(mode(&existing.join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&existing), 0o755, "an existing parent keeps its mode");
        create_private_dir(&dir).unwrap();
    }
}
