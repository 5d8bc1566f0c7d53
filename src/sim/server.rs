//! The accept loop: plain TCP or TLS, one HTTP/1.1 connection task per client, graceful
//! shutdown, and a per-connection kill switch that lets a fault drop a connection before any
//! response byte (a "restore executed but its response lost").

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::ConnKill;
use super::config::TlsPem;
use super::error::SimError;

/// How long open connections may take to finish after shutdown was requested.
const DRAIN: Duration = Duration::from_secs(5);

/// Builds the TLS acceptor from PEM material (HTTP/1.1 only via ALPN).
pub(crate) fn tls_acceptor(pem: &TlsPem) -> Result<TlsAcceptor, SimError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(pem.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SimError::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(SimError::Tls("certificate PEM holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem.key_pem.as_bytes())
        .map_err(|e| SimError::Tls(format!("private key PEM: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets open connections
/// finish (bounded by [`DRAIN`]).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Transient (e.g. too many open files): back off briefly instead of spinning.
                tracing::warn!(error = %e, "simulator accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (router, tls, shutdown) = (router.clone(), tls.clone(), shutdown.clone());
        tracker.spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_connection(TokioIo::new(stream), router, shutdown).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "simulator TLS handshake failed"),
                },
                None => serve_connection(TokioIo::new(stream), router, shutdown).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, router: Router, shutdown: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let kill = CancellationToken::new();
    let conn_kill = ConnKill(kill.clone());
    let service = tower::util::MapRequest::new(router, move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(conn_kill.clone());
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "simulator connection ended with an error");
            }
        }
        // Dropping the connection future closes the socket without an answer.
        () = kill.cancelled() => {}
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
        }
    }
}
