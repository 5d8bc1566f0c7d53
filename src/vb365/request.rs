//! Request bodies the client sends, in the exact spec casing, and the restore credentials that
//! go into them.
//!
//! Every body is a plain struct with public fields, `Default` and `Serialize`; `None` fields are
//! left out of the JSON. Secret fields (passwords, the Base64 certificate, tokens) are
//! `SecretString`: their `Debug` prints `[REDACTED]`, and their value is written only by
//! `Serialize`, i.e. at the moment the client turns the body into request bytes.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Serialize, Serializer};
use uuid::Uuid;

use super::model::timestamp;

/// Serialises an optional secret as a plain JSON string (OpenAPI `SecureString`).
fn expose_opt<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(secret) => s.serialize_str(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

fn opt_timestamp<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    timestamp::option::serialize(v, s)
}

/// `grant_type` of `POST /v8/token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    Password,
    RefreshToken,
}

/// The form body of `POST /v8/token` (sent `application/x-www-form-urlencoded`, like every real
/// client). `disable_antiforgery_token` is always `true` for this daemon (API.md §1.1).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRequest {
    pub grant_type: GrantType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
    pub password: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
    pub refresh_token: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_antiforgery_token: Option<bool>,
}

impl TokenRequest {
    /// A password grant.
    pub fn password(username: &str, password: SecretString) -> Self {
        TokenRequest {
            grant_type: GrantType::Password,
            username: Some(username.to_string()),
            password: Some(password),
            refresh_token: None,
            disable_antiforgery_token: Some(true),
        }
    }

    /// A refresh-token grant.
    pub fn refresh(refresh_token: SecretString) -> Self {
        TokenRequest {
            grant_type: GrantType::RefreshToken,
            username: None,
            password: None,
            refresh_token: Some(refresh_token),
            disable_antiforgery_token: Some(true),
        }
    }
}

/// The kind of data a restore session explores; mailbox work always uses `Vex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum ExploreType {
    #[default]
    Vex,
    Veod,
    Vesp,
    Vet,
}

/// `RESTOrganizationExploreOptions` (`POST /v8/Organizations/{id}/explore`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationExploreOptions {
    /// Point in time; `None` means the latest restore point.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_timestamp"
    )]
    pub date_time: Option<DateTime<Utc>>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub explore_type: Option<ExploreType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_deleted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_all_versions: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<Uuid>,
}

impl OrganizationExploreOptions {
    /// Exchange data at `date_time` (latest when `None`), no deleted items, no old versions.
    pub fn exchange(date_time: Option<DateTime<Utc>>) -> Self {
        OrganizationExploreOptions {
            date_time,
            explore_type: Some(ExploreType::Vex),
            show_deleted: Some(false),
            show_all_versions: Some(false),
            repository_id: None,
        }
    }
}

/// `RESTExploreOptions` (`POST /v8/Jobs/{id}/explore`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExploreOptions {
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_timestamp"
    )]
    pub date_time: Option<DateTime<Utc>>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub explore_type: Option<ExploreType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_deleted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_all_versions: Option<bool>,
}

impl ExploreOptions {
    /// Exchange data at `date_time` (latest when `None`), no deleted items, no old versions.
    pub fn exchange(date_time: Option<DateTime<Utc>>) -> Self {
        ExploreOptions {
            date_time,
            explore_type: Some(ExploreType::Vex),
            show_deleted: Some(false),
            show_all_versions: Some(false),
        }
    }
}

impl From<&OrganizationExploreOptions> for ExploreOptions {
    /// The same options for a backup job's explore (which takes no `repositoryId`).
    fn from(o: &OrganizationExploreOptions) -> Self {
        ExploreOptions {
            date_time: o.date_time,
            explore_type: o.explore_type,
            show_deleted: o.show_deleted,
            show_all_versions: o.show_all_versions,
        }
    }
}

/// Credentials a restore runs with (SPEC §4.1), already resolved from their secret references.
/// `Debug` never shows a secret value.
#[derive(Debug, Clone)]
pub enum RestoreCredentials {
    /// App-only authentication with an Entra application and its certificate (the unattended
    /// choice, API.md §3.5).
    Application {
        application_id: Uuid,
        /// The PFX, Base64-encoded as the API expects.
        certificate_base64: SecretString,
        certificate_password: Option<SecretString>,
        impersonation_account_name: Option<String>,
    },
    /// A Microsoft 365 account (`userName`/`userPassword`; `office365UserName`/… in bulk).
    User {
        user_name: String,
        password: SecretString,
    },
    /// On-premises Exchange (bulk restore only).
    OnPremises {
        domain_name: String,
        user_name: String,
        password: SecretString,
    },
    /// A hybrid organization: a Microsoft 365 and an on-premises account together (bulk
    /// restore only: `office365UserName`/… with `domainName`, `onPremisesUserName`/…).
    Hybrid {
        office365_user_name: String,
        office365_password: SecretString,
        domain_name: String,
        on_premises_user_name: String,
        on_premises_password: SecretString,
    },
    /// A device code an operator signed in with (`userCode` from `restoreDeviceCode`).
    UserCode(SecretString),
}

impl RestoreCredentials {
    /// Application credentials from the raw PFX bytes (as read by `SecretRef::resolve_bytes`).
    pub fn application(
        application_id: Uuid,
        certificate_pfx: &SecretBox<[u8]>,
        certificate_password: Option<SecretString>,
        impersonation_account_name: Option<String>,
    ) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD.encode(certificate_pfx.expose_secret());
        RestoreCredentials::Application {
            application_id,
            certificate_base64: SecretString::from(b64),
            certificate_password,
            impersonation_account_name,
        }
    }
}

/// The credential fields shared by `RESTRestoreToOriginalLocation` and
/// `RESTRestoreToDifferentLocation`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MailboxRestoreCredentials {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
    pub user_password: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
    pub application_certificate: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
    pub application_certificate_password: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonation_account_name: Option<String>,
}

/// A credential form that a body cannot carry (on-premises credentials outside a bulk restore).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0} credentials cannot be used for this restore; use application or user credentials")]
pub struct UnsupportedCredentials(pub &'static str);

impl TryFrom<&RestoreCredentials> for MailboxRestoreCredentials {
    type Error = UnsupportedCredentials;

    fn try_from(c: &RestoreCredentials) -> Result<Self, Self::Error> {
        Ok(match c {
            RestoreCredentials::Application {
                application_id,
                certificate_base64,
                certificate_password,
                impersonation_account_name,
            } => MailboxRestoreCredentials {
                application_id: Some(*application_id),
                application_certificate: Some(certificate_base64.clone()),
                application_certificate_password: certificate_password.clone(),
                impersonation_account_name: impersonation_account_name.clone(),
                ..Default::default()
            },
            RestoreCredentials::User {
                user_name,
                password,
            } => MailboxRestoreCredentials {
                user_name: Some(user_name.clone()),
                user_password: Some(password.clone()),
                ..Default::default()
            },
            RestoreCredentials::UserCode(code) => MailboxRestoreCredentials {
                user_code: Some(code.expose_secret().to_string()),
                ..Default::default()
            },
            RestoreCredentials::OnPremises { .. } => {
                return Err(UnsupportedCredentials("on-premises"));
            }
            RestoreCredentials::Hybrid { .. } => {
                return Err(UnsupportedCredentials(
                    "hybrid (Microsoft 365 + on-premises)",
                ));
            }
        })
    }
}

/// `RESTRestoreToOriginalLocation` (`POST …/mailboxes/{id}/restore`): credentials only.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreToOriginalLocation {
    #[serde(flatten)]
    pub credentials: MailboxRestoreCredentials,
}

impl RestoreToOriginalLocation {
    /// The body for `credentials`.
    pub fn new(credentials: &RestoreCredentials) -> Result<Self, UnsupportedCredentials> {
        Ok(RestoreToOriginalLocation {
            credentials: credentials.try_into()?,
        })
    }
}

/// Region of the target organisation of a `restoreTo`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub enum OfficeRegion {
    Worldwide,
    Germany,
    China,
    USDefence,
    USGovernment,
}

/// Restore option flags shared by `restoreTo` and the bulk restore (all optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_items: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_items: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark_restored_as_unread: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_drafts: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_deleted_items: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_in_place_hold_items: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_litigation_hold_items: Option<bool>,
}

/// `RESTRestoreToDifferentLocation` (`POST …/mailboxes/{id}/restoreTo`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreToDifferentLocation {
    /// E-mail of the target mailbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// Target folder name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub office_region: Option<OfficeRegion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub office_organization_name: Option<String>,
    #[serde(flatten)]
    pub flags: RestoreFlags,
    #[serde(flatten)]
    pub credentials: MailboxRestoreCredentials,
}

/// One entry of `RestBulkRestoreOptions.mailboxes`: only the id matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MailboxRef {
    pub id: Uuid,
}

/// `RestBulkRestoreOptions` (`POST …/mailboxes/restore`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRestoreOptions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mailboxes: Vec<MailboxRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_server: Option<String>,
    #[serde(flatten)]
    pub flags: RestoreFlags,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_unresolved: Option<bool>,
    /// Days; items backed up in this recent period are restored first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_item_restore_period: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub office365_user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
    pub office365_user_password: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
    pub application_certificate: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
    pub application_certificate_password: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonation_account_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_premises_user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
    pub on_premises_user_password: Option<SecretString>,
}

impl BulkRestoreOptions {
    /// Sets the credential fields for `credentials` (bulk restore accepts all three forms).
    pub fn with_credentials(mut self, credentials: &RestoreCredentials) -> Self {
        match credentials {
            RestoreCredentials::Application {
                application_id,
                certificate_base64,
                certificate_password,
                impersonation_account_name,
            } => {
                self.application_id = Some(*application_id);
                self.application_certificate = Some(certificate_base64.clone());
                self.application_certificate_password = certificate_password.clone();
                self.impersonation_account_name = impersonation_account_name.clone();
            }
            RestoreCredentials::User {
                user_name,
                password,
            } => {
                self.office365_user_name = Some(user_name.clone());
                self.office365_user_password = Some(password.clone());
            }
            RestoreCredentials::OnPremises {
                domain_name,
                user_name,
                password,
            } => {
                self.domain_name = Some(domain_name.clone());
                self.on_premises_user_name = Some(user_name.clone());
                self.on_premises_user_password = Some(password.clone());
            }
            RestoreCredentials::Hybrid {
                office365_user_name,
                office365_password,
                domain_name,
                on_premises_user_name,
                on_premises_password,
            } => {
                self.office365_user_name = Some(office365_user_name.clone());
                self.office365_user_password = Some(office365_password.clone());
                self.domain_name = Some(domain_name.clone());
                self.on_premises_user_name = Some(on_premises_user_name.clone());
                self.on_premises_user_password = Some(on_premises_password.clone());
            }
            RestoreCredentials::UserCode(code) => {
                self.user_code = Some(code.expose_secret().to_string());
            }
        }
        self
    }
}

/// `RESTExportFolderToPst` (`POST …/mailboxes/{id}/exportToPst`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportToPstOptions {
    /// Only items matching this keyword are exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_keyword: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_pst_size_limit: Option<bool>,
    /// 1 GiB … 49 GiB; larger data is split into several PSTs returned in one ZIP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pst_size_limit_bytes: Option<i64>,
}

impl ExportToPstOptions {
    /// The body for an optional keyword and an optional size limit in bytes.
    pub fn new(keyword: Option<String>, size_limit_bytes: Option<u64>) -> Self {
        ExportToPstOptions {
            content_keyword: keyword,
            enable_pst_size_limit: size_limit_bytes.map(|_| true),
            pst_size_limit_bytes: size_limit_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        }
    }

    /// The body for an export that says explicitly that it has no size limit
    /// (`enablePstSizeLimit: false`).
    pub fn without_limit(keyword: Option<String>) -> Self {
        ExportToPstOptions {
            content_keyword: keyword,
            enable_pst_size_limit: Some(false),
            pst_size_limit_bytes: None,
        }
    }
}

/// `RESTDeviceCodeRequestOptions` (`POST …/organization/restoreDeviceCode`): what the device
/// code is for; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCodeRequestOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_application_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_region: Option<OfficeRegion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_organization_name: Option<String>,
}

/// `RESTSearchOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SearchOptions {
    /// `property:value` terms (API.md §6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl SearchOptions {
    pub fn query(q: impl Into<String>) -> Self {
        SearchOptions {
            query: Some(q.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }

    const APP: &str = "0b6f7a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
    const MB: &str = "479a3a4a-8a8e-4b9a-9f47-3b1d1e1b8c01";

    fn app_creds(password: bool, impersonation: bool) -> RestoreCredentials {
        RestoreCredentials::application(
            APP.parse().unwrap(),
            &SecretBox::new(b"PFX-BYTES".to_vec().into_boxed_slice()),
            password.then(|| SecretString::from("cert-pass-SECRET")),
            impersonation.then(|| "admin@contoso.com".to_string()),
        )
    }

    fn user_creds() -> RestoreCredentials {
        RestoreCredentials::User {
            user_name: "admin@contoso.com".into(),
            password: SecretString::from("user-pass-SECRET"),
        }
    }

    fn onprem_creds() -> RestoreCredentials {
        RestoreCredentials::OnPremises {
            domain_name: "CONTOSO".into(),
            user_name: "exadmin".into(),
            password: SecretString::from("onprem-pass-SECRET"),
        }
    }

    #[test]
    fn token_requests_as_form() {
        let pw = TokenRequest::password("CONTOSO\\svc-restore", SecretString::from("pw SECRET&x"));
        assert_eq!(
            reqwest_form(&pw),
            "grant_type=password&username=CONTOSO%5Csvc-restore&password=pw+SECRET%26x&disable_antiforgery_token=true"
        );
        let rt = TokenRequest::refresh(SecretString::from("rt-SECRET"));
        assert_eq!(
            reqwest_form(&rt),
            "grant_type=refresh_token&refresh_token=rt-SECRET&disable_antiforgery_token=true"
        );
        for r in [&pw, &rt] {
            let dbg = format!("{r:?}");
            assert!(!dbg.contains("SECRET"), "{dbg}");
        }
    }

    fn reqwest_form<T: Serialize>(v: &T) -> String {
        // The same encoder reqwest's `.form()` uses.
        let req = reqwest::Client::new()
            .post("http://127.0.0.1/")
            .form(v)
            .build()
            .unwrap();
        String::from_utf8(req.body().unwrap().as_bytes().unwrap().to_vec()).unwrap()
    }

    #[test]
    fn explore_bodies() {
        let t = timestamp::parse("2024-05-01T00:00:00Z").unwrap();
        assert_eq!(
            to_json(&OrganizationExploreOptions::exchange(Some(t))),
            json!({"dateTime":"2024-05-01T00:00:00Z","type":"Vex","showDeleted":false,"showAllVersions":false})
        );
        assert_eq!(
            to_json(&OrganizationExploreOptions::exchange(None)),
            json!({"type":"Vex","showDeleted":false,"showAllVersions":false})
        );
        let full = OrganizationExploreOptions {
            date_time: Some(timestamp::parse("2024-05-01T10:20:30.5Z").unwrap()),
            explore_type: Some(ExploreType::Vex),
            show_deleted: Some(true),
            show_all_versions: Some(true),
            repository_id: Some(APP.parse().unwrap()),
        };
        assert_eq!(
            to_json(&full),
            json!({"dateTime":"2024-05-01T10:20:30.500Z","type":"Vex","showDeleted":true,"showAllVersions":true,"repositoryId":APP})
        );
        assert_eq!(to_json(&OrganizationExploreOptions::default()), json!({}));
        assert_eq!(
            to_json(&ExploreOptions::exchange(Some(t))),
            json!({"dateTime":"2024-05-01T00:00:00Z","type":"Vex","showDeleted":false,"showAllVersions":false})
        );
        assert_eq!(to_json(&ExploreOptions::default()), json!({}));
    }

    #[test]
    fn restore_to_original_location_bodies() {
        let cert_b64 = base64::engine::general_purpose::STANDARD.encode(b"PFX-BYTES");
        assert_eq!(
            to_json(&RestoreToOriginalLocation::new(&app_creds(true, true)).unwrap()),
            json!({"applicationId":APP,"applicationCertificate":cert_b64,
                   "applicationCertificatePassword":"cert-pass-SECRET","impersonationAccountName":"admin@contoso.com"})
        );
        assert_eq!(
            to_json(&RestoreToOriginalLocation::new(&app_creds(false, false)).unwrap()),
            json!({"applicationId":APP,"applicationCertificate":cert_b64})
        );
        assert_eq!(
            to_json(&RestoreToOriginalLocation::new(&user_creds()).unwrap()),
            json!({"userName":"admin@contoso.com","userPassword":"user-pass-SECRET"})
        );
        let err = RestoreToOriginalLocation::new(&onprem_creds()).unwrap_err();
        assert!(err.to_string().contains("on-premises"));
        let code = RestoreToOriginalLocation {
            credentials: MailboxRestoreCredentials {
                user_code: Some("ABCD-EFGH".into()),
                ..Default::default()
            },
        };
        assert_eq!(to_json(&code), json!({"userCode":"ABCD-EFGH"}));
    }

    #[test]
    fn restore_to_different_location_bodies() {
        let all_flags = RestoreFlags {
            changed_items: Some(true),
            deleted_items: Some(true),
            mark_restored_as_unread: Some(false),
            exclude_drafts: Some(false),
            exclude_deleted_items: Some(false),
            exclude_in_place_hold_items: Some(true),
            exclude_litigation_hold_items: Some(true),
        };
        let body = RestoreToDifferentLocation {
            mailbox: Some("legal-review@contoso.com".into()),
            folder: Some("Restored/alice@contoso.com".into()),
            cas_server: Some("outlook.office365.com".into()),
            office_region: Some(OfficeRegion::USGovernment),
            office_organization_name: Some("contoso.onmicrosoft.com".into()),
            flags: all_flags,
            credentials: (&user_creds()).try_into().unwrap(),
        };
        assert_eq!(
            to_json(&body),
            json!({"mailbox":"legal-review@contoso.com","folder":"Restored/alice@contoso.com",
                   "casServer":"outlook.office365.com","officeRegion":"USGovernment",
                   "officeOrganizationName":"contoso.onmicrosoft.com",
                   "changedItems":true,"deletedItems":true,"markRestoredAsUnread":false,"excludeDrafts":false,
                   "excludeDeletedItems":false,"excludeInPlaceHoldItems":true,"excludeLitigationHoldItems":true,
                   "userName":"admin@contoso.com","userPassword":"user-pass-SECRET"})
        );
        let minimal = RestoreToDifferentLocation {
            mailbox: Some("legal-review@contoso.com".into()),
            credentials: (&app_creds(false, true)).try_into().unwrap(),
            ..Default::default()
        };
        let v = to_json(&minimal);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "applicationCertificate",
                "applicationId",
                "impersonationAccountName",
                "mailbox"
            ]
        );
        assert_eq!(to_json(&RestoreToDifferentLocation::default()), json!({}));
    }

    #[test]
    fn bulk_restore_bodies() {
        let base = BulkRestoreOptions {
            mailboxes: vec![MailboxRef {
                id: MB.parse().unwrap(),
            }],
            cas_server: Some("outlook.office365.com".into()),
            flags: RestoreFlags {
                changed_items: Some(true),
                ..Default::default()
            },
            skip_unresolved: Some(true),
            recent_item_restore_period: Some(30),
            ..Default::default()
        };
        assert_eq!(
            to_json(&base.clone().with_credentials(&user_creds())),
            json!({"mailboxes":[{"id":MB}],"casServer":"outlook.office365.com","changedItems":true,
                   "skipUnresolved":true,"recentItemRestorePeriod":30,
                   "office365UserName":"admin@contoso.com","office365UserPassword":"user-pass-SECRET"})
        );
        assert_eq!(
            to_json(&BulkRestoreOptions::default().with_credentials(&onprem_creds())),
            json!({"domainName":"CONTOSO","onPremisesUserName":"exadmin","onPremisesUserPassword":"onprem-pass-SECRET"})
        );
        let app = to_json(&BulkRestoreOptions::default().with_credentials(&app_creds(true, true)));
        assert_eq!(app["applicationId"], APP);
        assert_eq!(app["applicationCertificatePassword"], "cert-pass-SECRET");
        assert_eq!(app.as_object().unwrap().len(), 4);
        assert_eq!(to_json(&BulkRestoreOptions::default()), json!({}));
    }

    #[test]
    fn hybrid_device_code_and_no_limit_bodies() {
        let hybrid = RestoreCredentials::Hybrid {
            office365_user_name: "admin@contoso.com".into(),
            office365_password: SecretString::from("user-pass-SECRET"),
            domain_name: "CONTOSO".into(),
            on_premises_user_name: "exadmin".into(),
            on_premises_password: SecretString::from("onprem-pass-SECRET"),
        };
        assert_eq!(
            to_json(&BulkRestoreOptions::default().with_credentials(&hybrid)),
            json!({"office365UserName":"admin@contoso.com","office365UserPassword":"user-pass-SECRET",
                   "domainName":"CONTOSO","onPremisesUserName":"exadmin","onPremisesUserPassword":"onprem-pass-SECRET"})
        );
        assert!(
            MailboxRestoreCredentials::try_from(&hybrid)
                .unwrap_err()
                .to_string()
                .contains("hybrid")
        );
        let code = RestoreCredentials::UserCode(SecretString::from("QWERTY01"));
        assert_eq!(
            to_json(&BulkRestoreOptions::default().with_credentials(&code)),
            json!({"userCode":"QWERTY01"})
        );
        assert_eq!(
            to_json(&RestoreToOriginalLocation::new(&code).unwrap()),
            json!({"userCode":"QWERTY01"})
        );
        assert!(!format!("{code:?} {hybrid:?}").contains("QWERTY01"));
        assert!(!format!("{hybrid:?}").contains("SECRET"));
        assert_eq!(
            to_json(&DeviceCodeRequestOptions {
                target_application_id: Some(APP.parse().unwrap()),
                target_region: Some(OfficeRegion::Germany),
                target_organization_name: Some("contoso.onmicrosoft.com".into()),
            }),
            json!({"targetApplicationId":APP,"targetRegion":"Germany","targetOrganizationName":"contoso.onmicrosoft.com"})
        );
        assert_eq!(to_json(&DeviceCodeRequestOptions::default()), json!({}));
        assert_eq!(
            to_json(&ExportToPstOptions::without_limit(Some("falcon".into()))),
            json!({"contentKeyword":"falcon","enablePstSizeLimit":false})
        );
        let job = ExploreOptions::from(&OrganizationExploreOptions {
            show_deleted: Some(true),
            repository_id: Some(APP.parse().unwrap()),
            ..OrganizationExploreOptions::exchange(None)
        });
        assert_eq!(
            to_json(&job),
            json!({"type":"Vex","showDeleted":true,"showAllVersions":false})
        );
    }

    #[test]
    fn export_and_search_bodies() {
        assert_eq!(to_json(&ExportToPstOptions::new(None, None)), json!({}));
        assert_eq!(
            to_json(&ExportToPstOptions::new(
                Some("project falcon".into()),
                Some(10 * (1 << 30))
            )),
            json!({"contentKeyword":"project falcon","enablePstSizeLimit":true,"pstSizeLimitBytes":10737418240_i64})
        );
        assert_eq!(
            to_json(&ExportToPstOptions::new(None, Some(1 << 30))),
            json!({"enablePstSizeLimit":true,"pstSizeLimitBytes":1073741824})
        );
        assert_eq!(
            to_json(&SearchOptions::query(
                "from:ceo@contoso.com subject:\"board minutes\""
            )),
            json!({"query":"from:ceo@contoso.com subject:\"board minutes\""})
        );
        assert_eq!(to_json(&SearchOptions::default()), json!({}));
    }

    #[test]
    fn debug_of_credentials_and_bodies_hides_every_secret() {
        let creds = [app_creds(true, true), user_creds(), onprem_creds()];
        for c in &creds {
            let bulk = BulkRestoreOptions::default().with_credentials(c);
            let mut texts = vec![format!("{c:?}"), format!("{bulk:?}")];
            if let Ok(orig) = RestoreToOriginalLocation::new(c) {
                texts.push(format!("{orig:?}"));
                let to = RestoreToDifferentLocation {
                    credentials: orig.credentials.clone(),
                    ..Default::default()
                };
                texts.push(format!("{to:?}"));
            }
            for t in texts {
                assert!(!t.contains("SECRET"), "{t}");
                // The Base64 certificate is a secret too.
                assert!(!t.contains("UEZYLUJZVEVT"), "{t}");
            }
        }
    }
}
