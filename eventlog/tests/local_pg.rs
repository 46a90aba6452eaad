//! The private PostgreSQL of zero-configuration runs, against the installed server.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use aula_eventlog::local_pg::{LocalPgOptions, LocalPostgres};

/// A short path: the socket's path must fit in 107 bytes.
fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::env::temp_dir().join(format!("aula-pg-{}-{nanos}", std::process::id()))
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
