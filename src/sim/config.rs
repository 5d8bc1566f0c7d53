//! Simulator configuration: behaviour switches for the open questions of API.md, sizes and
//! delays, users, TLS material and the initial fault rules; loadable from YAML/JSON for
//! `restorectl simulate --config FILE`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::faults::FaultRule;
use super::world::{
    DEV_PASSWORD, DEV_USERNAME, ExtraMailbox, PAGING_ORG_MAILBOXES, default_latest_backup,
};

/// A user the token endpoint accepts. The password never appears in Debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimUser {
    /// Account name, compared case-insensitively (Windows accounts), e.g. `CONTOSO\svc-restore`.
    pub username: String,
    /// Password, compared exactly.
    pub password: String,
}

impl fmt::Debug for SimUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUser")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// Format of the `.issued`/`.expires` token fields: the spec says `date-time`, while the OWIN
/// OAuth server that issues VB365 tokens writes RFC 1123 (API.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenDateFormat {
    /// `Fri, 10 Jan 2025 08:00:00 GMT`
    #[default]
    Rfc1123,
    /// `2025-01-10T08:00:00.0000000Z`
    Rfc3339,
}

/// What the `sessionId` of a restore answer names (API.md open question 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionIdMode {
    /// (a) a new restore session for the operation, `Working` → `Stopped` with `result`.
    #[default]
    NewSession,
    /// (b) the explore session itself, which stays `Working`; completion shows only in its
    /// `Restore` events and statistics.
    ExploreSession,
}

/// Whether the export endpoint honours `Range` (API.md open question 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RangeMode {
    /// `206 Partial Content` with `Content-Range`.
    #[default]
    Honour,
    /// Ignore `Range` and answer `200` with the whole body.
    Ignore,
}

/// What `GET /RestoreSessions/{id}` (and its events/statistics) answer after `Stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StoppedSessions {
    /// Still readable with `state: Stopped` (data endpoints answer 404).
    #[default]
    Visible,
    /// Every call naming the session answers 404 `ResourceNotFound`.
    NotFound,
}

/// The result the simulator gives a mailbox restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase", deny_unknown_fields)]
pub enum RestoreOutcome {
    /// Every item restored.
    Success,
    /// Done, but `failedItems` items failed (status `Warning`).
    #[serde(rename_all = "camelCase")]
    Warning { failed_items: u64 },
    /// The mailbox restore failed with `error`.
    Failed { error: String },
    /// The restore could not continue for this mailbox (`cannotContinueMailboxError`).
    CannotContinue { error: String },
}

/// PEM-encoded certificate chain and private key for HTTPS. Debug hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPem {
    /// Certificate chain (leaf first), PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key_pem: String,
}

impl fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPem")
            .field("cert_pem", &format!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"[REDACTED]")
            .finish()
    }
}

/// Everything that shapes a simulator run. `Default` is the demo world with the dev user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SimConfig {
    /// World seed (ids, item corpora, export bytes).
    pub seed: u64,
    /// Accepted users.
    pub users: Vec<SimUser>,
    /// Access-token lifetime (`expires_in`), default 3600 s.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// Refresh-token lifetime (undocumented for VB365; default 14 days).
    #[serde(with = "humantime_serde")]
    pub refresh_token_lifetime: Duration,
    /// Lifetime of a device code (`expiresIn` of `restoreDeviceCode`), default 15 min.
    #[serde(with = "humantime_serde")]
    pub device_code_lifetime: Duration,
    /// Format of `.issued`/`.expires`.
    pub token_date_format: TokenDateFormat,
    /// Time from a restore POST to its completion.
    #[serde(with = "humantime_serde")]
    pub restore_delay: Duration,
    /// Meaning of the restore answer's `sessionId`.
    pub session_id_mode: SessionIdMode,
    /// In [`SessionIdMode::NewSession`], also log the `Restore` events on the explore session
    /// (so a client that lost the answer can find the restore there); `false` is the
    /// pessimistic reading.
    pub mirror_restore_events: bool,
    /// Restore outcome per mailbox e-mail (lower case); others succeed.
    pub restore_outcomes: BTreeMap<String, RestoreOutcome>,
    /// Time the first export of a given content takes before its first byte (later identical
    /// requests are served from the server-side cache at once).
    #[serde(with = "humantime_serde")]
    pub export_build_delay: Duration,
    /// Default export data size per mailbox (±25 % per mailbox), default 256 KiB.
    pub export_default_size: u64,
    /// Export data size per mailbox e-mail (lower case), e.g. multi-GiB for benchmarks.
    pub export_sizes: BTreeMap<String, u64>,
    /// Divides `pstSizeLimitBytes` before splitting, so tests can see ZIP splits with small
    /// exports (the API's minimum limit is 1 GiB): with 16384, a 1 GiB limit splits every
    /// 64 KiB. Default 1 (the real threshold).
    pub pst_split_scale: u64,
    /// Whether `Range` is honoured on exports.
    pub range_mode: RangeMode,
    /// How stopped sessions look afterwards.
    pub stopped_sessions: StoppedSessions,
    /// Time of the newest restore point (daily points going back 540 days).
    pub latest_backup: DateTime<Utc>,
    /// HTTPS material; plain HTTP when `None`. Not read from config files directly (see
    /// [`SimConfigFile::tls`]).
    #[serde(skip)]
    pub tls: Option<TlsPem>,
    /// Fault rules active from the start.
    pub faults: Vec<FaultRule>,
    /// Mailboxes added to the demo organisation after its own (tests of odd real-world data:
    /// a shared mailbox without an address, say).
    pub extra_mailboxes: Vec<ExtraMailbox>,
    /// Number of mailboxes of the paging organisation (`fabrikam.onmicrosoft.com`,
    /// `user0001@fabrikam.com` …), default 2,500: benchmarks export or search whole tenants of
    /// 10,000 and more.
    pub paging_org_mailboxes: usize,
    /// When above 0, every search answers this many generated hits instead of matching the
    /// world's items: spread over the searched mailboxes in turn (one mailbox for a mailbox
    /// search) and built from the seed page by page, so a million-hit search holds nothing per
    /// hit. The query is still parsed (a malformed one is refused) but not applied. For
    /// benchmarks and crash tests of large searches.
    pub synthetic_search_hits: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            users: vec![SimUser {
                username: DEV_USERNAME.to_string(),
                password: DEV_PASSWORD.to_string(),
            }],
            token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: Duration::from_secs(14 * 86_400),
            device_code_lifetime: Duration::from_secs(900),
            token_date_format: TokenDateFormat::default(),
            restore_delay: Duration::from_secs(2),
            session_id_mode: SessionIdMode::default(),
            mirror_restore_events: true,
            restore_outcomes: BTreeMap::new(),
            export_build_delay: Duration::from_millis(500),
            export_default_size: 256 * 1024,
            export_sizes: BTreeMap::new(),
            pst_split_scale: 1,
            range_mode: RangeMode::default(),
            stopped_sessions: StoppedSessions::default(),
            latest_backup: default_latest_backup(),
            tls: None,
            faults: Vec::new(),
            extra_mailboxes: Vec::new(),
            paging_org_mailboxes: PAGING_ORG_MAILBOXES,
            synthetic_search_hits: 0,
        }
    }
}

/// TLS files named by a config file (relative to the file's directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The `simulate --config FILE` format (YAML or JSON):
///
/// ```yaml
/// listen: 127.0.0.1:4443
/// tls: { certFile: sim-cert.pem, keyFile: sim-key.pem }
/// simulator:
///   tokenLifetime: 10m
///   sessionIdMode: exploreSession
///   faults:
///     - { endpoint: exportPst, calls: { from: 1, to: 1 }, action: { kind: dropAfterBytes, bytes: 65536 } }
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SimConfigFile {
    /// Listen address (the command line wins).
    pub listen: Option<SocketAddr>,
    /// Certificate and key files for HTTPS.
    pub tls: Option<TlsFiles>,
    /// Simulator settings.
    pub simulator: SimConfig,
}

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SimConfigError {
    #[error("simulator config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("simulator config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
}

impl SimConfigFile {
    /// Loads a YAML (or JSON, which YAML includes) config file and reads its TLS files.
    ///
    /// # Errors
    ///
    /// [`SimConfigError`] naming the file that could not be read or parsed.
    pub fn load(path: &Path) -> Result<(SimConfigFile, SimConfig), SimConfigError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| SimConfigError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let text = read(path)?;
        let file: SimConfigFile =
            serde_yaml::from_str(&text).map_err(|source| SimConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let mut config = file.simulator.clone();
        if let Some(tls) = &file.tls {
            let base = path.parent().unwrap_or(Path::new("."));
            config.tls = Some(TlsPem {
                cert_pem: read(&base.join(&tls.cert_file))?,
                key_pem: read(&base.join(&tls.key_file))?,
            });
        }
        Ok((file, config))
    }
}
