//! Located job-file errors: the stable error codes of SPEC §4.2, their default hints, and
//! [`JobError`], the one error type every check in [`crate::jobs`] produces.
//!
//! Codes are part of the user contract (they appear in `validate --format json`, in the
//! database and in docs/job-files.md): never rename one, only add new ones.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// A stable, kebab-case identifier of one validation rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The file cannot be read (missing, permission denied, a directory loop).
    Io,
    /// The file is not valid UTF-8.
    Encoding,
    /// The file is larger than [`crate::jobs::MAX_FILE_SIZE`].
    FileTooLarge,
    /// YAML syntax error.
    Syntax,
    /// The same key appears twice in one mapping.
    DuplicateKey,
    /// A key that the job format does not know (typo, merge key `<<`, a section of another version).
    UnknownKey,
    /// A value of the wrong YAML type (a list where a string belongs, a negative number...).
    WrongType,
    /// A required key is absent.
    MissingKey,
    /// A value of the right type that is not allowed (an unknown enum value, zero, a bad uuid).
    InvalidValue,
    /// `kind` is not one of the five job kinds.
    UnknownKind,
    /// `apiVersion` is not `restorectl/v1`.
    BadApiVersion,
    /// `metadata.name` does not follow the naming rule.
    InvalidName,
    /// Two job documents share one `metadata.name`.
    DuplicateName,
    /// `spec.schedule.cron` does not parse or never fires.
    BadCron,
    /// A time zone that is not an IANA name.
    BadTimezone,
    /// A duration that does not parse (`30s`, `1h 30m`, `400d` are valid).
    BadDuration,
    /// A size that does not parse (`10GiB`).
    BadSize,
    /// `pointInTime` is not `latest`, an RFC 3339 timestamp or `<duration> ago`.
    BadPointInTime,
    /// A mailbox selector that is malformed (bad uuid, bad glob, `{all: false}`).
    BadSelector,
    /// A restore or export kind without any mailbox selector.
    EmptySelectors,
    /// `exclude` given where no `mailboxes` are selected.
    ExcludeWithoutMailboxes,
    /// `export.pstSizeLimit` outside 1 GiB..=49 GiB.
    PstSizeLimit,
    /// A path template that escapes `exportRoot` (absolute, `..`, a symlink out).
    PathEscape,
    /// A path template that is malformed otherwise (empty, backslash, wrong extension).
    BadPath,
    /// A `{placeholder}` that does not exist.
    UnknownPlaceholder,
    /// A known placeholder that has no value where it is used (`{mailbox}` in a search report).
    PlaceholderNotAvailable,
    /// An export path that would write every mailbox of a run to the same file.
    PathNotUnique,
    /// `spec.server` names no server of the daemon config (or the config has none / several).
    UnknownServer,
    /// A plain string where a secret reference belongs.
    PlainSecret,
    /// A kind-specific section that does not match `kind`.
    KindMismatch,
    /// Credentials with none or more than one of the allowed forms.
    BadCredentials,
    /// `spec.retry` out of bounds.
    BadRetry,
    /// The daemon config a directory carries (`restorectl.yaml`) is broken.
    Config,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 33] = [
        ErrorCode::Io,
        ErrorCode::Encoding,
        ErrorCode::FileTooLarge,
        ErrorCode::Syntax,
        ErrorCode::DuplicateKey,
        ErrorCode::UnknownKey,
        ErrorCode::WrongType,
        ErrorCode::MissingKey,
        ErrorCode::InvalidValue,
        ErrorCode::UnknownKind,
        ErrorCode::BadApiVersion,
        ErrorCode::InvalidName,
        ErrorCode::DuplicateName,
        ErrorCode::BadCron,
        ErrorCode::BadTimezone,
        ErrorCode::BadDuration,
        ErrorCode::BadSize,
        ErrorCode::BadPointInTime,
        ErrorCode::BadSelector,
        ErrorCode::EmptySelectors,
        ErrorCode::ExcludeWithoutMailboxes,
        ErrorCode::PstSizeLimit,
        ErrorCode::PathEscape,
        ErrorCode::BadPath,
        ErrorCode::UnknownPlaceholder,
        ErrorCode::PlaceholderNotAvailable,
        ErrorCode::PathNotUnique,
        ErrorCode::UnknownServer,
        ErrorCode::PlainSecret,
        ErrorCode::KindMismatch,
        ErrorCode::BadCredentials,
        ErrorCode::BadRetry,
        ErrorCode::Config,
    ];

    /// The code as written in output (`unknown-key`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Io => "io",
            ErrorCode::Encoding => "encoding",
            ErrorCode::FileTooLarge => "file-too-large",
            ErrorCode::Syntax => "syntax",
            ErrorCode::DuplicateKey => "duplicate-key",
            ErrorCode::UnknownKey => "unknown-key",
            ErrorCode::WrongType => "wrong-type",
            ErrorCode::MissingKey => "missing-key",
            ErrorCode::InvalidValue => "invalid-value",
            ErrorCode::UnknownKind => "unknown-kind",
            ErrorCode::BadApiVersion => "bad-api-version",
            ErrorCode::InvalidName => "invalid-name",
            ErrorCode::DuplicateName => "duplicate-name",
            ErrorCode::BadCron => "bad-cron",
            ErrorCode::BadTimezone => "bad-timezone",
            ErrorCode::BadDuration => "bad-duration",
            ErrorCode::BadSize => "bad-size",
            ErrorCode::BadPointInTime => "bad-point-in-time",
            ErrorCode::BadSelector => "bad-selector",
            ErrorCode::EmptySelectors => "empty-selectors",
            ErrorCode::ExcludeWithoutMailboxes => "exclude-without-mailboxes",
            ErrorCode::PstSizeLimit => "pst-size-limit",
            ErrorCode::PathEscape => "path-escape",
            ErrorCode::BadPath => "bad-path",
            ErrorCode::UnknownPlaceholder => "unknown-placeholder",
            ErrorCode::PlaceholderNotAvailable => "placeholder-not-available",
            ErrorCode::PathNotUnique => "path-not-unique",
            ErrorCode::UnknownServer => "unknown-server",
            ErrorCode::PlainSecret => "plain-secret",
            ErrorCode::KindMismatch => "kind-mismatch",
            ErrorCode::BadCredentials => "bad-credentials",
            ErrorCode::BadRetry => "bad-retry",
            ErrorCode::Config => "config",
        }
    }

    /// What the user should do, when the check has nothing more specific to say.
    pub fn default_hint(self) -> &'static str {
        match self {
            ErrorCode::Io => "check that the path exists and is readable by restorectl",
            ErrorCode::Encoding => "save the file as UTF-8",
            ErrorCode::FileTooLarge => {
                "job files are small; split the file or check that this is really a job file"
            }
            ErrorCode::Syntax => {
                "fix the YAML syntax at this position (indentation with spaces, quotes closed, `key: value`)"
            }
            ErrorCode::DuplicateKey => "remove one of the two entries",
            ErrorCode::UnknownKey => {
                "check the spelling against docs/job-files.md (keys are camelCase; YAML merge keys `<<` are not supported)"
            }
            ErrorCode::WrongType => "write a value of the type named in the message",
            ErrorCode::MissingKey => "add the key; docs/job-files.md lists the required keys",
            ErrorCode::InvalidValue => "use one of the values named in the message",
            ErrorCode::UnknownKind => {
                "use one of ExportPst, Restore, RestoreTo, BulkRestore, Search (case-sensitive)"
            }
            ErrorCode::BadApiVersion => "write `apiVersion: restorectl/v1`",
            ErrorCode::InvalidName => {
                "use 1 to 63 lower-case letters, digits and `-`, starting and ending with a letter or digit"
            }
            ErrorCode::DuplicateName => "rename one of the jobs or delete one of the documents",
            ErrorCode::BadCron => {
                "write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. \"0 2 * * SUN\""
            }
            ErrorCode::BadTimezone => "use an IANA time zone name such as Europe/Berlin or UTC",
            ErrorCode::BadDuration => "write a duration such as 30s, 15m, 12h, 400d or \"1h 30m\"",
            ErrorCode::BadSize => "write a size such as 10GiB",
            ErrorCode::BadPointInTime => {
                "write `latest`, an RFC 3339 timestamp (2026-01-31T23:00:00Z) or a duration with `ago` (\"24h ago\")"
            }
            ErrorCode::BadSelector => {
                "write an e-mail address, { id: <uuid> }, { match: \"*@example.com\" } or { all: true }"
            }
            ErrorCode::EmptySelectors => {
                "list at least one mailbox selector under spec.mailboxes (or { all: true })"
            }
            ErrorCode::ExcludeWithoutMailboxes => {
                "add spec.mailboxes, or remove spec.exclude (an organisation-wide search has no mailbox list to exclude from)"
            }
            ErrorCode::PstSizeLimit => {
                "use a size from 1GiB to 49GiB, or remove pstSizeLimit for no limit"
            }
            ErrorCode::PathEscape => {
                "write a relative path without `..` that stays inside exportRoot (placeholders cannot escape it)"
            }
            ErrorCode::BadPath => {
                "write a relative path with `/` separators, e.g. \"{job}/{date}/{mailbox}.pst\""
            }
            ErrorCode::UnknownPlaceholder => {
                "use only {job}, {run}, {date}, {time}, {mailbox}, {mailboxId} and {org}; write {{ and }} for literal braces"
            }
            ErrorCode::PlaceholderNotAvailable => {
                "remove the placeholder: it has no value in this place"
            }
            ErrorCode::PathNotUnique => {
                "put {mailbox} or {mailboxId} in the path so that each mailbox gets its own file"
            }
            ErrorCode::UnknownServer => {
                "use a server name defined under `servers:` in the daemon config"
            }
            ErrorCode::PlainSecret => {
                "write { secret: NAME }, { env: VAR } or { file: /path } instead of the value itself, and rotate the secret if this file was shared"
            }
            ErrorCode::KindMismatch => "remove the section or change `kind` to match it",
            ErrorCode::BadCredentials => {
                "give exactly one of the credential forms named in the message"
            }
            ErrorCode::BadRetry => "keep maxAttempts in 1..100 and maxBackoff ≥ initialBackoff > 0",
            ErrorCode::Config => {
                "fix the daemon config file; `restorectl validate` reports its location"
            }
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in one job file, located as precisely as the YAML parser allows.
///
/// `Display` prints the one-line form `FILE:LINE:COLUMN: error[code]: job `x`, field `f`:
/// message`; the hint is a separate field so the CLI can print it on its own line. Messages
/// never contain secret values (a plain-string secret is reported without its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    /// The job file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    pub code: ErrorCode,
    /// `metadata.name` of the document, when it could be read.
    pub job: Option<String>,
    /// Dotted path of the offending key (`spec.schedule.cron`, `spec.mailboxes[2]`).
    pub field: Option<String>,
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error[{}]: ",
            self.file.display(),
            self.line,
            self.column,
            self.code
        )?;
        match (&self.job, &self.field) {
            (Some(j), Some(k)) => write!(f, "job `{j}`, field `{k}`: ")?,
            (Some(j), None) => write!(f, "job `{j}`: ")?,
            (None, Some(k)) => write!(f, "field `{k}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_serialise_as_their_text() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::String(c.as_str().into())
            );
            assert!(!c.default_hint().is_empty());
        }
    }

    #[test]
    fn display_is_the_documented_one_line_form() {
        let e = JobError {
            file: "jobs/a.yaml".into(),
            line: 7,
            column: 11,
            code: ErrorCode::BadCron,
            job: Some("nightly".into()),
            field: Some("spec.schedule.cron".into()),
            message: "bad".into(),
            hint: "h".into(),
        };
        assert_eq!(
            e.to_string(),
            "jobs/a.yaml:7:11: error[bad-cron]: job `nightly`, field `spec.schedule.cron`: bad"
        );
    }
}
