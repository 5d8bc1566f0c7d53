//! Reconciliation: a scan of the job directory ([`crate::jobs::scan_paths`]) applied to the store
//! (SPEC §4.2), and the table of job versions the scheduler works from.
//!
//! Files are compared by a content hash, so a rescan of an unchanged directory writes nothing:
//!
//! - a **new or changed** file records a version of each of its jobs (valid or invalid) and the
//!   file row in one transaction (many files per transaction), so the file's new hash is never
//!   recorded without its jobs;
//! - an **invalid** job keeps its last valid version active (the store leaves
//!   `active_version_id` alone); a job whose first version is invalid is not scheduled;
//! - a file that cannot be read or parsed at all (no job names can be read from it) keeps every
//!   job it held before: they are marked invalid with the file's errors, their active versions
//!   stay scheduled. A directory that cannot be read protects every job below it the same way,
//!   so an unmounted volume never looks like "every job was deleted";
//! - a job no longer found in any file is **removed** (no future runs, history kept), and so is
//!   a file that disappeared.
//!
//! The file hash is computed from the scan report (each document's normalised content hash,
//! name and errors), not from the bytes: an edit to a comment changes nothing, a config change
//! that makes a job invalid (an unknown server after SIGHUP) does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::Config;
use crate::jobs::hash::sha256_hex;
use crate::jobs::parse::FileReport;
use crate::jobs::{self, Job, JobError, ScanCache, ScanReport, ValidationContext};
use crate::store::{
    FileApply, FileChange, JobState, NewJobVersion, ScannedFile, Store, StoreError, VersionChange,
    VersionOutcome,
};

/// The version of a job the scheduler uses: its active (last valid) version.
#[derive(Debug, Clone)]
pub struct ActiveJob {
    /// `job_versions.id` of the active version (runs are queued with it).
    pub version_id: i64,
    /// The validated job of that version (shared with the scan that produced it).
    pub job: Arc<Job>,
}

/// Every job with an active version (not removed), by name.
pub type JobTable = BTreeMap<String, ActiveJob>;

/// What one reconciliation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub files_new: usize,
    pub files_changed: usize,
    pub files_unchanged: usize,
    /// Files present with at least one error (new, changed or unchanged).
    pub files_invalid: usize,
    pub files_removed: usize,
    pub jobs_added: Vec<String>,
    pub jobs_changed: Vec<String>,
    /// Jobs recorded with an invalid version in this pass (from new, changed or unreadable files).
    pub jobs_invalid: Vec<String>,
    pub jobs_removed: Vec<String>,
    /// Jobs in the table afterwards (scheduled or one-shot, suspended included).
    pub jobs_active: usize,
}

impl ReconcileReport {
    /// Whether any job or file changed (the scheduler should look again).
    pub fn changed_anything(&self) -> bool {
        self.files_new + self.files_changed + self.files_removed > 0
            || !self.jobs_added.is_empty()
            || !self.jobs_changed.is_empty()
            || !self.jobs_removed.is_empty()
    }
}

/// Applies scans to the store and keeps the [`JobTable`] of active versions.
#[derive(Debug)]
pub struct Reconciler {
    store: Store,
    table: Arc<JobTable>,
    /// Per-file results of the last scan: a rescan only re-reads files that changed.
    cache: ScanCache,
    /// The [`file_hash`] of each file report seen, reused while the scan cache returns the
    /// same report.
    hashes: FileHashes,
    /// The last scan was applied to the store completely (a failed apply is retried even when
    /// no file changed since).
    applied: bool,
    /// What the store holds about job files and jobs, as of the last complete apply: loaded
    /// from the store once, then kept up to date with every write, so a rescan that changed
    /// one file of ten thousand does not read ten thousand rows three times. The daemon's
    /// reconciler is the only writer of these rows while it runs (`run --foreground` takes the
    /// same instance lock); the mirror is dropped and reloaded after any failed apply and after
    /// a config reload.
    known: Option<Known>,
}

/// The reconciler's mirror of the `job_files` and `jobs` rows it decides on.
#[derive(Debug, Default)]
struct Known {
    /// Path → (content hash, present).
    files: HashMap<PathBuf, (String, bool)>,
    jobs: BTreeMap<String, KnownJob>,
}

#[derive(Debug, Clone)]
struct KnownJob {
    kind: String,
    file: PathBuf,
    state: JobState,
    active_version_id: Option<i64>,
}

impl Known {
    async fn load(store: &Store) -> Result<Known, StoreError> {
        let (files, jobs) = tokio::try_join!(store.list_job_files(), store.list_job_rows())?;
        Ok(Known {
            files: files
                .into_iter()
                .map(|f| (f.path, (f.content_hash, f.removed_at.is_none())))
                .collect(),
            jobs: jobs
                .into_iter()
                .map(|j| {
                    (
                        j.name,
                        KnownJob {
                            kind: j.kind,
                            file: j.file,
                            state: j.state,
                            active_version_id: j.active_version_id,
                        },
                    )
                })
                .collect(),
        })
    }

    /// Records what the store did with a job version.
    fn version_applied(&mut self, name: &str, kind: &str, file: &Path, outcome: &VersionOutcome) {
        let entry = self
            .jobs
            .entry(name.to_string())
            .or_insert_with(|| KnownJob {
                kind: kind.to_string(),
                file: file.to_path_buf(),
                state: outcome.state,
                active_version_id: outcome.active_version_id,
            });
        if outcome.state != JobState::Invalid {
            entry.kind = kind.to_string();
        }
        entry.file = file.to_path_buf();
        entry.state = outcome.state;
        entry.active_version_id = outcome.active_version_id;
    }
}

impl Reconciler {
    /// A reconciler over `store` with an empty table (the first [`Reconciler::apply`] fills it).
    pub fn new(store: Store) -> Self {
        Reconciler {
            store,
            table: Arc::new(JobTable::new()),
            cache: ScanCache::default(),
            hashes: FileHashes::default(),
            applied: false,
            known: None,
        }
    }

    /// Forgets the per-file scan results: the next rescan validates every file again (after a
    /// config change, which validation depends on).
    pub fn forget_scans(&mut self) {
        self.cache.clear();
        self.applied = false;
        self.known = None;
    }

    /// The table after the last pass.
    pub fn table(&self) -> Arc<JobTable> {
        Arc::clone(&self.table)
    }

    /// Scans `config.jobs_dir` (on a blocking thread: reading and parsing thousands of files is
    /// file I/O and CPU; only files changed since the last scan are read) and applies the result.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the state database fails; the table is then left as it was.
    pub async fn rescan(
        &mut self,
        config: &Arc<Config>,
        now: DateTime<Utc>,
    ) -> Result<ReconcileReport, StoreError> {
        let started = std::time::Instant::now();
        let scan_config = Arc::clone(config);
        let mut cache = std::mem::take(&mut self.cache);
        let applied = self.applied;
        let (report, cache) = tokio::task::spawn_blocking(move || {
            let dirs = std::slice::from_ref(&scan_config.jobs_dir);
            let ctx = ValidationContext {
                now,
                ..ValidationContext::new(&scan_config)
            };
            // Nothing changed since a scan that was applied: same result, skip the work (the
            // periodic safety-net rescan of a large directory costs a walk and stats only).
            let report = if applied {
                jobs::scan_paths_if_changed(dirs, &ctx, &mut cache)
            } else {
                Some(jobs::scan_paths_cached(dirs, &ctx, &mut cache))
            };
            (report, cache)
        })
        .await
        // The scan never panics on bad input; a panic is a bug worth crashing loudly on.
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.cache = cache;
        let Some(report) = report else {
            return Ok(ReconcileReport {
                files_unchanged: self.cache.len(),
                jobs_active: self.table.len(),
                ..ReconcileReport::default()
            });
        };
        let scanned = started.elapsed();
        self.applied = false;
        let out = self.apply(&report, config, now).await?;
        self.applied = true;
        tracing::debug!(
            scan_ms = scanned.as_millis() as u64,
            apply_ms = (started.elapsed() - scanned).as_millis() as u64,
            "job directory scanned and applied"
        );
        Ok(out)
    }

    /// Applies one scan report to the store and rebuilds the table.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the state database fails; the table is then left as it was.
    pub async fn apply(
        &mut self,
        scan: &ScanReport,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<ReconcileReport, StoreError> {
        let mut out = ReconcileReport::default();
        // Taken out for the pass: an error below leaves it `None`, so the next pass reloads it.
        let mut known = match self.known.take() {
            Some(k) => k,
            None => Known::load(&self.store).await?,
        };

        let mut seen_names: HashSet<String> = HashSet::new();
        let mut seen_files: HashSet<&Path> = HashSet::new();
        // Files (or directories) that could not be read or parsed: the jobs they held stay.
        let mut protected: Vec<(PathBuf, &FileReport)> = Vec::new();
        // Versions found valid in this scan, with the job to schedule.
        let mut valid_now: HashMap<&str, &Arc<Job>> = HashMap::new();
        // New or changed files (with their content hash), applied in chunks after the walk.
        let mut pending: Vec<(&FileReport, String)> = Vec::new();

        for file in &scan.files {
            seen_files.insert(&file.path);
            let hash = self.hashes.of(file);
            if !file.is_valid() {
                out.files_invalid += 1;
            }
            // Some document's name cannot be read (or nothing can): which jobs the file still
            // holds is unknown, so none of its old jobs is removed.
            let unreadable =
                !file.errors.is_empty() || file.documents.iter().any(|d| d.name.is_none());
            if unreadable && !file.is_valid() {
                protected.push((file.path.clone(), file));
            }
            for doc in &file.documents {
                if let Some(job) = &doc.job {
                    valid_now.insert(job.name(), job);
                }
            }
            seen_names.extend(file.documents.iter().filter_map(|d| d.name.clone()));
            let unchanged = matches!(
                known.files.get(&file.path),
                Some((known_hash, true)) if *known_hash == hash
            );
            if unchanged {
                out.files_unchanged += 1;
                continue;
            }
            // Built per chunk below: a first scan of 10,000 files held every spec as a JSON
            // tree at once.
            pending.push((file, hash.to_string()));
        }
        // Many files per transaction: thousands of new files commit in a few transactions.
        for chunk in pending.chunks(APPLY_CHUNK) {
            let chunk: Vec<PendingFile> = chunk
                .iter()
                .map(|(file, hash)| PendingFile::of(file, hash))
                .collect();
            let applies: Vec<FileApply<'_>> = chunk.iter().map(PendingFile::as_apply).collect();
            let results = self
                .store
                .apply_job_files(&applies, &config.notifications.defaults, now)
                .await?;
            for (file, (change, outcomes)) in chunk.iter().zip(results) {
                known
                    .files
                    .insert(file.path.clone(), (file.hash.clone(), true));
                for (v, outcome) in file.versions.iter().zip(outcomes) {
                    count_version(&mut out, &v.name, outcome.change, outcome.state);
                    known.version_applied(&v.name, &v.kind, &file.path, &outcome);
                }
                match change {
                    FileChange::New => out.files_new += 1,
                    FileChange::Changed => out.files_changed += 1,
                    FileChange::Unchanged => out.files_unchanged += 1,
                }
            }
        }

        // Jobs not found in any file: kept (marked invalid) when their file is protected,
        // removed otherwise.
        let unseen: Vec<(String, KnownJob)> = known
            .jobs
            .iter()
            .filter(|(name, job)| job.state != JobState::Removed && !seen_names.contains(*name))
            .map(|(name, job)| (name.clone(), job.clone()))
            .collect();
        for (name, job) in &unseen {
            if let Some((_, report)) = protected.iter().find(|(p, _)| job.file.starts_with(p)) {
                let errors = errors_json(report.all_errors());
                let spec_hash = sha256_hex(&format!("unreadable:{}", Value::from(errors.clone())));
                let outcome = self
                    .store
                    .upsert_job_version(
                        &NewJobVersion {
                            name,
                            kind: &job.kind,
                            file: &job.file,
                            spec_hash: &spec_hash,
                            spec: &Value::Null,
                            valid: false,
                            errors: &Value::Array(errors),
                        },
                        now,
                    )
                    .await?;
                count_version(&mut out, name, outcome.change, outcome.state);
                known.version_applied(name, &job.kind, &job.file, &outcome);
                seen_names.insert(name.clone());
                continue;
            }
            if self.store.mark_job_removed(name, now).await? {
                out.jobs_removed.push(name.clone());
            }
            if let Some(j) = known.jobs.get_mut(name) {
                j.state = JobState::Removed;
            }
        }
        for (path, (_, present)) in known.files.iter_mut() {
            let covered = protected.iter().any(|(p, _)| path.starts_with(p));
            if *present && !seen_files.contains(path.as_path()) && !covered {
                self.store.mark_job_file_removed(path, now).await?;
                *present = false;
                out.files_removed += 1;
            }
        }

        self.hashes.keep_only(&seen_files);
        self.table = Arc::new(
            self.build_table(&known, &seen_names, valid_now, config)
                .await?,
        );
        self.known = Some(known);
        out.jobs_active = self.table.len();
        Ok(out)
    }

    /// The table for the jobs seen in this pass: valid ones from the scan, the others from
    /// their active version (kept from the last table when it is the same version, else
    /// rebuilt from the stored spec).
    async fn build_table(
        &self,
        known: &Known,
        seen: &HashSet<String>,
        valid_now: HashMap<&str, &Arc<Job>>,
        config: &Config,
    ) -> Result<JobTable, StoreError> {
        let mut table = JobTable::new();
        for (name, state) in &known.jobs {
            if state.state == JobState::Removed || !seen.contains(name) {
                continue;
            }
            let Some(version_id) = state.active_version_id else {
                continue;
            };
            if let Some(&job) = valid_now.get(name.as_str()) {
                let job = Arc::clone(job);
                table.insert(name.clone(), ActiveJob { version_id, job });
                continue;
            }
            if let Some(old) = self.table.get(name)
                && old.version_id == version_id
            {
                table.insert(name.clone(), old.clone());
                continue;
            }
            let version = self.store.get_job_version(version_id).await?;
            match job_from_spec(config, &version.file, &version.spec_json) {
                Ok(job) => {
                    let job = Arc::new(job);
                    table.insert(name.clone(), ActiveJob { version_id, job });
                }
                Err(message) => tracing::error!(
                    job = %name,
                    version = version_id,
                    error = %message,
                    "the last valid version of this job no longer validates; it is not scheduled"
                ),
            }
        }
        Ok(table)
    }
}

/// Files applied per store transaction.
const APPLY_CHUNK: usize = 256;

/// A job version to record, owned (borrowed into [`NewJobVersion`] per chunk).
struct PendingVersion {
    name: String,
    kind: String,
    spec_hash: String,
    spec: Value,
    valid: bool,
    errors: Value,
}

/// A new or changed file to record with its job versions.
struct PendingFile {
    path: PathBuf,
    hash: String,
    valid: bool,
    errors: Value,
    names: Vec<String>,
    versions: Vec<PendingVersion>,
}

impl PendingFile {
    /// The rows to record for a new or changed `file` whose content hash is `hash`.
    fn of(file: &FileReport, hash: &str) -> PendingFile {
        let versions = file
            .documents
            .iter()
            .filter_map(|doc| {
                let name = doc.name.clone()?;
                Some(match &doc.job {
                    Some(job) => PendingVersion {
                        name,
                        kind: job.kind().as_str().to_string(),
                        spec_hash: job.spec_hash().to_string(),
                        spec: serde_json::from_str(job.spec_json()).unwrap_or(Value::Null),
                        valid: true,
                        errors: Value::Array(Vec::new()),
                    },
                    None => {
                        let errors = errors_json(doc.errors.iter().chain(&file.errors));
                        let spec_hash = doc.content_hash.clone().unwrap_or_else(|| {
                            sha256_hex(&format!("invalid:{}", Value::from(errors.clone())))
                        });
                        PendingVersion {
                            name,
                            kind: doc.kind.clone().unwrap_or_else(|| "unknown".into()),
                            spec_hash,
                            spec: Value::Null,
                            valid: false,
                            errors: Value::Array(errors),
                        }
                    }
                })
            })
            .collect();
        PendingFile {
            path: file.path.clone(),
            hash: hash.to_string(),
            valid: file.is_valid(),
            errors: Value::Array(errors_json(file.all_errors())),
            names: file_job_names(file),
            versions,
        }
    }

    fn as_apply(&self) -> FileApply<'_> {
        FileApply {
            file: ScannedFile {
                path: &self.path,
                content_hash: &self.hash,
                valid: self.valid,
                errors: &self.errors,
                job_names: &self.names,
            },
            versions: self
                .versions
                .iter()
                .map(|v| NewJobVersion {
                    name: &v.name,
                    kind: &v.kind,
                    file: &self.path,
                    spec_hash: &v.spec_hash,
                    spec: &v.spec,
                    valid: v.valid,
                    errors: &v.errors,
                })
                .collect(),
        }
    }
}

/// Rebuilds a validated job from a stored normalised spec (JSON is YAML, so the job-file parser
/// reads it back).
pub fn job_from_spec(config: &Config, file: &Path, spec: &Value) -> Result<Job, String> {
    let ctx = ValidationContext::new(config);
    let report = jobs::parse_str(&spec.to_string(), file, &ctx);
    let errors: Vec<String> = report.all_errors().map(|e| e.to_string()).collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    report
        .jobs()
        .next()
        .cloned()
        .ok_or_else(|| format!("{}: the stored version holds no job", file.display()))
}

fn count_version(out: &mut ReconcileReport, name: &str, change: VersionChange, state: JobState) {
    if state == JobState::Invalid {
        out.jobs_invalid.push(name.to_string());
    }
    match change {
        VersionChange::New if state == JobState::Active => out.jobs_added.push(name.to_string()),
        VersionChange::Changed if state == JobState::Active => {
            out.jobs_changed.push(name.to_string());
        }
        _ => {}
    }
}

/// [`file_hash`] per path, kept with the report it was computed from.
#[derive(Debug, Default)]
struct FileHashes(HashMap<PathBuf, (Arc<FileReport>, String)>);

impl FileHashes {
    /// The hash of `file`, computed again only when the report is not the one last seen.
    fn of(&mut self, file: &Arc<FileReport>) -> &str {
        // Looked up by reference: the path is cloned only for a new or re-read file.
        let current = self
            .0
            .get(&file.path)
            .is_some_and(|(seen, _)| Arc::ptr_eq(seen, file));
        if !current {
            self.0
                .insert(file.path.clone(), (Arc::clone(file), file_hash(file)));
        }
        &self.0[&file.path].1
    }

    /// Forgets files not in `seen`.
    fn keep_only(&mut self, seen: &HashSet<&Path>) {
        self.0.retain(|path, _| seen.contains(path.as_path()));
    }
}

/// `metadata.name` of every document of a file that has one.
fn file_job_names(file: &FileReport) -> Vec<String> {
    let mut names: Vec<String> = file
        .documents
        .iter()
        .filter_map(|d| d.name.clone())
        .collect();
    names.dedup();
    names
}

/// The identity of a file's meaning: every document's content hash, name and errors, and the
/// file-level errors.
fn file_hash(file: &FileReport) -> String {
    let mut text = String::new();
    for doc in &file.documents {
        text.push_str(&format!(
            "doc {} {} {}\n",
            doc.index,
            doc.name.as_deref().unwrap_or("-"),
            doc.content_hash.as_deref().unwrap_or("-")
        ));
        for e in &doc.errors {
            text.push_str(&format!("  {e}\n"));
        }
    }
    for e in &file.errors {
        text.push_str(&format!("file {e}\n"));
    }
    sha256_hex(&text)
}

fn errors_json<'a>(errors: impl Iterator<Item = &'a JobError>) -> Vec<Value> {
    errors
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect()
}
