//! The state database (SPEC §5): jobs and their versions, runs, steps, restore sessions, downloads,
//! published files, operator requests, the daemon instance lock and the append-only event log.
//!
//! All SQL of the project lives in this module, one file per table group:
//!
//! - `mod.rs` (this file): [`Store`] (open, pools, transactions), [`StoreError`], the typed
//!   state enums, [`RunId`] and the column codecs (times, JSON, paths);
//! - [`jobs`]: scanned job files, jobs and job versions, next-fire bookkeeping;
//! - [`runs`]: enqueueing (with the one-shot and schedule-slot uniqueness), claiming with a lease,
//!   state changes, cancellation;
//! - [`steps`]: a run's steps and the transitions of the at-most-once restore protocol;
//! - [`sessions`]: VB365 restore sessions the daemon opened;
//! - [`downloads`]: durable download progress and the published files (`exports`);
//! - [`requests`]: operator requests and the daemon instance lock;
//! - [`events`]: the append-only history.
//!
//! # Concurrency
//!
//! SQLite allows one writer at a time. Every write goes through a one-connection writer pool and
//! starts with `BEGIN IMMEDIATE`, which takes the write lock up front: a deferred transaction that
//! read first and then tries to write can fail at once with `SQLITE_BUSY` ("database is locked")
//! when another connection committed in between, and `busy_timeout` does not help there. With
//! `BEGIN IMMEDIATE` a second writer (another `Store`, another process) simply waits up to the busy
//! timeout. Reads go through a small read-only pool and never block writers (WAL).
//!
//! Never `.await` anything but the store's own queries inside a transaction: the writer pool has
//! one connection, so a transaction held across a download would stall every other write.
//!
//! # Portability
//!
//! Queries use `$N` placeholders, `ON CONFLICT … DO NOTHING/UPDATE`, `RETURNING`, `COALESCE` and
//! plain SQL only; times are INTEGER milliseconds, JSON is TEXT parsed in Rust. A PostgreSQL
//! backend will need its own migrations and small query differences (`$1 IS NULL` needs a cast),
//! not a different design.
//!
//! # Time
//!
//! Every function that stamps a time takes `now` from the caller, so the scheduler's tests can
//! drive a fake clock through the whole store.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Database, Decode, Encode, Sqlite, Transaction, Type};
use uuid::Uuid;

pub use downloads::{Download, Export, NewDownload, NewExport};
pub use events::{Event, EventKind, NewEvent};
pub use jobs::{
    FileChange, JobSummary, JobVersion, NewJobVersion, NextFire, ScannedFile, StoredJob,
    StoredJobFile, VersionChange, VersionOutcome,
};
pub use requests::{DaemonInstance, InstanceInfo, NewRequest, OperatorRequest};
pub use runs::{CancelOutcome, LeaseRenewal, NewRun, Run, RunFilter};
pub use sessions::{NewSession, RestoreSession};
pub use steps::{NewStep, RestoreCounts, Step, StepError, StepFile};

/// The migrations in `migrations/`, embedded at compile time (`build.rs` makes cargo notice a
/// new file).
static MIGRATOR: Migrator = sqlx::migrate!();

/// How long a connection waits for the write lock before failing with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the read-only pool.
const READER_CONNECTIONS: u32 = 4;

/// Errors of the state database. Each names what it was about (a path, a run, a step, an
/// operation) so a log line or CLI message is actionable on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state directory or database file could not be created.
    #[error("{path}: cannot create the state database")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// SQLite could not open the file (permissions, not a database, …).
    #[error("{path}: cannot open the state database")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    /// A read-only open found no database file.
    #[error(
        "{path}: no state database: the daemon has not run yet (start `restorectl daemon`, or \
         check `stateDir`/`database` in the config)"
    )]
    Missing { path: PathBuf },
    /// The embedded migrations could not be applied.
    #[error("{path}: cannot apply the database migrations")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A read-only open found a schema this binary does not know (older or newer).
    #[error(
        "{path}: database schema version {} does not match this restorectl (expects {expected}); \
         start the matching `restorectl daemon` once to migrate it",
        found.map_or_else(|| "none".to_string(), |v| v.to_string())
    )]
    SchemaMismatch {
        path: PathBuf,
        found: Option<i64>,
        expected: i64,
    },
    /// `database:` is not a `sqlite://` URL.
    #[error("`{url}` is not a sqlite:// database URL")]
    UnsupportedUrl { url: String },
    /// A write was attempted through a store opened with [`Store::open_read_only`].
    #[error("{path}: the state database was opened read-only ({op})")]
    ReadOnly { path: PathBuf, op: &'static str },
    /// The row asked for does not exist.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// A unique key says the row already exists.
    #[error("{what} {id} already exists")]
    Conflict { what: &'static str, id: String },
    /// A state change that the life cycle does not allow (e.g. re-sending an `in_doubt` restore
    /// without an operator's decision).
    #[error("{what} {id}: cannot change from {from} to {to}")]
    InvalidTransition {
        what: &'static str,
        id: String,
        from: String,
        to: String,
    },
    /// The caller no longer holds the run's lease (it expired and another owner took the run).
    #[error("run {run}: lease lost: held by {}, not {owner}", holder.as_deref().unwrap_or("nobody"))]
    LeaseLost {
        run: RunId,
        owner: String,
        holder: Option<String>,
    },
    /// Another live daemon holds the single-instance lock.
    #[error(
        "the state database is in use by another daemon: instance {}, pid {}, host {}, last \
         heartbeat {}",
        holder.id, holder.pid, holder.host, holder.heartbeat_at.to_rfc3339()
    )]
    InstanceLocked { holder: Box<DaemonInstance> },
    /// This daemon's instance row was taken over or released while it was still running.
    #[error("daemon instance {id} no longer holds the state database lock")]
    InstanceLost { id: String },
    /// A path that cannot be stored as text.
    #[error("{path}: path is not valid UTF-8 and cannot be stored")]
    NonUtf8Path { path: PathBuf },
    /// Any other database failure, with the store operation that hit it.
    #[error("state database error in {op}")]
    Database {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// True when a row was missing ([`StoreError::NotFound`]).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches the operation name to a sqlx error; `RowNotFound` becomes [`StoreError::NotFound`]
/// when the caller says what was looked up.
pub(crate) trait SqlxResultExt<T> {
    /// Wraps any error as [`StoreError::Database`] naming `op`.
    fn op(self, op: &'static str) -> Result<T>;
    /// Like [`SqlxResultExt::op`], but `RowNotFound` becomes `NotFound { what, id }`.
    fn found(self, op: &'static str, what: &'static str, id: impl fmt::Display) -> Result<T>;
    /// Like [`SqlxResultExt::op`], but a unique violation becomes `Conflict { what, id }`.
    fn unique(self, op: &'static str, what: &'static str, id: impl fmt::Display) -> Result<T>;
}

impl<T> SqlxResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Database { op, source })
    }

    fn found(self, op: &'static str, what: &'static str, id: impl fmt::Display) -> Result<T> {
        self.map_err(|source| match source {
            sqlx::Error::RowNotFound => StoreError::NotFound {
                what,
                id: id.to_string(),
            },
            source => StoreError::Database { op, source },
        })
    }

    fn unique(self, op: &'static str, what: &'static str, id: impl fmt::Display) -> Result<T> {
        self.map_err(|source| match &source {
            sqlx::Error::Database(e) if e.is_unique_violation() => StoreError::Conflict {
                what,
                id: id.to_string(),
            },
            _ => StoreError::Database { op, source },
        })
    }
}

/// Handle on the state database. Cheap to clone (an `Arc` inside); share one per process.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// One connection: SQLite has one writer at a time, and funnelling writes through one
    /// connection means they queue in the pool instead of fighting over the file lock.
    /// `None` for a store opened read-only.
    writer: Option<SqlitePool>,
    reader: SqlitePool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("read_only", &self.inner.writer.is_none())
            .finish()
    }
}

/// The write transaction type of the store.
pub(crate) type WriteTx = Transaction<'static, Sqlite>;

impl Store {
    /// Opens (creating if needed) the database at `path` for reading and writing: creates the
    /// parent directory (0700) and the file (0600), enables WAL, `synchronous=NORMAL`, a 10 s busy
    /// timeout and foreign keys, and applies the embedded migrations (a no-op when up to date).
    pub async fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        create_private_file(&path)?;
        Self::open_writable(path).await
    }

    /// Like [`Store::open`] for a `sqlite://PATH` URL (the config's `database`).
    pub async fn open_url(url: &str) -> Result<Store> {
        Store::open(path_from_url(url)?).await
    }

    /// Opens an existing database for reading and writing without creating it: for operator
    /// commands that write requests (`run`, `cancel`, `resolve`), which must not create a
    /// database the daemon does not use. Applies pending migrations like [`Store::open`].
    pub async fn open_existing(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(StoreError::Missing { path });
        }
        Self::open_writable(path).await
    }

    /// Opens an existing database read-only, for operator commands that only read history.
    /// Fails with [`StoreError::Missing`] when the file does not exist, and with
    /// [`StoreError::SchemaMismatch`] when its schema is not the one this binary expects.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(StoreError::Missing { path });
        }
        let reader = reader_pool(&path).await?;
        let store = Store {
            inner: Arc::new(Inner {
                path: path.clone(),
                writer: None,
                reader,
            }),
        };
        let found = store.schema_version().await?;
        let expected = expected_schema_version();
        if found != Some(expected) {
            return Err(StoreError::SchemaMismatch {
                path,
                found,
                expected,
            });
        }
        Ok(store)
    }

    async fn open_writable(path: PathBuf) -> Result<Store> {
        let options = base_options(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        let reader = reader_pool(&path).await?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                writer: Some(writer),
                reader,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// True for a store opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.inner.writer.is_none()
    }

    /// The highest migration version applied to the database (`None` before the first).
    pub async fn schema_version(&self) -> Result<Option<i64>> {
        let table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(self.reader())
        .await
        .op("schema_version")?;
        if table.is_none() {
            return Ok(None);
        }
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(self.reader())
            .await
            .op("schema_version")
    }

    /// Checks the database answers a query (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(self.reader())
            .await
            .op("ping")?;
        Ok(())
    }

    /// Closes both pools, waiting for connections to finish (checkpoints the WAL when this was
    /// the last connection).
    pub async fn close(&self) {
        if let Some(writer) = &self.inner.writer {
            writer.close().await;
        }
        self.inner.reader.close().await;
    }

    /// The read-only pool.
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.inner.reader
    }

    /// Starts a write transaction with `BEGIN IMMEDIATE` (see the module doc for why).
    pub(crate) async fn begin_write(&self, op: &'static str) -> Result<WriteTx> {
        let writer = self
            .inner
            .writer
            .as_ref()
            .ok_or_else(|| StoreError::ReadOnly {
                path: self.inner.path.clone(),
                op,
            })?;
        writer.begin_with("BEGIN IMMEDIATE").await.op(op)
    }
}

/// The schema version this binary's embedded migrations produce.
pub fn expected_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The file path of a `sqlite://PATH` URL.
pub fn path_from_url(url: &str) -> Result<PathBuf> {
    match url.strip_prefix("sqlite://") {
        Some(rest) if !rest.is_empty() && !rest.contains('?') => Ok(PathBuf::from(rest)),
        _ => Err(StoreError::UnsupportedUrl {
            url: url.to_string(),
        }),
    }
}

fn base_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
}

async fn reader_pool(path: &Path) -> Result<SqlitePool> {
    // No journal_mode here: a read-only connection cannot change it, and WAL is a property of
    // the file once the writer has set it.
    let options = base_options(path).read_only(true);
    SqlitePoolOptions::new()
        .max_connections(READER_CONNECTIONS)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Creates the parent directory (0700) and an empty database file (0600) unless they exist.
/// SQLite would create the file with the process umask (usually 0644); the state holds job
/// history and file paths that only the daemon's user should read. SQLite gives the `-wal` and
/// `-shm` files the database file's mode.
fn create_private_file(path: &Path) -> Result<()> {
    let create_err = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(parent).map_err(create_err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(create_err(e)),
    }
}

// ===== time and value helpers =====

/// Milliseconds since the Unix epoch, the stored form of every time.
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The instant `ms` milliseconds after the Unix epoch, or `None` outside chrono's range.
pub fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A byte count or counter as SQLite's signed INTEGER (saturating; no real file reaches 2^63).
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A path as stored text; non-UTF-8 paths are refused rather than stored lossily.
pub(crate) fn path_text(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| StoreError::NonUtf8Path {
        path: path.to_path_buf(),
    })
}

/// JSON as stored text.
pub(crate) fn json_text(value: &impl Serialize) -> String {
    // Serialising a `serde_json::Value` or a `Vec` of strings/numbers cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

/// Column codec: a time stored as INTEGER milliseconds, decoded into `DateTime<Utc>`
/// (used through `#[sqlx(try_from = "Millis")]`; not needed by callers).
#[derive(Debug, Clone, Copy)]
pub struct Millis(DateTime<Utc>);

impl<DB: Database> Type<DB> for Millis
where
    i64: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for Millis
where
    i64: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        let ms = <i64 as Decode<DB>>::decode(value)?;
        from_millis(ms)
            .map(Millis)
            .ok_or_else(|| format!("{ms} ms is outside the supported time range").into())
    }
}

impl From<Millis> for DateTime<Utc> {
    fn from(m: Millis) -> Self {
        m.0
    }
}

/// Column codec: a nullable time stored as INTEGER milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct OptMillis(Option<DateTime<Utc>>);

impl<DB: Database> Type<DB> for OptMillis
where
    i64: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for OptMillis
where
    i64: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        match <Option<Millis> as Decode<DB>>::decode(value)? {
            Some(m) => Ok(OptMillis(Some(m.0))),
            None => Ok(OptMillis(None)),
        }
    }
}

impl From<OptMillis> for Option<DateTime<Utc>> {
    fn from(m: OptMillis) -> Self {
        m.0
    }
}

/// Column codec: JSON stored as TEXT (`#[sqlx(try_from = "JsonText")]`).
#[derive(Debug, Clone)]
pub struct JsonText(serde_json::Value);

impl<DB: Database> Type<DB> for JsonText
where
    str: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for JsonText
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        let text = <&str as Decode<DB>>::decode(value)?;
        Ok(JsonText(serde_json::from_str(text)?))
    }
}

impl From<JsonText> for serde_json::Value {
    fn from(j: JsonText) -> Self {
        j.0
    }
}

impl TryFrom<JsonText> for Vec<String> {
    type Error = serde_json::Error;
    fn try_from(j: JsonText) -> std::result::Result<Self, Self::Error> {
        serde_json::from_value(j.0)
    }
}

impl TryFrom<JsonText> for Vec<u64> {
    type Error = serde_json::Error;
    fn try_from(j: JsonText) -> std::result::Result<Self, Self::Error> {
        serde_json::from_value(j.0)
    }
}

/// Column codec: nullable JSON stored as TEXT.
#[derive(Debug, Clone)]
pub struct OptJsonText(Option<serde_json::Value>);

impl<DB: Database> Type<DB> for OptJsonText
where
    str: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for OptJsonText
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        Ok(OptJsonText(
            <Option<JsonText> as Decode<DB>>::decode(value)?.map(|j| j.0),
        ))
    }
}

impl From<OptJsonText> for Option<serde_json::Value> {
    fn from(j: OptJsonText) -> Self {
        j.0
    }
}

impl TryFrom<OptJsonText> for Option<Vec<String>> {
    type Error = serde_json::Error;
    fn try_from(j: OptJsonText) -> std::result::Result<Self, Self::Error> {
        j.0.map(serde_json::from_value).transpose()
    }
}

// ===== ids =====

/// A run id: a UUID v7 (time ordered, so ids sort like creation times), stored as hyphenated
/// TEXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Uuid);

impl RunId {
    /// A new time-ordered id.
    pub fn new() -> RunId {
        RunId(Uuid::now_v7())
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Uuid::parse_str(s).map(RunId)
    }
}

impl<DB: Database> Type<DB> for RunId
where
    str: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for RunId
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        Ok(<&str as Decode<DB>>::decode(value)?.parse()?)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for RunId
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer,
    ) -> std::result::Result<IsNull, BoxDynError> {
        <String as Encode<'q, DB>>::encode(self.to_string(), buf)
    }
}

// ===== typed TEXT columns =====

/// A stored TEXT value that is not one of the enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct ParseEnumError {
    /// The column's meaning, e.g. "run state".
    pub what: &'static str,
    /// The text that did not match.
    pub value: String,
}

/// Declares an enum stored as TEXT: `as_str`, `Display`, `FromStr`, serde and sqlx codecs, all
/// from one list of `Variant = "text"` pairs so they cannot drift apart.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::store::ParseEnumError;
            fn from_str(s: &str) -> ::std::result::Result<Self, $crate::store::ParseEnumError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::store::ParseEnumError { what: $what, value: s.to_string() }),
                }
            }
        }

        impl<DB: ::sqlx::Database> ::sqlx::Type<DB> for $name
        where
            str: ::sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as ::sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as ::sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: ::sqlx::Database> ::sqlx::Decode<'r, DB> for $name
        where
            &'r str: ::sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> ::std::result::Result<Self, ::sqlx::error::BoxDynError> {
                Ok(<&str as ::sqlx::Decode<DB>>::decode(value)?.parse()?)
            }
        }

        impl<'q, DB: ::sqlx::Database> ::sqlx::Encode<'q, DB> for $name
        where
            &'q str: ::sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as ::sqlx::Database>::ArgumentBuffer,
            ) -> ::std::result::Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&'q str as ::sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }
    };
}

// The table-group modules come after `text_enum!` so they can use it.
pub mod downloads;
pub mod events;
pub mod jobs;
pub mod requests;
pub mod runs;
pub mod sessions;
pub mod steps;

text_enum! {
    /// The state of a job row.
    pub enum JobState ("job state") {
        /// The current version is valid and scheduled.
        Active = "active",
        /// The current version is invalid; the last valid version (if any) stays active.
        Invalid = "invalid",
        /// The job's file (or its document) was removed; no future runs.
        Removed = "removed",
    }
}

text_enum! {
    /// The state of a run (SPEC §5).
    pub enum RunState ("run state") {
        /// Waiting to be claimed.
        Queued = "queued",
        /// Claimed by a daemon holding the lease.
        Running = "running",
        /// Failed steps wait for their backoff; claimed again at `next_attempt_at`.
        WaitingRetry = "waiting_retry",
        Succeeded = "succeeded",
        SucceededWithWarnings = "succeeded_with_warnings",
        Failed = "failed",
        Cancelled = "cancelled",
        /// A step is `in_doubt`; nothing is re-sent until an operator decides.
        NeedsAttention = "needs_attention",
        /// History only: a fire time that was not run (daemon down, past `startingDeadline`).
        Missed = "missed",
        /// History only: a fire time skipped by `concurrencyPolicy: Forbid`.
        Skipped = "skipped",
    }
}

impl RunState {
    /// A final state: the run will never change again.
    /// `needs_attention` is not terminal: an operator's `resolve` can resume the run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded
                | RunState::SucceededWithWarnings
                | RunState::Failed
                | RunState::Cancelled
                | RunState::Missed
                | RunState::Skipped
        )
    }

    /// Work is pending or in progress (counts for `concurrencyPolicy`).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Queued | RunState::Running | RunState::WaitingRetry
        )
    }
}

text_enum! {
    /// Why a run was created.
    pub enum Trigger ("run trigger") {
        Schedule = "schedule",
        Manual = "manual",
        OneShot = "one_shot",
    }
}

text_enum! {
    /// The state of a step (SPEC §5).
    pub enum StepState ("step state") {
        Pending = "pending",
        /// Committed before a restore POST: the request may or may not have been sent.
        Submitting = "submitting",
        /// The restore POST was answered; `remote_operation_id` is set.
        Submitted = "submitted",
        Downloading = "downloading",
        Verifying = "verifying",
        Done = "done",
        Warning = "warning",
        Failed = "failed",
        Skipped = "skipped",
        /// The outcome of a restore POST is unknown; waits for an operator's decision.
        InDoubt = "in_doubt",
    }
}

impl StepState {
    /// The step is finished (`done`, `warning`, `failed`, `skipped`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Done | StepState::Warning | StepState::Failed | StepState::Skipped
        )
    }
}

text_enum! {
    /// The state of a VB365 restore session the daemon opened.
    pub enum SessionState ("restore session state") {
        Open = "open",
        /// A stop was requested but not confirmed yet.
        Stopping = "stopping",
        Stopped = "stopped",
        /// The server no longer knows the session (expired, server restarted).
        Lost = "lost",
    }
}

impl SessionState {
    /// Counts against `maxConcurrentSessions` and must still be stopped.
    pub fn is_open(self) -> bool {
        matches!(self, SessionState::Open | SessionState::Stopping)
    }
}

text_enum! {
    /// The state of a download.
    pub enum DownloadState ("download state") {
        Pending = "pending",
        Downloading = "downloading",
        Verifying = "verifying",
        Published = "published",
        Failed = "failed",
    }
}

text_enum! {
    /// The kind of an operator request.
    pub enum RequestKind ("request kind") {
        Run = "run",
        Cancel = "cancel",
        Resolve = "resolve",
    }
}

text_enum! {
    /// An operator's decision about an `in_doubt` step (`restorectl resolve`).
    pub enum Decision ("decision") {
        /// Send the restore again (the operator checked it was not executed).
        Resend = "resend",
        /// The restore happened; count the step as done.
        MarkDone = "mark_done",
        /// Give up on the step.
        MarkFailed = "mark_failed",
    }
}

text_enum! {
    /// How a step error is classified (SPEC §5, retries).
    pub enum ErrorClass ("error class") {
        Retryable = "retryable",
        Permanent = "permanent",
        Auth = "auth",
        SessionLost = "session_lost",
        /// The outcome of a request is unknown.
        Ambiguous = "ambiguous",
    }
}

text_enum! {
    /// The format of a published file.
    pub enum FileFormat ("file format") {
        Pst = "pst",
        Zip = "zip",
        Jsonl = "jsonl",
        Csv = "csv",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every enum value survives `as_str` → `FromStr`, and its serde form is the stored text.
    fn round_trip<T>(all: &[T])
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = ParseEnumError> + Serialize,
    {
        for v in all {
            let text = v.to_string();
            assert_eq!(text.parse::<T>().unwrap(), *v);
            assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(text));
        }
        let err = "no-such-value".parse::<T>().unwrap_err();
        assert_eq!(err.value, "no-such-value");
    }

    #[test]
    fn text_enums_round_trip() {
        round_trip(JobState::ALL);
        round_trip(RunState::ALL);
        round_trip(Trigger::ALL);
        round_trip(StepState::ALL);
        round_trip(SessionState::ALL);
        round_trip(DownloadState::ALL);
        round_trip(RequestKind::ALL);
        round_trip(Decision::ALL);
        round_trip(ErrorClass::ALL);
        round_trip(FileFormat::ALL);
        round_trip(EventKind::ALL);
        assert_eq!(
            RunState::SucceededWithWarnings.as_str(),
            "succeeded_with_warnings"
        );
        assert_eq!(Trigger::OneShot.as_str(), "one_shot");
        assert_eq!(
            "bogus".parse::<StepState>().unwrap_err().to_string(),
            "unknown step state `bogus`"
        );
    }

    #[test]
    fn run_state_classes() {
        let active: Vec<_> = RunState::ALL.iter().filter(|s| s.is_active()).collect();
        assert_eq!(
            active,
            [
                &RunState::Queued,
                &RunState::Running,
                &RunState::WaitingRetry
            ]
        );
        for s in RunState::ALL {
            assert!(!(s.is_active() && s.is_terminal()), "{s}");
        }
        assert!(!RunState::NeedsAttention.is_terminal() && !RunState::NeedsAttention.is_active());
        assert!(RunState::Missed.is_terminal() && RunState::Skipped.is_terminal());
        let finished: Vec<_> = StepState::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            finished,
            [
                &StepState::Done,
                &StepState::Warning,
                &StepState::Failed,
                &StepState::Skipped
            ]
        );
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            path_from_url("sqlite:///var/lib/restorectl/restorectl.db").unwrap(),
            Path::new("/var/lib/restorectl/restorectl.db")
        );
        assert_eq!(
            path_from_url("sqlite://state/r.db").unwrap(),
            Path::new("state/r.db")
        );
        for bad in [
            "postgres://h/db",
            "sqlite://",
            "sqlite://x.db?mode=ro",
            "/plain/path",
        ] {
            let err = path_from_url(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn run_ids_are_time_ordered_and_round_trip() {
        let a = RunId::new();
        let b = RunId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
        assert_eq!(a.to_string().len(), 36, "hyphenated");
        assert!("not-a-uuid".parse::<RunId>().is_err());
    }

    #[test]
    fn millis_round_trip() {
        let t = DateTime::from_timestamp_millis(1_772_366_400_123).unwrap();
        assert_eq!(from_millis(to_millis(t)), Some(t));
        assert_eq!(from_millis(i64::MAX), None);
        assert_eq!(duration_millis(Duration::from_secs(3)), 3000);
        assert_eq!(duration_millis(Duration::MAX), i64::MAX);
    }
}
