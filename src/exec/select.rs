//! Mailbox selectors against a restore session's mailbox list (SPEC §4): exact e-mail
//! (case-insensitive), id, glob on the e-mail, `all`; minus `exclude`; filtered by `archives`.
//!
//! A selector that matches no mailbox of the session fails the run, because a typo in a restore
//! or export job must not silently shrink what is restored or exported: the message lists the
//! selectors that matched nothing and how many mailboxes were searched. A selection that ends
//! up empty (everything excluded) fails the same way.

use crate::jobs::{MailboxSelection, Selector};
use crate::store::NewStep;
use crate::vb365::Mailbox;

/// Why a selection failed; `Display` is the run's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SelectionError {
    pub message: String,
}

/// The mailboxes of `all` that `selection` selects, in listing order.
pub fn resolve<'a>(
    selection: &MailboxSelection,
    all: &'a [Mailbox],
) -> Result<Vec<&'a Mailbox>, SelectionError> {
    let unmatched: Vec<&Selector> = selection
        .include()
        .iter()
        .filter(|s| !all.iter().any(|m| s.matches(&m.email, &m.id.to_string())))
        .collect();
    if !unmatched.is_empty() {
        let list: Vec<String> = unmatched.iter().map(|s| s.to_string()).collect();
        return Err(SelectionError {
            message: format!(
                "mailbox selector(s) matched nothing: {}; {} mailboxes of the restore session were searched",
                list.join(", "),
                all.len()
            ),
        });
    }
    let chosen: Vec<&Mailbox> = all
        .iter()
        .filter(|m| selection.selects(&m.email, &m.id.to_string(), m.is_archive))
        .collect();
    if chosen.is_empty() {
        let include: Vec<String> = selection.include().iter().map(|s| s.to_string()).collect();
        let exclude: Vec<String> = selection.exclude().iter().map(|s| s.to_string()).collect();
        return Err(SelectionError {
            message: format!(
                "no mailbox selected: mailboxes [{}], exclude [{}], archives {:?}; {} mailboxes of the restore session were searched",
                include.join(", "),
                exclude.join(", "),
                selection.archives(),
                all.len()
            ),
        });
    }
    Ok(chosen)
}

/// One step per mailbox, `seq` in listing order.
pub fn per_mailbox_steps(mailboxes: &[&Mailbox]) -> Vec<NewStep> {
    mailboxes
        .iter()
        .enumerate()
        .map(|(i, m)| NewStep {
            seq: i as i64,
            mailbox_id: Some(m.id.to_string()),
            mailbox_email: Some(m.email.clone()),
            mailbox_name: Some(m.name.clone()),
            is_archive: m.is_archive,
            mailbox_ids: None,
        })
        .collect()
}

/// The one step of a BulkRestore: every selected mailbox id.
pub fn bulk_step(mailboxes: &[&Mailbox]) -> NewStep {
    NewStep {
        seq: 0,
        mailbox_ids: Some(mailboxes.iter().map(|m| m.id.to_string()).collect()),
        mailbox_name: Some(format!("{} mailboxes", mailboxes.len())),
        ..NewStep::default()
    }
}

/// The one step of an organisation-wide Search.
pub fn organization_step() -> NewStep {
    NewStep {
        seq: 0,
        mailbox_name: Some("organization-wide search".to_string()),
        ..NewStep::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn mb(email: &str, archive: bool) -> Mailbox {
        Mailbox {
            id: Uuid::new_v4(),
            name: email.to_string(),
            email: email.to_string(),
            is_archive: archive,
            is_public: false,
        }
    }

    fn selection(yaml: &str) -> MailboxSelection {
        let config = crate::config::Config::builtin_defaults();
        let ctx = crate::jobs::ValidationContext::without_server_check(&config);
        let text = format!(
            "apiVersion: restorectl/v1\nkind: Search\nmetadata: {{ name: t }}\nspec:\n  organization: contoso.onmicrosoft.com\n{yaml}  search: {{ query: 'a', report: {{ path: 'r.jsonl' }} }}\n"
        );
        let report = crate::jobs::parse_str(&text, std::path::Path::new("t.yaml"), &ctx);
        let errors: Vec<String> = report.all_errors().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        report.jobs().next().unwrap().selection().clone()
    }

    #[test]
    fn selectors_exclude_and_archives() {
        let all = vec![
            mb("alice@contoso.com", false),
            mb("alice@contoso.com", true),
            mb("svc-scan@contoso.com", false),
            mb("anna@legal.contoso.com", false),
        ];
        let s = selection(
            "  mailboxes: [ALICE@contoso.com, { match: '*@*contoso.com' }]\n  exclude: [{ match: 'svc-*' }]\n  archives: exclude\n",
        );
        let got: Vec<&str> = resolve(&s, &all)
            .unwrap()
            .iter()
            .map(|m| m.email.as_str())
            .collect();
        assert_eq!(got, ["alice@contoso.com", "anna@legal.contoso.com"]);
        let only = selection("  mailboxes: [{ all: true }]\n  archives: only\n");
        let got = resolve(&only, &all).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_archive);
        let by_id = selection(&format!("  mailboxes: [{{ id: {} }}]\n", all[3].id));
        assert_eq!(
            resolve(&by_id, &all).unwrap()[0].email,
            "anna@legal.contoso.com"
        );
    }

    #[test]
    fn unmatched_selectors_are_listed_with_the_number_searched() {
        let all = vec![mb("alice@contoso.com", false), mb("bob@contoso.com", false)];
        let s = selection("  mailboxes: [alice@contoso.com, zed@contoso.com, { match: 'x*@y' }]\n");
        let e = resolve(&s, &all).unwrap_err().to_string();
        assert!(
            e.contains("zed@contoso.com") && e.contains("{match: x*@y}"),
            "{e}"
        );
        assert!(!e.contains("alice"), "{e}");
        assert!(e.contains("2 mailboxes"), "{e}");
        let empty = selection("  mailboxes: [alice@contoso.com]\n  exclude: [alice@contoso.com]\n");
        let e = resolve(&empty, &all).unwrap_err().to_string();
        assert!(
            e.contains("no mailbox selected") && e.contains("2 mailboxes"),
            "{e}"
        );
    }
}
