//! The mailboxes of a restore session: listing them (resumably, page by page) and reading one.

use uuid::Uuid;

use crate::vb365::client::Client;
use crate::vb365::error::ApiError;
use crate::vb365::model::Mailbox;
use crate::vb365::operation::Operation;
use crate::vb365::paging::Listing;

impl Client {
    /// `GET …/organization/mailboxes`, all pages (archive mailboxes are separate entries).
    pub async fn mailboxes(&self, session: Uuid) -> Result<Vec<Mailbox>, ApiError> {
        let mut listing = self.mailbox_listing();
        self.continue_mailboxes(session, &mut listing).await?;
        Ok(listing.into_items())
    }

    /// An empty listing of mailboxes in this client's page size, for
    /// [`Client::continue_mailboxes`].
    pub fn mailbox_listing(&self) -> Listing<Mailbox> {
        Listing::new(self.page_size)
    }

    /// `GET …/organization/mailboxes`, the pages `listing` still lacks. On an error `listing`
    /// keeps every page read so far: after the caller's backoff, calling again with the same
    /// session asks for the failed page instead of starting over from offset 0. (A listing of
    /// one session must not be continued in another.)
    ///
    /// # Errors
    ///
    /// The failed page's [`ApiError`]; a permanent one when the page cap is reached.
    pub async fn continue_mailboxes(
        &self,
        session: Uuid,
        listing: &mut Listing<Mailbox>,
    ) -> Result<(), ApiError> {
        let s = session.to_string();
        let call = self.get_call(Operation::ListMailboxes, &[&s], Some(session));
        self.continue_pages(&call, false, listing).await
    }

    /// `GET …/organization/mailboxes/{id}`.
    pub async fn mailbox(&self, session: Uuid, mailbox: Uuid) -> Result<Mailbox, ApiError> {
        let (s, m) = (session.to_string(), mailbox.to_string());
        self.call_json(self.get_call(Operation::GetMailbox, &[&s, &m], Some(session)))
            .await
    }
}
