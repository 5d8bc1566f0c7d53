//! Job files (SPEC §4): reading, parsing, validating and hashing declarative job documents.
//!
//! The pipeline is parse-then-validate:
//!
//! 1. [`scan`] finds job files (recursive, `*.yaml`/`*.yml`, dot entries and daemon configs
//!    skipped, symlinks followed, loops survived) and reads each one leniently
//!    ([`parse::read_job_file`]: size limit, UTF-8 check, never a panic);
//! 2. [`parse`] splits a file into YAML documents and deserialises each into the raw
//!    [`raw::JobDocument`] (what the user wrote; unknown keys rejected with their location);
//! 3. [`validate`] checks every rule of SPEC §4.2 against the daemon config and builds a
//!    [`Job`], the only form later modules see. Its fields are private: a `Job` exists only if
//!    validation passed;
//! 4. directory-level rules (duplicate `metadata.name`) run over all files of a scan.
//!
//! A job's `schedule:` section validates into a [`Schedule`] ([`schedule_spec`]); when it fires
//! is [`crate::schedule`]'s arithmetic, and the daemon's scheduler task (`daemon::fires`) turns
//! due fires into runs.
//!
//! Every problem is a [`JobError`] with file, line, column, a stable [`ErrorCode`], the job and
//! field it concerns, a message and a hint. Semantic errors are located through [`locate`],
//! which indexes the YAML events of a file by key path.
//!
//! The spec hash ([`Job::spec_hash`]) is the SHA-256 of a canonical JSON text ([`hash`]) of
//! `apiVersion`, `kind`, `metadata.name` and `spec` as parsed (so key order, comments,
//! whitespace and different spellings of one value do not change it). `metadata.labels` is not
//! part of it: relabelling a job is not a new intent and must not re-run a one-shot job.

pub mod error;
pub mod folder;
pub mod hash;
pub mod locate;
pub mod parse;
pub mod raw;
pub mod scan;
pub mod schedule_spec;
pub mod selector;
pub mod template;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::{Config, RetryPolicy, SecretRef};

pub use error::{ErrorCode, JobError};
pub use folder::{FolderError, FolderTemplate};
pub use parse::{DocumentReport, FileReport, MAX_FILE_SIZE, parse_file, parse_str};
pub use raw::{
    API_VERSION, Archives, BulkRestoreOptions, ConcurrencyPolicy, JobKind, OfficeRegion,
    ReportFormat, RestoreToOptions, json_schema,
};
pub use scan::{
    ScanCache, ScanReport, collect_job_files, scan_paths, scan_paths_cached, scan_paths_if_changed,
};
pub use schedule_spec::Schedule;
pub use selector::{MailboxSelection, Selector};
pub use template::{PathTemplate, Placeholder, TemplateUse, TemplateValues, sanitize};

/// What validation checks a job against.
#[derive(Debug, Clone, Copy)]
pub struct ValidationContext<'a> {
    /// Default time zone, retry policy and run timeout, `exportRoot` and the servers.
    pub config: &'a Config,
    /// Whether `spec.server` is checked against `config.servers` (off when validating without
    /// a daemon config: the output says server names were not checked).
    pub check_servers: bool,
    /// "Now" for the check that a cron expression fires at all.
    pub now: DateTime<Utc>,
}

impl<'a> ValidationContext<'a> {
    /// Full validation against a daemon config.
    pub fn new(config: &'a Config) -> Self {
        ValidationContext {
            config,
            check_servers: true,
            now: Utc::now(),
        }
    }

    /// Validation without a daemon config's server list.
    pub fn without_server_check(config: &'a Config) -> Self {
        ValidationContext {
            check_servers: false,
            ..Self::new(config)
        }
    }
}

/// `spec.organization`: a name (`contoso.onmicrosoft.com`) or an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrganizationRef {
    Id(Uuid),
    Name(String),
}

impl fmt::Display for OrganizationRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrganizationRef::Id(id) => write!(f, "{id}"),
            OrganizationRef::Name(n) => f.write_str(n),
        }
    }
}

/// `spec.pointInTime`: which backup state to restore or export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInTime {
    /// The newest restore point (default).
    Latest,
    /// A fixed instant.
    At(DateTime<Utc>),
    /// Relative to the run's start (`"24h ago"`).
    Ago(Duration),
}

impl PointInTime {
    /// Parses `latest`, an RFC 3339 timestamp or `"<humantime duration> ago"`.
    pub fn parse(text: &str) -> Result<PointInTime, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("latest") {
            return Ok(PointInTime::Latest);
        }
        if let Some(d) = t.strip_suffix(" ago") {
            return humantime::parse_duration(d.trim())
                .map(PointInTime::Ago)
                .map_err(|e| format!("`{d}` is not a duration: {e}"));
        }
        DateTime::parse_from_rfc3339(t)
            .map(|d| PointInTime::At(d.with_timezone(&Utc)))
            .map_err(|_| {
                format!("`{text}` is not `latest`, an RFC 3339 timestamp or \"<duration> ago\"")
            })
    }

    /// The instant to ask the server for, or `None` for the latest state.
    pub fn resolve(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            PointInTime::Latest => None,
            PointInTime::At(t) => Some(*t),
            PointInTime::Ago(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d)),
        }
    }
}

impl fmt::Display for PointInTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointInTime::Latest => f.write_str("latest"),
            PointInTime::At(t) => f.write_str(&t.to_rfc3339()),
            PointInTime::Ago(d) => write!(f, "{} ago", humantime::format_duration(*d)),
        }
    }
}

/// An Azure AD application with a certificate (modern app-only authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationCredentials {
    pub application_id: Uuid,
    pub certificate: SecretRef,
    pub certificate_password: Option<SecretRef>,
    pub impersonation_account_name: Option<String>,
}

/// Sign-in with a device code (`credentials.deviceCode`): what the code is requested for
/// (VB365 `RESTDeviceCodeRequestOptions`); every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCodeCredentials {
    pub application_id: Option<Uuid>,
    pub region: Option<OfficeRegion>,
    pub organization_name: Option<String>,
}

/// Restore / RestoreTo credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Application(ApplicationCredentials),
    User {
        user_name: String,
        password: SecretRef,
    },
    DeviceCode(DeviceCodeCredentials),
}

/// BulkRestore credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkCredentials {
    Application(ApplicationCredentials),
    Office365 {
        user_name: String,
        password: SecretRef,
    },
    OnPremises {
        domain_name: String,
        user_name: String,
        password: SecretRef,
    },
    /// A hybrid organization: Microsoft 365 and on-premises accounts in one request.
    Hybrid {
        office365_user_name: String,
        office365_password: SecretRef,
        domain_name: String,
        on_premises_user_name: String,
        on_premises_password: SecretRef,
    },
    DeviceCode(DeviceCodeCredentials),
}

/// `spec.explore`: how the run's restore session is opened. The default explores the
/// organisation without deleted items and without old versions (what restorectl always sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExploreSettings {
    pub show_deleted: bool,
    pub show_all_versions: bool,
    /// Explore the organisation in this repository (`repositoryId`).
    pub repository_id: Option<Uuid>,
    /// Explore this backup job (`POST /v8/Jobs/{id}/explore`) instead of the organisation.
    pub backup_job: Option<Uuid>,
}

/// Retention of a job's exports (`export.retention`), applied by
/// [`download::apply_retention`](crate::download::apply_retention); `None` fields do not delete
/// anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep this many newest exports per mailbox.
    pub keep_last: Option<u32>,
    /// Keep exports younger than this.
    pub keep_for: Option<Duration>,
}

impl Retention {
    /// A short description for events: `keepLast: 2, keepFor: 400d`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.keep_last {
            parts.push(format!("keepLast: {n}"));
        }
        if let Some(d) = self.keep_for {
            parts.push(format!("keepFor: {}", humantime::format_duration(d)));
        }
        if parts.is_empty() {
            "no retention".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// ExportPst: one PST per mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportAction {
    pub keyword: Option<String>,
    /// Bytes, 1 GiB..=49 GiB.
    pub pst_size_limit: Option<u64>,
    /// `enablePstSizeLimit: false` written in the job: sent as such (then `pst_size_limit` is
    /// `None`).
    pub pst_size_limit_disabled: bool,
    pub path: PathTemplate,
    pub retention: Option<Retention>,
}

/// Restore: each mailbox to its original location.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreAction {
    pub credentials: Credentials,
}

/// RestoreTo: each mailbox into another mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreToAction {
    /// Target mailbox e-mail; `None` leaves the target to the server.
    pub mailbox: Option<String>,
    /// Folder in the target mailbox (placeholders rendered per source mailbox).
    pub folder: Option<FolderTemplate>,
    pub cas_server: Option<String>,
    pub office_region: Option<OfficeRegion>,
    pub office_organization_name: Option<String>,
    pub options: RestoreToOptions,
    pub credentials: Credentials,
}

/// BulkRestore: all mailboxes in one request.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRestoreAction {
    pub cas_server: Option<String>,
    pub options: BulkRestoreOptions,
    /// Days.
    pub recent_item_restore_period: Option<u32>,
    pub credentials: BulkCredentials,
}

/// Search: item search written as a report.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchAction {
    pub query: String,
    pub report: PathTemplate,
    pub format: ReportFormat,
}

/// The kind-specific part of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    ExportPst(ExportAction),
    Restore(RestoreAction),
    RestoreTo(RestoreToAction),
    BulkRestore(BulkRestoreAction),
    Search(SearchAction),
}

/// A validated job. Built only by [`validate::validate`]; nothing outside this module can
/// construct one, so holding a `Job` proves every rule of SPEC §4.2 passed (except the
/// directory-wide unique name, which [`scan_paths`] checks).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    name: String,
    kind: JobKind,
    file: PathBuf,
    document: usize,
    labels: BTreeMap<String, String>,
    server: Option<String>,
    organization: OrganizationRef,
    point_in_time: PointInTime,
    selection: MailboxSelection,
    schedule: Option<Schedule>,
    explore: ExploreSettings,
    suspend: bool,
    retry: RetryPolicy,
    run_timeout: Duration,
    action: Action,
    notify: Option<crate::store::Routing>,
    heartbeat: Option<crate::config::SecretRef>,
    max_restore_point_age: Option<Duration>,
    spec_hash: String,
    spec_json: String,
}

impl Job {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// The file the job was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// 0-based index of the job's document in its file.
    pub fn document(&self) -> usize {
        self.document
    }

    /// `metadata.labels` (not part of the spec hash).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The server name: `spec.server`, or the config's only server when omitted. `None` only
    /// when the job was validated without server checking and names no server.
    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    pub fn organization(&self) -> &OrganizationRef {
        &self.organization
    }

    pub fn point_in_time(&self) -> PointInTime {
        self.point_in_time
    }

    /// Which mailboxes the job works on.
    pub fn selection(&self) -> &MailboxSelection {
        &self.selection
    }

    /// `None`: a one-shot job (runs once per distinct spec hash).
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }

    /// `spec.explore`: how the run's restore session is opened.
    pub fn explore(&self) -> ExploreSettings {
        self.explore
    }

    pub fn suspend(&self) -> bool {
        self.suspend
    }

    /// `spec.retry` applied over the config's `defaults.retry`.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// `spec.runTimeout`, else the config's `defaults.runTimeout`.
    pub fn run_timeout(&self) -> Duration {
        self.run_timeout
    }

    /// `spec.notify` as a routing (it replaces `notifications.defaults`), when given.
    pub fn notify(&self) -> Option<&crate::store::Routing> {
        self.notify.as_ref()
    }

    /// `spec.heartbeat.url`, the secret reference of the ping URL.
    pub fn heartbeat(&self) -> Option<&crate::config::SecretRef> {
        self.heartbeat.as_ref()
    }

    /// `spec.maxRestorePointAge` (only on jobs exploring `latest`).
    pub fn max_restore_point_age(&self) -> Option<Duration> {
        self.max_restore_point_age
    }

    pub fn action(&self) -> &Action {
        &self.action
    }

    /// Hex SHA-256 of [`Job::spec_json`].
    pub fn spec_hash(&self) -> &str {
        &self.spec_hash
    }

    /// The normalised spec: canonical JSON of `apiVersion`, `kind`, `metadata.name` and
    /// `spec`. Secrets appear only as references (`{"secret":"m365-pass"}`).
    pub fn spec_json(&self) -> &str {
        &self.spec_json
    }

    /// One-line description for summaries: `legal-hold-weekly: ExportPst, weekly 0 2 * * SUN
    /// Europe/Berlin` or `offboarding: RestoreTo, one-shot`.
    pub fn summary(&self) -> String {
        let when = match &self.schedule {
            Some(s) => s.summary(),
            None => "one-shot".to_string(),
        };
        let suspended = if self.suspend { ", suspended" } else { "" };
        format!("{}: {}, {when}{suspended}", self.name, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn point_in_time_forms() {
        assert_eq!(PointInTime::parse("latest"), Ok(PointInTime::Latest));
        assert_eq!(
            PointInTime::parse("24h ago"),
            Ok(PointInTime::Ago(Duration::from_secs(86400)))
        );
        assert_eq!(
            PointInTime::parse("2026-01-31T23:00:00+01:00"),
            Ok(PointInTime::At(
                Utc.with_ymd_and_hms(2026, 1, 31, 22, 0, 0).unwrap()
            ))
        );
        for bad in ["yesterday", "24 ago", "2026-01-31", ""] {
            assert!(PointInTime::parse(bad).is_err(), "{bad}");
        }
        let now = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        assert_eq!(
            PointInTime::Ago(Duration::from_secs(3600)).resolve(now),
            Some(Utc.with_ymd_and_hms(2026, 1, 31, 23, 0, 0).unwrap())
        );
        assert_eq!(PointInTime::Latest.resolve(now), None);
    }
}
