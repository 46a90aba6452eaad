//! Test support: a fresh, migrated database per test, and subscriptions that react
//! quickly ([`fast_subscription`]).
//!
//! With `DATABASE_URL` set, test databases are created on that server. Without it,
//! the first test of a process starts a private throwaway cluster under the system's
//! temporary directory (see [`crate::local_pg`]); the kernel stops it when the test
//! process exits. Each test gets its own database, cloned from a migrated template,
//! so tests run in parallel without seeing each other.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::sync::OnceCell;

use crate::local_pg::{create_database_if_missing, quote_ident, LocalPgOptions, LocalPostgres};

struct Server {
    admin: PgConnectOptions,
    _local: Option<LocalPostgres>,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A migrated database of its own for one test.
pub struct TestDatabase {
    pub name: String,
    pub pool: PgPool,
    /// Options for extra connections to this database (subscriptions want their own).
    pub connect: PgConnectOptions,
}

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                let admin = PgConnectOptions::from_str(&url)
                    .expect("DATABASE_URL is not a valid PostgreSQL URL");
                return Server {
                    admin,
                    _local: None,
                };
            }
            let local = tokio::task::spawn_blocking(|| {
                clean_stale_clusters();
                let dir = std::env::temp_dir().join(format!(
                    "aula-test-{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ));
                let mut options = LocalPgOptions::new(dir);
                options.database = "postgres".into();
                options.ephemeral = true;
                LocalPostgres::start(&options)
            })
            .await
            .expect("the cluster start-up thread panicked")
            .unwrap_or_else(|e| panic!("could not start a private PostgreSQL for tests: {e}"));
            Server {
                admin: local.connect_options().database("postgres"),
                _local: Some(local),
            }
        })
        .await
}

/// Removes the data directories of test clusters whose process is gone.
fn clean_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("aula-test-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl TestDatabase {
    /// Creates a fresh database with every migration applied.
    pub async fn new() -> TestDatabase {
        let server = server().await;
        let template = TEMPLATE
            .get_or_init(|| async {
                let name = format!("aula_template_{}", uuid::Uuid::new_v4().simple());
                create_database_if_missing(server.admin.clone(), &name, None)
                    .await
                    .expect("creating the template database");
                let pool = crate::db::pool(server.admin.clone().database(&name), 2)
                    .await
                    .expect("connecting to the template database");
                crate::db::migrate(&pool)
                    .await
                    .expect("migrating the template");
                pool.close().await;
                name
            })
            .await;
        let name = format!("aula_test_{}", uuid::Uuid::new_v4().simple());
        // CREATE DATABASE ... TEMPLATE fails if anyone is connected to the template;
        // nobody is after the pool above closed, but retry in case of a straggler.
        let mut attempt = 0;
        loop {
            match create_database_if_missing(server.admin.clone(), &name, Some(template)).await {
                Ok(()) => break,
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    tracing::debug!(%e, "template busy; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("creating test database {name}: {e}"),
            }
        }
        let connect = server.admin.clone().database(&name);
        let pool = crate::db::pool(connect.clone(), 20)
            .await
            .expect("connecting to the test database");
        TestDatabase {
            name,
            pool,
            connect,
        }
    }

    /// Options for a connection to the server's maintenance database.
    pub async fn admin_options() -> PgConnectOptions {
        server().await.admin.clone()
    }

    /// The one integer `sql` selects (a count, a sum, as `bigint`); panics naming the
    /// statement if it fails.
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// [`scalar`](Self::scalar) of a statement whose `$1` is `arg`, as text.
    pub async fn scalar_with(&self, sql: &str, arg: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(arg)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql} with {arg}: {e}"))
    }

    /// Drops this database (optional: the throwaway cluster goes away anyway).
    pub async fn drop_database(self) {
        self.pool.close().await;
        if let Ok(mut conn) = sqlx::ConnectOptions::connect(&server().await.admin).await {
            let _ = sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            ))
            .execute(&mut conn)
            .await;
        }
    }
}

/// Options of a subscription `name` that reacts quickly, for tests: it polls every
/// 100 ms, a standby takes over within 50 ms and retries back off to 200 ms at most.
pub fn fast_subscription(name: &str) -> crate::SubscriptionOptions {
    let mut options = crate::SubscriptionOptions::new(name);
    options.poll_interval = std::time::Duration::from_millis(100);
    options.standby_interval = std::time::Duration::from_millis(50);
    options.max_backoff = std::time::Duration::from_millis(200);
    options
}
