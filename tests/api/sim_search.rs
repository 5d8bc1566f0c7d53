//! Item search against the simulator: paging with a cached `setId`, ground-truth counts for a
//! mailbox and for a whole organisation, stale `setId`, malformed queries.

use std::collections::HashSet;

use crate::sim_support::{Api, fast_config};
use reqwest::StatusCode;
use restorectl::sim::schema::validate_response;
use restorectl::sim::{DEMO_ORG_ID, SearchScope};
use serde_json::{Value, json};

/// Collects every page of a search, passing back the first page's setId.
async fn search_all(api: &Api, path: &str, query: &str, limit: usize) -> (Vec<Value>, String) {
    let (status, first) = api
        .post(
            &format!("{path}?offset=0&limit={limit}"),
            json!({"query": query}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let set_id = first["setId"].as_str().expect("setId").to_string();
    let mut items = first["results"].as_array().expect("results").clone();
    let mut last = items.len();
    while last == limit {
        let (status, page) = api
            .post(
                &format!("{path}?offset={}&limit={limit}&setId={set_id}", items.len()),
                json!({"query": query}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["setId"], json!(set_id));
        let results = page["results"].as_array().expect("results").clone();
        last = results.len();
        items.extend(results);
    }
    (items, set_id)
}

#[tokio::test]
async fn mailbox_search_pages_reuse_the_set_id_and_match_ground_truth() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let ceo = api.mailbox_id("ceo@contoso.com");
    let path = format!("/v8/RestoreSessions/{rs}/organization/mailboxes/{ceo}/search");
    let query = "subject:report OR hasattachments:true";
    let (items, set_id) = search_all(&api, &path, query, 7).await;
    let truth = api
        .sim
        .search_ground_truth(query, SearchScope::Mailbox(ceo), None)
        .expect("truth");
    assert!(truth > 7, "several pages ({truth})");
    assert_eq!(items.len(), truth);
    let ids: HashSet<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(ids.len(), truth, "no duplicates across pages");
    assert!(
        items.iter().all(|i| i.get("mailboxId").is_none()),
        "per-mailbox hits carry no mailboxId"
    );
    // Every later page reused the setId (from the journal).
    let pages: Vec<Option<String>> = api
        .sim
        .journal()
        .iter()
        .filter(|e| {
            e.route
                .as_deref()
                .is_some_and(|r| r.ends_with("{mailboxId}/search"))
        })
        .map(|e| e.query_param("setId"))
        .collect();
    assert_eq!(pages[0], None);
    assert!(
        pages[1..]
            .iter()
            .all(|p| p.as_deref() == Some(set_id.as_str()))
    );
    let (_, page) = api
        .post(&format!("{path}?limit=5"), json!({"query": "from:ceo"}))
        .await;
    validate_response(
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/search",
        200,
        &page,
    )
    .expect("page shape");
    // Documented forms, all accepted.
    for q in [
        "from: \"Chief Executive\"",
        "received:>=1/1/2025 received:<7/1/2025",
        "System.Subject:minutes",
        "NOT subject:newsletter",
        "",
    ] {
        let (status, _) = api.post(&path, json!({"query": q})).await;
        assert_eq!(status, StatusCode::OK, "{q}");
    }
}

#[tokio::test]
async fn organisation_search_tags_hits_with_their_mailbox() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let path = format!("/v8/RestoreSessions/{rs}/organization/mailboxes/search");
    let query = "subject:\"board minutes\" from:ceo@contoso.com";
    let (items, _) = search_all(&api, &path, query, 3).await;
    let truth = api
        .sim
        .search_ground_truth(query, SearchScope::Organization(DEMO_ORG_ID), None)
        .expect("truth");
    assert_eq!(items.len(), truth);
    assert!(truth > 0);
    let boxes: HashSet<String> = api
        .sim
        .mailboxes(DEMO_ORG_ID)
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    assert!(
        items
            .iter()
            .all(|i| i["mailboxId"].as_str().is_some_and(|m| boxes.contains(m)))
    );
    assert!(items.iter().all(|i| {
        i["subject"]
            .as_str()
            .is_some_and(|s| s.to_lowercase().contains("board minutes"))
    }));
}

#[tokio::test]
async fn stale_set_ids_and_malformed_queries_are_errors() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let path = format!("/v8/RestoreSessions/{rs}/organization/mailboxes/search");
    let (status, err) = api
        .post(
            &format!("{path}?setId={}", uuid::Uuid::new_v4()),
            json!({"query": "from:ceo"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["errorCode"], "ResourceNotFound");
    for q in [
        "subject:\"unterminated",
        "(from:ceo",
        "received:someday",
        "from:",
    ] {
        let (status, err) = api.post(&path, json!({"query": q})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(err["errorCode"], "ParameterValidationFailure");
    }
    let (status, err) = api.post(&path, json!({"querry": "from:ceo"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("querry"))
    );
    // A set belongs to its session: after Stop it is gone with the session.
    let (_, first) = api.post(&path, json!({"query": "from:ceo"})).await;
    let set = first["setId"].as_str().expect("set").to_string();
    assert_eq!(
        api.post_empty(&format!("/v8/RestoreSessions/{rs}/Stop"))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.post(&format!("{path}?setId={set}"), json!({})).await.0,
        StatusCode::NOT_FOUND
    );
}
