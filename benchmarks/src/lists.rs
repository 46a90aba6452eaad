//! `aula bench list-query`: fill a database with a large synthetic history (events,
//! their `admin_events` rows with processing columns, the tasks behind the task counts,
//! the status counts and rollups), then time the admin event list — the very function
//! the GraphQL `adminEvents` resolver calls ([`list_admin_events`]) — for every filter of
//! the issue × every sort column × both directions, on the first page and on pages
//! reached by following cursors.
//!
//! **Boundary:** it writes to whatever database it is given. Use a scratch database.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context as _;
use aula_domain::event_types;
use aula_projections::admin_events::{list_admin_events, DurationOp, EventListQuery, EventSort};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Executor, PgPool};
use uuid::Uuid;

use crate::rebuild::BenchError;
use crate::{BenchDatabase, Settings};

/// The statements that generate the data, separated by lines `-- ;`.
const DATA_SQL: &str = include_str!("list_bench_data.sql");

/// Latency above which a figure is marked, in milliseconds (the p95 bound).
pub const LIMIT_MS: f64 = 50.0;

#[derive(Debug, Clone)]
pub struct ListBenchOptions {
    pub events: i64,
    pub institutions: i32,
    /// Timed runs of each first page, and of each deepest page.
    pub samples: usize,
    /// How many pages deep the cursor walk goes.
    pub pages: usize,
    pub page_size: i64,
}

impl Default for ListBenchOptions {
    fn default() -> Self {
        ListBenchOptions {
            events: 1_000_000,
            institutions: 20,
            samples: 5,
            pages: 50,
            page_size: 50,
        }
    }
}

/// One filter × sort × direction, with its latencies in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListMeasurement {
    pub filter: &'static str,
    pub sort: &'static str,
    pub descending: bool,
    /// Page 1, `samples` times.
    pub first: Vec<f64>,
    /// Pages 2..=`pages` while following cursors, then the deepest page `samples` times.
    pub deep: Vec<f64>,
    /// Pages actually reached (fewer when the filter matches fewer rows).
    pub pages_reached: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListBenchReport {
    pub events: i64,
    pub tasks: i64,
    pub generate_seconds: f64,
    pub measurements: Vec<ListMeasurement>,
}

const SORTS: &[(EventSort, &str)] = &[
    (EventSort::Position, "position"),
    (EventSort::RecordedAt, "recorded_at"),
    (EventSort::ProcessedAt, "processed_at"),
    (EventSort::Duration, "duration"),
    (EventSort::EventType, "event_type"),
    (EventSort::Status, "status"),
];

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("a valid fixed date")
}

/// The generated institution number `n` (1-based), as the data SQL spells it.
pub fn institution(n: u32) -> Uuid {
    Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 | u128::from(n))
}

/// The filters of the issue, with values that exist in the generated data (`events`
/// of them: the data SQL gives event `g` the address `user<g>@escola.test`).
fn filters(events: i64) -> Vec<(&'static str, EventListQuery)> {
    let q = EventListQuery::default;
    vec![
        // Issue #23's search: one event by its address, and a text every event holds.
        (
            "search (1 match)",
            EventListQuery {
                search: Some(format!("user{}@escola", events / 3 + 1)),
                ..q()
            },
        ),
        (
            "search (all)",
            EventListQuery {
                search: Some("escola.test".into()),
                ..q()
            },
        ),
        ("none", q()),
        (
            "types (3)",
            EventListQuery {
                event_types: vec![
                    event_types::ENROLLMENT_CANCELLED.into(),
                    "PasswordChanged".into(),
                    event_types::COURSE_CLOSED.into(),
                ],
                ..q()
            },
        ),
        (
            "recorded 7 days",
            EventListQuery {
                recorded_from: Some(at(2026, 10, 3)),
                recorded_to: Some(at(2026, 10, 10)),
                ..q()
            },
        ),
        (
            "processed 7 days",
            EventListQuery {
                processed_from: Some(at(2026, 9, 10)),
                processed_to: Some(at(2026, 9, 17)),
                ..q()
            },
        ),
        (
            "status failed",
            EventListQuery {
                status: Some("failed".into()),
                ..q()
            },
        ),
        (
            "duration = 100",
            EventListQuery {
                duration: Some((DurationOp::Eq, 100)),
                ..q()
            },
        ),
        (
            "duration > 5000",
            EventListQuery {
                duration: Some((DurationOp::Gt, 5000)),
                ..q()
            },
        ),
        (
            "duration < 5",
            EventListQuery {
                duration: Some((DurationOp::Lt, 5)),
                ..q()
            },
        ),
        (
            "institution",
            EventListQuery {
                institution_id: Some(institution(7)),
                ..q()
            },
        ),
        (
            "has failed tasks",
            EventListQuery {
                has_failed_tasks: Some(true),
                ..q()
            },
        ),
    ]
}

/// Generates the data set: `options.events` events, their `admin_events` rows and
/// about two tasks per event. Returns the seconds it took.
pub async fn generate(pool: &PgPool, options: &ListBenchOptions) -> Result<f64, BenchError> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    conn.execute(
        "SET synchronous_commit = off; SET maintenance_work_mem = '256MB'; SELECT setseed(0.42)",
    )
    .await?;
    // Loading into tables without their secondary indexes and building those once at
    // the end is several times faster than maintaining them row by row.
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT ic.relname::text, pg_get_indexdef(i.indexrelid)
         FROM pg_index i
         JOIN pg_class ic ON ic.oid = i.indexrelid
         JOIN pg_class t ON t.oid = i.indrelid
         WHERE t.relname IN ('events', 'admin_events', 'task_queue', 'task_history', 'admin_event_search')
           AND t.relnamespace = current_schema()::regnamespace
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (index, _) in &indexes {
        let drop = format!("DROP INDEX \"{}\"", index.replace('"', "\"\""));
        conn.execute(drop.as_str()).await?;
    }
    for statement in DATA_SQL.split("\n-- ;\n") {
        // The numbers are ours (integers), not user text; utility statements such as
        // CREATE TABLE AS take no bind parameters.
        let statement = statement
            .replace("$1::bigint", &format!("{}::bigint", options.events))
            .replace("$2::int", &format!("{}::int", options.institutions));
        conn.execute(statement.as_str()).await?;
    }
    for (_, definition) in &indexes {
        conn.execute(definition.as_str()).await?;
    }
    conn.execute(
        "VACUUM (ANALYZE) events, admin_events, task_queue, task_history, admin_event_search",
    )
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Times the list query over data made by [`generate`].
pub async fn measure(
    pool: &PgPool,
    options: &ListBenchOptions,
) -> Result<Vec<ListMeasurement>, BenchError> {
    let mut measurements = Vec::new();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_events")
        .fetch_one(pool)
        .await?;
    for (filter_name, filter) in filters(events) {
        for (sort, sort_name) in SORTS {
            for descending in [false, true] {
                let query = EventListQuery {
                    sort: *sort,
                    descending,
                    limit: Some(options.page_size),
                    ..filter.clone()
                };
                let mut first = Vec::with_capacity(options.samples);
                for _ in 0..options.samples {
                    first.push(timed(pool, &query).await?.0);
                }
                let mut deep = Vec::new();
                let mut cursor = None;
                let mut pages_reached = 1;
                let mut deepest = query.clone();
                for page in 1..=options.pages {
                    let this = EventListQuery {
                        after: cursor.clone(),
                        ..query.clone()
                    };
                    let (ms, next) = timed(pool, &this).await?;
                    if page > 1 {
                        deep.push(ms);
                        pages_reached = page;
                        deepest = this;
                    }
                    match next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                if pages_reached > 1 {
                    for _ in 0..options.samples {
                        deep.push(timed(pool, &deepest).await?.0);
                    }
                }
                measurements.push(ListMeasurement {
                    filter: filter_name,
                    sort: sort_name,
                    descending,
                    first,
                    deep,
                    pages_reached,
                });
            }
        }
    }
    Ok(measurements)
}

async fn timed(pool: &PgPool, query: &EventListQuery) -> Result<(f64, Option<String>), BenchError> {
    let started = Instant::now();
    let page = list_admin_events(pool, query)
        .await
        .map_err(|e| BenchError::Generate(e.to_string()))?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, page.next))
}

/// Generates the data, then measures.
pub async fn bench_list_query(
    pool: &PgPool,
    options: &ListBenchOptions,
) -> Result<ListBenchReport, BenchError> {
    let generate_seconds = generate(pool, options).await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_events")
        .fetch_one(pool)
        .await?;
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(pool)
        .await?;
    let measurements = measure(pool, options).await?;
    Ok(ListBenchReport {
        events,
        tasks,
        generate_seconds,
        measurements,
    })
}

/// The `q`-quantile (0..=1) of `values` (nearest rank); 0 when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mark(ms: f64) -> &'static str {
    if ms > LIMIT_MS {
        " !"
    } else {
        ""
    }
}

fn summary_line(out: &mut String, label: &str, samples: &[f64]) {
    let (p50, p95, max) = (
        quantile(samples, 0.5),
        quantile(samples, 0.95),
        quantile(samples, 1.0),
    );
    let _ = writeln!(
        out,
        "  {label:<18} {:>7} {p50:>8.2} {p95:>8.2}{:<2} {max:>8.2}{}",
        samples.len(),
        mark(p95),
        mark(max)
    );
}

impl ListBenchReport {
    /// The tables `aula bench list-query` prints: per filter, per sort, overall, and
    /// every filter × sort × direction whose p95 or max is over [`LIMIT_MS`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        let all: Vec<f64> = self
            .measurements
            .iter()
            .flat_map(|m| m.first.iter().chain(&m.deep).copied())
            .collect();
        let _ = writeln!(
            out,
            "{} events, {} tasks (generated in {:.1} s); {} list queries timed (ms; '!' = over {LIMIT_MS} ms)",
            self.events,
            self.tasks,
            self.generate_seconds,
            all.len()
        );
        let header = format!(
            "  {:<18} {:>7} {:>8} {:>10} {:>8}",
            "", "samples", "p50", "p95", "max"
        );
        let mut by_filter: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
        let mut by_sort: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
        let order = |name: &str, names: &[&str]| names.iter().position(|n| *n == name);
        let filter_names: Vec<&str> = filters(0).iter().map(|(n, _)| *n).collect();
        let sort_names: Vec<&str> = SORTS.iter().map(|(_, n)| *n).collect();
        for m in &self.measurements {
            let samples = m.first.iter().chain(&m.deep).copied();
            by_filter
                .entry((order(m.filter, &filter_names).unwrap_or(99), m.filter))
                .or_default()
                .extend(samples.clone());
            by_sort
                .entry((order(m.sort, &sort_names).unwrap_or(99), m.sort))
                .or_default()
                .extend(samples);
        }
        for (per, every, groups) in [("filter", "sort", &by_filter), ("sort", "filter", &by_sort)] {
            let _ = writeln!(
                out,
                "per {per} (every {every}, both directions, first and deep pages):"
            );
            let _ = writeln!(out, "{header}");
            for ((_, name), samples) in groups {
                summary_line(&mut out, name, samples);
            }
        }
        let first: Vec<f64> = self
            .measurements
            .iter()
            .flat_map(|m| m.first.iter().copied())
            .collect();
        let deep: Vec<f64> = self
            .measurements
            .iter()
            .flat_map(|m| m.deep.iter().copied())
            .collect();
        let _ = writeln!(out, "overall:");
        let _ = writeln!(out, "{header}");
        summary_line(&mut out, "first pages", &first);
        summary_line(&mut out, "deep pages", &deep);
        summary_line(&mut out, "all", &all);
        let worst: Vec<&ListMeasurement> = self
            .measurements
            .iter()
            .filter(|m| {
                quantile(&m.first, 0.95) > LIMIT_MS
                    || quantile(&m.deep, 0.95) > LIMIT_MS
                    || quantile(&m.first, 1.0) > LIMIT_MS
                    || quantile(&m.deep, 1.0) > LIMIT_MS
            })
            .collect();
        if worst.is_empty() {
            let _ = writeln!(
                out,
                "every filter × sort × direction: p95 and max under {LIMIT_MS} ms"
            );
        } else {
            let _ = writeln!(
                out,
                "over {LIMIT_MS} ms (filter / sort / direction: first-page p95, max; deep-page p95, max; pages reached):"
            );
            for m in worst {
                let _ = writeln!(
                    out,
                    "  {:<18} {:<13} {:<4} first {:>8.2} {:>8.2}  deep {:>8.2} {:>8.2}  {} pages",
                    m.filter,
                    m.sort,
                    if m.descending { "desc" } else { "asc" },
                    quantile(&m.first, 0.95),
                    quantile(&m.first, 1.0),
                    quantile(&m.deep, 0.95),
                    quantile(&m.deep, 1.0),
                    m.pages_reached
                );
            }
        }
        // The target is on the 95th percentile of each combination, first and deep pages.
        let over_target = self
            .measurements
            .iter()
            .filter(|m| quantile(&m.first, 0.95) > LIMIT_MS || quantile(&m.deep, 0.95) > LIMIT_MS)
            .count();
        let p95 = quantile(&all, 0.95);
        let _ = writeln!(
            out,
            "overall p95 {p95:.2} ms{}; {over_target} of {} filter × sort × direction combinations \
             with a first- or deep-page p95 over {LIMIT_MS} ms (target: none)",
            mark(p95),
            self.measurements.len()
        );
        out
    }
}
pub async fn run(
    settings: &Settings,
    options: ListBenchOptions,
    reuse_database: Option<String>,
    keep: bool,
) -> anyhow::Result<()> {
    let err = |e: BenchError| anyhow::anyhow!("{e}");
    if let Some(name) = reuse_database {
        let url = settings
            .database_url
            .as_deref()
            .context("--reuse-database needs DATABASE_URL")?;
        let connect = url.parse::<PgConnectOptions>()?.database(&name);
        let pool = aula_eventlog::db::pool(connect, 4).await?;
        sqlx::query("ANALYZE admin_events").execute(&pool).await?;
        println!("aula bench list-query: measuring database {name}...");
        let report = ListBenchReport {
            events: sqlx::query_scalar("SELECT count(*) FROM admin_events")
                .fetch_one(&pool)
                .await?,
            tasks: sqlx::query_scalar("SELECT count(*) FROM tasks")
                .fetch_one(&pool)
                .await?,
            generate_seconds: 0.0,
            measurements: measure(&pool, &options).await.map_err(err)?,
        };
        print!("{}", report.render());
        task_error_search(&pool).await?;
        return Ok(());
    }
    if keep && settings.database_url.is_none() {
        anyhow::bail!("--keep needs DATABASE_URL (the private server stops with this process)");
    }
    let db = BenchDatabase::create(settings).await?;
    println!(
        "aula bench list-query: generating {} events and about {} tasks...",
        options.events,
        2 * options.events
    );
    let report = bench_list_query(&db.pool, &options).await.map_err(err)?;
    print!("{}", report.render());
    task_error_search(&db.pool).await?;
    if keep {
        println!("kept database {}", db.name);
        return Ok(());
    }
    db.drop_database().await
}

/// The task list's error search (issue #23) over the generated tasks, through the very
/// function `adminTasks` calls: one task's error (it names its event) and an error text
/// every failed task holds, first pages in both directions, 10 samples each.
async fn task_error_search(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    use aula_processor::task_list::{list_tasks, TaskListQuery};
    let failed: Option<i64> = sqlx::query_scalar(
        "SELECT min(a.global_position) FROM admin_events a WHERE a.tasks_failed > 0",
    )
    .fetch_one(pool)
    .await?;
    let Some(position) = failed else {
        println!("task error search: no failed task to find");
        return Ok(());
    };
    println!("task error search (adminTasks first page, 50 rows):");
    println!(
        "  {:<26} {:>7} {:>8} {:>8}",
        "search", "samples", "p50 ms", "p95 ms"
    );
    for (label, text) in [
        ("one task's error", format!("(event {position})")),
        ("every failed task", "smtp timeout".to_owned()),
    ] {
        let mut samples = Vec::new();
        for descending in [true, false] {
            for _ in 0..10 {
                let query = TaskListQuery {
                    error_search: Some(text.clone()),
                    descending,
                    limit: Some(50),
                    ..TaskListQuery::default()
                };
                let started = std::time::Instant::now();
                list_tasks(pool, &query)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                samples.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        println!(
            "  {label:<26} {:>7} {:>8.2} {:>8.2}",
            samples.len(),
            quantile(&samples, 0.5),
            quantile(&samples, 0.95)
        );
    }
    Ok(())
}
