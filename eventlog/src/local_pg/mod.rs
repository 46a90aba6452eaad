//! A private PostgreSQL server started from the installed server binaries, so that
//! `aula serve` and the test suite need no configuration on a fresh machine.
//!
//! The cluster lives in a data directory of our own, listens on a Unix socket inside
//! that directory only (no TCP port, so no port clash and no network exposure) and
//! trusts the local socket, which only the owner of the directory can reach.
//!
//! PostgreSQL refuses to run as root. When we are root (as CI is), the server runs as
//! the unprivileged `postgres` account, looked up in `/etc/passwd` at run time.
//!
//! **Invariant:** the server never outlives us. It is spawned by a dedicated thread
//! that waits for it, with `PR_SET_PDEATHSIG`, so if this process dies, even by
//! SIGKILL, the kernel sends the server SIGINT (fast shutdown). The thread lives
//! exactly as long as the child: the death signal fires on the *thread's* exit.

use std::fs;
use std::io;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The port number only names the socket file (`.s.PGSQL.5432`) inside our private
/// socket directory; no TCP listener is opened.
const SOCKET_PORT: u16 = 5432;
const SUPERUSER: &str = "aula";

mod host;
mod supervisor;

use host::*;
use supervisor::*;

/// Why the private server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found on PATH nor under \
         /usr/lib/postgresql/*/bin. Install the server package (Debian: `apt-get install \
         postgresql`) or set DATABASE_URL to use an existing server."
    )]
    BinariesNotFound,
    #[error(
        "AULA_PG_BIN={0} holds no `initdb` and `postgres`: point it at the directory of the \
         PostgreSQL server binaries (e.g. /usr/lib/postgresql/15/bin), or unset it to use \
         those on PATH or under /usr/lib/postgresql/*/bin"
    )]
    PgBinInvalid(PathBuf),
    #[error(
        "running as root, but there is no unprivileged `postgres` account to run the \
         server as (PostgreSQL refuses to run as root). Create one, run as another user, \
         or set DATABASE_URL."
    )]
    NoUnprivilegedAccount,
    #[error(
        "the data directory {0} is not reachable by the `postgres` account (a parent \
         directory is not world-searchable); set AULA_DATA_DIR to a directory such as \
         /var/tmp/aula"
    )]
    DataDirNotReachable(PathBuf),
    #[error("the socket path {0} is too long for a Unix socket; use a shorter AULA_DATA_DIR")]
    SocketPathTooLong(PathBuf),
    #[error("{step} failed: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("initdb failed ({status}); its output:\n{output}")]
    InitDb { status: String, output: String },
    #[error("the PostgreSQL server did not become ready; the end of {log}:\n{tail}")]
    NotReady { log: PathBuf, tail: String },
    #[error("could not create the database: {0}")]
    CreateDatabase(#[source] sqlx::Error),
}

fn io_step(step: &'static str) -> impl FnOnce(io::Error) -> LocalPgError {
    move |source| LocalPgError::Io { step, source }
}

/// Settings for a private cluster.
#[derive(Debug, Clone)]
pub struct LocalPgOptions {
    /// Where the cluster keeps its files (`pgdata/`, `run/`, `postgres.log`).
    pub data_dir: PathBuf,
    /// The database to create (if missing) and connect to.
    pub database: String,
    /// Throwaway clusters (tests, benchmarks of code paths) trade durability for speed:
    /// `fsync=off`, `synchronous_commit=off`. Never for data that must survive a crash.
    pub ephemeral: bool,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
    /// How many times in a row a server that died is restarted before we give up
    /// and report the failure (see [`LocalPostgres::failed`]). A server that stayed up
    /// for [`STABLE_AFTER`] starts the count again. A server that died of a full disk
    /// is tried again until space is freed, however often.
    pub max_restarts: u32,
    /// The pause before the first restart; it doubles per failed try, up to 10 s.
    pub restart_backoff: Duration,
}

impl LocalPgOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database: "aula".into(),
            ephemeral: false,
            settings: Vec::new(),
            max_restarts: 8,
            restart_backoff: Duration::from_millis(250),
        }
    }
}

/// A server that ran this long before dying counts as having come back: the count of
/// consecutive restarts starts again.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// A running private server. Call [`LocalPostgres::stop`] for a clean shutdown;
/// dropping it also stops the server (fast shutdown, without waiting).
///
/// The server is supervised: when it dies (killed, crashed, out of disk) it is started
/// again with backoff; when it cannot be brought back after
/// [`LocalPgOptions::max_restarts`] tries, [`LocalPostgres::failed`] resolves so that
/// the service can stop and exit with an error rather than answer errors forever.
#[derive(Debug)]
pub struct LocalPostgres {
    supervision: std::sync::Arc<Supervision>,
    failure: tokio::sync::watch::Receiver<Option<String>>,
    socket_dir: PathBuf,
    data_dir: PathBuf,
    database: String,
}

impl LocalPostgres {
    /// Starts (creating it on first use) the cluster in `options.data_dir` and makes
    /// sure `options.database` exists. Blocking: call it from `spawn_blocking` or
    /// before the runtime does anything latency-sensitive.
    pub fn start(options: &LocalPgOptions) -> Result<Self, LocalPgError> {
        let bin = find_binaries()?;
        tracing::info!(
            initdb = %bin.initdb.display(),
            postgres = %bin.postgres.display(),
            version = %server_version(&bin.postgres),
            "PostgreSQL server binaries"
        );
        let account = unprivileged_account()?;
        let data_dir = absolute(&options.data_dir)?;
        let pgdata = data_dir.join("pgdata");
        let socket_dir = data_dir.join("run");
        let log_path = data_dir.join("postgres.log");
        let socket_file = socket_dir.join(format!(".s.PGSQL.{SOCKET_PORT}"));
        // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
        if socket_file.as_os_str().len() > 107 {
            return Err(LocalPgError::SocketPathTooLong(socket_file));
        }

        fs::create_dir_all(&pgdata).map_err(io_step("creating the data directory"))?;
        fs::create_dir_all(&socket_dir).map_err(io_step("creating the socket directory"))?;
        if let Some(account) = &account {
            check_reachable(&data_dir)?;
            for dir in [&data_dir, &pgdata, &socket_dir] {
                chown(dir, Some(account.uid), Some(account.gid))
                    .map_err(io_step("handing the data directory to `postgres`"))?;
            }
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(io_step("opening postgres.log"))?;
            drop(log);
            chown(&log_path, Some(account.uid), Some(account.gid))
                .map_err(io_step("handing postgres.log to `postgres`"))?;
        }
        fs::set_permissions(&pgdata, fs::Permissions::from_mode(0o700))
            .map_err(io_step("restricting the data directory"))?;
        fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_step("restricting the socket directory"))?;

        if !pgdata.join("PG_VERSION").exists() {
            let mut initdb = Command::new(&bin.initdb);
            initdb
                .arg("-D")
                .arg(&pgdata)
                .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
                .stdin(Stdio::null());
            if options.ephemeral {
                initdb.arg("--no-sync");
            }
            as_account(&mut initdb, account.as_ref());
            let output = initdb.output().map_err(io_step("running initdb"))?;
            if !output.status.success() {
                return Err(LocalPgError::InitDb {
                    status: output.status.to_string(),
                    output: format!(
                        "{}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    ),
                });
            }
        }

        remove_stale_lock_files(&pgdata, &socket_dir)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_step("opening postgres.log"))?;
        let mut server = Command::new(&bin.postgres);
        server
            .arg("-D")
            .arg(&pgdata)
            .arg("-k")
            .arg(&socket_dir)
            .arg("-p")
            .arg(SOCKET_PORT.to_string())
            .args(["-c", "listen_addresses="])
            .args(["-c", "unix_socket_permissions=0700"])
            .args(["-c", "max_connections=200"])
            // A transaction left open by a crashed client must not hold back the
            // log readers (they wait for every older transaction) forever.
            .args(["-c", "idle_in_transaction_session_timeout=60s"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_step("opening postgres.log"))?)
            .stderr(log)
            // Our own process group: a terminal's Ctrl-C reaches only us, and we stop
            // the server after the service has drained.
            .process_group(0);
        if options.ephemeral {
            server.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        // Throwaway clusters (many at once in the tests) keep the defaults.
        let sized = if options.ephemeral {
            Vec::new()
        } else {
            sized_settings(&pgdata)
        };
        for (name, value) in sized.iter().chain(&options.settings) {
            server.arg("-c").arg(format!("{name}={value}"));
        }
        as_account(&mut server, account.as_ref());
        // SAFETY: prctl is async-signal-safe; the closure runs in the child between
        // fork and exec and touches nothing else. It runs after std's setuid, so the
        // credential change cannot clear the death signal.
        unsafe {
            server.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }

        let supervision = std::sync::Arc::new(Supervision::default());
        let (failure_tx, failure) = tokio::sync::watch::channel(None);
        let (started_tx, started_rx) = mpsc::channel();
        let supervisor = Supervisor {
            command: server,
            supervision: supervision.clone(),
            failure: failure_tx,
            pgdata: pgdata.clone(),
            socket_dir: socket_dir.clone(),
            log_path: log_path.clone(),
            max_restarts: options.max_restarts,
            backoff: options.restart_backoff,
        };
        std::thread::Builder::new()
            .name("postgres-supervisor".into())
            .spawn(move || supervisor.run(started_tx))
            .map_err(io_step("spawning the postgres supervisor thread"))?;
        started_rx
            .recv()
            .map_err(|_| LocalPgError::Io {
                step: "starting postgres",
                source: io::Error::other("the supervisor thread ended early"),
            })?
            .map_err(io_step("starting postgres"))?;

        let server = LocalPostgres {
            supervision,
            failure,
            socket_dir,
            data_dir,
            database: options.database.clone(),
        };
        server.wait_ready(&log_path)?;
        server.create_database()?;
        Ok(server)
    }

    /// Waits until the server answers. If our server exited because another one
    /// already runs on this data directory (another `aula` process), that one answers
    /// on the same socket: we use it and leave it alone (`owned = false`), and the
    /// supervisor stands by to start ours when it stops (`Supervisor::stand_by`).
    fn wait_ready(&self, log_path: &Path) -> Result<(), LocalPgError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_step("starting a runtime to probe postgres"))?;
        loop {
            let exited = self.supervision.lock().done;
            let options = self.connect_options().database("postgres");
            if runtime.block_on(options.connect()).is_ok() {
                // The server that answered is ours only if the data directory's lock
                // file names our child (written before it accepts connections): ours
                // may still be on its way out after losing the directory to another.
                let owner = postmaster_pid(&self.data_dir.join("pgdata"));
                let mut state = self.supervision.lock();
                if state.done || owner.is_none() || owner != state.pid {
                    tracing::info!(data_dir = %self.data_dir.display(), "a PostgreSQL server already runs on this data directory; using it");
                } else {
                    // Ours answers: from now on, a death is restarted.
                    state.armed = true;
                    state.owned = true;
                }
                return Ok(());
            }
            if exited || Instant::now() > deadline {
                return Err(LocalPgError::NotReady {
                    log: log_path.to_path_buf(),
                    tail: tail(log_path, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_database(&self) -> Result<(), LocalPgError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_step("starting a runtime to create the database"))?;
        runtime
            .block_on(create_database_if_missing(
                self.connect_options().database("postgres"),
                &self.database,
                None,
            ))
            .map_err(LocalPgError::CreateDatabase)
    }

    /// Connection options for the configured database.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(SOCKET_PORT)
            .username(SUPERUSER)
            .database(&self.database)
    }

    /// A `postgresql://` URL for humans (psql) and tools, and for a second `aula`
    /// process as its `DATABASE_URL`: the socket directory goes in the `host`
    /// parameter (percent-encoded), which libpq and sqlx both prefer to the URL's host
    /// part, and that part is `localhost` because sqlx refuses an empty one.
    pub fn url(&self) -> String {
        socket_url(&self.socket_dir, &self.database)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server process's pid (the current one: it changes when it is restarted).
    pub fn pid(&self) -> i32 {
        let state = self.supervision.lock();
        state.pid.unwrap_or(state.last_pid)
    }

    /// How many times the server was restarted after it died.
    pub fn restarts(&self) -> u32 {
        self.supervision.lock().restarts
    }

    /// False when another process's server was already running on this data
    /// directory and we only connected to it (then `stop` leaves it alone); true again
    /// once that one stopped and ours took over.
    pub fn owns_server(&self) -> bool {
        self.supervision.lock().owned
    }

    /// Resolves, with the reason, when the server died and could not be brought back
    /// (see [`LocalPgOptions::max_restarts`]); never when it is stopped on purpose.
    /// `aula serve` stops and exits non-zero then, so that a supervisor sees it.
    pub fn failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut failure = self.failure.clone();
        async move {
            let reason = match failure.wait_for(|f| f.is_some()).await {
                Ok(reason) => reason.clone(),
                Err(_) => None,
            };
            match reason {
                Some(reason) => reason,
                // The supervisor ended without failing (stopped on purpose).
                None => std::future::pending().await,
            }
        }
    }

    /// Fast shutdown (SIGINT: disconnect clients, checkpoint, exit) and wait for it.
    /// Falls back to an immediate shutdown after 30 seconds. True when a server of
    /// ours was running and has been stopped; false when the server was another
    /// process's (ours may have lost the race for the data directory after `start`
    /// already connected to the other one) or had already exited.
    pub fn stop(mut self) -> bool {
        self.shutdown(Duration::from_secs(30))
    }

    fn shutdown(&mut self, patience: Duration) -> bool {
        let supervision = &self.supervision;
        let mut state = supervision.lock();
        state.owned = false;
        if state.done {
            // Not ours (another process's server answered), or already stopped.
            return false;
        }
        // Ours, possibly never armed (`start` gave up waiting for it): stop it too.
        state.stopping = true;
        let running = state.pid;
        if let Some(pid) = running {
            // SAFETY: plain syscall on the pid of our own child, which the supervisor
            // has not reaped yet: it clears `pid` (under this lock) once it has.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        supervision.changed.notify_all();
        let (mut state, timeout) = supervision
            .changed
            .wait_timeout_while(state, patience, |s| !s.done)
            .unwrap_or_else(|p| p.into_inner());
        if timeout.timed_out() {
            if let Some(pid) = state.pid {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGQUIT) };
            }
            state = supervision
                .changed
                .wait_timeout_while(state, Duration::from_secs(5), |s| !s.done)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(state);
        running.is_some()
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.shutdown(Duration::from_secs(10));
    }
}

/// `CREATE DATABASE name [TEMPLATE template]` unless it exists. Identifiers are quoted.
pub async fn create_database_if_missing(
    admin: PgConnectOptions,
    name: &str,
    template: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut conn = admin.connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let mut sql = format!("CREATE DATABASE {}", quote_ident(name));
        if let Some(template) = template {
            sql.push_str(&format!(" TEMPLATE {}", quote_ident(template)));
        }
        match sqlx::raw_sql(&sql).execute(&mut conn).await {
            Ok(_) => {}
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    conn.close().await
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    #[test]
    fn the_printed_url_is_one_sqlx_accepts_for_the_socket() {
        let dir = Path::new("/var/tmp/aula data/run%x");
        let url = socket_url(dir, "aula");
        assert_eq!(
            url,
            "postgresql://aula@localhost/aula?host=/var/tmp/aula%20data/run%25x&port=5432"
        );
        let options = PgConnectOptions::from_str(&url).expect("sqlx accepts it");
        assert_eq!(options.get_socket(), Some(&dir.to_path_buf()));
        assert_eq!(options.get_port(), SOCKET_PORT);
        assert_eq!(options.get_username(), SUPERUSER);
        assert_eq!(options.get_database(), Some("aula"));
    }
}
