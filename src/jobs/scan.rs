//! Finding and validating every job file of a directory (or a list of paths), plus the rules
//! that span files: a `metadata.name` may appear only once.
//!
//! Walking rules: directories are read recursively in name order; entries whose name starts
//! with `.` are skipped (editor swap files, `.git`, and the `..data`/`..2026_…` entries of a
//! Kubernetes ConfigMap volume, whose real files are reached through the visible symlinks);
//! files named like the daemon config (`restorectl.yaml`/`.yml`) are skipped; only `*.yaml`
//! and `*.yml` are read; symlinks are followed, and a directory already visited (a symlink
//! loop) is not entered again. A path given explicitly is read whatever its extension.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::error::{ErrorCode, JobError};
use super::locate::Pos;
use super::parse::{FileReport, parse_str, read_job_file};
use super::validate::{At, DocContext, DocLocation};
use super::{Job, ValidationContext};
use crate::config::CONFIG_FILE_NAMES;

/// The outcome of validating a set of job files.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// One report per file, in walk order.
    pub files: Vec<FileReport>,
}

impl ScanReport {
    /// Every valid job (unique names: duplicates are errors, not jobs).
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.files.iter().flat_map(|f| f.jobs())
    }

    /// Every error of every file.
    pub fn errors(&self) -> impl Iterator<Item = &JobError> {
        self.files.iter().flat_map(|f| f.all_errors())
    }

    pub fn is_valid(&self) -> bool {
        self.errors().next().is_none()
    }
}

/// Whether `name` is a job file name the walk reads.
pub fn is_job_file_name(name: &str) -> bool {
    !name.starts_with('.')
        && !CONFIG_FILE_NAMES.contains(&name)
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Expands `paths` into job files. Problems (a missing path, an unreadable directory) come
/// back as errors; the walk goes on.
pub fn collect_job_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<JobError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut visited = HashSet::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut visited, &mut files, &mut errors),
            Ok(_) => files.push(p.clone()),
            Err(e) => errors.push(io_error(p, format!("cannot read {}: {e}", p.display()))),
        }
    }
    (files, errors)
}

fn io_error(path: &Path, message: String) -> JobError {
    JobError {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        code: ErrorCode::Io,
        job: None,
        field: None,
        message,
        hint: ErrorCode::Io.default_hint().to_string(),
    }
}

fn walk(
    dir: &Path,
    visited: &mut HashSet<PathBuf>,
    files: &mut Vec<PathBuf>,
    errors: &mut Vec<JobError>,
) {
    // Canonical paths identify a directory however it was reached, so a loop ends here.
    match dir.canonicalize() {
        Ok(c) => {
            if !visited.insert(c) {
                return;
            }
        }
        Err(e) => {
            errors.push(io_error(
                dir,
                format!("cannot resolve directory {}: {e}", dir.display()),
            ));
            return;
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(io_error(
                dir,
                format!("cannot read directory {}: {e}", dir.display()),
            ));
            return;
        }
    };
    let mut names: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    names.sort();
    for (name, path) in names {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, visited, files, errors),
            Ok(_) if is_job_file_name(&name) => files.push(path),
            Ok(_) => {}
            // A dangling symlink named like a job file is worth reporting; others are noise.
            Err(e) if is_job_file_name(&name) => {
                errors.push(io_error(
                    &path,
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
            Err(_) => {}
        }
    }
}

/// Finds, reads and validates every job file under `paths`, then applies the directory-wide
/// rules. The daemon and `restorectl validate` both use this.
pub fn scan_paths(paths: &[PathBuf], ctx: &ValidationContext<'_>) -> ScanReport {
    let (files, walk_errors) = collect_job_files(paths);
    let mut report = ScanReport::default();
    for e in walk_errors {
        report.files.push(FileReport::unreadable(e));
    }
    let parsed = parse_all(&files, ctx);
    let mut texts = Vec::with_capacity(parsed.len());
    for (file_report, text) in parsed {
        report.files.push(file_report);
        texts.push(text);
    }
    let offset = report.files.len() - texts.len();
    check_duplicate_names(&mut report, offset, &texts);
    report
}

/// Reads and validates files, on up to two threads (most machines running this have 2+
/// cores, and parsing dominates a large scan). Order follows `files`.
fn parse_all(files: &[PathBuf], ctx: &ValidationContext<'_>) -> Vec<(FileReport, Option<String>)> {
    let one = |p: &PathBuf| match read_job_file(p) {
        Ok(text) => (parse_str(&text, p, ctx), Some(text)),
        Err(e) => (FileReport::unreadable(e), None),
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    if files.len() < 64 || workers < 2 {
        return files.iter().map(one).collect();
    }
    let chunk = files.len().div_ceil(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(one).collect::<Vec<_>>()))
            .collect();
        // A worker only panics if parsing panicked, which is a bug; re-raise it here rather
        // than silently dropping files.
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Marks every document whose `metadata.name` appears more than once as invalid, naming all
/// the places it appears.
fn check_duplicate_names(report: &mut ScanReport, offset: usize, texts: &[Option<String>]) {
    let mut by_name: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for (fi, f) in report.files.iter().enumerate() {
        for (di, d) in f.documents.iter().enumerate() {
            if let Some(n) = &d.name {
                by_name.entry(n.clone()).or_default().push((fi, di));
            }
        }
    }
    for (name, places) in by_name.into_iter().filter(|(_, p)| p.len() > 1) {
        let mut located = Vec::with_capacity(places.len());
        for &(fi, di) in &places {
            let f = &report.files[fi];
            let d = &f.documents[di];
            let text = fi
                .checked_sub(offset)
                .and_then(|i| texts.get(i))
                .and_then(|t| t.as_deref())
                .unwrap_or("");
            let location = DocLocation::new(text);
            let dc = DocContext {
                file: &f.path,
                index: d.index,
                job: Some(name.clone()),
                location: &location,
            };
            let pos = location.pos(d.index, "metadata.name", At::Value);
            located.push((
                fi,
                di,
                pos,
                dc.error(
                    ErrorCode::DuplicateName,
                    "metadata.name",
                    At::Value,
                    String::new(),
                ),
            ));
        }
        let describe = |p: &(usize, usize, Pos, JobError)| {
            format!("{}:{}", report.files[p.0].path.display(), p.2.line)
        };
        let all: Vec<String> = located.iter().map(describe).collect();
        for (i, (fi, di, _, mut err)) in located.into_iter().enumerate() {
            let others: Vec<&str> = all
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| s.as_str())
                .collect();
            err.message = format!("job name `{name}` is also used at {}", others.join(", "));
            let doc = &mut report.files[fi].documents[di];
            doc.job = None;
            doc.errors.push(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_file_names() {
        assert!(is_job_file_name("a.yaml"));
        assert!(is_job_file_name("a.yml"));
        assert!(!is_job_file_name("restorectl.yaml"));
        assert!(!is_job_file_name(".a.yaml"));
        assert!(!is_job_file_name("a.yaml.swp"));
        assert!(!is_job_file_name("README.md"));
    }

    #[test]
    fn walk_skips_dot_entries_configs_and_survives_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join("..2026_01_01")).unwrap();
        for f in [
            "a.yaml",
            "sub/b.yml",
            "sub/deeper/c.yaml",
            "restorectl.yaml",
            ".hidden.yaml",
            "notes.txt",
            "..2026_01_01/d.yaml",
        ] {
            std::fs::write(root.join(f), "").unwrap();
        }
        std::os::unix::fs::symlink(root, root.join("sub/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("..2026_01_01/d.yaml"), root.join("d.yaml")).unwrap();
        std::os::unix::fs::symlink(root.join("missing.yaml"), root.join("dangling.yaml")).unwrap();
        let (files, errors) = collect_job_files(&[root.to_path_buf()]);
        let rel: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(rel, ["a.yaml", "d.yaml", "sub/b.yml", "sub/deeper/c.yaml"]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].file.ends_with("dangling.yaml"));
    }
}
