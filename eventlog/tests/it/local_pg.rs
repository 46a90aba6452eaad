//! The private PostgreSQL of zero-configuration runs, against the installed server.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aula_eventlog::local_pg::{LocalPgOptions, LocalPostgres};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// A short path: the socket's path must fit in 107 bytes.
pub(super) fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::env::temp_dir().join(format!("aula-pg-{}-{nanos}", std::process::id()))
}

/// A throwaway server in `dir` whose supervisor restarts it after 50 ms, so that the
/// tests of its restarts run quickly.
fn quickly_restarted(dir: &Path) -> LocalPgOptions {
    let mut options = LocalPgOptions::new(dir);
    options.ephemeral = true;
    options.restart_backoff = Duration::from_millis(50);
    options
}

/// A live process that PostgreSQL can signal (so that it counts as "running"): as root
/// the server runs as `postgres`, so the process must be that account's.
fn live_process_of_the_server_account() -> std::process::Child {
    let mut sleep = Command::new("sleep");
    sleep.arg("120");
    // SAFETY: getuid and getpwnam with a constant, NUL-terminated name; the record is
    // read at once, before anything else could call getpwnam.
    unsafe {
        if libc::getuid() == 0 {
            let account = libc::getpwnam(c"postgres".as_ptr());
            assert!(
                !account.is_null(),
                "running as root needs a `postgres` account"
            );
            sleep.uid((*account).pw_uid).gid((*account).pw_gid);
        }
    }
    sleep.spawn().expect("sleep runs")
}

#[test]
fn a_stale_pid_file_whose_pid_now_belongs_to_another_process_does_not_stop_a_start() {
    let dir = scratch_dir();
    let mut options = LocalPgOptions::new(&dir);
    options.ephemeral = true;
    let first = LocalPostgres::start(&options).expect("the first start");
    assert!(first.stop(), "the first server stopped");

    // The host crashed with the server running: its pid file stayed, and that pid has
    // since been given to an unrelated process.
    let mut other = live_process_of_the_server_account();
    let pgdata = dir.join("pgdata");
    std::fs::write(
        pgdata.join("postmaster.pid"),
        format!("{}\n{}\n", other.id(), pgdata.display()),
    )
    .unwrap();

    let second = LocalPostgres::start(&options);
    let _ = other.kill();
    let _ = other.wait();
    let second = second.expect("a start after a crash that left a stale pid file");
    assert!(second.owns_server());
    assert!(second.stop());
    let _ = std::fs::remove_dir_all(&dir);
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A pool on `server` that gives up waiting for a connection after 2 s (the server may
/// be down).
pub(super) async fn pool_of(server: &LocalPostgres) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(server.connect_options())
        .await
        .unwrap()
}

/// Inserts ids 1, 2, ... into a `writes` table of its own with `insert` (the id is its
/// `$1`), one every `pause`, until stopped, keeping the ids the server acknowledged and
/// counting the inserts that failed.
struct Writer {
    acknowledged: Arc<Mutex<Vec<i64>>>,
    failures: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// What a stopped [`Writer`] did: inserts acknowledged and failed, and the acknowledged
/// ids that the `writes` table lacks.
struct Written {
    acknowledged: usize,
    failed: u32,
    lost: Vec<i64>,
}

impl Writer {
    /// Creates the `writes` table (`table`: its statements, `CREATE TABLE` first), then
    /// starts writing.
    async fn start(pool: &PgPool, table: &[&str], insert: &'static str, pause: Duration) -> Writer {
        for statement in table {
            sqlx::query(statement).execute(pool).await.unwrap();
        }
        let acknowledged: Arc<Mutex<Vec<i64>>> = Arc::default();
        let failures = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (pool, acknowledged, failures, stop) = (
                pool.clone(),
                acknowledged.clone(),
                failures.clone(),
                stop.clone(),
            );
            async move {
                let mut id = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    match sqlx::query(insert).bind(id).execute(&pool).await {
                        Ok(_) => acknowledged.lock().unwrap().push(id),
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        });
        Writer {
            acknowledged,
            failures,
            stop,
            task,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits until `server` acknowledges this writer's inserts again (five more than
    /// now) and `also` holds; fails once `limit` has passed since `since`, saying the
    /// server did not `come_back` and how often it was restarted.
    async fn until_acknowledged_again(
        &self,
        server: &LocalPostgres,
        since: Instant,
        limit: Duration,
        come_back: &str,
        also: impl Fn() -> bool,
    ) {
        let before = self.acknowledged();
        let what = || {
            format!(
                "the server did not {come_back} ({} restarts)",
                server.restarts()
            )
        };
        wait_until(since, limit, what, || {
            also() && self.acknowledged() > before + 5
        })
        .await;
    }

    fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    async fn stop(self, pool: &PgPool) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let stored: Vec<i64> = sqlx::query_scalar("SELECT id FROM writes ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        let lost = acknowledged
            .iter()
            .filter(|id| stored.binary_search(id).is_err())
            .copied()
            .collect();
        Written {
            acknowledged: acknowledged.len(),
            failed: self.failures.load(Ordering::Relaxed),
            lost,
        }
    }
}

/// Polls every 50 ms until `done` holds; fails with `what()` once `limit` has passed
/// since `since`.
async fn wait_until(
    since: Instant,
    limit: Duration,
    what: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if done() {
            return;
        }
        assert!(since.elapsed() < limit, "{}", what());
    }
}

/// Finding 14: the postmaster is SIGKILLed under a running private server (with a
/// writer committing all along): the supervisor starts it again, queries work again
/// on the same pool, and every write acknowledged before, during and after is there.
#[test]
fn a_killed_server_is_restarted_and_no_acknowledged_write_is_lost() {
    let dir = scratch_dir();
    let mut options = LocalPgOptions::new(&dir);
    // Durable commits (the point is to count lost acknowledged writes); fsync off only
    // spares the disk: a killed process does not lose what it handed to the kernel.
    options.settings = vec![("fsync".into(), "off".into())];
    options.restart_backoff = Duration::from_millis(100);
    let server = LocalPostgres::start(&options).expect("the server starts");
    let rt = runtime();
    let (written, recovery) = rt.block_on(async {
        let pool = pool_of(&server).await;
        let writer = Writer::start(
            &pool,
            &["CREATE TABLE writes (id bigint PRIMARY KEY)"],
            "INSERT INTO writes VALUES ($1)",
            Duration::from_millis(10),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old = server.pid();
        // SAFETY: kill(2) on the postmaster we started.
        assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
        let killed = Instant::now();
        // Recovered: the writer's inserts are acknowledged again.
        let limit = Duration::from_secs(90);
        let restarted = || server.restarts() >= 1;
        writer
            .until_acknowledged_again(&server, killed, limit, "come back", restarted)
            .await;
        let recovery = killed.elapsed();
        assert_ne!(server.pid(), old, "a new server process runs");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let written = writer.stop(&pool).await;
        assert!(
            written.lost.is_empty(),
            "acknowledged writes lost: {:?}",
            written.lost
        );
        pool.close().await;
        (written, recovery)
    });
    eprintln!(
        "SIGKILL of the postmaster: back after {:.2} s; {} writes acknowledged, {} failed, 0 lost",
        recovery.as_secs_f64(),
        written.acknowledged,
        written.failed
    );
    assert!(server.stop(), "the restarted server stops cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding 14: a server that cannot come back (here its configuration file is gone)
/// is retried `max_restarts` times, then `failed()` resolves, so that `aula serve`
/// stops and exits non-zero instead of answering errors forever.
#[test]
fn a_server_that_cannot_come_back_is_reported_after_its_restarts() {
    let dir = scratch_dir();
    let mut options = quickly_restarted(&dir);
    options.max_restarts = 3;
    let server = LocalPostgres::start(&options).expect("the server starts");
    let failed = server.failed();
    std::fs::remove_file(dir.join("pgdata").join("postgresql.conf")).unwrap();
    // SAFETY: kill(2) on the postmaster we started.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let reason = runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(60), failed)
            .await
            .expect("the failure is reported")
    });
    assert!(
        reason.contains("did not come back after 3 restarts"),
        "{reason}"
    );
    assert_eq!(server.restarts(), 3);
    eprintln!(
        "unrecoverable server reported after {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    assert!(!server.stop(), "nothing of ours runs any more");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two processes start on one data directory: the second one's server loses the
/// directory and exits; the second uses the first's server and must neither own nor
/// supervise it (restarting its own would only fail, over and over, until it gave up).
/// When the first stops its server (an `aula serve` restarted while the old one still
/// drained), the second takes over with a server of its own: before, it was left with
/// none, for good (probe, session 20).
#[test]
fn a_second_start_on_a_running_data_directory_uses_that_server_then_takes_over() {
    let dir = scratch_dir();
    let options = quickly_restarted(&dir);
    let first = LocalPostgres::start(&options).expect("the first start");
    let second = LocalPostgres::start(&options).expect("the second start");
    assert!(first.owns_server());
    assert!(!second.owns_server());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(second.restarts(), 0);
    assert_eq!(first.restarts(), 0);
    assert!(first.stop());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let serves = || {
        use sqlx::ConnectOptions;
        runtime
            .block_on(second.connect_options().database("postgres").connect())
            .is_ok()
    };
    while !(second.owns_server() && serves()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the second serves with a server of its own within 30 s of the first's stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "the second took over {:.2} s after the first stopped",
        started.elapsed().as_secs_f64()
    );
    assert!(second.stop(), "the second stops its own server");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch directory on a tmpfs of 160 MB of its own, so a test can fill the disk
/// under a server. Needs root (CI runs as root); undo it with [`unmount`].
fn small_tmpfs() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test mounts a small tmpfs and needs root (CI runs as root)"
    );
    let dir = scratch_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=160m,mode=0755", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("mount runs");
    assert!(mounted.success(), "mounting a tmpfs on {}", dir.display());
    dir
}

/// Undoes [`small_tmpfs`], files and all.
fn unmount(dir: &PathBuf) {
    let _ = Command::new("umount").arg("-l").arg(dir).status();
    let _ = std::fs::remove_dir_all(dir);
}

/// The server of `options`, whose data lives on the tmpfs `dir` (unmounted if it does
/// not start).
fn start_on_tmpfs(dir: &PathBuf, options: &LocalPgOptions) -> LocalPostgres {
    match LocalPostgres::start(options) {
        Ok(server) => server,
        Err(error) => {
            unmount(dir);
            panic!("the server starts on the tmpfs: {error}");
        }
    }
}

/// Finding 14's original trigger: the disk under the private server fills up (a small
/// tmpfs mounted for the test, so this needs root, as CI runs). Writes fail while it is
/// full, the server may crash and fail to come back; once space is freed it serves
/// again (restarted by the supervisor if it had died), and no acknowledged write is lost.
#[test]
fn a_full_disk_is_survived_and_no_acknowledged_write_is_lost() {
    use std::io::Write as _;

    let dir = small_tmpfs();

    let mut options = LocalPgOptions::new(&dir);
    options.settings = vec![
        ("fsync".into(), "off".into()),
        ("wal_compression".into(), "off".into()),
        ("max_wal_size".into(), "64MB".into()),
        ("min_wal_size".into(), "32MB".into()),
    ];
    options.restart_backoff = Duration::from_millis(200);
    options.max_restarts = 20;
    let server = start_on_tmpfs(&dir, &options);
    let rt = runtime();
    let outcome = rt.block_on(async {
        let pool = pool_of(&server).await;
        // Uncompressed rows of 64 KiB: the disk fills quickly.
        let table = [
            "CREATE TABLE writes (id bigint PRIMARY KEY, body text)",
            "ALTER TABLE writes ALTER COLUMN body SET STORAGE EXTERNAL",
        ];
        let insert = "INSERT INTO writes VALUES ($1, repeat('x', 65536))";
        let writer = Writer::start(&pool, &table, insert, Duration::from_millis(5)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Fill what is left of the disk.
        let ballast = dir.join("ballast");
        {
            let mut file = std::fs::File::create(&ballast).unwrap();
            let chunk = vec![0u8; 1 << 20];
            while file.write_all(&chunk).is_ok() {}
        }
        let full = Instant::now();
        // Writes fail while the disk is full.
        wait_until(
            full,
            Duration::from_secs(60),
            || "no write failed on a full disk".to_owned(),
            || writer.failures() >= 3,
        )
        .await;
        let failed_while_full = writer.failures();
        tokio::time::sleep(Duration::from_secs(2)).await;
        std::fs::remove_file(&ballast).unwrap();
        let freed = Instant::now();
        // Back: inserts are acknowledged again.
        let come_back = "serve again after space was freed";
        writer
            .until_acknowledged_again(&server, freed, Duration::from_secs(120), come_back, || true)
            .await;
        let recovery = freed.elapsed();
        let written = writer.stop(&pool).await;
        pool.close().await;
        (
            written.lost.len(),
            written.acknowledged,
            failed_while_full,
            written.failed,
            recovery,
        )
    });
    let restarts = server.restarts();
    let stopped = server.stop();
    unmount(&dir);
    let (lost, acknowledged, failed_while_full, failed, recovery) = outcome;
    eprintln!(
        "full disk: {failed_while_full}+ writes failed while full ({failed} in all), serving again {:.2} s after space was freed, {restarts} supervisor restarts; {acknowledged} acknowledged, {lost} lost",
        recovery.as_secs_f64()
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(stopped, "the server stops cleanly");
}

/// A server that cannot start again because its disk is full (here the log's next
/// segment could not be created) is not given up on after
/// `max_restarts`: that would stop the whole service (the README's bare `aula` has no
/// process supervisor). It is tried again until space is freed, then serves. Needs root
/// for the tmpfs, as the test above.
#[test]
fn a_server_that_dies_of_a_full_disk_is_tried_again_until_space_is_freed() {
    use std::io::Write as _;

    let dir = small_tmpfs();
    let mut options = LocalPgOptions::new(&dir);
    options.restart_backoff = Duration::from_millis(50);
    options.max_restarts = 2;
    let server = start_on_tmpfs(&dir, &options);
    let failed = server.failed();
    let rt = runtime();
    let outcome = rt.block_on(async {
        // The disk fills up to the last byte; then the log needs its next segment file,
        // which cannot be created: the server panics, and its crash recovery needs that
        // file too, so it cannot start again while the disk is full.
        let pool = pool_of(&server).await;
        let ballast = dir.join("ballast");
        {
            let mut file = std::fs::File::create(&ballast).unwrap();
            let chunk = vec![0u8; 1 << 20];
            while file.write_all(&chunk).is_ok() {}
            let small = vec![0u8; 4096];
            while file.write_all(&small).is_ok() {}
        }
        let _ = sqlx::query("SELECT pg_switch_wal()").execute(&pool).await;
        let _ = sqlx::query("CREATE TABLE after_the_switch ()")
            .execute(&pool)
            .await;
        pool.close().await;
        // Full for longer than two restarts take.
        let full_for = Duration::from_secs(4);
        let gave_up = tokio::time::timeout(full_for, failed).await;
        let restarts_while_full = server.restarts();
        std::fs::remove_file(&ballast).unwrap();
        let freed = Instant::now();
        let mut answered = None;
        while freed.elapsed() < Duration::from_secs(60) {
            let connected = tokio::time::timeout(Duration::from_secs(2), async {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(1))
                    .connect_with(server.connect_options())
                    .await
                    .ok()?;
                let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.ok()?;
                pool.close().await;
                Some(one)
            })
            .await;
            if let Ok(Some(1)) = connected {
                answered = Some(freed.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (gave_up.is_ok(), restarts_while_full, answered)
    });
    let (gave_up, restarts_while_full, answered) = outcome;
    let stopped = server.stop();
    unmount(&dir);
    eprintln!(
        "died of a full disk: {restarts_while_full} restarts while full, serving {answered:?} after space was freed"
    );
    assert!(!gave_up, "the supervisor gave up on a full disk");
    assert!(
        restarts_while_full > 2,
        "tried beyond max_restarts while full: {restarts_while_full}"
    );
    assert!(answered.is_some(), "serves again once space is freed");
    assert!(stopped, "the server stops cleanly");
}
