//! PST export against the simulator: full and resumed (`Range`) downloads that hash to the
//! simulator's own digest, the ignore-Range mode, 416, split exports as ZIPs of PSTs, and the
//! size-limit validation.

use std::io::Read;

use crate::sim_support::{Api, fast_config, sha256_hex};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use restorectl::sim::{ExportSpec, PST_MAGIC, RangeMode, SimConfig, ZIP_MAGIC};
use serde_json::{Value, json};

const GIB: u64 = 1 << 30;

async fn export(api: &Api, path: &str, body: &Value, range: Option<String>) -> reqwest::Response {
    let mut req = api
        .http
        .post(api.url(path))
        .bearer_auth(&api.token)
        .header("accept", "application/octet-stream")
        .json(body);
    if let Some(r) = range {
        req = req.header(RANGE, r);
    }
    req.send().await.expect("export request")
}

fn export_path(api: &Api, rs: &str, email: &str) -> String {
    let id = api.sim.mailbox(email, false).expect("mailbox").id;
    format!("/v8/RestoreSessions/{rs}/organization/mailboxes/{id}/exportToPst")
}

#[tokio::test]
async fn full_and_resumed_exports_hash_to_the_simulators_digest() {
    let api = Api::new(fast_config()).await;
    let point = "2025-03-15T12:00:00Z";
    let (status, session) = api
        .post(
            &format!("/v8/Organizations/{}/explore", restorectl::sim::DEMO_ORG_ID),
            json!({"type": "Vex", "dateTime": point}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let rs = session["id"].as_str().expect("id").to_string();
    let path = export_path(&api, &rs, "alice@contoso.com");
    let body = json!({"contentKeyword": "falcon", "enablePstSizeLimit": false});
    let full = export(&api, &path, &body, None).await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(
        full.headers()[reqwest::header::CONTENT_TYPE],
        "application/octet-stream"
    );
    let len: u64 = full.headers()[CONTENT_LENGTH]
        .to_str()
        .expect("len")
        .parse()
        .expect("number");
    let bytes = full.bytes().await.expect("body");
    assert_eq!(bytes.len() as u64, len);
    assert_eq!(&bytes[..4], PST_MAGIC);
    let spec = ExportSpec {
        mailbox_id: api.mailbox_id("alice@contoso.com"),
        keyword: Some("falcon".into()),
        point_in_time: Some(point.parse().expect("time")),
        pst_size_limit: None,
    };
    let (digest, digest_len) = api.sim.export_digest(&spec).expect("digest");
    assert_eq!((sha256_hex(&bytes), len), (digest.clone(), digest_len));

    // Resume from an arbitrary, unaligned offset: 206 + Content-Range, concatenation matches.
    let offset = len / 3 + 1;
    let part = export(&api, &path, &body, Some(format!("bytes={offset}-"))).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()[CONTENT_RANGE],
        format!("bytes {offset}-{}/{len}", len - 1).as_str()
    );
    assert_eq!(
        part.headers()[CONTENT_LENGTH],
        (len - offset).to_string().as_str()
    );
    let tail = part.bytes().await.expect("tail");
    let mut joined = bytes[..offset as usize].to_vec();
    joined.extend_from_slice(&tail);
    assert_eq!(sha256_hex(&joined), digest);

    // Past the end: 416 with the length.
    let beyond = export(&api, &path, &body, Some(format!("bytes={len}-"))).await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        beyond.headers()[CONTENT_RANGE],
        format!("bytes */{len}").as_str()
    );

    // Another keyword is another content; the journal shows each request's Range.
    let other = export(&api, &path, &json!({}), None)
        .await
        .bytes()
        .await
        .expect("body");
    assert_ne!(sha256_hex(&other), digest);
    let ranges: Vec<Option<String>> = api
        .sim
        .journal()
        .iter()
        .filter(|e| {
            e.route
                .as_deref()
                .is_some_and(|r| r.ends_with("exportToPst"))
        })
        .map(|e| e.range.clone())
        .collect();
    assert_eq!(
        ranges,
        [
            None,
            Some(format!("bytes={offset}-")),
            Some(format!("bytes={len}-")),
            None
        ]
    );
}

#[tokio::test]
async fn a_server_that_ignores_range_answers_200_with_everything() {
    let api = Api::new(SimConfig {
        range_mode: RangeMode::Ignore,
        ..fast_config()
    })
    .await;
    let rs = api.explore().await;
    let path = export_path(&api, &rs, "bob@contoso.com");
    let resp = export(&api, &path, &json!({}), Some("bytes=100-".into())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get(CONTENT_RANGE).is_none());
    let bytes = resp.bytes().await.expect("body");
    assert_eq!(&bytes[..4], PST_MAGIC);
    let spec = ExportSpec {
        mailbox_id: api.mailbox_id("bob@contoso.com"),
        keyword: None,
        point_in_time: None,
        pst_size_limit: None,
    };
    assert_eq!(
        api.sim.export_digest(&spec).expect("digest"),
        (sha256_hex(&bytes), bytes.len() as u64)
    );
}

#[tokio::test]
async fn exports_over_the_size_limit_are_zips_of_pst_parts() {
    let mut config = SimConfig {
        pst_split_scale: 16_384,
        ..fast_config()
    };
    config
        .export_sizes
        .insert("ceo@contoso.com".into(), 200 * 1024);
    let api = Api::new(config).await;
    let rs = api.explore().await;
    let path = export_path(&api, &rs, "ceo@contoso.com");
    let body = json!({"enablePstSizeLimit": true, "pstSizeLimitBytes": GIB});
    let resp = export(&api, &path, &body, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.expect("zip");
    assert_eq!(&bytes[..4], ZIP_MAGIC);
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("valid zip");
    assert_eq!(archive.len(), 4, "200 KiB in 64 KiB parts");
    let mut total = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("entry");
        assert!(entry.name().ends_with(".pst"));
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .expect("entry data (CRC checked)");
        assert_eq!(&data[..4], PST_MAGIC);
        total += data.len();
    }
    assert_eq!(total, 200 * 1024);
    let spec = ExportSpec {
        mailbox_id: api.mailbox_id("ceo@contoso.com"),
        keyword: None,
        point_in_time: None,
        pst_size_limit: Some(GIB),
    };
    assert_eq!(
        api.sim.export_digest(&spec).expect("digest").0,
        sha256_hex(&bytes)
    );
    // Without the flag, the same limit does not split.
    let plain = export(
        &api,
        &path,
        &json!({"enablePstSizeLimit": false, "pstSizeLimitBytes": GIB}),
        None,
    )
    .await
    .bytes()
    .await
    .expect("pst");
    assert_eq!(&plain[..4], PST_MAGIC);
    assert_eq!(plain.len(), 200 * 1024);
}

#[tokio::test]
async fn size_limits_outside_1_to_49_gib_and_stopped_sessions_are_rejected() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let path = export_path(&api, &rs, "alice@contoso.com");
    for body in [
        json!({"enablePstSizeLimit": true, "pstSizeLimitBytes": GIB - 1}),
        json!({"enablePstSizeLimit": true, "pstSizeLimitBytes": 50 * GIB}),
        json!({"enablePstSizeLimit": true}),
        json!({"enablePstSizeLimit": true, "pstSizeLimitBytes": "10GiB"}),
    ] {
        let resp = export(&api, &path, &body, None).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = resp.json().await.expect("json");
        assert_eq!(err["errorCode"], "ParameterValidationFailure");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains("pstSizeLimitBytes")),
            "{err}"
        );
    }
    assert_eq!(
        export(
            &api,
            &path,
            &json!({"enablePstSizeLimit": true, "pstSizeLimitBytes": 49 * GIB}),
            None
        )
        .await
        .status(),
        StatusCode::OK
    );
    assert_eq!(
        api.post_empty(&format!("/v8/RestoreSessions/{rs}/Stop"))
            .await,
        StatusCode::NO_CONTENT
    );
    let gone = export(&api, &path, &json!({}), None).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}
