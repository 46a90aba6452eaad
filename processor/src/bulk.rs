//! Bulk reprocessing: re-emit a copy ([`reprocess_event`](crate::reprocess::reprocess_event)) of every event of the admin
//! list that matches a filter, in the background.
//!
//! - [`preview`] counts what a filter matches now (total, by type, by processing
//!   status) and fixes its bound, `up_to` (see "The bound"): a job started from that
//!   preview never includes events that reached the list later.
//! - [`start`] records a job in `bulk_reprocess_jobs` (who asked, the filter, the
//!   bound; the row is the audit trail) and runs it on a Tokio task in batches,
//!   paging by `global_position`. [`start_confirmed`] also records the SHA-256 of the
//!   confirm token under a unique index: a token starts one job
//!   ([`BulkError::ConfirmTokenUsed`] the second time).
//! - [`cancel`] sets `status = 'cancelled'`; the job stops before its next batch.
//!
//! Copies themselves (`reprocessed_from` set) are never selected.
//!
//! ## The bound
//! The bound is the `admin_events` projection's checkpoint when the preview is taken,
//! a [`LogPosition`] `(tx_id, global_position)` in the log's commit order, checked on
//! each row's own `(tx_id, global_position)`. The projection commits its rows with its
//! checkpoint and the log reader never hands it an event at or before its checkpoint
//! again, so the rows at or before the bound are exactly those the list held then
//! (rows the processor wrote ahead of the projection are after it), and whatever
//! reaches the list later is after it. The log's last `global_position` would not do:
//! positions are taken at insert, so an event inserted before the preview and
//! committed after it has a smaller one.
//!
//! ## The set
//! A job works on the events its filter matched when it started: [`create_job`] records
//! them in `bulk_reprocess_members` in the job's own transaction, and `total` is their
//! number. Each batch takes the next members in log order and copies those that still
//! match the filter; an event that starts matching later (its tasks failed after the
//! start) is not a member, so `done + failed + skipped` never exceeds `total`. Jobs
//! recorded before the members were (migration 0053, `fixed_members` false) filter the
//! list as before and stop once they have copied `total` events.
//!
//! ## Resuming
//! A job is owned by one runner (`owner`) until `lease_until`. Each batch is one
//! transaction: lock the job row, check it is still `running`, ours, and at the
//! `position` we expect; append the copies; move `position` to the batch's last
//! member's log position, add to `done`/`failed` and extend the lease. An event the job's total
//! counted but whose batch no longer matched the filter (a single `reprocessEvent`
//! resolved it meanwhile, or its status changed) is counted `skipped` when the job ends,
//! so a `done` job's `done + failed + skipped` is its `total`. A runner that dies (process
//! killed, connection dropped, task aborted) loses its batch in flight with its
//! transaction; [`run_resumer`] (started by every processor) takes over a `running`
//! job whose lease expired ([`take_over_expired`]) and continues after its `position`.
//! So every matching event is copied exactly once, whoever finishes the job.

use std::time::Duration;

use aula_eventlog::{Actor, LogPosition};
use aula_projections::admin_events::EventListQuery;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::reprocess::{append_copy, count_appended, ReprocessError};

mod filter;
mod resume;
pub use filter::BulkFilter;
pub use resume::{run_resumer, take_over_expired};

/// Events per batch by default.
pub const DEFAULT_BATCH_SIZE: i64 = 200;

/// What a filter matches now; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub count: i64,
    pub by_type: Vec<(String, i64)>,
    pub by_status: Vec<(String, i64)>,
    /// Of the events the filter matches, how many their latest copy already resolved
    /// (its tasks succeeded). Unless the filter asks for them (`resolved`), they are
    /// left out of `count` and of the job: running the same bulk again does not copy
    /// what the last one fixed.
    pub already_resolved: i64,
    /// The bound (see the module docs).
    pub up_to: LogPosition,
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("bulk reprocessing job {0} not found")]
    JobNotFound(Uuid),
    #[error("this confirm token has already started a job")]
    ConfirmTokenUsed,
    #[error("invalid filter: {0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A bulk reprocessing job as recorded.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct BulkJob {
    pub id: Uuid,
    pub filter: Value,
    /// With `up_to_position`, the job's bound (see the module docs).
    pub up_to_tx: i64,
    pub up_to_position: i64,
    pub institution_id: Option<Uuid>,
    pub requested_by: String,
    /// `running`, `cancelled`, `done` or `failed`.
    pub status: String,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    /// Events counted in `total` that no longer matched the filter when their batch
    /// came (resolved meanwhile by a single reprocess, or their status changed); set
    /// when the job ends `done`.
    pub skipped: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub error: Option<String>,
    /// What became of the copies' tasks so far ([`job`] counts them).
    #[sqlx(skip)]
    pub outcomes: CopyOutcomes,
}

/// The copies a job wrote, by their processing status now (`bulk_reprocess_copies`
/// joined with `admin_events`): a copy the processor has not seen yet is running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CopyOutcomes {
    /// Copies whose tasks all succeeded (or that issue none).
    pub succeeded: i64,
    /// Copies with a task that failed for good.
    pub failed: i64,
    /// Copies whose tasks are still pending or running.
    pub running: i64,
}

/// How a job runs; [`start`] uses the defaults.
#[derive(Debug, Clone, Copy)]
pub struct BulkOptions {
    pub batch_size: i64,
    /// A pause between batches (none by default).
    pub pause: Duration,
    /// How long a runner owns a job without committing a batch (default 30 s); another
    /// service takes the job over after that.
    pub lease: Duration,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            batch_size: DEFAULT_BATCH_SIZE,
            pause: Duration::ZERO,
            lease: Duration::from_secs(30),
        }
    }
}

/// The admin list's own filters (`admin_events::push_filters`, so a preview counts
/// exactly what the list shows), restricted to originals at or before the bound `up_to`.
fn push_filters(sql: &mut QueryBuilder<'_, Postgres>, query: &EventListQuery, up_to: LogPosition) {
    sql.push(" AND reprocessed_from IS NULL AND (tx_id, global_position) <= (")
        .push_bind(up_to.tx_id)
        .push("::bigint, ")
        .push_bind(up_to.global_position)
        .push("::bigint)");
    aula_projections::admin_events::push_filters(sql, query);
}

async fn grouped(
    pool: &PgPool,
    column: &str,
    query: &EventListQuery,
    up_to: LogPosition,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "SELECT {column}, count(*) FROM admin_events WHERE true"
    ));
    push_filters(&mut sql, query, up_to);
    sql.push(format!(" GROUP BY {column} ORDER BY {column}"));
    sql.build_query_as().fetch_all(pool).await
}

/// The bound a preview taken now gets: the `admin_events` projection's checkpoint
/// ([`LogPosition::START`] before it has handled anything).
pub async fn current_bound(pool: &PgPool) -> Result<LogPosition, sqlx::Error> {
    Ok(
        aula_eventlog::subscription::checkpoint(pool, aula_projections::admin_events::NAME)
            .await?
            .unwrap_or(LogPosition::START),
    )
}

/// What `query`'s filters match now (see "The bound").
pub async fn preview(pool: &PgPool, query: &EventListQuery) -> Result<Preview, BulkError> {
    let up_to = current_bound(pool).await?;
    preview_at(pool, &BulkFilter::from(query), up_to).await
}

/// The preview of `query` and the filter a job started from it keeps: unless
/// `include_resolved` (or the query says itself which to take), the events their
/// latest copy already resolved are left out, and counted in `already_resolved`.
pub async fn preview_for(
    pool: &PgPool,
    query: &EventListQuery,
    include_resolved: bool,
) -> Result<(Preview, BulkFilter), BulkError> {
    let up_to = current_bound(pool).await?;
    let mut filter = BulkFilter::from(query);
    let all = preview_at(pool, &filter, up_to).await?;
    if include_resolved || filter.resolved.is_some() {
        return Ok((all, filter));
    }
    filter.resolved = Some(false);
    let mut left = preview_at(pool, &filter, up_to).await?;
    left.already_resolved = all.already_resolved;
    Ok((left, filter))
}

/// What `filter` matches at or before the bound `up_to`.
pub async fn preview_at(
    pool: &PgPool,
    filter: &BulkFilter,
    up_to: LogPosition,
) -> Result<Preview, BulkError> {
    let query = filter.to_query()?;
    let by_type = grouped(pool, "event_type", &query, up_to).await?;
    let by_status = grouped(pool, "status", &query, up_to).await?;
    let already_resolved = match query.resolved {
        // Asked for (or excluded) explicitly: nothing left out.
        Some(_) => 0,
        None => {
            let resolved = EventListQuery {
                resolved: Some(true),
                ..query.clone()
            };
            let mut sql: QueryBuilder<'_, Postgres> =
                QueryBuilder::new("SELECT count(*) FROM admin_events WHERE true");
            push_filters(&mut sql, &resolved, up_to);
            sql.build_query_scalar().fetch_one(pool).await?
        }
    };
    Ok(Preview {
        count: by_type.iter().map(|(_, n)| n).sum(),
        by_type,
        by_status,
        already_resolved,
        up_to,
    })
}

/// Records a job and runs it in the background with the default options; returns its id.
pub async fn start(
    pool: &PgPool,
    filter: &BulkFilter,
    up_to: LogPosition,
    actor: Actor,
) -> Result<Uuid, BulkError> {
    start_with(pool, filter, up_to, actor, BulkOptions::default()).await
}

/// [`start`] for a confirm token: the token's hash is recorded with the job under a
/// unique index, so a second confirm with the same token is
/// [`BulkError::ConfirmTokenUsed`] and starts nothing.
pub async fn start_confirmed(
    pool: &PgPool,
    filter: &BulkFilter,
    up_to: LogPosition,
    actor: Actor,
    confirm_token: &str,
) -> Result<Uuid, BulkError> {
    let options = BulkOptions::default();
    let owner = runner_name();
    let id = create_job(
        pool,
        filter,
        up_to,
        actor,
        Some(confirm_token),
        &owner,
        options.lease,
    )
    .await?;
    spawn_job(pool.clone(), id, owner, options);
    Ok(id)
}

/// [`start`] with explicit options.
pub async fn start_with(
    pool: &PgPool,
    filter: &BulkFilter,
    up_to: LogPosition,
    actor: Actor,
    options: BulkOptions,
) -> Result<Uuid, BulkError> {
    let owner = runner_name();
    let id = create_job(pool, filter, up_to, actor, None, &owner, options.lease).await?;
    spawn_job(pool.clone(), id, owner, options);
    Ok(id)
}

/// A name for this process's job runner (in `bulk_reprocess_jobs.owner`).
pub fn runner_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Records a job owned by `owner` for `lease` (see [`run_job`]), without running it.
pub async fn create_job(
    pool: &PgPool,
    filter: &BulkFilter,
    up_to: LogPosition,
    actor: Actor,
    confirm_token: Option<&str>,
    owner: &str,
    lease: Duration,
) -> Result<Uuid, BulkError> {
    let query = filter.to_query()?;
    let id = Uuid::new_v4();
    let filter_json =
        serde_json::to_value(filter).map_err(|e| BulkError::Invalid(e.to_string()))?;
    // The job and its members (see "The set") in one transaction: its runner never sees
    // the one without the other.
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO bulk_reprocess_jobs (id, filter, up_to_position, institution_id, requested_by,
             total, owner, lease_until, confirm_token_hash, up_to_tx, fixed_members)
         VALUES ($1, $2, $3, $4, $5, 0, $6, now() + $7 * interval '1 millisecond',
                 encode(sha256(convert_to($8::text, 'UTF8')), 'hex'), $9, true)",
    )
    .bind(id)
    .bind(&filter_json)
    .bind(up_to.global_position)
    .bind(filter.institution_id)
    .bind(actor.to_string())
    .bind(owner)
    .bind(lease.as_millis() as f64)
    .bind(confirm_token)
    .bind(up_to.tx_id)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(e))
            if e.constraint() == Some("bulk_reprocess_jobs_confirm_token_key") =>
        {
            return Err(BulkError::ConfirmTokenUsed);
        }
        Err(e) => return Err(e.into()),
    }
    let mut members: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "INSERT INTO bulk_reprocess_members (job_id, global_position, event_id) SELECT ",
    );
    members
        .push_bind(id)
        .push(", global_position, event_id FROM admin_events WHERE true");
    push_filters(&mut members, &query, up_to);
    let total = members.build().execute(&mut *tx).await?.rows_affected() as i64;
    sqlx::query("UPDATE bulk_reprocess_jobs SET total = $2 WHERE id = $1")
        .bind(id)
        .bind(total)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(job = %id, %actor, up_to_tx = up_to.tx_id, up_to_position = up_to.global_position, total, filter = %filter_json, "bulk reprocessing started");
    Ok(id)
}

fn spawn_job(pool: PgPool, id: Uuid, owner: String, options: BulkOptions) {
    tokio::spawn(async move {
        let _ = run_job(&pool, id, &owner, options).await;
    });
}

/// What became of a job when [`run_job`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every batch is copied; the job is `done`.
    Done,
    /// The job is no longer `running` (cancelled), or another runner owns it now.
    Stopped,
}

/// Runs job `id` as `owner` until it is done, cancelled or taken over. A database
/// that cannot be used now (`aula_eventlog::db::is_unavailable`: a restart, a lost
/// connection, a deadlock) only pauses the job: its batch rolled back whole, and it is
/// tried again after a pause (250 ms doubling to 5 s), from where it stood; meanwhile its
/// lease may pass to another runner, whose fence then stops this one. Any other
/// database error marks the job `failed` (if this runner still owns it) and is returned.
pub async fn run_job(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    options: BulkOptions,
) -> Result<RunEnd, BulkError> {
    let mut pause = Duration::from_millis(250);
    let result = loop {
        match run_batches(pool, id, owner, options).await {
            Err(BulkError::Database(error)) if aula_eventlog::db::is_unavailable(&error) => {
                tracing::warn!(job = %id, %error, ?pause, "bulk reprocessing paused: the database cannot be used now");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            result => break result,
        }
    };
    if let Err(error) = &result {
        tracing::error!(job = %id, %error, "bulk reprocessing failed");
        let _ = sqlx::query(
            "UPDATE bulk_reprocess_jobs SET status = 'failed', error = $3, updated_at = now()
             WHERE id = $1 AND owner = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(error.to_string())
        .execute(pool)
        .await;
    }
    result
}

#[derive(sqlx::FromRow)]
struct Claimed {
    filter: Value,
    up_to_tx: i64,
    up_to_position: i64,
    requested_by: String,
    position: i64,
    fixed_members: bool,
    total: i64,
    done: i64,
    failed: i64,
}

async fn run_batches(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    options: BulkOptions,
) -> Result<RunEnd, BulkError> {
    let job: Option<Claimed> = sqlx::query_as(
        "SELECT filter, up_to_tx, up_to_position, requested_by, position, fixed_members,
                total, done, failed
         FROM bulk_reprocess_jobs
         WHERE id = $1 AND owner = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    let Some(job) = job else {
        return Ok(RunEnd::Stopped);
    };
    let filter: BulkFilter =
        serde_json::from_value(job.filter).map_err(|e| BulkError::Invalid(e.to_string()))?;
    let query = filter.to_query()?;
    let actor = Actor::parse(&job.requested_by)
        .ok_or_else(|| BulkError::Invalid(format!("requested_by {:?}", job.requested_by)))?;
    let up_to = LogPosition {
        tx_id: job.up_to_tx,
        global_position: job.up_to_position,
    };
    // The copies' request id names the job that asked for them (the drawer shows it).
    let request = format!("bulk-reprocess:{id}");
    let mut after = job.position;
    // A job recorded before its members were (migration 0053) filters the list, and
    // stops once it has copied `total` events.
    let mut left = job.total - job.done - job.failed;
    let lease_ms = options.lease.as_millis() as f64;
    loop {
        let mut tx = pool.begin().await?;
        // The fence: still running, still ours, still where we left it.
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM bulk_reprocess_jobs
             WHERE id = $1 AND owner = $2 AND status = 'running'
             FOR UPDATE",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        if current != Some(after) {
            tracing::info!(job = %id, owner, "bulk reprocessing stopped (cancelled or taken over)");
            return Ok(RunEnd::Stopped);
        }
        let (batch, last) = if job.fixed_members {
            next_members(&mut tx, id, &query, up_to, after, options.batch_size).await?
        } else {
            let limit = options.batch_size.max(1).min(left.max(0));
            let mut sql: QueryBuilder<'_, Postgres> =
                QueryBuilder::new("SELECT event_id, global_position FROM admin_events WHERE true");
            push_filters(&mut sql, &query, up_to);
            sql.push(" AND global_position > ")
                .push_bind(after)
                .push(" ORDER BY global_position LIMIT ")
                .push_bind(limit);
            let batch: Vec<(Uuid, i64)> = sql.build_query_as().fetch_all(&mut *tx).await?;
            let last = batch.last().map(|&(_, position)| position);
            (batch.into_iter().map(|(event, _)| event).collect(), last)
        };
        let Some(last) = last else {
            // What the total counted and no batch met any more (see the module docs).
            sqlx::query(
                "UPDATE bulk_reprocess_jobs
                 SET status = 'done', skipped = GREATEST(total - done - failed, 0),
                     lease_until = NULL, updated_at = now()
                 WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(job = %id, "bulk reprocessing done");
            return Ok(RunEnd::Done);
        };
        let (mut done, mut failed) = (0i64, 0i64);
        let mut copied_types = Vec::with_capacity(batch.len());
        let mut copies = Vec::with_capacity(batch.len());
        for event_id in &batch {
            match append_copy(&mut tx, *event_id, actor.clone(), Some(&request)).await {
                Ok((copy, event_type)) => {
                    done += 1;
                    copied_types.push(event_type);
                    copies.push(copy.event_id);
                }
                Err(ReprocessError::Database(error)) => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(job = %id, event = %event_id, %error, "bulk reprocessing: event failed");
                    failed += 1;
                }
            }
        }
        sqlx::query(
            "INSERT INTO bulk_reprocess_copies (job_id, event_id) SELECT $1, unnest($2::uuid[])",
        )
        .bind(id)
        .bind(&copies)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE bulk_reprocess_jobs
             SET position = $2, done = done + $3, failed = failed + $4,
                 lease_until = now() + $5 * interval '1 millisecond', updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(last)
        .bind(done)
        .bind(failed)
        .bind(lease_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        for event_type in &copied_types {
            count_appended(event_type);
        }
        after = last;
        left -= done + failed;
        if !options.pause.is_zero() {
            tokio::time::sleep(options.pause).await;
        }
    }
}

/// The next batch of job `id`'s members after `after` (at most `batch_size`, in log
/// order): those that still match `query` (the others are skipped), and the position of
/// the last member looked at (`None`: no member is left).
async fn next_members(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    id: Uuid,
    query: &EventListQuery,
    up_to: LogPosition,
    after: i64,
    batch_size: i64,
) -> Result<(Vec<Uuid>, Option<i64>), sqlx::Error> {
    let members: Vec<(i64, Uuid)> = sqlx::query_as(
        "SELECT global_position, event_id FROM bulk_reprocess_members
         WHERE job_id = $1 AND global_position > $2
         ORDER BY global_position LIMIT $3",
    )
    .bind(id)
    .bind(after)
    .bind(batch_size.max(1))
    .fetch_all(&mut **tx)
    .await?;
    let Some(&(last, _)) = members.last() else {
        return Ok((Vec::new(), None));
    };
    let ids: Vec<Uuid> = members.into_iter().map(|(_, event)| event).collect();
    let mut sql: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("SELECT event_id FROM admin_events WHERE event_id = ANY(");
    sql.push_bind(ids).push(")");
    push_filters(&mut sql, query, up_to);
    sql.push(" ORDER BY global_position");
    let matching: Vec<Uuid> = sql.build_query_scalar().fetch_all(&mut **tx).await?;
    Ok((matching, Some(last)))
}

/// Asks a running job to stop (before its next batch). Returns the job as it is now;
/// a finished job is left as it was.
pub async fn cancel(pool: &PgPool, job_id: Uuid) -> Result<BulkJob, BulkError> {
    sqlx::query(
        "UPDATE bulk_reprocess_jobs SET status = 'cancelled', updated_at = now()
         WHERE id = $1 AND status = 'running'",
    )
    .bind(job_id)
    .execute(pool)
    .await?;
    job(pool, job_id)
        .await?
        .ok_or(BulkError::JobNotFound(job_id))
}

/// One job's row, with its copies' outcomes now.
pub async fn job(pool: &PgPool, job_id: Uuid) -> Result<Option<BulkJob>, sqlx::Error> {
    let job: Option<BulkJob> = sqlx::query_as(
        "SELECT id, filter, up_to_tx, up_to_position, institution_id, requested_by, status, total, done,
                failed, skipped, created_at, updated_at, error
         FROM bulk_reprocess_jobs WHERE id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    let Some(mut job) = job else {
        return Ok(None);
    };
    job.outcomes = copy_outcomes(pool, job_id).await?;
    Ok(Some(job))
}

/// The outcomes of the copies job `job_id` wrote (see [`CopyOutcomes`]).
pub async fn copy_outcomes(pool: &PgPool, job_id: Uuid) -> Result<CopyOutcomes, sqlx::Error> {
    let (succeeded, failed, running): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE a.status = 'succeeded'),
                count(*) FILTER (WHERE a.status = 'failed'),
                count(*) FILTER (WHERE a.status IS NULL OR a.status NOT IN ('succeeded', 'failed'))
         FROM bulk_reprocess_copies b LEFT JOIN admin_events a ON a.event_id = b.event_id
         WHERE b.job_id = $1",
    )
    .bind(job_id)
    .fetch_one(pool)
    .await?;
    Ok(CopyOutcomes {
        succeeded,
        failed,
        running,
    })
}
