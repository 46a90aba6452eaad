//! The workers of one process.
//!
//! One claiming loop fills up to `concurrency` slots: it claims `min(free slots,
//! claim_batch)` due tasks in one statement and runs each in its own tokio task. While
//! a backlog lasts (its last claim came back full) it reads ahead instead: it waits
//! until half of a batch of slots is free and claims a whole batch, whose last tasks
//! wait in the process for a slot (see `read_ahead.rs`). It is
//! woken by LISTEN `aula_tasks` (a trigger notifies on every insert, with where the new
//! tasks sort: `queue::Notified`), by a slot freeing
//! up, or by the poll interval. Outcomes go to one completer that records them in
//! batches (one fenced `UPDATE ... FROM unnest` per outcome type). Claims and successes
//! leave the issuing events' `admin_events` rows to the refresher
//! ([`crate::processing::run_refresher`], one per process, at most two rounds at a time
//! per database),
//! which brings them up to date in batches (ADR 0001). A heartbeat extends
//! the leases of running attempts; a rescuer returns tasks whose lease expired (their
//! worker died) to `pending`; any process may rescue any task.
//!
//! A class of kinds may have a cap per process (`caps.rs`: e-mails, by default half the
//! slots): while it is reached, claims leave its kinds pending and take the others.
//!
//! Graceful shutdown: stop claiming, let running tasks finish for up to
//! `drain_timeout`, record their outcomes, then release what is still running
//! (pending again at once, the attempt not counted against the budget).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aula_eventlog::shutdown::Shutdown;
use futures::FutureExt;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::config::ProcessorConfig;
use crate::handlers::{Registry, TaskContext, TaskError};
use crate::queue::{self, Done, Failed};

mod caps;
mod notices;
mod read_ahead;

use caps::{Admission, Caps, ClassPermit};
use notices::Notices;
use read_ahead::ReadAhead;

pub const NOTIFY_CHANNEL: &str = "aula_tasks";

/// How often the refresher looks for ids that other processes' workers queued.
const REFRESH_POLL: Duration = Duration::from_millis(500);
/// The refresher's pause between rounds that found work: the batch it lets gather, and
/// so how far the admin view of a busy queue is behind (plus the round itself).
const REFRESH_PAUSE: Duration = Duration::from_millis(100);

/// A running set of workers.
pub struct WorkerHandle {
    pub task: tokio::task::JoinHandle<Result<(), sqlx::Error>>,
}

/// Starts the workers of this process in the background.
pub fn spawn_workers(
    pool: PgPool,
    config: ProcessorConfig,
    registry: Registry,
    shutdown: Shutdown,
) -> WorkerHandle {
    WorkerHandle {
        task: tokio::spawn(run_workers(pool, config, registry, shutdown)),
    }
}

struct Outcome {
    claim: Done,
    result: Result<(), TaskError>,
}

type InFlight = Arc<Mutex<HashMap<i64, Done>>>;

fn lock(in_flight: &InFlight) -> std::sync::MutexGuard<'_, HashMap<i64, Done>> {
    // A panic while holding this lock leaves a plain map behind: still usable.
    in_flight.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the workers of this process until `shutdown`, then drains (see module docs).
pub async fn run_workers(
    pool: PgPool,
    config: ProcessorConfig,
    registry: Registry,
    shutdown: Shutdown,
) -> Result<(), sqlx::Error> {
    run_workers_with_ready(pool, config, registry, shutdown, || {}).await
}

/// [`run_workers`], calling `ready` once everything is started (listener, completer,
/// heartbeat, rescuer) and the first claim has been made: from then on a task
/// inserted is picked up without any start-up cost (`aula bench tasks` waits for it).
pub async fn run_workers_with_ready(
    pool: PgPool,
    config: ProcessorConfig,
    registry: Registry,
    mut shutdown: Shutdown,
    ready: impl FnOnce(),
) -> Result<(), sqlx::Error> {
    let mut ready = Some(ready);
    let registry = Arc::new(registry);
    // The one LISTEN loop (reconnects by itself; a reconnection wakes everyone), and what
    // its notifications said since the claiming loop last looked (`queue::Notified`).
    let notified: Arc<Mutex<Option<queue::Notified>>> = Arc::default();
    let wake = {
        let notified = notified.clone();
        aula_eventlog::listen::listen_with(&pool, NOTIFY_CHANNEL, shutdown.clone(), move |p| {
            let news = queue::Notified::parse(p);
            let mut seen = notified.lock().unwrap_or_else(|e| e.into_inner());
            *seen = Some(seen.map_or(news, |before| before.and(news)));
        })
        .await?
    };
    let claim_pool = claim_connection(&pool);
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let caps = Caps::new(&config);
    let slot_freed = Arc::new(Notify::new());
    let in_flight: InFlight = Arc::default();
    let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel::<Outcome>();
    let refresh_wake = Arc::new(Notify::new());
    let completer = tokio::spawn(complete_loop(
        pool.clone(),
        config.clone(),
        outcomes_rx,
        in_flight.clone(),
        refresh_wake.clone(),
    ));
    let (stop_background, background_stopped) = watch::channel(false);
    let (stop_refresher, refresher_stopped) = watch::channel(false);
    let refresher = tokio::spawn(crate::processing::run_refresher(
        refresher_connection(&pool),
        refresh_wake.clone(),
        REFRESH_POLL,
        REFRESH_PAUSE,
        refresher_stopped,
    ));
    let notices = Arc::new(Notices::default());
    let noticer = tokio::spawn(notices::notice_loop(
        pool.clone(),
        notices.clone(),
        in_flight.clone(),
        refresh_wake.clone(),
        background_stopped.clone(),
    ));
    let heartbeat = tokio::spawn(heartbeat_loop(
        pool.clone(),
        config.clone(),
        in_flight.clone(),
        background_stopped.clone(),
    ));
    let rescuer = tokio::spawn(rescue_loop(
        pool.clone(),
        config.clone(),
        background_stopped,
    ));
    tracing::info!(worker = %config.worker_name, concurrency = config.concurrency, caps = ?caps.describe(), kinds = ?registry.kinds(), "task workers started");

    let mut running = JoinSet::new();
    let mut wake_rx = wake;
    let mut failures = 0u32;
    // Where the next claim may start (see `queue::ClaimHint`), and when the last claim
    // from the index's front was made.
    let mut hint: Option<queue::ClaimHint> = None;
    let mut from_front = tokio::time::Instant::now();
    // When the loop last claimed the priorities before its hint, and whether that claim
    // was full (so more may wait there).
    let mut before_checked = tokio::time::Instant::now();
    let mut more_before = false;
    let read_ahead = ReadAhead::new(config.concurrency, config.claim_batch);
    let mut backlog = false;
    // Whether the last claim left the kinds of a class at its cap pending.
    let mut was_excluding = false;
    loop {
        if shutdown.is_triggered() {
            break;
        }
        while running.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free < read_ahead.slots_wanted(backlog) {
            tokio::select! {
                _ = slot_freed.notified() => {}
                _ = shutdown.wait() => break,
            }
            continue;
        }
        // New tasks may sort before the hint: claim from the front. (The listener records
        // what it heard before it bumps the counter, so what was heard is there to take.)
        let news = match wake_rx.has_changed() {
            Ok(true) => notified.lock().unwrap_or_else(|e| e.into_inner()).take(),
            Ok(false) => None,
            // The listener is gone: nothing more will be heard.
            Err(_) => Some(queue::Notified::Anywhere),
        };
        if hint.is_some_and(|hint| news.is_some_and(|news| news.may_precede(hint)))
            || from_front.elapsed() >= queue::ClaimHint::FRONT_EVERY
        {
            hint = None;
        }
        wake_rx.borrow_and_update();
        // Kinds of classes at their cap stay pending (see `caps.rs`). A change of what is
        // left out drops the hint: a class coming back may sort before it.
        let excluding = caps.full_kinds();
        if excluding.is_empty() == was_excluding {
            hint = None;
            was_excluding = !excluding.is_empty();
        }
        let limit = read_ahead.limit(backlog, free);
        let hinted = hint.is_some();
        // More urgent tasks may have come due: claim the priorities before the hint.
        let before =
            hint.filter(|_| more_before || before_checked.elapsed() >= queue::ClaimHint::LIFETIME);
        if !hinted || before.is_some() {
            before_checked = tokio::time::Instant::now();
        }
        if !hinted {
            from_front = tokio::time::Instant::now();
            more_before = false;
        }
        let start = match (before, hint) {
            (Some(hint), _) => queue::ClaimStart::BeforeHint(hint),
            (None, Some(hint)) => queue::ClaimStart::AtHint(hint),
            (None, None) => queue::ClaimStart::Front,
        };
        // No refresh queued: the notices queue one for the tasks still running later.
        let claim = (
            config.worker_name.as_str(),
            limit,
            config.lease,
            config.record_attempts,
        );
        let claim =
            queue::claim_for_workers_excluding(&claim_pool, claim, false, start, &excluding).await;
        let claimed = match claim {
            Ok(claimed) => {
                failures = 0;
                claimed
            }
            Err(error) => {
                failures += 1;
                let pause = queue::backoff(
                    failures as i32,
                    Duration::from_millis(100),
                    Duration::from_secs(10),
                );
                tracing::warn!(%error, ?pause, "claiming tasks failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.wait() => break,
                }
                continue;
            }
        };
        if let Some(ready) = ready.take() {
            ready();
        }
        let full_batch = claimed.len() as i64 == limit;
        backlog = full_batch;
        if before.is_some() {
            // The hint stays: the tasks at its priority come after these. A full batch
            // may have left more of them for the next claim.
            more_before = full_batch;
            if claimed.is_empty() {
                continue;
            }
        } else {
            hint = if full_batch {
                queue::ClaimHint::of(&claimed)
            } else if hinted {
                // A hinted claim that came up short keeps its hint: what became pending
                // before it since is notified, comes due after it, or waits for the claim
                // from the front every `FRONT_EVERY` (see `queue::ClaimHint`). Claiming
                // from the front instead walked every entry the drain left in the index
                // since its last VACUUM, once per short claim: at 1,000,000 tasks, 130 ms
                // a claim and a fifth of the database's time (BENCHMARKS.md, session 15).
                hint
            } else {
                None
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = wake_rx.changed() => {}
                    // A class left out has room again.
                    _ = caps.freed.notified(), if was_excluding => {}
                    _ = tokio::time::sleep(config.poll_interval) => {}
                    _ = shutdown.wait() => break,
                }
                continue;
            }
        }
        {
            let mut map = lock(&in_flight);
            for task in &claimed {
                map.insert(task.id, task.done());
            }
        }
        notices.claimed(&claimed, tokio::time::Instant::now());
        for task in claimed {
            let job = Job {
                ctx: TaskContext {
                    pool: pool.clone(),
                    task,
                    worker: config.worker_name.clone(),
                },
                registry: registry.clone(),
                outcomes: outcomes_tx.clone(),
                slot_freed: slot_freed.clone(),
                notices: notices.clone(),
            };
            let class = match caps.admit(&job.ctx.task.kind) {
                Admission::Free => None,
                Admission::Admitted(permit) => Some(permit),
                // Over its class's cap (this claim took more of the class than it had
                // room for): it waits for a permit of its class, and then for a slot,
                // without holding one meanwhile.
                Admission::Wait(permits) => {
                    let (slots, freed) = (slots.clone(), caps.freed.clone());
                    let mut shutdown = shutdown.clone();
                    running.spawn(async move {
                        let permits = tokio::select! {
                            class = permits.acquire_owned() => class.ok().zip(
                                tokio::select! {
                                    slot = slots.acquire_owned() => slot.ok(),
                                    _ = shutdown.wait() => None,
                                },
                            ),
                            _ = shutdown.wait() => None,
                        };
                        match permits {
                            Some((class, slot)) => {
                                job.run(slot, Some(ClassPermit::new(class, freed))).await
                            }
                            // Released with the drain's leftovers.
                            None => job.notices.ended(job.ctx.task.id),
                        }
                    });
                    continue;
                }
            };
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                // A read-ahead claim's last tasks wait for a slot (in `in_flight`, so the
                // heartbeat keeps their leases, and a shutdown releases them).
                Err(_) => tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = shutdown.wait() => break,
                },
            };
            running.spawn(job.run(permit, class));
        }
        if !full_batch && !hinted {
            // Fewer due tasks than free slots: wait for news rather than spin.
            tokio::select! {
                _ = wake_rx.changed() => {}
                _ = slot_freed.notified() => {}
                _ = tokio::time::sleep(config.poll_interval) => {}
                _ = shutdown.wait() => break,
            }
        }
    }

    // Drain: let running tasks finish (bounded), then record and release.
    tracing::info!(worker = %config.worker_name, running = running.len(), "task workers draining");
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            running = running.len(),
            "drain timed out; releasing the tasks still running"
        );
        running.abort_all();
        while running.join_next().await.is_some() {}
    }
    drop(outcomes_tx);
    let _ = completer.await;
    let _ = stop_background.send(true);
    let _ = heartbeat.await;
    let _ = noticer.await;
    let _ = rescuer.await;
    let leftover: Vec<Done> = lock(&in_flight).values().copied().collect();
    if !leftover.is_empty() {
        let released = queue::release(&pool, &leftover).await?;
        tracing::info!(released = released.len(), "released unfinished tasks");
    }
    // Last: the refresher's final round brings every event row this process queued up
    // to date (unless the refreshers' slots are all taken: then those rounds will).
    let _ = stop_refresher.send(true);
    let _ = refresher.await;
    tracing::info!(worker = %config.worker_name, "task workers stopped");
    Ok(())
}

/// A claimed task and what running it reports to.
struct Job {
    ctx: TaskContext,
    registry: Arc<Registry>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    slot_freed: Arc<Notify>,
    notices: Arc<Notices>,
}

impl Job {
    /// Runs the task in `slot` (and its class's permit, if capped), reports its outcome
    /// and frees both.
    async fn run(self, slot: tokio::sync::OwnedSemaphorePermit, class: Option<ClassPermit>) {
        let outcome = run_one(&self.registry, &self.ctx).await;
        self.notices.ended(self.ctx.task.id);
        let _ = self.outcomes.send(outcome);
        drop(class);
        drop(slot);
        self.slot_freed.notify_one();
    }
}

/// The claiming loop's own connection (it runs one statement at a time), with
/// `synchronous_commit = off`: a claim's commit does not wait for the WAL flush (nor
/// holds its row locks meanwhile).
///
/// Trade-off: if the *database server* crashes, claims of its last few hundred
/// milliseconds can be lost; those tasks are pending again and are claimed again (with
/// the same attempt number), so they run at least once as always, but their first run
/// leaves no attempt record. The lost claim's worker may still be running and report:
/// outcomes are fenced by the claim's time too (`queue::Done`), so it finishes nothing.
/// (Synchronous claims measured 7,684 and 13,301 tasks/s against 15,918.) Completions, failures and everything else keep the
/// server's `synchronous_commit` (on by default): a recorded outcome is never lost, and
/// it is durable together with every claim before it (the WAL is flushed in order).
fn claim_connection(pool: &PgPool) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options([("synchronous_commit", "off")]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        // Nobody else uses this connection: waiting for it means connecting. While
        // the database is down, a claim gives up soon (and retries with backoff)
        // rather than hold a shutdown up for the pool's default 30 s.
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options)
}

/// The refresher's own connection (one statement or transaction at a time), so it never
/// waits for, nor takes, a connection the handlers need from the workers' pool.
fn refresher_connection(pool: &PgPool) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// Runs one attempt in a `task` span, so its log lines carry the task's ids and, when
/// spans are exported, it continues the trace that issued the task (the context the
/// reaction stored in the payload); records the attempt's metrics.
async fn run_one(registry: &Registry, ctx: &TaskContext) -> Outcome {
    let span = crate::spans::task_attempt(&ctx.task);
    let started = std::time::Instant::now();
    let outcome = run_attempt(registry, ctx).instrument(span.clone()).await;
    crate::spans::record_outcome(&span, &outcome.result);
    let task = &ctx.task;
    let label = match &outcome.result {
        Ok(()) => "succeeded",
        Err(error) if error.is_final() => "dead",
        Err(error) if error.is_permanent() => "failed_permanently",
        Err(_) => "failed",
    };
    let seconds = started.elapsed().as_secs_f64();
    crate::metrics::record_attempt(&task.kind, label, seconds);
    span.in_scope(|| {
        tracing::debug!(
            outcome = label,
            duration_ms = seconds * 1000.0,
            "task attempt finished"
        )
    });
    outcome
}

async fn run_attempt(registry: &Registry, ctx: &TaskContext) -> Outcome {
    let id = ctx.task.id;
    let attempt = ctx.task.attempt;
    let result = match registry.get(&ctx.task.kind) {
        None => Err(TaskError::permanent(format!(
            "no handler for task kind {:?}",
            ctx.task.kind
        ))),
        Some(handler) => match AssertUnwindSafe(handler.run(ctx)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(TaskError::retry(format!(
                "the handler panicked: {}",
                aula_eventlog::subscription::panic_message(&*panic)
            ))),
        },
    };
    if let Err(error) = &result {
        tracing::warn!(task = id, kind = %ctx.task.kind, attempt, permanent = error.is_permanent(), error = %error.chain(), "task attempt failed");
    }
    Outcome {
        claim: ctx.task.done(),
        result,
    }
}

/// Records outcomes in batches until the channel closes.
async fn complete_loop(
    pool: PgPool,
    config: ProcessorConfig,
    mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    in_flight: InFlight,
    refresh_wake: Arc<Notify>,
) {
    let mut batch = Vec::new();
    while let Some(first) = outcomes.recv().await {
        batch.push(first);
        while batch.len() < 2000 {
            match outcomes.try_recv() {
                Ok(outcome) => batch.push(outcome),
                Err(_) => break,
            }
        }
        // Successes finish in one statement that queues their events' rows for the
        // refresher (`complete_deferred`); failures record at once (`fail`).
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for outcome in batch.drain(..) {
            match outcome.result {
                Ok(()) => done.push(outcome.claim),
                Err(error) => failed.push(Failed {
                    id: outcome.claim.id,
                    attempt: outcome.claim.attempt,
                    claimed_at: outcome.claim.claimed_at,
                    error: error.chain(),
                    retry_after: (!error.is_permanent()).then(|| {
                        queue::backoff(outcome.claim.attempt, config.retry_base, config.retry_max)
                    }),
                    spare: error.is_unavailable(),
                    dead: error.is_final(),
                }),
            }
        }
        let finished: Vec<i64> = done
            .iter()
            .map(|d| d.id)
            .chain(failed.iter().map(|f| f.id))
            .collect();
        let (mut pending_done, mut pending_failed) = (done, failed);
        let mut rejected = 0usize;
        let mut tries = 0u32;
        loop {
            tries += 1;
            // Each step is its own transaction: a step that succeeded is not repeated
            // when a later one fails and is retried.
            let result = async {
                if !pending_done.is_empty() {
                    let accepted = queue::complete_deferred(&pool, &pending_done).await?;
                    rejected += pending_done.len() - accepted.len();
                    pending_done.clear();
                    refresh_wake.notify_one();
                }
                if !pending_failed.is_empty() {
                    let accepted = queue::fail(&pool, &pending_failed).await?;
                    rejected += pending_failed.len() - accepted.len();
                    pending_failed.clear();
                }
                Ok::<_, sqlx::Error>(())
            }
            .await;
            match result {
                Ok(()) => {
                    if rejected > 0 {
                        tracing::warn!(rejected, "completions of superseded attempts were rejected (their lease had expired)");
                    }
                    break;
                }
                Err(error) if tries < 10 => {
                    tracing::warn!(%error, tries, "recording task outcomes failed; retrying");
                    tokio::time::sleep(queue::backoff(
                        tries as i32,
                        Duration::from_millis(100),
                        Duration::from_secs(5),
                    ))
                    .await;
                }
                Err(error) => {
                    // The leases will expire and the tasks run again: at-least-once.
                    tracing::error!(%error, "could not record task outcomes; their leases will expire and they will run again");
                    break;
                }
            }
        }
        let mut map = lock(&in_flight);
        for id in &finished {
            map.remove(id);
        }
    }
}

async fn heartbeat_loop(
    pool: PgPool,
    config: ProcessorConfig,
    in_flight: InFlight,
    mut stop: watch::Receiver<bool>,
) {
    let period = (config.lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let running: Vec<Done> = lock(&in_flight).values().copied().collect();
        // Abandoned on stop, like the rescue: a lease not extended now only expires.
        let extended = tokio::select! {
            extended = queue::heartbeat(&pool, &running, config.lease) => extended,
            _ = stop.wait_for(|s| *s) => return,
        };
        match extended {
            Ok(extended) if extended.len() < running.len() => {
                tracing::debug!(
                    superseded = running.len() - extended.len(),
                    "some running attempts were superseded or already finished"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "extending task leases failed"),
        }
    }
}

async fn rescue_loop(pool: PgPool, config: ProcessorConfig, mut stop: watch::Receiver<bool>) {
    loop {
        // Abandoned on stop: one statement, so it either committed or did nothing, and
        // a database that is gone must not hold the shutdown up for a pool timeout.
        let rescued = tokio::select! {
            rescued = queue::rescue_expired(&pool, 1000) => rescued,
            _ = stop.wait_for(|s| *s) => return,
        };
        if let Err(error) = rescued {
            tracing::warn!(%error, "rescuing expired leases failed");
        }
        // The same sweep for tasks a claim parked while their kind's resume committed.
        let unparked = tokio::select! {
            unparked = crate::controls::unpark_resumed(&pool) => unparked,
            _ = stop.wait_for(|s| *s) => return,
        };
        if let Err(error) = unparked {
            tracing::warn!(%error, "unparking the tasks of resumed kinds failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(config.rescue_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
