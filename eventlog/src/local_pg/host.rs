//! What the private server needs from the host: its binaries, an unprivileged account
//! when we are root, reachable directories, and no stale lock files.

use super::*;

pub(super) struct Account {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// The pid in the first line of `postmaster.pid`, if there is one.
pub(super) fn postmaster_pid(pgdata: &Path) -> Option<i32> {
    fs::read_to_string(pgdata.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

pub(super) struct Binaries {
    pub(super) initdb: PathBuf,
    pub(super) postgres: PathBuf,
}

/// Whether `pid` is a running `postgres` on the data directory `pgdata`.
pub(super) fn is_live_server(pid: i32, pgdata: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        args.first()
            .is_some_and(|program| program.ends_with("postgres"))
            && args.iter().any(|a| Path::new(a) == pgdata)
    })
}

/// The pid of a live server on `pgdata` that is not `ours`: another process's.
pub(super) fn other_live_server(pgdata: &Path, ours: i32) -> Option<i32> {
    postmaster_pid(pgdata).filter(|&pid| pid != ours && is_live_server(pid, pgdata))
}

/// Removes a `postmaster.pid` (and the socket's lock file) left behind by a server
/// that is gone: after a host crash or a killed container the file stays, and when its
/// pid now belongs to some other live process PostgreSQL refuses to start ("lock file
/// already exists") until someone deletes it by hand. A file whose pid is a running
/// `postgres` on this very data directory is left alone (that server answers on our
/// socket and [`LocalPostgres::wait_ready`] uses it).
pub(super) fn remove_stale_lock_files(
    pgdata: &Path,
    socket_dir: &Path,
) -> Result<(), LocalPgError> {
    let pid_file = pgdata.join("postmaster.pid");
    let Ok(contents) = fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let pid: Option<i32> = contents.lines().next().and_then(|l| l.trim().parse().ok());
    if pid.is_some_and(|pid| is_live_server(pid, pgdata)) {
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

/// The URL of `database` on our server's socket in `socket_dir` (see [`LocalPostgres::url`]).
pub(super) fn socket_url(socket_dir: &Path, database: &str) -> String {
    format!(
        "postgresql://{SUPERUSER}@localhost/{database}?host={}&port={SOCKET_PORT}",
        percent_encode_path(socket_dir)
    )
}

/// A path as a URL query value: unreserved characters and `/` as they are, every
/// other byte percent-encoded.
pub(super) fn percent_encode_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(super) fn find_binaries() -> Result<Binaries, LocalPgError> {
    // A directory the user named is the only one we use: silently running other
    // binaries than the ones asked for would hide the mistake.
    if let Some(dir) = std::env::var_os("AULA_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            Ok(Binaries {
                initdb: dir.join("initdb"),
                postgres: dir.join("postgres"),
            })
        } else {
            Err(LocalPgError::PgBinInvalid(dir))
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
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

/// What `postgres --version` says (`postgres (PostgreSQL) 15.14`), or `unknown`.
pub(super) fn server_version(postgres: &Path) -> String {
    Command::new(postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `None` when we are not root: the server runs as us.
pub(super) fn unprivileged_account() -> Result<Option<Account>, LocalPgError> {
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

pub(super) fn as_account(command: &mut Command, account: Option<&Account>) {
    if let Some(account) = account {
        command.uid(account.uid).gid(account.gid);
        // Keep HOME/USER from pointing at root's, which initdb may try to read.
        command.env("HOME", "/tmp").env("USER", "postgres");
        command.env_remove("PGDATA");
    }
}

/// Every ancestor must be searchable by "other" for the `postgres` account to reach
/// the data directory.
pub(super) fn check_reachable(dir: &Path) -> Result<(), LocalPgError> {
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

pub(super) fn absolute(path: &Path) -> Result<PathBuf, LocalPgError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(io_step("reading the current directory"))?;
    Ok(cwd.join(path))
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Memory and WAL settings sized to this host, for a private server that keeps its
/// data: PostgreSQL's defaults (128 MB of shared buffers, 1 GB of WAL between
/// checkpoints) suit a small shared machine, and on a larger one they make the task
/// queue's cost grow with its history (issue #20: pages evicted and written again,
/// checkpoints forcing full-page images every few hundred thousand tasks). A quarter
/// of the memory for shared buffers (at most 8 GB), half as the planner's cache
/// estimate, and up to a tenth of the data directory's free space for WAL (1 to 8
/// GB), and a checkpoint at least every 15 minutes rather than 5. The sizes are left out where the
/// host cannot be read; [`LocalPgOptions::settings`] come after these, so a caller's
/// own values win.
pub(super) fn sized_settings(pgdata: &Path) -> Vec<(String, String)> {
    const MB: u64 = 1024 * 1024;
    let mut settings = Vec::new();
    if let Some(memory) = total_memory() {
        let shared_buffers = (memory / 4).clamp(128 * MB, 8192 * MB);
        let maintenance = (memory / 32).clamp(64 * MB, 1024 * MB);
        settings.push(("shared_buffers", shared_buffers));
        settings.push(("effective_cache_size", memory / 2));
        settings.push(("maintenance_work_mem", maintenance));
    }
    if let Some(free) = free_space(pgdata) {
        settings.push(("max_wal_size", (free / 10).clamp(1024 * MB, 8192 * MB)));
    }
    let mut settings: Vec<(String, String)> = settings
        .into_iter()
        .map(|(name, bytes)| (name.to_string(), format!("{}MB", bytes / MB)))
        .collect();
    // The first change of each page after a checkpoint writes the whole page to the
    // WAL: every 5 minutes by default, 15 here (a longer crash recovery, never less
    // durable). At 1,000,000 tasks those images were a quarter of the drain's WAL.
    settings.push(("checkpoint_timeout".into(), "15min".into()));
    settings
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn total_memory() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The space left to unprivileged users on the file system of `path`, in bytes.
pub(super) fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` is written by statvfs
    // before it is read, only when it succeeds.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn megabytes(settings: &[(String, String)], name: &str) -> u64 {
        let (_, value) = settings
            .iter()
            .find(|(setting, _)| setting == name)
            .unwrap_or_else(|| panic!("{name} is sized on this host"));
        value.strip_suffix("MB").unwrap().parse().unwrap()
    }

    #[test]
    fn the_private_server_is_sized_within_bounds_on_this_host() {
        let settings = sized_settings(Path::new("/"));
        let memory = total_memory().unwrap() / (1024 * 1024);
        let shared_buffers = megabytes(&settings, "shared_buffers");
        assert!((128..=8192).contains(&shared_buffers));
        assert!(shared_buffers <= memory / 4 || shared_buffers == 128);
        assert_eq!(megabytes(&settings, "effective_cache_size"), memory / 2);
        assert!((64..=1024).contains(&megabytes(&settings, "maintenance_work_mem")));
        assert!((1024..=8192).contains(&megabytes(&settings, "max_wal_size")));
    }
}
