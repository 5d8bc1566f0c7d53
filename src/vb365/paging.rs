//! Following VB365 paged collections to the end.
//!
//! Pages carry `offset`, `limit`, `results` and sometimes `setId`, but no total count
//! (API.md §7). The loop asks for `limit` items from `offset`, advances `offset` by the number of
//! results received, and stops at the first page shorter than the limit in force. The limit in
//! force is the smaller of what we asked for and what the page says it used, because a server may
//! clamp a large limit (a 10,000 cap, or a default of 30) and a clamped full page must not be
//! mistaken for the last one. Search endpoints cache their result set server-side: the `setId`
//! of the first page is sent back on every later page so the server does not search again.

use std::future::Future;

use uuid::Uuid;

use super::model::Page;

/// Upper bound on pages fetched for one collection, so a server that ignores `offset` and keeps
/// sending full pages cannot keep the loop running forever (10 million items at limit 1000).
pub const MAX_PAGES: usize = 10_000;

/// What to ask for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub offset: u64,
    pub limit: u32,
    /// The `setId` of the first page, for endpoints that take one.
    pub set_id: Option<Uuid>,
}

/// Why paging stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagingError<E> {
    /// A page request failed.
    Fetch(E),
    /// [`MAX_PAGES`] full pages and still no end.
    Endless,
}

/// Fetches pages of `page_size` from offset 0 until a short page; returns all results in order.
pub async fn collect_all<T, E, F, Fut>(
    page_size: u32,
    mut fetch: F,
) -> Result<Vec<T>, PagingError<E>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<Page<T>, E>>,
{
    let page_size = page_size.max(1);
    let mut req = PageRequest {
        offset: 0,
        limit: page_size,
        set_id: None,
    };
    let mut out = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = fetch(req).await.map_err(PagingError::Fetch)?;
        if req.set_id.is_none() {
            req.set_id = page.set_id;
        }
        let n = page.results.len();
        out.extend(page.results);
        let in_force = match u32::try_from(page.limit) {
            Ok(l) if l > 0 => l.min(page_size),
            _ => page_size,
        };
        if n == 0 || n < in_force as usize {
            return Ok(out);
        }
        req.offset += n as u64;
    }
    Err(PagingError::Endless)
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
        }
    }

    fn run(total: u32, cap: u32, page_size: u32) -> (Vec<u32>, Vec<PageRequest>) {
        let seen = RefCell::new(Vec::new());
        let set = Uuid::from_u128(7);
        let all = futures_util::FutureExt::now_or_never(collect_all(page_size, |r| {
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
        let r = futures_util::FutureExt::now_or_never(collect_all(2, |_| {
            std::future::ready(Ok::<_, ()>(Page {
                offset: 0,
                limit: 2,
                set_id: None,
                results: vec![1, 2],
            }))
        }))
        .unwrap();
        assert_eq!(r, Err(PagingError::Endless));
    }

    #[test]
    fn errors_are_passed_through() {
        let r: Result<Vec<u32>, _> = futures_util::FutureExt::now_or_never(collect_all(2, |_| {
            std::future::ready(Err::<Page<u32>, _>("boom"))
        }))
        .unwrap();
        assert_eq!(r, Err(PagingError::Fetch("boom")));
    }
}
