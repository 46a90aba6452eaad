//! What the dashboard reads of the processing counters: today's rate, the status counts,
//! events per minute. Only the counter tables are read, never the tasks.

use chrono::{DateTime, Duration, FixedOffset, NaiveTime, Utc};
use sqlx::PgPool;

use super::{EVENT_STATUSES, KIND_EVENT, KIND_TASK, TASK_STATUSES};

/// The start of the local day containing `now`, for a zone `utc_offset_minutes` east of UTC.
pub fn local_midnight(now: DateTime<Utc>, utc_offset_minutes: i32) -> DateTime<Utc> {
    let offset = FixedOffset::east_opt(utc_offset_minutes * 60)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"));
    let local_date = now.with_timezone(&offset).date_naive();
    let midnight_local = local_date.and_time(NaiveTime::MIN);
    DateTime::<Utc>::from_naive_utc_and_offset(midnight_local, Utc)
        - Duration::minutes(i64::from(utc_offset_minutes))
}

/// Events processed (succeeded or failed) since local midnight, per hour elapsed since
/// then (at least one minute, so just after midnight the rate is not infinite). Reads
/// only `processing_rollups` (at most 1,440 minutes × statuses × shards rows).
pub async fn processing_rate_today(
    pool: &PgPool,
    now: DateTime<Utc>,
    utc_offset_minutes: i32,
) -> Result<f64, sqlx::Error> {
    let since = local_midnight(now, utc_offset_minutes);
    let processed: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(count), 0)::bigint FROM processing_rollups
         WHERE minute >= $1 AND minute <= $2 AND kind = 'event' AND status IN ('succeeded', 'failed')",
    )
    .bind(since)
    .bind(now)
    .fetch_one(pool)
    .await?;
    let hours = ((now - since).num_milliseconds() as f64 / 3_600_000.0).max(1.0 / 60.0);
    Ok(processed as f64 / hours)
}

/// Current counts by status: `(kind, status, count)` for kind `event` ([`EVENT_STATUSES`])
/// then `task` ([`TASK_STATUSES`]), every status listed (0 when none). Reads only
/// `task_status_counts`.
pub async fn status_counts(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, status, sum(count)::bigint FROM task_status_counts GROUP BY kind, status",
    )
    .fetch_all(pool)
    .await?;
    let mut out: Vec<(String, String, i64)> = EVENT_STATUSES
        .iter()
        .map(|s| (KIND_EVENT, *s))
        .chain(TASK_STATUSES.iter().map(|s| (KIND_TASK, *s)))
        .map(|(k, s)| (k.to_owned(), s.to_owned(), 0))
        .collect();
    for (kind, status, count) in rows {
        match out.iter_mut().find(|(k, s, _)| *k == kind && *s == status) {
            Some(slot) => slot.2 = count,
            None if count != 0 => out.push((kind, status, count)),
            None => {}
        }
    }
    Ok(out)
}

/// Events processed per minute from `from` (inclusive) to `to` (exclusive): `(minute,
/// status, count)`, from the rollups.
pub async fn processed_per_minute(
    pool: &PgPool,
    kind: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT minute, status, sum(count)::bigint FROM processing_rollups
         WHERE minute >= $1 AND minute < $2 AND kind = $3
         GROUP BY minute, status HAVING sum(count) <> 0 ORDER BY minute, status",
    )
    .bind(from)
    .bind(to)
    .bind(kind)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::utc;

    #[test]
    fn local_midnight_follows_the_offset() {
        let now = utc("2026-11-22T02:30:00Z");
        assert_eq!(local_midnight(now, 0), utc("2026-11-22T00:00:00Z"));
        // UTC-3: local time is 23:30 on the 21st.
        assert_eq!(local_midnight(now, -180), utc("2026-11-21T03:00:00Z"));
        // UTC+5:30: local time is 08:00 on the 22nd.
        assert_eq!(local_midnight(now, 330), utc("2026-11-21T18:30:00Z"));
    }
}
