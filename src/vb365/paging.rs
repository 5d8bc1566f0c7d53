//! Following VB365 paged collections to the end.
//!
//! Pages carry `offset`, `limit`, `results`, sometimes `setId`, and `_links`, but no total
//! count (API.md §7). After a full page the next one is the page's `_links.next` when the server
//! gives one, else `offset` advanced by the number of results received; the first page shorter
//! than the limit in force ends the listing. The limit in force is the smaller of what we asked
//! for and what the page says it used, because a server may clamp a large limit (a 10,000 cap,
//! or a default of 30) and a clamped full page must not be mistaken for the last one. Search
//! endpoints cache their result set server-side: the `setId` of the first page is sent back on
//! every later page so the server does not search again.
//!
//! A [`Cursor`] is where the reading of one collection stands, as a value that can be stored:
//! [`Cursor::next_page`] reads one page and hands its items over, so a caller that writes each
//! page away (a search report) holds one page at a time and can resume after a restart from the
//! stored cursor. A [`Listing`] is a cursor plus the items so far, for collections read whole.
//! A failed page leaves either as it was, so the caller can wait (its own retry policy,
//! `Retry-After`) and ask again: that asks for the failed page, not for the whole collection
//! from offset 0.

use std::future::Future;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::Page;

/// Upper bound on pages fetched for one collection, so a server that ignores `offset` and keeps
/// sending full pages cannot keep the loop running forever (10 million items at limit 1000).
pub const MAX_PAGES: usize = 10_000;

/// What to ask for next when the server gave no usable `_links.next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageRequest {
    pub offset: u64,
    pub limit: u32,
    /// The `setId` of the first page, for endpoints that take one.
    pub set_id: Option<Uuid>,
}

/// Why paging stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagingError<E> {
    /// A page request failed; the [`Listing`] still asks for that page next.
    Fetch(E),
    /// [`MAX_PAGES`] full pages and still no end.
    Endless {
        /// Pages read.
        pages: usize,
        /// The page size asked for.
        page_size: u32,
        /// Items received.
        items: usize,
    },
}

/// Where the reading of a paged collection stands: the next page to ask for, the previous
/// page's `_links.next`, and what was read so far. Serialisable, so a caller can store it after
/// each page it made durable and continue from it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    page_size: u32,
    next: PageRequest,
    /// `_links.next.href` of the last page read, when the server gave one.
    next_link: Option<String>,
    pages: u64,
    items: u64,
    complete: bool,
}

impl Cursor {
    /// A cursor at offset 0 for pages of `page_size` (at least 1).
    pub fn new(page_size: u32) -> Self {
        let page_size = page_size.max(1);
        Cursor {
            page_size,
            next: PageRequest {
                offset: 0,
                limit: page_size,
                set_id: None,
            },
            next_link: None,
            pages: 0,
            items: 0,
            complete: false,
        }
    }

    /// Whether the last page has been read.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Pages read so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Items read so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The offset of the next page.
    pub fn offset(&self) -> u64 {
        self.next.offset
    }

    /// The server-side result set the cursor reads (search endpoints), once the first page
    /// named one.
    pub fn set_id(&self) -> Option<Uuid> {
        self.next.set_id
    }

    /// Forgets the server's handles on the collection (its `setId` and `_links.next`) and keeps
    /// the offset: for continuing in another restore session, where that result set does not
    /// exist. The next page then starts a new server-side set at the same offset.
    pub fn detach(&mut self) {
        self.next.set_id = None;
        self.next_link = None;
    }

    /// Reads the next page and returns its items, or `None` once the last page was read.
    /// `fetch` gets the next page's offset arithmetic and the previous page's
    /// `_links.next.href` when there was one (the caller decides whether it is safe to follow).
    /// On `Err` the cursor is unchanged and the next call asks for the same page.
    ///
    /// # Errors
    ///
    /// [`PagingError::Fetch`] with the failed page's error; [`PagingError::Endless`] after
    /// [`MAX_PAGES`] full pages.
    pub async fn next_page<T, E, F, Fut>(
        &mut self,
        fetch: F,
    ) -> Result<Option<Vec<T>>, PagingError<E>>
    where
        F: FnOnce(PageRequest, Option<String>) -> Fut,
        Fut: Future<Output = Result<Page<T>, E>>,
    {
        if self.complete {
            return Ok(None);
        }
        if self.pages >= MAX_PAGES as u64 {
            return Err(PagingError::Endless {
                pages: MAX_PAGES,
                page_size: self.page_size,
                items: usize::try_from(self.items).unwrap_or(usize::MAX),
            });
        }
        let page = fetch(self.next, self.next_link.clone())
            .await
            .map_err(PagingError::Fetch)?;
        self.pages += 1;
        if self.next.set_id.is_none() {
            self.next.set_id = page.set_id;
        }
        let n = page.results.len();
        self.items += n as u64;
        let in_force = match u32::try_from(page.limit) {
            Ok(l) if l > 0 => l.min(self.page_size),
            _ => self.page_size,
        };
        if n == 0 || n < in_force as usize {
            self.complete = true;
        } else {
            self.next.offset = self.next.offset.saturating_add(n as u64);
            self.next_link = page.next_link;
        }
        Ok(Some(page.results))
    }
}

/// A paged collection being read whole: a [`Cursor`] and the items so far.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    cursor: Cursor,
    items: Vec<T>,
}

impl<T> Listing<T> {
    /// A listing from offset 0 in pages of `page_size` (at least 1).
    pub fn new(page_size: u32) -> Self {
        Listing {
            cursor: Cursor::new(page_size),
            items: Vec::new(),
        }
    }

    /// Whether the last page has been read.
    pub fn is_complete(&self) -> bool {
        self.cursor.is_complete()
    }

    /// Pages read so far.
    pub fn pages(&self) -> usize {
        usize::try_from(self.cursor.pages()).unwrap_or(usize::MAX)
    }

    /// The items read so far, in order.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// The items read so far, in order.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }

    /// Reads pages until the last one (see [`Cursor::next_page`] for `fetch`). On `Err`
    /// nothing of the failed page is kept and the next call asks for it again.
    ///
    /// # Errors
    ///
    /// [`PagingError::Fetch`] with the failed page's error; [`PagingError::Endless`] after
    /// [`MAX_PAGES`] full pages.
    pub async fn advance<E, F, Fut>(&mut self, mut fetch: F) -> Result<(), PagingError<E>>
    where
        F: FnMut(PageRequest, Option<String>) -> Fut,
        Fut: Future<Output = Result<Page<T>, E>>,
    {
        while let Some(page) = self.cursor.next_page(&mut fetch).await? {
            self.items.extend(page);
        }
        Ok(())
    }
}

/// Fetches pages of `page_size` from offset 0 until a short page; returns all results in order.
///
/// # Errors
///
/// As [`Listing::advance`].
pub async fn collect_all<T, E, F, Fut>(page_size: u32, fetch: F) -> Result<Vec<T>, PagingError<E>>
where
    F: FnMut(PageRequest, Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, E>>,
{
    let mut listing = Listing::new(page_size);
    listing.advance(fetch).await?;
    Ok(listing.into_items())
}

/// The query string to send for a `_links.next` href, when following it stays on the
/// collection being read: the same scheme, host and port as `base` (the server URL the client
/// was configured with) and the same path as `collection` (the full URL of the collection).
/// Server-relative hrefs (v6+) and absolute ones (v1–v5) both qualify; anything else — another
/// host, a scheme-relative `//host/…`, another path, credentials, a fragment, no query — is
/// `None`, and the caller falls back to offset arithmetic.
pub fn link_query(base: &url::Url, collection: &url::Url, href: &str) -> Option<String> {
    let target = base.join(href.trim()).ok()?;
    let same_place = target.scheme() == collection.scheme()
        && target.host_str() == collection.host_str()
        && target.port_or_known_default() == collection.port_or_known_default()
        && target.path().eq_ignore_ascii_case(collection.path());
    let clean =
        target.username().is_empty() && target.password().is_none() && target.fragment().is_none();
    match target.query() {
        Some(q) if same_place && clean && !q.is_empty() => Some(q.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A collection of `total` numbers served like VB365 would, with a server-side cap on limit.
    fn serve(total: u32, cap: u32, set_id: Option<Uuid>, req: PageRequest) -> Page<u32> {
        let limit = req.limit.min(cap);
        let start = req.offset as u32;
        let end = (start + limit).min(total);
        Page {
            offset: req.offset as i64,
            limit: limit as i64,
            set_id,
            results: (start..end).collect(),
            next_link: None,
        }
    }

    fn run(total: u32, cap: u32, page_size: u32) -> (Vec<u32>, Vec<PageRequest>) {
        let seen = RefCell::new(Vec::new());
        let set = Uuid::from_u128(7);
        let all = futures_util::FutureExt::now_or_never(collect_all(page_size, |r, _| {
            seen.borrow_mut().push(r);
            std::future::ready(Ok::<_, ()>(serve(total, cap, Some(set), r)))
        }))
        .expect("ready futures complete at once")
        .expect("no error");
        (all, seen.into_inner())
    }

    #[test]
    fn exact_multiple_needs_one_empty_page() {
        let (all, reqs) = run(6, 10_000, 2);
        assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(reqs.len(), 4);
        assert_eq!(
            reqs.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 2, 4, 6]
        );
    }

    #[test]
    fn short_page_ends_and_set_id_is_sent_back_from_page_two() {
        let (all, reqs) = run(2500, 10_000, 7);
        assert_eq!(all, (0..2500).collect::<Vec<_>>());
        assert_eq!(reqs.len(), 358); // 357 full pages of 7 + a page of 1
        assert_eq!(reqs[0].set_id, None);
        assert!(
            reqs[1..]
                .iter()
                .all(|r| r.set_id == Some(Uuid::from_u128(7)))
        );
    }

    #[test]
    fn a_server_side_cap_is_not_mistaken_for_the_end() {
        let (all, reqs) = run(100, 30, 1000);
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(
            reqs.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 30, 60, 90]
        );
    }

    #[test]
    fn a_server_ignoring_offset_is_stopped() {
        let r = futures_util::FutureExt::now_or_never(collect_all(2, |_, _| {
            std::future::ready(Ok::<_, ()>(Page {
                offset: 0,
                limit: 2,
                set_id: None,
                results: vec![1, 2],
                next_link: None,
            }))
        }))
        .unwrap();
        assert_eq!(
            r,
            Err(PagingError::Endless {
                pages: MAX_PAGES,
                page_size: 2,
                items: 2 * MAX_PAGES
            })
        );
    }

    #[test]
    fn errors_are_passed_through() {
        let r: Result<Vec<u32>, _> =
            futures_util::FutureExt::now_or_never(collect_all(2, |_, _| {
                std::future::ready(Err::<Page<u32>, _>("boom"))
            }))
            .unwrap();
        assert_eq!(r, Err(PagingError::Fetch("boom")));
    }

    /// A page that fails is asked for again by the next `advance`, from where it failed: the
    /// pages before it are neither requested again nor duplicated.
    #[test]
    fn a_failed_page_is_asked_again_not_the_whole_collection() {
        let seen = RefCell::new(Vec::new());
        let fail_next = std::cell::Cell::new(false);
        let mut listing = Listing::new(2);
        let mut fetch = |r: PageRequest, _: Option<String>| {
            seen.borrow_mut().push(r.offset);
            let failing = r.offset == 4 && !fail_next.replace(true);
            std::future::ready(if failing {
                Err("503")
            } else {
                Ok(serve(7, 10_000, None, r))
            })
        };
        let first = futures_util::FutureExt::now_or_never(listing.advance(&mut fetch)).unwrap();
        assert_eq!(first, Err(PagingError::Fetch("503")));
        assert!(!listing.is_complete());
        assert_eq!((listing.pages(), listing.items()), (2, &[0, 1, 2, 3][..]));
        futures_util::FutureExt::now_or_never(listing.advance(&mut fetch))
            .unwrap()
            .unwrap();
        assert!(listing.is_complete());
        assert_eq!(listing.into_items(), (0..7).collect::<Vec<_>>());
        assert_eq!(seen.into_inner(), [0, 2, 4, 4, 6]);
    }

    /// A cursor stored after a page and read back continues with the next page (the pages
    /// before it are not asked again); a detached one keeps its offset but not the `setId`.
    #[test]
    fn a_stored_cursor_continues_after_the_last_page_read() {
        let set = Uuid::from_u128(9);
        let seen = RefCell::new(Vec::new());
        let fetch = |r: PageRequest, _: Option<String>| {
            seen.borrow_mut().push(r);
            std::future::ready(Ok::<_, ()>(serve(7, 10_000, Some(set), r)))
        };
        fn now<T>(f: impl Future<Output = Result<T, PagingError<()>>>) -> T {
            futures_util::FutureExt::now_or_never(f).unwrap().unwrap()
        }
        let mut cursor = Cursor::new(3);
        assert_eq!(now(cursor.next_page(fetch)), Some(vec![0, 1, 2]));
        let stored = serde_json::to_string(&cursor).unwrap();
        let mut again: Cursor = serde_json::from_str(&stored).unwrap();
        assert_eq!(again, cursor);
        assert_eq!(now(again.next_page(fetch)), Some(vec![3, 4, 5]));
        let mut detached = again.clone();
        detached.detach();
        assert_eq!(now(again.next_page(fetch)), Some(vec![6]));
        assert!(again.is_complete());
        assert_eq!(now(again.next_page(fetch)), None);
        assert_eq!((again.pages(), again.items()), (3, 7));
        assert_eq!(now(detached.next_page(fetch)), Some(vec![6]));
        let offsets: Vec<_> = seen.borrow().iter().map(|r| (r.offset, r.set_id)).collect();
        assert_eq!(
            offsets,
            [(0, None), (3, Some(set)), (6, Some(set)), (6, None)]
        );
    }

    /// The `_links.next` of a full page is handed to the next fetch; a short page ends the
    /// listing whatever its links say.
    #[test]
    fn next_links_are_handed_on_after_full_pages() {
        let links = RefCell::new(Vec::new());
        let all = futures_util::FutureExt::now_or_never(collect_all(2, |r, link| {
            links.borrow_mut().push(link);
            let mut page = serve(5, 10_000, None, r);
            page.next_link = Some(format!("/v8/x?offset={}&limit=2", r.offset + 2));
            std::future::ready(Ok::<_, ()>(page))
        }))
        .unwrap()
        .unwrap();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
        assert_eq!(
            links.into_inner(),
            [
                None,
                Some("/v8/x?offset=2&limit=2".to_owned()),
                Some("/v8/x?offset=4&limit=2".to_owned())
            ]
        );
    }

    /// A link is followed only while it stays on the server and collection being read.
    #[test]
    fn links_that_leave_the_collection_are_refused() {
        let url = |u: &str| url::Url::parse(u).unwrap();
        let server = url("https://vb365.contoso.local:4443/");
        let boxes =
            url("https://vb365.contoso.local:4443/v8/RestoreSessions/9f/organization/mailboxes");
        let q = |href: &str| link_query(&server, &boxes, href);
        let want = Some("offset=30&limit=30".to_owned());
        assert_eq!(
            q("/v8/RestoreSessions/9f/organization/mailboxes?offset=30&limit=30"),
            want
        );
        assert_eq!(
            q("/v8/restoresessions/9F/Organization/Mailboxes?offset=30&limit=30"),
            want
        );
        assert_eq!(
            q(
                "https://vb365.contoso.local:4443/v8/RestoreSessions/9f/organization/mailboxes?offset=30&limit=30"
            ),
            want
        );
        for refused in [
            "https://evil.example/v8/RestoreSessions/9f/organization/mailboxes?offset=30&limit=30",
            "//evil.example/v8/RestoreSessions/9f/organization/mailboxes?offset=30&limit=30",
            "http://vb365.contoso.local:4443/v8/RestoreSessions/9f/organization/mailboxes?offset=30",
            "https://vb365.contoso.local:8443/v8/RestoreSessions/9f/organization/mailboxes?offset=30",
            "https://user:pw@vb365.contoso.local:4443/v8/RestoreSessions/9f/organization/mailboxes?offset=30",
            "/v8/RestoreSessions/9f/organization/mailboxes/../../../Organizations?offset=30",
            "/v8/RestoreSessions/other/organization/mailboxes?offset=30&limit=30",
            "/v8/RestoreSessions/9f/organization/mailboxes?offset=30#frag",
            "/v8/RestoreSessions/9f/organization/mailboxes",
            "organization/mailboxes?offset=30",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(q(refused), None, "{refused}");
        }
        // Behind a path prefix, a server-relative link drops the prefix: not the same collection.
        let server = url("https://proxy.contoso.local/vb365/");
        let boxes =
            url("https://proxy.contoso.local/vb365/v8/RestoreSessions/9f/organization/mailboxes");
        assert_eq!(
            link_query(
                &server,
                &boxes,
                "/v8/RestoreSessions/9f/organization/mailboxes?offset=30"
            ),
            None
        );
    }
}
