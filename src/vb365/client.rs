//! [`Client`]: one reqwest client per configured VB365 server, its TLS and timeout setup, and
//! the handle the endpoint methods hang on.
//!
//! The client is spread over files by responsibility, each adding an `impl Client` block or a
//! part the client holds:
//!
//! - `connection.rs`: a request as a `Call`, sent once; decoding; building `ApiError`s;
//! - [`super::auth`]: bearer tokens (password grant, refresh, logout);
//! - `execute.rs`: sending a call with a token, the resend after a 401, classifying a failure,
//!   lost-session probes, paged collections;
//! - `endpoints/`: one public method per endpoint, grouped by resource.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::auth::Login;
use super::connection::Connection;
use super::error::ApiError;
use crate::config::{SecretContext, ServerConfig};

/// Bound on establishing a TCP + TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Items per page of paged calls unless configured otherwise (`pageSize`).
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// Errors building a [`Client`] from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    // The cause is part of the message (not a `#[source]`) so `{err:#}` prints it once.
    #[error("server {server}: cannot read caFile {path}: {cause}")]
    CaFileRead {
        server: String,
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("server {server}: caFile {path}: {message}")]
    CaFileInvalid {
        server: String,
        path: std::path::PathBuf,
        message: String,
    },
    #[error("server {server}: cannot set up the HTTP client: {cause}")]
    Build {
        server: String,
        cause: reqwest::Error,
    },
}

/// A VB365 server connection. Cheap to clone (the HTTP pool and token state are shared).
#[derive(Clone)]
pub struct Client {
    pub(super) inner: Arc<Inner>,
    pub(super) page_size: u32,
    /// Where the password is looked up: per handle, not shared, so a run keeps the `secretsDir`
    /// it started with while a reload gives the next run another one ([`Client::with_secrets`]).
    pub(super) secrets: Arc<SecretContext>,
}

/// What every handle of one server shares.
pub(super) struct Inner {
    pub(super) conn: Connection,
    pub(super) login: Login,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.conn.server)
            .field("base", &self.inner.conn.base)
            .field("username", &self.inner.login.username)
            .field("password", &self.inner.login.password)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client of one configured server. The password is not read here; it is
    /// resolved from its secret reference whenever a password grant is needed.
    pub fn new(server: &ServerConfig, secrets: &SecretContext) -> Result<Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(60))
            .user_agent(concat!("restorectl/", env!("CARGO_PKG_VERSION")))
            // VB365 does not redirect; following one would resend bodies with secrets elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &server.ca_file {
            let pem = std::fs::read(path).map_err(|cause| ClientError::CaFileRead {
                server: server.name.clone(),
                path: path.clone(),
                cause,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::CaFileInvalid {
                    server: server.name.clone(),
                    path: path.clone(),
                    message: format!("not a PEM certificate bundle: {e}"),
                }
            })?;
            if certs.is_empty() {
                return Err(ClientError::CaFileInvalid {
                    server: server.name.clone(),
                    path: path.clone(),
                    message: "no PEM certificate found".into(),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        if server.insecure_skip_tls_verify {
            tracing::warn!(
                server = %server.name,
                url = %server.url,
                "insecureSkipTlsVerify is set: the server certificate is NOT verified; use caFile instead"
            );
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|cause| ClientError::Build {
            server: server.name.clone(),
            cause,
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                conn: Connection {
                    server: Arc::from(server.name.as_str()),
                    base: server.url.as_str().trim_end_matches('/').to_string(),
                    http,
                    request_timeout: server.request_timeout,
                },
                login: Login::new(server.username.clone(), server.password.clone()),
            }),
            page_size: DEFAULT_PAGE_SIZE,
            secrets: Arc::new(secrets.clone()),
        })
    }

    /// The same client (connection pool and tokens shared) reading the password through
    /// `secrets` at its next password grant.
    pub fn with_secrets(mut self, secrets: &SecretContext) -> Client {
        self.secrets = Arc::new(secrets.clone());
        self
    }

    /// The same client with another page size for paged calls (clamped to 1..=10,000).
    pub fn with_page_size(mut self, page_size: u32) -> Client {
        self.page_size = page_size.clamp(1, 10_000);
        self
    }

    /// The configured server name.
    pub fn server(&self) -> &str {
        &self.inner.conn.server
    }

    /// The page size of paged calls.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Revokes the current token (`POST /v8/token/logout`) and forgets it. Does nothing when no
    /// token was obtained.
    pub async fn logout(&self) -> Result<(), ApiError> {
        self.inner.login.logout(&self.inner.conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretRef;

    fn server(ca: Option<std::path::PathBuf>) -> ServerConfig {
        ServerConfig {
            name: "primary".into(),
            url: url::Url::parse("https://vb365.contoso.local:4443/").unwrap(),
            username: "CONTOSO\\svc-restore".into(),
            password: SecretRef::Env("RESTORECTL_TEST_NEVER_SET".into()),
            ca_file: ca,
            insecure_skip_tls_verify: false,
            max_concurrent_sessions: 2,
            request_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn bad_ca_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = Client::new(&server(Some(missing.clone())), &SecretContext::default()).unwrap_err();
        assert!(
            e.to_string().contains("missing.pem") && e.to_string().contains("primary"),
            "{e}"
        );
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = Client::new(&server(Some(not_pem)), &SecretContext::default()).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn a_generated_ca_is_accepted_and_debug_is_safe() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let client = Client::new(&server(Some(path)), &SecretContext::default())
            .unwrap()
            .with_page_size(0);
        assert_eq!(client.page_size(), 1);
        let dbg = format!("{client:?}");
        assert!(
            dbg.contains("primary") && dbg.contains("{env: RESTORECTL_TEST_NEVER_SET}"),
            "{dbg}"
        );
        assert_eq!(client.inner.conn.base, "https://vb365.contoso.local:4443");
    }
}
