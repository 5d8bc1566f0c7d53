//! RestoreTo `folder`: a folder in the target mailbox, with its own rules. It is a mailbox
//! folder name handed to VB365 as text, never a path on this machine, so the path-template
//! rules (relative, no `..`, no backslash, `/` as separator) do not apply:
//!
//! - `{job}`, `{run}`, `{date}`, `{time}`, `{mailbox}`, `{mailboxId}` and `{org}` are replaced
//!   (the same values as in path templates, [`TemplateValues`]), inserted as they are: no
//!   sanitising, since nothing is written to a file system; only control characters in a value
//!   become `_`;
//! - `{{` and `}}` write a literal `{` / `}`; any other brace is literal too (`Archive {2024}`,
//!   `a}b`), except `{word}` with a word of ASCII letters that is not a placeholder: that is
//!   almost always a misspelt placeholder and is rejected (write `{{word}}` for the text);
//! - backslashes, `..`, a leading `/` and every other printable character are kept;
//! - the folder must not be empty or contain control characters.

use std::fmt;

use super::template::{Placeholder, TemplateValues};

/// Why a folder was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FolderError {
    #[error("the folder is empty")]
    Empty,
    #[error("the folder contains a control character")]
    ControlCharacter,
    #[error(
        "`{{{0}}}` is not a placeholder (known: {{job}}, {{run}}, {{date}}, {{time}}, {{mailbox}}, {{mailboxId}}, {{org}}); write `{{{{{0}}}}}` for the literal text"
    )]
    UnknownPlaceholder(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

/// A checked RestoreTo folder. Only [`FolderTemplate::parse`] builds one.
#[derive(Clone, PartialEq, Eq)]
pub struct FolderTemplate {
    text: String,
    parts: Vec<Part>,
}

impl fmt::Debug for FolderTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FolderTemplate({:?})", self.text)
    }
}

impl fmt::Display for FolderTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FolderTemplate {
    /// Parses and checks a folder (see the module doc).
    pub fn parse(text: &str) -> Result<FolderTemplate, FolderError> {
        if text.trim().is_empty() {
            return Err(FolderError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(FolderError::ControlCharacter);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                literal.push('{');
                rest = after;
                continue;
            }
            if let Some(after) = rest.strip_prefix("}}") {
                literal.push('}');
                rest = after;
                continue;
            }
            if c == '{'
                && let Some(close) = rest.find('}')
            {
                let name = &rest[1..close];
                if let Some(p) = Placeholder::parse(name) {
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Placeholder(p));
                    rest = &rest[close + 1..];
                    continue;
                }
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic()) {
                    return Err(FolderError::UnknownPlaceholder(name.to_string()));
                }
            }
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(FolderTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The folder as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The folder name for one mailbox: placeholders replaced by their values (control
    /// characters of a value become `_`; an empty value stays empty).
    pub fn render(&self, values: &TemplateValues) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Placeholder(p) => out.extend(
                    values
                        .get(*p)
                        .chars()
                        .map(|c| if c.is_control() { '_' } else { c }),
                ),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues {
        TemplateValues {
            job: "offboarding".into(),
            mailbox: "alice@contoso.com".into(),
            ..TemplateValues::default()
        }
    }

    #[test]
    fn folders_are_mailbox_folders_not_paths() {
        for (text, rendered) in [
            ("Restored/{mailbox}", "Restored/alice@contoso.com"),
            ("\\Inbox\\Restored", "\\Inbox\\Restored"),
            ("/Restored", "/Restored"),
            ("../x/./y//", "../x/./y//"),
            ("Archive {2024}", "Archive {2024}"),
            ("a}b{", "a}b{"),
            ("{{job}} of {job}", "{job} of offboarding"),
            ("{ mailbox }", "{ mailbox }"),
            ("Ünïcødé ✓", "Ünïcødé ✓"),
        ] {
            let f = FolderTemplate::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(f.render(&values()), rendered, "{text}");
            assert_eq!(f.as_str(), text);
        }
    }

    #[test]
    fn bad_folders_are_named() {
        assert_eq!(FolderTemplate::parse(" "), Err(FolderError::Empty));
        assert_eq!(
            FolderTemplate::parse("a\tb"),
            Err(FolderError::ControlCharacter)
        );
        let e = FolderTemplate::parse("Restored/{mailbx}").unwrap_err();
        assert_eq!(e, FolderError::UnknownPlaceholder("mailbx".into()));
        assert!(e.to_string().contains("{{mailbx}}"), "{e}");
    }

    #[test]
    fn control_characters_of_values_are_replaced() {
        let f = FolderTemplate::parse("{mailbox}").unwrap();
        let v = TemplateValues {
            mailbox: "a\nb/c".into(),
            ..TemplateValues::default()
        };
        assert_eq!(f.render(&v), "a_b/c");
    }
}
