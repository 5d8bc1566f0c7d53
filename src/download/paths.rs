//! Path safety for everything restorectl writes or deletes under `exportRoot`.
//!
//! A rendered `export.path` is joined to `exportRoot` only through [`resolve_inside`], which
//! returns a [`SafePath`]: the proof that the target stays inside the root after `..` has been
//! resolved and every symlink of the existing prefix has been followed. The transfer and the
//! publisher take a `SafePath`, so an unchecked path cannot reach them.
//!
//! [`sanitize_component`] turns a mailbox name (or any single placeholder value) into one file
//! name component. The job template renderer sanitises placeholder values too; this copy exists
//! so the download can name files on its own (and so both agree on the rules).

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The rendered path is empty.
    #[error("export path is empty (exportRoot {})", root.display())]
    Empty { root: PathBuf },
    /// The rendered path is absolute; export paths are relative to `exportRoot`.
    #[error("export path {} is absolute; it must be relative to exportRoot {}", path.display(), root.display())]
    Absolute { path: PathBuf, root: PathBuf },
    /// The path leaves `exportRoot` (through `..` or a symlink).
    #[error("path {} resolves to {}, outside exportRoot {}", path.display(), resolved.display(), root.display())]
    Escapes {
        path: PathBuf,
        resolved: PathBuf,
        root: PathBuf,
    },
    /// The existing part of the path could not be resolved (dangling symlink, permission).
    #[error("cannot resolve {}: {source}", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A path proven to lie inside `exportRoot`: `root` is canonical, `relative` has no `.`/`..`
/// components, and `absolute` is `root` + `relative` with the symlinks of its existing prefix
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath {
    root: PathBuf,
    relative: PathBuf,
    absolute: PathBuf,
}

impl SafePath {
    /// The canonical export root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path relative to the root (what manifests record as `file`).
    pub fn relative(&self) -> &Path {
        &self.relative
    }

    /// The absolute path to write to.
    pub fn absolute(&self) -> &Path {
        &self.absolute
    }

    /// The same path with the file extension replaced (`.pst` ↔ `.zip`). Stays inside the root:
    /// only the last component's suffix changes.
    pub fn with_extension(&self, ext: &str) -> SafePath {
        SafePath {
            root: self.root.clone(),
            relative: self.relative.with_extension(ext),
            absolute: self.absolute.with_extension(ext),
        }
    }

    /// `<final>.partial`, the file a download streams into.
    pub fn partial_path(&self) -> PathBuf {
        append_suffix(&self.absolute, ".partial")
    }

    /// `<final>.manifest.json`.
    pub fn manifest_path(&self) -> PathBuf {
        append_suffix(&self.absolute, ".manifest.json")
    }
}

/// `path` with `suffix` appended to its last component (`a/b.pst` + `.partial` → `a/b.pst.partial`).
pub(crate) fn append_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Joins `root` and the rendered relative path `relative` and proves the result stays inside
/// `root`.
///
/// `..` components are resolved lexically (and refused when they climb above the root); then the
/// deepest existing ancestor of the joined path is canonicalised (following symlinks) and the
/// rest appended. The result must start with the canonicalised root. A dangling symlink in the
/// existing prefix is refused (it could be created later, pointing anywhere).
///
/// # Errors
///
/// [`PathError`] naming the path and the root.
pub fn resolve_inside(root: &Path, relative: &Path) -> Result<SafePath, PathError> {
    if relative.as_os_str().is_empty() {
        return Err(PathError::Empty {
            root: root.to_path_buf(),
        });
    }
    let mut normal = PathBuf::new();
    for c in relative.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err(PathError::Absolute {
                    path: relative.to_path_buf(),
                    root: root.to_path_buf(),
                });
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    return Err(PathError::Escapes {
                        path: relative.to_path_buf(),
                        resolved: root.join(relative),
                        root: root.to_path_buf(),
                    });
                }
            }
            Component::Normal(part) => normal.push(part),
        }
    }
    if normal.as_os_str().is_empty() {
        return Err(PathError::Empty {
            root: root.to_path_buf(),
        });
    }
    let canonical_root = resolve_existing_prefix(root)?;
    let absolute = resolve_existing_prefix(&canonical_root.join(&normal))?;
    if !absolute.starts_with(&canonical_root) || absolute == canonical_root {
        return Err(PathError::Escapes {
            path: relative.to_path_buf(),
            resolved: absolute,
            root: canonical_root,
        });
    }
    Ok(SafePath {
        root: canonical_root,
        relative: normal,
        absolute,
    })
}

/// Proves that an existing (or not yet existing) absolute `path` lies inside `root` after
/// resolving symlinks of its parent directory; the last component itself is not followed, so a
/// symlink named like an export is judged by where it sits, not where it points. Used by
/// retention before deleting anything.
///
/// # Errors
///
/// [`PathError::Escapes`] or [`PathError::Resolve`].
pub fn ensure_inside(root: &Path, path: &Path) -> Result<PathBuf, PathError> {
    let canonical_root = resolve_existing_prefix(root)?;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(PathError::Escapes {
            path: path.to_path_buf(),
            resolved: path.to_path_buf(),
            root: canonical_root,
        });
    };
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(PathError::Escapes {
            path: path.to_path_buf(),
            resolved: path.to_path_buf(),
            root: canonical_root,
        });
    }
    let resolved = resolve_existing_prefix(parent)?.join(name);
    if !resolved.starts_with(&canonical_root) || resolved == canonical_root {
        return Err(PathError::Escapes {
            path: path.to_path_buf(),
            resolved,
            root: canonical_root,
        });
    }
    Ok(resolved)
}

/// Canonicalises the deepest existing ancestor of `path` (following symlinks) and appends the
/// components that do not exist yet. Existence is tested with `lstat`, so a dangling symlink
/// counts as existing and then fails to canonicalise.
fn resolve_existing_prefix(path: &Path) -> Result<PathBuf, PathError> {
    let mut existing = path.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match fs::symlink_metadata(&existing) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(name) = existing.file_name() else {
                    // Reached a root or a `..` that does not exist: nothing to canonicalise.
                    return Err(PathError::Resolve {
                        path: path.to_path_buf(),
                        source: e,
                    });
                };
                rest.push(name.to_owned());
                if !existing.pop() {
                    return Err(PathError::Resolve {
                        path: path.to_path_buf(),
                        source: e,
                    });
                }
                if existing.as_os_str().is_empty() {
                    existing = PathBuf::from(".");
                }
            }
            Err(e) => {
                return Err(PathError::Resolve {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        }
    }
    let mut resolved = fs::canonicalize(&existing).map_err(|source| PathError::Resolve {
        path: existing.clone(),
        source,
    })?;
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    Ok(resolved)
}

/// Maximum length in bytes of a sanitised component (file systems allow 255; leave room for
/// `.partial` / `.manifest.json` suffixes).
const MAX_COMPONENT_BYTES: usize = 200;

/// Turns one placeholder value (a mailbox e-mail or name) into a safe single file name
/// component: path separators, NUL, control characters and the characters Windows/SMB shares
/// refuse (`<>:"|?*`) become `_`; leading dots and surrounding spaces are removed (no hidden
/// files, no `.`/`..`); the result is cut to 200 bytes at a character boundary; an empty result
/// becomes `_`.
pub fn sanitize_component(value: &str) -> String {
    let replaced: String = value
        .chars()
        .map(|c| match c {
            '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let trimmed = replaced.trim().trim_start_matches('.').trim_start();
    let mut out = String::with_capacity(trimmed.len().min(MAX_COMPONENT_BYTES));
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > MAX_COMPONENT_BYTES {
            break;
        }
        out.push(c);
    }
    let out = out.trim_end().to_owned();
    if out.is_empty() { "_".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_relative_path_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let p = resolve_inside(dir.path(), Path::new("job/2026-01-01/alice.pst")).unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        assert_eq!(p.absolute(), root.join("job/2026-01-01/alice.pst"));
        assert_eq!(p.relative(), Path::new("job/2026-01-01/alice.pst"));
        assert_eq!(
            p.partial_path(),
            root.join("job/2026-01-01/alice.pst.partial")
        );
        assert_eq!(
            p.manifest_path(),
            root.join("job/2026-01-01/alice.pst.manifest.json")
        );
    }

    #[test]
    fn dot_dot_inside_is_resolved_and_escaping_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = resolve_inside(dir.path(), Path::new("a/../b/x.pst")).unwrap();
        assert_eq!(p.relative(), Path::new("b/x.pst"));
        let err = resolve_inside(dir.path(), Path::new("a/../../x.pst")).unwrap_err();
        assert!(matches!(err, PathError::Escapes { .. }), "{err}");
        let err = resolve_inside(dir.path(), Path::new("..")).unwrap_err();
        assert!(matches!(err, PathError::Escapes { .. }), "{err}");
    }

    #[test]
    fn absolute_and_empty_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_inside(dir.path(), Path::new("/etc/passwd")).unwrap_err();
        assert!(matches!(err, PathError::Absolute { .. }), "{err}");
        assert!(err.to_string().contains("/etc/passwd"));
        let err = resolve_inside(dir.path(), Path::new("")).unwrap_err();
        assert!(matches!(err, PathError::Empty { .. }));
        let err = resolve_inside(dir.path(), Path::new("a/..")).unwrap_err();
        assert!(matches!(err, PathError::Empty { .. }));
    }

    #[test]
    fn symlink_out_of_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.path().join("out")).unwrap();
        let err = resolve_inside(root.path(), Path::new("out/alice.pst")).unwrap_err();
        assert!(matches!(err, PathError::Escapes { .. }), "{err}");
        // A symlink that stays inside the root is fine.
        fs::create_dir(root.path().join("real")).unwrap();
        symlink(root.path().join("real"), root.path().join("alias")).unwrap();
        let p = resolve_inside(root.path(), Path::new("alias/alice.pst")).unwrap();
        assert!(p.absolute().ends_with("real/alice.pst"));
    }

    #[test]
    fn dangling_symlink_is_refused() {
        let root = tempfile::tempdir().unwrap();
        symlink("/nonexistent/target", root.path().join("dangling")).unwrap();
        let err = resolve_inside(root.path(), Path::new("dangling/alice.pst")).unwrap_err();
        assert!(matches!(err, PathError::Resolve { .. }), "{err}");
    }

    #[test]
    fn root_that_does_not_exist_yet_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("exports");
        let p = resolve_inside(&root, Path::new("j/a.pst")).unwrap();
        assert!(p.absolute().ends_with("exports/j/a.pst"));
    }

    #[test]
    fn ensure_inside_judges_the_parent_directory() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("j")).unwrap();
        assert!(ensure_inside(root.path(), &root.path().join("j/a.pst")).is_ok());
        assert!(ensure_inside(root.path(), &outside.path().join("a.pst")).is_err());
        assert!(ensure_inside(root.path(), &root.path().join("j/../../x")).is_err());
        symlink(outside.path(), root.path().join("out")).unwrap();
        assert!(ensure_inside(root.path(), &root.path().join("out/a.pst")).is_err());
    }

    #[test]
    fn sanitize_component_makes_one_safe_name() {
        assert_eq!(sanitize_component("alice@contoso.com"), "alice@contoso.com");
        assert_eq!(sanitize_component("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize_component(".."), "_");
        assert_eq!(sanitize_component(".hidden"), "hidden");
        assert_eq!(
            sanitize_component("a/b\\c:d*e?f\"g<h>i|j"),
            "a_b_c_d_e_f_g_h_i_j"
        );
        assert_eq!(sanitize_component("tab\there\0nul"), "tab_here_nul");
        assert_eq!(sanitize_component("   "), "_");
        let long = "é".repeat(300);
        let s = sanitize_component(&long);
        assert!(s.len() <= 200 && s.chars().all(|c| c == 'é'));
    }
}
