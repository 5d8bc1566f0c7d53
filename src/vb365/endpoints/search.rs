//! Searching mailbox items: one page at a time (the caller keeps the `setId`, or a stored
//! [`Cursor`]), or all pages of one mailbox or of the whole session.

use uuid::Uuid;

use crate::vb365::client::Client;
use crate::vb365::connection::Call;
use crate::vb365::error::ApiError;
use crate::vb365::model::{ExchangeItem, Page};
use crate::vb365::operation::Operation;
use crate::vb365::paging::{Cursor, PageRequest};
use crate::vb365::request::SearchOptions;

impl Client {
    /// One page of `POST …/mailboxes/{id}/search` (with `mailbox`) or `POST …/mailboxes/search`
    /// (without). Pass the first page's `setId` back on later pages.
    pub async fn search_page(
        &self,
        session: Uuid,
        mailbox: Option<Uuid>,
        options: &SearchOptions,
        page: PageRequest,
    ) -> Result<Page<ExchangeItem>, ApiError> {
        let mut call = self.search_call(session, mailbox, options);
        call.query.push(("offset", page.offset.to_string()));
        call.query.push(("limit", page.limit.to_string()));
        if let Some(set) = page.set_id {
            call.query.push(("setId", set.to_string()));
        }
        self.call_json(call).await
    }

    /// The next page of a search (`POST …/mailboxes/{id}/search` with `mailbox`, else
    /// `POST …/mailboxes/search`) after `cursor`, which advances past it; `None` once the last
    /// page was read. The server's `setId` and `_links.next` are reused as in
    /// [`Client::search_mailbox`]. A failed page leaves `cursor` unchanged.
    pub async fn search_next_page(
        &self,
        session: Uuid,
        mailbox: Option<Uuid>,
        options: &SearchOptions,
        cursor: &mut Cursor,
    ) -> Result<Option<Vec<ExchangeItem>>, ApiError> {
        self.next_page(&self.search_call(session, mailbox, options), true, cursor)
            .await
    }

    /// `POST …/mailboxes/{id}/search`, all pages, reusing the server's `setId`.
    pub async fn search_mailbox(
        &self,
        session: Uuid,
        mailbox: Uuid,
        options: &SearchOptions,
    ) -> Result<Vec<ExchangeItem>, ApiError> {
        self.all_pages(self.search_call(session, Some(mailbox), options), true)
            .await
    }

    /// `POST …/mailboxes/search` (all mailboxes of the session), all pages, reusing `setId`.
    pub async fn search_mailboxes(
        &self,
        session: Uuid,
        options: &SearchOptions,
    ) -> Result<Vec<ExchangeItem>, ApiError> {
        self.all_pages(self.search_call(session, None, options), true)
            .await
    }

    fn search_call<'a>(
        &self,
        session: Uuid,
        mailbox: Option<Uuid>,
        options: &'a SearchOptions,
    ) -> Call<'a, SearchOptions> {
        let s = session.to_string();
        match mailbox {
            Some(m) => {
                let m = m.to_string();
                self.post_call(
                    Operation::SearchMailbox,
                    &[&s, &m],
                    Some(session),
                    Some(options),
                )
            }
            None => self.post_call(
                Operation::SearchMailboxes,
                &[&s],
                Some(session),
                Some(options),
            ),
        }
    }
}
