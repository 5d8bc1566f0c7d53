//! What the user literally wrote: the serde types of one job document (SPEC §4, §4.1).
//!
//! Every struct denies unknown keys, so a typo fails with FILE:LINE:COLUMN while parsing.
//! Values that need context (cron, time zone, server, paths, bounds) stay as written here and
//! are checked by [`super::validate`], which builds the typed [`super::Job`]. The same types
//! derive `JsonSchema` for `restorectl schema`, and `Serialize` for the normalised spec JSON that
//! the spec hash is computed from (secrets appear there only as references).
//!
//! Kind-specific sections are five optional fields rather than a serde enum: serde cannot
//! combine `deny_unknown_fields` with `flatten`, and separate fields let the validator report
//! "section `restore` does not match kind ExportPst" at the section's own line.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::config::{RetrySpec, SecretRef};
pub use crate::store::NotifyEvent;

/// The only `apiVersion` this version understands.
pub const API_VERSION: &str = "restorectl/v1";

/// One job document.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(
    title = "restorectl job",
    description = "One restorectl job document (SPEC §4)."
)]
pub struct JobDocument {
    /// Always `restorectl/v1`.
    pub api_version: String,
    pub kind: JobKind,
    pub metadata: Metadata,
    pub spec: Spec,
}

/// The five job kinds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
pub enum JobKind {
    /// One PST per selected mailbox, downloaded and published under `exportRoot`.
    ExportPst,
    /// Each selected mailbox back to its original location.
    Restore,
    /// Each selected mailbox into another mailbox.
    RestoreTo,
    /// All selected mailboxes in one request.
    BulkRestore,
    /// Item search written as a report.
    Search,
}

impl JobKind {
    /// The kind as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::ExportPst => "ExportPst",
            JobKind::Restore => "Restore",
            JobKind::RestoreTo => "RestoreTo",
            JobKind::BulkRestore => "BulkRestore",
            JobKind::Search => "Search",
        }
    }

    /// The `spec` key of this kind's own section.
    pub fn section(self) -> &'static str {
        match self {
            JobKind::ExportPst => "export",
            JobKind::Restore => "restore",
            JobKind::RestoreTo => "restoreTo",
            JobKind::BulkRestore => "bulkRestore",
            JobKind::Search => "search",
        }
    }

    /// Whether the kind sends restore requests (at most once per step, SPEC §5).
    pub fn is_restore(self) -> bool {
        matches!(
            self,
            JobKind::Restore | JobKind::RestoreTo | JobKind::BulkRestore
        )
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Unique across the job directory: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
    pub name: String,
    /// Free-form labels. Not part of the spec hash: relabelling is not a new intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `spec`: the fields every kind shares, plus the five kind-specific sections (exactly the one
/// matching `kind` must be present).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// Server name from the daemon config; optional when the config has exactly one server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Organization name (e.g. `contoso.onmicrosoft.com`) or id (uuid).
    pub organization: String,
    /// `latest` (default), an RFC 3339 timestamp, or `"<duration> ago"` (e.g. `"24h ago"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<String>,
    /// Mailbox selectors, resolved at run time against the restore session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailboxes: Option<Vec<Selector>>,
    /// Mailboxes removed from the selection (same selector forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<Selector>>,
    /// Archive mailboxes (`isArchive`): include (default), exclude or only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archives: Option<Archives>,
    /// When to run; without it the job is one-shot (runs once per distinct spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// `true`: no new scheduled runs; running ones continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Per-step retry policy; missing keys come from the config's `defaults.retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// How the run's restore session is opened: deleted items, all versions, a repository or
    /// a backup job (default: the organisation's latest data in its primary repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explore: Option<ExploreSpec>,
    /// Bound of a whole run (default: the config's `defaults.runTimeout`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub run_timeout: Option<Duration>,
    /// ExportPst section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSpec>,
    /// Restore section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
    /// RestoreTo section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_to: Option<RestoreToSpec>,
    /// BulkRestore section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_restore: Option<BulkRestoreSpec>,
    /// Search section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSpec>,
    /// Who gets this job's notifications; replaces the config's `notifications.defaults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
    /// Dead-man's switch pinged at run start, success and failure (healthchecks.io style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatSpec>,
    /// Freshness guard: a run exploring `latest` fails when the organisation's newest restore
    /// point is older than this (e.g. `26h`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub max_restore_point_age: Option<Duration>,
}

/// `spec.notify`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifySpec {
    /// Names under the config's `notifications.targets`; empty: no notifications for this job.
    pub targets: Vec<String>,
    /// Default: failed, needs_attention, missed, invalid, recovered, stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<NotifyEvent>>,
}

/// `spec.heartbeat`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatSpec {
    /// The ping URL, a secret reference (it usually embeds a token).
    pub url: SecretRef,
}

impl Spec {
    /// The kind-specific sections that are present, as (`spec` key, kind it belongs to).
    pub fn present_sections(&self) -> Vec<(&'static str, JobKind)> {
        let mut v = Vec::new();
        if self.export.is_some() {
            v.push(("export", JobKind::ExportPst));
        }
        if self.restore.is_some() {
            v.push(("restore", JobKind::Restore));
        }
        if self.restore_to.is_some() {
            v.push(("restoreTo", JobKind::RestoreTo));
        }
        if self.bulk_restore.is_some() {
            v.push(("bulkRestore", JobKind::BulkRestore));
        }
        if self.search.is_some() {
            v.push(("search", JobKind::Search));
        }
        v
    }
}

/// Which archive mailboxes a selection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Archives {
    /// Primary and archive mailboxes (default).
    #[default]
    Include,
    /// Primary mailboxes only.
    Exclude,
    /// Archive mailboxes only.
    Only,
}

/// `spec.schedule`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    /// 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first.
    pub cron: String,
    /// IANA time zone; default: the config's `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A missed fire older than this is recorded as missed, not run. Absent: no limit.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub starting_deadline: Option<Duration>,
    /// What a fire does while a run of the job is active (default Forbid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
}

/// `spec.explore`: the options of the restore session a run opens (VB365
/// `RESTOrganizationExploreOptions`, or `RESTExploreOptions` with `backupJob`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExploreSpec {
    /// Show items the user had deleted before the point in time (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_deleted: Option<bool>,
    /// Show every backed-up version of changed items, not only the newest (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_all_versions: Option<bool>,
    /// Explore the organisation's backups in this repository (uuid), e.g. a backup copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<uuid::Uuid>")]
    pub repository_id: Option<String>,
    /// Explore the backups of this VB365 backup job (uuid) instead of the whole organisation.
    /// Not together with `repositoryId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<uuid::Uuid>")]
    pub backup_job: Option<String>,
}

/// What a scheduled fire does while a run of the same job is active (SPEC §4.3); one type
/// shared with the scheduler.
pub use crate::schedule::ConcurrencyPolicy;

/// `spec.export` (ExportPst).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportSpec {
    /// Only items matching this keyword (VB365 `contentKeyword`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// `false`: no size limit, said explicitly to the server (`enablePstSizeLimit: false`).
    /// `true` needs `pstSizeLimit`. Absent: a limit exactly when `pstSizeLimit` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_pst_size_limit: Option<bool>,
    /// Split PSTs at this size, 1GiB..49GiB (the vendor's "1 GB" is 1073741824 bytes, so
    /// GB there means GiB); the server then answers with a ZIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pst_size_limit: Option<Size>,
    /// Path template relative to `exportRoot`, ending in `.pst`.
    pub path: String,
    /// Retention of this job's exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
}

/// `spec.export.retention`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionSpec {
    /// Keep the exports of the newest N successful runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep exports younger than this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub keep_for: Option<Duration>,
}

/// `spec.restore` (Restore).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSpec {
    pub credentials: CredentialsSpec,
}

/// Restore / RestoreTo credentials: exactly one of `application`, `user` or `deviceCode`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsSpec {
    /// Modern app-only authentication (Azure AD application with a certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationCredentialsSpec>,
    /// A Microsoft 365 account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserCredentialsSpec>,
    /// Sign-in by an operator with a device code (MFA-protected accounts): the run asks for a
    /// code, waits in `needs_attention` until `restorectl resolve RUN --continue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_code: Option<DeviceCodeSpec>,
}

/// `credentials.deviceCode` (VB365 `RESTDeviceCodeRequestOptions`); every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceCodeSpec {
    /// Azure AD application (uuid) to sign in to (`targetApplicationId`); default: the
    /// server's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<uuid::Uuid>")]
    pub application_id: Option<String>,
    /// Microsoft 365 region of the target organization (`targetRegion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<OfficeRegion>,
    /// Target organization name (`targetOrganizationName`), e.g. `contoso.onmicrosoft.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
}

/// `credentials.application`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationCredentialsSpec {
    /// Azure AD application id (uuid).
    pub application_id: String,
    /// The application's certificate (PFX bytes).
    pub certificate: SecretRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_password: Option<SecretRef>,
    /// Account used for impersonation (EWS), e.g. `admin@contoso.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonation_account_name: Option<String>,
}

/// `credentials.user` and BulkRestore `credentials.office365`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserCredentialsSpec {
    pub user_name: String,
    pub password: SecretRef,
}

/// BulkRestore `credentials.onPremises`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnPremisesCredentialsSpec {
    pub domain_name: String,
    pub user_name: String,
    pub password: SecretRef,
}

/// `spec.restoreTo` (RestoreTo).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreToSpec {
    /// Target mailbox (e-mail). Optional, as in the vendor's schema: without it the server
    /// picks the target (each mailbox's namesake, e.g. in `officeOrganizationName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// Folder in the target mailbox: any text (a mailbox folder, not a file path); the known
    /// `{placeholders}` are replaced, `{{`/`}}` write literal braces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_region: Option<OfficeRegion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_organization_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<RestoreToOptions>,
    pub credentials: CredentialsSpec,
}

/// Microsoft 365 region of the target organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum OfficeRegion {
    Worldwide,
    Germany,
    China,
    USDefence,
    USGovernment,
}

/// RestoreTo options; an absent option keeps the server's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreToOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_items: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_items: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_restored_as_unread: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_drafts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_deleted_items: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_in_place_hold_items: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_litigation_hold_items: Option<bool>,
}

/// `spec.bulkRestore` (BulkRestore).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkRestoreSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BulkRestoreOptions>,
    /// Days: items backed up in this recent period are restored first, then the rest (the
    /// vendor's `recentItemRestorePeriod`, an int32; it orders the restore, it does not filter
    /// it). 0 to 2147483647.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub recent_item_restore_period: Option<u32>,
    pub credentials: BulkCredentialsSpec,
}

/// BulkRestore options; an absent option keeps the server's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkRestoreOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_items: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_items: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_restored_as_unread: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_unresolved: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_drafts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_deleted_items: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_in_place_hold_items: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_litigation_hold_items: Option<bool>,
}

/// BulkRestore credentials: exactly one of `application`, `office365`, `onPremises` or
/// `deviceCode`, or `office365` together with `onPremises` (a hybrid organization).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkCredentialsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationCredentialsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office365: Option<UserCredentialsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_premises: Option<OnPremisesCredentialsSpec>,
    /// Sign-in by an operator with a device code (see `credentials.deviceCode` of Restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_code: Option<DeviceCodeSpec>,
}

/// `spec.search` (Search).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchSpec {
    /// VB365 search query, e.g. `from:ceo@contoso.com subject:"board minutes"`.
    pub query: String,
    pub report: ReportSpec,
}

/// `spec.search.report`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportSpec {
    /// Path template relative to `exportRoot` (one report per run: no {mailbox}).
    pub path: String,
    /// jsonl (default) or csv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ReportFormat>,
}

/// Search report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    #[default]
    Jsonl,
    Csv,
}

/// A mailbox selector as written: an e-mail string, `{id}`, `{match}` or `{all: true}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    Email(String),
    Id(String),
    Match(String),
    All(bool),
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Selector::Email(e) => s.serialize_str(e),
            Selector::Id(v) => single(s, "id", v),
            Selector::Match(v) => single(s, "match", v),
            Selector::All(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("all", b)?;
                m.end()
            }
        }
    }
}

fn single<S: Serializer>(s: S, key: &str, value: &str) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(key, value)?;
    m.end()
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Selector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a mailbox selector (an e-mail address, { id: UUID }, { match: GLOB } or { all: true })",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Selector, E> {
                Ok(Selector::Email(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Selector, A::Error> {
                use serde::de::Error;
                let mut found: Option<Selector> = None;
                while let Some(key) = m.next_key::<String>()? {
                    let sel = match key.as_str() {
                        "id" => Selector::Id(m.next_value()?),
                        "match" => Selector::Match(m.next_value()?),
                        "all" => Selector::All(m.next_value()?),
                        other => {
                            return Err(A::Error::unknown_field(other, &["id", "match", "all"]));
                        }
                    };
                    if found.is_some() {
                        return Err(A::Error::custom(
                            "a mailbox selector has exactly one of `id`, `match` or `all`; write one list entry per selector",
                        ));
                    }
                    found = Some(sel);
                }
                found.ok_or_else(|| {
                    A::Error::custom(
                        "empty mailbox selector; write { id: UUID }, { match: GLOB } or { all: true }",
                    )
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Selector {
    fn schema_name() -> Cow<'static, str> {
        "MailboxSelector".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A mailbox selector: an e-mail address (exact, case-insensitive), { id: UUID }, { match: GLOB on e-mail } or { all: true }.",
            "anyOf": [
                { "type": "string", "description": "Exact e-mail address, case-insensitive." },
                { "type": "object", "properties": { "id": { "type": "string", "format": "uuid" } }, "required": ["id"], "additionalProperties": false },
                { "type": "object", "properties": { "match": { "type": "string" } }, "required": ["match"], "additionalProperties": false },
                { "type": "object", "properties": { "all": { "const": true } }, "required": ["all"], "additionalProperties": false }
            ]
        })
    }
}

/// A byte size as written: `10GiB`, `10 GB`, or a plain number of bytes. Normalised to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size(pub u64);

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 10GiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| Size(b.as_u64()))
                    .map_err(|_| E::custom(format!("`{v}` is not a size such as 10GiB")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size such as 10GiB (IEC units: KiB, MiB, GiB; SI units: KB, MB, GB) or a number of bytes.",
            "type": ["string", "integer"]
        })
    }
}

/// The JSON Schema (draft 7, which editors' YAML extensions understand) of one job document.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<JobDocument>();
    schema.to_value()
}
