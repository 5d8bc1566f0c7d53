//! The few things that differ between the two backends of the store, named in one place.
//!
//! Every other statement of the store is written once and runs on both: `$N` placeholders,
//! times as integer milliseconds, enums as text, flags as integers 0/1 (read through
//! [`Flag`](super::Flag)), JSON as text, `ON CONFLICT`, `RETURNING`, `COALESCE`. What differs:
//!
//! | what | SQLite | PostgreSQL |
//! |---|---|---|
//! | migrations | `migrations/sqlite/` | `migrations/postgres/` (same versions) |
//! | a write transaction | `BEGIN IMMEDIATE` (the file's write lock up front) | `BEGIN`, then the store's transaction-scoped advisory lock |
//! | a read on one snapshot | `BEGIN` (deferred; WAL keeps the snapshot) | `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY` |
//! | "does the schema exist" | `sqlite_master` | `to_regclass` |
//! | rows from a JSON array (bulk writes) | `json_each($N) AS r` | `jsonb_array_elements(CAST($N AS jsonb)) WITH ORDINALITY AS r(value, key)` |
//! | copying a database (`migrate-state`) | `hex()`/`unhex()` for BLOBs | `encode`/`decode`, identity sequences moved past the copied ids |
//! | connection set-up | pragmas (WAL, `synchronous`, busy timeout, foreign keys) | `idle_in_transaction_session_timeout` |
//!
//! # Writers are serialised on both backends
//!
//! SQLite has one writer at a time, and the store's transactions are written for that: a
//! transaction reads a row, decides, and writes (a claim checks the lease it takes over, a step
//! transition checks the state it leaves). On PostgreSQL every write transaction first takes
//! one transaction-scoped advisory lock (`pg_advisory_xact_lock`), released by its commit or
//! rollback, so the same read-decide-write logic holds unchanged across processes and hosts
//! instead of being rewritten per statement with row locks. Reads take no lock. Write
//! transactions are short (the store never awaits anything but its own queries inside one); a
//! session that dies inside one is ended by the server (`idle_in_transaction_session_timeout`),
//! which releases the lock.

use sqlx::AnyConnection;
use sqlx::migrate::Migrator;

/// The advisory lock key of the store's write transactions ("restorec" in ASCII).
const WRITE_LOCK_KEY: i64 = 0x7265_7374_6f72_6563;

/// How long PostgreSQL keeps a session that sits idle inside a transaction (a process frozen or
/// cut off mid-transaction) before ending it and releasing its locks.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "30s";

/// The migrations of each backend, embedded at compile time (`build.rs` makes cargo notice a
/// new file). Both folders hold the same versions.
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The database behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// An embedded SQLite file (single instance).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend's name as shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The backend a connection talks to.
    pub(crate) fn of(conn: &AnyConnection) -> Backend {
        if conn.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The backend's migrations.
    pub(crate) fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        }
    }

    /// The statement that begins a write transaction.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// The statement that begins a read transaction on one snapshot.
    pub(crate) fn begin_read(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }

    /// The statement run first in a write transaction (with [`WRITE_LOCK_KEY`] bound as `$1`),
    /// if the backend needs one.
    pub(crate) fn write_lock(self) -> Option<(&'static str, i64)> {
        match self {
            Backend::Sqlite => None,
            // `pg_advisory_xact_lock` returns `void`, which the driver cannot decode: count it.
            Backend::Postgres => Some((
                "SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock($1)) AS l",
                WRITE_LOCK_KEY,
            )),
        }
    }

    /// A query answering one row with a non-NULL text when the migrations table exists.
    pub(crate) fn migrations_table_probe(self) -> &'static str {
        match self {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT CAST(to_regclass('_sqlx_migrations') AS TEXT) AS name \
                 WHERE to_regclass('_sqlx_migrations') IS NOT NULL"
            }
        }
    }

    /// A BLOB column as hex text (NULL stays NULL), for [`super::copy`].
    pub(crate) fn blob_as_hex(self, column: &str) -> String {
        match self {
            Backend::Sqlite => {
                format!("CASE WHEN {column} IS NULL THEN NULL ELSE hex({column}) END")
            }
            Backend::Postgres => format!("encode({column}, 'hex')"),
        }
    }

    /// Hex text (a bound parameter) as a BLOB value, for [`super::copy`].
    pub(crate) fn hex_as_blob(self, param: &str) -> String {
        match self {
            Backend::Sqlite => format!("unhex({param})"),
            Backend::Postgres => format!("decode({param}, 'hex')"),
        }
    }

    /// After rows were copied with their ids, the statement that makes the table's generated
    /// ids continue after them (SQLite continues after the largest id by itself).
    pub(crate) fn continue_ids_after_copy(self, table: &str) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            )),
        }
    }

    /// Statements run on every new connection. `writer` is true for the SQLite writer, which
    /// sets the journal mode.
    pub(crate) fn connection_setup(self, writer: bool, busy_timeout_ms: u128) -> Vec<String> {
        match self {
            Backend::Sqlite => {
                let mut setup = vec![
                    format!("PRAGMA busy_timeout = {busy_timeout_ms}"),
                    "PRAGMA foreign_keys = ON".to_string(),
                    "PRAGMA synchronous = NORMAL".to_string(),
                ];
                if writer {
                    setup.insert(0, "PRAGMA journal_mode = WAL".to_string());
                }
                setup
            }
            Backend::Postgres => vec![format!(
                "SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'"
            )],
        }
    }
}

/// A statement that reads its rows from a JSON array of arrays bound as one text parameter
/// (`r.value ->> 0`, `r.value ->> 1`, … in array order `r.key`), in the text of each backend.
/// Integer fields must be read with `CAST(r.value ->> N AS BIGINT)`: PostgreSQL's `->>` gives
/// text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonRows {
    pub(crate) sqlite: &'static str,
    pub(crate) postgres: &'static str,
}

impl JsonRows {
    /// The statement for `backend`.
    pub(crate) fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }
}

/// Builds a [`JsonRows`] at compile time: `json_rows!("SELECT … r.value ->> 0 …", "$2", "ORDER
/// BY r.key")` puts the backend's JSON row source named `r` between the two parts.
macro_rules! json_rows {
    ($before:literal, $param:literal, $after:literal) => {
        $crate::store::dialect::JsonRows {
            sqlite: concat!($before, " FROM json_each(", $param, ") AS r ", $after),
            postgres: concat!(
                $before,
                " FROM jsonb_array_elements(CAST(",
                $param,
                " AS jsonb)) WITH ORDINALITY AS r(value, key) ",
                $after
            ),
        }
    };
}
pub(crate) use json_rows;

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration added to one backend's folder and not the other would give the two
    /// backends different schemas under the same version number.
    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let versions = |b: Backend| -> Vec<(i64, String)> {
            b.migrator()
                .iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect()
        };
        assert_eq!(versions(Backend::Sqlite), versions(Backend::Postgres));
        assert!(!versions(Backend::Sqlite).is_empty());
    }

    #[test]
    fn json_rows_put_each_backends_row_source_between_the_parts() {
        const ROWS: JsonRows = json_rows!("SELECT r.value ->> 0", "$1", "ORDER BY r.key");
        assert_eq!(
            ROWS.sql(Backend::Sqlite),
            "SELECT r.value ->> 0 FROM json_each($1) AS r ORDER BY r.key"
        );
        assert_eq!(
            ROWS.sql(Backend::Postgres),
            "SELECT r.value ->> 0 FROM jsonb_array_elements(CAST($1 AS jsonb)) \
             WITH ORDINALITY AS r(value, key) ORDER BY r.key"
        );
    }
}
