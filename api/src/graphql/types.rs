//! Output types shared by the resolvers.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A user's role.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "aula_domain::user::Role")]
pub enum Role {
    /// Platform administrator: every institution.
    Admin,
    /// Runs one institution.
    Manager,
    /// Teaches at one institution.
    Teacher,
    /// Studies at one institution.
    Student,
    /// Support staff: reads the staff screens of one institution (or, with no
    /// institution, of the whole platform) and changes nothing.
    Observer,
}

/// What a command mutation returns.
#[derive(SimpleObject, Debug, Clone)]
pub struct CommandResult {
    /// The affected entity (see each mutation for which).
    pub id: Uuid,
    /// Global log position of the command's last event; null when the command changed
    /// nothing (e.g. an update to the same values).
    pub log_position: Option<BigInt>,
    /// Only when `waitForProjections: true` was asked: whether every projection reached
    /// `logPosition` before the read-your-writes timeout.
    pub projections_caught_up: Option<bool>,
}

/// What `signUp` returns: the same for every e-mail, registered or not. It names no
/// account (the confirmation link carries what confirming needs).
#[derive(SimpleObject, Debug, Clone)]
pub struct SignUpAccepted {
    /// Always true: the sign-up was taken (whatever the e-mail).
    pub accepted: bool,
    /// Global log position of the event the sign-up recorded.
    pub log_position: Option<BigInt>,
    /// As in `CommandResult`.
    pub projections_caught_up: Option<bool>,
}

/// A completed registration: the new manager and its institution.
#[derive(SimpleObject, Debug, Clone)]
pub struct SignUpConfirmed {
    /// The new manager's user id.
    pub user_id: Uuid,
    /// The new institution's id.
    pub institution_id: Uuid,
    /// Global log position of the registration's last event.
    pub log_position: Option<BigInt>,
    /// As in `CommandResult`.
    pub projections_caught_up: Option<bool>,
}

/// A signed-in session: the access token and who it belongs to.
#[derive(SimpleObject, Debug, Clone)]
pub struct LoginResult {
    /// Send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// When the access token stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// The signed-in user.
    pub user_id: Uuid,
    /// The user's role.
    pub role: Role,
    /// The user's institution; null for platform admins.
    pub institution_id: Option<Uuid>,
    /// The log position of the login's event (for `projectionsReached`).
    pub log_position: Option<BigInt>,
}

/// The answer to a password-reset request: always the same, whether or not the e-mail
/// belongs to an account.
#[derive(SimpleObject, Debug, Clone)]
pub struct RequestAccepted {
    /// Always true: the request was taken (whatever the e-mail).
    pub accepted: bool,
}

/// The signed-in user's account.
#[derive(SimpleObject, Debug, Clone)]
pub struct Me {
    /// The user's id.
    pub id: Uuid,
    /// The account's e-mail.
    pub email: String,
    /// The user's name, when set.
    pub name: Option<String>,
    /// The user's role.
    pub role: Role,
    /// The user's institution; null for platform admins.
    pub institution_id: Option<Uuid>,
}

impl Me {
    /// The account `id` as `user` holds it, shown with `role`.
    pub(crate) fn of(id: Uuid, user: &aula_domain::user::User, role: Role) -> Self {
        Me {
            id,
            email: user.email().map(|e| e.to_string()).unwrap_or_default(),
            name: user.name().map(|n| n.to_string()),
            role,
            institution_id: user.institution_id().map(Into::into),
        }
    }
}

/// Whether the service and its database answer.
#[derive(SimpleObject, Debug, Clone)]
pub struct Health {
    /// Always "ok" when the process answers.
    pub status: String,
    /// Whether the database answered.
    pub database: bool,
    /// The server's clock.
    pub server_time: DateTime<Utc>,
}

/// A 64-bit integer: log positions, transaction ids, task and notification ids, counts.
/// GraphQL's `Int` is 32-bit and strict clients reject larger values, so these travel as
/// `BigInt`: written as a JSON number (exact in JavaScript up to 2^53, far beyond any
/// position this log reaches), read from a number or a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, sqlx::Type)]
#[sqlx(transparent)]
pub struct BigInt(pub i64);

/// A 64-bit integer (log positions, ids, counts): a JSON number, accepted as a number or
/// a decimal string.
#[async_graphql::Scalar(
    name = "BigInt",
    specified_by_url = "https://github.com/graphql/graphql-scalars/blob/master/src/scalars/BigInt.ts"
)]
impl async_graphql::ScalarType for BigInt {
    fn parse(value: async_graphql::Value) -> async_graphql::InputValueResult<Self> {
        match &value {
            async_graphql::Value::Number(n) => n
                .as_i64()
                .map(BigInt)
                .ok_or_else(|| async_graphql::InputValueError::custom("not a 64-bit integer")),
            async_graphql::Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(BigInt)
                .map_err(|_| async_graphql::InputValueError::custom("not a 64-bit integer")),
            _ => Err(async_graphql::InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &async_graphql::Value) -> bool {
        matches!(
            value,
            async_graphql::Value::Number(_) | async_graphql::Value::String(_)
        )
    }

    fn to_value(&self) -> async_graphql::Value {
        async_graphql::Value::Number(self.0.into())
    }
}

impl From<i64> for BigInt {
    fn from(value: i64) -> Self {
        BigInt(value)
    }
}

impl From<BigInt> for i64 {
    fn from(value: BigInt) -> Self {
        value.0
    }
}

/// Turns a status the database stores as text into its GraphQL enum. The tables'
/// CHECK constraints and the processor's constants keep the sets equal; a value outside
/// them is a bug, reported as an internal error rather than a made-up status.
pub(crate) fn parse_status<T: async_graphql::EnumType>(
    stored: &str,
) -> Result<T, crate::error::ApiError> {
    T::items()
        .iter()
        .find(|item| item.name == stored)
        .map(|item| item.value)
        .ok_or_else(|| {
            crate::error::ApiError::Internal(format!(
                "unknown stored status {stored:?} for {}",
                std::any::type_name::<T>()
            ))
        })
}

/// The stored (and GraphQL) spelling of a status enum value.
pub(crate) fn status_name<T: async_graphql::EnumType + PartialEq>(value: T) -> &'static str {
    T::items()
        .iter()
        .find(|item| item.value == value)
        .map(|item| item.name)
        // `items()` lists every variant of the derived enum.
        .expect("every enum value is listed in its items")
}

/// Where an event stands in processing: the outcome of the tasks it issued.
/// (Statuses are lower case, the spelling stored and used in URLs, metrics and logs.)
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum EventStatus {
    /// Some of its tasks have not finished yet.
    Pending,
    /// Not finished, and one of its tasks waits for a retry after a failed attempt.
    Retrying,
    /// Every task it issued succeeded (or it issued none).
    Succeeded,
    /// At least one of its tasks failed for good.
    Failed,
}

/// Where a task stands in the queue.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum TaskStatus {
    /// Waiting to be claimed at `runAt` (it has not failed yet).
    Pending,
    /// Waiting for its next attempt at `runAt` after a failed one (`lastError`).
    Retrying,
    /// Waiting behind a paused task kind (`pausedTaskKinds`); pending again on resume.
    Paused,
    /// Claimed by a worker, under a lease.
    Running,
    /// Done.
    Succeeded,
    /// Failed and will not be retried automatically (a manual retry is possible).
    Failed,
    /// Its attempts are used up, or its outcome can never change.
    Dead,
    /// Cancelled by an operator while it waited; kept with its history, never run.
    Cancelled,
}

/// A bulk reprocessing job's state.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum BulkJobStatus {
    /// Writing copies.
    Running,
    /// Stopped by a user; the copies written so far stay.
    Cancelled,
    /// Every matched event was copied.
    Done,
    /// Stopped by an error (see `error`).
    Failed,
}

/// An enrollment's state in the `course_enrollments` read model.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum EnrollmentStatus {
    /// Holds a seat.
    Enrolled,
    /// Cancelled by a manager; the seat was given back.
    Cancelled,
}

/// A projection rebuild's state.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum RebuildState {
    /// Replaying the log into shadow tables.
    Running,
    /// Swapping the shadow tables in.
    Swapping,
    /// Finished; the rebuilt tables serve queries.
    Done,
    /// Stopped by an error (see `error`); the live tables were kept.
    Failed,
}

/// What a status count counts.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum CountedKind {
    /// Events, by `EventStatus`.
    Event,
    /// Tasks, by `TaskStatus`.
    Task,
}
