//! [`ProgressStore`] over the state database: the `downloads` row of one ExportPst step, and the
//! `exports` row of the published file (which makes it a retention candidate). The run engine's
//! progress ([`StoreProgress::finishing_the_step`]) also finishes the step in the transaction
//! that records the publication.

use chrono::Utc;

use super::artefact::{Format, Published};
use super::progress::{Checkpoint, ProgressError, ProgressStore, RestartReason};
use crate::store::{FileFormat, NewExport, RunId, Store, StoreError};

/// Durable progress of the download of step `step_id`. The run engine creates the `downloads`
/// row (`Store::create_download`) before the first fetch.
#[derive(Clone)]
pub struct StoreProgress {
    store: Store,
    step_id: i64,
    finish_step: bool,
}

impl StoreProgress {
    /// Progress of the download of `step_id`.
    pub fn new(store: Store, step_id: i64) -> Self {
        StoreProgress {
            store,
            step_id,
            finish_step: false,
        }
    }

    /// Progress of the download of `step_id` whose publication also finishes the step: the
    /// file is stored on the step and the step moves to `done` in the same transaction
    /// ([`Store::finish_export_step`]).
    pub fn finishing_the_step(store: Store, step_id: i64) -> Self {
        StoreProgress {
            store,
            step_id,
            finish_step: true,
        }
    }
}

impl ProgressStore for StoreProgress {
    async fn load(&self) -> Result<Option<Checkpoint>, ProgressError> {
        let row = match self.store.get_download(self.step_id).await {
            Ok(row) => row,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(Box::new(e)),
        };
        Ok(Some(Checkpoint {
            bytes_durable: u64::try_from(row.bytes_durable).unwrap_or(0),
            hasher_state: row.hasher_state,
            expected_bytes: row.expected_bytes.and_then(|b| u64::try_from(b).ok()),
            resumed_from: row.resumed_from,
            restarts: u32::try_from(row.restarts).unwrap_or(u32::MAX),
        }))
    }

    async fn record_durable(
        &self,
        bytes_durable: u64,
        hasher_state: &[u8],
        expected_bytes: Option<u64>,
    ) -> Result<(), ProgressError> {
        self.store
            .record_download_progress(
                self.step_id,
                bytes_durable,
                Some(hasher_state),
                expected_bytes,
                Utc::now(),
            )
            .await?;
        Ok(())
    }

    async fn record_resume(&self, offset: u64) -> Result<(), ProgressError> {
        self.store
            .record_download_resume(self.step_id, offset, Utc::now())
            .await?;
        Ok(())
    }

    async fn record_restart(&self, reason: &RestartReason) -> Result<(), ProgressError> {
        self.store
            .record_download_restart(self.step_id, &reason.to_string(), None, Utc::now())
            .await?;
        Ok(())
    }

    async fn mark_published(&self, published: &Published) -> Result<(), ProgressError> {
        let m = &published.manifest;
        let format = match m.format {
            Format::Pst => FileFormat::Pst,
            Format::Zip => FileFormat::Zip,
        };
        let now = Utc::now();
        let run_id: RunId = m.run.parse().map_err(|e| {
            Box::new(std::io::Error::other(format!(
                "manifest of {}: run id {:?} is not a UUID: {e}",
                published.path.display(),
                m.run
            ))) as ProgressError
        })?;
        // The exports row first: a file recorded there is one retention may delete, and one a
        // second publish of the same step recognises (a conflict means it is already recorded).
        let export = NewExport {
            job_name: &m.job,
            run_id,
            step_id: Some(self.step_id),
            mailbox_id: Some(&m.mailbox_id),
            mailbox_email: Some(&m.mailbox),
            path: &published.path,
            manifest_path: Some(&published.manifest_path),
            format,
            bytes: m.bytes,
            sha256: &m.sha256,
        };
        if self.finish_step {
            self.store
                .finish_export_step(self.step_id, &export, now)
                .await?;
            return Ok(());
        }
        match self.store.record_export(&export, now).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(Box::new(e)),
        }
        self.store
            .mark_download_published(
                self.step_id,
                &published.path,
                m.bytes,
                &m.sha256,
                format,
                now,
            )
            .await?;
        Ok(())
    }
}
