//! The built-in VB365 REST API v8 simulator (SPEC §9).
//!
//! An independent implementation of the server side, written from the vendor documents
//! (`API.md` and the OpenAPI subset), so that it catches client mistakes rather than mirroring
//! them. It serves the endpoints restorectl uses over HTTP or HTTPS on a chosen address and is
//! used in-process by tests and `daemon --dev`, and standalone by `restorectl simulate`.
//!
//! - `world`: the deterministic demo world (organisations, mailboxes, items, restore points)
//!   and the .NET time format of its instants;
//! - `state`: the shared state of a running simulator; `error`: [`SimError`];
//! - `api`: the types the pipeline files share (endpoint kinds, handler context, API errors);
//! - `routes`: the request pipeline (routing, journal, faults, auth, validation);
//! - `handlers` / `restore`: the endpoints; `sessions`: restore-session state;
//! - `auth`: tokens; `search`: the query parser; `export`: PST/ZIP bytes; `device_code`:
//!   device-code sign-in (codes, their expiry, the test hook that signs one in);
//! - [`schema`]: request validation against the embedded OpenAPI document (public, reused by
//!   the client's contract test); `faults`: fault injection; `journal`: the request log;
//! - `server`: the accept loop with TLS and graceful shutdown.
//!
//! ```no_run
//! # async fn demo() -> Result<(), restorectl::sim::SimError> {
//! use restorectl::sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
//! println!("VB365 simulator at {}", sim.base_url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod config;
mod device_code;
mod error;
mod export;
mod faults;
mod handlers;
mod journal;
mod restore;
mod routes;
pub mod schema;
mod search;
mod server;
mod sessions;
mod state;
mod world;

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use api::Endpoint;
pub use config::{
    RangeMode, RestoreOutcome, SessionIdMode, SimConfig, SimConfigError, SimConfigFile, SimUser,
    StoppedSessions, TlsFiles, TlsPem, TokenDateFormat,
};
pub use error::SimError;
pub use export::{PST_MAGIC, ZIP_MAGIC};
pub use faults::{CallRange, FaultAction, FaultPatternError, FaultRule};
pub use journal::{JournalEntry, JournalStats, REDACTED};
pub use search::QueryError;
pub use sessions::SessionInfo;
pub use world::{
    DEMO_ORG_ID, DEMO_ORG_NAME, DEV_PASSWORD, DEV_USERNAME, ExtraMailbox, Mailbox,
    PAGING_ORG_MAILBOXES, PAGING_ORG_NAME,
};

use export::{ExportKey, ExportLayout, data_size};
use faults::Faults;
use state::SimState;
use world::World;

/// Entry point: starts simulators.
#[derive(Debug)]
pub struct Simulator;

/// Where a search runs for [`SimHandle::search_ground_truth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchScope {
    /// One mailbox (`POST …/mailboxes/{id}/search`).
    Mailbox(Uuid),
    /// Every mailbox of an organisation (`POST …/mailboxes/search`).
    Organization(Uuid),
}

/// Identifies an export for [`SimHandle::export_digest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// Mailbox id.
    pub mailbox_id: Uuid,
    /// `contentKeyword` (`None` or empty = whole mailbox).
    pub keyword: Option<String>,
    /// The explore `dateTime` (`None` = latest restore point).
    pub point_in_time: Option<DateTime<Utc>>,
    /// `pstSizeLimitBytes` sent with `enablePstSizeLimit: true` (`None` = no limit).
    pub pst_size_limit: Option<u64>,
}

impl Simulator {
    /// Binds `addr` (port 0 picks a free port) and serves the simulator until
    /// [`SimHandle::shutdown`] (or until the handle is dropped).
    ///
    /// # Errors
    ///
    /// [`SimError::Bind`] when the address cannot be bound, [`SimError::Tls`] for unusable
    /// TLS material, [`SimError::Fault`] for an invalid configured fault rule.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, SimError> {
        let tls = config.tls.as_ref().map(server::tls_acceptor).transpose()?;
        let faults = Faults::default();
        for rule in &config.faults {
            faults.add(rule.clone())?;
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let world = World::build(
            config.seed,
            config.latest_backup,
            &config.extra_mailboxes,
            config.paging_org_mailboxes,
        );
        let state = Arc::new(SimState::new(config, world, faults));
        let router = axum::Router::new()
            .route(
                device_code::SIGN_IN_PATH,
                axum::routing::post(device_code::sign_in_route),
            )
            .route(journal::STATS_PATH, axum::routing::get(stats_route))
            .fallback(routes::dispatch)
            .with_state(Arc::clone(&state));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let serve = server::serve(
            listener,
            tls,
            router,
            state.shutdown.clone(),
            state.tasks.clone(),
        );
        let accept = tokio::spawn(serve);
        tracing::info!(url = %format!("{scheme}://{local}"), "VB365 simulator listening");
        Ok(SimHandle {
            state,
            local,
            scheme,
            accept: Some(accept),
        })
    }
}

/// `GET /sim/stats`: the journal's [`JournalStats`] as JSON. Not recorded in the journal itself.
async fn stats_route(
    axum::extract::State(state): axum::extract::State<Arc<SimState>>,
) -> axum::Json<JournalStats> {
    axum::Json(state.journal.stats())
}

/// A running simulator: its address, journal, fault control and world access.
#[derive(Debug)]
pub struct SimHandle {
    state: Arc<SimState>,
    local: SocketAddr,
    scheme: &'static str,
    accept: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Base URL without the version, e.g. `http://127.0.0.1:40123` (the client adds `/v8/...`).
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.local)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The configuration the simulator runs with.
    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// Every request recorded so far, in arrival order.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.state.journal.snapshot()
    }

    /// Forgets the recorded requests.
    pub fn clear_journal(&self) {
        self.state.journal.clear();
    }

    /// Adds a fault rule.
    ///
    /// # Errors
    ///
    /// [`SimError::Fault`] when the rule's path glob is invalid.
    pub fn add_fault(&self, rule: FaultRule) -> Result<(), SimError> {
        Ok(self.state.faults.add(rule)?)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// Sets the outcome of later restore completions for a mailbox e-mail.
    pub fn set_restore_outcome(&self, email: &str, outcome: RestoreOutcome) {
        self.state
            .with_data(|d| d.outcomes.insert(email.to_ascii_lowercase(), outcome));
    }

    /// Marks a device code (`userCode` of `restoreDeviceCode`) as signed in, as an operator
    /// would in a browser. False when the code is unknown or has expired.
    pub fn sign_in_device_code(&self, user_code: &str) -> bool {
        device_code::sign_in(&self.state, user_code)
    }

    /// The request bodies of the device codes handed out so far (oldest first is not
    /// guaranteed), for tests.
    pub fn device_code_requests(&self) -> Vec<serde_json::Value> {
        self.state
            .with_data(|d| d.device_codes.values().map(|c| c.request.clone()).collect())
    }

    /// (id, name) of every organisation.
    pub fn organizations(&self) -> Vec<(Uuid, String)> {
        self.state
            .world
            .organizations()
            .iter()
            .map(|o| (o.id, o.name.clone()))
            .collect()
    }

    /// The mailboxes of an organisation (primary and archive), in listing order.
    pub fn mailboxes(&self, org_id: Uuid) -> Vec<Mailbox> {
        self.state
            .world
            .organization(org_id)
            .map(|o| o.mailboxes.clone())
            .unwrap_or_default()
    }

    /// A mailbox by e-mail and archive flag.
    pub fn mailbox(&self, email: &str, is_archive: bool) -> Option<Mailbox> {
        self.state
            .world
            .mailbox_by_email(email, is_archive)
            .cloned()
    }

    /// The id of the repository holding every backup of this world (`repositoryId` of
    /// `/v8/Jobs`, accepted by organisation explore).
    pub fn repository_id(&self) -> Uuid {
        world::derive_uuid(&[b"repository", &self.state.world.seed().to_le_bytes()])
    }

    /// The id of the backup job protecting an organisation.
    pub fn job_id(&self, org_id: Uuid) -> Option<Uuid> {
        self.state.world.organization(org_id).map(|o| o.job_id)
    }

    /// SHA-256 (lower-case hex) and length of the body `exportToPst` returns for `spec`.
    /// Costs one pass over the export's bytes.
    ///
    /// # Errors
    ///
    /// [`SimError::UnknownId`] for a mailbox outside the world or a point in time before the
    /// first backup.
    pub fn export_digest(&self, spec: &ExportSpec) -> Result<(String, u64), SimError> {
        let state = &self.state;
        let mailbox = state
            .world
            .mailbox(spec.mailbox_id)
            .ok_or(SimError::UnknownId(spec.mailbox_id))?;
        let restore_point = state
            .world
            .restore_point(spec.point_in_time)
            .ok_or(SimError::UnknownId(spec.mailbox_id))?;
        let key = ExportKey {
            seed: state.config.seed,
            mailbox_id: mailbox.id,
            keyword: spec.keyword.clone().filter(|k| !k.is_empty()),
            restore_point,
            size_limit: spec.pst_size_limit,
        };
        if let Some(layout) = state.with_data(|d| d.layouts.get(&key).cloned()) {
            return Ok(layout.digest());
        }
        let configured = state
            .config
            .export_sizes
            .get(&mailbox.email.to_ascii_lowercase())
            .copied();
        let data = data_size(&key, configured, state.config.export_default_size);
        let split = key
            .size_limit
            .map(|l| l / state.config.pst_split_scale.max(1));
        Ok(ExportLayout::build(&key, mailbox, data, split).digest())
    }

    /// How many items a search finds (what the client must collect over all pages).
    ///
    /// # Errors
    ///
    /// [`SimError::Query`] for a malformed query, [`SimError::UnknownId`] for an unknown scope.
    pub fn search_ground_truth(
        &self,
        query: &str,
        scope: SearchScope,
        point_in_time: Option<DateTime<Utc>>,
    ) -> Result<usize, SimError> {
        let world = &self.state.world;
        let parsed = search::parse_query(query)?;
        let Some(rp) = world.restore_point(point_in_time) else {
            return Ok(0);
        };
        let synthetic = self.state.config.synthetic_search_hits;
        if synthetic > 0 {
            return Ok(usize::try_from(synthetic).unwrap_or(usize::MAX));
        }
        let boxes: Vec<&Mailbox> = match scope {
            SearchScope::Mailbox(id) => vec![world.mailbox(id).ok_or(SimError::UnknownId(id))?],
            SearchScope::Organization(id) => world
                .organization(id)
                .ok_or(SimError::UnknownId(id))?
                .mailboxes
                .iter()
                .collect(),
        };
        Ok(boxes
            .iter()
            .map(|m| {
                world
                    .items(m, rp)
                    .iter()
                    .filter(|i| parsed.matches(i))
                    .count()
            })
            .sum())
    }

    /// A restore session's current state.
    pub fn session(&self, id: Uuid) -> Option<SessionInfo> {
        self.state
            .with_data(|d| d.sessions.get(&id).map(SessionInfo::from))
    }

    /// Every restore session, in creation order.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.state.with_data(|d| {
            d.order
                .iter()
                .filter_map(|id| d.sessions.get(id))
                .map(SessionInfo::from)
                .collect()
        })
    }

    /// Restore POSTs that really started for a mailbox (including ones whose answer was lost).
    pub fn restore_calls(&self, mailbox_id: Uuid) -> usize {
        self.state
            .with_data(|d| d.restore_calls.get(&mailbox_id).copied().unwrap_or(0))
    }

    /// Stops accepting, lets open connections finish (bounded) and waits for background
    /// work (pending restore completions are abandoned).
    pub async fn shutdown(mut self) {
        self.state.shutdown.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.state.tasks.close();
        self.state.tasks.wait().await;
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // A dropped handle must not leave a server running in the background.
        self.state.shutdown.cancel();
    }
}
