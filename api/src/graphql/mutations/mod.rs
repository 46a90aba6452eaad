//! One mutation per domain command, one file per feature. Each resolver: checks who may
//! call it (before loading anything), parses its input into domain values (VALIDATION
//! names the GraphQL input field), checks institution isolation against the target's
//! owner, runs the command(s), and reports the affected id with the log position of the
//! last event ([`run`] is that last step for a single command).
//!
//! The features are merged into one GraphQL type in the order below, which is the order
//! of the fields in the schema.

mod enrollment;
mod grades;
mod identity;
mod institution;
mod people;
mod users;

use async_graphql::{Context, MergedObject};
use aula_domain::application::{application_id_for, Application, ApplicationCommand};
use aula_domain::course::{CourseCommand, CourseStatus};
use aula_domain::errors::Rejection;
use aula_domain::exam_grade::ExamGradeCommand;
use aula_domain::institution::{Institution, InstitutionCommand, InstitutionError};
use aula_domain::student::StudentCommand;
use aula_domain::teacher::TeacherCommand;
use aula_domain::user::{Role as DomainRole, User, UserCommand, UserError, UserEvent, UserStatus};
use aula_domain::values::{
    ApplicationId, BirthDate, CampusId, CampusName, Capacity, CityName, CourseId, CourseName,
    Email, ExamName, GradeNote, InstitutionId, InstitutionName, LoginSource, PersonName, StudentId,
    TeacherId, UserId, ValidationError,
};
use aula_eventlog::{CommandBus, CommandError, Committed, EventMetadata};
use chrono::Duration;
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::payloads::*;
use super::types::{
    BigInt, CommandResult, LoginResult, RequestAccepted, SignUpAccepted, SignUpConfirmed,
};
use super::{authorize, load, metadata, rate_limit, request, state};
use crate::auth::{self, Claims};
use crate::emails;
use crate::error::{invalid, ApiError};
use crate::freshness::wait_for_projections;
use crate::secrets::{self, IssuedToken, TokenKind};
use crate::state::AppState;
use crate::validate;

/// Every command mutation, by feature.
#[derive(MergedObject, Default)]
pub struct CommandMutation(
    identity::IdentityMutation,
    institution::InstitutionMutation,
    people::PeopleMutation,
    enrollment::EnrollmentMutation,
    grades::GradeMutation,
    users::UserMutation,
);

const STAFF: &[DomainRole] = &[DomainRole::Admin, DomainRole::Manager];
const GRADERS: &[DomainRole] = &[DomainRole::Admin, DomainRole::Manager, DomainRole::Teacher];
/// Longest accepted one-time token (ours are 43 characters).
const MAX_TOKEN_CHARS: usize = 128;
const MAX_REASON_CHARS: usize = 500;
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

pub(crate) fn parse<T>(
    field: &'static str,
    result: Result<T, ValidationError>,
) -> Result<T, ApiError> {
    result.map_err(|e| invalid(field, e))
}

fn password(state: &AppState, field: &'static str, raw: &str) -> Result<String, ApiError> {
    let chars = raw.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::validation(
            field,
            "TOO_SHORT",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if chars > state.config.max_password_chars {
        return Err(ApiError::validation(
            field,
            "TOO_LONG",
            format!(
                "must be at most {} characters",
                state.config.max_password_chars
            ),
        ));
    }
    Ok(raw.to_owned())
}

/// Refuses an empty `text` (`EMPTY`) or one longer than `max` characters (`TOO_LONG`),
/// naming the input `field`.
fn non_empty_at_most(field: &'static str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.is_empty() {
        return Err(ApiError::validation(field, "EMPTY", "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(ApiError::validation(
            field,
            "TOO_LONG",
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

fn one_time_token(field: &'static str, raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    non_empty_at_most(field, raw, MAX_TOKEN_CHARS)?;
    Ok(secrets::token_hash(raw))
}

async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    state
        .hashing
        .hash(password, state.config.password_hashing)
        .await?
        .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
}

/// Read-your-writes, if asked for.
pub(crate) async fn settle(
    state: &AppState,
    position: Option<i64>,
    wait: Option<bool>,
) -> Result<Option<bool>, ApiError> {
    match (wait, position) {
        (Some(true), Some(position)) => Ok(Some(
            wait_for_projections(
                &state.pool,
                &state.config.projections,
                position,
                state.config.read_your_writes_timeout,
            )
            .await?,
        )),
        (Some(true), None) => Ok(Some(true)),
        _ => Ok(None),
    }
}

pub(crate) async fn result(
    state: &AppState,
    id: Uuid,
    position: Option<i64>,
    wait: Option<bool>,
) -> Result<CommandResult, ApiError> {
    Ok(CommandResult {
        id,
        log_position: position.map(BigInt),
        projections_caught_up: settle(state, position, wait).await?,
    })
}

/// How one command resolver records, once the caller is authorized: the state, the
/// metadata its events carry, and whether its answer waits for the projections.
pub(crate) struct Recording<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) meta: EventMetadata,
    wait: Option<bool>,
}

impl<'a> Recording<'a> {
    /// For the caller of `ctx`, acting in `institution`; `wait` is `waitForProjections`.
    pub(crate) fn new(ctx: &Context<'a>, institution: Option<Uuid>, wait: Option<bool>) -> Self {
        Self {
            state: state(ctx),
            meta: metadata(request(ctx), institution),
            wait,
        }
    }

    /// The last step of a command resolver, once the input is parsed: runs `command` on
    /// the stream `stream` of `bus`, then reports `id` (mostly the stream's own) at the log
    /// position of the last event appended (see [`result`]), as the resolver's payload `P`.
    pub(crate) async fn run<A, P>(
        &self,
        bus: &CommandBus<A>,
        stream: Uuid,
        command: A::Command,
        id: Uuid,
    ) -> Result<P, ApiError>
    where
        A: Aggregate + Clone + 'static,
        A::Command: Clone,
        A::Error: Rejection,
        P: From<CommandResult>,
    {
        let committed = bus
            .execute(&stream.to_string(), command, &self.meta)
            .await?;
        result(self.state, id, committed.last_position(), self.wait)
            .await
            .map(P::from)
    }
}

/// The institution that owns a course, from its `CourseOpened` event (the stored
/// event format is a contract; the aggregate has no public accessor for it).
pub(crate) async fn course_institution(
    state: &AppState,
    course_id: Uuid,
) -> Result<Uuid, ApiError> {
    aula_eventlog::lookups::course_opened_in(&state.pool, course_id)
        .await?
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ApiError::not_found("COURSE_NOT_FOUND", "course not found"))
}

/// Those of `candidates` that `institution` opened. An institution's own list of courses
/// is not proof of ownership: an offer names its course id, and an offer of another
/// institution's course is recorded before its opening is refused.
pub(crate) async fn courses_opened_by(
    state: &AppState,
    institution: Uuid,
    candidates: &[Uuid],
) -> Result<Vec<Uuid>, ApiError> {
    let ids =
        aula_eventlog::lookups::courses_opened_by(&state.pool, institution, candidates).await?;
    Ok(ids.into_iter().filter_map(|id| id.parse().ok()).collect())
}

/// Makes a one-time token of `kind` for the account `user_id`, sent to `email`, and hands
/// it to the sink before its hash is recorded (see [`TokenSink`]). Returns the hash, which
/// is all the command records.
async fn issue(
    state: &AppState,
    kind: TokenKind,
    user_id: Uuid,
    email: String,
) -> Result<String, ApiError> {
    let token = secrets::new_token();
    let hash = secrets::token_hash(&token);
    let issued = IssuedToken {
        kind,
        user_id,
        email,
        token,
    };
    state
        .tokens
        .issued(&issued)
        .await
        .map_err(|error| ApiError::plugged_in("could not keep a one-time token", &*error))?;
    Ok(hash)
}

/// The institution `id`, loaded; NOT_FOUND unless it was registered.
pub(crate) async fn existing_institution(
    state: &AppState,
    id: Uuid,
) -> Result<Institution, ApiError> {
    let institution = load(&state.buses.institution, id).await?;
    if institution.name().is_none() {
        return Err(ApiError::not_found(
            "INSTITUTION_NOT_FOUND",
            "institution not found",
        ));
    }
    Ok(institution)
}

/// Runs `command` on the account `user_id`, recorded with this request's metadata;
/// `institution` is the institution the change belongs to, if any.
async fn execute_on_user(
    ctx: &Context<'_>,
    user_id: Uuid,
    institution: Option<Uuid>,
    command: UserCommand,
) -> Result<Committed<User>, CommandError<UserError>> {
    let metadata = metadata(request(ctx), institution);
    let bus = &state(ctx).buses.user;
    bus.execute(&user_id.to_string(), command, &metadata).await
}

/// The user `id`, loaded; NOT_FOUND unless it was registered.
pub(crate) async fn load_user(state: &AppState, id: Uuid) -> Result<User, ApiError> {
    let user = load(&state.buses.user, id).await?;
    if user.status() == UserStatus::Unregistered {
        return Err(ApiError::not_found("USER_NOT_FOUND", "user not found"));
    }
    Ok(user)
}

/// The refusal of an e-mail another account holds.
pub(crate) fn email_taken() -> ApiError {
    ApiError::conflict("EMAIL_TAKEN", "this e-mail belongs to another account")
}

/// Reserves `email` for `account`: `EMAIL_TAKEN` when another account holds it, unless
/// that holder can no longer use it ([`emails::reclaim`]: a lapsed sign-up, a
/// reservation whose command never came) or is a sign-up nobody confirmed
/// ([`take_from_sign_up`]). Every caller creates or moves an account on an
/// authenticated decision (staff creating an account, an e-mail change a signed-in
/// user asked for).
pub(crate) async fn reserve_email(
    state: &AppState,
    email: &Email,
    account: Uuid,
) -> Result<(), ApiError> {
    let holder = emails::reserve(&state.pool, email.as_str(), account).await?;
    if holder == account {
        return Ok(());
    }
    let held_by = load(&state.buses.user, holder).await?;
    let now = state.clock.now();
    if emails::reclaim(
        &state.pool,
        email.as_str(),
        (holder, &held_by),
        account,
        now,
    )
    .await?
    {
        return Ok(());
    }
    if held_by.status() == UserStatus::Pending
        && take_from_sign_up(state, email, holder, account).await?
    {
        return Ok(());
    }
    Err(email_taken())
}

/// Moves `email` from `holder`, a sign-up nobody confirmed (even one whose link is
/// still valid), to `account`; false when the address is no longer the sign-up's (a
/// concurrent claim took it) or the sign-up was confirmed meanwhile. Anyone may sign
/// up with anyone's address, again every 24 h: an address an account is being made
/// for must not wait on that. The sign-up is void from then on: its link finds the
/// address held by another account (`confirmSignUp` answers `SIGN_UP_TOKEN_EXPIRED`).
/// Race-safe through the reservation's lock ([`emails::hold`]), which the
/// confirmation holds too.
async fn take_from_sign_up(
    state: &AppState,
    email: &Email,
    holder: Uuid,
    account: Uuid,
) -> Result<bool, ApiError> {
    let held = emails::hold(&state.pool, email.as_str()).await?;
    if held.holder != Some(holder) {
        held.settle().await?;
        return Ok(false);
    }
    // A confirmation records its account while holding the lock: loaded now, the
    // sign-up shows it.
    if load(&state.buses.user, holder).await?.status() != UserStatus::Pending {
        held.settle().await?;
        return Ok(false);
    }
    held.hand_over(account).await?;
    tracing::info!(sign_up = %holder, %account, "an address was taken from an unconfirmed sign-up");
    Ok(true)
}

/// Reserves the e-mail and creates a login account without a password. Returns its
/// id and the log position of its creation.
pub(crate) async fn create_account_at(
    state: &AppState,
    meta: &aula_eventlog::EventMetadata,
    email: &Email,
    name: &PersonName,
    role: DomainRole,
    institution_id: Option<Uuid>,
) -> Result<(Uuid, Option<i64>), ApiError> {
    let candidate = Uuid::new_v4();
    reserve_email(state, email, candidate).await?;
    let created = state
        .buses
        .user
        .execute(
            &candidate.to_string(),
            UserCommand::CreateUser {
                email: email.clone(),
                name: name.clone(),
                role,
                institution_id: institution_id.map(InstitutionId::from_uuid),
                password_hash: None,
            },
            meta,
        )
        .await;
    match created {
        Ok(committed) => Ok((candidate, committed.last_position())),
        Err(error) => {
            if matches!(error, CommandError::Rejected(_)) {
                emails::release(&state.pool, email.as_str(), candidate).await?;
            }
            Err(error.into())
        }
    }
}
