//! Organisations and explore: listing and finding an organisation, and opening a restore
//! session on an organisation or a backup job (`POST …/explore`).

use uuid::Uuid;

use crate::vb365::client::Client;
use crate::vb365::error::{ApiError, ErrorClass, ErrorKind};
use crate::vb365::model::{Organization, RestoreSession};
use crate::vb365::operation::Operation;
use crate::vb365::request::{ExploreOptions, OrganizationExploreOptions};

impl Client {
    /// `GET /v8/Organizations`, all pages.
    pub async fn organizations(&self) -> Result<Vec<Organization>, ApiError> {
        self.all_pages(
            self.get_call(Operation::ListOrganizations, &[], None),
            false,
        )
        .await
    }

    /// `GET /v8/Organizations/{id}`.
    pub async fn organization(&self, id: Uuid) -> Result<Organization, ApiError> {
        let id = id.to_string();
        self.call_json(self.get_call(Operation::GetOrganization, &[&id], None))
            .await
    }

    /// Finds an organisation by id (a uuid) or by `name`/`officeName` (case-insensitive). The
    /// not-found error lists the organisations that exist.
    pub async fn resolve_organization(&self, name_or_id: &str) -> Result<Organization, ApiError> {
        if let Ok(id) = Uuid::parse_str(name_or_id.trim()) {
            return self.organization(id).await;
        }
        let wanted = name_or_id.trim();
        let all = self.organizations().await?;
        let matches = |o: &Organization| {
            o.name.eq_ignore_ascii_case(wanted)
                || o.office_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
        };
        if let Some(found) = all.iter().find(|o| matches(o)) {
            return Ok(found.clone());
        }
        let known: Vec<String> = all
            .iter()
            .map(|o| match &o.office_name {
                Some(office) if !office.eq_ignore_ascii_case(&o.name) => {
                    format!("{} ({office})", o.name)
                }
                _ => o.name.clone(),
            })
            .collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        Err(self.inner.conn.error(
            Operation::ListOrganizations,
            Operation::ListOrganizations.path_template().to_string(),
            ErrorClass::Permanent,
            ErrorKind::NotFound,
            format!("organization `{wanted}` not found; the server has: {known}"),
        ))
    }

    /// `POST /v8/Organizations/{id}/explore` → a new restore session (201).
    pub async fn explore_organization(
        &self,
        organization_id: Uuid,
        options: &OrganizationExploreOptions,
    ) -> Result<RestoreSession, ApiError> {
        let id = organization_id.to_string();
        self.call_json(self.post_call(Operation::ExploreOrganization, &[&id], None, Some(options)))
            .await
    }

    /// `POST /v8/Jobs/{id}/explore` → a new restore session (201).
    pub async fn explore_job(
        &self,
        job_id: Uuid,
        options: &ExploreOptions,
    ) -> Result<RestoreSession, ApiError> {
        let id = job_id.to_string();
        self.call_json(self.post_call(Operation::ExploreJob, &[&id], None, Some(options)))
            .await
    }
}
