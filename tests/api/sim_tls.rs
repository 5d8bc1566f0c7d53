//! The simulator over HTTPS with a certificate generated in the test (rcgen), trusted by the
//! client as its only root.

use crate::sim_support::{dev_form, fast_config, start};
use reqwest::StatusCode;
use restorectl::sim::{SimConfig, TlsPem};

fn self_signed() -> TlsPem {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate");
    TlsPem {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    }
}

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let pem = self_signed();
    let sim = start(SimConfig {
        tls: Some(pem.clone()),
        ..fast_config()
    })
    .await;
    let base = sim.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let trusted = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.cert_pem.as_bytes()).expect("pem")])
        .build()
        .expect("client");
    let resp = trusted
        .post(format!("{base}/v8/token"))
        .form(&dev_form())
        .send()
        .await
        .expect("https request");
    assert_eq!(resp.status(), StatusCode::OK);
    // A client that does not trust the certificate fails the handshake.
    let other =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("other cert");
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other.cert.pem().as_bytes()).expect("pem")])
        .build()
        .expect("client");
    assert!(
        untrusting
            .post(format!("{base}/v8/token"))
            .form(&dev_form())
            .send()
            .await
            .is_err()
    );
    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::Client::new()
        .post(format!("http://{}/v8/token", sim.local_addr()))
        .form(&dev_form())
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
    assert!(
        !format!("{:?}", sim.config()).contains("PRIVATE KEY"),
        "Debug hides the key"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unusable_tls_material_is_refused_at_start() {
    let bad = TlsPem {
        cert_pem: "not a certificate".into(),
        key_pem: "nor a key".into(),
    };
    let err = restorectl::sim::Simulator::start(
        SimConfig {
            tls: Some(bad),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await;
    assert!(matches!(err, Err(restorectl::sim::SimError::Tls(_))));
}
