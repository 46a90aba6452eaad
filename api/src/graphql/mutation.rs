//! One mutation per domain command. Each resolver: checks who may call it (before
//! loading anything), parses its input into domain values (VALIDATION names the GraphQL
//! input field), checks institution isolation against the target's owner, runs the
//! command(s), and reports the affected id with the log position of the last event.

use async_graphql::{Context, InputObject, Object};
use aula_domain::application::{application_id_for, Application, ApplicationCommand};
use aula_domain::course::{CourseCommand, CourseStatus};
use aula_domain::exam_grade::ExamGradeCommand;
use aula_domain::institution::{InstitutionCommand, InstitutionError};
use aula_domain::student::StudentCommand;
use aula_domain::teacher::TeacherCommand;
use aula_domain::user::{Role as DomainRole, User, UserCommand, UserError, UserEvent, UserStatus};
use aula_domain::values::{
    ApplicationId, BirthDate, CampusId, CampusName, Capacity, CityName, CourseId, CourseName,
    Email, ExamName, GradeNote, InstitutionId, InstitutionName, PersonName, StudentId, TeacherId,
    UserId, ValidationError,
};
use aula_eventlog::CommandError;
use chrono::Duration;
use uuid::Uuid;

use super::payloads::*;
use super::types::{
    BigInt, CommandResult, LoginResult, RequestAccepted, SignUpAccepted, SignUpConfirmed,
};
use super::{metadata, rate_limit, request, state};
use crate::auth::{self, Claims};
use crate::emails;
use crate::error::{invalid, ApiError};
use crate::freshness::wait_for_projections;
use crate::secrets::{self, IssuedToken, TokenKind};
use crate::state::AppState;
use crate::validate;

#[derive(Default)]
pub struct CommandMutation;

const STAFF: &[DomainRole] = &[DomainRole::Admin, DomainRole::Manager];
const GRADERS: &[DomainRole] = &[DomainRole::Admin, DomainRole::Manager, DomainRole::Teacher];
/// Longest accepted one-time token (ours are 43 characters).
const MAX_TOKEN_CHARS: usize = 128;
const MAX_REASON_CHARS: usize = 500;
const MIN_PASSWORD_CHARS: usize = 8;

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

fn one_time_token(field: &'static str, raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ApiError::validation(field, "EMPTY", "must not be empty"));
    }
    if raw.chars().count() > MAX_TOKEN_CHARS {
        return Err(ApiError::validation(
            field,
            "TOO_LONG",
            format!("must be at most {MAX_TOKEN_CHARS} characters"),
        ));
    }
    Ok(secrets::token_hash(raw))
}

async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    secrets::hash_password(password, state.config.password_hashing)
        .await
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

/// The institution that owns a course, from its `CourseOpened` event (the stored
/// event format is a contract; the aggregate has no public accessor for it).
pub(crate) async fn course_institution(
    state: &AppState,
    course_id: Uuid,
) -> Result<Uuid, ApiError> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT payload->>'institution_id' FROM events
         WHERE aggregate_type = 'course' AND aggregate_id = $1 AND event_type = 'CourseOpened'
         LIMIT 1",
    )
    .bind(course_id.to_string())
    .fetch_optional(&state.pool)
    .await?;
    row.and_then(|(id,)| id)
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ApiError::not_found("COURSE_NOT_FOUND", "course not found"))
}

/// The institution of a course that exists and still takes applications: from the
/// `course_capacity` read model, or from the course's stream when the read model has
/// not caught up with its opening yet. A course closed after this check declines the
/// application when it is decided.
async fn open_course_institution(state: &AppState, course_id: Uuid) -> Result<Uuid, ApiError> {
    let closed = || ApiError::conflict("COURSE_CLOSED", "the course is closed");
    if let Some(row) =
        aula_projections::course_capacity::course_capacity(&state.pool, course_id).await?
    {
        if let Some(institution) = row.institution_id {
            if row.closed {
                return Err(closed());
            }
            return Ok(institution);
        }
    }
    let row: (Option<String>, Option<bool>) = sqlx::query_as(
        "SELECT (array_agg(payload->>'institution_id') FILTER (WHERE event_type = 'CourseOpened'))[1],
                bool_or(event_type = 'CourseClosed')
         FROM events
         WHERE aggregate_type = 'course' AND aggregate_id = $1
           AND event_type IN ('CourseOpened', 'CourseClosed')",
    )
    .bind(course_id.to_string())
    .fetch_one(&state.pool)
    .await?;
    let institution = row
        .0
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ApiError::not_found("COURSE_NOT_FOUND", "course not found"))?;
    if row.1 == Some(true) {
        return Err(closed());
    }
    Ok(institution)
}

const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

fn idempotency_key(raw: &str) -> Result<String, ApiError> {
    let field = "idempotencyKey";
    if raw.is_empty() {
        return Err(ApiError::validation(field, "EMPTY", "must not be empty"));
    }
    if raw.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(ApiError::validation(
            field,
            "TOO_LONG",
            format!("must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(ApiError::validation(
            field,
            "INVALID_CHARACTERS",
            "must not contain control characters",
        ));
    }
    Ok(raw.to_owned())
}

/// Reserves `key` of `course` for `application`, or checks that it already names it.
/// A key names one application: another e-mail under the same key is another stream,
/// which no aggregate could compare, so the reservation does.
async fn reserve_application_key(
    state: &AppState,
    course: Uuid,
    key: &str,
    application: Uuid,
) -> Result<(), ApiError> {
    let inserted = sqlx::query(
        "INSERT INTO application_keys (course_id, idempotency_key, application_id)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(course)
    .bind(key)
    .bind(application)
    .execute(&state.pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(());
    }
    // Taken (by this application's earlier request or another one): this statement
    // sees the committed reservation.
    let owner: Uuid = sqlx::query_scalar(
        "SELECT application_id FROM application_keys WHERE course_id = $1 AND idempotency_key = $2",
    )
    .bind(course)
    .bind(key)
    .fetch_one(&state.pool)
    .await?;
    if owner == application {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "IDEMPOTENCY_KEY_REUSED",
            "this idempotency key was already used for an application with other data",
        ))
    }
}

/// Hands a one-time token to the sink before its hash is recorded (see [`TokenSink`]).
async fn issue(state: &AppState, token: IssuedToken) -> Result<(), ApiError> {
    state
        .tokens
        .issued(&token)
        .await
        .map_err(|error| ApiError::internal(format!("could not keep a one-time token: {error}")))
}

/// Those of `candidates` that `institution` opened. An institution's own list of courses
/// is not proof of ownership: an offer names its course id, and an offer of another
/// institution's course is recorded before its opening is refused.
pub(crate) async fn courses_opened_by(
    state: &AppState,
    institution: Uuid,
    candidates: &[Uuid],
) -> Result<Vec<Uuid>, ApiError> {
    let ids: Vec<String> = candidates.iter().map(Uuid::to_string).collect();
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT aggregate_id FROM events
         WHERE aggregate_type = 'course' AND aggregate_id = ANY($1) AND event_type = 'CourseOpened'
           AND payload->>'institution_id' = $2",
    )
    .bind(&ids)
    .bind(institution.to_string())
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id,)| id.parse().ok())
        .collect())
}

pub(crate) async fn ensure_institution_exists(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    let (institution, _) = state.buses.institution.load(&id.to_string()).await?;
    if institution.name().is_none() {
        return Err(ApiError::not_found(
            "INSTITUTION_NOT_FOUND",
            "institution not found",
        ));
    }
    Ok(())
}

async fn load_user(state: &AppState, id: Uuid) -> Result<User, ApiError> {
    let (user, _) = state.buses.user.load(&id.to_string()).await?;
    if user.status() == UserStatus::Unregistered {
        return Err(ApiError::not_found("USER_NOT_FOUND", "user not found"));
    }
    Ok(user)
}

/// The teacher on whose behalf a note is recorded: a teacher is always itself; a
/// manager or admin names one. The teacher must belong to `institution`.
async fn acting_teacher(
    state: &AppState,
    claims: &Claims,
    requested: Option<Uuid>,
    institution: Uuid,
) -> Result<TeacherId, ApiError> {
    let teacher_id = match (claims.role, requested) {
        (DomainRole::Teacher, Some(other)) if other != claims.user_id => {
            return Err(ApiError::forbidden(
                "OTHER_TEACHER",
                "a teacher records notes as itself",
            ))
        }
        (DomainRole::Teacher, _) => claims.user_id,
        (_, Some(id)) => id,
        (_, None) => {
            return Err(ApiError::validation(
                "teacherId",
                "EMPTY",
                "name the teacher the note is recorded for",
            ))
        }
    };
    let (teacher, _) = state.buses.teacher.load(&teacher_id.to_string()).await?;
    match teacher.institution_id() {
        None if claims.role == DomainRole::Teacher => Err(ApiError::forbidden(
            "NOT_A_TEACHER",
            "your account has no teacher record",
        )),
        None => Err(ApiError::not_found(
            "TEACHER_NOT_FOUND",
            "teacher not found",
        )),
        Some(owner) if owner.as_uuid() != institution => Err(ApiError::forbidden(
            "OTHER_INSTITUTION",
            "the teacher belongs to another institution",
        )),
        Some(_) => Ok(TeacherId::from_uuid(teacher_id)),
    }
}

/// A deterministic id per (course, student, exam), so recording the same exam twice is
/// a CONFLICT rather than a second grade.
fn exam_grade_id(course: Uuid, student: Uuid, exam: &ExamName) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x6175_6c61_2d65_7861_6d2d_6772_6164_6573);
    let key = format!("{course}/{student}/{}", exam.as_str().to_lowercase());
    Uuid::new_v5(&NAMESPACE, key.as_bytes())
}

/// The e-mail a self-service registration starts with.
#[derive(InputObject)]
pub struct SignUpInput {
    /// The e-mail to register; the confirmation link is sent there.
    pub email: String,
}

/// What completes a self-service registration: the e-mailed token and the new account's details.
#[derive(InputObject)]
pub struct ConfirmSignUpInput {
    /// The e-mail the sign-up started with.
    pub email: String,
    /// The token from the confirmation e-mail.
    pub token: String,
    /// The manager's name.
    pub name: String,
    /// The new account's password.
    pub password: String,
    /// The name of the institution the new manager runs.
    pub institution_name: String,
}

/// An e-mail and password to sign in with.
#[derive(InputObject)]
pub struct LoginInput {
    /// The account's e-mail.
    pub email: String,
    /// The account's password.
    pub password: String,
}

/// The e-mail of the account whose password is forgotten.
#[derive(InputObject)]
pub struct RequestPasswordResetInput {
    /// The account's e-mail.
    pub email: String,
}

/// A new password, with the e-mailed reset token.
#[derive(InputObject)]
pub struct ResetPasswordInput {
    /// The account's e-mail.
    pub email: String,
    /// The token from the reset e-mail.
    pub token: String,
    /// The new password.
    pub new_password: String,
}

/// A new campus of an institution.
#[derive(InputObject)]
pub struct CreateCampusInput {
    /// Required for admins; managers default to (and may only name) their own.
    pub institution_id: Option<Uuid>,
    /// The campus's name.
    pub name: String,
    /// The city it is in.
    pub city: String,
}

/// A new course on a campus, with its capacity.
#[derive(InputObject)]
pub struct OfferCourseInput {
    /// The institution (admins; managers offer in their own).
    pub institution_id: Option<Uuid>,
    /// The campus it is taught on.
    pub campus_id: Uuid,
    /// The course's name.
    pub name: String,
    /// Seats in all (1 to 10,000).
    pub capacity: i32,
    /// Optional client-chosen id; resending the same id after a failure completes the
    /// offer instead of creating a second course.
    pub course_id: Option<Uuid>,
}

/// A course's new capacity.
#[derive(InputObject)]
pub struct ChangeCourseCapacityInput {
    /// The course.
    pub course_id: Uuid,
    /// Seats in all, at least the seats already taken.
    pub capacity: i32,
}

/// A new student account of an institution.
#[derive(InputObject)]
pub struct CreateStudentInput {
    /// The institution (admins; managers create in their own).
    pub institution_id: Option<Uuid>,
    /// The student's full name.
    pub name: String,
    /// The student's e-mail (unique across accounts).
    pub email: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

/// A new teacher account of an institution.
#[derive(InputObject)]
pub struct CreateTeacherInput {
    /// The institution (admins; managers create in their own).
    pub institution_id: Option<Uuid>,
    /// The teacher's full name.
    pub name: String,
    /// The teacher's e-mail (unique across accounts).
    pub email: String,
}

/// An application to a course: who applies, to which course.
#[derive(InputObject)]
pub struct ApplyToCourseInput {
    /// The course applied to.
    pub course_id: Uuid,
    /// The applicant's full name.
    pub name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// The applicant's e-mail: one application per course and e-mail.
    pub email: String,
    /// Optional, chosen by the client (1 to 200 characters): repeating the request with
    /// the same key and input returns the same application; the same key with other
    /// input is refused (`IDEMPOTENCY_KEY_REUSED`).
    pub idempotency_key: Option<String>,
}

/// The enrollment to cancel.
#[derive(InputObject)]
pub struct CancelEnrollmentInput {
    /// The course.
    pub course_id: Uuid,
    /// The enrollment's application (see `courseEnrollments`).
    pub application_id: Uuid,
}

/// An exam note for a student of a course.
#[derive(InputObject)]
pub struct RecordExamNoteInput {
    /// The course the exam belongs to.
    pub course_id: Uuid,
    /// The student graded.
    pub student_id: Uuid,
    /// The exam's name (e.g. `Midterm`).
    pub exam_name: String,
    /// 0 to 10, at most two decimals.
    pub note: f64,
    /// Teachers record as themselves; managers and admins name the teacher.
    pub teacher_id: Option<Uuid>,
}

/// A correction of a recorded exam note.
#[derive(InputObject)]
pub struct ChangeExamNoteInput {
    /// The grade to correct (returned by `recordExamNote`).
    pub exam_grade_id: Uuid,
    /// The corrected note: 0 to 10, at most two decimals.
    pub note: f64,
    /// Teachers correct as themselves; managers and admins name the teacher.
    pub teacher_id: Option<Uuid>,
}

/// A change of name applies at once. A change of e-mail applies only when the link
/// sent to the new address is followed (`confirmEmailChange`); the current address is
/// told of the request.
#[derive(InputObject)]
pub struct UpdateUserInput {
    /// Defaults to the caller.
    pub user_id: Option<Uuid>,
    /// A new name (applies at once).
    pub name: Option<String>,
    /// A new e-mail (applies when the link sent to it is followed).
    pub email: Option<String>,
}

/// Confirms an e-mail change with the token e-mailed to the new address.
#[derive(InputObject)]
pub struct ConfirmEmailChangeInput {
    /// The account whose e-mail changes (from the link).
    pub user_id: Uuid,
    /// The token from the confirmation e-mail.
    pub token: String,
}

/// The account to deactivate, and why.
#[derive(InputObject)]
pub struct DeactivateUserInput {
    /// The account to deactivate.
    pub user_id: Uuid,
    /// Why, for the audit log.
    pub reason: String,
}

#[Object]
impl CommandMutation {
    /// Public, rate-limited. Starts a self-service registration: a confirmation token
    /// is issued for the e-mail. An e-mail that already has an account gets the same
    /// answer (its owner is told by e-mail instead), and the answer names no account:
    /// whether an e-mail has an account, or which one, is not told.
    async fn sign_up(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: SignUpInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<SignUpAccepted, ApiError> {
        rate_limit(ctx)?;
        let state = state(ctx);
        let email = parse("email", Email::parse(&input.email))?;
        let user_id = emails::reserve(&state.pool, email.as_str(), Uuid::new_v4()).await?;
        let token = secrets::new_token();
        let now = state.clock.now();
        let expires_at = now
            + Duration::from_std(state.config.signup_token_ttl)
                .map_err(|e| ApiError::internal(format!("sign-up token ttl: {e}")))?;
        let confirmation_token_hash = secrets::token_hash(&token);
        issue(
            state,
            IssuedToken {
                kind: TokenKind::SignUpConfirmation,
                user_id,
                email: email.to_string(),
                token,
            },
        )
        .await?;
        let committed = state
            .buses
            .user
            .execute(
                &user_id.to_string(),
                UserCommand::SignUp {
                    email: email.clone(),
                    confirmation_token_hash,
                    expires_at,
                    now,
                },
                &metadata(request(ctx), None),
            )
            .await?;
        let position = committed.last_position();
        Ok(SignUpAccepted {
            accepted: true,
            log_position: position.map(BigInt),
            projections_caught_up: settle(state, position, wait_for_projections).await?,
        })
    }

    /// Public, rate-limited. Confirms a sign-up: creates the user as the manager of a
    /// new institution.
    async fn confirm_sign_up(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: ConfirmSignUpInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<SignUpConfirmed, ApiError> {
        rate_limit(ctx)?;
        let state = state(ctx);
        validate! {
            email = parse("email", Email::parse(&input.email)),
            token_hash = one_time_token("token", &input.token),
            name = parse("name", PersonName::parse(&input.name)),
            institution_name = parse(
                "institutionName",
                InstitutionName::parse(&input.institution_name),
            ),
            password = password(state, "password", &input.password),
        }
        let unknown = || ApiError::rejection(&UserError::SignUpTokenUnknown);
        let refused = |e: UserError| match e {
            // Do not tell "no sign-up for this e-mail" from "wrong token".
            UserError::NotFound => unknown(),
            other => ApiError::rejection(&other),
        };
        let user_id = emails::user_id_of(&state.pool, email.as_str())
            .await?
            .ok_or_else(unknown)?;
        // The password is hashed (Argon2, slow on purpose) only for a token that can
        // succeed; the command decides again.
        let (user, _) = state.buses.user.load(&user_id.to_string()).await?;
        user.check_sign_up_token(&token_hash, state.clock.now())
            .map_err(refused)?;
        let password_hash = hash_password(state, password).await?;
        let institution_id = Uuid::new_v4();
        let meta = metadata(request(ctx), Some(institution_id));
        let user_committed = state
            .buses
            .user
            .execute(
                &user_id.to_string(),
                UserCommand::ConfirmSignUp {
                    token_hash,
                    name,
                    password_hash,
                    institution_id: InstitutionId::from_uuid(institution_id),
                    institution_name: institution_name.clone(),
                    now: state.clock.now(),
                },
                &meta,
            )
            .await
            .map_err(|e| match e {
                CommandError::Rejected(e) => refused(e),
                other => other.into(),
            })?;
        // A second aggregate, so not atomic with the user: if this process stops here,
        // the processor's `institution.create` task (issued by `SignUpConfirmed`)
        // creates it. If that task came first, the institution is already there.
        let created = state
            .buses
            .institution
            .execute(
                &institution_id.to_string(),
                InstitutionCommand::CreateInstitution {
                    name: institution_name,
                    manager_user_id: UserId::from_uuid(user_id),
                },
                &meta,
            )
            .await;
        let position = match created {
            Ok(committed) => committed.last_position(),
            Err(CommandError::Rejected(InstitutionError::AlreadyExists)) => {
                user_committed.last_position()
            }
            Err(other) => return Err(other.into()),
        };
        Ok(SignUpConfirmed {
            user_id,
            institution_id,
            log_position: position.map(BigInt),
            projections_caught_up: settle(state, position, wait_for_projections).await?,
        })
    }

    /// Public, rate-limited. Returns a signed access token. A wrong password is
    /// UNAUTHENTICATED `INVALID_CREDENTIALS` (and recorded); the failure that reaches
    /// the threshold locks the account for the lockout duration. Only the right
    /// password learns of the lockout (FORBIDDEN `USER_LOCKED_OUT`): to anyone else a
    /// locked account answers as an unknown e-mail does, so failing on purpose cannot
    /// tell which e-mails have accounts.
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: LoginInput,
    ) -> Result<LoginResult, ApiError> {
        rate_limit(ctx)?;
        let state = state(ctx);
        let bad_credentials =
            || ApiError::unauthenticated("INVALID_CREDENTIALS", "wrong e-mail or password");
        let email = parse("email", Email::parse(&input.email))?;
        if input.password.chars().count() > state.config.max_password_chars {
            return Err(bad_credentials());
        }
        let Some(user_id) = emails::user_id_of(&state.pool, email.as_str()).await? else {
            secrets::verify_password(input.password, None, state.config.password_hashing).await;
            return Err(bad_credentials());
        };
        let (user, _) = state.buses.user.load(&user_id.to_string()).await?;
        let stored = user.password_hash().map(str::to_owned);
        let has_password = stored.is_some();
        let matches =
            secrets::verify_password(input.password, stored, state.config.password_hashing).await;
        if !has_password {
            // Not confirmed yet, or an account whose password was never set.
            return Err(bad_credentials());
        }
        let committed = state
            .buses
            .user
            .execute(
                &user_id.to_string(),
                UserCommand::AttemptLogin {
                    password_matches: matches,
                    now: state.clock.now(),
                },
                &metadata(request(ctx), user.institution_id().map(|id| id.as_uuid())),
            )
            .await
            .map_err(|e| match e {
                CommandError::Rejected(UserError::NotFound | UserError::NotActive) => {
                    bad_credentials()
                }
                CommandError::Rejected(locked @ UserError::LockedOut { .. }) if matches => {
                    ApiError::rejection(&locked)
                }
                CommandError::Rejected(UserError::LockedOut { .. }) => bad_credentials(),
                other => other.into(),
            })?;
        // A failure (the one that reaches the threshold too) is a wrong password.
        if committed
            .events
            .iter()
            .any(|event| matches!(event, UserEvent::LoginFailed { .. }))
        {
            return Err(bad_credentials());
        }
        let role = user
            .role()
            .ok_or_else(|| ApiError::internal(format!("active user {user_id} has no role")))?;
        let ttl = Duration::from_std(state.config.token_ttl)
            .map_err(|e| ApiError::internal(format!("token ttl: {e}")))?;
        // Whole seconds: the token carries Unix seconds.
        let expires_at = chrono::DateTime::from_timestamp((state.clock.now() + ttl).timestamp(), 0)
            .ok_or_else(|| ApiError::internal("token expiry out of range"))?;
        let claims = Claims {
            user_id,
            role,
            institution_id: user.institution_id().map(|id| id.as_uuid()),
            expires_at,
            credential_version: user.credential_version(),
        };
        Ok(LoginResult {
            access_token: auth::issue(&state.config.token_secret, &claims),
            expires_at,
            user_id,
            role: role.into(),
            institution_id: claims.institution_id,
            log_position: committed.last_position().map(BigInt),
        })
    }

    /// Public, rate-limited. Issues a reset token if the e-mail belongs to an active
    /// account. The answer is the same either way.
    async fn request_password_reset(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: RequestPasswordResetInput,
    ) -> Result<RequestAccepted, ApiError> {
        rate_limit(ctx)?;
        let state = state(ctx);
        let email = parse("email", Email::parse(&input.email))?;
        // The answer never comes before the floor, so a known address (a token
        // stashed, a command appended: ~11 ms) cannot be told from an unknown one
        // (~4 ms) by its timing.
        let answer_at = tokio::time::Instant::now() + state.config.reset_request_floor;
        let outcome = async {
            if let Some(user_id) = emails::user_id_of(&state.pool, email.as_str()).await? {
                let token = secrets::new_token();
                let token_hash = secrets::token_hash(&token);
                issue(
                    state,
                    IssuedToken {
                        kind: TokenKind::PasswordReset,
                        user_id,
                        email: email.to_string(),
                        token,
                    },
                )
                .await?;
                let outcome = state
                    .buses
                    .user
                    .execute(
                        &user_id.to_string(),
                        UserCommand::RequestPasswordReset {
                            token_hash,
                            now: state.clock.now(),
                        },
                        &metadata(request(ctx), None),
                    )
                    .await;
                match outcome {
                    Ok(_) => {}
                    // Pending or deactivated accounts, and accounts that had too many
                    // resets lately, get nothing, silently (the token handed to the sink
                    // is never sent).
                    Err(CommandError::Rejected(_)) => {}
                    Err(other) => return Err(ApiError::from(other)),
                }
            }
            Ok(RequestAccepted { accepted: true })
        }
        .await;
        tokio::time::sleep_until(answer_at).await;
        outcome
    }

    /// Public, rate-limited. Sets a new password with a reset token. Returns the user id.
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: ResetPasswordInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<CommandResult, ApiError> {
        rate_limit(ctx)?;
        let state = state(ctx);
        validate! {
            email = parse("email", Email::parse(&input.email)),
            token_hash = one_time_token("token", &input.token),
            new_password = password(state, "newPassword", &input.new_password),
        }
        let unknown = || ApiError::rejection(&UserError::ResetTokenUnknown);
        let refused = |e: UserError| match e {
            UserError::NotFound | UserError::NotActive => unknown(),
            other => ApiError::rejection(&other),
        };
        let user_id = emails::user_id_of(&state.pool, email.as_str())
            .await?
            .ok_or_else(unknown)?;
        // As in `confirm_sign_up`: hash only for a token that can succeed.
        let (user, _) = state.buses.user.load(&user_id.to_string()).await?;
        user.check_reset_token(&token_hash, state.clock.now())
            .map_err(refused)?;
        let new_password_hash = hash_password(state, new_password).await?;
        let committed = state
            .buses
            .user
            .execute(
                &user_id.to_string(),
                UserCommand::ResetPassword {
                    token_hash,
                    new_password_hash,
                    now: state.clock.now(),
                },
                &metadata(request(ctx), None),
            )
            .await
            .map_err(|e| match e {
                CommandError::Rejected(e) => refused(e),
                other => other.into(),
            })?;
        result(
            state,
            user_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
    }

    /// Manager (own institution) or admin. Returns the campus id.
    async fn create_campus(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: CreateCampusInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<CreateCampusPayload, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let institution_id = auth::target_institution(claims, input.institution_id)?;
        validate! {
            name = parse("name", CampusName::parse(&input.name)),
            city = parse("city", CityName::parse(&input.city)),
        }
        let campus_id = Uuid::new_v4();
        let committed = state
            .buses
            .institution
            .execute(
                &institution_id.to_string(),
                InstitutionCommand::CreateCampus {
                    campus_id: CampusId::from_uuid(campus_id),
                    name,
                    city,
                },
                &metadata(request(ctx), Some(institution_id)),
            )
            .await?;
        result(
            state,
            campus_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
        .map(|r| CreateCampusPayload::of(r).owned_by(institution_id))
    }

    /// Manager (own institution) or admin. Offers a course on a campus and opens its
    /// enrollment. Returns the course id.
    async fn offer_course(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: OfferCourseInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<OfferCoursePayload, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let institution_id = auth::target_institution(claims, input.institution_id)?;
        validate! {
            name = parse("name", CourseName::parse(&input.name)),
            capacity = parse("capacity", Capacity::from_i64(i64::from(input.capacity))),
        }
        let course_id = input.course_id.unwrap_or_else(Uuid::new_v4);
        if input.course_id.is_some() {
            // A course id the client chose may be anyone's: an opened course is not
            // offered again (nor recorded in this institution's list).
            let (course, _) = state.buses.course.load(&course_id.to_string()).await?;
            if course.status() != CourseStatus::NotOpened {
                return Err(ApiError::rejection(&InstitutionError::CourseAlreadyExists));
            }
        }
        let meta = metadata(request(ctx), Some(institution_id));
        let offered = state
            .buses
            .institution
            .execute(
                &institution_id.to_string(),
                InstitutionCommand::OfferCourse {
                    course_id: CourseId::from_uuid(course_id),
                    campus_id: CampusId::from_uuid(input.campus_id),
                    name: name.clone(),
                    capacity,
                },
                &meta,
            )
            .await;
        match offered {
            Ok(_) => {}
            // A retry of an offer whose opening failed: finish it.
            Err(CommandError::Rejected(InstitutionError::CourseAlreadyExists))
                if input.course_id.is_some() =>
            {
                let (institution, _) = state
                    .buses
                    .institution
                    .load(&institution_id.to_string())
                    .await?;
                let (course, _) = state.buses.course.load(&course_id.to_string()).await?;
                if !institution
                    .courses()
                    .contains_key(&CourseId::from_uuid(course_id))
                    || course.status() != CourseStatus::NotOpened
                {
                    return Err(ApiError::rejection(&InstitutionError::CourseAlreadyExists));
                }
            }
            Err(other) => return Err(other.into()),
        }
        let committed = state
            .buses
            .course
            .execute(
                &course_id.to_string(),
                CourseCommand::OpenCourse {
                    institution_id: InstitutionId::from_uuid(institution_id),
                    campus_id: CampusId::from_uuid(input.campus_id),
                    name,
                    capacity,
                },
                &meta,
            )
            .await?;
        result(
            state,
            course_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
        .map(OfferCoursePayload::of)
    }

    /// Manager (own institution) or admin. Returns the course id.
    async fn change_course_capacity(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: ChangeCourseCapacityInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<ChangeCourseCapacityPayload, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let capacity = parse("capacity", Capacity::from_i64(i64::from(input.capacity)))?;
        let institution_id = course_institution(state, input.course_id).await?;
        auth::ensure_institution(claims, institution_id)?;
        let committed = state
            .buses
            .course
            .execute(
                &input.course_id.to_string(),
                CourseCommand::ChangeCapacity { capacity },
                &metadata(request(ctx), Some(institution_id)),
            )
            .await?;
        result(
            state,
            input.course_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
        .map(ChangeCourseCapacityPayload::of)
    }

    /// Manager (own institution) or admin. Creates the student and its login account
    /// (role Student, no password: the student sets one through the reset flow). The
    /// student id is also its user id. Returns the student id.
    async fn create_student(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: CreateStudentInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<CreateStudentPayload, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let institution_id = auth::target_institution(claims, input.institution_id)?;
        let today = state.clock.now().date_naive();
        validate! {
            name = parse("name", PersonName::parse(&input.name)),
            email = parse("email", Email::parse(&input.email)),
            birth_date = parse("birthDate", BirthDate::parse_str(&input.birth_date, today)),
        }
        ensure_institution_exists(state, institution_id).await?;
        let meta = metadata(request(ctx), Some(institution_id));
        let id = create_account(
            state,
            &meta,
            &email,
            &name,
            DomainRole::Student,
            Some(institution_id),
        )
        .await?;
        let committed = state
            .buses
            .student
            .execute(
                &id.to_string(),
                StudentCommand::CreateStudent {
                    institution_id: InstitutionId::from_uuid(institution_id),
                    user_id: UserId::from_uuid(id),
                    name,
                    email,
                    birth_date,
                },
                &meta,
            )
            .await?;
        result(state, id, committed.last_position(), wait_for_projections)
            .await
            .map(CreateStudentPayload::of)
    }

    /// Manager (own institution) or admin. Like `createStudent`, for a teacher.
    async fn create_teacher(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: CreateTeacherInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<CreateTeacherPayload, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let institution_id = auth::target_institution(claims, input.institution_id)?;
        validate! {
            name = parse("name", PersonName::parse(&input.name)),
            email = parse("email", Email::parse(&input.email)),
        }
        ensure_institution_exists(state, institution_id).await?;
        let meta = metadata(request(ctx), Some(institution_id));
        let id = create_account(
            state,
            &meta,
            &email,
            &name,
            DomainRole::Teacher,
            Some(institution_id),
        )
        .await?;
        let committed = state
            .buses
            .teacher
            .execute(
                &id.to_string(),
                TeacherCommand::CreateTeacher {
                    institution_id: InstitutionId::from_uuid(institution_id),
                    user_id: UserId::from_uuid(id),
                    name,
                    email,
                },
                &meta,
            )
            .await?;
        result(state, id, committed.last_position(), wait_for_projections)
            .await
            .map(CreateTeacherPayload::of)
    }

    /// Public, rate-limited. Applies to a course: the application is recorded at once in
    /// a stream of its own (no applicant ever waits for another) and the processor
    /// decides it later, in the order the applications were recorded. Returns the
    /// application id, which is the same for every application of one e-mail to one
    /// course: a repeat returns the existing application and records nothing.
    async fn apply_to_course(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: ApplyToCourseInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<ApplyToCoursePayload, ApiError> {
        rate_limit(ctx)?;
        let state = state(ctx);
        let now = state.clock.now();
        validate! {
            name = parse("name", PersonName::parse(&input.name)),
            email = parse("email", Email::parse(&input.email)),
            birth_date = parse(
                "birthDate",
                BirthDate::parse_str(&input.birth_date, now.date_naive()),
            ),
            idempotency_key = input
                .idempotency_key
                .as_deref()
                .map(idempotency_key)
                .transpose(),
        }
        let institution_id = open_course_institution(state, input.course_id).await?;
        let course_id = CourseId::from_uuid(input.course_id);
        let application_id = application_id_for(course_id, &email).as_uuid();
        if let Some(key) = &idempotency_key {
            reserve_application_key(state, input.course_id, key, application_id).await?;
        }
        let command = ApplicationCommand::SubmitApplication {
            course_id,
            institution_id: InstitutionId::from_uuid(institution_id),
            name,
            birth_date,
            email,
            requested_at: now,
            idempotency_key,
        };
        let meta = metadata(request(ctx), Some(institution_id));
        // Answer before the request's own timeout, saying whether it was recorded.
        let deadline = state.config.request_timeout.mul_f64(0.8);
        let stream = application_id.to_string();
        let execution = state.buses.application.execute(&stream, command, &meta);
        let committed = match tokio::time::timeout(deadline, execution).await {
            Ok(outcome) => outcome?,
            Err(_) => {
                let recorded: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2)",
                )
                .bind(<Application as cqrs_es::Aggregate>::TYPE)
                .bind(&stream)
                .fetch_one(&state.pool)
                .await?;
                return Err(ApiError::Timeout {
                    message: if recorded {
                        "the service is busy, but your application was recorded; it will be decided in order".into()
                    } else {
                        "the service is busy and your application was not recorded yet; sending it again is safe".into()
                    },
                    recorded,
                    id: Some(application_id),
                });
            }
        };
        result(
            state,
            application_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
        .map(ApplyToCoursePayload::of)
    }

    /// Manager (own institution) or admin. Cancels an enrollment, freeing the seat.
    /// Returns the application id.
    async fn cancel_enrollment(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: CancelEnrollmentInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<CancelEnrollmentPayload, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let institution_id = course_institution(state, input.course_id).await?;
        auth::ensure_institution(claims, institution_id)?;
        let committed = state
            .buses
            .course
            .execute(
                &input.course_id.to_string(),
                CourseCommand::CancelEnrollment {
                    application_id: ApplicationId::from_uuid(input.application_id),
                    at: state.clock.now(),
                },
                &metadata(request(ctx), Some(institution_id)),
            )
            .await?;
        result(
            state,
            input.application_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
        .map(|r| CancelEnrollmentPayload::of(r).owned_by(input.course_id))
    }

    /// Teacher, manager (own institution) or admin. Records a student's note on an
    /// exam of a course. Returns the exam grade id (one per course, student and exam).
    async fn record_exam_note(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: RecordExamNoteInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<RecordExamNotePayload, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), GRADERS)?;
        let state = state(ctx);
        validate! {
            exam_name = parse("examName", ExamName::parse(&input.exam_name)),
            note = parse("note", GradeNote::from_f64(input.note)),
        }
        let (student, _) = state
            .buses
            .student
            .load(&input.student_id.to_string())
            .await?;
        let institution_id = student
            .institution_id()
            .ok_or_else(|| ApiError::not_found("STUDENT_NOT_FOUND", "student not found"))?
            .as_uuid();
        auth::ensure_institution(claims, institution_id)?;
        let course_institution = course_institution(state, input.course_id).await?;
        auth::ensure_institution(claims, course_institution)?;
        if course_institution != institution_id {
            return Err(ApiError::validation(
                "courseId",
                "OTHER_INSTITUTION",
                "the course and the student belong to different institutions",
            ));
        }
        let teacher_id = acting_teacher(state, claims, input.teacher_id, institution_id).await?;
        // Only a student enrolled in the course (by the student's e-mail) gets notes in
        // it; the course's stream is the truth of who holds a seat now.
        let (course, _) = state
            .buses
            .course
            .load(&input.course_id.to_string())
            .await?;
        let enrolled = student.email().is_some_and(|email| {
            course
                .enrolled()
                .values()
                .any(|enrollment| &enrollment.email == email)
        });
        if !enrolled {
            return Err(ApiError::conflict(
                "STUDENT_NOT_ENROLLED",
                "the student is not enrolled in this course",
            ));
        }
        let grade_id = exam_grade_id(input.course_id, input.student_id, &exam_name);
        let committed = state
            .buses
            .exam_grade
            .execute(
                &grade_id.to_string(),
                ExamGradeCommand::RecordNote {
                    institution_id: InstitutionId::from_uuid(institution_id),
                    course_id: CourseId::from_uuid(input.course_id),
                    student_id: StudentId::from_uuid(input.student_id),
                    teacher_id,
                    exam_name,
                    note,
                    at: state.clock.now(),
                },
                &metadata(request(ctx), Some(institution_id)),
            )
            .await?;
        result(
            state,
            grade_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
        .map(RecordExamNotePayload::of)
    }

    /// Teacher, manager (own institution) or admin. Corrects a recorded note.
    /// Returns the exam grade id.
    async fn change_exam_note(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: ChangeExamNoteInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<ChangeExamNotePayload, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), GRADERS)?;
        let state = state(ctx);
        let note = parse("note", GradeNote::from_f64(input.note))?;
        let (grade, _) = state
            .buses
            .exam_grade
            .load(&input.exam_grade_id.to_string())
            .await?;
        let institution_id = grade
            .institution_id()
            .ok_or_else(|| {
                ApiError::not_found("EXAM_GRADE_NOT_FOUND", "no note was recorded for this id")
            })?
            .as_uuid();
        auth::ensure_institution(claims, institution_id)?;
        let teacher_id = acting_teacher(state, claims, input.teacher_id, institution_id).await?;
        let committed = state
            .buses
            .exam_grade
            .execute(
                &input.exam_grade_id.to_string(),
                ExamGradeCommand::ChangeNote {
                    note,
                    teacher_id,
                    at: state.clock.now(),
                },
                &metadata(request(ctx), Some(institution_id)),
            )
            .await?;
        result(
            state,
            input.exam_grade_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
        .map(ChangeExamNotePayload::of)
    }

    /// Any signed-in user on itself; a manager on users of its institution; an admin
    /// on anyone. Omitted fields are left as they are. Returns the user id.
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: UpdateUserInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<UpdateUserPayload, ApiError> {
        let claims = auth::require(request(ctx).claims.as_ref())?;
        let state = state(ctx);
        let target = input.user_id.unwrap_or(claims.user_id);
        if target != claims.user_id {
            auth::require_role(Some(claims), STAFF)?;
        }
        validate! {
            name = input
                .name
                .as_deref()
                .map(|n| parse("name", PersonName::parse(n)))
                .transpose(),
            email = input
                .email
                .as_deref()
                .map(|e| parse("email", Email::parse(e)))
                .transpose(),
        }
        let user = load_user(state, target).await?;
        let institution = user.institution_id().map(|id| id.as_uuid());
        if target != claims.user_id {
            match institution {
                Some(owner) => auth::ensure_institution(claims, owner)?,
                // Admin accounts belong to no institution: only admins touch them.
                None => auth::require_role(Some(claims), &[DomainRole::Admin]).map(|_| ())?,
            }
        }
        // A new address is only proposed here: whoever changes it (a manager, say)
        // must not be able to take the account by resetting its password at an
        // address its owner never confirmed.
        let change = email.filter(|e| Some(e) != user.email());
        let mut last_position = None;
        if name.is_some() {
            let committed = state
                .buses
                .user
                .execute(
                    &target.to_string(),
                    UserCommand::UpdateUser { name, email: None },
                    &metadata(request(ctx), institution),
                )
                .await?;
            last_position = committed.last_position().or(last_position);
        }
        if let Some(new_email) = change {
            if emails::user_id_of(&state.pool, new_email.as_str())
                .await?
                .is_some_and(|holder| holder != target)
            {
                return Err(ApiError::conflict(
                    "EMAIL_TAKEN",
                    "this e-mail belongs to another account",
                ));
            }
            let token = secrets::new_token();
            let token_hash = secrets::token_hash(&token);
            // The link goes to the new address, or to the current one when someone
            // else asks for an active account (the domain decides; see
            // `EmailChangeLink`): the token is recorded for whichever receives it.
            let recipient = if target == claims.user_id || !user.has_password() {
                new_email.to_string()
            } else {
                user.email().map(ToString::to_string).unwrap_or_default()
            };
            issue(
                state,
                IssuedToken {
                    kind: TokenKind::EmailChange,
                    user_id: target,
                    email: recipient,
                    token,
                },
            )
            .await?;
            let committed = state
                .buses
                .user
                .execute(
                    &target.to_string(),
                    UserCommand::RequestEmailChange {
                        new_email,
                        token_hash,
                        now: state.clock.now(),
                        by_owner: target == claims.user_id,
                    },
                    &metadata(request(ctx), institution),
                )
                .await?;
            last_position = committed.last_position().or(last_position);
        }
        result(state, target, last_position, wait_for_projections)
            .await
            .map(UpdateUserPayload::of)
    }

    /// Public, rate-limited: whoever holds the token e-mailed to the new address.
    /// The e-mail changes now (if no other account took the address meanwhile).
    /// Returns the user id.
    async fn confirm_email_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: ConfirmEmailChangeInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<CommandResult, ApiError> {
        rate_limit(ctx)?;
        let state = state(ctx);
        let token_hash = one_time_token("token", &input.token)?;
        let target = input.user_id;
        let unknown = || ApiError::rejection(&UserError::EmailChangeTokenUnknown);
        let (user, _) = state.buses.user.load(&target.to_string()).await?;
        let Some(new_email) = user.pending_email_change(&token_hash).cloned() else {
            return Err(unknown());
        };
        let old_email = user.email().cloned();
        let holder = emails::reserve(&state.pool, new_email.as_str(), target).await?;
        if holder != target {
            return Err(ApiError::conflict(
                "EMAIL_TAKEN",
                "this e-mail belongs to another account",
            ));
        }
        let outcome = state
            .buses
            .user
            .execute(
                &target.to_string(),
                UserCommand::ConfirmEmailChange {
                    token_hash,
                    now: state.clock.now(),
                },
                &metadata(request(ctx), user.institution_id().map(|id| id.as_uuid())),
            )
            .await;
        let committed = match outcome {
            Ok(committed) => committed,
            Err(error) => {
                // Whatever went wrong, the address was not taken: free it again (a
                // failure here is logged; the reservation only blocks that address).
                if let Err(release) = emails::release(&state.pool, new_email.as_str(), target).await
                {
                    tracing::warn!(error = %release, "could not release an e-mail reservation");
                }
                return Err(match error {
                    CommandError::Rejected(UserError::NotFound | UserError::NotActive) => unknown(),
                    other => other.into(),
                });
            }
        };
        if let Some(old) = old_email.filter(|old| *old != new_email) {
            emails::release(&state.pool, old.as_str(), target).await?;
        }
        result(
            state,
            target,
            committed.last_position(),
            wait_for_projections,
        )
        .await
    }

    /// Manager (users of its institution) or admin. Users are never deleted.
    /// Returns the user id.
    async fn deactivate_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: DeactivateUserInput,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
    ) -> Result<CommandResult, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let reason = input.reason.trim().to_owned();
        if reason.is_empty() {
            return Err(ApiError::validation("reason", "EMPTY", "must not be empty"));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(ApiError::validation(
                "reason",
                "TOO_LONG",
                format!("must be at most {MAX_REASON_CHARS} characters"),
            ));
        }
        let user = load_user(state, input.user_id).await?;
        let institution = user.institution_id().map(|id| id.as_uuid());
        match institution {
            Some(owner) => auth::ensure_institution(claims, owner)?,
            None => auth::require_role(Some(claims), &[DomainRole::Admin]).map(|_| ())?,
        }
        let committed = state
            .buses
            .user
            .execute(
                &input.user_id.to_string(),
                UserCommand::DeactivateUser { reason },
                &metadata(request(ctx), institution),
            )
            .await?;
        result(
            state,
            input.user_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
    }
}

/// Reserves the e-mail and creates a login account without a password. Returns its id.
pub(crate) async fn create_account(
    state: &AppState,
    meta: &aula_eventlog::EventMetadata,
    email: &Email,
    name: &PersonName,
    role: DomainRole,
    institution_id: Option<Uuid>,
) -> Result<Uuid, ApiError> {
    create_account_at(state, meta, email, name, role, institution_id)
        .await
        .map(|(id, _)| id)
}

/// [`create_account`], also returning the log position of the account's creation.
pub(crate) async fn create_account_at(
    state: &AppState,
    meta: &aula_eventlog::EventMetadata,
    email: &Email,
    name: &PersonName,
    role: DomainRole,
    institution_id: Option<Uuid>,
) -> Result<(Uuid, Option<i64>), ApiError> {
    let candidate = Uuid::new_v4();
    let holder = emails::reserve(&state.pool, email.as_str(), candidate).await?;
    if holder != candidate {
        return Err(ApiError::conflict(
            "EMAIL_TAKEN",
            "this e-mail belongs to another account",
        ));
    }
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
