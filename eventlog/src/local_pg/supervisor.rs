//! The supervisor: the thread that runs the server, waits for it, and starts it again
//! when it dies.

use super::*;

/// What the supervisor thread and the handle share.
#[derive(Debug, Default)]
pub(super) struct Supervision {
    pub(super) state: std::sync::Mutex<SupervisorState>,
    pub(super) changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
pub(super) struct SupervisorState {
    /// The server process running now.
    pub(super) pid: Option<i32>,
    pub(super) last_pid: i32,
    /// Restart the server when it dies (set once `start` saw our server answer).
    pub(super) armed: bool,
    /// `stop` was called: the next exit is expected.
    pub(super) stopping: bool,
    /// The supervisor thread has ended: no server of ours runs or will.
    pub(super) done: bool,
    /// The server answering is ours (false when another process's server was found,
    /// and after `stop`).
    pub(super) owned: bool,
    pub(super) restarts: u32,
}

impl Supervision {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SupervisorState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the server and restarts it when it dies, on its own thread: the thread that
/// spawns the server must outlive it (`PR_SET_PDEATHSIG` fires when *that thread*
/// exits), and it lives exactly as long as there is a server to supervise.
pub(super) struct Supervisor {
    pub(super) command: Command,
    pub(super) supervision: std::sync::Arc<Supervision>,
    pub(super) failure: tokio::sync::watch::Sender<Option<String>>,
    pub(super) pgdata: PathBuf,
    pub(super) socket_dir: PathBuf,
    pub(super) log_path: PathBuf,
    pub(super) max_restarts: u32,
    pub(super) backoff: Duration,
}

impl Supervisor {
    pub(super) fn run(mut self, started: mpsc::Sender<io::Result<i32>>) {
        let mut started = Some(started);
        let mut failures = 0u32;
        loop {
            let why = match self.command.spawn() {
                Ok(mut child) => {
                    let pid = child.id() as i32;
                    {
                        let mut state = self.supervision.lock();
                        state.pid = Some(pid);
                        state.last_pid = pid;
                        if state.stopping {
                            // SAFETY: our child, not reaped yet.
                            unsafe { libc::kill(pid, libc::SIGINT) };
                        }
                    }
                    if let Some(started) = started.take() {
                        let _ = started.send(Ok(pid));
                    } else {
                        tracing::warn!(pid, "private PostgreSQL restarted");
                    }
                    let began = Instant::now();
                    let status = child.wait();
                    let mut state = self.supervision.lock();
                    state.pid = None;
                    if !state.stopping {
                        if let Some(other) = other_live_server(&self.pgdata, pid) {
                            // Ours lost the directory to another process's server (a
                            // second `aula` on this data directory, or one still
                            // draining while we start). Stand by while that one
                            // serves, and take over when it stops: otherwise its
                            // owner's exit would leave us with no server at all.
                            state.armed = false;
                            state.owned = false;
                            drop(state);
                            if !self.stand_by(other) {
                                return;
                            }
                            continue;
                        }
                    }
                    if state.stopping || !state.armed {
                        state.done = true;
                        self.supervision.changed.notify_all();
                        return;
                    }
                    drop(state);
                    if began.elapsed() >= STABLE_AFTER {
                        failures = 0;
                    }
                    match status {
                        Ok(status) => format!("the server exited ({status})"),
                        Err(error) => format!("waiting for the server failed: {error}"),
                    }
                }
                Err(error) => {
                    if let Some(started) = started.take() {
                        let _ = started.send(Err(error));
                        let mut state = self.supervision.lock();
                        state.done = true;
                        self.supervision.changed.notify_all();
                        return;
                    }
                    format!("the server could not be started: {error}")
                }
            };
            failures += 1;
            // A full disk is a fault the operator ends by freeing space, not a broken
            // installation: giving up would take the whole service down (the README's
            // bare `aula` has no process supervisor to start it again), so the server
            // is tried again, at the longest pause, until there is room.
            let disk_full = disk_is_full(&self.pgdata, &self.log_path);
            if disk_full {
                failures = failures.min(self.max_restarts.max(1));
            }
            if failures > self.max_restarts {
                let reason = format!(
                    "the private PostgreSQL died and did not come back after {} restarts: {why}; the end of {}:\n{}",
                    self.max_restarts,
                    self.log_path.display(),
                    tail(&self.log_path, 20)
                );
                tracing::error!(%reason, "giving up on the private PostgreSQL");
                let mut state = self.supervision.lock();
                state.done = true;
                self.supervision.changed.notify_all();
                drop(state);
                self.failure.send_replace(Some(reason));
                return;
            }
            let exponent = (failures - 1).min(6);
            let pause = self
                .backoff
                .saturating_mul(2u32.pow(exponent))
                .min(Duration::from_secs(10));
            if disk_full {
                tracing::error!(%why, free_bytes = free_space(&self.pgdata), ?pause, "the private PostgreSQL cannot run: its disk is full; retrying until space is freed");
            } else {
                tracing::error!(%why, attempt = failures, max_restarts = self.max_restarts, ?pause, "the private PostgreSQL died; restarting it");
            }
            let state = self.supervision.lock();
            let (mut state, _) = self
                .supervision
                .changed
                .wait_timeout_while(state, pause, |s| !s.stopping)
                .unwrap_or_else(|p| p.into_inner());
            if state.stopping {
                state.done = true;
                self.supervision.changed.notify_all();
                return;
            }
            state.restarts += 1;
            drop(state);
            if let Err(error) = remove_stale_lock_files(&self.pgdata, &self.socket_dir) {
                tracing::warn!(%error, "could not clear the dead server's lock files");
            }
        }
    }
}

impl Supervisor {
    /// Waits while another process's server (`other`, or any that follows it) runs on
    /// the directory. True when none runs any more: the caller starts ours, armed and
    /// owned (a death is restarted, `stop` stops it). False when `stop` was called
    /// meanwhile (the thread ends, `done`).
    fn stand_by(&self, other: i32) -> bool {
        tracing::info!(pid = other, "another process's PostgreSQL serves this data directory; standing by to take over when it stops");
        let mut state = self.supervision.lock();
        loop {
            state = self
                .supervision
                .changed
                .wait_timeout_while(state, STAND_BY_POLL, |s| !s.stopping)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if state.stopping {
                state.done = true;
                self.supervision.changed.notify_all();
                return false;
            }
            if other_live_server(&self.pgdata, 0).is_none() {
                state.armed = true;
                state.owned = true;
                drop(state);
                tracing::warn!(
                    "the other process's PostgreSQL stopped; starting ours on the data directory"
                );
                if let Err(error) = remove_stale_lock_files(&self.pgdata, &self.socket_dir) {
                    tracing::warn!(%error, "could not clear the stopped server's lock files");
                }
                return true;
            }
        }
    }
}

/// How often a supervisor standing by looks whether the other server still runs.
const STAND_BY_POLL: Duration = Duration::from_millis(200);

/// Less room than one WAL segment (16 MB) on the data directory's file system, or the
/// server's last words say that a write found no space: it died of a full disk.
fn disk_is_full(pgdata: &Path, log_path: &Path) -> bool {
    const WAL_SEGMENT: u64 = 16 << 20;
    free_space(pgdata).is_some_and(|free| free < WAL_SEGMENT)
        || tail(log_path, 20).contains("No space left on device")
}
