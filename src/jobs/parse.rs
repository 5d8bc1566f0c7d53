//! One job file → its documents → raw specs → validated jobs, with every problem located.
//!
//! A file is read leniently ([`read_job_file`]): too large, not UTF-8 or unreadable gives a
//! located [`JobError`], never a panic. The text is then walked twice with serde_yaml's
//! multi-document iterator: once into `serde_yaml::Value` (YAML syntax, empty documents, the
//! job name for messages, a content hash for documents that do not validate), once into the
//! raw [`JobDocument`] (unknown keys, wrong types, missing keys, with serde_yaml's location).
//! serde stops at the first such error of a document; semantic checks then report all of
//! theirs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::error::{ErrorCode, JobError};
use super::hash::{canonical_json, sha256_hex, yaml_to_json};
use super::locate::{Pos, join_key, parent};
use super::raw::JobDocument;
use super::validate::{DocContext, DocLocation, validate};
use super::{Job, ValidationContext};
use crate::config::{PLAIN_SECRET_MESSAGE, shorten_unknown_field};

/// Largest job file read (4 MiB): far above any real job file, small enough that a wrong file
/// (a log, an image) is rejected before it is parsed.
pub const MAX_FILE_SIZE: u64 = 4 << 20;

/// The outcome of one YAML document of a file.
#[derive(Debug, Clone)]
pub struct DocumentReport {
    /// 0-based index in the file.
    pub index: usize,
    /// `metadata.name`, when it could be read (even from an invalid document).
    pub name: Option<String>,
    /// `kind` as written, when it is a string.
    pub kind: Option<String>,
    /// Identity of the content: the spec hash of a valid job; for an invalid document the
    /// SHA-256 of the canonical JSON of the same keys as written. `None` when the
    /// document is not a mapping or repeats a key.
    pub content_hash: Option<String>,
    /// The validated job, when there are no errors.
    pub job: Option<Arc<Job>>,
    pub errors: Vec<JobError>,
}

/// The outcome of one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    /// Problems of the file as a whole (unreadable, encoding, YAML syntax).
    pub errors: Vec<JobError>,
    /// Non-empty documents, in file order (documents before a syntax error are kept).
    pub documents: Vec<DocumentReport>,
}

impl FileReport {
    /// A report for a file that could not be read.
    pub fn unreadable(error: JobError) -> FileReport {
        FileReport {
            path: error.file.clone(),
            errors: vec![error],
            documents: Vec::new(),
        }
    }

    /// Every error of the file, file-level first.
    pub fn all_errors(&self) -> impl Iterator<Item = &JobError> {
        self.errors
            .iter()
            .chain(self.documents.iter().flat_map(|d| d.errors.iter()))
    }

    /// The valid jobs of the file.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.documents.iter().filter_map(|d| d.job.as_deref())
    }

    pub fn is_valid(&self) -> bool {
        self.all_errors().next().is_none()
    }
}

fn file_error(path: &Path, pos: Pos, code: ErrorCode, message: String) -> JobError {
    JobError {
        file: path.to_path_buf(),
        line: pos.line,
        column: pos.column,
        code,
        job: None,
        field: None,
        message,
        hint: code.default_hint().to_string(),
    }
}

/// Reads a job file: at most [`MAX_FILE_SIZE`] bytes of UTF-8 (a leading BOM is dropped).
// A JobError is large, but it is built once per bad file; boxing would only add noise.
#[allow(clippy::result_large_err)]
pub fn read_job_file(path: &Path) -> Result<String, JobError> {
    let io = |e: std::io::Error| {
        file_error(
            path,
            Pos::START,
            ErrorCode::Io,
            format!("cannot read the file: {e}"),
        )
    };
    // Checked before opening: opening a FIFO or a device named `x.yaml` could block forever.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(file_error(
            path,
            Pos::START,
            ErrorCode::Io,
            "not a regular file".into(),
        ));
    }
    let too_large = |n: u64| {
        file_error(
            path,
            Pos::START,
            ErrorCode::FileTooLarge,
            format!(
                "the file has {n} bytes or more; job files are limited to {MAX_FILE_SIZE} bytes"
            ),
        )
    };
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large(bytes.len() as u64));
    }
    decode(path, bytes)
}

/// UTF-8 decoding with the position of the first bad byte.
#[allow(clippy::result_large_err)]
pub fn decode(path: &Path, mut bytes: Vec<u8>) -> Result<String, JobError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // `valid` is valid UTF-8 by definition of valid_up_to.
        let prefix = std::str::from_utf8(valid).unwrap_or("");
        let line = prefix.matches('\n').count() + 1;
        let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        file_error(
            path,
            Pos { line, column },
            ErrorCode::Encoding,
            format!("the file is not valid UTF-8 (byte offset {})", valid.len()),
        )
    })
}

/// Reads and validates one file.
pub fn parse_file(path: &Path, ctx: &ValidationContext<'_>) -> FileReport {
    match read_job_file(path) {
        Ok(text) => parse_str(&text, path, ctx),
        Err(e) => FileReport::unreadable(e),
    }
}

/// Validates the text of one job file as if read from `path`.
pub fn parse_str(text: &str, path: &Path, ctx: &ValidationContext<'_>) -> FileReport {
    let location = DocLocation::new(text);
    let mut report = FileReport {
        path: path.to_path_buf(),
        errors: Vec::new(),
        documents: Vec::new(),
    };

    // Pass 1: YAML syntax and generic values. libyaml cannot resume after a syntax error (the
    // iterator repeats it), so the first one ends the file; earlier documents still count. A
    // duplicate key is not a syntax error: that document fails, the next ones are read.
    let mut values: Vec<(usize, Result<serde_yaml::Value, JobError>)> = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde_yaml::Value::deserialize(de) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(v) => values.push((index, Ok(v))),
            Err(e) => {
                let error = syntax_error(&e, path, index, &location);
                if error.code == ErrorCode::DuplicateKey {
                    values.push((index, Err(error)));
                } else {
                    report.errors.push(error);
                    break;
                }
            }
        }
    }

    // Pass 2: typed raw documents.
    let mut next = values.into_iter().peekable();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let Some((_, value)) = next.next_if(|(i, _)| *i == index) else {
            if next.peek().is_none() {
                break;
            }
            continue;
        };
        let value = match value {
            Ok(v) => v,
            Err(error) => {
                report.documents.push(DocumentReport {
                    index,
                    name: None,
                    kind: None,
                    content_hash: None,
                    job: None,
                    errors: vec![error],
                });
                continue;
            }
        };
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_string);
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .map(str::to_string);
        let dc = DocContext {
            file: path,
            index,
            job: name.clone(),
            location: &location,
        };
        let mut doc = DocumentReport {
            index,
            name,
            kind,
            content_hash: value.as_mapping().map(|_| value_hash(&value)),
            job: None,
            errors: Vec::new(),
        };
        match JobDocument::deserialize(de) {
            Err(e) => doc.errors.push(serde_error(&e, &dc)),
            Ok(raw) => match validate(&raw, ctx, &dc) {
                Ok(job) => {
                    doc.content_hash = Some(job.spec_hash().to_string());
                    doc.job = Some(Arc::new(job));
                }
                Err(mut errors) => {
                    // Checks run in a fixed order; the report reads top to bottom.
                    errors.sort_by_key(|e| (e.line, e.column));
                    doc.errors = errors;
                }
            },
        }
        report.documents.push(doc);
    }
    report
}

/// Content identity of a document that may not validate: the same keys as the spec hash.
fn value_hash(value: &serde_yaml::Value) -> String {
    let pick = |k: &str| {
        value
            .get(k)
            .map(yaml_to_json)
            .unwrap_or(serde_json::Value::Null)
    };
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .map(yaml_to_json)
        .unwrap_or(serde_json::Value::Null);
    let json = serde_json::json!({
        "apiVersion": pick("apiVersion"),
        "kind": pick("kind"),
        "metadata": { "name": name },
        "spec": pick("spec"),
    });
    sha256_hex(&canonical_json(&json))
}

/// Splits serde_yaml's message `path: text at line L column C` into (path, text).
fn split_message(full: &str) -> (Option<String>, String) {
    let body = match full.rfind(" at line ") {
        Some(i) if full[i..].contains(" column ") => &full[..i],
        _ => full,
    };
    if let Some((p, rest)) = body.split_once(": ") {
        let is_path = !p.is_empty()
            && !p.contains(' ')
            && !p.contains('`')
            && p.chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '<' || c == '?');
        if is_path {
            return (Some(p.to_string()), rest.to_string());
        }
    }
    (None, body.to_string())
}

/// The name between the first pair of backticks.
fn backticked(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(&text[start..start + len])
}

/// serde's "expected struct JobDocument" names an internal type; say what the user writes.
fn humanise(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("struct ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 7..];
        let ident_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if ident_len == 0 {
            out.push_str("struct ");
        } else {
            out.push_str("a mapping");
        }
        rest = &after[ident_len..];
    }
    out.push_str(rest);
    out
}

/// Under `credentials`, a value written where an object belongs may be a password
/// (`user: "admin:hunter2"`): serde's "invalid type: string \"…\"" would repeat it, so only the
/// type is kept.
fn redact_value(text: &str) -> String {
    let Some(rest) = text.strip_prefix("invalid type: ") else {
        return humanise(text);
    };
    let kind = [
        "string",
        "integer",
        "floating point",
        "boolean",
        "character",
    ]
    .into_iter()
    .find(|k| rest.starts_with(k));
    match (kind, rest.find(", expected ")) {
        (Some(k), Some(i)) => humanise(&format!("invalid type: {k}{}", &rest[i..])),
        _ => humanise(text),
    }
}

fn serde_pos(e: &serde_yaml::Error) -> Option<Pos> {
    e.location().map(|l| Pos {
        line: l.line().max(1),
        column: l.column().max(1),
    })
}

fn syntax_error(
    e: &serde_yaml::Error,
    path: &Path,
    index: usize,
    location: &DocLocation<'_>,
) -> JobError {
    let (field, message) = split_message(&shorten_unknown_field(&e.to_string()));
    let mut field = field;
    let mut pos = serde_pos(e);
    let code = if message.starts_with("duplicate entry") {
        // serde_yaml points at the mapping; the index knows where the key appears again.
        let key = message.split('"').nth(1).unwrap_or_default();
        let full = join_key(field.as_deref().unwrap_or(""), key);
        if let Some(entry) = location
            .locator()
            .doc(index)
            .and_then(|d| d.duplicate(&full))
        {
            pos = Some(entry.key);
        }
        field = Some(full);
        ErrorCode::DuplicateKey
    } else {
        ErrorCode::Syntax
    };
    let pos = pos.unwrap_or_else(|| {
        location
            .locator()
            .doc(index)
            .map_or(Pos::START, |d| d.start)
    });
    JobError {
        file: path.to_path_buf(),
        line: pos.line,
        column: pos.column,
        code,
        job: None,
        field,
        message,
        hint: code.default_hint().to_string(),
    }
}

/// Maps a serde_yaml error of the typed pass to a located, coded error.
fn serde_error(e: &serde_yaml::Error, dc: &DocContext<'_>) -> JobError {
    let (path, text) = split_message(&shorten_unknown_field(&e.to_string()));
    let path = path.unwrap_or_default();
    let serde_at = serde_pos(e);
    let locator = || dc.location.locator().doc(dc.index);
    let (code, field, pos) = if text.contains(PLAIN_SECRET_MESSAGE) {
        (ErrorCode::PlainSecret, path.clone(), serde_at)
    } else if text.starts_with("unknown field") {
        let field = backticked(&text).map_or(path.clone(), |k| join_key(&path, k));
        (ErrorCode::UnknownKey, field, serde_at)
    } else if text.starts_with("missing field") {
        let field = backticked(&text).map_or(path.clone(), |k| join_key(&path, k));
        // serde points at the start of the enclosing mapping; the parent key reads better.
        let at = if path.is_empty() {
            locator().map(|d| d.start)
        } else {
            locator().and_then(|d| d.get(&path)).map(|e| e.key)
        };
        (ErrorCode::MissingKey, field, at.or(serde_at))
    } else if text.starts_with("duplicate field") {
        let field = backticked(&text).map_or(path.clone(), |k| join_key(&path, k));
        let at = locator().and_then(|d| d.duplicate(&field)).map(|e| e.key);
        (ErrorCode::DuplicateKey, field, at.or(serde_at))
    } else if text.starts_with("unknown variant") && path == "kind" {
        (ErrorCode::UnknownKind, path.clone(), serde_at)
    } else if text.contains("expected a duration") {
        (ErrorCode::BadDuration, path.clone(), serde_at)
    } else if text.contains("is not a size") {
        (ErrorCode::BadSize, path.clone(), serde_at)
    } else if text.contains("mailbox selector") && !text.starts_with("invalid type") {
        (ErrorCode::BadSelector, path.clone(), serde_at)
    } else if text.starts_with("invalid type") {
        (ErrorCode::WrongType, path.clone(), serde_at)
    } else if text.contains("recursion limit") || text.contains("repetition limit") {
        (ErrorCode::Syntax, path.clone(), serde_at)
    } else {
        (ErrorCode::InvalidValue, path.clone(), serde_at)
    };
    let pos = pos
        .or_else(|| {
            let d = locator()?;
            let key = if field.is_empty() {
                parent(&path).unwrap_or("")
            } else {
                &field
            };
            Some(d.nearest(key).key)
        })
        .unwrap_or(Pos::START);
    let message = if field.contains("credentials") {
        redact_value(&text)
    } else {
        humanise(&text)
    };
    JobError {
        file: dc.file.to_path_buf(),
        line: pos.line,
        column: pos.column,
        code,
        job: dc.job.clone(),
        field: (!field.is_empty()).then_some(field),
        message,
        hint: code.default_hint().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_into_path_and_text() {
        assert_eq!(
            split_message(
                "spec.list[1].x: invalid type: string \"a\", expected u32 at line 5 column 10"
            ),
            (
                Some("spec.list[1].x".into()),
                "invalid type: string \"a\", expected u32".into()
            )
        );
        assert_eq!(
            split_message("missing field `spec`"),
            (None, "missing field `spec`".into())
        );
        assert_eq!(
            split_message("invalid type: map, expected struct JobDocument at line 1 column 1"),
            (
                None,
                "invalid type: map, expected struct JobDocument".into()
            )
        );
        assert_eq!(
            humanise("expected struct JobDocument"),
            "expected a mapping"
        );
    }

    #[test]
    fn a_duplicate_key_fails_its_document_only() {
        let config = crate::config::Config::builtin_defaults();
        let ctx = ValidationContext::without_server_check(&config);
        let doc = |name: &str| {
            format!(
                "apiVersion: restorectl/v1\nkind: Search\nmetadata: {{ name: {name} }}\nspec:\n  organization: o\n  search: {{ query: q, report: {{ path: r.csv }} }}\n"
            )
        };
        let text = format!("{}  organization: again\n---\n{}", doc("a"), doc("b"));
        let r = parse_str(&text, Path::new("x.yaml"), &ctx);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.documents.len(), 2);
        let e = &r.documents[0].errors[0];
        assert_eq!(
            (e.code, e.line, e.field.as_deref()),
            (ErrorCode::DuplicateKey, 7, Some("spec.organization"))
        );
        assert_eq!(r.documents[1].job.as_ref().map(|j| j.name()), Some("b"));
    }

    #[test]
    fn invalid_utf8_is_located() {
        let e = decode(Path::new("x.yaml"), b"a: 1\nb: \xff\n".to_vec()).unwrap_err();
        assert_eq!((e.code, e.line, e.column), (ErrorCode::Encoding, 2, 4));
        assert_eq!(
            decode(Path::new("x"), b"\xEF\xBB\xBFa: 1".to_vec()).unwrap(),
            "a: 1"
        );
    }
}
