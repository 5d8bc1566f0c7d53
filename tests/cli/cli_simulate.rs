//! `restorectl simulate` as a process: it prints its URL and the dev login, answers a token
//! request, and stops with exit code 0 on SIGINT; a broken config file exits with 78.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use reqwest::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_restorectl");

#[tokio::test]
async fn simulate_prints_its_url_answers_and_stops_on_sigint() {
    let mut child = Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn restorectl simulate");
    let stdout = child.stdout.take().expect("stdout");
    // Forward stdout lines through a channel from a blocking reader thread.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (banner, rx) = tokio::task::spawn_blocking(move || {
        let mut banner = Vec::new();
        while let Ok(line) = rx.recv() {
            let done = line.starts_with("Press Ctrl-C");
            banner.push(line);
            if done {
                break;
            }
        }
        (banner, rx)
    })
    .await
    .expect("join");
    let url = banner
        .iter()
        .find_map(|l| l.strip_prefix("VB365 simulator listening on "))
        .expect("URL line")
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{url}"
    );
    assert!(banner.iter().any(|l| l.contains("contoso.onmicrosoft.com")));
    assert!(banner.iter().any(|l| l.contains("CONTOSO\\svc-restore")));

    let resp = reqwest::Client::new()
        .post(format!("{url}/v8/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "CONTOSO\\svc-restore"),
            ("password", "restorectl-dev"),
            ("disable_antiforgery_token", "true"),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), StatusCode::OK);

    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    reader.join().expect("reader");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l == "simulator stopped"), "{rest:?}");
}

#[test]
fn a_broken_simulator_config_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sim.yaml");
    std::fs::write(&path, "simulator:\n  tokenLifetme: 1h\n").expect("write");
    let out = assert_cmd::Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sim.yaml") && stderr.contains("tokenLifetme"),
        "{stderr}"
    );
}
