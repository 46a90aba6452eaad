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
}

impl LocalPgOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database: "aula".into(),
            ephemeral: false,
            settings: Vec::new(),
        }
    }
}

/// A running private server. Call [`LocalPostgres::stop`] for a clean shutdown;
/// dropping it also stops the server (fast shutdown, without waiting).
#[derive(Debug)]
pub struct LocalPostgres {
    pid: i32,
    // Fires when the server process has exited (a Mutex only to make us Sync).
    exited: std::sync::Mutex<Option<mpsc::Receiver<()>>>,
    socket_dir: PathBuf,
    data_dir: PathBuf,
    database: String,
}

struct Account {
    uid: u32,
    gid: u32,
}

impl LocalPostgres {
    /// Starts (creating it on first use) the cluster in `options.data_dir` and makes
    /// sure `options.database` exists. Blocking: call it from `spawn_blocking` or
    /// before the runtime does anything latency-sensitive.
    pub fn start(options: &LocalPgOptions) -> Result<Self, LocalPgError> {
        let bin = find_binaries()?;
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
        for (name, value) in &options.settings {
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

        let (started_tx, started_rx) = mpsc::channel();
        let (exited_tx, exited_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-waiter".into())
            .spawn(move || match server.spawn() {
                Ok(mut child) => {
                    let _ = started_tx.send(Ok(child.id() as i32));
                    let _ = child.wait();
                    let _ = exited_tx.send(());
                }
                Err(error) => {
                    let _ = started_tx.send(Err(error));
                }
            })
            .map_err(io_step("spawning the postgres waiter thread"))?;
        let pid = started_rx
            .recv()
            .map_err(|_| LocalPgError::Io {
                step: "starting postgres",
                source: io::Error::other("the waiter thread ended early"),
            })?
            .map_err(io_step("starting postgres"))?;

        let mut server = LocalPostgres {
            pid,
            exited: std::sync::Mutex::new(Some(exited_rx)),
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
    /// on the same socket: we use it and leave it alone (`owned = false`).
    fn wait_ready(&mut self, log_path: &Path) -> Result<(), LocalPgError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_step("starting a runtime to probe postgres"))?;
        loop {
            let exited = self.has_exited();
            let options = self.connect_options().database("postgres");
            if runtime.block_on(options.connect()).is_ok() {
                if exited {
                    tracing::info!(data_dir = %self.data_dir.display(), "a PostgreSQL server already runs on this data directory; using it");
                    self.exited.lock().unwrap_or_else(|p| p.into_inner()).take();
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

    fn has_exited(&self) -> bool {
        let guard = self.exited.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .is_none_or(|rx| !matches!(rx.try_recv(), Err(mpsc::TryRecvError::Empty)))
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

    /// A `postgres://` URL for humans (psql) and tools.
    pub fn url(&self) -> String {
        format!(
            "postgresql://{SUPERUSER}@/{}?host={}&port={SOCKET_PORT}",
            self.database,
            self.socket_dir.display()
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// False when another process's server was already running on this data
    /// directory and we only connected to it (then `stop` leaves it alone).
    pub fn owns_server(&self) -> bool {
        self.exited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
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
        let taken = self.exited.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(exited) = taken else {
            // Not ours (another process's server) or already stopped.
            return false;
        };
        if !matches!(exited.try_recv(), Err(mpsc::TryRecvError::Empty)) {
            // Already exited and reaped: its pid may belong to someone else now.
            return false;
        }
        // SAFETY: plain syscall on the pid of our own child, which the waiter thread
        // has not reaped yet unless `exited` already fired.
        unsafe { libc::kill(self.pid, libc::SIGINT) };
        if exited.recv_timeout(patience).is_err() {
            unsafe { libc::kill(self.pid, libc::SIGQUIT) };
            let _ = exited.recv_timeout(Duration::from_secs(5));
        }
        true
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

struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

/// Removes a `postmaster.pid` (and the socket's lock file) left behind by a server
/// that is gone: after a host crash or a killed container the file stays, and when its
/// pid now belongs to some other live process PostgreSQL refuses to start ("lock file
/// already exists") until someone deletes it by hand. A file whose pid is a running
/// `postgres` on this very data directory is left alone (that server answers on our
/// socket and [`LocalPostgres::wait_ready`] uses it).
fn remove_stale_lock_files(pgdata: &Path, socket_dir: &Path) -> Result<(), LocalPgError> {
    let pid_file = pgdata.join("postmaster.pid");
    let Ok(contents) = fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let pid: Option<u32> = contents.lines().next().and_then(|l| l.trim().parse().ok());
    let live_server = pid.is_some_and(|pid| {
        fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first()
                .is_some_and(|program| program.ends_with("postgres"))
                && args.iter().any(|a| Path::new(a) == pgdata)
        })
    });
    if live_server {
        return Ok(());
    }
    tracing::warn!(file = %pid_file.display(), ?pid, "removing a stale postmaster.pid (its server is gone)");
    fs::remove_file(&pid_file).map_err(io_step("removing a stale postmaster.pid"))?;
    let socket_lock = socket_dir.join(format!(".s.PGSQL.{SOCKET_PORT}.lock"));
    match fs::remove_file(&socket_lock) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(io_step("removing a stale socket lock file")(error))
        }
        _ => Ok(()),
    }
}

fn find_binaries() -> Result<Binaries, LocalPgError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("AULA_PG_BIN") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    // Debian installs the server outside PATH; prefer the newest major version.
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .map(|dir| Binaries {
            initdb: dir.join("initdb"),
            postgres: dir.join("postgres"),
        })
        .ok_or(LocalPgError::BinariesNotFound)
}

/// `None` when we are not root: the server runs as us.
fn unprivileged_account() -> Result<Option<Account>, LocalPgError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_step("reading /etc/passwd"))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == "postgres")
        .and_then(|fields| {
            Some(Account {
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
            })
        })
        .map(Some)
        .ok_or(LocalPgError::NoUnprivilegedAccount)
}

fn as_account(command: &mut Command, account: Option<&Account>) {
    if let Some(account) = account {
        command.uid(account.uid).gid(account.gid);
        // Keep HOME/USER from pointing at root's, which initdb may try to read.
        command.env("HOME", "/tmp").env("USER", "postgres");
        command.env_remove("PGDATA");
    }
}

/// Every ancestor must be searchable by "other" for the `postgres` account to reach
/// the data directory.
fn check_reachable(dir: &Path) -> Result<(), LocalPgError> {
    for ancestor in dir.ancestors().skip(1) {
        let mode = fs::metadata(ancestor)
            .map_err(io_step("inspecting the data directory's parents"))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(LocalPgError::DataDirNotReachable(dir.to_path_buf()));
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, LocalPgError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(io_step("reading the current directory"))?;
    Ok(cwd.join(path))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
