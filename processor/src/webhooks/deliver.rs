//! The `webhook.deliver` task: one attempt of one message.
//!
//! The attempt is recorded, the message and the endpoint's health updated, and the next
//! attempt (a new task, run at the schedule's time or the receiver's `Retry-After`)
//! inserted, all in one transaction. A task that runs again after a crash finds its
//! attempt recorded and does nothing; one that crashed before recording sends again:
//! at least once, always with the same `webhook-id` and body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aula_domain::webhook_endpoint::WebhookEndpointEvent;
use aula_eventlog::{Actor, Cause, EventMetadata};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::http::{Answer, Client};
use super::loads::Loads;
use super::signing::{signature_header, Signer};
use super::successes::{Success, Successes};
use super::target::{self, TargetError};
use super::{message_header_id, WebhookConfig};
use crate::handlers::{TaskContext, TaskError, TaskHandler};
use crate::mail::{EmailMessage, Mailer};
use crate::queue::insert_tasks;

/// Delivery outcomes, the `outcome` label of `aula_webhook_deliveries_total`.
pub const OUTCOMES: &[&str] = &["succeeded", "failed", "refused", "gone", "timeout"];

/// The handler of `webhook.deliver`.
#[derive(Clone)]
pub struct WebhookDelivery {
    config: Arc<WebhookConfig>,
    client: Client,
    mailer: Option<Arc<dyn Mailer>>,
    successes: Successes,
    loads: Loads,
}

impl WebhookDelivery {
    /// `mailer` e-mails an endpoint's owner when it is disabled for failing too long.
    pub fn new(config: WebhookConfig, mailer: Option<Arc<dyn Mailer>>) -> Self {
        Self {
            config: Arc::new(config),
            client: Client::new(),
            mailer,
            successes: Successes::default(),
            loads: Loads::default(),
        }
    }
}

/// What one delivery reads: the message and its endpoint.
#[derive(Clone, sqlx::FromRow)]
pub(crate) struct Delivery {
    pub(crate) message_id: Uuid,
    endpoint_id: Uuid,
    body: String,
    status: String,
    attempts: i32,
    url: String,
    enabled: bool,
    deleted: bool,
    signature_scheme: String,
    secret: Vec<u8>,
    previous_signature_scheme: String,
    previous_secret: Option<Vec<u8>>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// What one attempt came to.
struct Attempt {
    started_at: DateTime<Utc>,
    latency: Duration,
    status_code: Option<i32>,
    outcome: &'static str,
    excerpt: Option<String>,
    error: Option<String>,
    retry_after: Option<Duration>,
}

#[async_trait::async_trait]
impl TaskHandler for WebhookDelivery {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let payload = &ctx.task.payload;
        let message_id: Uuid = payload
            .get("message_id")
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| TaskError::permanent("the task payload has no message_id"))?;
        let attempt = payload
            .get("attempt")
            .and_then(Value::as_i64)
            .and_then(|a| i32::try_from(a).ok())
            .ok_or_else(|| TaskError::permanent("the task payload has no attempt"))?;
        let manual = payload
            .get("manual")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        // Read in a batch with the deliveries that started meanwhile (see `loads`).
        let delivery = self
            .loads
            .load(&ctx.pool, message_id)
            .await
            .map_err(|error| TaskError::Retry(error.into()))?;
        let Some(delivery) = delivery else {
            return Err(TaskError::permanent(format!(
                "message {message_id} not found"
            )));
        };
        // Already recorded (this task ran before a crash) or finished meanwhile.
        if delivery.attempts >= attempt || delivery.status != "pending" {
            return Ok(());
        }
        if !delivery.enabled || delivery.deleted {
            sqlx::query(
                "UPDATE webhook_messages SET status = 'failed', finished_at = now(),
                        next_attempt_at = NULL, last_error = 'the endpoint is disabled'
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(message_id)
            .execute(&ctx.pool)
            .await?;
            return Ok(());
        }
        let result = self.attempt(message_id, &delivery).await;
        let outcome_label = result.outcome;
        crate::metrics::WEBHOOK_DELIVERIES
            .with([outcome_label])
            .inc();
        crate::metrics::WEBHOOK_LATENCY
            .with([])
            .observe(result.latency.as_secs_f64());
        self.record(ctx, message_id, attempt, manual, &delivery, result)
            .await
    }
}

/// One attempt's row; a rerun of the same attempt (after a crash) overwrites it.
const INSERT_ATTEMPT: &str =
    "INSERT INTO webhook_attempts (message_id, attempt, endpoint_id, started_at, latency_ms,
                                   status_code, outcome, response_excerpt, error)
     VALUES ($1, $2, $3, $4, $5, $6, $7, left($8, 1024), $9)
     ON CONFLICT (message_id, attempt) DO UPDATE SET
         started_at = EXCLUDED.started_at, latency_ms = EXCLUDED.latency_ms,
         status_code = EXCLUDED.status_code, outcome = EXCLUDED.outcome,
         response_excerpt = EXCLUDED.response_excerpt, error = EXCLUDED.error";

impl WebhookDelivery {
    async fn attempt(&self, message_id: Uuid, delivery: &Delivery) -> Attempt {
        let started_at = Utc::now();
        let started = Instant::now();
        let refused = |error: TargetError| Attempt {
            started_at,
            latency: started.elapsed(),
            status_code: None,
            outcome: "refused",
            excerpt: None,
            error: Some(format!("refused: {error}")),
            retry_after: None,
        };
        // The URL was checked at registration; settings and DNS may have changed since.
        let target = match target::parse(&self.config, &delivery.url) {
            Ok(target) => target,
            Err(error) => return refused(error),
        };
        let address = match target::resolve(&self.config, &target, self.config.timeout).await {
            Ok(address) => address,
            Err(error) => return refused(error),
        };
        let header_id = message_header_id(message_id);
        let timestamp = started_at.timestamp();
        // A stored key that does not fit its scheme cannot sign: refused, never sent
        // unsigned (the table's checks make it unreachable).
        let Some(current) = Signer::from_stored(&delivery.signature_scheme, &delivery.secret)
        else {
            return Attempt {
                started_at,
                latency: started.elapsed(),
                status_code: None,
                outcome: "refused",
                excerpt: None,
                error: Some("refused: the endpoint's signing key is unusable".into()),
                retry_after: None,
            };
        };
        let previous = delivery
            .previous_secret
            .as_deref()
            .filter(|_| {
                delivery
                    .previous_secret_expires_at
                    .is_some_and(|t| t > started_at)
            })
            .and_then(|bytes| Signer::from_stored(&delivery.previous_signature_scheme, bytes));
        let mut secrets = vec![&current];
        secrets.extend(previous.as_ref());
        let headers = [
            ("webhook-id", header_id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                signature_header(&secrets, &header_id, timestamp, &delivery.body),
            ),
        ];
        let answer = self
            .client
            .post(
                &target,
                address,
                &headers,
                delivery.body.clone(),
                self.config.timeout,
            )
            .await;
        let latency = started.elapsed();
        match answer {
            Ok(Answer {
                status,
                retry_after,
                excerpt,
            }) => Attempt {
                started_at,
                latency,
                status_code: Some(i32::from(status)),
                outcome: match status {
                    200..=299 => "succeeded",
                    410 => "gone",
                    _ => "failed",
                },
                excerpt: Some(excerpt),
                error: (!(200..=299).contains(&status))
                    .then(|| format!("the endpoint answered {status}")),
                retry_after: retry_after.filter(|_| status == 429 || status == 503),
            },
            Err(error) => Attempt {
                started_at,
                latency,
                status_code: None,
                outcome: if matches!(error, super::http::RequestError::Timeout(_)) {
                    "timeout"
                } else {
                    "failed"
                },
                excerpt: None,
                error: Some(error.to_string()),
                retry_after: None,
            },
        }
    }

    async fn record(
        &self,
        ctx: &TaskContext,
        message_id: Uuid,
        attempt: i32,
        manual: bool,
        delivery: &Delivery,
        result: Attempt,
    ) -> Result<(), TaskError> {
        if result.outcome == "succeeded" {
            // Batched with the other successes of this process (see `successes`).
            let success = Success {
                message_id,
                attempt,
                endpoint_id: delivery.endpoint_id,
                started_at: result.started_at,
                latency_ms: result.latency.as_secs_f64() * 1000.0,
                status_code: result.status_code,
                excerpt: result.excerpt,
            };
            return self
                .successes
                .record(&ctx.pool, success)
                .await
                .map_err(|error| TaskError::Retry(error.into()));
        }
        let gone = result.outcome == "gone";
        // The next attempt: the receiver's `Retry-After` (bounded by the longest step
        // of the schedule) or the schedule's next step; none after a 410, a manual
        // resend or the last step.
        let next = if gone || manual {
            None
        } else {
            self.config
                .retry_delay(attempt)
                .map(|delay| match result.retry_after {
                    Some(hint) => hint.min(
                        self.config
                            .retry_schedule
                            .iter()
                            .copied()
                            .max()
                            .unwrap_or(delay),
                    ),
                    None => delay,
                })
        };
        let mut tx = ctx.pool.begin().await?;
        // Asynchronous commit, as for successes (see `successes`).
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_ATTEMPT)
            .bind(message_id)
            .bind(attempt)
            .bind(delivery.endpoint_id)
            .bind(result.started_at)
            .bind(result.latency.as_secs_f64() * 1000.0)
            .bind(result.status_code)
            .bind(result.outcome)
            .bind(result.excerpt.as_deref())
            .bind(result.error.as_deref())
            .execute(&mut *tx)
            .await?;
        let status = if next.is_some() { "pending" } else { "failed" };
        sqlx::query(
            "UPDATE webhook_messages
             SET attempts = $2, status = $3, last_error = $4,
                 next_attempt_at = now() + $5 * interval '1 millisecond',
                 finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
             WHERE id = $1",
        )
        .bind(message_id)
        .bind(attempt)
        .bind(status)
        .bind(result.error.as_deref())
        .bind(next.map(|d| d.as_secs_f64() * 1000.0))
        .execute(&mut *tx)
        .await?;
        if let Some(delay) = next {
            let mut task = super::fanout::delivery_task(
                message_id,
                attempt + 1,
                false,
                ctx.task.institution_id,
            );
            task.run_at = Some(
                Utc::now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(10)),
            );
            insert_tasks(&mut tx, &[task]).await?;
        }
        // The endpoint's row last: every delivery to the endpoint touches it, so its lock
        // is held for as short a time as possible (lock order: message, counters,
        // endpoint, as in `recover::resend`).
        let error = result.error.clone().unwrap_or_default();
        let too_long = format!(
            "failing for more than {} hours",
            self.config.disable_after.as_secs() / 3600
        );
        let disabled: Option<(String, Option<Uuid>)> = sqlx::query_as(
            "UPDATE webhook_endpoints
             SET failing_since = COALESCE(failing_since, now()), last_failure_at = now(),
                 last_failure = $2,
                 enabled = CASE WHEN $3 OR COALESCE(failing_since, now()) < now() - $4 * interval '1 second'
                                THEN false ELSE enabled END,
                 disabled_reason = CASE
                     WHEN NOT enabled THEN disabled_reason
                     WHEN $3 THEN 'the endpoint answered 410 Gone'
                     WHEN COALESCE(failing_since, now()) < now() - $4 * interval '1 second' THEN $5
                     ELSE disabled_reason END,
                 updated_at = now()
             FROM (SELECT enabled AS was_enabled FROM webhook_endpoints WHERE id = $1 FOR NO KEY UPDATE) old
             WHERE id = $1
             RETURNING old.was_enabled AND NOT webhook_endpoints.enabled,
                       webhook_endpoints.disabled_reason, webhook_endpoints.created_by_user",
        )
        .bind(delivery.endpoint_id)
        .bind(&error)
        .bind(gone)
        .bind(self.config.disable_after.as_secs_f64())
        .bind(&too_long)
        .fetch_optional(&mut *tx)
        .await?
        .and_then(|(newly, reason, owner): (bool, Option<String>, Option<Uuid>)| {
            newly.then(|| (reason.unwrap_or_default(), owner))
        });
        // Disabled by delivery: recorded for the audit log, by the system, in the
        // endpoint's institution, caused by this task.
        let recorded = match &disabled {
            Some((reason, _)) => {
                let owner: Option<Uuid> = sqlx::query_scalar(
                    "SELECT institution_id FROM webhook_endpoints WHERE id = $1",
                )
                .bind(delivery.endpoint_id)
                .fetch_one(&mut *tx)
                .await?;
                let mut metadata = EventMetadata::new(Actor::System, owner);
                metadata.causation = Cause::Task(ctx.task.id);
                Some(
                    super::audit::record(
                        &mut tx,
                        delivery.endpoint_id,
                        &metadata,
                        &[WebhookEndpointEvent::WebhookEndpointDisabled {
                            endpoint_id: delivery.endpoint_id,
                            reason: reason.clone(),
                        }],
                    )
                    .await?,
                )
            }
            None => None,
        };
        tx.commit().await?;
        if let Some(recorded) = recorded {
            recorded.committed(&ctx.pool).await;
        }
        if let Some((reason, owner)) = disabled {
            tracing::warn!(endpoint = %delivery.endpoint_id, %reason, "webhook endpoint disabled");
            self.tell_owner(ctx, delivery, &reason, owner).await;
        }
        Ok(())
    }

    /// E-mails the owner of an endpoint that was just disabled (best effort: the
    /// endpoint's `disabledReason` is the lasting record).
    async fn tell_owner(
        &self,
        ctx: &TaskContext,
        delivery: &Delivery,
        reason: &str,
        owner: Option<Uuid>,
    ) {
        let (Some(mailer), Some(owner)) = (&self.mailer, owner) else {
            return;
        };
        let email: Option<String> =
            match sqlx::query_scalar("SELECT email FROM user_emails WHERE user_id = $1 LIMIT 1")
                .bind(owner)
                .fetch_optional(&ctx.pool)
                .await
            {
                Ok(email) => email,
                Err(error) => {
                    tracing::warn!(%error, "could not look up the webhook endpoint's owner");
                    return;
                }
            };
        let Some(email) = email else { return };
        let text = format!(
            "Your webhook endpoint {} was disabled: {reason}.\n\nRe-enable it in the Aula dashboard (Webhooks) once it answers again; \"recover\" sends what it missed.",
            delivery.url
        );
        let message = EmailMessage {
            to: email,
            subject: "Aula: a webhook endpoint was disabled".into(),
            html: format!("<p>{}</p>", html_escape(&text)),
            text,
            idempotency_key: format!(
                "webhook-disabled:{}:{}",
                delivery.endpoint_id,
                Utc::now().timestamp()
            ),
        };
        if let Err(error) = mailer.send(&message).await {
            tracing::warn!(%error, endpoint = %delivery.endpoint_id, "could not e-mail the webhook endpoint's owner");
        }
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
