//! Helpers shared by the download acceptance tests and `examples/download_bench.rs`: a VB365
//! client for a simulator URL, a restore session, and a state database with the job, run, step
//! and download rows an ExportPst step has when the run engine starts its download.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use restorectl::config::{SecretContext, SecretRef, ServerConfig};
use restorectl::download::ManifestInfo;
use restorectl::store::{
    NewDownload, NewJobVersion, NewRun, NewStep, RunId, RunState, Store, Trigger,
};
use restorectl::vb365::{Client, Mailbox, OrganizationExploreOptions};
use uuid::Uuid;

/// The demo organisation's name.
pub const ORG: &str = "contoso.onmicrosoft.com";

/// A client for `url` logging in with `password` (written to a secrets dir kept in the
/// returned temp dir).
pub fn client_for(url: &str, username: &str, password: &str) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("vb365-password"), format!("{password}\n")).expect("secret");
    let server = ServerConfig {
        name: "primary".into(),
        url: url::Url::parse(url).expect("url"),
        username: username.into(),
        password: SecretRef::Secret("vb365-password".into()),
        ca_file: None,
        insecure_skip_tls_verify: false,
        max_concurrent_sessions: 2,
        request_timeout: Duration::from_secs(60),
    };
    let ctx = SecretContext {
        credentials_dir: None,
        secrets_dir: Some(dir.path().into()),
        base_dir: dir.path().into(),
    };
    (Client::new(&server, &ctx).expect("client"), dir)
}

/// Opens a restore session on the demo organisation at the latest point and finds `email`.
pub async fn session_and_mailbox(client: &Client, email: &str) -> (Uuid, Mailbox) {
    let org = client
        .resolve_organization(ORG)
        .await
        .expect("organization");
    let session = client
        .explore_organization(
            org.id.expect("organization id"),
            &OrganizationExploreOptions::default(),
        )
        .await
        .expect("explore");
    let mailbox = client
        .mailboxes(session.id)
        .await
        .expect("mailboxes")
        .into_iter()
        .find(|m| m.email.eq_ignore_ascii_case(email) && !m.is_archive)
        .expect("mailbox in the session");
    (session.id, mailbox)
}

/// The state database rows of one ExportPst step, as the run engine creates them.
pub struct SeededStep {
    pub run: RunId,
    pub step_id: i64,
}

/// Records job `job` (once), a manual run, its step for `mailbox`, and the download row for
/// `final_path`.
pub async fn seed_step(
    store: &Store,
    job: &str,
    mailbox: &Mailbox,
    final_path: &Path,
) -> SeededStep {
    let spec = serde_json::json!({ "kind": "ExportPst", "name": job });
    let version = store
        .upsert_job_version(
            &NewJobVersion {
                name: job,
                kind: "ExportPst",
                file: Path::new("jobs/legal.yaml"),
                spec_hash: "h1",
                spec: &spec,
                valid: true,
                errors: &serde_json::json!([]),
            },
            Utc::now(),
        )
        .await
        .expect("job version")
        .version_id;
    let run = store
        .enqueue_run(
            &NewRun {
                job_name: job,
                job_version_id: version,
                spec_hash: "h1",
                trigger: Trigger::Manual,
                scheduled_for: Utc::now(),
                state: RunState::Queued,
                reason: None,
                timeout: None,
            },
            Utc::now(),
        )
        .await
        .expect("run")
        .expect("run inserted");
    let step = store
        .create_steps(
            run.id,
            &[NewStep {
                seq: 0,
                mailbox_id: Some(mailbox.id.to_string()),
                mailbox_email: Some(mailbox.email.clone()),
                mailbox_name: Some(mailbox.name.clone()),
                ..Default::default()
            }],
            Utc::now(),
        )
        .await
        .expect("step")
        .remove(0);
    let partial = {
        let mut s = final_path.as_os_str().to_owned();
        s.push(".partial");
        std::path::PathBuf::from(s)
    };
    store
        .create_download(
            &NewDownload {
                step_id: step.id,
                final_path,
                partial_path: &partial,
                restore_session_id: None,
            },
            Utc::now(),
        )
        .await
        .expect("download row");
    SeededStep {
        run: run.id,
        step_id: step.id,
    }
}

/// The manifest facts the run engine would pass for this step.
pub fn manifest_info(
    job: &str,
    seeded: &SeededStep,
    mailbox: &Mailbox,
    session: Uuid,
) -> ManifestInfo {
    ManifestInfo {
        job: job.into(),
        run: seeded.run.to_string(),
        step: seeded.step_id,
        kind: "ExportPst".into(),
        server: "primary".into(),
        organization: ORG.into(),
        mailbox: mailbox.email.clone(),
        mailbox_id: mailbox.id.to_string(),
        point_in_time: "latest".into(),
        restore_session_id: session.to_string(),
        keyword: None,
        pst_size_limit_bytes: None,
        started_at: Utc::now(),
        restore_point_id: None,
        backup_time: None,
        attempts: 1,
        job_file: "jobs/legal.yaml".into(),
        job_spec_hash: "h1".into(),
    }
}
