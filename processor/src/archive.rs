//! The nightly archive: succeeded tasks (and their attempts) finished before
//! `now - retention` move to `tasks_archive` / `task_attempts_archive`, in batches of
//! short transactions (`FOR UPDATE SKIP LOCKED`, so running workers are never blocked).
//! Expired stashed tokens are purged in the same run.
//!
//! [`run_archive_scheduler`] runs it every day at a configured local time; the local
//! time zone is a fixed UTC offset (`AULA_ARCHIVE_UTC_OFFSET_MINUTES`), which is enough
//! for "around midnight" and needs no time-zone database.

use std::sync::Arc;
use std::time::Duration;

use aula_eventlog::shutdown::Shutdown;
use chrono::{DateTime, FixedOffset, NaiveTime, TimeZone, Utc};
use sqlx::PgPool;

use crate::config::{number, SettingError};

pub use aula_eventlog::clock::{Clock, SystemClock};

/// Archive settings.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Succeeded tasks older than this move (`AULA_ARCHIVE_RETENTION_HOURS`, default 24).
    pub retention: Duration,
    /// Tasks per transaction (`AULA_ARCHIVE_BATCH`, default 1000).
    pub batch_size: i64,
    /// Local time of day to run (`AULA_ARCHIVE_AT`, `HH:MM`, default `00:00`).
    pub at: NaiveTime,
    /// The local time zone as a fixed offset (`AULA_ARCHIVE_UTC_OFFSET_MINUTES`, default 0).
    pub utc_offset: FixedOffset,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            batch_size: 1000,
            at: NaiveTime::MIN,
            utc_offset: FixedOffset::east_opt(0).expect("0 is a valid offset"),
        }
    }
}

impl ArchiveConfig {
    /// Reads the settings (the defaults for those unset); a value that does not parse or
    /// is out of its range is an error naming its variable.
    pub fn from_env() -> Result<Self, SettingError> {
        let d = Self::default();
        let at = match std::env::var("AULA_ARCHIVE_AT") {
            Ok(value) if !value.trim().is_empty() => {
                NaiveTime::parse_from_str(value.trim(), "%H:%M").map_err(|_| SettingError {
                    name: "AULA_ARCHIVE_AT",
                    value,
                    expected: "a time of day as HH:MM".into(),
                })?
            }
            _ => d.at,
        };
        // Offsets in use run from UTC-12:00 to UTC+14:00.
        let offset_minutes = number("AULA_ARCHIVE_UTC_OFFSET_MINUTES", 0, -720..=840)?;
        Ok(Self {
            retention: Duration::from_secs(
                number("AULA_ARCHIVE_RETENTION_HOURS", 24, 0..=87_600)? * 3600,
            ),
            batch_size: number("AULA_ARCHIVE_BATCH", d.batch_size, 1..=100_000)?,
            at,
            utc_offset: FixedOffset::east_opt(offset_minutes * 60).unwrap_or(d.utc_offset),
        })
    }
}

/// What one archive run moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    pub tasks_moved: i64,
    pub attempts_moved: i64,
    pub batches: u32,
    pub tokens_purged: u64,
}

/// Moves succeeded tasks finished before `now - retention`, `batch_size` per transaction.
pub async fn archive_once(
    pool: &PgPool,
    now: DateTime<Utc>,
    config: &ArchiveConfig,
) -> Result<ArchiveReport, sqlx::Error> {
    let cutoff =
        now - chrono::Duration::from_std(config.retention).unwrap_or(chrono::Duration::days(1));
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO archive_runs (started_at, cutoff) VALUES ($1, $2) RETURNING id",
    )
    .bind(now)
    .bind(cutoff)
    .fetch_one(pool)
    .await?;
    let mut report = ArchiveReport::default();
    loop {
        let (tasks, attempts): (i64, i64) = sqlx::query_as(
            "WITH chosen AS (
                 SELECT id FROM task_history
                 WHERE status = 'succeeded'
                   AND COALESCE(finished_at, '-infinity'::timestamptz) < $1
                 ORDER BY COALESCE(finished_at, '-infinity'::timestamptz)
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), moved AS (
                 DELETE FROM task_history t USING chosen WHERE t.id = chosen.id RETURNING t.*
             ), archived AS (
                 INSERT INTO tasks_archive (id, kind, priority, status, run_at, attempt,
                     max_attempts, lease_until, worker, event_id, event_type, origin_task_id,
                     idempotency_key, payload, institution_id, correlation_id, created_at,
                     started_at, finished_at, last_error, claimed_at, archived_at)
                 SELECT id, kind, priority, status, run_at, attempt, max_attempts, lease_until,
                     worker, event_id, event_type, origin_task_id, idempotency_key, payload,
                     institution_id, correlation_id, created_at, started_at, finished_at,
                     last_error, claimed_at, $3::timestamptz
                 FROM moved
             ), moved_attempts AS (
                 DELETE FROM task_attempts a USING moved WHERE a.task_id = moved.id RETURNING a.*
             ), archived_attempts AS (
                 INSERT INTO task_attempts_archive SELECT moved_attempts.*, $3::timestamptz FROM moved_attempts
             )
             SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM moved_attempts)",
        )
        .bind(cutoff)
        .bind(config.batch_size)
        .bind(now)
        .fetch_one(pool)
        .await?;
        if tasks == 0 {
            break;
        }
        report.tasks_moved += tasks;
        report.attempts_moved += attempts;
        report.batches += 1;
    }
    report.tokens_purged = crate::tokens::purge_expired(pool, now).await?;
    sqlx::query(
        "UPDATE archive_runs SET finished_at = $2, tasks_moved = $3, attempts_moved = $4 WHERE id = $1",
    )
    .bind(run_id)
    .bind(now)
    .bind(report.tasks_moved)
    .bind(report.attempts_moved)
    .execute(pool)
    .await?;
    tracing::info!(?report, %cutoff, "archive run finished");
    Ok(report)
}

/// The first instant strictly after `now` whose local time (at `offset`) is `at`.
pub fn next_run_after(now: DateTime<Utc>, at: NaiveTime, offset: FixedOffset) -> DateTime<Utc> {
    let local = now.with_timezone(&offset);
    let mut date = local.date_naive();
    loop {
        // A fixed offset has no gaps or folds: `single` always succeeds.
        if let Some(candidate) = offset.from_local_datetime(&date.and_time(at)).single() {
            let candidate = candidate.with_timezone(&Utc);
            if candidate > now {
                return candidate;
            }
        }
        date = date.succ_opt().unwrap_or(date);
    }
}

/// Runs [`archive_once`] every day at `config.at` local time until `shutdown`.
pub async fn run_archive_scheduler(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    config: ArchiveConfig,
    mut shutdown: Shutdown,
) {
    loop {
        let now = clock.now();
        let next = next_run_after(now, config.at, config.utc_offset);
        tracing::info!(%next, "next archive run");
        // Sleep in slices of at most a minute so a changed wall clock is noticed.
        loop {
            let now = clock.now();
            if now >= next {
                break;
            }
            let wait = (next - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => return,
            }
        }
        if let Err(error) = archive_once(&pool, clock.now(), &config).await {
            tracing::error!(%error, "the archive run failed; it will run again tomorrow");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::utc;

    #[test]
    fn next_run_is_the_next_local_midnight() {
        let brasilia = FixedOffset::west_opt(3 * 3600).unwrap();
        // 22:00 in Recife (01:00 UTC) -> midnight local = 03:00 UTC the next UTC day.
        assert_eq!(
            next_run_after(utc("2026-11-23T01:00:00Z"), NaiveTime::MIN, brasilia),
            utc("2026-11-23T03:00:00Z")
        );
        // Exactly at midnight: the next one, a day later.
        assert_eq!(
            next_run_after(utc("2026-11-23T03:00:00Z"), NaiveTime::MIN, brasilia),
            utc("2026-11-24T03:00:00Z")
        );
        let utc0 = FixedOffset::east_opt(0).unwrap();
        let at = NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        assert_eq!(
            next_run_after(utc("2026-11-23T05:00:00Z"), at, utc0),
            utc("2026-11-24T02:30:00Z")
        );
    }
}
