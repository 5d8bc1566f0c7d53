//! Semantic validation (SPEC §4.2): raw [`JobDocument`] → [`Job`].
//!
//! Every check runs, so one pass reports every problem of a document, each located at the key
//! or value it concerns (through [`DocLocation`], which builds the position index only when a
//! first error needs it).

use std::cell::OnceCell;
use std::path::Path;

use chrono_tz::Tz;
use uuid::Uuid;

use super::error::{ErrorCode, JobError};
use super::folder::{FolderError, FolderTemplate};
use super::hash::{canonical_json, sha256_hex};
use super::locate::{Locator, Pos, join_key};
use super::raw::{self, API_VERSION, JobDocument, JobKind};
use super::schedule_spec::{Schedule, parse_cron};
use super::selector::{MailboxSelection, Selector, check_email};
use super::template::{PathTemplate, TemplateError, TemplateUse};
use super::{
    Action, ApplicationCredentials, BulkCredentials, BulkRestoreAction, Credentials,
    DeviceCodeCredentials, ExploreSettings, ExportAction, Job, OrganizationRef, PointInTime,
    RestoreAction, RestoreToAction, Retention, SearchAction, ValidationContext,
};

/// Smallest and largest allowed `pstSizeLimit` (SPEC §4.1): the vendor's "1 GB to 49 GB",
/// whose own example gives 1 GB as 1073741824 bytes, so GiB.
pub const PST_SIZE_LIMIT_MIN: u64 = 1 << 30;
pub const PST_SIZE_LIMIT_MAX: u64 = 49 << 30;

/// Finds positions in one file's text, building the index on first use.
pub struct DocLocation<'a> {
    text: &'a str,
    index: OnceCell<Locator>,
}

impl<'a> DocLocation<'a> {
    pub fn new(text: &'a str) -> Self {
        DocLocation {
            text,
            index: OnceCell::new(),
        }
    }

    /// The position index of the whole file.
    pub fn locator(&self) -> &Locator {
        self.index.get_or_init(|| Locator::new(self.text))
    }

    /// Where `path` in document `doc` sits: its key, or its value.
    pub fn pos(&self, doc: usize, path: &str, at: At) -> Pos {
        match self.locator().doc(doc) {
            Some(d) => {
                let e = d.nearest(path);
                match at {
                    At::Key => e.key,
                    At::Value => e.value,
                }
            }
            None => Pos::START,
        }
    }
}

/// Which end of a mapping entry an error points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Key,
    Value,
}

/// Everything an error needs besides its own text.
pub struct DocContext<'a> {
    pub file: &'a Path,
    pub index: usize,
    pub job: Option<String>,
    pub location: &'a DocLocation<'a>,
}

impl DocContext<'_> {
    /// An error at `field` (a serde-style path) with the code's default hint.
    pub fn error(
        &self,
        code: ErrorCode,
        field: &str,
        at: At,
        message: impl Into<String>,
    ) -> JobError {
        self.error_hint(code, field, at, message, code.default_hint())
    }

    /// An error with a specific hint.
    pub fn error_hint(
        &self,
        code: ErrorCode,
        field: &str,
        at: At,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> JobError {
        let pos = self.location.pos(self.index, field, at);
        JobError {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            code,
            job: self.job.clone(),
            field: (!field.is_empty()).then(|| field.to_string()),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// Checks the naming rule `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    if b.is_empty() {
        return Err("the name is empty".into());
    }
    if b.len() > 63 {
        return Err(format!(
            "`{name}` is {} characters long; the limit is 63",
            b.len()
        ));
    }
    if !b.iter().all(ok_char) || b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Err(format!(
            "`{name}` is not a valid job name (lower-case letters, digits and `-`, not at either end)"
        ));
    }
    Ok(())
}

/// Validates one document. `Err` holds every problem found.
pub fn validate(
    doc: &JobDocument,
    ctx: &ValidationContext<'_>,
    dc: &DocContext<'_>,
) -> Result<Job, Vec<JobError>> {
    let mut errors = Vec::new();
    let spec = &doc.spec;
    let kind = doc.kind;

    if doc.api_version != API_VERSION {
        errors.push(dc.error(
            ErrorCode::BadApiVersion,
            "apiVersion",
            At::Value,
            format!(
                "`{}` is not a supported apiVersion (expected `{API_VERSION}`)",
                doc.api_version
            ),
        ));
    }
    if let Err(m) = check_name(&doc.metadata.name) {
        errors.push(dc.error(ErrorCode::InvalidName, "metadata.name", At::Value, m));
    }

    let server = check_server(spec.server.as_deref(), ctx, dc, &mut errors);

    let organization = {
        let o = spec.organization.trim();
        if o.is_empty() {
            errors.push(dc.error_hint(
                ErrorCode::InvalidValue,
                "spec.organization",
                At::Value,
                "the organization is empty",
                "write the organization name (contoso.onmicrosoft.com) or its id",
            ));
        }
        match Uuid::parse_str(o) {
            Ok(id) => OrganizationRef::Id(id),
            Err(_) => OrganizationRef::Name(o.to_string()),
        }
    };

    let point_in_time = match spec.point_in_time.as_deref() {
        None => PointInTime::Latest,
        Some(t) => PointInTime::parse(t).unwrap_or_else(|m| {
            errors.push(dc.error(ErrorCode::BadPointInTime, "spec.pointInTime", At::Value, m));
            PointInTime::Latest
        }),
    };

    let selection = check_selection(spec, kind, dc, &mut errors);
    let schedule = spec
        .schedule
        .as_ref()
        .and_then(|s| check_schedule(s, ctx, dc, &mut errors));

    let retry = match &spec.retry {
        None => ctx.config.default_retry,
        Some(r) => r
            .apply(ctx.config.default_retry)
            .unwrap_or_else(|(key, m)| {
                let field = format!("spec.retry.{key}");
                // A bound broken by the config's default (key absent here) points at `retry`.
                let field = if dc
                    .location
                    .locator()
                    .doc(dc.index)
                    .and_then(|d| d.get(&field))
                    .is_some()
                {
                    field
                } else {
                    "spec.retry".to_string()
                };
                errors.push(dc.error(ErrorCode::BadRetry, &field, At::Value, format!("{key} {m}")));
                ctx.config.default_retry
            }),
    };

    let run_timeout = match spec.run_timeout {
        Some(d) if d.is_zero() => {
            errors.push(dc.error_hint(
                ErrorCode::InvalidValue,
                "spec.runTimeout",
                At::Value,
                "runTimeout must be greater than zero",
                "write a duration such as 12h, or remove runTimeout to use the config default",
            ));
            ctx.config.default_run_timeout
        }
        Some(d) => d,
        None => ctx.config.default_run_timeout,
    };

    for (section, owner) in spec.present_sections() {
        if owner != kind {
            errors.push(dc.error_hint(
                ErrorCode::KindMismatch,
                &format!("spec.{section}"),
                At::Key,
                format!("section `{section}` belongs to kind {owner}, but this job is kind {kind}"),
                format!(
                    "remove `{section}` and write the job's settings under `spec.{}`, or change `kind` to {owner}",
                    kind.section()
                ),
            ));
        }
    }

    let explore = spec
        .explore
        .as_ref()
        .map(|e| check_explore(e, dc, &mut errors))
        .unwrap_or_default();

    let action = check_action(doc, ctx, dc, &mut errors);
    let notify = spec.notify.as_ref().map(|n| {
        let known = &ctx.config.notifications;
        for (i, t) in n.targets.iter().enumerate() {
            if !known.targets.contains_key(t) {
                errors.push(dc.error_hint(
                    ErrorCode::InvalidValue,
                    &format!("spec.notify.targets[{i}]"),
                    At::Value,
                    format!("`{t}` is not a notification target of the daemon config"),
                    format!(
                        "use one of the names under notifications.targets (configured: {})",
                        known.target_names()
                    ),
                ));
            }
        }
        crate::store::Routing {
            targets: n.targets.clone(),
            events: n
                .events
                .clone()
                .unwrap_or_else(|| crate::config::notifications::DEFAULT_EVENTS.to_vec()),
        }
    });
    let max_restore_point_age = match spec.max_restore_point_age {
        Some(d) if d.is_zero() => {
            errors.push(dc.error_hint(
                ErrorCode::InvalidValue,
                "spec.maxRestorePointAge",
                At::Value,
                "maxRestorePointAge must be greater than zero",
                "write a duration such as 26h (a day's backup plus slack)",
            ));
            None
        }
        Some(_) if point_in_time != PointInTime::Latest => {
            errors.push(dc.error_hint(
                ErrorCode::InvalidValue,
                "spec.maxRestorePointAge",
                At::Key,
                "maxRestorePointAge only applies to jobs that explore the latest restore point",
                "remove maxRestorePointAge, or remove pointInTime (latest is the default)",
            ));
            None
        }
        d => d,
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(action) = action else {
        // check_action returns None only after pushing an error; keep the invariant explicit.
        return Err(vec![dc.error(
            ErrorCode::MissingKey,
            "spec",
            At::Key,
            "the job has no action",
        )]);
    };
    let spec_json = normalised_json(doc);
    Ok(Job {
        name: doc.metadata.name.clone(),
        kind,
        file: dc.file.to_path_buf(),
        document: dc.index,
        labels: doc.metadata.labels.clone().unwrap_or_default(),
        server,
        organization,
        point_in_time,
        selection,
        schedule,
        explore,
        suspend: spec.suspend.unwrap_or(false),
        retry,
        run_timeout,
        action,
        notify,
        heartbeat: spec.heartbeat.as_ref().map(|h| h.url.clone()),
        max_restore_point_age,
        spec_hash: sha256_hex(&spec_json),
        spec_json,
    })
}

/// Canonical JSON of `apiVersion`, `kind`, `metadata.name` and `spec` (labels excluded).
pub fn normalised_json(doc: &JobDocument) -> String {
    let spec = serde_json::to_value(&doc.spec).unwrap_or(serde_json::Value::Null);
    let value = serde_json::json!({
        "apiVersion": doc.api_version,
        "kind": doc.kind.as_str(),
        "metadata": { "name": doc.metadata.name },
        "spec": spec,
    });
    canonical_json(&value)
}

/// A uuid-valued key, or an `invalid-value` error at it.
fn check_uuid(
    text: &str,
    field: &str,
    what: &str,
    hint: &str,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> Option<Uuid> {
    match Uuid::parse_str(text.trim()) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(dc.error_hint(
                ErrorCode::InvalidValue,
                field,
                At::Value,
                format!("`{text}` is not {what} (a uuid)"),
                hint,
            ));
            None
        }
    }
}

fn check_explore(
    e: &raw::ExploreSpec,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> ExploreSettings {
    let repository_id = e.repository_id.as_deref().and_then(|r| {
        check_uuid(
            r,
            "spec.explore.repositoryId",
            "a repository id",
            "copy the id of the backup repository (or backup copy) from VB365",
            dc,
            errors,
        )
    });
    let backup_job = e.backup_job.as_deref().and_then(|j| {
        check_uuid(
            j,
            "spec.explore.backupJob",
            "a backup job id",
            "copy the id of the VB365 backup job (GET /v8/Jobs)",
            dc,
            errors,
        )
    });
    if e.repository_id.is_some() && e.backup_job.is_some() {
        errors.push(dc.error_hint(
            ErrorCode::InvalidValue,
            "spec.explore.backupJob",
            At::Key,
            "`backupJob` and `repositoryId` exclude each other: exploring a backup job takes no repository",
            "remove one of the two",
        ));
    }
    ExploreSettings {
        show_deleted: e.show_deleted.unwrap_or(false),
        show_all_versions: e.show_all_versions.unwrap_or(false),
        repository_id,
        backup_job,
    }
}

fn check_server(
    name: Option<&str>,
    ctx: &ValidationContext<'_>,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> Option<String> {
    if !ctx.check_servers {
        return name.map(str::to_string);
    }
    let known = || {
        let names: Vec<&str> = ctx.config.servers.keys().map(String::as_str).collect();
        if names.is_empty() {
            "the daemon config defines no servers".to_string()
        } else {
            format!("known servers: {}", names.join(", "))
        }
    };
    match name {
        Some(n) if ctx.config.servers.contains_key(n) => Some(n.to_string()),
        Some(n) => {
            errors.push(dc.error(
                ErrorCode::UnknownServer,
                "spec.server",
                At::Value,
                format!(
                    "server `{n}` is not defined in the daemon config ({})",
                    known()
                ),
            ));
            None
        }
        None => match ctx.config.server(None) {
            Some(s) => Some(s.name.clone()),
            None => {
                errors.push(dc.error_hint(
                    ErrorCode::UnknownServer,
                    "spec",
                    At::Key,
                    format!("spec.server is required when the config does not have exactly one server ({})", known()),
                    "add `server: NAME` under spec, naming a server from the daemon config",
                ));
                None
            }
        },
    }
}

fn check_selectors(
    list: &[raw::Selector],
    field: &str,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> Vec<Selector> {
    let mut out = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        match Selector::from_raw(raw) {
            Ok(s) => out.push(s),
            Err(m) => errors.push(dc.error(
                ErrorCode::BadSelector,
                &format!("{field}[{i}]"),
                At::Value,
                m,
            )),
        }
    }
    out
}

fn check_selection(
    spec: &raw::Spec,
    kind: JobKind,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> MailboxSelection {
    let include = match &spec.mailboxes {
        Some(list) if list.is_empty() => {
            let hint = if kind == JobKind::Search {
                "list mailbox selectors, or remove `mailboxes` for an organisation-wide search"
            } else {
                ErrorCode::EmptySelectors.default_hint()
            };
            errors.push(dc.error_hint(
                ErrorCode::EmptySelectors,
                "spec.mailboxes",
                At::Key,
                "the mailbox selector list is empty",
                hint,
            ));
            Vec::new()
        }
        Some(list) => check_selectors(list, "spec.mailboxes", dc, errors),
        None if kind == JobKind::Search => Vec::new(),
        None => {
            errors.push(dc.error(
                ErrorCode::EmptySelectors,
                "spec",
                At::Key,
                format!("kind {kind} needs `spec.mailboxes` with at least one selector"),
            ));
            Vec::new()
        }
    };
    let exclude = match &spec.exclude {
        None => Vec::new(),
        Some(list) => {
            if spec.mailboxes.is_none() && kind == JobKind::Search {
                errors.push(dc.error(
                    ErrorCode::ExcludeWithoutMailboxes,
                    "spec.exclude",
                    At::Key,
                    "`exclude` has no effect on an organisation-wide search (no `mailboxes`)",
                ));
            }
            check_selectors(list, "spec.exclude", dc, errors)
        }
    };
    MailboxSelection {
        include,
        exclude,
        archives: spec.archives.unwrap_or_default(),
    }
}

fn check_schedule(
    s: &raw::ScheduleSpec,
    ctx: &ValidationContext<'_>,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> Option<Schedule> {
    let tz = match s.timezone.as_deref() {
        None => Some(ctx.config.timezone),
        Some(name) => match name.trim().parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                errors.push(dc.error(
                    ErrorCode::BadTimezone,
                    "spec.schedule.timezone",
                    At::Value,
                    format!("`{name}` is not an IANA time zone name"),
                ));
                None
            }
        },
    };
    if s.starting_deadline.is_some_and(|d| d.is_zero()) {
        errors.push(dc.error_hint(
            ErrorCode::InvalidValue,
            "spec.schedule.startingDeadline",
            At::Value,
            "startingDeadline must be greater than zero",
            "write a duration such as 1h, or remove startingDeadline for no limit",
        ));
    }
    let cron = match parse_cron(&s.cron) {
        Ok(c) => Some(c),
        Err(m) => {
            errors.push(dc.error(
                ErrorCode::BadCron,
                "spec.schedule.cron",
                At::Value,
                format!("`{}` is not a valid cron expression: {m}", s.cron),
            ));
            None
        }
    };
    let schedule = Schedule::new(
        cron?,
        &s.cron,
        tz?,
        s.starting_deadline,
        s.concurrency_policy.unwrap_or_default(),
    );
    if schedule.next_after(ctx.now).is_none() {
        errors.push(dc.error(
            ErrorCode::BadCron,
            "spec.schedule.cron",
            At::Value,
            format!(
                "`{}` never fires (for example a day that does not exist in any month)",
                s.cron
            ),
        ));
        return None;
    }
    Some(schedule)
}

fn template(
    text: &str,
    usage: TemplateUse,
    field: &str,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> Option<PathTemplate> {
    match PathTemplate::parse(text, usage) {
        Ok(t) => Some(t),
        Err(e) => {
            let code = match e {
                TemplateError::Absolute(_) | TemplateError::DotDot(_) => ErrorCode::PathEscape,
                TemplateError::UnknownPlaceholder(_) => ErrorCode::UnknownPlaceholder,
                TemplateError::NotAvailable(_) => ErrorCode::PlaceholderNotAvailable,
                TemplateError::NotUnique => ErrorCode::PathNotUnique,
                _ => ErrorCode::BadPath,
            };
            errors.push(dc.error(code, field, At::Value, format!("`{text}`: {e}")));
            None
        }
    }
}

fn check_symlinks(
    t: &PathTemplate,
    field: &str,
    job: &str,
    ctx: &ValidationContext<'_>,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) {
    if let Err(dir) = t.check_symlinks(&ctx.config.export_root, job) {
        errors.push(dc.error_hint(
            ErrorCode::PathEscape,
            field,
            At::Value,
            format!(
                "`{t}` leads through {}, a symlink that resolves outside exportRoot {}",
                dir.display(),
                ctx.config.export_root.display()
            ),
            "remove the symlink or point the path at a directory inside exportRoot",
        ));
    }
}

fn non_empty(value: &Option<String>, field: &str, dc: &DocContext<'_>, errors: &mut Vec<JobError>) {
    if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
        errors.push(dc.error_hint(
            ErrorCode::InvalidValue,
            field,
            At::Value,
            "the value is empty",
            "write a value or remove the key",
        ));
    }
}

fn check_application(
    a: &raw::ApplicationCredentialsSpec,
    field: &str,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> ApplicationCredentials {
    let application_id = Uuid::parse_str(a.application_id.trim()).unwrap_or_else(|_| {
        errors.push(dc.error_hint(
            ErrorCode::InvalidValue,
            &format!("{field}.applicationId"),
            At::Value,
            format!("`{}` is not an application id (uuid)", a.application_id),
            "copy the Application (client) ID of the Azure AD application",
        ));
        Uuid::nil()
    });
    non_empty(
        &a.impersonation_account_name,
        &format!("{field}.impersonationAccountName"),
        dc,
        errors,
    );
    ApplicationCredentials {
        application_id,
        certificate: a.certificate.clone(),
        certificate_password: a.certificate_password.clone(),
        impersonation_account_name: a.impersonation_account_name.clone(),
    }
}

fn check_device_code(
    d: &raw::DeviceCodeSpec,
    field: &str,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> DeviceCodeCredentials {
    let application_id = d.application_id.as_deref().and_then(|a| {
        check_uuid(
            a,
            &format!("{field}.applicationId"),
            "an application id",
            "copy the Application (client) ID of the Azure AD application, or remove applicationId to use the server's",
            dc,
            errors,
        )
    });
    non_empty(
        &d.organization_name,
        &format!("{field}.organizationName"),
        dc,
        errors,
    );
    DeviceCodeCredentials {
        application_id,
        region: d.region,
        organization_name: d.organization_name.clone(),
    }
}

fn check_user_name(name: &str, field: &str, dc: &DocContext<'_>, errors: &mut Vec<JobError>) {
    if name.trim().is_empty() {
        errors.push(dc.error_hint(
            ErrorCode::InvalidValue,
            field,
            At::Value,
            "the user name is empty",
            "write the account, e.g. admin@contoso.com",
        ));
    }
}

fn check_credentials(
    c: &raw::CredentialsSpec,
    field: &str,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> Option<Credentials> {
    match (&c.application, &c.user, &c.device_code) {
        (Some(a), None, None) => Some(Credentials::Application(check_application(
            a,
            &join_key(field, "application"),
            dc,
            errors,
        ))),
        (None, Some(u), None) => {
            check_user_name(&u.user_name, &format!("{field}.user.userName"), dc, errors);
            Some(Credentials::User {
                user_name: u.user_name.clone(),
                password: u.password.clone(),
            })
        }
        (None, None, Some(d)) => Some(Credentials::DeviceCode(check_device_code(
            d,
            &format!("{field}.deviceCode"),
            dc,
            errors,
        ))),
        (a, u, d) => {
            let given: Vec<&str> = [
                (a.is_some(), "`application`"),
                (u.is_some(), "`user`"),
                (d.is_some(), "`deviceCode`"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
            let which = if given.is_empty() {
                "no credentials".to_string()
            } else {
                given.join(" and ")
            };
            errors.push(dc.error(
                ErrorCode::BadCredentials,
                field,
                At::Key,
                format!(
                    "credentials have {which}; give exactly one of `application`, `user` or `deviceCode`"
                ),
            ));
            None
        }
    }
}

fn check_on_premises(
    p: &raw::OnPremisesCredentialsSpec,
    field: &str,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) {
    check_user_name(&p.user_name, &format!("{field}.userName"), dc, errors);
    if p.domain_name.trim().is_empty() {
        errors.push(dc.error_hint(
            ErrorCode::InvalidValue,
            &format!("{field}.domainName"),
            At::Value,
            "the domain name is empty",
            "write the on-premises domain, e.g. CONTOSO",
        ));
    }
}

fn check_bulk_credentials(
    c: &raw::BulkCredentialsSpec,
    field: &str,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> Option<BulkCredentials> {
    let o365_field = format!("{field}.office365.userName");
    let onprem_field = format!("{field}.onPremises");
    match (&c.application, &c.office365, &c.on_premises, &c.device_code) {
        (Some(a), None, None, None) => Some(BulkCredentials::Application(check_application(
            a,
            &join_key(field, "application"),
            dc,
            errors,
        ))),
        (None, Some(u), None, None) => {
            check_user_name(&u.user_name, &o365_field, dc, errors);
            Some(BulkCredentials::Office365 {
                user_name: u.user_name.clone(),
                password: u.password.clone(),
            })
        }
        (None, None, Some(p), None) => {
            check_on_premises(p, &onprem_field, dc, errors);
            Some(BulkCredentials::OnPremises {
                domain_name: p.domain_name.clone(),
                user_name: p.user_name.clone(),
                password: p.password.clone(),
            })
        }
        (None, Some(u), Some(p), None) => {
            check_user_name(&u.user_name, &o365_field, dc, errors);
            check_on_premises(p, &onprem_field, dc, errors);
            Some(BulkCredentials::Hybrid {
                office365_user_name: u.user_name.clone(),
                office365_password: u.password.clone(),
                domain_name: p.domain_name.clone(),
                on_premises_user_name: p.user_name.clone(),
                on_premises_password: p.password.clone(),
            })
        }
        (None, None, None, Some(d)) => Some(BulkCredentials::DeviceCode(check_device_code(
            d,
            &format!("{field}.deviceCode"),
            dc,
            errors,
        ))),
        (a, u, p, d) => {
            let given: Vec<&str> = [
                (a.is_some(), "`application`"),
                (u.is_some(), "`office365`"),
                (p.is_some(), "`onPremises`"),
                (d.is_some(), "`deviceCode`"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
            let which = if given.is_empty() {
                "no credentials".to_string()
            } else {
                given.join(" and ")
            };
            errors.push(dc.error(
                ErrorCode::BadCredentials,
                field,
                At::Key,
                format!(
                    "credentials have {which}; give exactly one of `application`, `office365`, `onPremises` or `deviceCode`, or `office365` with `onPremises` for a hybrid organization"
                ),
            ));
            None
        }
    }
}

fn check_action(
    doc: &JobDocument,
    ctx: &ValidationContext<'_>,
    dc: &DocContext<'_>,
    errors: &mut Vec<JobError>,
) -> Option<Action> {
    let spec = &doc.spec;
    let kind = doc.kind;
    let missing = |errors: &mut Vec<JobError>| {
        errors.push(dc.error_hint(
            ErrorCode::MissingKey,
            "spec",
            At::Key,
            format!("kind {kind} needs a `spec.{}` section", kind.section()),
            "add the section; docs/job-files.md shows its keys",
        ));
    };
    let name = doc.metadata.name.as_str();
    match kind {
        JobKind::ExportPst => {
            let Some(e) = &spec.export else {
                missing(errors);
                return None;
            };
            non_empty(&e.keyword, "spec.export.keyword", dc, errors);
            match (e.enable_pst_size_limit, e.pst_size_limit) {
                (Some(false), Some(_)) => errors.push(dc.error_hint(
                    ErrorCode::PstSizeLimit,
                    "spec.export.pstSizeLimit",
                    At::Key,
                    "pstSizeLimit is given but enablePstSizeLimit is false",
                    "remove pstSizeLimit for exports without a size limit, or enablePstSizeLimit to split at pstSizeLimit",
                )),
                (Some(true), None) => errors.push(dc.error_hint(
                    ErrorCode::PstSizeLimit,
                    "spec.export.enablePstSizeLimit",
                    At::Value,
                    "enablePstSizeLimit is true but no pstSizeLimit is given (VB365 requires the size with the flag)",
                    "add pstSizeLimit: 1GiB to 49GiB",
                )),
                _ => {}
            }
            if let Some(size) = e.pst_size_limit
                && !(PST_SIZE_LIMIT_MIN..=PST_SIZE_LIMIT_MAX).contains(&size.0)
            {
                errors.push(dc.error(
                    ErrorCode::PstSizeLimit,
                    "spec.export.pstSizeLimit",
                    At::Value,
                    format!(
                        "pstSizeLimit is {} ({} bytes); VB365 accepts 1 GB to 49 GB, where its GB is 1073741824 bytes: 1GiB to 49GiB",
                        bytesize::ByteSize(size.0),
                        size.0
                    ),
                ));
            }
            let retention = e.retention.as_ref().map(|r| {
                if r.keep_last.is_none() && r.keep_for.is_none() {
                    errors.push(dc.error_hint(
                        ErrorCode::InvalidValue,
                        "spec.export.retention",
                        At::Key,
                        "retention has neither keepLast nor keepFor",
                        "write keepLast: N and/or keepFor: DURATION, or remove retention to keep every export",
                    ));
                }
                if r.keep_last == Some(0) {
                    errors.push(dc.error_hint(
                        ErrorCode::InvalidValue,
                        "spec.export.retention.keepLast",
                        At::Value,
                        "keepLast: 0 would delete every export, including the newest",
                        "keep at least 1",
                    ));
                }
                if r.keep_for.is_some_and(|d| d.is_zero()) {
                    errors.push(dc.error_hint(
                        ErrorCode::InvalidValue,
                        "spec.export.retention.keepFor",
                        At::Value,
                        "keepFor: 0 would delete every export, including the newest",
                        "write a duration such as 400d",
                    ));
                }
                Retention {
                    keep_last: r.keep_last,
                    keep_for: r.keep_for,
                }
            });
            let path = template(
                &e.path,
                TemplateUse::ExportFile,
                "spec.export.path",
                dc,
                errors,
            )?;
            check_symlinks(&path, "spec.export.path", name, ctx, dc, errors);
            Some(Action::ExportPst(ExportAction {
                keyword: e.keyword.clone(),
                pst_size_limit: e.pst_size_limit.map(|s| s.0),
                pst_size_limit_disabled: e.enable_pst_size_limit == Some(false),
                path,
                retention,
            }))
        }
        JobKind::Restore => {
            let Some(r) = &spec.restore else {
                missing(errors);
                return None;
            };
            let credentials =
                check_credentials(&r.credentials, "spec.restore.credentials", dc, errors)?;
            Some(Action::Restore(RestoreAction { credentials }))
        }
        JobKind::RestoreTo => {
            let Some(r) = &spec.restore_to else {
                missing(errors);
                return None;
            };
            if let Some(mailbox) = &r.mailbox
                && let Err(m) = check_email(mailbox)
            {
                errors.push(dc.error_hint(
                    ErrorCode::InvalidValue,
                    "spec.restoreTo.mailbox",
                    At::Value,
                    m,
                    "write the target mailbox's e-mail address, e.g. legal-review@contoso.com",
                ));
            }
            for (v, f) in [
                (&r.cas_server, "spec.restoreTo.casServer"),
                (
                    &r.office_organization_name,
                    "spec.restoreTo.officeOrganizationName",
                ),
            ] {
                non_empty(v, f, dc, errors);
            }
            // A bad folder is already an error; `None` here only lets the other checks run.
            let folder = r.folder.as_ref().and_then(|f| match FolderTemplate::parse(f) {
                Ok(t) => Some(t),
                Err(e) => {
                    let (code, hint) = match e {
                        FolderError::UnknownPlaceholder(_) => (
                            ErrorCode::UnknownPlaceholder,
                            "a folder is any text; {job} {run} {date} {time} {mailbox} {mailboxId} {org} are replaced, {{ and }} write literal braces",
                        ),
                        _ => (
                            ErrorCode::InvalidValue,
                            "write the folder name in the target mailbox, e.g. \"Restored/{mailbox}\"",
                        ),
                    };
                    errors.push(dc.error_hint(
                        code,
                        "spec.restoreTo.folder",
                        At::Value,
                        format!("`{f}`: {e}"),
                        hint,
                    ));
                    None
                }
            });
            let credentials =
                check_credentials(&r.credentials, "spec.restoreTo.credentials", dc, errors)?;
            Some(Action::RestoreTo(RestoreToAction {
                mailbox: r.mailbox.as_ref().map(|m| m.trim().to_string()),
                folder,
                cas_server: r.cas_server.clone(),
                office_region: r.office_region,
                office_organization_name: r.office_organization_name.clone(),
                options: r.options.unwrap_or_default(),
                credentials,
            }))
        }
        JobKind::BulkRestore => {
            let Some(b) = &spec.bulk_restore else {
                missing(errors);
                return None;
            };
            non_empty(&b.cas_server, "spec.bulkRestore.casServer", dc, errors);
            if b.recent_item_restore_period
                .is_some_and(|d| i32::try_from(d).is_err())
            {
                errors.push(dc.error_hint(
                    ErrorCode::InvalidValue,
                    "spec.bulkRestore.recentItemRestorePeriod",
                    At::Value,
                    "recentItemRestorePeriod is larger than the server accepts (an int32 number of days)",
                    "write a number of days from 0 to 2147483647: items backed up in that recent period are restored first, then the rest",
                ));
            }
            let credentials =
                check_bulk_credentials(&b.credentials, "spec.bulkRestore.credentials", dc, errors)?;
            Some(Action::BulkRestore(BulkRestoreAction {
                cas_server: b.cas_server.clone(),
                options: b.options.unwrap_or_default(),
                recent_item_restore_period: b.recent_item_restore_period,
                credentials,
            }))
        }
        JobKind::Search => {
            let Some(s) = &spec.search else {
                missing(errors);
                return None;
            };
            if s.query.trim().is_empty() {
                errors.push(dc.error_hint(
                    ErrorCode::InvalidValue,
                    "spec.search.query",
                    At::Value,
                    "the search query is empty",
                    "write a query such as 'from:ceo@contoso.com subject:\"board minutes\"'",
                ));
            }
            let report = template(
                &s.report.path,
                TemplateUse::Report,
                "spec.search.report.path",
                dc,
                errors,
            )?;
            check_symlinks(&report, "spec.search.report.path", name, ctx, dc, errors);
            Some(Action::Search(SearchAction {
                query: s.query.clone(),
                report,
                format: s.report.format.unwrap_or_default(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "legal-hold-weekly", "0", "a1-b2", &"a".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "ä", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
