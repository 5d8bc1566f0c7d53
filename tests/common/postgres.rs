//! A PostgreSQL database of its own for each test, on the server this machine runs (or that
//! `.ci/postgres.sh` started): `$RESTORECTL_TEST_POSTGRES`, else
//! `postgres://postgres@127.0.0.1:5432/postgres` (trust authentication). Each test creates a
//! database with a random name and drops it when done, so tests run in parallel. No server is
//! a failure under `CI=true`, a skip with a message otherwise.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Environment variable with the URL of a database the tests may create databases from.
pub const URL_ENV: &str = "RESTORECTL_TEST_POSTGRES";
/// The server this machine and `.ci/postgres.sh` provide.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test, dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    /// `postgres://…/rc_test_…`: the URL restorectl connects to (no password: trust auth).
    pub url: String,
    pub name: String,
    admin: String,
}

/// The admin URL the tests use.
pub fn admin_url() -> String {
    std::env::var(URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

impl TestDatabase {
    /// Creates a fresh database, or `None` (after [`super::tool_missing`], which fails under
    /// CI) when no PostgreSQL server answers.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let admin = admin_url();
        let mut conn = match PgConnection::connect(&admin).await {
            Ok(conn) => conn,
            Err(e) => {
                super::tool_missing(&format!("a PostgreSQL server at {admin} ({e})"), test);
                return None;
            }
        };
        let name = format!("rc_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin).expect("admin URL");
        url.set_path(&name);
        Some(TestDatabase {
            url: url.to_string(),
            name,
            admin,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime: a thread of its own with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop_sql))
                        .execute(&mut conn)
                        .await;
                    conn.close().await.ok();
                }
            });
        })
        .join();
    }
}
