//! The signed-in user's in-app notifications (written by the processor: see
//! `processor/src/handlers/notify.rs`). A user's notifications are the rows of
//! `notification_recipients` naming it: direct ones (a student's "new grade") and the
//! broadcasts of its institution linked to it. Read state is per recipient
//! (`notification_recipients.read_at`).

use async_graphql::{Context, Object, SimpleObject};
use aula_processor::lookups::{self, NotificationRow};
use aula_projections::course_capacity::Page;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::query::{page_nodes, page_size, parse_cursor};
use super::types::BigInt;
use super::{request, state};
use crate::auth::{self, Claims};
use crate::error::ApiError;

#[derive(Default)]
pub struct NotificationQuery;

#[derive(Default)]
pub struct NotificationMutation;

/// One in-app notification as its recipient sees it.
#[derive(SimpleObject, Debug, Clone)]
pub struct Notification {
    /// The notification's id.
    pub id: BigInt,
    /// `student` / `teacher` (addressed to one user) or `all_students` / `all_teachers`
    /// (a broadcast of the institution).
    pub audience: String,
    /// Its title.
    pub title: String,
    /// Its text.
    pub body: String,
    /// Extra data as a JSON object (e.g. `course_id`, `exam_name`, `note` of a grade).
    pub data: String,
    /// The institution it came from, if any.
    pub institution_id: Option<Uuid>,
    /// The event it was issued for, if any.
    pub event_id: Option<Uuid>,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// When it was addressed to this user (a broadcast: when the user was linked to it).
    pub linked_at: DateTime<Utc>,
    /// When this user marked it read; null while unread.
    pub read_at: Option<DateTime<Utc>>,
    /// Whether the signed-in user marked it read.
    pub read: bool,
}

page! {
    /// One page of the signed-in user's notifications.
    NotificationPage {
        /// Newest first.
        nodes: Notification,
    }
}

impl From<NotificationRow> for Notification {
    fn from(r: NotificationRow) -> Self {
        let (id, audience, title, body, data, institution_id, event_id, created, linked, read) = r;
        Self {
            id: BigInt(id),
            audience,
            title,
            body,
            data,
            institution_id,
            event_id,
            created_at: created,
            linked_at: linked,
            read_at: read,
            read: read.is_some(),
        }
    }
}

/// A user sees only the notifications of its own institution (or of none): a user moved
/// to another institution does not keep the old one's.
fn institution_filter(claims: &Claims) -> Option<Uuid> {
    claims.institution_id
}

async fn notification(
    pool: &PgPool,
    claims: &Claims,
    notification_id: i64,
) -> Result<Option<Notification>, ApiError> {
    let row = lookups::notification_for(
        pool,
        notification_id,
        claims.user_id,
        institution_filter(claims),
    )
    .await?;
    Ok(row.map(Into::into))
}

#[Object]
impl NotificationQuery {
    /// The signed-in user's notifications, newest first (any role; only its own).
    /// `unreadOnly`: only those it has not marked read.
    async fn my_notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false, desc = "Only notifications not marked read.")] unread_only: bool,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<NotificationPage, ApiError> {
        let claims = auth::require(request(ctx).claims.as_ref())?;
        let state = state(ctx);
        let first = page_size(first, state.config.max_page_size)?;
        let after = parse_cursor::<i64>(after)?;
        let rows = lookups::notifications_of(
            &state.pool,
            claims.user_id,
            institution_filter(claims),
            unread_only,
            after,
            first as i64 + 1,
        )
        .await?;
        let (nodes, next_cursor) =
            page_nodes(Page::from_overfetch(rows, first as i64, |row| row.0))?;
        Ok(NotificationPage { nodes, next_cursor })
    }
}

#[Object]
impl NotificationMutation {
    /// Marks one of the signed-in user's notifications read (for this user only; a
    /// broadcast stays unread for the others). Idempotent: the first `readAt` is kept.
    /// `FORBIDDEN NOT_RECIPIENT` for a notification addressed to someone else.
    async fn mark_notification_read(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The notification.")] notification_id: BigInt,
    ) -> Result<Notification, ApiError> {
        let notification_id = notification_id.0;
        let claims = auth::require(request(ctx).claims.as_ref())?;
        let state = state(ctx);
        if let Some(own) = notification(&state.pool, claims, notification_id).await? {
            if own.read {
                return Ok(own);
            }
            lookups::mark_notification_read(
                &state.pool,
                notification_id,
                claims.user_id,
                state.clock.now(),
            )
            .await?;
            return notification(&state.pool, claims, notification_id)
                .await?
                .ok_or_else(not_found);
        }
        let exists = lookups::notification_exists(&state.pool, notification_id).await?;
        if exists {
            Err(ApiError::forbidden(
                "NOT_RECIPIENT",
                "this notification is addressed to someone else",
            ))
        } else {
            Err(not_found())
        }
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("NOTIFICATION_NOT_FOUND", "notification not found")
}
