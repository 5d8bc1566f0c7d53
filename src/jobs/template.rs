//! Path templates (`export.path`, `search.report.path`): parsing with the
//! placeholder rules of SPEC §4.1, the checks that keep exports inside `exportRoot`, and
//! rendering for the download engine.
//!
//! Safety rests on two facts: the literal parts of a template are checked once here (relative,
//! no `..`), and every placeholder value is sanitised at render time so that it can never add a
//! path separator, a `..` component or a leading dot. A rendered path is therefore always a
//! relative path below whatever directory it is joined onto.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, TimeZone};

/// One `{placeholder}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// `{job}`: the job name.
    Job,
    /// `{run}`: the run id.
    Run,
    /// `{date}`: YYYY-MM-DD of the run's scheduled time in the job's time zone.
    Date,
    /// `{time}`: HHMMSS of the same instant.
    Time,
    /// `{mailbox}`: the mailbox e-mail, sanitised.
    Mailbox,
    /// `{mailboxId}`: the mailbox id.
    MailboxId,
    /// `{org}`: the organization as written in the job.
    Org,
}

impl Placeholder {
    /// Every placeholder, as written (without braces).
    pub const NAMES: [&'static str; 7] =
        ["job", "run", "date", "time", "mailbox", "mailboxId", "org"];

    pub(crate) fn parse(name: &str) -> Option<Placeholder> {
        Some(match name {
            "job" => Placeholder::Job,
            "run" => Placeholder::Run,
            "date" => Placeholder::Date,
            "time" => Placeholder::Time,
            "mailbox" => Placeholder::Mailbox,
            "mailboxId" => Placeholder::MailboxId,
            "org" => Placeholder::Org,
            _ => return None,
        })
    }

    /// The name as written (without braces).
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Job => "job",
            Placeholder::Run => "run",
            Placeholder::Date => "date",
            Placeholder::Time => "time",
            Placeholder::Mailbox => "mailbox",
            Placeholder::MailboxId => "mailboxId",
            Placeholder::Org => "org",
        }
    }
}

/// Where a template is used; decides which extra rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateUse {
    /// `export.path`: one file per mailbox under `exportRoot`, ending in `.pst`.
    ExportFile,
    /// `search.report.path`: one file per run under `exportRoot`.
    Report,
}

/// Why a template was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the path is empty")]
    Empty,
    #[error(
        "`{{{0}}}` is not a placeholder (known: {{job}}, {{run}}, {{date}}, {{time}}, {{mailbox}}, {{mailboxId}}, {{org}})"
    )]
    UnknownPlaceholder(String),
    #[error("unbalanced `{{` or `}}` (write `{{{{` or `}}}}` for a literal brace)")]
    UnbalancedBrace,
    #[error("the path is absolute; it must be relative to {0}")]
    Absolute(&'static str),
    #[error("the path contains a `..` component, which would leave {0}")]
    DotDot(&'static str),
    #[error("the path contains a backslash; use `/` as the separator")]
    Backslash,
    #[error("the path contains a control character")]
    ControlCharacter,
    #[error("the path has an empty or `.` component (`//`, `/./` or a trailing `/`)")]
    EmptyComponent,
    #[error(
        "an export path must end in `.pst` (a split export is published as `.zip` automatically)"
    )]
    NotPst,
    #[error("`{{{0}}}` has no value here: a report is one file per run, not per mailbox")]
    NotAvailable(&'static str),
    #[error(
        "the path names no mailbox, so every mailbox of a run would be written to the same file"
    )]
    NotUnique,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

/// A checked path template. Only [`PathTemplate::parse`] builds one.
#[derive(Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    parts: Vec<Part>,
}

impl fmt::Debug for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathTemplate({:?})", self.text)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The values placeholders are replaced with. Missing values render as `_`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateValues {
    pub job: String,
    pub run: String,
    pub date: String,
    pub time: String,
    pub mailbox: String,
    pub mailbox_id: String,
    pub org: String,
}

impl TemplateValues {
    /// Values of one run: `{date}`/`{time}` from `scheduled_for` in the job's time zone.
    pub fn for_run<Tz: TimeZone>(
        job: &str,
        run: &str,
        scheduled_for: &DateTime<Tz>,
        org: &str,
    ) -> Self
    where
        Tz::Offset: fmt::Display,
    {
        TemplateValues {
            job: job.to_string(),
            run: run.to_string(),
            date: scheduled_for.format("%Y-%m-%d").to_string(),
            time: scheduled_for.format("%H%M%S").to_string(),
            org: org.to_string(),
            ..TemplateValues::default()
        }
    }

    /// The same values for one mailbox of the run.
    pub fn with_mailbox(mut self, email: &str, id: &str) -> Self {
        self.mailbox = email.to_string();
        self.mailbox_id = id.to_string();
        self
    }

    /// Marks the mailbox as an archive mailbox: `{mailbox}` becomes `<e-mail>-archive`. An
    /// archive shares its primary's e-mail address, so without the suffix `archives: include`
    /// with a `{mailbox}` path would render the same file for both (the second export then
    /// fails with "already exists", and both downloads would share one `.partial` file).
    pub fn archive(mut self, is_archive: bool) -> Self {
        if is_archive && !self.mailbox.is_empty() {
            self.mailbox.push_str(ARCHIVE_SUFFIX);
        }
        self
    }

    pub(crate) fn get(&self, p: Placeholder) -> &str {
        match p {
            Placeholder::Job => &self.job,
            Placeholder::Run => &self.run,
            Placeholder::Date => &self.date,
            Placeholder::Time => &self.time,
            Placeholder::Mailbox => &self.mailbox,
            Placeholder::MailboxId => &self.mailbox_id,
            Placeholder::Org => &self.org,
        }
    }
}

/// Appended to `{mailbox}` for an archive mailbox (see [`TemplateValues::archive`]).
pub const ARCHIVE_SUFFIX: &str = "-archive";

/// Longest sanitised placeholder value in bytes (file names are limited to 255 bytes).
const MAX_VALUE_BYTES: usize = 200;

/// Makes a placeholder value safe as (part of) one path component: `/`, `\`, NUL and control
/// characters become `_`, leading dots become `_` (so neither `..` nor a hidden file can
/// appear), an empty value becomes `_`, and the value is cut to 200 bytes.
pub fn sanitize(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_VALUE_BYTES));
    let mut leading = true;
    for c in value.chars() {
        let c = if c == '/' || c == '\\' || c.is_control() || (leading && c == '.') {
            '_'
        } else {
            leading = false;
            c
        };
        if out.len() + c.len_utf8() > MAX_VALUE_BYTES {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

impl PathTemplate {
    /// Parses and checks `text` for the given use.
    pub fn parse(text: &str, usage: TemplateUse) -> Result<PathTemplate, TemplateError> {
        let root = "exportRoot";
        if text.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        if text.contains('\\') {
            return Err(TemplateError::Backslash);
        }
        if text.chars().any(char::is_control) {
            return Err(TemplateError::ControlCharacter);
        }
        if text.starts_with('/') {
            return Err(TemplateError::Absolute(root));
        }
        let parts = split_parts(text)?;
        // Component checks look at the literal text between separators; placeholders inside a
        // component can never turn it into `..` because their values are sanitised.
        for component in text.split('/') {
            if component == ".." {
                return Err(TemplateError::DotDot(root));
            }
            if component.is_empty() || component == "." {
                return Err(TemplateError::EmptyComponent);
            }
        }
        let uses = |p: Placeholder| parts.contains(&Part::Placeholder(p));
        match usage {
            TemplateUse::ExportFile => {
                if !text.to_ascii_lowercase().ends_with(".pst") {
                    return Err(TemplateError::NotPst);
                }
                if !uses(Placeholder::Mailbox) && !uses(Placeholder::MailboxId) {
                    return Err(TemplateError::NotUnique);
                }
            }
            TemplateUse::Report => {
                for p in [Placeholder::Mailbox, Placeholder::MailboxId] {
                    if uses(p) {
                        return Err(TemplateError::NotAvailable(p.name()));
                    }
                }
            }
        }
        Ok(PathTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the template uses `p`.
    pub fn uses(&self, p: Placeholder) -> bool {
        self.parts.contains(&Part::Placeholder(p))
    }

    /// Renders the template: a relative path with only normal components (never absolute, never
    /// `..`), to be joined onto `exportRoot` (or used as a mailbox folder).
    pub fn render(&self, values: &TemplateValues) -> PathBuf {
        let mut s = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => s.push_str(l),
                Part::Placeholder(p) => s.push_str(&sanitize(values.get(*p))),
            }
        }
        let mut out = PathBuf::new();
        for component in s.split('/') {
            // Parsing already rejected these; kept as a second line of defence.
            match component {
                "" | "." => continue,
                ".." => out.push("_"),
                c => out.push(c),
            }
        }
        debug_assert!(out.components().all(|c| matches!(c, Component::Normal(_))));
        out
    }

    /// Checks the directories the template names literally (plus `{job}`, known now) under
    /// `export_root`: none of them may be a symlink that resolves outside `export_root`.
    /// Returns the offending directory. Directories that do not exist yet are fine; a missing
    /// `export_root` means there is nothing to check.
    pub fn check_symlinks(&self, export_root: &Path, job: &str) -> Result<(), PathBuf> {
        let Ok(root) = export_root.canonicalize() else {
            return Ok(());
        };
        let components: Vec<&str> = self.text.split('/').collect();
        let mut current = export_root.to_path_buf();
        // The last component is the file name; only directories are walked.
        for component in &components[..components.len().saturating_sub(1)] {
            let Some(concrete) = concrete_component(component, job) else {
                break;
            };
            current.push(concrete);
            match std::fs::symlink_metadata(&current) {
                Err(_) => break,
                Ok(meta) if meta.file_type().is_symlink() => match current.canonicalize() {
                    Ok(target) if target.starts_with(&root) => {}
                    _ => return Err(current),
                },
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// A template component with `{job}` filled in, or `None` when it holds another placeholder.
fn concrete_component(component: &str, job: &str) -> Option<String> {
    let parts = split_parts(component).ok()?;
    let mut s = String::new();
    for p in parts {
        match p {
            Part::Literal(l) => s.push_str(&l),
            Part::Placeholder(Placeholder::Job) => s.push_str(&sanitize(job)),
            Part::Placeholder(_) => return None,
        }
    }
    Some(s)
}

fn split_parts(text: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => return Err(TemplateError::UnbalancedBrace),
                        Some(c) => name.push(c),
                    }
                }
                let p = Placeholder::parse(&name).ok_or(TemplateError::UnknownPlaceholder(name))?;
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Placeholder(p));
            }
            '}' => return Err(TemplateError::UnbalancedBrace),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues {
        TemplateValues {
            job: "legal".into(),
            run: "r1".into(),
            date: "2026-01-31".into(),
            time: "020000".into(),
            mailbox: "alice@contoso.com".into(),
            mailbox_id: "id-1".into(),
            org: "contoso.onmicrosoft.com".into(),
        }
    }

    /// Found by the chaos suite: an archive mailbox rendered the same export path as its
    /// primary (same e-mail address).
    #[test]
    fn an_archive_mailbox_renders_a_path_apart_from_its_primary() {
        let t = PathTemplate::parse("{job}/{run}/{mailbox}.pst", TemplateUse::ExportFile).unwrap();
        let primary = values().archive(false);
        let archive = values().archive(true);
        assert_eq!(
            t.render(&primary),
            Path::new("legal/r1/alice@contoso.com.pst")
        );
        assert_eq!(
            t.render(&archive),
            Path::new("legal/r1/alice@contoso.com-archive.pst")
        );
        // `{mailboxId}` already differs; an empty mailbox (a report) stays empty.
        let report = TemplateValues {
            mailbox: String::new(),
            ..values()
        }
        .archive(true);
        assert_eq!(report.mailbox, "");
    }

    #[test]
    fn renders_every_placeholder() {
        let t = PathTemplate::parse(
            "{job}/{date}T{time}/{org}/{run}-{mailboxId}-{mailbox}.pst",
            TemplateUse::ExportFile,
        )
        .unwrap();
        assert_eq!(
            t.render(&values()),
            Path::new(
                "legal/2026-01-31T020000/contoso.onmicrosoft.com/r1-id-1-alice@contoso.com.pst"
            )
        );
    }

    #[test]
    fn hostile_values_cannot_escape() {
        let t = PathTemplate::parse("{org}/{mailbox}.pst", TemplateUse::ExportFile).unwrap();
        for evil in [
            "..",
            "../../etc/passwd",
            "/abs",
            "a\\..\\b",
            ".hidden",
            "",
            "\0x",
            "a/../..",
        ] {
            let v = TemplateValues {
                org: evil.into(),
                mailbox: evil.into(),
                ..values()
            };
            let p = t.render(&v);
            assert!(p.is_relative(), "{evil:?} -> {p:?}");
            assert_eq!(p.components().count(), 2, "{evil:?} -> {p:?}");
            assert!(
                p.components().all(
                    |c| matches!(c, Component::Normal(n) if !n.to_string_lossy().starts_with('.'))
                ),
                "{evil:?} -> {p:?}"
            );
        }
        assert_eq!(sanitize("a/b\\c\u{7}"), "a_b_c_");
        assert_eq!(sanitize("..x"), "__x");
        assert!(sanitize(&"é".repeat(300)).len() <= MAX_VALUE_BYTES);
    }

    #[test]
    fn rejects_bad_templates() {
        use TemplateError::*;
        let cases: &[(&str, TemplateUse, TemplateError)] = &[
            ("", TemplateUse::ExportFile, Empty),
            (
                "/x/{mailbox}.pst",
                TemplateUse::ExportFile,
                Absolute("exportRoot"),
            ),
            (
                "{job}/../{mailbox}.pst",
                TemplateUse::ExportFile,
                DotDot("exportRoot"),
            ),
            ("a\\{mailbox}.pst", TemplateUse::ExportFile, Backslash),
            (
                "{job}/{user}.pst",
                TemplateUse::ExportFile,
                UnknownPlaceholder("user".into()),
            ),
            (
                "{job/{mailbox}.pst",
                TemplateUse::ExportFile,
                UnbalancedBrace,
            ),
            (
                "{job}//{mailbox}.pst",
                TemplateUse::ExportFile,
                EmptyComponent,
            ),
            ("{job}/{mailbox}.zip", TemplateUse::ExportFile, NotPst),
            ("{job}/{date}.pst", TemplateUse::ExportFile, NotUnique),
            (
                "{job}/{mailbox}.jsonl",
                TemplateUse::Report,
                NotAvailable("mailbox"),
            ),
        ];
        for (text, usage, want) in cases {
            assert_eq!(
                PathTemplate::parse(text, *usage).unwrap_err(),
                *want,
                "{text}"
            );
        }
        let t = PathTemplate::parse("a{{b}}/{mailbox}.pst", TemplateUse::ExportFile).unwrap();
        assert_eq!(t.render(&values()), Path::new("a{b}/alice@contoso.com.pst"));
    }

    #[test]
    fn symlinks_out_of_the_export_root_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("exports");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("inside"), root.join("in")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("legal")).unwrap();
        let check = |t: &str| {
            PathTemplate::parse(t, TemplateUse::ExportFile)
                .unwrap()
                .check_symlinks(&root, "legal")
        };
        assert_eq!(check("out/{mailbox}.pst"), Err(root.join("out")));
        assert_eq!(check("{job}/{mailbox}.pst"), Err(root.join("legal")));
        assert_eq!(check("in/{mailbox}.pst"), Ok(()));
        assert_eq!(check("{date}/out/{mailbox}.pst"), Ok(()));
        assert_eq!(check("new/{mailbox}.pst"), Ok(()));
    }
}
