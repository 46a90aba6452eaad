//! Aula's read models: projections of the commit-ordered event log.
//!
//! Each read model is one [`Consumer`] fed by its own subscription (see
//! `aula_eventlog::subscription`), named as in [`NAMES`]. Its rows and its checkpoint
//! move in one transaction, so every event takes effect exactly once. Handlers fold a
//! whole batch in memory and write it with a few set-based statements (`unnest`), which
//! is what makes rebuilding from history fast.
//!
//! | name | tables | from |
//! |---|---|---|
//! | `course_capacity` | `course_capacity` | course events, `ApplicationSubmitted` |
//! | `age_metrics` | `age_counts` | `StudentEnrolled`, `EnrollmentCancelled` |
//! | `course_enrollments` | `course_enrollments` | `StudentEnrolled`, `EnrollmentCancelled` |
//! | `directory` | `directory_people`, `directory_grades`, `directory_applications` | students, teachers and their accounts, exam grades, applications and their decisions |
//! | `audit_log` | `audit_log` | every event's metadata |
//! | `admin_events` | `admin_events` | every event (processing columns: the processor) |
//!
//! **Invariant:** domain read models (`course_capacity`, `age_metrics`,
//! `course_enrollments`, `directory`) skip reprocessed copies (metadata key `reprocessed_from`);
//! the admin and audit views record them, linked to their original.
//!
//! **Invariant:** a projection's rows depend on the events alone (no clock, no
//! randomness), so a rebuild from position zero reproduces the live rows exactly
//! ([`rebuild`](mod@rebuild)).
//!
//! **Boundary:** no HTTP or GraphQL here: the query functions return plain typed rows
//! that `aula-api` wraps. The tables are declared by `aula-migrations`
//! (`0002_projections.sql`); a rebuild only copies them.
#![forbid(unsafe_code)]

/// Implements [`Consumer`] for a read model whose module has
/// `async fn handle(tx, events) -> Result<(), ProjectionError>`: the batch goes to it.
macro_rules! read_model_consumer {
    ($model:ty) => {
        #[async_trait::async_trait]
        impl aula_eventlog::Consumer for $model {
            async fn handle(
                &mut self,
                tx: &mut sqlx::PgConnection,
                events: &[aula_eventlog::RecordedEvent],
            ) -> Result<(), aula_eventlog::BoxError> {
                Ok(handle(tx, events).await?)
            }
        }
    };
}

pub mod admin_events;
pub mod age_metrics;
pub mod audit_log;
mod copy_rows;
pub mod course_capacity;
pub mod decode;
pub mod directory;
pub mod enrollments;
pub mod lookups;
pub mod rebuild;
pub mod status;

use aula_eventlog::shutdown::Shutdown;
use aula_eventlog::subscription::{self, BoxError, SubscriptionHandle};
use aula_eventlog::{Consumer, RecordedEvent, SubscriptionOptions, Wakeups};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};

// The crate's surface: each read model's module is the namespace of its rows and query
// functions (`directory::people_page`); these are the names used across read models.
pub use admin_events::AdminEvents;
pub use age_metrics::AgeMetrics;
pub use audit_log::AuditLog;
pub use course_capacity::CourseCapacity;
pub use directory::Directory;
pub use enrollments::CourseEnrollments;
pub use rebuild::{
    rebuild, rebuild_many, rebuild_progress, RebuildError, RebuildProgress, RebuildReport,
};
pub use status::{status, ProjectionStatus};

/// Every projection, by subscription name.
pub const NAMES: &[&str] = &[
    course_capacity::NAME,
    age_metrics::NAME,
    enrollments::NAME,
    directory::NAME,
    audit_log::NAME,
    admin_events::NAME,
];

/// Why a projection could not handle an event. The subscription retries it with
/// backoff and never skips it.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event at position {global_position} ({event_type}) could not be decoded: {source}")]
    Decode {
        global_position: i64,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("event at position {global_position} has an aggregate id that is not a uuid: {aggregate_id:?}")]
    BadAggregateId {
        global_position: i64,
        aggregate_id: String,
    },
    #[error("the read model disagrees with the log: {0}")]
    Inconsistent(String),
}

/// The tables a projection owns (what a rebuild copies and swaps).
pub fn tables(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        course_capacity::NAME => course_capacity::TABLES,
        age_metrics::NAME => age_metrics::TABLES,
        enrollments::NAME => enrollments::TABLES,
        directory::NAME => directory::TABLES,
        audit_log::NAME => audit_log::TABLES,
        admin_events::NAME => admin_events::TABLES,
        _ => return None,
    })
}

/// Every row of every read model's tables, as text and sorted, table by table: equal
/// snapshots mean equal read models (a rebuild, or several processes' work, compared
/// with what one process would leave).
pub async fn snapshot(pool: &PgPool) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
    let mut all = Vec::new();
    for table in NAMES.iter().filter_map(|name| tables(name)).flatten() {
        let rows = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t ORDER BY t::text"))
            .fetch_all(pool)
            .await?;
        all.push((table.to_string(), rows));
    }
    Ok(all)
}

/// A fresh consumer for the projection `name`.
pub fn consumer(name: &str) -> Option<Box<dyn Consumer>> {
    Some(match name {
        course_capacity::NAME => Box::new(course_capacity::CourseCapacity),
        age_metrics::NAME => Box::new(age_metrics::AgeMetrics),
        enrollments::NAME => Box::new(enrollments::CourseEnrollments),
        directory::NAME => Box::new(directory::Directory),
        audit_log::NAME => Box::new(audit_log::AuditLog),
        admin_events::NAME => Box::new(admin_events::AdminEvents),
        _ => return None,
    })
}

/// The events each read model reads (by aggregate type and event type), for the event
/// catalog. The handlers filter with the same lists.
pub fn consumers_of(aggregate_type: &str, event_type: &str) -> Vec<&'static str> {
    let mut names = Vec::new();
    if aggregate_type == "application" {
        names.push("course_capacity");
    }
    if aggregate_type == "course" {
        names.push("course_capacity");
        if age_metrics::EVENT_TYPES.contains(&event_type) {
            names.push("age_metrics");
        }
        if enrollments::EVENT_TYPES.contains(&event_type) {
            names.push("course_enrollments");
        }
    }
    if directory::reads(aggregate_type, event_type) {
        names.push(directory::NAME);
    }
    names.extend(["audit_log", "admin_events"]);
    names
}
/// `%text%` for `LIKE`/`ILIKE`, with `%`, `_` and `\` in `text` matched literally: the
/// search of every list that filters by a typed text.
pub fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A boxed consumer, so one `spawn` serves every projection.
pub struct BoxedConsumer(pub Box<dyn Consumer>);

#[async_trait::async_trait]
impl Consumer for BoxedConsumer {
    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        self.0.handle(tx, events).await
    }
}

/// Starts one subscription per projection, with default options.
pub fn spawn_all(
    connect: PgConnectOptions,
    wakeups: Wakeups,
    shutdown: Shutdown,
) -> Vec<(String, SubscriptionHandle)> {
    NAMES
        .iter()
        .map(|name| {
            (
                name.to_string(),
                spawn_one(
                    connect.clone(),
                    SubscriptionOptions::new(*name),
                    wakeups.clone(),
                    shutdown.clone(),
                ),
            )
        })
        .collect()
}

/// Starts the projection `options.name` with the given options (tests shorten the
/// intervals). Panics if the name is not one of [`NAMES`]: that is a programming error.
pub fn spawn_one(
    connect: PgConnectOptions,
    options: SubscriptionOptions,
    wakeups: Wakeups,
    shutdown: Shutdown,
) -> SubscriptionHandle {
    let consumer = consumer(&options.name)
        .unwrap_or_else(|| panic!("unknown projection {:?}; see NAMES", options.name));
    subscription::spawn(connect, options, BoxedConsumer(consumer), wakeups, shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_the_text_literally() {
        assert_eq!(like_pattern("ana"), "%ana%");
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
