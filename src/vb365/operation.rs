//! [`Operation`]: every VB365 endpoint this client calls, with its HTTP method, the exact
//! OpenAPI path template, whether it may be repeated when its outcome is unknown, and its request
//! body schema. The one list the client, the contract tests and the simulator agree on.

use reqwest::Method;

use super::error::Replay;

/// Every VB365 operation this client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Token,
    Logout,
    ListOrganizations,
    GetOrganization,
    ExploreOrganization,
    ExploreJob,
    ListRestoreSessions,
    GetRestoreSession,
    StopRestoreSession,
    ListRestoreSessionEvents,
    GetRestoreSessionStatistics,
    ListMailboxes,
    GetMailbox,
    RestoreMailboxes,
    RestoreMailbox,
    RestoreMailboxTo,
    RestoreDeviceCode,
    ExportMailboxToPst,
    SearchMailbox,
    SearchMailboxes,
    ListRestorePoints,
}

impl Operation {
    /// All operations, in a stable order.
    pub const ALL: [Operation; 21] = [
        Operation::Token,
        Operation::Logout,
        Operation::ListOrganizations,
        Operation::GetOrganization,
        Operation::ExploreOrganization,
        Operation::ExploreJob,
        Operation::ListRestoreSessions,
        Operation::GetRestoreSession,
        Operation::StopRestoreSession,
        Operation::ListRestoreSessionEvents,
        Operation::GetRestoreSessionStatistics,
        Operation::ListMailboxes,
        Operation::GetMailbox,
        Operation::RestoreMailboxes,
        Operation::RestoreMailbox,
        Operation::RestoreMailboxTo,
        Operation::RestoreDeviceCode,
        Operation::ExportMailboxToPst,
        Operation::SearchMailbox,
        Operation::SearchMailboxes,
        Operation::ListRestorePoints,
    ];

    /// HTTP method.
    pub fn method(self) -> Method {
        use Operation::*;
        match self {
            ListOrganizations
            | GetOrganization
            | ListRestoreSessions
            | GetRestoreSession
            | ListRestoreSessionEvents
            | GetRestoreSessionStatistics
            | ListMailboxes
            | GetMailbox
            | ListRestorePoints => Method::GET,
            Token | Logout | ExploreOrganization | ExploreJob | StopRestoreSession
            | RestoreMailboxes | RestoreMailbox | RestoreMailboxTo | RestoreDeviceCode
            | ExportMailboxToPst | SearchMailbox | SearchMailboxes => Method::POST,
        }
    }

    /// The path template exactly as in the vendor OpenAPI document.
    pub fn path_template(self) -> &'static str {
        use Operation::*;
        match self {
            Token => "/v8/token",
            Logout => "/v8/token/logout",
            ListOrganizations => "/v8/Organizations",
            GetOrganization => "/v8/Organizations/{organizationId}",
            ExploreOrganization => "/v8/Organizations/{organizationId}/explore",
            ExploreJob => "/v8/Jobs/{jobId}/explore",
            ListRestoreSessions => "/v8/RestoreSessions",
            GetRestoreSession => "/v8/RestoreSessions/{restoreSessionId}",
            StopRestoreSession => "/v8/RestoreSessions/{restoreSessionId}/Stop",
            ListRestoreSessionEvents => "/v8/RestoreSessions/{restoreSessionId}/Events",
            GetRestoreSessionStatistics => "/v8/RestoreSessions/{restoreSessionId}/Statistics",
            ListMailboxes => "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes",
            GetMailbox => {
                "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}"
            }
            RestoreMailboxes => {
                "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/restore"
            }
            RestoreMailbox => {
                "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restore"
            }
            RestoreMailboxTo => {
                "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restoreTo"
            }
            RestoreDeviceCode => {
                "/v8/RestoreSessions/{restoreSessionId}/organization/restoreDeviceCode"
            }
            ExportMailboxToPst => {
                "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/exportToPst"
            }
            SearchMailbox => {
                "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/search"
            }
            SearchMailboxes => {
                "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/search"
            }
            ListRestorePoints => "/v8/RestorePoints",
        }
    }

    /// Whether the operation may be repeated when its outcome is unknown. Only the three
    /// restore POSTs are at-most-once; explore and stop are POSTs too, but a duplicate explore
    /// only opens a session that gets stopped, stopping twice is harmless, and a second device
    /// code only leaves the first one unused.
    pub fn replay(self) -> Replay {
        match self {
            Operation::RestoreMailboxes
            | Operation::RestoreMailbox
            | Operation::RestoreMailboxTo => Replay::AtMostOnce,
            _ => Replay::Safe,
        }
    }

    /// The request body schema name in the OpenAPI document, for operations with a JSON body
    /// (the token request is form-encoded with an inline schema).
    pub fn request_schema(self) -> Option<&'static str> {
        use Operation::*;
        match self {
            ExploreOrganization => Some("RESTOrganizationExploreOptions"),
            ExploreJob => Some("RESTExploreOptions"),
            RestoreMailboxes => Some("RestBulkRestoreOptions"),
            RestoreMailbox => Some("RESTRestoreToOriginalLocation"),
            RestoreMailboxTo => Some("RESTRestoreToDifferentLocation"),
            RestoreDeviceCode => Some("RESTDeviceCodeRequestOptions"),
            ExportMailboxToPst => Some("RESTExportFolderToPst"),
            SearchMailbox | SearchMailboxes => Some("RESTSearchOptions"),
            _ => None,
        }
    }

    /// The concrete path: each `{placeholder}` of the template replaced, in order, by `params`.
    /// Returns `None` when the number of parameters does not match the template.
    pub fn path(self, params: &[&str]) -> Option<String> {
        let mut out = String::new();
        let mut rest = self.path_template();
        let mut values = params.iter();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}')? + open;
            out.push_str(&rest[..open]);
            out.push_str(values.next()?);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        if values.next().is_some() {
            return None;
        }
        Some(out)
    }
}

/// Every method + OpenAPI path template the client can call.
pub fn all_operations() -> Vec<(Method, &'static str)> {
    Operation::ALL
        .iter()
        .map(|op| (op.method(), op.path_template()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_from_templates() {
        assert_eq!(
            Operation::ExportMailboxToPst
                .path(&["rs1", "mb2"])
                .as_deref(),
            Some("/v8/RestoreSessions/rs1/organization/mailboxes/mb2/exportToPst")
        );
        assert_eq!(Operation::Token.path(&[]).as_deref(), Some("/v8/token"));
        assert_eq!(Operation::GetMailbox.path(&["only-one"]), None);
        assert_eq!(Operation::Token.path(&["extra"]), None);
    }

    #[test]
    fn operation_list_is_complete_and_unique() {
        let ops = all_operations();
        assert_eq!(ops.len(), 21);
        let mut seen = std::collections::HashSet::new();
        for (m, p) in &ops {
            assert!(seen.insert((m.clone(), *p)), "duplicate {m} {p}");
            assert!(p.starts_with("/v8/"), "{p}");
        }
        let at_most_once: Vec<_> = Operation::ALL
            .iter()
            .filter(|o| o.replay() == Replay::AtMostOnce)
            .collect();
        assert_eq!(at_most_once.len(), 3);
    }
}
