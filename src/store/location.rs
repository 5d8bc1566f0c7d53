//! Where the state database lives: a SQLite file (`sqlite://PATH`, the embedded default) or a
//! PostgreSQL database (`postgres://USER@HOST:PORT/DB?sslmode=…`, SPEC §10), parsed from the
//! config's `database` and completed with `databasePassword` and `databaseCaFile`.
//!
//! A password never travels inside the URL the operator writes: a URL that carries one is
//! refused (the config is shown in logs and `--help` output, a secret reference is not), and
//! the refusal does not repeat the URL. [`Location`]'s `Display` is safe to log: the SQLite path,
//! or the PostgreSQL URL without a password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use sqlx::any::AnyConnectOptions;
use url::Url;

use super::dialect::Backend;

/// Query parameters of a PostgreSQL URL that restorectl passes to the driver. Anything else is
/// refused, so a typo (`sslmod=`) is an error rather than a silently unencrypted connection.
const POSTGRES_PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "application_name",
    "connect_timeout",
    "options",
];

/// Characters escaped in the path of a `sqlite://` URL handed to the driver: the driver
/// percent-decodes the path and splits it at `?`, so `%`, `?` and `#` (and anything not
/// printable) in a file name must be escaped to reach the file system unchanged.
const SQLITE_PATH: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#').add(b' ');

/// Why a `database` URL cannot be used. Never contains the URL's password (nor the URL, when
/// it had one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Neither `sqlite://` nor `postgres://`/`postgresql://`.
    #[error(
        "`{url}` is not a database URL: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"
    )]
    Scheme { url: String },
    /// `sqlite://` without a path, or with query parameters.
    #[error("`{url}` is not a sqlite:// URL: write sqlite://PATH (no parameters)")]
    SqlitePath { url: String },
    /// A password in the URL (or a `password=` parameter).
    #[error(
        "the database URL contains a password: remove it from the URL and set \
         `databasePassword: {{ secret: NAME }}` (the URL is not repeated here)"
    )]
    PasswordInUrl,
    /// The PostgreSQL URL does not parse, or lacks a host or database name.
    #[error("`{url}` is not a usable postgres:// URL: {why}")]
    Postgres { url: String, why: String },
    /// A query parameter restorectl does not pass on.
    #[error(
        "`{param}` is not a supported parameter of a postgres:// URL (supported: {})",
        POSTGRES_PARAMS.join(", ")
    )]
    Param { param: String },
}

/// A parsed `database` location. Cheap to clone.
#[derive(Clone)]
pub enum Location {
    /// A SQLite file.
    Sqlite { path: PathBuf },
    /// A PostgreSQL database.
    Postgres(PostgresLocation),
}

/// A PostgreSQL database: the URL without a password, the password from a secret and an
/// optional CA file for `sslmode=verify-ca`/`verify-full`.
#[derive(Clone)]
pub struct PostgresLocation {
    url: Url,
    password: Option<SecretString>,
    ca_file: Option<PathBuf>,
}

impl Location {
    /// The SQLite file at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> Location {
        Location::Sqlite { path: path.into() }
    }

    /// Parses a `database` URL (`sqlite://PATH`, `postgres://…`, `postgresql://…`).
    ///
    /// # Errors
    ///
    /// [`UrlError`] naming what is wrong; a URL with a password is refused without being
    /// repeated.
    pub fn parse(url: &str) -> Result<Location, UrlError> {
        if let Some(rest) = url.strip_prefix("sqlite://") {
            if rest.is_empty() || rest.contains('?') {
                return Err(UrlError::SqlitePath {
                    url: url.to_string(),
                });
            }
            return Ok(Location::sqlite(rest));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PostgresLocation::parse(url).map(Location::Postgres);
        }
        Err(UrlError::Scheme {
            url: url.to_string(),
        })
    }

    /// Which dialect the location speaks.
    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite { .. } => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite file, `None` for PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite { path } => Some(path),
            Location::Postgres(_) => None,
        }
    }

    /// Sets the PostgreSQL password (from `databasePassword`); no effect on SQLite.
    #[must_use]
    pub fn with_password(mut self, password: SecretString) -> Location {
        if let Location::Postgres(pg) = &mut self {
            pg.password = Some(password);
        }
        self
    }

    /// Sets the CA file that verifies the PostgreSQL server (`databaseCaFile`); no effect on
    /// SQLite.
    #[must_use]
    pub fn with_ca_file(mut self, ca_file: PathBuf) -> Location {
        if let Location::Postgres(pg) = &mut self {
            pg.ca_file = Some(ca_file);
        }
        self
    }

    /// The driver's connect options. `sqlite_mode` is SQLite's `mode` parameter (`rwc`, `rw`,
    /// `ro`); PostgreSQL ignores it.
    pub(crate) fn connect_options(
        &self,
        sqlite_mode: &str,
    ) -> Result<AnyConnectOptions, sqlx::Error> {
        let url = match self {
            Location::Sqlite { path } => {
                let text = path.to_str().ok_or_else(|| {
                    sqlx::Error::Configuration(
                        format!("{}: path is not valid UTF-8", path.display()).into(),
                    )
                })?;
                format!(
                    "sqlite://{}?mode={sqlite_mode}",
                    utf8_percent_encode(text, SQLITE_PATH)
                )
            }
            Location::Postgres(pg) => pg.driver_url()?.to_string(),
        };
        AnyConnectOptions::from_str(&url)
    }
}

impl PostgresLocation {
    fn parse(text: &str) -> Result<PostgresLocation, UrlError> {
        let bad = |why: &str| UrlError::Postgres {
            url: text.to_string(),
            why: why.to_string(),
        };
        let url = Url::parse(text).map_err(|e| {
            // The URL is repeated in the error only when it cannot hold a password.
            if userinfo_has_password(text) {
                UrlError::PasswordInUrl
            } else {
                bad(&e.to_string())
            }
        })?;
        if url.password().is_some() {
            return Err(UrlError::PasswordInUrl);
        }
        for (key, _) in url.query_pairs() {
            if key == "password" {
                return Err(UrlError::PasswordInUrl);
            }
            if !POSTGRES_PARAMS.contains(&key.as_ref()) {
                return Err(UrlError::Param {
                    param: key.into_owned(),
                });
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host (write postgres://USER@HOST:PORT/DATABASE)"));
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err(bad(
                "no database name (write postgres://USER@HOST:PORT/DATABASE)",
            ));
        }
        Ok(PostgresLocation {
            url,
            password: None,
            ca_file: None,
        })
    }

    /// The URL the driver connects with: the password and the CA file added, and
    /// `application_name=restorectl` unless the operator set one.
    fn driver_url(&self) -> Result<Url, sqlx::Error> {
        let mut url = self.url.clone();
        if let Some(password) = &self.password {
            url.set_password(Some(password.expose_secret()))
                .map_err(|()| {
                    sqlx::Error::Configuration("cannot set the database password".into())
                })?;
        }
        let has = |name: &str| self.url.query_pairs().any(|(k, _)| k == name);
        {
            let mut query = url.query_pairs_mut();
            if let Some(ca) = &self.ca_file {
                query.append_pair("sslrootcert", &ca.to_string_lossy());
            }
            if !has("application_name") {
                query.append_pair("application_name", "restorectl");
            }
        }
        Ok(url)
    }
}

/// True when the authority of `text` (between `://` and the first `/`) has `user:password@`.
fn userinfo_has_password(text: &str) -> bool {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite { path } => write!(f, "{}", path.display()),
            // `url` never holds a password: `parse` refuses one, `driver_url` adds it to a copy.
            Location::Postgres(pg) => write!(f, "{}", pg.url),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        let l = Location::parse("sqlite:///var/lib/restorectl/restorectl.db").unwrap();
        assert_eq!(
            l.sqlite_path(),
            Some(Path::new("/var/lib/restorectl/restorectl.db"))
        );
        assert_eq!(l.backend(), Backend::Sqlite);
        for bad in [
            "sqlite://",
            "sqlite://x.db?mode=ro",
            "/plain/path",
            "mysql://h/db",
        ] {
            let err = Location::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn sqlite_paths_reach_the_driver_unchanged() {
        let l = Location::sqlite("/tmp/a dir/50%?#.db");
        let opts = l.connect_options("rwc").unwrap();
        let back = sqlx::sqlite::SqliteConnectOptions::try_from(&opts).unwrap();
        assert_eq!(back.get_filename(), Path::new("/tmp/a dir/50%?#.db"));
    }

    #[test]
    fn postgres_urls() {
        let l = Location::parse(
            "postgres://restorectl@db.contoso.local:5432/restorectl?sslmode=verify-full",
        )
        .unwrap();
        assert_eq!(l.backend(), Backend::Postgres);
        assert_eq!(
            l.to_string(),
            "postgres://restorectl@db.contoso.local:5432/restorectl?sslmode=verify-full"
        );
        let with = l
            .with_password(SecretString::from("s3cr:t@/x"))
            .with_ca_file(PathBuf::from("/etc/restorectl/db-ca.pem"));
        assert!(!with.to_string().contains("s3cr"), "{with}");
        assert!(!format!("{with:?}").contains("s3cr"));
        let Location::Postgres(pg) = &with else {
            unreachable!()
        };
        let url = pg.driver_url().unwrap();
        assert_eq!(
            percent_encoding::percent_decode_str(url.password().unwrap())
                .decode_utf8()
                .unwrap(),
            "s3cr:t@/x"
        );
        let query: Vec<_> = url.query_pairs().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            query,
            [
                "sslmode=verify-full",
                "sslrootcert=/etc/restorectl/db-ca.pem",
                "application_name=restorectl"
            ]
        );
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_repeating_it() {
        for url in [
            "postgres://restorectl:hunter2@db/restorectl",
            "postgresql://u:hunter2@db:5432/r?sslmode=require",
            "postgres://u@db/r?password=hunter2",
            "postgres://u:hunter2@[bad/r",
        ] {
            let err = Location::parse(url).unwrap_err();
            assert_eq!(err, UrlError::PasswordInUrl, "{url}");
            assert!(!err.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn unusable_postgres_urls_say_why() {
        let cases = [
            ("postgres:///restorectl", "no host"),
            ("postgres://u@db", "no database name"),
            (
                "postgres://u@db/r?sslmod=require",
                "`sslmod` is not a supported parameter",
            ),
        ];
        for (url, why) in cases {
            let err = Location::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
