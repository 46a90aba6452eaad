//! The processor's metrics: task attempts and e-mails (recorded as they happen, atomics
//! only), and the queue's depth (read from the database when `/metrics` is scraped).

use aula_eventlog::metrics::{Counter, Family, Histogram, Text, LATENCY_BUCKETS};
use sqlx::PgPool;

/// Task attempts run by this process's workers, by kind and outcome: `succeeded`,
/// `failed` (to be retried unless its attempts are exhausted), `failed_permanently` or
/// `dead` (an outcome that can never change, e.g. a one-time link already sent).
pub static TASK_ATTEMPTS: Family<2, Counter> = Family::new(
    "aula_task_attempts_total",
    "Task attempts run by this process, by task kind and outcome (succeeded, failed, failed_permanently, dead).",
    ["kind", "outcome"],
    (),
);

/// How long task attempts took, by kind.
pub static TASK_ATTEMPT_DURATION: Family<1, Histogram> = Family::new(
    "aula_task_attempt_duration_seconds",
    "Duration of task attempts run by this process, by task kind.",
    ["kind"],
    LATENCY_BUCKETS,
);

/// E-mails handed to the mail transport, by transport and outcome (`sent`, `failed`,
/// `unreachable`: the SMTP server could not be reached, see `mail::Unreachable`).
pub static EMAILS: Family<2, Counter> = Family::new(
    "aula_emails_total",
    "E-mails this process handed to its transport, by transport (smtp, file) and outcome (sent, failed, unreachable).",
    ["transport", "outcome"],
    (),
);

/// Webhook delivery attempts by outcome (`succeeded`, `failed`, `refused`, `gone`,
/// `timeout`: see `webhooks::deliver::OUTCOMES`).
pub static WEBHOOK_DELIVERIES: Family<1, Counter> = Family::new(
    "aula_webhook_deliveries_total",
    "Webhook delivery attempts made by this process, by outcome (succeeded, failed, refused, gone, timeout).",
    ["outcome"],
    (),
);

/// How long webhook delivery attempts took (resolution, connection and answer).
pub static WEBHOOK_LATENCY: Family<0, Histogram> = Family::new(
    "aula_webhook_delivery_duration_seconds",
    "Duration of webhook delivery attempts made by this process (resolution, connection, answer).",
    [],
    LATENCY_BUCKETS,
);

/// Records one finished attempt.
pub fn record_attempt(kind: &str, outcome: &'static str, seconds: f64) {
    TASK_ATTEMPTS.with([kind, outcome]).inc();
    TASK_ATTEMPT_DURATION.with([kind]).observe(seconds);
}

/// The counters and histograms recorded in this process.
pub fn encode(out: &mut Text) {
    TASK_ATTEMPTS.encode(out);
    TASK_ATTEMPT_DURATION.encode(out);
    EMAILS.encode(out);
    WEBHOOK_DELIVERIES.encode(out);
    WEBHOOK_LATENCY.encode(out);
}

/// The queue as seen at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueDepth {
    /// `(status, priority, tasks)` for `pending` and `running` tasks.
    pub by_status_and_priority: Vec<(String, i16, i64)>,
    /// `(status, tasks)` for every status, archived tasks included, from the
    /// `task_status_counts` counters.
    pub by_status: Vec<(String, i64)>,
    /// Seconds since the oldest due pending task became due (0 when none is waiting).
    pub oldest_pending_seconds: f64,
}

/// Reads the queue's depth cheaply: the counters table kept in every task-changing
/// transaction for the totals, and the partial indexes on `pending` and `running` rows
/// for the split by priority (proportional to the backlog, never to the table).
pub async fn queue_depth(pool: &PgPool) -> Result<QueueDepth, sqlx::Error> {
    let mut by_status_and_priority: Vec<(String, i16, i64)> = sqlx::query_as(
        "SELECT 'pending', priority, count(*) FROM task_queue WHERE status = 'pending' GROUP BY priority",
    )
    .fetch_all(pool)
    .await?;
    let running: Vec<(String, i16, i64)> = sqlx::query_as(
        "SELECT 'running', priority, count(*) FROM task_queue
         WHERE status = 'running' GROUP BY priority",
    )
    .fetch_all(pool)
    .await?;
    by_status_and_priority.extend(running);
    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, sum(count)::bigint FROM task_status_counts WHERE kind = 'task'
         GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await?;
    // One index probe per priority (the claim index is ordered by priority, run_at).
    let oldest: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - min(p.oldest))::float8
         FROM (SELECT DISTINCT priority FROM task_queue WHERE status = 'pending') d
         CROSS JOIN LATERAL (
             SELECT run_at AS oldest FROM task_queue
             WHERE status = 'pending' AND priority = d.priority
             ORDER BY run_at LIMIT 1) p
         WHERE p.oldest <= now()",
    )
    .fetch_one(pool)
    .await?;
    Ok(QueueDepth {
        by_status_and_priority,
        by_status,
        oldest_pending_seconds: oldest.unwrap_or(0.0).max(0.0),
    })
}

/// Writes [`QueueDepth`] as gauges.
pub fn encode_queue(depth: &QueueDepth, out: &mut Text) {
    let priorities: Vec<(String, String, i64)> = depth
        .by_status_and_priority
        .iter()
        .map(|(status, priority, n)| (status.clone(), priority.to_string(), *n))
        .collect();
    out.gauge(
        "aula_task_queue_depth",
        "Tasks pending or running now, by status and priority (lower runs first).",
        &priorities
            .iter()
            .map(|(status, priority, n)| {
                (
                    vec![("status", status.as_str()), ("priority", priority.as_str())],
                    *n as f64,
                )
            })
            .collect::<Vec<_>>(),
    );
    out.gauge(
        "aula_tasks",
        "Tasks by status, archived ones included (from the task_status_counts counters).",
        &depth
            .by_status
            .iter()
            .map(|(status, n)| (vec![("status", status.as_str())], *n as f64))
            .collect::<Vec<_>>(),
    );
    out.gauge(
        "aula_task_oldest_pending_age_seconds",
        "Seconds since the oldest due pending task became due (0 when none waits).",
        &[(Vec::new(), depth.oldest_pending_seconds)],
    );
}
