//! Webhooks over GraphQL: endpoints (register, change, rotate the secret, delete), the
//! message and attempt log, resend and "recover since T". See
//! `aula_processor::webhooks`.
//!
//! Who may act: a manager on its own institution's endpoints (and registers only for
//! it); an admin on any, and registers platform-wide ones (no institution: every
//! event). A `v1` secret is returned only by `createWebhookEndpoint` and
//! `rotateWebhookEndpointSecret`, once; a `v1a` endpoint's secret key is never returned
//! (its public key is, by every read). Every mutation is recorded for the audit log
//! (`aula_processor::webhooks::audit`), with the caller as actor.

mod mutations;

pub use mutations::WebhookMutation;

use async_graphql::{Context, InputObject, Object, SimpleObject};
use aula_eventlog::EventMetadata;
use aula_processor::webhooks::endpoints::{self, AttemptRow, Message, MessageFilter};
use aula_processor::webhooks::recover::{self, RecoverJob};
use aula_processor::webhooks::signing::public_key_text;
use aula_processor::webhooks::{
    message_header_id, parse_message_id, Endpoint, SignatureScheme, Signer, WebhookError,
};
use aula_projections::course_capacity::Page;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::admin_ops::ensure_owner;
use super::query::{nodes, page_nodes, page_size};
use super::read_models::{STAFF, WATCHERS};
use super::types::{parse_status, status_name, BigInt, BulkJobStatus};
use super::{metadata, request, state};
use crate::auth::{self, Claims};
use crate::error::ApiError;

/// Where a webhook message's delivery stands.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum WebhookMessageStatus {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Its retries are used up, or its endpoint was disabled.
    Failed,
}

/// How one delivery attempt ended.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum WebhookAttemptOutcome {
    /// A 2xx answer.
    Succeeded,
    /// Any other answer, a timeout or a connection error (retried on schedule).
    Failed,
    /// The target's address is not allowed (loopback, private...): not sent.
    Refused,
    /// 410 Gone: the endpoint was disabled.
    Gone,
}

/// How an endpoint's messages are signed (Standard Webhooks).
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum WebhookSignatureScheme {
    /// HMAC-SHA256 with a shared `whsec_` secret (`v1,` signatures).
    V1,
    /// ed25519 (`v1a,` signatures): receivers verify with the endpoint's `whpk_` public
    /// key; the secret key never leaves Aula.
    V1a,
}

impl From<WebhookSignatureScheme> for SignatureScheme {
    fn from(scheme: WebhookSignatureScheme) -> Self {
        match scheme {
            WebhookSignatureScheme::V1 => Self::V1,
            WebhookSignatureScheme::V1a => Self::V1a,
        }
    }
}

#[derive(Default)]
pub struct WebhookQuery;

row_object! {
    /// An endpoint and its health.
    WebhookEndpoint from Endpoint as e {
        /// The endpoint's id.
        id: Uuid,
        /// Null: platform-wide (every institution's events).
        institution_id: Option<Uuid>,
        /// Where messages are sent.
        url: String,
        /// Null: every event type of the catalog.
        event_types: Option<Vec<String>>,
        /// What the endpoint is for.
        description: String,
        /// Whether messages are sent to it.
        enabled: bool,
        /// Why it is disabled (410 Gone, failing too long, an operator).
        disabled_reason: Option<String>,
        /// How its messages are signed.
        signature_scheme: WebhookSignatureScheme = if e.signature_scheme == "v1a" {
            WebhookSignatureScheme::V1a
        } else {
            WebhookSignatureScheme::V1
        },
        /// `whpk_…`: the public key that verifies its `v1a` signatures; null for `v1`.
        public_key: Option<String> = e.public_key.as_deref().map(public_key_text),
        /// Until when the previous secret still signs too (after a rotation).
        previous_secret_expires_at: Option<DateTime<Utc>>,
        /// Who registered it (`user:<id>`).
        created_by: String,
        /// When it was registered.
        created_at: DateTime<Utc>,
        /// When it last changed.
        updated_at: DateTime<Utc>,
        /// Start of the current run of failures; null while healthy.
        failing_since: Option<DateTime<Utc>>,
        /// The last attempt that succeeded.
        last_success_at: Option<DateTime<Utc>>,
        /// The last attempt that failed.
        last_failure_at: Option<DateTime<Utc>>,
        /// What the last failed attempt met (status answered, timeout, refused address).
        last_failure: Option<String>,
        /// Attempts in the last 24 hours.
        attempts_last_day: BigInt = BigInt(e.attempts_24h),
        /// Attempts that succeeded in the last 24 hours.
        succeeded_last_day: BigInt = BigInt(e.succeeded_24h),
        /// Succeeded / attempts in the last 24 hours; null without attempts.
        success_rate_last_day: Option<f64> = (e.attempts_24h > 0)
            .then(|| e.succeeded_24h as f64 / e.attempts_24h as f64),
        /// Messages not delivered yet (waiting for their first attempt or a retry).
        pending_messages: BigInt = BigInt(e.pending_messages),
    }
}

/// An endpoint with what its receiver verifies with: a `v1` secret, shown this once.
#[derive(SimpleObject, Debug, Clone)]
pub struct WebhookEndpointSecret {
    /// The endpoint (a `v1a` endpoint's `publicKey` is there, and stays readable).
    pub endpoint: WebhookEndpoint,
    /// `whsec_…` of a `v1` endpoint: verify `webhook-signature` with it. It is not
    /// shown again. Null for `v1a`: verify with `endpoint.publicKey`.
    pub secret: Option<String>,
}

impl WebhookEndpointSecret {
    fn of(endpoint: Endpoint, signer: &Signer) -> Self {
        Self {
            endpoint: endpoint.into(),
            secret: match signer {
                Signer::V1(secret) => Some(secret.reveal()),
                Signer::V1a(_) => None,
            },
        }
    }
}

row_object! {
    /// One message: one event for one endpoint.
    WebhookMessage try_from Message as m {
        /// The `webhook-id` header (`msg_…`), the same on every attempt.
        id: String = message_header_id(m.id),
        /// The endpoint it goes to.
        endpoint_id: Uuid,
        /// The event it carries.
        event_id: Uuid,
        /// The event's type.
        event_type: String,
        /// The event's institution; null for platform-wide events.
        institution_id: Option<Uuid>,
        /// For a reprocessed copy: the original event.
        original_event_id: Option<Uuid>,
        /// Where its delivery stands.
        status: WebhookMessageStatus = parse_status(&m.status)?,
        /// Attempts so far.
        attempts: i32,
        /// When it was created.
        created_at: DateTime<Utc>,
        /// When it is tried next; null when finished.
        next_attempt_at: Option<DateTime<Utc>>,
        /// When it was delivered or given up; null until then.
        finished_at: Option<DateTime<Utc>>,
        /// Why the last attempt failed, if it did.
        last_error: Option<String>,
        /// The JSON body as signed and sent.
        body: String,
    }
}

page! {
    /// A page of messages, newest first.
    WebhookMessagePage {
        /// The messages of this page, newest first.
        nodes: WebhookMessage,
        /// Pass as `after` for the next page; null on the last.
        next_cursor,
    }
}

row_object! {
    /// One delivery attempt.
    WebhookAttempt try_from AttemptRow as a {
        /// The attempt's number (1 for the first).
        attempt: i32,
        /// When it was sent.
        started_at: DateTime<Utc>,
        /// From sending to the answer (or the failure), in milliseconds.
        latency_ms: f64,
        /// What the endpoint answered; null when no answer came.
        status_code: Option<i32>,
        /// How the attempt ended.
        outcome: WebhookAttemptOutcome = parse_status(&a.outcome)?,
        /// The first kilobyte of the answer.
        response_excerpt: Option<String>,
        /// Why it failed (timeout, connection error, status), if it did.
        error: Option<String>,
    }
}

row_object! {
    /// A "recover since T" job.
    WebhookRecovery try_from RecoverJob as j {
        /// The job's id.
        id: Uuid,
        /// The endpoint it recovers.
        endpoint_id: Uuid,
        /// The time from which events are sent again.
        since: DateTime<Utc>,
        /// Where the job stands.
        status: BulkJobStatus = parse_status(&j.status)?,
        /// Events since `since` when it started.
        total: BigInt = BigInt(j.total),
        /// Events looked at so far.
        done: BigInt = BigInt(j.done.min(j.total)),
        /// Who started it (`user:<id>`).
        requested_by: String,
        /// When it started.
        created_at: DateTime<Utc>,
        /// When its progress last moved.
        updated_at: DateTime<Utc>,
    }
}

/// Filters of the message log; they combine with AND.
#[derive(InputObject, Debug, Clone, Default)]
pub struct WebhookMessageFilter {
    /// Only this endpoint's messages.
    pub endpoint_id: Option<Uuid>,
    /// Only messages of this event type.
    pub event_type: Option<String>,
    /// Only messages in this state.
    pub status: Option<WebhookMessageStatus>,
    /// Created at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Created before this time.
    pub to: Option<DateTime<Utc>>,
    /// An admin's view of one institution (a manager always sees its own).
    pub institution_id: Option<Uuid>,
}

fn webhook_error(error: WebhookError) -> ApiError {
    match error {
        WebhookError::Url(e) => ApiError::validation("url", "WEBHOOK_URL", e.to_string()),
        e @ WebhookError::UnknownEventType(_) => {
            ApiError::validation("eventTypes", "UNKNOWN_EVENT_TYPE", e.to_string())
        }
        e @ WebhookError::DescriptionTooLong => {
            ApiError::validation("description", "TOO_LONG", e.to_string())
        }
        e @ WebhookError::TooManyEndpoints(_) => {
            ApiError::conflict("TOO_MANY_ENDPOINTS", e.to_string())
        }
        e @ WebhookError::RotationWindow => {
            ApiError::validation("previousSecretValidForMinutes", "TOO_LONG", e.to_string())
        }
        WebhookError::NotFound => ApiError::not_found("WEBHOOK_NOT_FOUND", "not found"),
        WebhookError::Database(e) => e.into(),
    }
}

fn staff<'a>(ctx: &Context<'a>) -> Result<&'a Claims, ApiError> {
    auth::require_role(request(ctx).claims.as_ref(), STAFF)
}

/// Reads: staff and observers.
fn watcher<'a>(ctx: &Context<'a>) -> Result<&'a Claims, ApiError> {
    auth::require_role(request(ctx).claims.as_ref(), WATCHERS)
}

/// The institution a staff member's view is limited to (`None`: an admin's view of all).
fn scope(claims: &Claims, requested: Option<Uuid>) -> Result<Option<Uuid>, ApiError> {
    auth::read_scope(claims, requested)
}

/// Requires staff who may act on endpoint `id`; returns the metadata its audit record
/// carries (the caller, the endpoint's institution, the request id).
async fn owned_endpoint(ctx: &Context<'_>, id: Uuid) -> Result<EventMetadata, ApiError> {
    let claims = staff(ctx)?;
    let owner = endpoints::owner(&state(ctx).pool, id)
        .await
        .map_err(webhook_error)?;
    ensure_owner(claims, owner)?;
    Ok(metadata(request(ctx), owner))
}

/// The id and institution of message `message_id` (`msg_…` or its uuid), which
/// `claims` may see.
async fn owned_message(
    state: &crate::state::AppState,
    claims: &Claims,
    message_id: &str,
) -> Result<(Uuid, Option<Uuid>), ApiError> {
    let not_found = || ApiError::not_found("WEBHOOK_NOT_FOUND", "not found");
    let id = parse_message_id(message_id).ok_or_else(not_found)?;
    let (_, owner) = endpoints::message(&state.pool, id)
        .await?
        .ok_or_else(not_found)?;
    ensure_owner(claims, owner)?;
    Ok((id, owner))
}

fn actor(claims: &Claims) -> String {
    format!("user:{}", claims.user_id)
}

fn encode_cursor(m: &Message) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", m.created_at.to_rfc3339(), m.id))
}

fn decode_cursor(text: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::validation("after", "BAD_CURSOR", "not a cursor of this list");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (time, id) = text.split_once('|').ok_or_else(bad)?;
    Ok((
        DateTime::parse_from_rfc3339(time)
            .map_err(|_| bad())?
            .with_timezone(&Utc),
        id.parse().map_err(|_| bad())?,
    ))
}

#[Object]
impl WebhookQuery {
    /// The event types an endpoint may subscribe to (the event catalog's).
    async fn webhook_event_types(&self, ctx: &Context<'_>) -> Result<Vec<String>, ApiError> {
        watcher(ctx)?;
        Ok(endpoints::event_types().iter().cloned().collect())
    }

    /// Live endpoints with their health. Manager: its institution's; admin: all, or
    /// one institution's.
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The institution (admins; managers get their own); admins without it list every endpoint."
        )]
        institution_id: Option<Uuid>,
    ) -> Result<Vec<WebhookEndpoint>, ApiError> {
        let claims = watcher(ctx)?;
        let institution = scope(claims, institution_id)?;
        Ok(endpoints::list(&state(ctx).pool, institution)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The message log, newest first, filtered.
    async fn webhook_messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Filters; they combine with AND.")] filter: Option<WebhookMessageFilter>,
        #[graphql(desc = "Page size (1 to the configured maximum; default 50).")] first: Option<
            i32,
        >,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<WebhookMessagePage, ApiError> {
        let claims = watcher(ctx)?;
        let state = state(ctx);
        let filter = filter.unwrap_or_default();
        let limit = page_size(first.unwrap_or(50), state.config.max_page_size)? as i64;
        let query = MessageFilter {
            institution_id: scope(claims, filter.institution_id)?,
            endpoint_id: filter.endpoint_id,
            event_type: filter.event_type.map(|t| t.chars().take(100).collect()),
            status: filter.status.map(|s| status_name(s).to_owned()),
            from: filter.from,
            to: filter.to,
            before: after.as_deref().map(decode_cursor).transpose()?,
        };
        let rows = endpoints::messages(&state.pool, &query, limit + 1).await?;
        let (nodes, next_cursor) = page_nodes(Page::from_overfetch(rows, limit, encode_cursor))?;
        Ok(WebhookMessagePage { nodes, next_cursor })
    }

    /// The attempts of one message (`msg_…` or its uuid), in order.
    async fn webhook_attempts(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The message (`msg_…` or its uuid).")] message_id: String,
    ) -> Result<Vec<WebhookAttempt>, ApiError> {
        let claims = watcher(ctx)?;
        let state = state(ctx);
        let (id, _) = owned_message(state, claims, &message_id).await?;
        nodes(endpoints::attempts(&state.pool, id).await?)
    }

    /// The "recover since T" jobs of an endpoint, newest first.
    async fn webhook_recoveries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint.")] endpoint_id: Uuid,
    ) -> Result<Vec<WebhookRecovery>, ApiError> {
        owned_endpoint(ctx, endpoint_id).await?;
        nodes(recover::jobs(&state(ctx).pool, endpoint_id).await?)
    }
}
