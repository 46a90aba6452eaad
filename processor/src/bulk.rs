//! Bulk reprocessing: re-emit a copy ([`reprocess_event`]) of every event of the admin
//! list that matches a filter, in the background.
//!
//! - [`preview`] counts what a filter matches now (total, by type, by processing
//!   status) and fixes `up_to_position`, the log's last position: a job started from
//!   that preview never includes events appended later.
//! - [`start`] records a job in `bulk_reprocess_jobs` (who asked, the filter, the
//!   position; the row is the audit trail) and runs it on a Tokio task in batches,
//!   paging by `global_position`; progress (`done`, `failed`) is written per batch.
//! - [`cancel`] sets `status = 'cancelled'`; the job stops before its next batch.
//!
//! Copies themselves (`reprocessed_from` set) are never selected. A job whose process
//! dies stays `running` in the table (it is not resumed).

use std::time::Duration;

use aula_eventlog::Actor;
use aula_projections::admin_events::{DurationOp, EventListQuery};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::reprocess::reprocess_event;

/// Events per batch by default.
pub const DEFAULT_BATCH_SIZE: i64 = 200;

/// What a filter matches now; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub count: i64,
    pub by_type: Vec<(String, i64)>,
    pub by_status: Vec<(String, i64)>,
    pub up_to_position: i64,
}

/// The filters of an [`EventListQuery`] a bulk job keeps (sort and page do not apply),
/// as stored in `bulk_reprocess_jobs.filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_to: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_to: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `("eq" | "gt" | "lt", milliseconds)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<(String, i64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub institution_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_failed_tasks: Option<bool>,
}

impl From<&EventListQuery> for BulkFilter {
    fn from(query: &EventListQuery) -> Self {
        BulkFilter {
            event_types: query.event_types.clone(),
            recorded_from: query.recorded_from,
            recorded_to: query.recorded_to,
            processed_from: query.processed_from,
            processed_to: query.processed_to,
            status: query.status.clone(),
            duration: query.duration.map(|(op, ms)| {
                let op = match op {
                    DurationOp::Eq => "eq",
                    DurationOp::Gt => "gt",
                    DurationOp::Lt => "lt",
                };
                (op.to_owned(), ms)
            }),
            institution_id: query.institution_id,
            has_failed_tasks: query.has_failed_tasks,
        }
    }
}

impl BulkFilter {
    /// The list query with these filters (default sort and page).
    pub fn to_query(&self) -> Result<EventListQuery, BulkError> {
        let duration = match &self.duration {
            None => None,
            Some((op, ms)) => Some((
                match op.as_str() {
                    "eq" => DurationOp::Eq,
                    "gt" => DurationOp::Gt,
                    "lt" => DurationOp::Lt,
                    other => return Err(BulkError::Invalid(format!("duration operator {other}"))),
                },
                *ms,
            )),
        };
        Ok(EventListQuery {
            event_types: self.event_types.clone(),
            recorded_from: self.recorded_from,
            recorded_to: self.recorded_to,
            processed_from: self.processed_from,
            processed_to: self.processed_to,
            status: self.status.clone(),
            duration,
            institution_id: self.institution_id,
            has_failed_tasks: self.has_failed_tasks,
            ..EventListQuery::default()
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("bulk reprocessing job {0} not found")]
    JobNotFound(Uuid),
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
    pub up_to_position: i64,
    pub institution_id: Option<Uuid>,
    pub requested_by: String,
    /// `running`, `cancelled`, `done` or `failed`.
    pub status: String,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub error: Option<String>,
}

/// How a job runs; [`start`] uses the defaults.
#[derive(Debug, Clone, Copy)]
pub struct BulkOptions {
    pub batch_size: i64,
    /// A pause between batches (none by default).
    pub pause: Duration,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            batch_size: DEFAULT_BATCH_SIZE,
            pause: Duration::ZERO,
        }
    }
}

/// The admin list's own filters (`admin_events::push_filters`, so a preview counts
/// exactly what the list shows), restricted to originals at or before `up_to_position`.
fn push_filters(sql: &mut QueryBuilder<'_, Postgres>, query: &EventListQuery, up_to_position: i64) {
    sql.push(" AND reprocessed_from IS NULL AND global_position <= ")
        .push_bind(up_to_position);
    aula_projections::admin_events::push_filters(sql, query);
}

async fn grouped(
    pool: &PgPool,
    column: &str,
    query: &EventListQuery,
    up_to_position: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {column}, count(*) FROM admin_events WHERE true"
    ));
    push_filters(&mut sql, query, up_to_position);
    sql.push(format!(" GROUP BY {column} ORDER BY {column}"));
    sql.build_query_as().fetch_all(pool).await
}

/// The log's last position now (0 when empty).
pub async fn current_position(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(global_position), 0) FROM events")
        .fetch_one(pool)
        .await
}

/// What `query`'s filters match now, up to the log's current last position.
pub async fn preview(pool: &PgPool, query: &EventListQuery) -> Result<Preview, BulkError> {
    let up_to_position = current_position(pool).await?;
    preview_at(pool, &BulkFilter::from(query), up_to_position).await
}

/// What `filter` matches at or before `up_to_position`.
pub async fn preview_at(
    pool: &PgPool,
    filter: &BulkFilter,
    up_to_position: i64,
) -> Result<Preview, BulkError> {
    let query = filter.to_query()?;
    let by_type = grouped(pool, "event_type", &query, up_to_position).await?;
    let by_status = grouped(pool, "status", &query, up_to_position).await?;
    Ok(Preview {
        count: by_type.iter().map(|(_, n)| n).sum(),
        by_type,
        by_status,
        up_to_position,
    })
}

/// Records a job and runs it in the background with the default options; returns its id.
pub async fn start(
    pool: &PgPool,
    filter: &BulkFilter,
    up_to_position: i64,
    actor: Actor,
) -> Result<Uuid, BulkError> {
    start_with(pool, filter, up_to_position, actor, BulkOptions::default()).await
}

/// [`start`] with explicit batch size and pause.
pub async fn start_with(
    pool: &PgPool,
    filter: &BulkFilter,
    up_to_position: i64,
    actor: Actor,
    options: BulkOptions,
) -> Result<Uuid, BulkError> {
    let query = filter.to_query()?;
    let total = preview_at(pool, filter, up_to_position).await?.count;
    let id = Uuid::new_v4();
    let filter_json =
        serde_json::to_value(filter).map_err(|e| BulkError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO bulk_reprocess_jobs (id, filter, up_to_position, institution_id, requested_by, total)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(&filter_json)
    .bind(up_to_position)
    .bind(filter.institution_id)
    .bind(actor.to_string())
    .bind(total)
    .execute(pool)
    .await?;
    tracing::info!(job = %id, %actor, up_to_position, total, filter = %filter_json, "bulk reprocessing started");
    let pool = pool.clone();
    tokio::spawn(async move {
        if let Err(error) = run(&pool, id, &query, up_to_position, actor, options).await {
            tracing::error!(job = %id, %error, "bulk reprocessing failed");
            let _ = sqlx::query(
                "UPDATE bulk_reprocess_jobs SET status = 'failed', error = $2, updated_at = now()
                 WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .bind(error.to_string())
            .execute(&pool)
            .await;
        }
    });
    Ok(id)
}

async fn run(
    pool: &PgPool,
    id: Uuid,
    query: &EventListQuery,
    up_to_position: i64,
    actor: Actor,
    options: BulkOptions,
) -> Result<(), sqlx::Error> {
    let mut after = 0i64;
    loop {
        let status: String =
            sqlx::query_scalar("SELECT status FROM bulk_reprocess_jobs WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await?;
        if status != "running" {
            tracing::info!(job = %id, status, "bulk reprocessing stopped");
            return Ok(());
        }
        let mut sql: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT event_id, global_position FROM admin_events WHERE true");
        push_filters(&mut sql, query, up_to_position);
        sql.push(" AND global_position > ")
            .push_bind(after)
            .push(" ORDER BY global_position LIMIT ")
            .push_bind(options.batch_size.max(1));
        let batch: Vec<(Uuid, i64)> = sql.build_query_as().fetch_all(pool).await?;
        let Some(&(_, last)) = batch.last() else {
            sqlx::query(
                "UPDATE bulk_reprocess_jobs SET status = 'done', updated_at = now()
                 WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .execute(pool)
            .await?;
            tracing::info!(job = %id, "bulk reprocessing done");
            return Ok(());
        };
        let (mut done, mut failed) = (0i64, 0i64);
        for (event_id, _) in &batch {
            match reprocess_event(pool, *event_id, actor.clone()).await {
                Ok(_) => done += 1,
                Err(error) => {
                    tracing::warn!(job = %id, event = %event_id, %error, "bulk reprocessing: event failed");
                    failed += 1;
                }
            }
        }
        after = last;
        sqlx::query(
            "UPDATE bulk_reprocess_jobs SET done = done + $2, failed = failed + $3, updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(done)
        .bind(failed)
        .execute(pool)
        .await?;
        if !options.pause.is_zero() {
            tokio::time::sleep(options.pause).await;
        }
    }
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

/// One job's row.
pub async fn job(pool: &PgPool, job_id: Uuid) -> Result<Option<BulkJob>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, filter, up_to_position, institution_id, requested_by, status, total, done,
                failed, created_at, updated_at, error
         FROM bulk_reprocess_jobs WHERE id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await
}
