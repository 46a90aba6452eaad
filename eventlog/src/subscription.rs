//! Subscriptions: a named consumer of the log, fed in commit order, exactly once.
//!
//! A subscription reads a batch after its checkpoint (see [`crate::log`]), opens a
//! transaction that moves the checkpoint past the batch (the `BEGIN` and the move in
//! one round trip, see `subscription/checkpoint.rs`), lets the consumer write whatever
//! it derives from the batch in that same transaction and commits. So the consumer's
//! effects and the checkpoint commit together or not at all: a crash mid-batch loses
//! nothing and repeats nothing.
//!
//! A consumer that waits on another system ([`Consumer::reads_ahead`]) has the next
//! batch read on a second connection of the subscription's during the batch, so the
//! reads and the waits overlap. That batch is kept only if the checkpoint commits, and
//! it is what the next read would return or a prefix of it (the log's commit-order
//! guard, [`crate::log`]).
//!
//! **Invariant:** one active instance per subscription name across all processes. The
//! instance that holds a session-level advisory lock on its own dedicated connection is
//! active, and every batch transaction runs *on that connection*. If the connection
//! dies, the lock is released and so is any uncommitted batch; the standby that takes
//! the lock next starts from the committed checkpoint. The batch transaction also
//! locks the checkpoint row and checks it still holds the position this instance last
//! wrote (compare-and-set), as a second fence.
//!
//! A batch commits without waiting for the WAL flush (`synchronous_commit = off` on the
//! subscription's connection). The consumer's effects and the checkpoint are in that one
//! transaction, so a database crash can lose only the last batches whole, effects and
//! checkpoint together, and the events are read again: nothing is lost or repeated. The
//! events themselves were committed durably before they could be read, and any later
//! synchronous commit flushes the batch too (the WAL is one sequence). What a consumer
//! must not do is act on another system in [`Consumer::handle`]; that belongs in
//! [`Consumer::deliver`], which runs before the transaction and is at least once anyway.
//! Waiting for the flush cost each batch a disk round trip (about 0.5 ms here) and every
//! read model that much staleness.
//!
//! Wake-ups come from LISTEN/NOTIFY (one listening connection per process, see
//! [`Wakeups`]), with polling as the fallback. A consumer that fails is retried with
//! exponential backoff, one event at a time so the failure names its event; the
//! subscription never skips it. Its error is visible in `subscription_checkpoints`.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use crate::log::{read_batch_copy, LogPosition, RecordedEvent};
use crate::shutdown::Shutdown;

mod checkpoint;
mod failures;

pub use checkpoint::checkpoint;
use checkpoint::{advance_statement, is_checkpoint_moved, load_checkpoint};
use failures::{
    backoff, deliver_caught, handle_caught, CONFLICT_BACKOFF_MAX, CONFLICT_RETRIES, RECONNECT_MAX,
};
pub use failures::{error_chain, is_conflict, is_outage, panic_message};

/// The error of a consumer or handler: anything, sent across tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a subscription feeds. Implementations write only through `tx`; anything else
/// they do is not covered by the exactly-once guarantee.
#[async_trait::async_trait]
pub trait Consumer: Send + 'static {
    /// Handles `events` (non-empty, in commit order) inside the batch transaction.
    /// Returning an error rolls the whole batch back; it will be offered again. The
    /// default writes nothing: for a consumer whose whole work is
    /// [`Consumer::deliver`] (the subscription still commits the checkpoint).
    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        let _ = (tx, events);
        Ok(())
    }

    /// Delivers `events` somewhere outside PostgreSQL (a message broker) *before* the
    /// batch transaction opens: waiting on another system inside it would hold a
    /// transaction id, and with it every reader of the log (see [`crate::log`]). An
    /// error fails the batch like [`Consumer::handle`] (retried, never skipped); once it
    /// returns `Ok` the checkpoint may move past `events`. A batch can be delivered more
    /// than once (a crash before the checkpoint commits, a moved checkpoint), so the
    /// receiving side must deduplicate, e.g. by event id. The default delivers nothing.
    async fn deliver(&mut self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        let _ = events;
        Ok(())
    }

    /// Whether the subscription should read the next batch while [`Consumer::deliver`]
    /// waits on the other system (a broker's acknowledgements), on a second connection,
    /// through the batch's transaction too. The batch read ahead is used only when this
    /// one's checkpoint commits; otherwise it is dropped and read again. Worth it only
    /// for consumers whose `deliver` waits on the network.
    fn reads_ahead(&self) -> bool {
        false
    }
}

/// Tunables of one subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    pub name: String,
    pub batch_size: i64,
    /// The most events one batch takes while the subscription catches up: after a full
    /// batch the next read takes twice as many, up to this; the first batch that is not
    /// full brings it back to `batch_size`. `None`: [`CATCH_UP_GROWTH`] × `batch_size`.
    /// A consumer whose batch size is a window elsewhere (the broker's acknowledgements)
    /// sets it to `batch_size`.
    pub max_batch_size: Option<i64>,
    /// Fallback poll when no notification arrives.
    pub poll_interval: Duration,
    /// How often a standby instance tries to become active.
    pub standby_interval: Duration,
    /// Cap of the backoff after consumer or database failures.
    pub max_backoff: Duration,
    /// After a notification finds the new rows held back by an older transaction still
    /// running, how long the subscription keeps reading again at once before it backs
    /// off from 1 ms (see `HeldBack`). `ZERO`, the default: three quick reads, then the
    /// back-off; every projection reads on every notification, and all of them spinning
    /// would cost the server more than their freshness is worth. The reactions, on the
    /// path from an event to its task, spin for longer.
    pub held_back_spin: Duration,
}

/// How much larger than `batch_size` a batch may grow while a subscription catches up
/// ([`SubscriptionOptions::max_batch_size`]). Each batch pays its own round trips (the
/// read, `BEGIN` with the checkpoint's move, `COMMIT`), during which the server
/// produces nothing for the reader; a subscription that is behind (a start from an old
/// checkpoint, a burst) spends fewer of them per event in larger batches, while one
/// that keeps up reads small ones.
pub const CATCH_UP_GROWTH: i64 = 4;

impl SubscriptionOptions {
    /// The most events one batch may take (see [`SubscriptionOptions::max_batch_size`]).
    pub fn batch_ceiling(&self) -> i64 {
        self.max_batch_size
            .unwrap_or(self.batch_size.saturating_mul(CATCH_UP_GROWTH))
            .max(self.batch_size)
    }

    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            batch_size: 1000,
            max_batch_size: None,
            poll_interval: Duration::from_millis(500),
            standby_interval: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            held_back_spin: Duration::ZERO,
        }
    }
}

/// What an instance of a subscription is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionState {
    Starting,
    /// Another instance holds the lock; this one waits to take over.
    Standby,
    /// Holds the lock and consumes.
    Active {
        position: LogPosition,
    },
    /// Holds the lock; the consumer keeps failing on the event at `position`.
    Failing {
        global_position: i64,
        error: String,
    },
    /// The database is unreachable; retrying.
    Disconnected,
    Stopped,
}

/// A running subscription instance.
pub struct SubscriptionHandle {
    pub state: watch::Receiver<SubscriptionState>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Broadcasts "the log may have grown" to every subscription of this process.
#[derive(Clone)]
pub struct Wakeups {
    rx: watch::Receiver<u64>,
}

pub const NOTIFY_CHANNEL: &str = "aula_events";

impl Wakeups {
    /// Opens the process's one listening connection. It reconnects by itself; after a
    /// reconnection it wakes everyone, since notifications sent meanwhile are lost.
    pub async fn listen(pool: &PgPool, shutdown: Shutdown) -> Result<Wakeups, sqlx::Error> {
        let rx = crate::listen::listen(pool, NOTIFY_CHANNEL, shutdown).await?;
        Ok(Wakeups { rx })
    }

    /// Wake-ups that never come: the subscription relies on polling alone.
    pub fn polling_only() -> Wakeups {
        let (tx, rx) = watch::channel(0u64);
        std::mem::forget(tx);
        Wakeups { rx }
    }
}

/// Starts an instance of the subscription `options.name`. It connects with
/// `connect` (its own connection, not a pooled one: see the module docs).
pub fn spawn<C: Consumer>(
    connect: PgConnectOptions,
    options: SubscriptionOptions,
    consumer: C,
    wakeups: Wakeups,
    shutdown: Shutdown,
) -> SubscriptionHandle {
    let (state_tx, state) = watch::channel(SubscriptionState::Starting);
    let runner = Runner {
        // See the module docs: a batch's commit does not wait for the WAL flush.
        connect: connect
            .application_name(&format!("aula subscription {}", options.name))
            .options([("synchronous_commit", "off")]),
        options,
        consumer,
        wakeups,
        shutdown,
        state: state_tx,
    };
    let task = tokio::spawn(runner.run());
    SubscriptionHandle { state, task }
}

struct Runner<C> {
    connect: PgConnectOptions,
    options: SubscriptionOptions,
    consumer: C,
    wakeups: Wakeups,
    shutdown: Shutdown,
    state: watch::Sender<SubscriptionState>,
}

enum Exit {
    Shutdown,
}

impl<C: Consumer> Runner<C> {
    async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            if self.shutdown.is_triggered() {
                break;
            }
            let outcome = match self.lead().await {
                Ok(Some(mut conn)) => {
                    failures = 0;
                    let outcome = self.consume(&mut conn).await;
                    // Closing releases the advisory lock at once for a standby.
                    let _ = conn.close().await;
                    outcome
                }
                Ok(None) => Ok(Exit::Shutdown),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(Exit::Shutdown) => break,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(subscription = %self.options.name, %error, "subscription lost its database; reconnecting");
                    self.state.send_replace(SubscriptionState::Disconnected);
                    // Reconnecting is cheap and every read model waits for it: try at
                    // least every RECONNECT_MAX, however long the outage lasted.
                    let pause = backoff(failures, self.options.max_backoff.min(RECONNECT_MAX));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.shutdown.wait() => break,
                    }
                }
            }
        }
        self.state.send_replace(SubscriptionState::Stopped);
    }

    /// Connects and waits until this instance holds the subscription's lock.
    /// `Ok(None)` on shutdown.
    async fn lead(&mut self) -> Result<Option<PgConnection>, sqlx::Error> {
        let mut conn = PgConnection::connect_with(&self.connect).await?;
        loop {
            let locked: bool = sqlx::query_scalar(
                "SELECT pg_try_advisory_lock(hashtextextended('aula.subscription/' || $1, 0))",
            )
            .bind(&self.options.name)
            .fetch_one(&mut conn)
            .await?;
            if locked {
                return Ok(Some(conn));
            }
            if *self.state.borrow() != SubscriptionState::Standby {
                tracing::info!(subscription = %self.options.name, "another instance is active; standing by");
                self.state.send_replace(SubscriptionState::Standby);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.options.standby_interval) => {}
                _ = self.shutdown.wait() => return Ok(None),
            }
        }
    }

    async fn consume(&mut self, conn: &mut PgConnection) -> Result<Exit, sqlx::Error> {
        let name = self.options.name.clone();
        sqlx::query(
            "INSERT INTO subscription_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(&name)
        .execute(&mut *conn)
        .await?;
        let mut checkpoint = load_checkpoint(conn, &name).await?;
        tracing::info!(subscription = %name, ?checkpoint, "subscription active");
        self.state.send_replace(SubscriptionState::Active {
            position: checkpoint,
        });

        let mut wake = self.wakeups.rx.clone();
        wake.mark_unchanged();
        let mut limit = self.options.batch_size;
        let mut consumer_failures = 0u32;
        // After a batch fails, events are offered one at a time up to the end of that
        // batch, so the failure is pinned to one event and the rest still progress.
        let mut isolate_until: Option<LogPosition> = None;
        // After a notification finds nothing readable, an older transaction still
        // running holds the new rows back: look again soon, backing off to the poll.
        let mut held_back: Option<HeldBack> = None;
        // The batch after `checkpoint`, read while the previous one was delivered (see
        // `Consumer::reads_ahead`); only ever set right after that batch's checkpoint
        // committed, so it starts exactly where `checkpoint` ends.
        let mut read_ahead: Option<Vec<RecordedEvent>> = None;
        // The second connection that reads ahead, opened when first needed. It reads
        // only, holds no lock and is closed with the subscription's.
        let mut reader: Option<PgConnection> = None;
        // Conflicts in a row of the batch being offered (see `is_conflict`).
        let mut conflicts = 0u32;
        // Batches in a row the database could not run at all (see `is_outage`).
        let mut outages = 0u32;

        loop {
            if self.shutdown.is_triggered() {
                return Ok(Exit::Shutdown);
            }
            let batch = match read_ahead.take() {
                Some(batch) => batch,
                None => read_batch_copy(conn, checkpoint, limit).await?,
            };
            if batch.is_empty() {
                if let Some(held) = &mut held_back {
                    if held.quick_rereads_left > 0
                        || held.since.elapsed() < self.options.held_back_spin
                    {
                        held.quick_rereads_left = held.quick_rereads_left.saturating_sub(1);
                        tokio::task::yield_now().await;
                        continue;
                    }
                    let wait = held.wait;
                    let next = (wait * 2).min(self.options.poll_interval);
                    if next < self.options.poll_interval {
                        held.wait = next;
                    } else {
                        held_back = None;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.wait() => return Ok(Exit::Shutdown),
                    }
                    continue;
                }
                tokio::select! {
                    changed = wake.changed() => {
                        if changed.is_err() {
                            // The listener is gone (shutdown): rely on polling.
                            tokio::time::sleep(self.options.poll_interval).await;
                        }
                        held_back = Some(HeldBack::new());
                    }
                    _ = tokio::time::sleep(self.options.poll_interval) => {}
                    _ = self.shutdown.wait() => return Ok(Exit::Shutdown),
                }
                continue;
            }
            held_back = None;
            let Some(last_position) = batch.last().map(|event| event.position) else {
                continue;
            };

            // For a consumer that waits on another system, the next batch is read on a
            // second connection while this one is delivered, handled and committed; not
            // while a failure is isolated one event at a time. (Reading ahead after every
            // full batch, for all subscriptions, was tried in session 15: the log read
            // beside COPY went from 0.74 to 0.93, but the application rush ran 2-25 %
            // slower in four interleaved pairs, so it was taken back.)
            let read_next = isolate_until.is_none() && self.consumer.reads_ahead();
            let (offered, next) = if read_next {
                let mut reading = match reader.take() {
                    Some(reading) => reading,
                    None => PgConnection::connect_with(&self.connect).await?,
                };
                let (offered, next) = tokio::join!(
                    self.offer(conn, &batch, checkpoint, last_position),
                    read_batch_copy(&mut reading, last_position, limit)
                );
                // A failed read drops its connection (see `read_batch_copy`); the loop
                // reads that batch again on the subscription's own.
                let next = match next {
                    Ok(next) => {
                        reader = Some(reading);
                        Some(next)
                    }
                    Err(error) => {
                        tracing::debug!(subscription = %name, %error, "reading ahead failed");
                        None
                    }
                };
                (offered?, next)
            } else {
                (
                    self.offer(conn, &batch, checkpoint, last_position).await?,
                    None,
                )
            };
            match offered {
                Offered::Moved(stored) => {
                    // A rebuild swapped in new tables and set the checkpoint (or, were the
                    // lock ever broken, another instance consumed): never write over it.
                    tracing::info!(subscription = %name, ?stored, ?checkpoint, "checkpoint was moved by someone else (e.g. a rebuild); continuing from it");
                    checkpoint = stored;
                }
                Offered::Committed => {
                    checkpoint = last_position;
                    conflicts = 0;
                    outages = 0;
                    // Read after `last_position` before the commit: exactly what the next
                    // read would return, or a prefix of it (events committed meanwhile
                    // come in the batch after). An empty read is not kept: the loop reads
                    // again, then waits for a notification.
                    read_ahead = next.filter(|next| !next.is_empty());
                    if isolate_until.is_some_and(|end| checkpoint >= end) {
                        isolate_until = None;
                    }
                    limit = if isolate_until.is_some() {
                        1
                    } else if batch.len() as i64 >= limit {
                        // Full: more is waiting. Take more per round trip.
                        limit.saturating_mul(2).min(self.options.batch_ceiling())
                    } else {
                        self.options.batch_size
                    };
                    if consumer_failures > 0 {
                        tracing::info!(subscription = %name, "consumer recovered");
                        consumer_failures = 0;
                    }
                    self.state.send_replace(SubscriptionState::Active {
                        position: checkpoint,
                    });
                }
                // A conflict with another transaction (a deadlock, a serialization
                // failure) says nothing about the batch's events: run the same batch
                // again at once, a few times, before treating it as a failing one.
                // Isolating it one event at a time instead let a stream of such
                // conflicts (webhook deliveries against the reactions) hold the
                // reactions to a few events a second for minutes.
                Offered::Failed(error) if conflicts < CONFLICT_RETRIES && is_conflict(&*error) => {
                    conflicts += 1;
                    tracing::warn!(subscription = %name, attempt = conflicts, error = %error_chain(&*error), "the batch conflicted with another transaction; running it again");
                    let pause = backoff(conflicts, CONFLICT_BACKOFF_MAX) / 4;
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.shutdown.wait() => return Ok(Exit::Shutdown),
                    }
                }
                // The database could not run the batch at all (its disk full, shutting
                // down, out of connections): nothing is wrong with the batch's events.
                // Run it again whole, backing off up to `RECONNECT_MAX`, shown
                // `Disconnected`, not failing. Isolating it one event at a time with the
                // consumer's back-off (up to 30 s) kept the read models 21 s behind after
                // a full disk was freed (session 17's probe).
                Offered::Failed(error) if is_outage(&*error) => {
                    conflicts = 0;
                    outages += 1;
                    tracing::warn!(subscription = %name, attempt = outages, error = %error_chain(&*error), "the database could not run the batch; running it again");
                    self.state.send_replace(SubscriptionState::Disconnected);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(outages, RECONNECT_MAX)) => {}
                        _ = self.shutdown.wait() => return Ok(Exit::Shutdown),
                    }
                }
                Offered::Failed(error) => {
                    conflicts = 0;
                    outages = 0;
                    consumer_failures += 1;
                    let failed = &batch[0];
                    let message = error_chain(&*error);
                    if batch.len() == 1 {
                        tracing::error!(subscription = %name, global_position = failed.global_position(), event_type = %failed.event_type, attempt = consumer_failures, error = %message, "consumer failed on an event; it will be retried, not skipped");
                        sqlx::query(
                            "UPDATE subscription_checkpoints
                             SET last_error = $2, failed_position = $3,
                                 failing_since = COALESCE(failing_since, now()),
                                 attempts = attempts + 1, updated_at = now()
                             WHERE name = $1",
                        )
                        .bind(&name)
                        .bind(&message)
                        .bind(failed.global_position())
                        .execute(&mut *conn)
                        .await?;
                        self.state.send_replace(SubscriptionState::Failing {
                            global_position: failed.global_position(),
                            error: message,
                        });
                    }
                    // Retry one event at a time so the failure names its event.
                    isolate_until =
                        Some(isolate_until.map_or(last_position, |end| end.max(last_position)));
                    limit = 1;
                    let pause = backoff(consumer_failures, self.options.max_backoff);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.shutdown.wait() => return Ok(Exit::Shutdown),
                    }
                }
            }
        }
    }

    /// Offers a non-empty `batch` (ending at `last`) after `checkpoint`: delivers it
    /// (outside the transaction: see [`Consumer::deliver`]), then handles it and moves
    /// the checkpoint in one transaction on `conn`, compare-and-set against
    /// `checkpoint`. A consumer's failure rolls the batch back and is returned as
    /// [`Offered::Failed`]; only the database's errors are `Err`.
    async fn offer(
        &mut self,
        conn: &mut PgConnection,
        batch: &[RecordedEvent],
        checkpoint: LogPosition,
        last: LogPosition,
    ) -> Result<Offered, sqlx::Error> {
        let name = &self.options.name;
        let delivered = deliver_caught(&mut self.consumer, batch).await;
        // One round trip opens the transaction and moves the checkpoint (locking its
        // row first, as before: the lock order is unchanged). A failing consumer rolls
        // the move back with its own writes.
        let advance = advance_statement(name, checkpoint, last, batch);
        let error = match conn.begin_with(advance).await {
            Ok(tx) => return self.handle_in(tx, batch, delivered).await,
            Err(error) => error,
        };
        if !is_checkpoint_moved(&error) {
            return Err(error);
        }
        // The statement failed inside the transaction it opened: end it.
        sqlx::query("ROLLBACK").execute(&mut *conn).await?;
        Ok(Offered::Moved(load_checkpoint(conn, name).await?))
    }

    /// Handles `batch` in `tx`, which moved the checkpoint past it, and commits; or
    /// rolls back when the consumer (or its delivery) failed.
    async fn handle_in(
        &mut self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        batch: &[RecordedEvent],
        delivered: Result<(), BoxError>,
    ) -> Result<Offered, sqlx::Error> {
        let name = &self.options.name;
        // When spans are exported: each event's trace gets this step (held until the
        // batch commits or fails).
        let event_spans = crate::trace::subscription_spans(name, batch);
        let handled = match delivered {
            Ok(()) => handle_caught(&mut self.consumer, &mut tx, batch).await,
            Err(error) => Err(error),
        };
        if let Err(error) = handled {
            tx.rollback().await?;
            // The whole batch was rolled back: each event's step failed.
            let message = error_chain(&*error);
            for span in &event_spans {
                crate::trace::record_error(span, "consumer_failed", &message);
            }
            return Ok(Offered::Failed(error));
        }
        tx.commit().await?;
        Ok(Offered::Committed)
    }
}

/// How a subscription looks again after a notification found nothing readable: the
/// new rows are held back by an older transaction still running (the log's commit-order
/// guard), usually one about to commit (a worker's completion, a claim). It reads again
/// at once a few times, each read a round trip of a tenth of a millisecond, then backs
/// off from 1 ms. Sleeping first cost an event held back this way a whole millisecond
/// or two (tokio's timers tick in milliseconds): in `aula bench latency`, most events
/// were read only on the second try. A subscription with a
/// [`SubscriptionOptions::held_back_spin`] reads again at once for that long: what holds
/// the rows back is often a synchronous commit waiting for its flush (a worker's
/// completion), which takes longer than three round trips, and less than the first
/// millisecond's sleep that followed them (`aula bench latency`: 4.7 reads per event
/// beyond the two it needs, so most events slept at least once).
struct HeldBack {
    quick_rereads_left: u32,
    since: std::time::Instant,
    wait: Duration,
}

impl HeldBack {
    const QUICK_REREADS: u32 = 3;

    fn new() -> HeldBack {
        HeldBack {
            quick_rereads_left: Self::QUICK_REREADS,
            since: std::time::Instant::now(),
            wait: Duration::from_millis(1),
        }
    }
}

/// What became of a batch offered to the consumer ([`Runner::offer`]).
enum Offered {
    /// Handled; the checkpoint is at the batch's last event.
    Committed,
    /// The stored checkpoint is not where this instance left it: nothing was handled.
    Moved(LogPosition),
    /// The consumer failed; the batch was rolled back.
    Failed(BoxError),
}
