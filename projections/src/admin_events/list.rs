//! The admin event list: filters, sorts and keyset pages over `admin_events`, each
//! shape of query written so one index answers it.

use super::*;

/// `duration = X`, `> X`, `< X` (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationOp {
    Eq,
    Gt,
    Lt,
}

/// The column the list is sorted by (ties broken by log position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventSort {
    #[default]
    Position,
    RecordedAt,
    ProcessedAt,
    Duration,
    EventType,
    Status,
}

impl EventSort {
    /// The sort expression; must match an index of `0002_projections.sql`.
    fn expression(&self) -> &'static str {
        match self {
            EventSort::Position => "global_position",
            EventSort::RecordedAt => "recorded_at",
            EventSort::ProcessedAt => "COALESCE(processed_at, '-infinity'::timestamptz)",
            EventSort::Duration => "COALESCE(duration_ms, -1)",
            EventSort::EventType => "event_type",
            EventSort::Status => "status",
        }
    }

    fn sql_type(&self) -> &'static str {
        match self {
            EventSort::Position | EventSort::Duration => "bigint",
            EventSort::RecordedAt | EventSort::ProcessedAt => "timestamptz",
            EventSort::EventType | EventSort::Status => "text",
        }
    }
}

/// Filters, sort and page of the admin event list. Every filter is optional; they
/// combine with AND.
#[derive(Debug, Clone, Default)]
pub struct EventListQuery {
    pub event_types: Vec<String>,
    pub recorded_from: Option<DateTime<Utc>>,
    pub recorded_to: Option<DateTime<Utc>>,
    pub processed_from: Option<DateTime<Utc>>,
    pub processed_to: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub duration: Option<(DurationOp, i64)>,
    pub institution_id: Option<Uuid>,
    /// `Some(true)`: only events with at least one failed task; `Some(false)`: none.
    pub has_failed_tasks: Option<bool>,
    /// Only the copies of this event.
    pub reprocessed_from: Option<Uuid>,
    /// `Some(true)`: only events their latest copy resolved (its tasks succeeded);
    /// `Some(false)`: only the others (with status `failed`: the failures left to fix).
    pub resolved: Option<bool>,
    /// Only events whose payload holds this text (case-insensitive, at least
    /// [`MIN_SEARCH_CHARS`]): `admin_event_search`'s trigram index.
    pub search: Option<String>,
    pub sort: EventSort,
    pub descending: bool,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Page size (1..=500, default 50).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventPage {
    pub events: Vec<AdminEventRow>,
    /// Opaque cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Appends `query`'s filters (each as ` AND ...`) to a statement over `admin_events`.
/// Shared with bulk reprocessing, so a preview counts exactly what the list shows.
pub fn push_filters(sql: &mut QueryBuilder<'_, Postgres>, query: &EventListQuery) {
    if !query.event_types.is_empty() {
        sql.push(" AND event_type = ANY(")
            .push_bind(query.event_types.clone())
            .push(")");
    }
    if let Some(from) = query.recorded_from {
        sql.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(to) = query.recorded_to {
        sql.push(" AND recorded_at < ").push_bind(to);
    }
    // Processed-at and duration conditions are written over the sort expressions
    // (`COALESCE(...)`, see [`EventSort::expression`]) so their indexes serve them too;
    // each form is equivalent to the plain comparison (a missing value never matches).
    if let Some(from) = query.processed_from {
        sql.push(" AND COALESCE(processed_at, '-infinity'::timestamptz) >= ")
            .push_bind(from);
    }
    // "Not NULL" is written as a bound on the same expression (`> '-infinity'`, `>= 0`:
    // `0011_admin_event_invariants.sql` guarantees a real value is past it), so an index
    // walk starts past the pending events' block instead of filtering its way through it.
    if let Some(to) = query.processed_to {
        sql.push(
            " AND COALESCE(processed_at, '-infinity'::timestamptz) > '-infinity'::timestamptz \
             AND COALESCE(processed_at, '-infinity'::timestamptz) < ",
        )
        .push_bind(to);
    }
    if let Some(status) = &query.status {
        sql.push(" AND status = ").push_bind(status.clone());
    }
    match query.duration {
        Some((DurationOp::Eq, ms)) if ms >= 0 => {
            sql.push(" AND COALESCE(duration_ms, -1) = ").push_bind(ms);
        }
        Some((DurationOp::Gt, ms)) if ms >= -1 => {
            sql.push(" AND COALESCE(duration_ms, -1) > ").push_bind(ms);
        }
        Some((DurationOp::Lt, ms)) => {
            sql.push(" AND COALESCE(duration_ms, -1) >= 0 AND COALESCE(duration_ms, -1) < ")
                .push_bind(ms);
        }
        Some((op, ms)) => {
            sql.push(match op {
                DurationOp::Eq => " AND duration_ms = ",
                DurationOp::Gt => " AND duration_ms > ",
                DurationOp::Lt => " AND duration_ms < ",
            })
            .push_bind(ms);
        }
        None => {}
    }
    if let Some(id) = query.institution_id {
        sql.push(" AND institution_id = ").push_bind(id);
    }
    match query.has_failed_tasks {
        Some(true) => {
            sql.push(" AND tasks_failed > 0");
        }
        Some(false) => {
            sql.push(" AND tasks_failed = 0");
        }
        None => {}
    }
    if let Some(id) = query.reprocessed_from {
        sql.push(" AND reprocessed_from = ").push_bind(id);
    }
    match query.resolved {
        Some(true) => {
            sql.push(format!(" AND latest_copy_id IS NOT NULL AND {RESOLVED}"));
        }
        Some(false) => {
            sql.push(format!(" AND NOT {RESOLVED}"));
        }
        None => {}
    }
    if let Some(text) = &query.search {
        sql.push(
            " AND global_position IN (SELECT global_position FROM admin_event_search WHERE body ILIKE ",
        )
        .push_bind(like_pattern(text))
        .push(")");
    }
}

/// Shortest search text: the trigram index needs three characters to narrow anything.
pub const MIN_SEARCH_CHARS: usize = 3;

/// An event is normally processed within this long after it was recorded (the
/// processor's backlog, retries included). Events outside it are "late"; sorted by one
/// time column under a range of the other, the list reads the two kinds separately.
/// Must equal the interval in [`LATE`] and [`ON_TIME`].
const ON_TIME_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// Processed within [`ON_TIME_WINDOW`] of being recorded.
const ON_TIME: &str =
    "processed_at >= recorded_at AND processed_at - recorded_at <= interval '1 hour'";
/// Processed, but not within `ON_TIME_WINDOW` (or before being recorded: another
/// clock). Word for word the predicate of the `admin_events_late_*` indexes
/// (`0012_admin_event_lateness.sql`): the planner uses a partial index only for a query
/// that repeats its predicate.
pub const LATE: &str =
    "(processed_at - recorded_at > interval '1 hour' OR processed_at < recorded_at)";
/// The predicate of `admin_events_pending_recorded_idx`.
const PENDING: &str = "processed_at IS NULL";

/// How a page's keys are found.
enum Shape {
    /// Walk the sort column's index from the cursor, the filters as conditions on it.
    Walk,
    /// A time range, sorted by a column unrelated to time: candidates from the range's
    /// covering index, sorted behind an `OFFSET 0` fence.
    Fenced { range_order: &'static str },
    /// Sorted by one time column under a range of the other: see [`push_split`].
    Split {
        on_time_and_late: bool,
        pending: bool,
    },
}

/// One page of the admin event list (keyset pagination: stable under inserts).
pub async fn list_admin_events(
    pool: &PgPool,
    query: &EventListQuery,
) -> Result<EventPage, PageError> {
    let limit = page_size(query.limit);
    let expression = query.sort.expression();
    let cursor = match &query.after {
        Some(cursor) => Some(
            cursor
                .split_once(':')
                .and_then(|(p, k)| Some((p.parse::<i64>().ok()?, k.to_owned())))
                .ok_or(PageError::BadCursor)?,
        ),
        None => None,
    };
    let recorded_range = query.recorded_from.is_some() || query.recorded_to.is_some();
    let processed_range = query.processed_from.is_some() || query.processed_to.is_some();
    // A filter that only processed events pass (a final status, a duration, a processed
    // time) sorted by processed time or duration: the pending events (no value, sorted
    // as the smallest) form a block at one end of that index, up to the whole backlog.
    // The bound below is implied by the filter (`0011_admin_event_invariants.sql`: an
    // event has a processed time and a duration exactly when it is not pending) and lets
    // the walk start past the block.
    // `pending` and `retrying` are the unfinished statuses (no processed time).
    let unfinished = |s: &str| s == "pending" || s == "retrying";
    let only_pending = query.status.as_deref().is_some_and(unfinished);
    let processed_only = query.status.as_deref().is_some_and(|s| !unfinished(s))
        || query.duration.is_some()
        || processed_range;
    let past_pending = match query.sort {
        EventSort::ProcessedAt if processed_only => Some("'-infinity'::timestamptz"),
        EventSort::Duration if processed_only => Some("-1"),
        _ => None,
    };
    // Under a recorded range sorted by processed time, the pending events come first
    // (ascending) or last; once an ascending cursor is past them, they are behind it.
    let pending_behind = !query.descending
        && cursor
            .as_ref()
            .is_some_and(|(_, key)| key.as_str() != "-infinity");
    let split = match query.sort {
        EventSort::ProcessedAt if recorded_range && !processed_range => Some(Shape::Split {
            on_time_and_late: !only_pending,
            pending: !processed_only && !pending_behind,
        }),
        EventSort::RecordedAt if processed_range && !recorded_range => Some(Shape::Split {
            on_time_and_late: !only_pending,
            pending: false,
        }),
        _ => None,
    };
    let shape = match split {
        // No branch can match (say pending events in a processed range): the range's
        // candidates, filtered to nothing.
        Some(Shape::Split {
            on_time_and_late: false,
            pending: false,
        }) => None,
        split => split,
    }
    .unwrap_or(match query.sort {
        EventSort::RecordedAt if recorded_range => Shape::Walk,
        EventSort::ProcessedAt if processed_range => Shape::Walk,
        _ if recorded_range => Shape::Fenced {
            range_order: EventSort::RecordedAt.expression(),
        },
        _ if processed_range => Shape::Fenced {
            range_order: EventSort::ProcessedAt.expression(),
        },
        _ => Shape::Walk,
    });
    let direction = if query.descending { "DESC" } else { "ASC" };
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "SELECT {COLUMNS}, ({expression})::text AS sort_key FROM admin_events WHERE "
    ));
    match shape {
        Shape::Walk => {
            sql.push("true");
            push_filters(&mut sql, query);
            if let Some(sentinel) = past_pending {
                sql.push(format!(" AND {expression} > {sentinel}"));
            }
            push_cursor(&mut sql, query, expression, cursor.as_ref());
        }
        Shape::Fenced { range_order } => {
            // A time range matches a band of the log; walking another sort order's
            // index (which the planner likes under LIMIT) would skip everything outside
            // the band first. So the candidates come from the range's covering index
            // (`0008_admin_event_list.sql`: every filter and sort column, index-only),
            // are sorted there, and only the page's rows are read from the table.
            // The cursor applies to the candidates, outside the fence: inside, its row
            // comparison would let the planner walk the sort column's index from the
            // cursor on, filtering on the range (measured: 250 ms, 644,052 rows removed,
            // for a page of a 7-day processed range sorted by status).
            // The candidates come in the range's index order, in the page's direction:
            // the other sort keys follow time closely (positions, and every tie broken
            // by position), so after the first page's worth of rows nearly every
            // candidate loses to the kept ones at the first comparison, and the top-N
            // sort stops copying rows (measured: 7-day processed range sorted by
            // status, 70 -> 38 ms).
            sql.push(format!(
                "global_position IN (SELECT global_position FROM (SELECT global_position, {expression} AS sort_key
                 FROM admin_events WHERE true"
            ));
            push_filters(&mut sql, query);
            if let Some(sentinel) = past_pending {
                sql.push(format!(" AND {expression} > {sentinel}"));
            }
            sql.push(format!(
                " ORDER BY {range_order} {direction}, global_position {direction} OFFSET 0) candidates WHERE true"
            ));
            push_cursor(&mut sql, query, "sort_key", cursor.as_ref());
            sql.push(format!(
                " ORDER BY sort_key {direction}, global_position {direction} LIMIT "
            ))
            .push_bind(limit + 1)
            .push(")");
        }
        Shape::Split {
            on_time_and_late,
            pending,
        } => {
            sql.push("global_position IN (SELECT global_position FROM (");
            push_split(
                &mut sql,
                query,
                cursor.as_ref(),
                limit,
                on_time_and_late,
                pending,
            );
            sql.push(format!(
                ") branches ORDER BY sort_key {direction}, global_position {direction} LIMIT "
            ))
            .push_bind(limit + 1)
            .push(")");
        }
    }
    sql.push(format!(
        " ORDER BY {expression} {direction}, global_position {direction} LIMIT "
    ))
    .push_bind(limit + 1);
    // Not a prepared statement kept for reuse: PostgreSQL would switch it to a generic
    // plan after a few runs, and the best plan here depends on the values (how many
    // rows a filter keeps, where the cursor is): planned afresh each time, with them.
    let rows: Vec<SortedRow> = sql
        .build_query_as()
        .persistent(false)
        .fetch_all(pool)
        .await
        // The cursor's key is the only value cast in SQL (`$key::timestamptz`, ...).
        .map_err(|error| PageError::of_statement(error, cursor.is_some()))?;
    let page = Page::from_overfetch(rows, limit, |r| {
        format!("{}:{}", r.row.global_position, r.sort_key)
    });
    let events = page.rows.into_iter().map(|r| r.row).collect();
    Ok(EventPage {
        events: with_copy_status(pool, events).await?,
        next: page.next,
    })
}

/// ` AND (sorted_by, global_position) > (cursor)` (`<` descending).
fn push_cursor(
    sql: &mut QueryBuilder<'_, Postgres>,
    query: &EventListQuery,
    sorted_by: &str,
    cursor: Option<&(i64, String)>,
) {
    if let Some((position, key)) = cursor {
        sql.push(format!(
            " AND ({sorted_by}, global_position) {} (",
            if query.descending { "<" } else { ">" }
        ))
        .push_bind(key.clone())
        .push(format!("::{}, ", query.sort.sql_type()))
        .push_bind(*position)
        .push(")");
    }
}

/// Bounds on a time sort column, for an index walk.
struct WalkBounds {
    /// Inclusive.
    lower: Option<DateTime<Utc>>,
    upper: Option<DateTime<Utc>>,
    upper_inclusive: bool,
}

/// ` AND` the cursor and `bounds` on the (time) sort column.
///
/// Where the walk starts, the cursor and the bound are merged into one row comparison
/// whose value is the later (ascending) of the two, folded when the statement is
/// planned: given both a row comparison and a plain bound on the same column, the
/// B-tree starts from the row comparison even when the bound is past it (measured: a
/// cursor in the pending events' block, `-infinity`, walked from the start of the
/// index, 57 ms, for a page it reads in 0.3 ms from the bound).
fn push_walk_bounds(
    sql: &mut QueryBuilder<'_, Postgres>,
    query: &EventListQuery,
    cursor: Option<&(i64, String)>,
    bounds: WalkBounds,
) {
    let expression = query.sort.expression();
    let key_type = query.sort.sql_type();
    let upper_op = if bounds.upper_inclusive { "<=" } else { "<" };
    // The bound where the walk starts, if a cursor is to be merged with it: `past` says
    // when the cursor's key lies beyond the bound, `edge` is the position paired with
    // the bound then, so that the row comparison admits exactly the bound's rows.
    let start = match (cursor, query.descending) {
        // (key, position) if it is past (lower, before any position), else the latter.
        (Some(cursor), false) => bounds
            .lower
            .map(|lower| (cursor, lower, ">", "GREATEST", "<", i64::MIN)),
        // (key, position) if it is before the upper bound, else the bound itself:
        // (upper, after any position) if inclusive, (upper, before any) if not.
        (Some(cursor), true) => bounds.upper.map(|upper| {
            let (past, edge) = if bounds.upper_inclusive {
                (">", i64::MAX)
            } else {
                (">=", i64::MIN)
            };
            (cursor, upper, "<", "LEAST", past, edge)
        }),
        (None, _) => None,
    };
    let Some(((position, key), bound, compare, pick, past, edge)) = start else {
        if let Some(lower) = bounds.lower {
            sql.push(format!(" AND {expression} >= ")).push_bind(lower);
        }
        if let Some(upper) = bounds.upper {
            sql.push(format!(" AND {expression} {upper_op} "))
                .push_bind(upper);
        }
        push_cursor(sql, query, expression, cursor);
        return;
    };
    sql.push(format!(
        " AND ({expression}, global_position) {compare} ({pick}("
    ))
    .push_bind(key.clone())
    .push(format!("::{key_type}, "))
    .push_bind(bound)
    .push("), CASE WHEN ")
    .push_bind(key.clone())
    .push(format!("::{key_type} {past} "))
    .push_bind(bound)
    .push(" THEN ")
    .push_bind(edge)
    .push(" ELSE ")
    .push_bind(*position)
    .push(" END)");
    // The bound where the walk ends stays a plain condition.
    match (query.descending, bounds.lower, bounds.upper) {
        (true, Some(lower), _) => {
            sql.push(format!(" AND {expression} >= ")).push_bind(lower);
        }
        (false, _, Some(upper)) => {
            sql.push(format!(" AND {expression} {upper_op} "))
                .push_bind(upper);
        }
        _ => {}
    }
}

/// The keys of a page sorted by one time column under a range of the other (processed
/// time under a recorded range, or recorded time under a processed range), as up to
/// three branches of `(global_position, sort_key)`, each at most a page long.
///
/// Neither time bounds the other exactly (a retry can process an event days after it
/// was recorded), so reading the range's index means reading the whole range for every
/// page (measured: ~74,000 index entries for 7 of 90 days, 56–64 ms a page). Instead:
/// - **on time** (processed within [`ON_TIME_WINDOW`] of being recorded: nearly every
///   event): the range of one time bounds the other to the same range widened by the
///   window, so the sort column's covering index is walked from the cursor within those
///   bounds, filtering on the range: about a page of entries, plus at most the window's
///   worth at the end of the range;
/// - **late** ([`LATE`]): read whole from their small partial index over the range and
///   sorted; a page never costs more than this branch's share of the old full read;
/// - **pending** (no processed time, sorted first): the same, from their partial index,
///   and only while the cursor can still be before them.
fn push_split(
    sql: &mut QueryBuilder<'_, Postgres>,
    query: &EventListQuery,
    cursor: Option<&(i64, String)>,
    limit: i64,
    on_time_and_late: bool,
    pending: bool,
) {
    let expression = query.sort.expression();
    let direction = if query.descending { "DESC" } else { "ASC" };
    let order = format!(" ORDER BY sort_key {direction}, global_position {direction} LIMIT ");
    let mut whole_branches = Vec::new();
    let mut first = true;
    if on_time_and_late {
        first = false;
        sql.push(format!(
            "(SELECT global_position, {expression} AS sort_key FROM admin_events WHERE {ON_TIME}"
        ));
        push_filters(sql, query);
        // The bounds one time puts on the other for events processed on time:
        //   recorded range: from <= recorded_at <= processed_at <= recorded_at + window < to + window;
        //   processed range: from - window <= processed_at - window <= recorded_at <= processed_at < to.
        let (lower, upper, upper_inclusive) = if query.sort == EventSort::ProcessedAt {
            let upper = query
                .recorded_to
                .and_then(|t| t.checked_add_signed(ON_TIME_WINDOW));
            (query.recorded_from, upper, true)
        } else {
            let lower = query
                .processed_from
                .and_then(|f| f.checked_sub_signed(ON_TIME_WINDOW));
            (lower, query.processed_to, false)
        };
        push_walk_bounds(
            sql,
            query,
            cursor,
            WalkBounds {
                lower,
                upper,
                upper_inclusive,
            },
        );
        sql.push(&order).push_bind(limit + 1).push(")");
        whole_branches.push(LATE);
    }
    if pending {
        whole_branches.push(PENDING);
    }
    for predicate in whole_branches {
        if !std::mem::take(&mut first) {
            sql.push(" UNION ALL ");
        }
        // The fence keeps the planner from walking the big sort index under LIMIT
        // (its estimate of how rare late events are is far off).
        sql.push(format!(
            "(SELECT global_position, sort_key FROM (SELECT global_position, {expression} AS sort_key
             FROM admin_events WHERE {predicate}"
        ));
        push_filters(sql, query);
        sql.push(" OFFSET 0) whole WHERE true");
        push_cursor(sql, query, "sort_key", cursor);
        sql.push(&order).push_bind(limit + 1).push(")");
    }
}

#[derive(sqlx::FromRow)]
struct SortedRow {
    #[sqlx(flatten)]
    row: AdminEventRow,
    sort_key: String,
}
