//! Mailbox selection (SPEC §4): typed selectors, `exclude` and `archives`, and the one function
//! that decides whether a mailbox of a restore session belongs to a run.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use uuid::Uuid;

use super::raw::{self, Archives};

/// One checked selector.
#[derive(Clone)]
pub enum Selector {
    /// Exact e-mail, stored lower-case; compared case-insensitively.
    Email(String),
    /// Mailbox id.
    Id(Uuid),
    /// Case-insensitive glob on the e-mail (`*@legal.contoso.com`).
    Match {
        pattern: String,
        matcher: GlobMatcher,
    },
    /// Every mailbox of the organization.
    All,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Email(e) => write!(f, "Email({e:?})"),
            Selector::Id(id) => write!(f, "Id({id})"),
            Selector::Match { pattern, .. } => write!(f, "Match({pattern:?})"),
            Selector::All => f.write_str("All"),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Email(e) => f.write_str(e),
            Selector::Id(id) => write!(f, "{{id: {id}}}"),
            Selector::Match { pattern, .. } => write!(f, "{{match: {pattern}}}"),
            Selector::All => f.write_str("{all: true}"),
        }
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Selector::Email(a), Selector::Email(b)) => a == b,
            (Selector::Id(a), Selector::Id(b)) => a == b,
            (Selector::Match { pattern: a, .. }, Selector::Match { pattern: b, .. }) => a == b,
            (Selector::All, Selector::All) => true,
            _ => false,
        }
    }
}

impl Selector {
    /// Checks a raw selector; the error is a message for a `bad-selector` error.
    pub(crate) fn from_raw(raw: &raw::Selector) -> Result<Selector, String> {
        match raw {
            raw::Selector::Email(e) => {
                check_email(e)?;
                Ok(Selector::Email(e.trim().to_lowercase()))
            }
            raw::Selector::Id(id) => Uuid::parse_str(id.trim())
                .map(Selector::Id)
                .map_err(|_| format!("`{id}` is not a mailbox id (uuid)")),
            raw::Selector::Match(p) => {
                if p.trim().is_empty() {
                    return Err("the glob is empty".into());
                }
                let matcher = GlobBuilder::new(p.trim())
                    .case_insensitive(true)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| format!("`{p}` is not a valid glob: {}", e.kind()))?
                    .compile_matcher();
                Ok(Selector::Match {
                    pattern: p.trim().to_string(),
                    matcher,
                })
            }
            raw::Selector::All(true) => Ok(Selector::All),
            raw::Selector::All(false) => {
                Err("`{ all: false }` selects nothing; remove it or write `{ all: true }`".into())
            }
        }
    }

    /// Whether this selector picks the mailbox (`email` compared case-insensitively).
    pub fn matches(&self, email: &str, id: &str) -> bool {
        match self {
            Selector::Email(e) => {
                email.trim().eq_ignore_ascii_case(e) || email.trim().to_lowercase() == *e
            }
            Selector::Id(u) => Uuid::parse_str(id.trim()).is_ok_and(|i| i == *u),
            Selector::Match { matcher, .. } => matcher.is_match(email.trim()),
            Selector::All => true,
        }
    }
}

/// Checks the shape of an e-mail address: `local@domain`, no spaces, no control characters.
pub(crate) fn check_email(e: &str) -> Result<(), String> {
    let t = e.trim();
    let ok = match t.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !t.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{e}` is not an e-mail address"))
    }
}

/// Which mailboxes a job works on: `mailboxes`, minus `exclude`, filtered by `archives`.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxSelection {
    pub(crate) include: Vec<Selector>,
    pub(crate) exclude: Vec<Selector>,
    pub(crate) archives: Archives,
}

impl MailboxSelection {
    /// The `mailboxes` selectors. Empty only for an organisation-wide Search.
    pub fn include(&self) -> &[Selector] {
        &self.include
    }

    /// The `exclude` selectors.
    pub fn exclude(&self) -> &[Selector] {
        &self.exclude
    }

    pub fn archives(&self) -> Archives {
        self.archives
    }

    /// True for a Search without `mailboxes`: one organisation-wide search request.
    pub fn is_organization_wide(&self) -> bool {
        self.include.is_empty()
    }

    /// Whether a mailbox of the restore session is part of the run.
    pub fn selects(&self, email: &str, id: &str, is_archive: bool) -> bool {
        let archive_ok = match self.archives {
            Archives::Include => true,
            Archives::Exclude => !is_archive,
            Archives::Only => is_archive,
        };
        archive_ok
            && (self.include.is_empty() || self.include.iter().any(|s| s.matches(email, id)))
            && !self.exclude.iter().any(|s| s.matches(email, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(r: raw::Selector) -> Selector {
        Selector::from_raw(&r).unwrap()
    }

    #[test]
    fn selection_applies_include_exclude_and_archives() {
        let id = "7a619cf6-b7e1-4141-951b-960a2fca061d";
        let s = MailboxSelection {
            include: vec![
                sel(raw::Selector::Email("Alice@Contoso.com".into())),
                sel(raw::Selector::Id(id.to_uppercase())),
                sel(raw::Selector::Match("*@legal.contoso.com".into())),
            ],
            exclude: vec![sel(raw::Selector::Match("svc-*@*".into()))],
            archives: Archives::Exclude,
        };
        assert!(s.selects("ALICE@contoso.com", "x", false));
        assert!(!s.selects("alice@contoso.com", "x", true));
        assert!(s.selects("someone@else.com", id, false));
        assert!(s.selects("Anna@Legal.Contoso.com", "x", false));
        assert!(!s.selects("svc-scan@legal.contoso.com", "x", false));
        assert!(!s.selects("bob@contoso.com", "x", false));
        let all = MailboxSelection {
            include: vec![Selector::All],
            exclude: vec![],
            archives: Archives::Only,
        };
        assert!(all.selects("bob@contoso.com", "x", true));
        assert!(!all.selects("bob@contoso.com", "x", false));
    }

    #[test]
    fn bad_selectors_are_rejected() {
        for r in [
            raw::Selector::Email("not-an-email".into()),
            raw::Selector::Email("a b@c".into()),
            raw::Selector::Id("nope".into()),
            raw::Selector::Match("[".into()),
            raw::Selector::All(false),
        ] {
            assert!(Selector::from_raw(&r).is_err(), "{r:?}");
        }
    }
}
