//! Running commands against aggregates and appending their events.
//!
//! Aggregates are cqrs-es [`Aggregate`]s; they are loaded through postgres-es's
//! repository in event-store mode (snapshots are broken in cqrs-es 0.5.0) with the
//! domain's upcasters. The append is ours rather than `CqrsFramework::execute`'s for
//! two reasons: callers need the global position and id of what was appended (for
//! read-your-writes and causation), and a command that loses an optimistic
//! concurrency race must be retried on fresh state, a bounded number of times.
//!
//! We deliberately register no cqrs-es `Query`: those run inline after commit and are
//! lost on a crash. Read models and reactions read the log (see [`crate::subscription`]).
//!
//! **Invariant:** all events of one command are appended by one statement, so they
//! commit together or not at all, and a concurrent writer of the same aggregate makes
//! that statement fail on the `(aggregate_type, aggregate_id, sequence)` key.

use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::lane::Lane;
use crate::metadata::EventMetadata;

/// Where an appended event landed in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub event_id: Uuid,
    pub global_position: i64,
    pub sequence: i64,
}

/// The outcome of an accepted command.
#[derive(Debug)]
pub struct Committed<A: Aggregate> {
    pub aggregate_id: String,
    /// The events in the order they were decided; empty when the command decided
    /// nothing needed to change.
    pub events: Vec<A::Event>,
    pub appended: Vec<Appended>,
    /// How many attempts it took (1 unless it lost concurrency races).
    pub attempts: u32,
}

impl<A: Aggregate> Committed<A> {
    /// The global position of the last appended event, if any.
    pub fn last_position(&self) -> Option<i64> {
        self.appended.last().map(|a| a.global_position)
    }
}

/// Infrastructure failure: the database or the stored data, never a business rule.
/// Only `Corrupt` and `Serialize` are permanent (see [`StoreError::is_permanent`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event does not decode: retrying cannot help.
    #[error("stored events could not be read: {0}")]
    Corrupt(String),
    /// The events could not be fetched for a reason other than their content (the
    /// stream broke off): worth retrying, like `Database`.
    #[error("stored events could not be fetched: {0}")]
    Unavailable(String),
    #[error("events could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl StoreError {
    /// Whether trying again can never help: the stored data does not decode, or our
    /// own events do not serialize. Pool timeouts, lost connections, serialization
    /// failures and every other database error are transient.
    pub fn is_permanent(&self) -> bool {
        matches!(self, StoreError::Corrupt(_) | StoreError::Serialize(_))
    }
}

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command: a business rejection, not a failure.
    #[error("rejected: {0}")]
    Rejected(E),
    /// Other writers kept changing the aggregate; every attempt lost the race.
    #[error("the command lost {attempts} optimistic-concurrency races; retry later")]
    Conflict { attempts: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Executes commands for one aggregate type.
pub struct CommandBus<A: Aggregate> {
    /// Connections for the appends (see [`crate::lane`]).
    lane: Lane,
    store: PersistedEventStore<PostgresEventRepository, A>,
    services: A::Services,
    max_attempts: u32,
    notifier: LogNotifier,
    cache: AggregateCache<A>,
}

/// Recently written aggregates, so a command on a hot aggregate skips the load query.
///
/// **Invariant:** the cache is only ever a guess. An append from a cached state that
/// another writer has moved on fails on the sequence key exactly like a fresh one and
/// is retried on a fresh load; a rejection or a no-op decided on cached state is
/// re-decided on a fresh load before it is reported, so no answer rests on stale state.
struct AggregateCache<A> {
    entries: std::sync::Mutex<std::collections::HashMap<String, (A, usize)>>,
    capacity: usize,
}

impl<A: Clone> AggregateCache<A> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: Default::default(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (A, usize)>> {
        // A panic while holding the lock cannot leave an entry half-written.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<(A, usize)> {
        self.lock().get(id).cloned()
    }

    fn put(&self, id: &str, aggregate: A, sequence: usize) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(id) {
            // Crude but bounded: start over rather than track recency.
            entries.clear();
        }
        entries.insert(id.to_owned(), (aggregate, sequence));
    }

    fn evict(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// Wakes the log's subscribers after events were committed.
///
/// The NOTIFY is sent after the writer's commit, by one background task per
/// notifier, and coalesced: any number of appends while a NOTIFY is in flight cause
/// one more. Sending it inside the writing transaction (e.g. from a trigger) would make
/// PostgreSQL serialize every writer's commit, WAL flush included, behind its global
/// notification lock. Its own commit skips the WAL flush (`synchronous_commit=off`):
/// a lost wake-up only delays readers until their next poll. Under a steady stream of
/// appends the task keeps its connection between wake-ups (a `Lane` of one), so a
/// wake-up costs one round trip rather than three; the task ends with the last clone.
#[derive(Clone)]
pub struct LogNotifier {
    pool: PgPool,
    /// Capacity 1: a poke while one is already queued is absorbed (pokes coalesce).
    pokes: std::sync::Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<()>>>,
}

impl LogNotifier {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            pokes: Default::default(),
        }
    }

    /// Asks for a NOTIFY soon. Cheap, never blocks, never fails. Must be called
    /// from within a Tokio runtime.
    pub fn poke(&self) {
        let pokes = self.pokes.get_or_init(|| {
            let (pokes, received) = tokio::sync::mpsc::channel(1);
            tokio::spawn(send_wakeups(Lane::single(self.pool.clone()), received));
            pokes
        });
        // Full: a wake-up is already due, which covers this append too.
        let _ = pokes.try_send(());
    }
}

/// The notifier's task: one NOTIFY per received poke (they coalesce in the channel).
async fn send_wakeups(lane: Lane, mut pokes: tokio::sync::mpsc::Receiver<()>) {
    while pokes.recv().await.is_some() {
        let sent = match lane.acquire().await {
            Ok(mut connection) => {
                let sent = notify_now(&mut *connection).await;
                if sent.is_ok() {
                    lane.park(connection);
                }
                sent
            }
            Err(error) => Err(error),
        };
        if let Err(error) = sent {
            tracing::debug!(%error, "could not send a wake-up; readers will poll");
        }
    }
}

/// Sends one wake-up to every subscriber now (on a pool or a connection).
pub async fn notify_now<'c, E>(executor: E) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
        .bind(crate::subscription::NOTIFY_CHANNEL)
        .execute(executor)
        .await
        .map(|_| ())
}

const APPEND_SQL: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload::json, $7::json
FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[]) AS e(sequence, event_type, event_version, payload)
RETURNING event_id, global_position, sequence";

impl<A> CommandBus<A>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
{
    pub fn new(pool: PgPool, services: A::Services) -> Self {
        Self::with_upcasters(pool, services, Vec::new())
    }

    pub fn with_upcasters(
        pool: PgPool,
        services: A::Services,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> Self {
        let repository = PostgresEventRepository::new(pool.clone());
        let store = PersistedEventStore::new_event_store(repository).with_upcasters(upcasters);
        Self {
            notifier: LogNotifier::new(pool.clone()),
            lane: Lane::new(pool),
            store,
            services,
            max_attempts: 8,
            cache: AggregateCache::new(10_000),
        }
    }

    /// How many aggregates to keep in memory between commands (0 disables the cache).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = AggregateCache::new(capacity);
        self
    }

    /// Shares one notifier between buses (one wake-up task instead of one per bus).
    pub fn with_notifier(mut self, notifier: LogNotifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// How many times a command is tried when it keeps losing concurrency races.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn services(&self) -> &A::Services {
        &self.services
    }

    /// Loads the aggregate's current state (for queries that need the decision model).
    pub async fn load(&self, aggregate_id: &str) -> Result<(A, usize), StoreError> {
        let context = self
            .store
            .load_aggregate(aggregate_id)
            .await
            .map_err(load_error)?;
        Ok((context.aggregate, context.current_sequence))
    }

    /// Loads the aggregate, lets it decide, appends what it decided. On a lost race
    /// the whole cycle runs again on fresh state, with a short jittered pause.
    ///
    /// Runs in a `command` span, each append in an `events.append` PRODUCER span; when
    /// spans are exported, the append span's trace context is stored in the events'
    /// metadata (unless the caller put one there) so that whoever handles the events
    /// continues the trace (see [`crate::trace`]).
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        self.execute_in_span(aggregate_id, command, metadata, false)
            .await
    }

    /// [`execute`](Self::execute) for a command that nearly always starts its stream
    /// (an application: one stream per applicant and course). Without a cached state it
    /// decides on the empty aggregate instead of loading the stream, which saves the
    /// load query, one round trip of each such command.
    ///
    /// The guess is treated like a cache entry: an append on a stream that did exist
    /// fails on the sequence key and is re-decided at once on a fresh load, and a
    /// rejection or a no-op decided on the guess is re-decided on a fresh load before it
    /// is reported. So every answer is the one [`execute`](Self::execute) would give.
    pub async fn execute_expecting_new(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        self.execute_in_span(aggregate_id, command, metadata, true)
            .await
    }

    async fn execute_in_span(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        expect_new: bool,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let span = tracing::info_span!("command", aggregate = A::TYPE, aggregate_id);
        let map = metadata.to_map();
        self.execute_with_map(aggregate_id, command, &map, expect_new)
            .instrument(span)
            .await
    }

    async fn execute_with_map(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &std::collections::HashMap<String, String>,
        expect_new: bool,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let metadata_json = serde_json::to_string(metadata).map_err(StoreError::from)?;
        // Each append's own context goes into its events' metadata (spans exported only).
        let traced =
            crate::trace::enabled() && !metadata.contains_key(crate::metadata::TRACEPARENT);
        let mut attempt = 0;
        let mut use_cache = true;
        loop {
            attempt += 1;
            let cached = if use_cache {
                self.cache
                    .get(aggregate_id)
                    .or_else(|| expect_new.then(|| (A::default(), 0)))
            } else {
                None
            };
            let from_cache = cached.is_some();
            let (mut aggregate, current_sequence) = match cached {
                Some(entry) => entry,
                None => self.load(aggregate_id).await?,
            };
            let sink = EventSink::<A>::default();
            let decided = aggregate
                .handle(command.clone(), &self.services, &sink)
                .await;
            let events = sink.collect().await;
            if from_cache && (decided.is_err() || events.is_empty()) {
                // Never answer "no" (or "nothing to do") from a possibly stale copy.
                self.cache.evict(aggregate_id);
                use_cache = false;
                attempt -= 1;
                continue;
            }
            decided.map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(Committed {
                    aggregate_id: aggregate_id.to_owned(),
                    events,
                    appended: Vec::new(),
                    attempts: attempt,
                });
            }
            let producer = crate::trace::producer_span(events.len());
            let context = traced
                .then(|| crate::trace::TraceContext::of(&producer))
                .flatten();
            let traced_json = match context {
                Some(context) => {
                    let mut map = metadata.clone();
                    context.insert_into(&mut map);
                    Some(serde_json::to_string(&map).map_err(StoreError::from)?)
                }
                None => None,
            };
            let json = traced_json.as_deref().unwrap_or(&metadata_json);
            let appended = self
                .append(aggregate_id, current_sequence, &events, json)
                .instrument(producer.clone())
                .await;
            if let Err(AppendError::Store(error)) = &appended {
                crate::trace::record_error(&producer, "StoreError", &error.to_string());
            }
            drop(producer);
            match appended {
                Ok(appended) => {
                    self.notifier.poke();
                    for event in &events {
                        crate::metrics::EVENTS_APPENDED
                            .with([&event.event_type()])
                            .inc();
                    }
                    // `sink.write` applied each event, so `aggregate` is the new state.
                    self.cache
                        .put(aggregate_id, aggregate, current_sequence + events.len());
                    return Ok(Committed {
                        aggregate_id: aggregate_id.to_owned(),
                        events,
                        appended,
                        attempts: attempt,
                    });
                }
                Err(AppendError::Conflict) => {
                    self.cache.evict(aggregate_id);
                    use_cache = false;
                    if from_cache {
                        // A stale cache entry is not a lost race: reload at once.
                        attempt -= 1;
                        continue;
                    }
                    if attempt >= self.max_attempts {
                        return Err(CommandError::Conflict { attempts: attempt });
                    }
                    tracing::debug!(
                        aggregate = A::TYPE,
                        aggregate_id,
                        attempt,
                        "lost a concurrency race; retrying"
                    );
                    backoff(attempt).await;
                }
                Err(AppendError::Store(e)) => {
                    self.cache.evict(aggregate_id);
                    return Err(CommandError::Store(e));
                }
            }
        }
    }

    async fn append(
        &self,
        aggregate_id: &str,
        current_sequence: usize,
        events: &[A::Event],
        metadata_json: &str,
    ) -> Result<Vec<Appended>, AppendError> {
        let mut sequences = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        let mut versions = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            sequences.push((current_sequence + index + 1) as i64);
            types.push(event.event_type());
            versions.push(event.event_version());
            payloads.push(serde_json::to_string(event).map_err(StoreError::from)?);
        }
        let database = crate::trace::database_span("INSERT", "events");
        let result: Result<Vec<(Uuid, i64, i64)>, sqlx::Error> = async {
            let mut connection = self.lane.acquire().await?;
            let result = sqlx::query_as(APPEND_SQL)
                .bind(A::TYPE)
                .bind(aggregate_id)
                .bind(&sequences)
                .bind(&types)
                .bind(&versions)
                .bind(&payloads)
                .bind(metadata_json)
                .fetch_all(&mut *connection)
                .await;
            // A lost race or any error the server reported leaves the connection idle
            // and in sync; anything else (I/O) sends it back through the pool's check.
            if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
                self.lane.park(connection);
            }
            result
        }
        .instrument(database.clone())
        .await;
        if let Err(error) = &result {
            crate::trace::record_database_error(&database, error);
        }
        match result {
            Ok(rows) => {
                let mut appended: Vec<Appended> = rows
                    .into_iter()
                    .map(|(event_id, global_position, sequence)| Appended {
                        event_id,
                        global_position,
                        sequence,
                    })
                    .collect();
                // RETURNING gives no order guarantee.
                appended.sort_by_key(|a| a.sequence);
                Ok(appended)
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                Err(AppendError::Conflict)
            }
            Err(e) => Err(AppendError::Store(e.into())),
        }
    }
}

enum AppendError {
    Conflict,
    Store(StoreError),
}

impl From<StoreError> for AppendError {
    fn from(error: StoreError) -> Self {
        AppendError::Store(error)
    }
}

/// Classes a load failure. Only what is proven permanent is `Corrupt`: a stored event
/// that does not decode. Everything on the way to the rows (pool timeouts, lost
/// connections, I/O, server errors) is `Database` or `Unavailable`: worth retrying.
/// (postgres-es reports most `sqlx` errors, a pool timeout included, as "unexpected",
/// so the variant alone says nothing; the error inside does.)
fn load_error<E: std::error::Error>(error: AggregateError<E>) -> StoreError {
    match error {
        AggregateError::DeserializationError(e) => StoreError::Corrupt(e.to_string()),
        AggregateError::DatabaseConnectionError(e) | AggregateError::UnexpectedError(e) => {
            match e.downcast::<sqlx::Error>() {
                Ok(e) => StoreError::Database(*e),
                Err(e) => match e.downcast::<serde_json::Error>() {
                    Ok(e) if e.is_data() || e.is_syntax() => StoreError::Corrupt(e.to_string()),
                    Ok(e) => StoreError::Unavailable(e.to_string()),
                    Err(e) => StoreError::Unavailable(e.to_string()),
                },
            }
        }
        // Neither can come out of a load; if one ever does, retrying is the safe side.
        other @ (AggregateError::UserError(_) | AggregateError::AggregateConflict) => {
            StoreError::Unavailable(other.to_string())
        }
    }
}

async fn backoff(attempt: u32) {
    use rand::Rng;
    let base = 2u64.saturating_pow(attempt.min(6));
    let jitter = rand::thread_rng().gen_range(0..=base);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// Turns a stored row back into a cqrs-es envelope (used by readers that want typed
/// events; upcasting must already have happened).
pub fn envelope<A: Aggregate>(event: SerializedEvent) -> Result<EventEnvelope<A>, StoreError> {
    EventEnvelope::<A>::try_from(event).map_err(|e| StoreError::Corrupt(e.to_string()))
}
