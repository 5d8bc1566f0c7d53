//! Search progress: where the paging of a Search step stands (migration 0009). After each page
//! whose hits are fsynced in the step's part file, the step records the page cursor, the hit
//! count and the part file's length; a resumed step truncates the part file to that length and
//! asks for the next page, so a crash costs at most one page, never the whole search. The
//! cursor is opaque JSON here (the VB365 client owns its shape).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::instrument;

use super::{Millis, Result, SqlxResultExt, Store, int, to_millis};

/// A row of `search_progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SearchProgress {
    pub step_id: i64,
    /// The restore session the cursor's `setId` and `_links.next` belong to.
    pub session_id: Option<String>,
    /// The page cursor after the last durable page (JSON).
    pub cursor: String,
    /// Pages whose hits are durable in the part file.
    pub pages: i64,
    /// Hits durable in the part file.
    pub hits: i64,
    /// The part file's length after them.
    pub part_bytes: i64,
    #[sqlx(try_from = "Millis")]
    pub updated_at: DateTime<Utc>,
}

/// A durable page to record (see [`Store::record_search_page`]).
#[derive(Debug, Clone, Copy)]
pub struct SearchPage<'a> {
    pub session_id: Option<&'a str>,
    pub cursor: &'a str,
    pub pages: u64,
    pub hits: u64,
    pub part_bytes: u64,
}

impl Store {
    /// Where the search of step `step_id` stands, if it recorded a page.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn get_search_progress(&self, step_id: i64) -> Result<Option<SearchProgress>> {
        sqlx::query_as::<_, SearchProgress>("SELECT * FROM search_progress WHERE step_id = $1")
            .bind(step_id)
            .fetch_optional(self.reader())
            .await
            .op("get_search_progress")
    }

    /// Records that the hits of `page.pages` pages are durable in the step's part file, which is
    /// `page.part_bytes` long, and that the search continues from `page.cursor`. Replaces the
    /// previous record.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn record_search_page(
        &self,
        step_id: i64,
        page: &SearchPage<'_>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        const OP: &str = "record_search_page";
        let mut tx = self.begin_write(OP).await?;
        sqlx::query(
            "INSERT INTO search_progress (step_id, session_id, cursor, pages, hits, part_bytes,
                                          updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (step_id) DO UPDATE SET session_id = excluded.session_id,
                 cursor = excluded.cursor, pages = excluded.pages, hits = excluded.hits,
                 part_bytes = excluded.part_bytes, updated_at = excluded.updated_at",
        )
        .bind(step_id)
        .bind(page.session_id)
        .bind(page.cursor)
        .bind(int(page.pages))
        .bind(int(page.hits))
        .bind(int(page.part_bytes))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .op(OP)?;
        tx.commit().await.op(OP)?;
        Ok(())
    }

    /// Forgets where the search of step `step_id` stands: it is done, or starts over.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn clear_search_progress(&self, step_id: i64) -> Result<()> {
        const OP: &str = "clear_search_progress";
        let mut tx = self.begin_write(OP).await?;
        sqlx::query("DELETE FROM search_progress WHERE step_id = $1")
            .bind(step_id)
            .execute(&mut *tx)
            .await
            .op(OP)?;
        tx.commit().await.op(OP)?;
        Ok(())
    }
}
