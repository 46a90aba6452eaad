//! Output types shared by the resolvers.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A user's role.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "aula_domain::user::Role")]
pub enum Role {
    Admin,
    Manager,
    Teacher,
    Student,
}

/// What a command mutation returns.
#[derive(SimpleObject, Debug, Clone)]
pub struct CommandResult {
    /// The affected entity (see each mutation for which).
    pub id: Uuid,
    /// Global log position of the command's last event; null when the command changed
    /// nothing (e.g. an update to the same values).
    pub log_position: Option<i64>,
    /// Only when `waitForProjections: true` was asked: whether every projection reached
    /// `logPosition` before the read-your-writes timeout.
    pub projections_caught_up: Option<bool>,
}

/// What `signUp` returns: the same for every e-mail, registered or not. It names no
/// account (the confirmation link carries what confirming needs).
#[derive(SimpleObject, Debug, Clone)]
pub struct SignUpAccepted {
    pub accepted: bool,
    /// Global log position of the event the sign-up recorded.
    pub log_position: Option<i64>,
    /// As in `CommandResult`.
    pub projections_caught_up: Option<bool>,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct SignUpConfirmed {
    /// The new manager's user id.
    pub user_id: Uuid,
    /// The new institution's id.
    pub institution_id: Uuid,
    pub log_position: Option<i64>,
    pub projections_caught_up: Option<bool>,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct LoginResult {
    /// Send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
    pub user_id: Uuid,
    pub role: Role,
    pub institution_id: Option<Uuid>,
    pub log_position: Option<i64>,
}

/// The answer to a password-reset request: always the same, whether or not the e-mail
/// belongs to an account.
#[derive(SimpleObject, Debug, Clone)]
pub struct RequestAccepted {
    pub accepted: bool,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    pub institution_id: Option<Uuid>,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct Health {
    /// Always "ok" when the process answers.
    pub status: String,
    /// Whether the database answered.
    pub database: bool,
    pub server_time: DateTime<Utc>,
}
