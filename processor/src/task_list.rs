//! The admin dashboard's task list: live tasks (table `tasks`), filtered, sorted on any
//! column and paged with a keyset cursor.
//!
//! Every sort is `ORDER BY <expression>, id` and each expression has an index
//! `(<expression>, id)` in `0007_task_list.sql`, so a deep page costs what the first
//! one does. The indexes are partial, over finished tasks only (`succeeded`, `failed`,
//! `dead`), so the queue's insert and claim do not write them; a page merges the
//! finished tasks (by index) with the pending and running ones (a small set, sorted). Nullable columns are sorted through `COALESCE` (a row comparison with a
//! NULL is never true, which would break the cursor); the filters use the same
//! expressions where an index can serve them.
//!
//! Archived tasks (`tasks_archive`) are not listed: they are old succeeded tasks, still
//! shown per event by the API's `eventTasks`.

use aula_eventlog::db::{page_size, Page, PageError};
use aula_projections::admin_events::DurationOp;

use crate::controls::DISPLAY_STATUS_SQL;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// One task as the admin list shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct TaskListRow {
    pub id: i64,
    pub kind: String,
    /// As lists show it: a pending task whose earlier attempt failed is `retrying`.
    pub status: String,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub institution_id: Option<Uuid>,
    pub origin_task_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// When it may run (next): a retrying task waits until then.
    pub run_at: DateTime<Utc>,
    /// The running attempt's lease end; NULL unless running.
    pub lease_until: Option<DateTime<Utc>>,
    /// The worker running it; NULL unless running.
    pub worker: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From the first claim to the end (retries included); NULL until finished.
    pub duration_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// Milliseconds from the first claim to the end; must match the index expression.
const DURATION_MS: &str = "(extract(epoch FROM finished_at - started_at) * 1000)::bigint";
/// The statuses the list indexes cover (partial indexes: a task gets its entries once,
/// when it finishes, not at insert and at every claim).
const FINISHED: &[&str] = &["succeeded", "failed", "dead"];
/// The list's branches, each a set of stored statuses read through its own indexes:
/// finished tasks through the list indexes, then the others one status at a time, each
/// through its own partial index (claim: pending, lease: running, `0035`: paused and
/// cancelled); `status IN (both)` would match neither.
const BRANCHES: [&[&str]; 5] = [
    FINISHED,
    &["pending"],
    &["running"],
    &["paused"],
    &["cancelled"],
];

/// The stored status of a listed one (`retrying` is a pending task with an error).
fn stored_status(status: &str) -> &str {
    if status == "retrying" {
        "pending"
    } else {
        status
    }
}

/// `statuses` as an SQL list of literals (they are constants of this module).
fn sql_list(statuses: &[&str]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
/// Tasks without an institution (system work) sort first, as this id.
const NO_INSTITUTION: &str = "'00000000-0000-0000-0000-000000000000'::uuid";

fn columns() -> String {
    format!(
        "id, kind, {DISPLAY_STATUS_SQL} AS status, priority, attempt, max_attempts, event_id, \
         event_type, institution_id, origin_task_id, created_at, run_at, lease_until, worker, \
         started_at, finished_at, {DURATION_MS} AS duration_ms, last_error"
    )
}

/// The column the list is sorted by (ties broken by task id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskSort {
    #[default]
    Id,
    Kind,
    Status,
    CreatedAt,
    FinishedAt,
    Duration,
    Institution,
    Attempts,
}

impl TaskSort {
    /// The sort expression; must match an index of `0007_task_list.sql`.
    fn expression(&self) -> String {
        match self {
            TaskSort::Id => "id".into(),
            TaskSort::Kind => "kind".into(),
            // Qualified: in the branch's ORDER BY a bare `status` would name the listed
            // (derived) column, which no index serves.
            TaskSort::Status => "tasks.status".into(),
            TaskSort::CreatedAt => "created_at".into(),
            TaskSort::FinishedAt => "COALESCE(finished_at, '-infinity'::timestamptz)".into(),
            TaskSort::Duration => format!("COALESCE({DURATION_MS}, -1)"),
            TaskSort::Institution => format!("COALESCE(institution_id, {NO_INSTITUTION})"),
            TaskSort::Attempts => "attempt".into(),
        }
    }

    fn sql_type(&self) -> &'static str {
        match self {
            TaskSort::Id | TaskSort::Duration => "bigint",
            TaskSort::Attempts => "integer",
            TaskSort::Kind | TaskSort::Status => "text",
            TaskSort::CreatedAt | TaskSort::FinishedAt => "timestamptz",
            TaskSort::Institution => "uuid",
        }
    }
}

/// Filters, sort and page of the task list. Every filter is optional; they combine
/// with AND.
#[derive(Debug, Clone, Default)]
pub struct TaskListQuery {
    /// Any of these kinds.
    pub kinds: Vec<String>,
    /// A status as listed (`retrying` included).
    pub status: Option<String>,
    /// Only tasks of this priority.
    pub priority: Option<i16>,
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_to: Option<DateTime<Utc>>,
    pub finished_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub finished_to: Option<DateTime<Utc>>,
    pub duration: Option<(DurationOp, i64)>,
    pub institution_id: Option<Uuid>,
    /// Only the tasks of this event.
    pub event_id: Option<Uuid>,
    /// Only tasks whose last error holds this text (case-insensitive; the partial
    /// trigram index `tasks_last_error_trgm_idx`).
    pub error_search: Option<String>,
    pub sort: TaskSort,
    pub descending: bool,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Page size (1..=500, default 50).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskPage {
    pub tasks: Vec<TaskListRow>,
    /// Opaque cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

fn push_filters(sql: &mut QueryBuilder<'_, Postgres>, query: &TaskListQuery) {
    if !query.kinds.is_empty() {
        sql.push(" AND kind = ANY(")
            .push_bind(query.kinds.clone())
            .push(")");
    }
    if let Some(status) = &query.status {
        sql.push(" AND status = ")
            .push_bind(stored_status(status).to_owned());
        match status.as_str() {
            "retrying" => sql.push(" AND last_error IS NOT NULL"),
            "pending" => sql.push(" AND last_error IS NULL"),
            _ => &mut *sql,
        };
    }
    if let Some(priority) = query.priority {
        sql.push(" AND priority = ").push_bind(priority);
    }
    if let Some(from) = query.created_from {
        sql.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = query.created_to {
        sql.push(" AND created_at < ").push_bind(to);
    }
    if let Some(from) = query.finished_from {
        sql.push(" AND finished_at >= ").push_bind(from);
    }
    if let Some(to) = query.finished_to {
        sql.push(" AND finished_at < ").push_bind(to);
    }
    if let Some((op, ms)) = query.duration {
        sql.push(format!(
            " AND {DURATION_MS} {} ",
            match op {
                DurationOp::Eq => "=",
                DurationOp::Gt => ">",
                DurationOp::Lt => "<",
            }
        ))
        .push_bind(ms);
    }
    if let Some(id) = query.institution_id {
        // The index expression, so the institution index serves the filter too.
        sql.push(format!(
            " AND COALESCE(institution_id, {NO_INSTITUTION}) = "
        ))
        .push_bind(id);
    }
    if let Some(id) = query.event_id {
        sql.push(" AND event_id = ").push_bind(id);
    }
    if let Some(text) = &query.error_search {
        // The partial index's predicate repeated, so the planner may use it.
        sql.push(" AND last_error IS NOT NULL AND last_error ILIKE ")
            .push_bind(aula_projections::admin_events::like_pattern(text));
    }
}

/// One page of the task list (keyset pagination: stable under inserts).
pub async fn list_tasks(pool: &PgPool, query: &TaskListQuery) -> Result<TaskPage, PageError> {
    let limit = page_size(query.limit);
    let expression = query.sort.expression();
    let cursor = match &query.after {
        None => None,
        Some(cursor) => {
            let (id, key) = cursor
                .split_once(':')
                .and_then(|(id, key)| Some((id.parse::<i64>().ok()?, key.to_owned())))
                .ok_or(PageError::BadCursor)?;
            validate_key(query.sort, &key)?;
            Some((id, key))
        }
    };
    let direction = if query.descending { "DESC" } else { "ASC" };
    // Ordered branches merged: finished tasks through the partial list indexes, the
    // (few) pending and the running ones sorted apart. Each branch keeps its own page.
    // Only the branches the filters can match: a branch whose statuses the filter
    // excludes would walk its whole sort index filtering every row out (measured with
    // 1.9M finished tasks: 851 ms for a page of pending ones). A finish time or a
    // duration exists only once a task finished.
    let finished_only =
        query.finished_from.is_some() || query.finished_to.is_some() || query.duration.is_some();
    let branches: Vec<&[&str]> = BRANCHES
        .into_iter()
        .filter(|statuses| {
            query
                .status
                .as_deref()
                .is_none_or(|status| statuses.contains(&stored_status(status)))
        })
        .filter(|statuses| *statuses == FINISHED || *statuses == ["cancelled"] || !finished_only)
        .collect();
    if branches.is_empty() {
        return Ok(TaskPage {
            tasks: Vec::new(),
            next: None,
        });
    }
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new("SELECT * FROM (");
    for (index, statuses) in branches.into_iter().enumerate() {
        if index > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(format!(
            "(SELECT {}, ({expression})::text AS sort_key, {expression} AS sort_value \
             FROM {} tasks WHERE status IN ({})",
            columns(),
            if statuses == FINISHED || statuses == ["cancelled"] {
                "task_history"
            } else {
                "task_queue"
            },
            sql_list(statuses)
        ));
        push_filters(&mut sql, query);
        if let Some((id, key)) = &cursor {
            sql.push(format!(
                " AND ({expression}, id) {} (",
                if query.descending { "<" } else { ">" }
            ))
            .push_bind(key.clone())
            .push(format!("::{}, ", query.sort.sql_type()))
            .push_bind(*id)
            .push(")");
        }
        sql.push(format!(
            " ORDER BY {expression} {direction}, id {direction} LIMIT "
        ))
        .push_bind(limit + 1)
        .push(")");
    }
    sql.push(format!(
        ") page ORDER BY sort_value {direction}, id {direction} LIMIT "
    ))
    .push_bind(limit + 1);
    let rows: Vec<SortedRow> = sql
        .build_query_as()
        .fetch_all(pool)
        .await
        // What `validate_key` lets through and PostgreSQL still refuses ("2026-13-45 ...").
        .map_err(|error| PageError::of_statement(error, query.after.is_some()))?;
    let page = Page::from_overfetch(rows, limit, |r| format!("{}:{}", r.row.id, r.sort_key));
    Ok(TaskPage {
        tasks: page.rows.into_iter().map(|r| r.row).collect(),
        next: page.next,
    })
}

/// Rejects a cursor key that would not cast to the sort's type, so a foreign cursor
/// is a `BadCursor` instead of a database error.
fn validate_key(sort: TaskSort, key: &str) -> Result<(), PageError> {
    let ok = match sort {
        TaskSort::Id | TaskSort::Duration => key.parse::<i64>().is_ok(),
        TaskSort::Attempts => key.parse::<i32>().is_ok(),
        TaskSort::Kind | TaskSort::Status => true,
        TaskSort::Institution => key.parse::<Uuid>().is_ok(),
        // PostgreSQL's own text form ("2026-03-02 09:00:00.123+00", "-infinity").
        TaskSort::CreatedAt | TaskSort::FinishedAt => {
            key == "-infinity"
                || (key.len() >= 19
                    && key.len() <= 40
                    && key
                        .chars()
                        .all(|c| c.is_ascii_digit() || " -:.+".contains(c)))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(PageError::BadCursor)
    }
}

#[derive(sqlx::FromRow)]
struct SortedRow {
    #[sqlx(flatten)]
    row: TaskListRow,
    sort_key: String,
}

/// The distinct task kinds present (for the dashboard's kind filter).
pub async fn task_kinds(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    // A loose index scan over `tasks_list_kind_idx` (one probe per distinct kind of the
    // finished tasks), plus the kinds of the pending and running ones.
    sqlx::query_scalar(&format!(
        "WITH RECURSIVE k(kind) AS (
             (SELECT kind FROM task_history WHERE status IN ({finished}) ORDER BY kind LIMIT 1)
             UNION ALL
             SELECT (SELECT t.kind FROM task_history t WHERE t.status IN ({finished}) AND t.kind > k.kind
                     ORDER BY t.kind LIMIT 1)
             FROM k WHERE k.kind IS NOT NULL)
         SELECT kind FROM k WHERE kind IS NOT NULL
         UNION
         SELECT kind FROM task_queue WHERE status = 'pending'
         UNION
         SELECT kind FROM task_queue WHERE status = 'running'
         ORDER BY 1",
        finished = sql_list(FINISHED),
    ))
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_keys_are_checked_against_the_sort_type() {
        assert!(validate_key(TaskSort::Duration, "12").is_ok());
        assert!(validate_key(TaskSort::Duration, "x").is_err());
        assert!(validate_key(TaskSort::Institution, "not-a-uuid").is_err());
        assert!(validate_key(TaskSort::CreatedAt, "2026-03-02 09:00:00.123+00").is_ok());
        assert!(validate_key(TaskSort::FinishedAt, "-infinity").is_ok());
        assert!(validate_key(TaskSort::CreatedAt, "'; DROP TABLE tasks").is_err());
    }
}
