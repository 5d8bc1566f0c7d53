//! Shared helpers of the simulator tests: start a simulator on loopback and talk to it with a
//! plain reqwest client (deliberately not restorectl's own VB365 client).
#![allow(dead_code)]

use std::time::Duration;

use reqwest::StatusCode;
use restorectl::sim::{DEMO_ORG_ID, DEV_PASSWORD, DEV_USERNAME, SimConfig, SimHandle, Simulator};
use serde_json::{Value, json};

/// A simulator plus an HTTP client holding a bearer token.
pub struct Api {
    pub sim: SimHandle,
    pub http: reqwest::Client,
    pub token: String,
}

/// A config with short delays so tests do not wait for nothing.
pub fn fast_config() -> SimConfig {
    SimConfig {
        restore_delay: Duration::from_millis(100),
        export_build_delay: Duration::from_millis(10),
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> SimHandle {
    Simulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

/// The dev-credential password grant, form-encoded as real clients send it.
pub fn dev_form() -> Vec<(&'static str, &'static str)> {
    vec![
        ("grant_type", "password"),
        ("username", DEV_USERNAME),
        ("password", DEV_PASSWORD),
        ("disable_antiforgery_token", "true"),
    ]
}

pub async fn login(http: &reqwest::Client, base: &str) -> Value {
    let resp = http
        .post(format!("{base}/v8/token"))
        .form(&dev_form())
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("token json")
}

impl Api {
    pub async fn new(config: SimConfig) -> Api {
        let sim = start(config).await;
        let http = reqwest::Client::new();
        let token = login(&http, &sim.base_url()).await["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        Api { sim, http, token }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_empty(&self, path: &str) -> StatusCode {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("POST")
            .status()
    }

    /// The id of a primary (non-archive) mailbox of the demo organisation.
    pub fn mailbox_id(&self, email: &str) -> uuid::Uuid {
        self.sim
            .mailbox(email, false)
            .unwrap_or_else(|| panic!("no mailbox {email}"))
            .id
    }

    /// Opens an explore session of the demo organisation at the latest restore point.
    pub async fn explore(&self) -> String {
        let (status, session) = self
            .post(
                &format!("/v8/Organizations/{DEMO_ORG_ID}/explore"),
                json!({"type": "Vex", "showDeleted": false, "showAllVersions": false}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        assert_eq!(session["state"], "Working");
        session["id"].as_str().expect("id").to_string()
    }

    /// Every page of a paged GET collection.
    pub async fn all_pages(&self, path: &str, limit: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let (status, page) = self
                .get(&format!("{path}{sep}offset={}&limit={limit}", all.len()))
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let results = page["results"].as_array().expect("results").clone();
            let short = results.len() < limit;
            all.extend(results);
            if short || page["_links"].get("next").is_none() {
                return all;
            }
        }
    }
}

/// Polls `check` until it yields a value (generous cap; not a timing assertion).
pub async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached after 30 s");
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
