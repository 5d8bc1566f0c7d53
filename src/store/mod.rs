//! The state database (SPEC §5, §10): jobs and their versions, runs, steps, restore sessions,
//! downloads, published files, operator requests, the daemon instances and the append-only event
//! log, on SQLite (the embedded default) or PostgreSQL.
//!
//! All SQL of the project lives in this module, one file per table group:
//!
//! - `mod.rs` (this file): [`Store`] (open, pools, transactions), [`StoreError`], time helpers;
//! - [`location`]: the `database` URL ([`Location`]: a SQLite file or a PostgreSQL server);
//! - [`dialect`]: the few statements that differ between the backends ([`Backend`]);
//! - [`copy`]: a whole database copied into another (SQLite to PostgreSQL);
//! - `types.rs`: the typed state enums ([`RunState`], [`StepState`], …), [`RunId`] and the
//!   column codecs (times, flags, JSON);
//! - [`jobs`]: scanned job files, jobs and job versions, one at a time, and their reads;
//! - [`scan`]: a scan of the job directory applied in bulk (many files per transaction);
//! - [`next_fire`]: the scheduler's next-fire bookkeeping on job rows;
//! - [`runs`]: enqueueing (with the one-shot and schedule-slot uniqueness), claiming with a lease,
//!   state changes, cancellation;
//! - [`steps`]: a run's steps and the transitions of the at-most-once restore protocol;
//! - [`sessions`]: VB365 restore sessions the daemon opened;
//! - [`downloads`]: durable download progress and the published files (`exports`);
//! - [`search_progress`]: where a Search step's paging stands, for resuming after a crash;
//! - [`requests`]: operator requests and the daemon instance lock;
//! - [`replicas`]: several daemons on one database (registration, the leadership lease);
//! - [`events`]: the append-only history;
//! - [`history`]: run-history retention (pruning finished runs in small batches);
//! - [`notifications`]: the notification outbox, written with the state changes it reports;
//! - [`periodic`]: the list of the daemon's periodic statements (their plans are tested);
//! - [`stats`]: aggregates for the daemon's metrics and status line, on one read snapshot.
//!
//! # One store, two backends
//!
//! The store talks to both through sqlx's `Any` driver: one pool type, one set of statements.
//! Queries use `$N` placeholders, `ON CONFLICT … DO NOTHING/UPDATE`, `RETURNING`, `COALESCE`
//! and plain SQL; times are integer milliseconds, flags integers 0/1 (decoded through
//! [`Flag`]), JSON is text parsed in Rust, a nullable parameter tested for NULL is cast to its
//! type (`CAST($1 AS TEXT) IS NULL`). What differs is named in [`dialect`]. Each backend has its
//! migrations folder (`migrations/sqlite/`, `migrations/postgres/`) with the same versions.
//!
//! # Concurrency
//!
//! Write transactions are serialised on both backends, and every store function is written for
//! that (read, decide, write in one transaction). SQLite allows one writer at a time: every
//! write goes through a one-connection writer pool and starts with `BEGIN IMMEDIATE`, which
//! takes the write lock up front: a deferred transaction that read first and then tries to
//! write can fail at once with `SQLITE_BUSY` ("database is locked") when another connection
//! committed in between, and `busy_timeout` does not help there. With `BEGIN IMMEDIATE` a
//! second writer (another `Store`, another process) simply waits up to the busy timeout. Reads
//! go through a small read-only pool and never block writers (WAL). On PostgreSQL a write
//! transaction takes the store's advisory transaction lock first ([`dialect`]).
//!
//! Never `.await` anything but the store's own queries inside a transaction: a transaction
//! held across a download would stall every other write.
//!
//! # Time
//!
//! Every function that stamps a time takes `now` from the caller, so the scheduler's tests can
//! drive a fake clock through the whole store.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::MigrateError;
use sqlx::{Any, Executor, Transaction};

// `types` first: it defines `text_enum!`, which the table-group modules use.
#[macro_use]
mod types;
pub mod copy;
pub mod dialect;
pub mod downloads;
pub mod events;
pub mod history;
pub mod jobs;
pub mod location;
pub mod next_fire;
pub mod notifications;
pub mod periodic;
pub mod replicas;
pub mod requests;
pub mod runs;
pub mod scan;
pub mod search_progress;
pub mod sessions;
pub mod stats;
pub mod steps;

pub use copy::CopyReport;
pub use dialect::Backend;
pub use downloads::{Download, Export, NewDownload, NewExport};
pub use events::{Event, EventKind, NewEvent};
pub use history::{HistoryPolicy, PruneCursor, PruneReport};
pub use jobs::{
    FileChange, JobSummary, JobVersion, NewJobVersion, ScannedFile, StoredJob, StoredJobFile,
    VersionChange, VersionOutcome,
};
pub use location::{Location, UrlError};
pub use next_fire::{NextFire, ScheduleState};
pub use notifications::{Notification, NotifyEvent, Payload, Routing};
pub use replicas::Leadership;
pub use requests::{DaemonInstance, InstanceInfo, NewRequest, OperatorRequest};
pub use runs::{CancelOutcome, LeaseRenewal, NewRun, Run, RunFilter};
pub use scan::FileApply;
pub use search_progress::{SearchPage, SearchProgress};
pub use sessions::{NewSession, NewSessionIntent, RestoreSession, SessionIntent};
pub use stats::{FinishedRun, StoreStats};
pub use steps::{NewStep, RestoreCounts, Step, StepErrorRecord, StepFile};
pub use types::{
    Decision, DownloadState, ErrorClass, FileFormat, Flag, JobState, JsonText, Millis, OptJsonText,
    OptMillis, ParseEnumError, RequestKind, RunId, RunState, SessionState, StepState, Trigger,
};

/// How long a connection waits for the write lock before failing with "database is locked"
/// (SQLite), and for a connection from the pool (both backends).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in SQLite's read-only pool.
const READER_CONNECTIONS: u32 = 4;
/// Connections to a PostgreSQL server, shared by reads and writes (writes queue on the store's
/// advisory lock, not on the pool).
const POSTGRES_CONNECTIONS: u32 = 8;

/// Errors of the state database. Each names what it was about (a file or server, a run, a
/// step, an operation) so a log line or CLI message is actionable on its own. A PostgreSQL
/// location is named by its URL, which never holds the password.
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
    /// The database could not be opened or reached (permissions, not a database, a server
    /// down, a refused password, …).
    #[error("{place}: cannot open the state database")]
    Open {
        place: String,
        #[source]
        source: sqlx::Error,
    },
    /// A read-only open found no database (no SQLite file, or a PostgreSQL database without
    /// restorectl's tables).
    #[error(
        "{place}: no state database: the daemon has not run yet (start `restorectl daemon`, or \
         check `stateDir`/`database` in the config)"
    )]
    Missing { place: String },
    /// The embedded migrations could not be applied.
    #[error("{place}: cannot apply the database migrations")]
    Migrate {
        place: String,
        #[source]
        source: MigrateError,
    },
    /// The database was migrated by a newer restorectl than this one.
    #[error(
        "{place}: the database schema (version {found}) is newer than this restorectl knows \
         (up to {known}): run a restorectl at least as new as the one that migrated it (upgrade \
         this host's binary before starting it)"
    )]
    SchemaTooNew {
        place: String,
        found: i64,
        known: i64,
    },
    /// A read-only open found a schema this binary does not know (older or newer).
    #[error(
        "{place}: database schema version {} does not match this restorectl (expects {expected}); \
         start the matching `restorectl daemon` once to migrate it",
        found.map_or_else(|| "none".to_string(), |v| v.to_string())
    )]
    SchemaMismatch {
        place: String,
        found: Option<i64>,
        expected: i64,
    },
    /// `database:` is not a usable URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A write was attempted through a store opened with [`Store::open_read_only`].
    #[error("{place}: the state database was opened read-only ({op})")]
    ReadOnly { place: String, op: &'static str },
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

    /// True when the database could not be reached or answered with a connection-level
    /// failure (a PostgreSQL server restarting, a network cut, a pool timeout): the operation
    /// may succeed later, unlike a refused statement.
    pub fn is_unavailable(&self) -> bool {
        let source = match self {
            StoreError::Open { source, .. } | StoreError::Database { source, .. } => source,
            _ => return false,
        };
        matches!(
            source,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        )
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
}

/// Handle on the state database. Cheap to clone (an `Arc` inside); share one per process.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    location: Location,
    /// SQLite: one connection, because SQLite has one writer at a time and funnelling writes
    /// through one connection means they queue in the pool instead of fighting over the file
    /// lock. PostgreSQL: the one pool of the store. `None` for a store opened read-only.
    writer: Option<AnyPool>,
    /// SQLite: a small read-only pool that never blocks the writer (WAL). PostgreSQL: the same
    /// pool as the writer.
    reader: AnyPool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.inner.location)
            .field("read_only", &self.inner.writer.is_none())
            .finish()
    }
}

/// The write transaction type of the store.
pub(crate) type WriteTx = Transaction<'static, Any>;
/// A read transaction on one snapshot ([`Store::begin_read`]).
pub(crate) type ReadTx = Transaction<'static, Any>;

/// How [`Store::connect`] opens a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read and write, creating the SQLite file (and its directory) if needed, applying
    /// pending migrations: the daemon.
    Create,
    /// Read and write an existing database, applying pending migrations: operator commands
    /// that write requests, which must not create a database no daemon uses.
    Existing,
    /// Read only, refusing a schema this binary does not expect: history commands.
    ReadOnly,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` for reading and writing: creates
    /// the parent directory (0700) and the file (0600), enables WAL, `synchronous=NORMAL`, a 10 s
    /// busy timeout and foreign keys, and applies the embedded migrations (a no-op when up to
    /// date).
    pub async fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::connect(&Location::sqlite(path.as_ref()), OpenMode::Create).await
    }

    /// Like [`Store::open`] for a `database` URL without a password (`sqlite://PATH`, or a
    /// PostgreSQL server with trust or certificate authentication).
    pub async fn open_url(url: &str) -> Result<Store> {
        Store::connect(&Location::parse(url)?, OpenMode::Create).await
    }

    /// [`OpenMode::Existing`] on a SQLite file.
    pub async fn open_existing(path: impl AsRef<Path>) -> Result<Store> {
        Store::connect(&Location::sqlite(path.as_ref()), OpenMode::Existing).await
    }

    /// [`OpenMode::ReadOnly`] on a SQLite file.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Store> {
        Store::connect(&Location::sqlite(path.as_ref()), OpenMode::ReadOnly).await
    }

    /// Opens the database at `location`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Missing`] when `mode` is not [`OpenMode::Create`] and there is no
    /// database (no SQLite file, no restorectl tables in the PostgreSQL database);
    /// [`StoreError::SchemaTooNew`] when a newer restorectl migrated it;
    /// [`StoreError::SchemaMismatch`] for a read-only open of another schema version;
    /// [`StoreError::Open`] when it cannot be reached.
    pub async fn connect(location: &Location, mode: OpenMode) -> Result<Store> {
        // Registers the SQLite and PostgreSQL drivers with the `Any` driver (once per process).
        sqlx::any::install_default_drivers();
        match location {
            Location::Sqlite { path } => open_sqlite(location, path, mode).await,
            Location::Postgres(_) => open_postgres(location, mode).await,
        }
    }

    /// Where the database is (safe to log: no password).
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// The backend behind the store.
    pub fn backend(&self) -> Backend {
        self.inner.location.backend()
    }

    /// True for a store opened with [`OpenMode::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.inner.writer.is_none()
    }

    /// The highest migration version applied to the database (`None` before the first).
    pub async fn schema_version(&self) -> Result<Option<i64>> {
        schema_version_of(self.reader(), self.backend()).await
    }

    /// Checks the database answers a query (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(self.reader())
            .await
            .op("ping")?;
        Ok(())
    }

    /// Closes the pools, waiting for connections to finish (SQLite checkpoints the WAL when
    /// this was the last connection).
    pub async fn close(&self) {
        if let Some(writer) = &self.inner.writer {
            writer.close().await;
        }
        self.inner.reader.close().await;
    }

    /// The pool for reads.
    pub(crate) fn reader(&self) -> &AnyPool {
        &self.inner.reader
    }

    /// Starts a read transaction that sees one snapshot of the database for all its queries
    /// (SQLite's deferred transaction; `REPEATABLE READ` on PostgreSQL, whose default gives each
    /// statement its own snapshot).
    pub(crate) async fn begin_read(&self, op: &'static str) -> Result<ReadTx> {
        self.reader()
            .begin_with(self.backend().begin_read())
            .await
            .op(op)
    }

    /// Starts a write transaction: `BEGIN IMMEDIATE` on SQLite (see the module doc for why),
    /// `BEGIN` and the store's write lock on PostgreSQL ([`dialect`]).
    pub(crate) async fn begin_write(&self, op: &'static str) -> Result<WriteTx> {
        let writer = self
            .inner
            .writer
            .as_ref()
            .ok_or_else(|| StoreError::ReadOnly {
                place: self.inner.location.to_string(),
                op,
            })?;
        let backend = self.backend();
        // Counted by `bench/mass-export.sh` (RUST_LOG=restorectl::store::tx=trace).
        tracing::trace!(target: "restorectl::store::tx", op, "write transaction");
        let mut tx = writer.begin_with(backend.begin_write()).await.op(op)?;
        if let Some((lock, key)) = backend.write_lock() {
            sqlx::query(lock).bind(key).execute(&mut *tx).await.op(op)?;
        }
        Ok(tx)
    }
}

/// The schema version this binary's embedded migrations produce (the same on both backends).
pub fn expected_schema_version() -> i64 {
    Backend::Sqlite
        .migrator()
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The file path of a `sqlite://PATH` URL.
pub fn path_from_url(url: &str) -> Result<PathBuf> {
    match Location::parse(url)? {
        Location::Sqlite { path } => Ok(path),
        Location::Postgres(_) => Err(UrlError::Scheme {
            url: url.to_string(),
        }
        .into()),
    }
}

async fn open_sqlite(location: &Location, path: &Path, mode: OpenMode) -> Result<Store> {
    let place = location.to_string();
    if mode == OpenMode::Create {
        create_private_file(path)?;
    } else if !path.exists() {
        return Err(StoreError::Missing { place });
    }
    let writer = if mode == OpenMode::ReadOnly {
        None
    } else {
        // SQLite has no advisory lock of its own, and sqlx's migrator checks what is applied
        // before applying it: two processes opening a new database at once (the daemon's first
        // start and an operator command, say) would both apply migration 1, and switching a new
        // file to WAL while another connection writes it fails with "database is locked". An
        // exclusive flock on the database file (independent of SQLite's own fcntl locks) held
        // from the first connection to the end of the migrations serialises them; the second
        // finds everything applied.
        let lock = migration_lock(path).await?;
        let writer = pool(location, "rwc", true, 1).await?;
        let migrated = migrate(&writer, Backend::Sqlite, &place).await;
        drop(lock);
        migrated?;
        Some(writer)
    };
    // No journal_mode on the readers: a read-only connection cannot change it, and WAL is a
    // property of the file once the writer has set it.
    let reader = pool(location, "ro", false, READER_CONNECTIONS).await?;
    finish_open(location.clone(), writer, reader, mode).await
}

async fn open_postgres(location: &Location, mode: OpenMode) -> Result<Store> {
    let place = location.to_string();
    let pool = pool(location, "", true, POSTGRES_CONNECTIONS).await?;
    let found = schema_version_of(&pool, Backend::Postgres).await?;
    if mode != OpenMode::Create && found.is_none() {
        pool.close().await;
        return Err(StoreError::Missing { place });
    }
    let writer = if mode == OpenMode::ReadOnly {
        None
    } else {
        // sqlx's PostgreSQL migrator holds a session advisory lock while it applies, so two
        // replicas starting together apply each migration once.
        migrate(&pool, Backend::Postgres, &place).await?;
        Some(pool.clone())
    };
    finish_open(location.clone(), writer, pool, mode).await
}

/// Builds the store; a read-only open checks the schema is the one this binary expects.
async fn finish_open(
    location: Location,
    writer: Option<AnyPool>,
    reader: AnyPool,
    mode: OpenMode,
) -> Result<Store> {
    let store = Store {
        inner: Arc::new(Inner {
            location,
            writer,
            reader,
        }),
    };
    if mode == OpenMode::ReadOnly {
        let found = store.schema_version().await?;
        let expected = expected_schema_version();
        if found != Some(expected) {
            let place = store.location().to_string();
            store.close().await;
            return Err(StoreError::SchemaMismatch {
                place,
                found,
                expected,
            });
        }
    }
    Ok(store)
}

/// A pool on `location` whose connections run the backend's set-up statements.
async fn pool(
    location: &Location,
    sqlite_mode: &str,
    writer: bool,
    connections: u32,
) -> Result<AnyPool> {
    let open_err = |source| StoreError::Open {
        place: location.to_string(),
        source,
    };
    let options: AnyConnectOptions = location.connect_options(sqlite_mode).map_err(open_err)?;
    let setup = location
        .backend()
        .connection_setup(writer, BUSY_TIMEOUT.as_millis());
    let setup = Arc::new(setup);
    AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(BUSY_TIMEOUT)
        .after_connect(move |conn, _meta| {
            let setup = Arc::clone(&setup);
            Box::pin(async move {
                for statement in setup.iter() {
                    conn.execute(sqlx::AssertSqlSafe(statement.clone())).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(open_err)
}

/// Applies the backend's pending migrations; a database migrated by a newer binary is refused.
async fn migrate(pool: &AnyPool, backend: Backend, place: &str) -> Result<()> {
    match backend.migrator().run(pool).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(found)) => Err(StoreError::SchemaTooNew {
            place: place.to_string(),
            found: schema_version_of(pool, backend)
                .await
                .ok()
                .flatten()
                .unwrap_or(found),
            known: expected_schema_version(),
        }),
        Err(source) => Err(StoreError::Migrate {
            place: place.to_string(),
            source,
        }),
    }
}

async fn schema_version_of(pool: &AnyPool, backend: Backend) -> Result<Option<i64>> {
    let table: Option<String> = sqlx::query_scalar(backend.migrations_table_probe())
        .fetch_optional(pool)
        .await
        .op("schema_version")?;
    if table.is_none() {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
        .fetch_one(pool)
        .await
        .op("schema_version")
}

/// Holds an exclusive `flock` on the database file until dropped (the file's descriptor closes
/// with it). Waits for another process's migration to finish.
async fn migration_lock(path: &Path) -> Result<std::fs::File> {
    let owned = path.to_path_buf();
    let locked = tokio::task::spawn_blocking(move || -> io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new().read(true).open(&owned)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(file)
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)));
    locked.map_err(|e| StoreError::Open {
        place: path.display().to_string(),
        source: sqlx::Error::Io(e),
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
        crate::private_dir::create_private_dir(parent).map_err(create_err)?;
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

/// Longest stored duration: 10,000 years in milliseconds. Stored durations are added to
/// instants (`deadline_at = now + timeout_ms` in SQL, lease expiries in Rust), and the sum must
/// stay a valid INTEGER and a valid chrono instant; `runTimeout: 18446744073709551615s` is
/// accepted by the job parser and once made every claim of its run fail.
pub(crate) const MAX_DURATION_MS: i64 = 10_000 * 365 * 86_400 * 1_000;

/// A duration in whole milliseconds, saturating at [`MAX_DURATION_MS`].
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).map_or(MAX_DURATION_MS, |ms| ms.min(MAX_DURATION_MS))
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

#[cfg(test)]
mod tests {
    use std::str::FromStr;

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
        assert_eq!(duration_millis(Duration::MAX), MAX_DURATION_MS);
        assert_eq!(
            duration_millis(Duration::from_secs(u64::MAX)),
            MAX_DURATION_MS
        );
        // Any instant chrono can represent today plus the longest duration is still one.
        let far = to_millis(Utc::now()) + MAX_DURATION_MS;
        assert!(from_millis(far).is_some());
    }
}
