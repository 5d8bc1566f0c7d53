//! Wire types of VB365 responses (the schemas of `openapi-v8-subset.json`), in spec casing.
//!
//! Responses are read leniently: unknown properties are ignored, fields the spec does not mark
//! required are `Option`, enum values a newer server may add map to an `Unknown` variant, and
//! timestamps accept the .NET forms (7 fractional digits, offsets, no offset at all). Every type
//! also serialises back to the same shape, so tests and the simulator can produce them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Lenient timestamp (de)serialisation for `format: date-time` fields.
pub mod timestamp {
    use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses RFC 3339 with any number of fractional digits and any offset; a timestamp without
    /// an offset (a .NET `DateTime` of kind Unspecified) is taken as UTC.
    pub fn parse(s: &str) -> Option<DateTime<Utc>> {
        let s = s.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(t.with_timezone(&Utc));
        }
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|n| n.and_utc())
    }

    /// Formats as RFC 3339 in UTC with `Z` and only as many fractional digits as needed.
    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a timestamp")))
    }

    /// The same for nullable fields.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&format(t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) if s.trim().is_empty() => Ok(None),
                Some(s) => parse(&s)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a timestamp"))),
            }
        }
    }
}

/// One page of a paged collection (`PageOf…`). There is no total count: the last page is the
/// first one shorter than the requested limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default)]
    pub offset: i64,
    #[serde(default)]
    pub limit: i64,
    /// The id of the server-side cached result set (search); sent back on later pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_id: Option<Uuid>,
    #[serde(default = "Vec::new")]
    pub results: Vec<T>,
    /// `_links.next.href`: the server's own address of the next page, when it gives one. A
    /// malformed `_links` reads as none (offset arithmetic still works without it).
    #[serde(
        default,
        rename = "_links",
        deserialize_with = "next_href",
        skip_serializing
    )]
    pub next_link: Option<String>,
}

fn next_href<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let links = Option::<serde_json::Value>::deserialize(d)?;
    Ok(links.and_then(|l| l.get("next")?.get("href")?.as_str().map(str::to_owned)))
}

/// `RestOrganizationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrganizationType {
    Office365,
    OnPremises,
    Hybrid,
    #[serde(other)]
    Unknown,
}

/// `RESTRestorePoint`: the fields the freshness guard and the export manifest use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePoint {
    #[serde(default)]
    pub id: String,
    #[serde(with = "timestamp")]
    pub backup_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<Uuid>,
}

/// `RestOrganizationComposed`: the fields the daemon uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub organization_type: Option<OrganizationType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_exchange_online: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_backedup: Option<bool>,
    #[serde(
        default,
        with = "timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub first_backuptime: Option<DateTime<Utc>>,
    #[serde(
        default,
        with = "timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_backuptime: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backed_up_organization_id: Option<String>,
}

/// Data type of a restore session (`Vex` = Exchange).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionType {
    Vex,
    Veod,
    Vesp,
    Vet,
    #[serde(other)]
    Unknown,
}

/// `RESTRestoreSession.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    Working,
    Stopped,
    #[serde(other)]
    Unknown,
}

/// `RESTRestoreSession.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionResult {
    Success,
    Warning,
    Failed,
    #[serde(other)]
    Unknown,
}

/// `RESTRestoreSession`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSession {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(rename = "type")]
    pub session_type: SessionType,
    #[serde(with = "timestamp")]
    pub creation_time: DateTime<Utc>,
    #[serde(
        default,
        with = "timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub end_time: Option<DateTime<Utc>>,
    pub state: SessionState,
    pub result: SessionResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiated_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<i64>,
}

/// `RESTRestoreSessionEvent.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    None,
    Save,
    Export,
    Send,
    Restore,
    View,
    #[serde(other)]
    Unknown,
}

/// `RESTRestoreSessionEvent.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventStatus {
    Running,
    Success,
    Warning,
    Failed,
    Cancelled,
    Skipped,
    #[serde(other)]
    Unknown,
}

/// `RESTRestoreSessionEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSessionEvent {
    pub id: Uuid,
    pub order: i32,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventType>,
    pub status: EventStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(with = "timestamp")]
    pub start_time: DateTime<Utc>,
    #[serde(
        default,
        with = "timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub end_time: Option<DateTime<Utc>>,
    /// A .NET TimeSpan string (`00:00:41.5000000`), kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_size_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `RESTRestoreStatus` of one restored item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreStatus {
    Failed,
    Warning,
    Success,
    Skipped,
    #[serde(other)]
    Unknown,
}

/// `RESTItemRestoreDetailsComposed`, flattened (the daemon reads the `BulkMailbox` form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRestoreDetails {
    /// `Item`, `BulkMailbox` or `BulkOneDrive`.
    pub item_restore_details_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RestoreStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox_is_archive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox_is_public: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_mailbox_items_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_mailbox_items_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_mailbox_items_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_mailbox_items_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cannot_continue_mailbox_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_items: Vec<ItemRestoreDetails>,
}

/// `RESTRestoreSessionStatistics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSessionStatistics {
    pub total_items_count: i64,
    pub restored_items_count: i64,
    pub failed_items_count: i64,
    pub skipped_items_count: i64,
    #[serde(default)]
    pub items: Vec<ItemRestoreDetails>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// `RESTExchangeMailbox` as listed in a restore session. An archive mailbox is a separate entry
/// with the same e-mail and `isArchive: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mailbox {
    pub id: Uuid,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub is_archive: bool,
    #[serde(default)]
    pub is_public: bool,
}

/// `RESTAsyncRestoreResponse`: what a v8 restore POST answers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsyncRestoreResponse {
    /// "Restore session ID": a new operation session or the explore session (API.md §3.6).
    pub session_id: Uuid,
}

/// `RESTDeviceCodeResponse`: a device code for an operator's sign-in. The vendor schema marks
/// every field optional; `expiresIn` is in seconds (as in the OAuth device flow it wraps).
/// `Debug` hides the code (it authorises restores once signed in).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCodeResponse {
    #[serde(default)]
    pub user_code: Option<String>,
    #[serde(default)]
    pub verification_url: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub message: Option<String>,
}

impl std::fmt::Debug for DeviceCodeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCodeResponse")
            .field("user_code", &self.user_code.as_ref().map(|_| "[REDACTED]"))
            .field("verification_url", &self.verification_url)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// `RESTExchangeItemImportance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Importance {
    Low,
    Normal,
    High,
    #[serde(other)]
    Unknown,
}

/// `RESTAttachment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
}

/// `RESTExchangeItemsComposed`: one search hit. The schema is one flat property bag shared by
/// messages, appointments, contacts, tasks …; the fields a search report needs are typed, the
/// rest is kept in `other` so nothing the server sent is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeItem {
    /// Opaque item id (not a uuid).
    #[serde(default)]
    pub id: String,
    /// Which mailbox a cross-mailbox hit came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bcc: Option<String>,
    #[serde(
        default,
        with = "timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub sent: Option<DateTime<Utc>>,
    #[serde(
        default,
        with = "timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub received: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importance: Option<Importance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Every other property (`location`, `startTime`, `_links`, …) as sent.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_parsed_leniently() {
        let cases = [
            ("2017-06-29T07:42:21.191694Z", "2017-06-29T07:42:21.191694Z"),
            (
                "2017-05-30T13:57:28.0422679+03:00",
                "2017-05-30T10:57:28.042267900Z",
            ),
            ("2025-01-10T08:00:00.0000000Z", "2025-01-10T08:00:00Z"),
            (
                "2025-01-10T08:00:00.1234567",
                "2025-01-10T08:00:00.123456700Z",
            ),
            ("2025-01-10T08:00:00Z", "2025-01-10T08:00:00Z"),
        ];
        for (input, want) in cases {
            let t = timestamp::parse(input).unwrap_or_else(|| panic!("{input}"));
            assert_eq!(timestamp::format(&t), want, "{input}");
        }
        assert!(timestamp::parse("Fri, 10 Jan 2025 08:00:00 GMT").is_none());
    }

    #[test]
    fn restore_session_from_the_documented_example() {
        let json = r#"{"id":"9f78a3a4-8a8e-4b9a-9f47-3b1d1e1b8c01","name":"x","organization":"contoso.onmicrosoft.com","type":"Vex",
            "creationTime":"2025-01-10T08:01:02.1234567Z","endTime":null,"state":"Working","result":"Success",
            "initiatedBy":"DOMAIN\\svc","details":"","scopeName":"","clientHost":"vb365.contoso.local",
            "reason":"","eTag":17,"_links":{"self":{"href":"/v8/RestoreSessions/9f78"}}}"#;
        let s: RestoreSession = serde_json::from_str(json).unwrap();
        assert_eq!(s.state, SessionState::Working);
        assert_eq!(s.session_type, SessionType::Vex);
        assert_eq!(s.end_time, None);
        assert_eq!(s.e_tag, Some(17));
        let future: RestoreSession =
            serde_json::from_str(&json.replace("Working", "Starting")).unwrap();
        assert_eq!(future.state, SessionState::Unknown);
    }

    #[test]
    fn statistics_and_events_from_the_documented_examples() {
        let stats = r#"{"totalItemsCount":1200,"restoredItemsCount":1180,"failedItemsCount":3,"skippedItemsCount":17,
            "warnings":[],"errors":[],
            "items":[{"itemRestoreDetailsType":"BulkMailbox","id":"479a","name":"Jane Doe","itemType":"ExchangeMailbox",
              "status":"Warning","mailboxEmail":"jane@contoso.com","mailboxIsArchive":false,"mailboxIsPublic":false,
              "createdMailboxItemsCount":1150,"mergedMailboxItemsCount":30,"failedMailboxItemsCount":3,
              "skippedMailboxItemsCount":17,"cannotContinueMailboxError":null,"warnings":["3 items failed"]}]}"#;
        let s: RestoreSessionStatistics = serde_json::from_str(stats).unwrap();
        assert_eq!(s.items[0].status, Some(RestoreStatus::Warning));
        assert_eq!(s.items[0].cannot_continue_mailbox_error, None);
        let page = r#"{"offset":0,"limit":30,"results":[
            {"id":"1b0c6b8e-0000-4000-8000-000000000001","order":1,"type":"None","status":"Success","title":"Session started",
             "message":"Restore session has been started","startTime":"2025-01-10T08:01:02.1000000Z",
             "endTime":"2025-01-10T08:01:02.2000000Z","duration":"00:00:00.1000000"},
            {"id":"7d2e6b8e-0000-4000-8000-000000000002","order":2,"type":"Restore","status":"Running","title":"Restoring mailbox",
             "message":"Restoring jane@contoso.com","itemName":"Jane Doe","itemType":"Mailbox",
             "source":"jane@contoso.com","target":"jane@contoso.com","startTime":"2025-01-10T08:02:00.0000000Z",
             "endTime":null,"duration":"00:00:41.5000000"}],
            "_links":{"self":{"href":"/v8/RestoreSessions/x/Events?offset=0&limit=30"}}}"#;
        let p: Page<RestoreSessionEvent> = serde_json::from_str(page).unwrap();
        assert_eq!(p.results.len(), 2);
        assert_eq!(p.results[1].event_type, Some(EventType::Restore));
        assert_eq!(p.results[1].status, EventStatus::Running);
        assert_eq!(p.next_link, None, "only a `self` link");
    }

    /// `_links.next.href` is read when it is there; a `_links` of any other shape reads as no
    /// link rather than failing the page.
    #[test]
    fn page_next_link_is_read_leniently() {
        let page = |links: &str| {
            serde_json::from_str::<Page<u32>>(&format!(
                r#"{{"offset":0,"limit":2,"results":[1,2],"_links":{links}}}"#
            ))
            .unwrap()
            .next_link
        };
        assert_eq!(
            page(r#"{"self":{"href":"/v8/x?offset=0"},"next":{"href":"/v8/x?offset=2&limit=2"}}"#),
            Some("/v8/x?offset=2&limit=2".to_owned())
        );
        for odd in [
            r#""next""#,
            r#"{"next":5}"#,
            r#"{"next":{"href":null}}"#,
            "[]",
            "null",
        ] {
            assert_eq!(page(odd), None, "{odd}");
        }
    }

    #[test]
    fn search_hit_keeps_unknown_properties() {
        let json = r#"{"id":"AAMk=","mailboxId":"479a3a4a-8a8e-4b9a-9f47-3b1d1e1b8c01","itemClass":"IPM.Note","subject":"Board minutes",
            "from":"ceo@contoso.com","to":"legal@contoso.com","sent":"2024-03-01T10:00:00.0000000Z","importance":"High",
            "attachments":[{"name":"minutes.pdf","sizeBytes":12345}],"location":"HQ","_links":{}}"#;
        let item: ExchangeItem = serde_json::from_str(json).unwrap();
        assert_eq!(item.importance, Some(Importance::High));
        assert_eq!(item.attachments[0].size_bytes, Some(12345));
        assert_eq!(item.other["location"], "HQ");
    }
}
