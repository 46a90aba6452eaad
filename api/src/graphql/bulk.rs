//! Bulk reprocessing over GraphQL: preview (with a signed confirm token), confirm,
//! progress and cancel. See `aula_processor::bulk`.
//!
//! The confirm token is the API's HMAC ([`auth::sign`]) over a JSON payload binding the
//! filter, the log position at preview time, the institution scope, the user who asked
//! and an expiry (10 minutes); it cannot be replayed by anyone else, widened, or moved
//! to a later position. It starts one job: a second confirm with it is
//! `CONFLICT CONFIRM_TOKEN_USED`.

use async_graphql::{Context, Object, SimpleObject};
use aula_eventlog::{Actor, LogPosition};
use aula_processor::bulk::{self, BulkError, BulkFilter, BulkJob};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::admin_ops::ensure_owner;
use super::read_models::{admin_event_filters, AdminEventFilter, STAFF, WATCHERS};
use super::types::{parse_status, BigInt, BulkJobStatus, EventStatus};
use super::{authorize, state, OperatorError};
use crate::auth;
use crate::error::ApiError;

/// How long a preview's confirm token stays valid.
const CONFIRM_TTL_MINUTES: i64 = 10;
// 2: the bound became a commit-order `LogPosition`; older tokens no longer parse.
const TOKEN_VERSION: &str = "bulk-reprocess-2";

#[derive(Default)]
pub struct BulkQuery;

#[derive(Default)]
pub struct BulkMutation;

/// How many of the matched events have one event type.
#[derive(SimpleObject, Debug, Clone)]
pub struct BulkTypeCount {
    /// An event type.
    #[graphql(name = "type")]
    pub event_type: String,
    /// Matched events of that type.
    pub count: BigInt,
}

/// How many of the matched events are in one processing status.
#[derive(SimpleObject, Debug, Clone)]
pub struct BulkStatusCount {
    /// A processing status.
    pub status: EventStatus,
    /// Matched events in it.
    pub count: BigInt,
}

/// What a bulk reprocess of a filter would copy now; confirm with `confirmToken`.
#[derive(SimpleObject, Debug, Clone)]
pub struct BulkReprocessPreview {
    /// Events that would be copied (copies themselves are never included).
    pub count: BigInt,
    /// The matched events by type.
    pub by_type: Vec<BulkTypeCount>,
    /// The matched events by processing status.
    pub by_status: Vec<BulkStatusCount>,
    /// Matched events their latest reprocessed copy already resolved (its tasks
    /// succeeded): left out of `count` and of the job unless `includeResolved`.
    pub already_resolved: BigInt,
    /// Reprocessing a sign-up, password-reset or e-mail-change event cannot send its
    /// link again: only the link's hash is stored, and the raw one-time token is
    /// deleted once the original's e-mail went out. One line per such event type
    /// among the matched events, saying what to do instead; empty when none.
    pub notes: Vec<String>,
    /// The log position the job stops at: events that reach the list later are not
    /// included, whatever their position (the bound is in commit order; see
    /// `upToTransaction`).
    pub up_to_position: BigInt,
    /// With `upToPosition`, the bound in the log's commit order: the transaction id of
    /// the last event the event list held at preview time.
    pub up_to_transaction: BigInt,
    /// Pass to `bulkReprocessConfirm` (valid 10 minutes, for this user only).
    pub confirm_token: String,
    /// When `confirmToken` stops being accepted.
    pub expires_at: DateTime<Utc>,
}

row_object! {
    /// A bulk reprocessing job and its progress.
    BulkReprocessJob try_from BulkJob as job {
        /// The job's id.
        id: Uuid,
        /// Where the job stands.
        status: BulkJobStatus = parse_status(&job.status)?,
        /// Events the job works on: those its filter matched when it started (the set
        /// is fixed then; events that start matching later are not in it).
        total: BigInt = job.total.into(),
        /// Copies written so far.
        done: BigInt = job.done.into(),
        /// Copies written whose tasks all succeeded (or that issue none).
        copies_succeeded: BigInt = job.outcomes.succeeded.into(),
        /// Copies written with a task that failed for good.
        copies_failed: BigInt = job.outcomes.failed.into(),
        /// Copies written whose tasks are still pending or running.
        copies_running: BigInt = job.outcomes.running.into(),
        /// Events that could not be copied.
        failed: BigInt = job.failed.into(),
        /// Events counted in `total` that no longer matched the filter when the job
        /// reached them (a single `reprocessEvent` resolved them meanwhile, or their
        /// status changed), so not copied; set when the job ends `DONE`, whose
        /// `done + failed + skipped` is then `total`.
        skipped: BigInt = job.skipped.into(),
        /// The last log position the job's filter covers.
        up_to_position: BigInt = job.up_to_position.into(),
        /// The transaction id bounding the job in the log's commit order.
        up_to_transaction: BigInt = job.up_to_tx.into(),
        /// The institution the job is limited to; null for all (admins only).
        institution_id: Option<Uuid>,
        /// Who asked (`user:<id>`).
        requested_by: String,
        /// When it was confirmed.
        created_at: DateTime<Utc>,
        /// When its progress last moved.
        updated_at: DateTime<Utc>,
        /// Why the job failed (full text for admins; others see that there was one).
        error: Option<OperatorError> = job.error.map(OperatorError),
    }
}

#[derive(Serialize, Deserialize)]
struct ConfirmPayload {
    v: String,
    filter: BulkFilter,
    up_to: LogPosition,
    institution_id: Option<Uuid>,
    user_id: Uuid,
    expires_at: i64,
}

fn invalid_token() -> ApiError {
    ApiError::unauthenticated(
        "INVALID_CONFIRM_TOKEN",
        "the confirm token is invalid; preview again",
    )
}

fn bulk_error(error: BulkError) -> ApiError {
    match error {
        BulkError::JobNotFound(_) => ApiError::not_found("JOB_NOT_FOUND", "job not found"),
        BulkError::ConfirmTokenUsed => ApiError::conflict(
            "CONFIRM_TOKEN_USED",
            "this confirm token has already started a job; preview again",
        ),
        BulkError::Invalid(message) => ApiError::validation("filter", "INVALID_FILTER", message),
        BulkError::Database(e) => e.into(),
    }
}

/// The job, if the caller may see it (admin: any; manager: its institution's).
pub(crate) async fn visible_job(ctx: &Context<'_>, id: Uuid) -> Result<BulkJob, ApiError> {
    let (claims, state) = authorize(ctx, WATCHERS)?;
    let job = bulk::job(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("JOB_NOT_FOUND", "job not found"))?;
    ensure_owner(claims, job.institution_id)?;
    Ok(job)
}

#[Object]
impl BulkQuery {
    /// Previews reprocessing every event the admin list filter matches now: exact count,
    /// by type and by status, and a confirm token bound to this filter and log position.
    /// Admin: any; manager: own institution (forced).
    async fn bulk_reprocess_preview(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Filters; they combine with AND.")] filter: Option<AdminEventFilter>,
        #[graphql(
            desc = "Also copy the matched events their latest copy already resolved (default: leave them out)."
        )]
        include_resolved: Option<bool>,
    ) -> Result<BulkReprocessPreview, ApiError> {
        let (claims, state) = authorize(ctx, STAFF)?;
        let query = admin_event_filters(claims, filter.unwrap_or_default())?;
        let (preview, job_filter) =
            bulk::preview_for(&state.pool, &query, include_resolved.unwrap_or(false))
                .await
                .map_err(bulk_error)?;
        let notes = preview
            .by_type
            .iter()
            .filter_map(|(event_type, _)| aula_processor::reprocess::one_time_link_note(event_type))
            .map(str::to_owned)
            .collect();
        let expires_at = state.clock.now() + Duration::minutes(CONFIRM_TTL_MINUTES);
        let payload = ConfirmPayload {
            v: TOKEN_VERSION.into(),
            filter: job_filter,
            up_to: preview.up_to,
            institution_id: query.institution_id,
            user_id: claims.user_id,
            expires_at: expires_at.timestamp(),
        };
        let payload =
            serde_json::to_vec(&payload).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(BulkReprocessPreview {
            count: BigInt(preview.count),
            by_type: preview
                .by_type
                .into_iter()
                .map(|(event_type, count)| BulkTypeCount {
                    event_type,
                    count: BigInt(count),
                })
                .collect(),
            by_status: preview
                .by_status
                .into_iter()
                .map(|(status, count)| {
                    Ok(BulkStatusCount {
                        status: parse_status(&status)?,
                        count: BigInt(count),
                    })
                })
                .collect::<Result<_, ApiError>>()?,
            already_resolved: BigInt(preview.already_resolved),
            notes,
            up_to_position: BigInt(preview.up_to.global_position),
            up_to_transaction: BigInt(preview.up_to.tx_id),
            confirm_token: auth::sign(&state.config.token_secret, &payload),
            expires_at,
        })
    }

    /// A bulk reprocessing job's progress. Admin: any; manager: own institution's.
    async fn bulk_reprocess_job(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The job's id.")] id: Uuid,
    ) -> Result<BulkReprocessJob, ApiError> {
        visible_job(ctx, id).await?.try_into()
    }
}

#[Object]
impl BulkMutation {
    /// Starts the job a preview described (in the background, in batches); the job
    /// records who asked. Only the user who previewed, within 10 minutes.
    async fn bulk_reprocess_confirm(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token `bulkReprocessPreview` returned.")] confirm_token: String,
    ) -> Result<BulkReprocessJob, ApiError> {
        let (claims, state) = authorize(ctx, STAFF)?;
        let payload =
            auth::open(&state.config.token_secret, &confirm_token).ok_or_else(invalid_token)?;
        let payload: ConfirmPayload =
            serde_json::from_slice(&payload).map_err(|_| invalid_token())?;
        if payload.v != TOKEN_VERSION || payload.filter.institution_id != payload.institution_id {
            return Err(invalid_token());
        }
        if payload.expires_at <= state.clock.now().timestamp() {
            return Err(ApiError::unauthenticated(
                "CONFIRM_TOKEN_EXPIRED",
                "the confirm token has expired; preview again",
            ));
        }
        if payload.user_id != claims.user_id {
            return Err(ApiError::forbidden(
                "NOT_YOUR_PREVIEW",
                "this confirm token was issued to another user",
            ));
        }
        if !auth::sees_every_institution(claims) {
            // A manager's preview is always scoped to its institution.
            ensure_owner(claims, payload.institution_id)?;
        }
        // Single use: the job records the token's hash under a unique index.
        let id = bulk::start_confirmed(
            &state.pool,
            &payload.filter,
            payload.up_to,
            Actor::User(claims.user_id),
            &confirm_token,
        )
        .await
        .map_err(bulk_error)?;
        let job = bulk::job(&state.pool, id)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("job {id} vanished")))?;
        job.try_into()
    }

    /// Cancels a running job (it stops before its next batch). Admin: any; manager: own
    /// institution's.
    async fn bulk_reprocess_cancel(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The job's id.")] id: Uuid,
    ) -> Result<BulkReprocessJob, ApiError> {
        visible_job(ctx, id).await?;
        let job = bulk::cancel(&state(ctx).pool, id)
            .await
            .map_err(bulk_error)?;
        job.try_into()
    }
}
