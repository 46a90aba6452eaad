//! Endpoints: registration, changes, secret rotation, deletion, and the reads of the
//! operators' views (endpoints with health, messages, attempts).
//!
//! Who may do what is the API's to decide; this module checks what an endpoint may be:
//! its URL ([`super::target`]), its event types (the catalog's), its description's
//! length, and how many endpoints one owner may have.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use aula_domain::webhook_endpoint::WebhookEndpointEvent;
use aula_eventlog::EventMetadata;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::audit::{self, url_origin};
use super::signing::{SignatureScheme, Signer};
use super::target::{self, TargetError};
use super::WebhookConfig;

/// The longest description.
pub const MAX_DESCRIPTION: usize = 1000;

/// Why an endpoint operation was refused. The texts are safe to show to the caller.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("url: {0}")]
    Url(#[from] TargetError),
    #[error("eventTypes: {0:?} is not an event type of the catalog")]
    UnknownEventType(String),
    #[error("description: longer than {MAX_DESCRIPTION} characters")]
    DescriptionTooLong,
    #[error("at most {0} endpoints per institution (and platform-wide)")]
    TooManyEndpoints(i64),
    #[error("the rotation window is longer than allowed")]
    RotationWindow,
    #[error("not found")]
    NotFound,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Every event type of the catalog endpoints may subscribe to, sorted: all but the
/// operators' records (webhook endpoints, queue controls: never delivered).
pub fn event_types() -> &'static BTreeSet<String> {
    static TYPES: OnceLock<BTreeSet<String>> = OnceLock::new();
    TYPES.get_or_init(|| {
        aula_domain::catalog::catalog()
            .into_iter()
            .filter(|e| !aula_domain::catalog::is_operator_record(e.aggregate))
            .map(|e| e.event_type)
            .collect()
    })
}

fn check_types(types: &Option<Vec<String>>) -> Result<Option<Vec<String>>, WebhookError> {
    let Some(types) = types else { return Ok(None) };
    let mut unique = BTreeSet::new();
    for t in types {
        if !event_types().contains(t) {
            return Err(WebhookError::UnknownEventType(t.chars().take(64).collect()));
        }
        unique.insert(t.clone());
    }
    Ok(Some(unique.into_iter().collect()))
}

fn check_description(text: &str) -> Result<String, WebhookError> {
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(WebhookError::DescriptionTooLong);
    }
    Ok(text.trim().to_owned())
}

/// An endpoint, without its secrets.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub institution_id: Option<Uuid>,
    pub url: String,
    /// `None`: every event type.
    pub event_types: Option<Vec<String>>,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// `v1` or `v1a`.
    pub signature_scheme: String,
    /// The ed25519 public key of a `v1a` endpoint (see [`super::signing::public_key_text`]).
    pub public_key: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_failure: Option<String>,
    /// Attempts in the last 24 hours, and how many succeeded.
    pub attempts_24h: i64,
    pub succeeded_24h: i64,
    /// Messages waiting for an attempt.
    pub pending_messages: i64,
}

const ENDPOINT_COLUMNS: &str = "e.id, e.institution_id, e.url, e.event_types, e.description,
    e.enabled, e.disabled_reason, e.signature_scheme, e.public_key,
    CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret_expires_at END
        AS previous_secret_expires_at,
    e.created_by, e.created_at, e.updated_at, e.failing_since, e.last_success_at,
    e.last_failure_at, e.last_failure,
    (SELECT count(*) FROM webhook_attempts a
     WHERE a.endpoint_id = e.id AND a.started_at > now() - interval '24 hours') AS attempts_24h,
    (SELECT count(*) FROM webhook_attempts a
     WHERE a.endpoint_id = e.id AND a.started_at > now() - interval '24 hours'
       AND a.outcome = 'succeeded') AS succeeded_24h,
    (SELECT count(*) FROM webhook_messages m
     WHERE m.endpoint_id = e.id AND m.status = 'pending') AS pending_messages";

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// `None`: platform-wide.
    pub institution_id: Option<Uuid>,
    pub url: String,
    pub event_types: Option<Vec<String>>,
    pub description: String,
    /// `user:<uuid>`.
    pub created_by: String,
    pub created_by_user: Option<Uuid>,
    /// How its messages are signed.
    pub signature_scheme: SignatureScheme,
}

impl NewEndpoint {
    /// A platform-wide endpoint the system itself registers (tests, benchmarks), for
    /// every event type, signed with `v1`; set the other fields with struct update.
    pub fn by_system(url: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            institution_id: None,
            url: url.into(),
            event_types: None,
            description: description.into(),
            created_by: "system".into(),
            created_by_user: None,
            signature_scheme: SignatureScheme::V1,
        }
    }
}

/// Registers an endpoint; returns it and its signing key (a `v1` secret to show once,
/// a `v1a` key pair whose public half is shown). `metadata`: who asked, for the audit
/// record.
pub async fn create(
    pool: &PgPool,
    config: &WebhookConfig,
    new: NewEndpoint,
    metadata: &EventMetadata,
) -> Result<(Endpoint, Signer), WebhookError> {
    let target = target::check_registration(config, &new.url).await?;
    let event_types = check_types(&new.event_types)?;
    let description = check_description(&new.description)?;
    let signer = Signer::generate(new.signature_scheme);
    let id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    // One owner's registrations are serialized, so the limit holds under concurrency.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('webhook_endpoints:' || COALESCE($1::text, 'platform')))")
        .bind(new.institution_id)
        .execute(&mut *tx)
        .await?;
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_endpoints
         WHERE institution_id IS NOT DISTINCT FROM $1 AND deleted_at IS NULL",
    )
    .bind(new.institution_id)
    .fetch_one(&mut *tx)
    .await?;
    if count >= config.max_endpoints {
        return Err(WebhookError::TooManyEndpoints(config.max_endpoints));
    }
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, institution_id, url, event_types, description, secret,
                                        created_by, created_by_user, signature_scheme, public_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(new.institution_id)
    .bind(target.url.as_str())
    .bind(&event_types)
    .bind(&description)
    .bind(signer.stored_bytes())
    .bind(&new.created_by)
    .bind(new.created_by_user)
    .bind(signer.scheme().as_str())
    .bind(signer.public_key().map(|k| k.to_vec()))
    .execute(&mut *tx)
    .await?;
    let recorded = audit::record(
        &mut tx,
        id,
        metadata,
        &[WebhookEndpointEvent::WebhookEndpointCreated {
            endpoint_id: id,
            url_origin: url_origin(target.url.as_str()),
            event_types,
            signature_scheme: signer.scheme().as_str().to_owned(),
        }],
    )
    .await?;
    tx.commit().await?;
    recorded.committed(pool).await;
    let endpoint = get(pool, id).await?.ok_or(WebhookError::NotFound)?;
    Ok((endpoint, signer))
}

/// A change to an endpoint; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    /// `Some(None)`: every event type.
    pub event_types: Option<Option<Vec<String>>>,
    pub description: Option<String>,
    /// Enabling clears the disabled reason and the failure run.
    pub enabled: Option<bool>,
}

/// Applies `change`; records what changed (`metadata`: who asked).
pub async fn update(
    pool: &PgPool,
    config: &WebhookConfig,
    id: Uuid,
    change: EndpointChange,
    metadata: &EventMetadata,
) -> Result<Endpoint, WebhookError> {
    let url = match &change.url {
        Some(url) => Some(
            target::check_registration(config, url)
                .await?
                .url
                .to_string(),
        ),
        None => None,
    };
    let types = match &change.event_types {
        Some(types) => Some(check_types(types)?),
        None => None,
    };
    let description = change
        .description
        .as_deref()
        .map(check_description)
        .transpose()?;
    let mut tx = pool.begin().await?;
    let updated: Option<(bool,)> = sqlx::query_as(
        "UPDATE webhook_endpoints SET
             url = COALESCE($2, url),
             event_types = CASE WHEN $3 THEN $4 ELSE event_types END,
             description = COALESCE($5, description),
             enabled = COALESCE($6, enabled),
             disabled_reason = CASE WHEN $6 THEN NULL WHEN $6 = false THEN $7
                                    ELSE disabled_reason END,
             failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END,
             updated_at = now()
         FROM (SELECT enabled AS was_enabled FROM webhook_endpoints
               WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE) old
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING old.was_enabled",
    )
    .bind(id)
    .bind(&url)
    .bind(types.is_some())
    .bind(types.clone().flatten())
    .bind(&description)
    .bind(change.enabled)
    .bind(DISABLED_BY_OPERATOR)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((was_enabled,)) = updated else {
        return Err(WebhookError::NotFound);
    };
    let mut changed = Vec::new();
    if url.is_some() {
        changed.push("url".to_owned());
    }
    if types.is_some() {
        changed.push("event_types".to_owned());
    }
    if description.is_some() {
        changed.push("description".to_owned());
    }
    let mut events = Vec::new();
    if !changed.is_empty() {
        events.push(WebhookEndpointEvent::WebhookEndpointUpdated {
            endpoint_id: id,
            changed,
            url_origin: url.as_deref().map(url_origin),
        });
    }
    match change.enabled {
        // Enabling a disabled endpoint, or one in a failure run (cleared): recorded.
        Some(true) => events.push(WebhookEndpointEvent::WebhookEndpointEnabled { endpoint_id: id }),
        Some(false) if was_enabled => events.push(WebhookEndpointEvent::WebhookEndpointDisabled {
            endpoint_id: id,
            reason: DISABLED_BY_OPERATOR.to_owned(),
        }),
        _ => {}
    }
    let recorded = audit::record(&mut tx, id, metadata, &events).await?;
    tx.commit().await?;
    recorded.committed(pool).await;
    get(pool, id).await?.ok_or(WebhookError::NotFound)
}

/// The `disabled_reason` of an endpoint an operator disabled.
pub const DISABLED_BY_OPERATOR: &str = "disabled by an operator";

/// Issues a new signing key of `scheme` (`None`: the endpoint's current scheme); the
/// current one keeps signing (as the previous) for `previous_valid_for` (zero: it
/// stops at once). Records the rotation (never a key).
pub async fn rotate(
    pool: &PgPool,
    config: &WebhookConfig,
    id: Uuid,
    previous_valid_for: Duration,
    scheme: Option<SignatureScheme>,
    metadata: &EventMetadata,
) -> Result<(Endpoint, Signer), WebhookError> {
    if previous_valid_for > config.max_rotation_window {
        return Err(WebhookError::RotationWindow);
    }
    let mut tx = pool.begin().await?;
    let current: Option<(String,)> = sqlx::query_as(
        "SELECT signature_scheme FROM webhook_endpoints
         WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((current,)) = current else {
        return Err(WebhookError::NotFound);
    };
    let scheme = scheme
        .or_else(|| SignatureScheme::parse(&current))
        .unwrap_or(SignatureScheme::V1);
    let signer = Signer::generate(scheme);
    let (until,): (DateTime<Utc>,) = sqlx::query_as(
        "UPDATE webhook_endpoints
         SET previous_secret = secret, previous_signature_scheme = signature_scheme,
             secret = $2, signature_scheme = $3, public_key = $4,
             previous_secret_expires_at = now() + $5 * interval '1 millisecond', updated_at = now()
         WHERE id = $1
         RETURNING previous_secret_expires_at",
    )
    .bind(id)
    .bind(signer.stored_bytes())
    .bind(scheme.as_str())
    .bind(signer.public_key().map(|k| k.to_vec()))
    .bind(previous_valid_for.as_secs_f64() * 1000.0)
    .fetch_one(&mut *tx)
    .await?;
    let recorded = audit::record(
        &mut tx,
        id,
        metadata,
        &[WebhookEndpointEvent::WebhookEndpointSecretRotated {
            endpoint_id: id,
            signature_scheme: scheme.as_str().to_owned(),
            previous_valid_until: until,
        }],
    )
    .await?;
    tx.commit().await?;
    recorded.committed(pool).await;
    let endpoint = get(pool, id).await?.ok_or(WebhookError::NotFound)?;
    Ok((endpoint, signer))
}

/// Deletes an endpoint: it gets no new messages and its pending ones are not sent; its
/// history stays readable by id.
pub async fn delete(pool: &PgPool, id: Uuid, metadata: &EventMetadata) -> Result<(), WebhookError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false,
                disabled_reason = 'deleted', updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(WebhookError::NotFound);
    }
    let recorded = audit::record(
        &mut tx,
        id,
        metadata,
        &[WebhookEndpointEvent::WebhookEndpointDeleted { endpoint_id: id }],
    )
    .await?;
    tx.commit().await?;
    recorded.committed(pool).await;
    Ok(())
}

/// One endpoint (deleted ones included), with its health.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE e.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The owner of an endpoint: `Ok(None)` for a platform-wide one, `Err(NotFound)`.
pub async fn owner(pool: &PgPool, id: Uuid) -> Result<Option<Uuid>, WebhookError> {
    let row: Option<(Option<Uuid>,)> = sqlx::query_as(
        "SELECT institution_id FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|(owner,)| owner).ok_or(WebhookError::NotFound)
}

/// The live endpoints, of one institution (`Some`) or all (`None`), newest first.
pub async fn list(pool: &PgPool, institution: Option<Uuid>) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e
         WHERE e.deleted_at IS NULL AND ($1::uuid IS NULL OR e.institution_id = $1)
         ORDER BY e.created_at DESC, e.id DESC LIMIT 500"
    ))
    .bind(institution)
    .fetch_all(pool)
    .await
}

/// A message as the operators' log shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Message {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub institution_id: Option<Uuid>,
    pub original_event_id: Option<Uuid>,
    pub status: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub body: String,
}

/// Filters of the message log; they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Only this institution's endpoints' messages (a manager's view).
    pub institution_id: Option<Uuid>,
    pub endpoint_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Keyset cursor: messages strictly older than `(created_at, id)`.
    pub before: Option<(DateTime<Utc>, Uuid)>,
}

/// A page of the message log, newest first.
pub async fn messages(
    pool: &PgPool,
    filter: &MessageFilter,
    limit: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.id, m.endpoint_id, m.event_id, m.event_type, m.institution_id, m.original_event_id,
                m.status, m.attempts, m.created_at, m.next_attempt_at, m.finished_at, m.last_error, m.body
         FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id
         WHERE ($1::uuid IS NULL OR e.institution_id = $1)
           AND ($2::uuid IS NULL OR m.endpoint_id = $2)
           AND ($3::text IS NULL OR m.event_type = $3)
           AND ($4::text IS NULL OR m.status = $4)
           AND ($5::timestamptz IS NULL OR m.created_at >= $5)
           AND ($6::timestamptz IS NULL OR m.created_at < $6)
           AND ($7::timestamptz IS NULL OR (m.created_at, m.id) < ($7, $8))
         ORDER BY m.created_at DESC, m.id DESC
         LIMIT $9",
    )
    .bind(filter.institution_id)
    .bind(filter.endpoint_id)
    .bind(filter.event_type.as_deref())
    .bind(filter.status.as_deref())
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.before.map(|b| b.0))
    .bind(filter.before.map(|b| b.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One message, with the institution of its endpoint (for the API's ownership check).
pub async fn message(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(Message, Option<Uuid>)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        message: Message,
        owner: Option<Uuid>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT m.id, m.endpoint_id, m.event_id, m.event_type, m.institution_id, m.original_event_id,
                m.status, m.attempts, m.created_at, m.next_attempt_at, m.finished_at, m.last_error,
                m.body, e.institution_id AS owner
         FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id WHERE m.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.message, r.owner)))
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AttemptRow {
    pub message_id: Uuid,
    pub attempt: i32,
    pub endpoint_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub latency_ms: f64,
    pub status_code: Option<i32>,
    pub outcome: String,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// The attempts of one message, in order.
pub async fn attempts(pool: &PgPool, message_id: Uuid) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT message_id, attempt, endpoint_id, started_at, latency_ms, status_code, outcome,
                response_excerpt, error
         FROM webhook_attempts WHERE message_id = $1 ORDER BY attempt LIMIT 100",
    )
    .bind(message_id)
    .fetch_all(pool)
    .await
}
