//! Finding and validating every job file of a directory (or a list of paths), plus the rules
//! that span files: a `metadata.name` may appear only once.
//!
//! Walking rules: directories are read recursively in name order; entries whose name starts
//! with `.` are skipped (editor swap files, `.git`, and the `..data`/`..2026_…` entries of a
//! Kubernetes ConfigMap volume, whose real files are reached through the visible symlinks);
//! files named like the daemon config (`restorectl.yaml`/`.yml`) are skipped; only `*.yaml`
//! and `*.yml` are read; symlinks are followed, and a directory already visited (a symlink
//! loop) is not entered again. A path given explicitly is read whatever its extension.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ErrorCode, JobError};
use super::locate::Pos;
use super::parse::{FileReport, parse_str, read_job_file};
use super::validate::{At, DocContext, DocLocation};
use super::{Job, ValidationContext};
use crate::config::CONFIG_FILE_NAMES;

/// The outcome of validating a set of job files.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// One report per file, in walk order (shared with the daemon's scan cache, so a rescan
    /// that re-reads one file of thousands copies no other report).
    pub files: Vec<Arc<FileReport>>,
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
        .filter_map(|e| match e.file_name().into_string() {
            Ok(name) => Some((name, e.path())),
            Err(raw) => {
                // Skipping a job file silently would hide a job from the operator; its path
                // cannot be stored either (the state keeps UTF-8 paths), so it is reported
                // under its lossy name.
                let lossy = raw.to_string_lossy().into_owned();
                if is_job_file_name(&lossy) {
                    errors.push(io_error(
                        &dir.join(&lossy),
                        format!(
                            "the file name {lossy:?} is not valid UTF-8; the file is ignored until it is renamed"
                        ),
                    ));
                }
                None
            }
        })
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
        report.files.push(Arc::new(FileReport::unreadable(e)));
    }
    let parsed = parse_all(&files, ctx);
    let mut texts = Vec::with_capacity(parsed.len());
    for (file_report, text) in parsed {
        report.files.push(Arc::new(file_report));
        texts.push(text);
    }
    let offset = report.files.len() - texts.len();
    check_duplicate_names(&mut report, offset, &texts);
    report
}

/// What identifies a file's content without reading it: device, inode, size and the
/// modification and change times (nanoseconds). An editor's atomic save and a ConfigMap swap
/// both produce a new inode; an in-place write changes the times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of `path` (symlinks followed), `None` when it cannot be read.
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
            Some(FileStamp {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime_ns: ns(m.mtime(), m.mtime_nsec()),
                ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            })
        }
        #[cfg(not(unix))]
        {
            let modified = m
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            Some(FileStamp {
                dev: 0,
                ino: 0,
                len: m.len(),
                mtime_ns: i128::try_from(modified.as_nanos()).unwrap_or(i128::MAX),
                ctime_ns: 0,
            })
        }
    }
}

/// The per-file results of the previous scan, so a rescan of a large directory only reads and
/// validates the files whose [`FileStamp`] changed (the daemon rescans on every event and
/// periodically; re-parsing 10,000 unchanged files each time would cost seconds of CPU).
///
/// Validation depends on the daemon config (servers, time zone, defaults): call
/// [`ScanCache::clear`] when it changes.
#[derive(Debug, Default)]
pub struct ScanCache {
    entries: HashMap<PathBuf, CachedFile>,
}

#[derive(Debug)]
struct CachedFile {
    stamp: FileStamp,
    /// The file's report before the directory-wide rules.
    report: Arc<FileReport>,
    text: Option<Arc<str>>,
}

impl ScanCache {
    /// Forgets every file (the next scan reads everything).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Files remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a walk found exactly the files of the last scan, each with the same stamp (and
    /// no walk errors): then a scan's result would be the same.
    fn matches(
        &self,
        files: &[PathBuf],
        walk_errors: &[JobError],
        stamps: &[Option<FileStamp>],
    ) -> bool {
        !self.entries.is_empty()
            && walk_errors.is_empty()
            && files.len() == self.entries.len()
            && files
                .iter()
                .zip(stamps)
                .all(|(f, stamp)| self.entries.get(f).is_some_and(|c| *stamp == Some(c.stamp)))
    }
}

/// [`scan_paths`] that reuses `cache` for files whose stamp did not change, and updates it.
/// The result is the same as a full scan's.
pub fn scan_paths_cached(
    paths: &[PathBuf],
    ctx: &ValidationContext<'_>,
    cache: &mut ScanCache,
) -> ScanReport {
    let (files, walk_errors) = collect_job_files(paths);
    let stamps: Vec<Option<FileStamp>> = files.iter().map(|f| FileStamp::of(f)).collect();
    scan_walked(files, walk_errors, stamps, ctx, cache)
}

/// [`scan_paths_cached`], or `None` when the walk finds exactly the files of the cache's last
/// scan with the same stamps (the result would be the same): a periodic rescan of an unchanged
/// directory costs one walk and a `stat` per file, and a changed one is walked only once.
pub fn scan_paths_if_changed(
    paths: &[PathBuf],
    ctx: &ValidationContext<'_>,
    cache: &mut ScanCache,
) -> Option<ScanReport> {
    let (files, walk_errors) = collect_job_files(paths);
    let stamps: Vec<Option<FileStamp>> = files.iter().map(|f| FileStamp::of(f)).collect();
    if cache.matches(&files, &walk_errors, &stamps) {
        return None;
    }
    Some(scan_walked(files, walk_errors, stamps, ctx, cache))
}

fn scan_walked(
    files: Vec<PathBuf>,
    walk_errors: Vec<JobError>,
    stamps: Vec<Option<FileStamp>>,
    ctx: &ValidationContext<'_>,
    cache: &mut ScanCache,
) -> ScanReport {
    let mut report = ScanReport::default();
    for e in walk_errors {
        report.files.push(Arc::new(FileReport::unreadable(e)));
    }
    let misses: Vec<PathBuf> = files
        .iter()
        .zip(&stamps)
        .filter(|(f, stamp)| {
            !matches!((cache.entries.get(*f), stamp), (Some(c), Some(s)) if c.stamp == *s)
        })
        .map(|(f, _)| f.clone())
        .collect();
    let mut parsed = parse_all(&misses, ctx).into_iter();
    let mut texts = Vec::with_capacity(files.len());
    let mut fresh = HashMap::with_capacity(files.len());
    for (file, stamp) in files.iter().zip(stamps) {
        let hit = match (cache.entries.remove(file), stamp) {
            (Some(c), Some(s)) if c.stamp == s => Some(c),
            _ => None,
        };
        let entry = match hit {
            Some(c) => c,
            None => {
                // `misses` is `files` filtered in order, so the next parsed result is this file's.
                let Some((file_report, text)) = parsed.next() else {
                    continue;
                };
                match stamp {
                    Some(stamp) => CachedFile {
                        stamp,
                        report: Arc::new(file_report),
                        text,
                    },
                    None => {
                        report.files.push(Arc::new(file_report));
                        texts.push(text);
                        continue;
                    }
                }
            }
        };
        report.files.push(Arc::clone(&entry.report));
        texts.push(entry.text.clone());
        fresh.insert(file.clone(), entry);
    }
    cache.entries = fresh;
    let offset = report.files.len() - texts.len();
    check_duplicate_names(&mut report, offset, &texts);
    report
}

/// Reads and validates files, on up to two threads (most machines running this have 2+
/// cores, and parsing dominates a large scan). Order follows `files`.
fn parse_all(
    files: &[PathBuf],
    ctx: &ValidationContext<'_>,
) -> Vec<(FileReport, Option<Arc<str>>)> {
    let one = |p: &PathBuf| match read_job_file(p) {
        Ok(text) => (parse_str(&text, p, ctx), Some(Arc::from(text))),
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
fn check_duplicate_names(report: &mut ScanReport, offset: usize, texts: &[Option<Arc<str>>]) {
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
            // Copy on write: the cache keeps the report as the file alone makes it.
            let doc = &mut Arc::make_mut(&mut report.files[fi]).documents[di];
            doc.job = None;
            doc.errors.push(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_scan_rereads_only_changed_files_and_matches_a_full_scan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let config = crate::config::Config::builtin_defaults();
        let ctx = ValidationContext::without_server_check(&config);
        let job = |name: &str, mailbox: &str| {
            format!(
                "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata: {{ name: {name} }}\nspec:\n  \
                 organization: contoso.onmicrosoft.com\n  mailboxes: [{mailbox}]\n  \
                 export: {{ path: \"{{job}}/{{mailbox}}.pst\" }}\n"
            )
        };
        std::fs::write(root.join("a.yaml"), job("a", "alice@contoso.com")).unwrap();
        std::fs::write(root.join("b.yaml"), job("b", "bob@contoso.com")).unwrap();
        let paths = [root.to_path_buf()];
        let mut cache = ScanCache::default();
        let first = scan_paths_cached(&paths, &ctx, &mut cache);
        assert_eq!(cache.len(), 2);
        assert!(first.is_valid());
        let hash = |r: &ScanReport, n: &str| {
            r.jobs()
                .find(|j| j.name() == n)
                .map(|j| j.spec_hash().to_string())
        };
        // An atomic save of b (new inode) and a duplicate name created in c.
        std::fs::write(root.join(".b.tmp"), job("b", "carol@contoso.com")).unwrap();
        std::fs::rename(root.join(".b.tmp"), root.join("b.yaml")).unwrap();
        std::fs::write(root.join("c.yaml"), job("a", "dave@contoso.com")).unwrap();
        let cached = scan_paths_cached(&paths, &ctx, &mut cache);
        let full = scan_paths(&paths, &ctx);
        assert_ne!(hash(&cached, "b"), hash(&first, "b"));
        assert_eq!(hash(&cached, "b"), hash(&full, "b"));
        let errors = |r: &ScanReport| r.errors().map(|e| e.to_string()).collect::<Vec<_>>();
        assert_eq!(errors(&cached), errors(&full));
        assert_eq!(
            errors(&cached).len(),
            2,
            "the duplicate is reported in both files"
        );
        assert!(
            scan_paths_if_changed(&paths, &ctx, &mut cache).is_none(),
            "nothing changed since"
        );
        // Removing c clears the duplicate even though a.yaml itself is a cache hit.
        std::fs::remove_file(root.join("c.yaml")).unwrap();
        let again = scan_paths_if_changed(&paths, &ctx, &mut cache).expect("a file is gone");
        assert!(again.is_valid(), "{:?}", errors(&again));
        assert_eq!(cache.len(), 2);
    }

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
