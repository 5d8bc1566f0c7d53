//! Restore sessions: explore sessions and per-operation restore sessions, their events and
//! statistics, cached search result sets and built exports, plus the mutable simulator data
//! (tokens, counters) that lives beside them under one lock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::Tokens;
use super::config::RestoreOutcome;
use super::export::{ExportKey, ExportLayout};
use super::world::Mailbox;
use super::world::dotnet_time;

/// Search result sets kept per session.
pub(crate) const MAX_SEARCH_SETS: usize = 64;

/// Host name the sessions report as `clientHost`.
const CLIENT_HOST: &str = "vb365-sim.local";

/// Whether a session was opened by explore or created for a restore operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionKind {
    Explore,
    Operation { explore_id: Uuid },
}

/// One event of a session's log.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: Uuid,
    pub order: i64,
    /// `None`, `Restore`, `Export`, ...
    pub kind: &'static str,
    /// `Running`, `Success`, `Warning`, `Failed`, `Cancelled`, `Skipped`.
    pub status: &'static str,
    pub title: String,
    pub message: String,
    /// Restore events: the mailbox and the id of the operation they belong to.
    pub mailbox: Option<Mailbox>,
    pub operation: Option<Uuid>,
    pub target: Option<String>,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

/// Per-mailbox restore statistics (`RESTBulkMailboxItemRestoreDetails`).
#[derive(Debug, Clone)]
pub(crate) struct MailboxStat {
    pub mailbox: Mailbox,
    pub outcome: RestoreOutcome,
    pub created: i64,
    pub merged: i64,
    pub failed: i64,
    pub skipped: i64,
}

impl MailboxStat {
    pub(crate) fn status(&self) -> &'static str {
        match self.outcome {
            RestoreOutcome::Success => "Success",
            RestoreOutcome::Warning { .. } => "Warning",
            RestoreOutcome::Failed { .. } | RestoreOutcome::CannotContinue { .. } => "Failed",
        }
    }
}

/// A cached search result set.
#[derive(Debug)]
pub(crate) struct SearchSet {
    /// The mailbox searched (`None` for the cross-mailbox search).
    pub mailbox: Option<Uuid>,
    pub hits: SearchHits,
}

/// The hits of a search result set.
#[derive(Debug)]
pub(crate) enum SearchHits {
    /// The world's items that matched, as served.
    Items(Vec<Value>),
    /// `total` generated hits over `mailboxes` in turn (`SimConfig::synthetic_search_hits`),
    /// built when a page asks for them: nothing per hit is held.
    Synthetic { total: u64, mailboxes: Vec<Uuid> },
}

/// A restore session.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: Uuid,
    pub kind: SessionKind,
    pub name: String,
    pub org_id: Uuid,
    pub org_name: String,
    pub user: String,
    pub explore_type: String,
    /// The restore point shown; `None` = before the first backup (no data).
    pub restore_point: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub ended: Option<DateTime<Utc>>,
    pub result: &'static str,
    pub etag: i64,
    pub events: Vec<Event>,
    pub stats: Vec<MailboxStat>,
    pub searches: HashMap<Uuid, Arc<SearchSet>>,
    /// Search sets in creation order, for eviction.
    pub search_order: VecDeque<Uuid>,
    pub exports: HashSet<ExportKey>,
    /// `setId` reported on mailbox pages.
    pub mailbox_set: Uuid,
}

impl Session {
    pub(crate) fn new(kind: SessionKind, name: String, org: (Uuid, &str), user: &str) -> Session {
        let now = Utc::now();
        let id = Uuid::new_v4();
        let mut session = Session {
            id,
            kind,
            name,
            org_id: org.0,
            org_name: org.1.to_string(),
            user: user.to_string(),
            explore_type: "Vex".to_string(),
            restore_point: None,
            created: now,
            ended: None,
            result: "Success",
            etag: 1,
            events: Vec::new(),
            stats: Vec::new(),
            searches: HashMap::new(),
            search_order: VecDeque::new(),
            exports: HashSet::new(),
            mailbox_set: Uuid::new_v4(),
        };
        session.log(
            "None",
            "Success",
            "Session started",
            "Restore session has been started",
            now,
        );
        session
    }

    /// Caches a search result set. The real cache lifetime is undocumented; the simulator
    /// keeps the newest [`MAX_SEARCH_SETS`] sets per session (and all of them until `Stop`).
    pub(crate) fn remember_search(&mut self, id: Uuid, set: Arc<SearchSet>) {
        self.searches.insert(id, set);
        self.search_order.push_back(id);
        while self.search_order.len() > MAX_SEARCH_SETS {
            if let Some(old) = self.search_order.pop_front() {
                self.searches.remove(&old);
            }
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.ended.is_some()
    }

    /// Appends a finished event and bumps the eTag.
    pub(crate) fn log(
        &mut self,
        kind: &'static str,
        status: &'static str,
        title: &str,
        message: &str,
        at: DateTime<Utc>,
    ) {
        self.push_event(Event {
            id: Uuid::new_v4(),
            order: 0,
            kind,
            status,
            title: title.to_string(),
            message: message.to_string(),
            mailbox: None,
            operation: None,
            target: None,
            start: at,
            end: Some(at),
        });
    }

    pub(crate) fn push_event(&mut self, mut event: Event) {
        event.order = self.events.len() as i64 + 1;
        self.events.push(event);
        self.etag += 1;
    }

    /// Stops the session: `Stopped`, `endTime` set, running restores cancelled, caches dropped.
    pub(crate) fn stop(&mut self) {
        let now = Utc::now();
        for e in self.events.iter_mut().filter(|e| e.status == "Running") {
            e.status = "Cancelled";
            e.end = Some(now);
        }
        self.log(
            "None",
            "Success",
            "Session stopped",
            "Restore session has been stopped",
            now,
        );
        self.ended = Some(now);
        self.searches.clear();
        self.search_order.clear();
        self.exports.clear();
    }

    /// `RESTRestoreSession`.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "organization": self.org_name,
            "type": self.explore_type,
            "creationTime": dotnet_time(self.created),
            "endTime": self.ended.map(dotnet_time),
            "state": if self.is_stopped() { "Stopped" } else { "Working" },
            "result": self.result,
            "initiatedBy": self.user,
            "details": "",
            "scopeName": self.org_name,
            "clientHost": CLIENT_HOST,
            "reason": "",
            "eTag": self.etag,
            "_links": {"self": {"href": format!("/v8/RestoreSessions/{}", self.id)}},
        })
    }

    /// `RESTRestoreSessionEvent`.
    pub(crate) fn event_json(&self, e: &Event) -> Value {
        let end = e.end.unwrap_or_else(Utc::now);
        let mut v = json!({
            "id": e.id,
            "order": e.order,
            "type": e.kind,
            "status": e.status,
            "title": e.title,
            "message": e.message,
            "startTime": dotnet_time(e.start),
            "endTime": e.end.map(dotnet_time),
            "duration": timespan(end - e.start),
            "organizationId": self.org_id,
            "_links": {"self": {"href": format!("/v8/RestoreSessions/{}/Events/{}", self.id, e.id)}},
        });
        if let Some(m) = &e.mailbox {
            v["itemName"] = json!(m.name);
            v["itemType"] = json!("Mailbox");
            v["source"] = json!(m.email);
            v["target"] = json!(e.target.clone().unwrap_or_else(|| m.email.clone()));
        }
        v
    }

    /// `RESTRestoreSessionStatistics`.
    pub(crate) fn statistics_json(&self) -> Value {
        let sum = |f: fn(&MailboxStat) -> i64| self.stats.iter().map(f).sum::<i64>();
        let (created, merged, failed, skipped) = (
            sum(|s| s.created),
            sum(|s| s.merged),
            sum(|s| s.failed),
            sum(|s| s.skipped),
        );
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        let items: Vec<Value> = self
            .stats
            .iter()
            .map(|s| {
                let mut item = json!({
                    "itemRestoreDetailsType": "BulkMailbox",
                    "id": s.mailbox.id.to_string(),
                    "name": s.mailbox.name,
                    "title": s.mailbox.email,
                    "itemType": "ExchangeMailbox",
                    "status": s.status(),
                    "mailboxEmail": s.mailbox.email,
                    "mailboxIsArchive": s.mailbox.is_archive,
                    "mailboxIsPublic": false,
                    "createdMailboxItemsCount": s.created,
                    "mergedMailboxItemsCount": s.merged,
                    "failedMailboxItemsCount": s.failed,
                    "skippedMailboxItemsCount": s.skipped,
                    "warnings": [],
                });
                match &s.outcome {
                    RestoreOutcome::Success => {}
                    RestoreOutcome::Warning { failed_items } => {
                        let w = format!(
                            "{failed_items} items failed to restore for {}",
                            s.mailbox.email
                        );
                        item["warnings"] = json!([w.clone()]);
                        warnings.push(w);
                    }
                    RestoreOutcome::Failed { error } => {
                        item["error"] = json!(error);
                        errors.push(format!("{}: {error}", s.mailbox.email));
                    }
                    RestoreOutcome::CannotContinue { error } => {
                        item["cannotContinueMailboxError"] = json!(error);
                        errors.push(format!("{}: {error}", s.mailbox.email));
                    }
                }
                item
            })
            .collect();
        json!({
            "totalItemsCount": created + merged + failed + skipped,
            "restoredItemsCount": created + merged,
            "failedItemsCount": failed,
            "skippedItemsCount": skipped,
            "warnings": warnings,
            "errors": errors,
            "items": items,
        })
    }
}

/// .NET TimeSpan text (`00:00:41.5000000`).
fn timespan(d: chrono::Duration) -> String {
    let d = d.max(chrono::Duration::zero());
    let secs = d.num_seconds();
    let ticks = (d - chrono::Duration::seconds(secs))
        .num_nanoseconds()
        .unwrap_or(0)
        / 100;
    format!(
        "{:02}:{:02}:{:02}.{:07}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        ticks
    )
}

/// A public view of a session for tests and `--dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub id: Uuid,
    /// For an operation session, the explore session it belongs to.
    pub operation_of: Option<Uuid>,
    /// `Working` or `Stopped`.
    pub state: String,
    /// `Success`, `Warning` or `Failed`.
    pub result: String,
    /// When it stopped.
    pub end_time: Option<DateTime<Utc>>,
    /// The restore point it shows (`None` = no data).
    pub restore_point: Option<DateTime<Utc>>,
    /// Status of each `Restore` event, in order.
    pub restore_events: Vec<String>,
}

impl From<&Session> for SessionInfo {
    fn from(s: &Session) -> Self {
        SessionInfo {
            id: s.id,
            operation_of: match s.kind {
                SessionKind::Operation { explore_id } => Some(explore_id),
                SessionKind::Explore => None,
            },
            state: if s.is_stopped() { "Stopped" } else { "Working" }.to_string(),
            result: s.result.to_string(),
            end_time: s.ended,
            restore_point: s.restore_point,
            restore_events: s
                .events
                .iter()
                .filter(|e| e.kind == "Restore")
                .map(|e| e.status.to_string())
                .collect(),
        }
    }
}

/// One device code handed out (`restoreDeviceCode`, see `device_code`).
#[derive(Debug, Clone)]
pub(crate) struct DeviceCode {
    pub session: Uuid,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub signed_in: bool,
    /// The `RESTDeviceCodeRequestOptions` it was asked with.
    pub request: serde_json::Value,
}

/// All mutable simulator data, behind one `std` mutex that is never held across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Data {
    pub sessions: HashMap<Uuid, Session>,
    /// Session ids in creation order.
    pub order: Vec<Uuid>,
    pub tokens: Tokens,
    /// Restore POSTs that really started, per mailbox id.
    pub restore_calls: HashMap<Uuid, usize>,
    /// Restore outcomes set at run time (override the configuration).
    pub outcomes: BTreeMap<String, RestoreOutcome>,
    /// Built export layouts (their ZIP CRCs cost a pass over the data).
    pub layouts: HashMap<ExportKey, Arc<ExportLayout>>,
    /// Device codes handed out, by `userCode`.
    pub device_codes: HashMap<String, DeviceCode>,
}

impl Data {
    pub(crate) fn insert(&mut self, session: Session) -> Uuid {
        let id = session.id;
        self.order.push(id);
        self.sessions.insert(id, session);
        id
    }

    pub(crate) fn remove(&mut self, id: Uuid) {
        self.sessions.remove(&id);
        self.order.retain(|s| *s != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_look_like_dotnet() {
        assert_eq!(
            timespan(chrono::Duration::milliseconds(41_500)),
            "00:00:41.5000000"
        );
        assert_eq!(
            timespan(chrono::Duration::seconds(3723)),
            "01:02:03.0000000"
        );
    }
}
