//! Applying to a course (public, recorded at once and decided later by the processor)
//! and cancelling an enrollment.

use async_graphql::InputObject;
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct EnrollmentMutation;

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

command_mutations! {
impl EnrollmentMutation {
    /// Public, rate-limited. Applies to a course: the application is recorded at once in
    /// a stream of its own (no applicant ever waits for another) and the processor
    /// decides it later, in the order the applications were recorded. Returns the
    /// application id, which is the same for every application of one e-mail to one
    /// course: a repeat returns the existing application and records nothing.
    async fn apply_to_course(
        ctx, input: ApplyToCourseInput, wait_for_projections
    ) -> ApplyToCoursePayload {
        // The request's clock starts here: the checks below may wait for a connection too.
        let started = tokio::time::Instant::now();
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
        let course_id = CourseId::from_uuid(input.course_id);
        let application_id = application_id_for(course_id, &email).as_uuid();
        // Answer before the request's own timeout, saying whether it was recorded. The
        // bounds count from the request's start and cover the checks too: under a lock on
        // the log, the appends given up on keep their connections until their statements
        // end (sqlx drains a connection before it returns it to the pool), so a crowd
        // starves the pool, and a wait for a connection past the request timeout would get
        // a plain `TIMEOUT` that names neither the application nor its fate.
        let timeout = state.config.request_timeout;
        let deadline = started + timeout.mul_f64(0.8);
        let look_up_by = started + timeout.mul_f64(0.95);
        let not_recorded = || ApiError::Timeout {
            message: "the service is busy and your application was not recorded yet; sending it again is safe".into(),
            recorded: false,
            id: Some(application_id),
        };
        let checks = async {
            let institution_id = open_course_institution(state, input.course_id).await?;
            if let Some(key) = &idempotency_key {
                reserve_application_key(state, input.course_id, key, application_id).await?;
            }
            Ok::<_, ApiError>(institution_id)
        };
        let institution_id = tokio::time::timeout_at(deadline, checks)
            .await
            .map_err(|_| not_recorded())??;
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
        let stream = application_id.to_string();
        // One stream per applicant and course, nearly always new: decided without loading it
        // (a repeat is caught by the append's sequence key and answered from the stream).
        let execution = state
            .buses
            .application
            .execute_expecting_new(&stream, command, &meta);
        let committed = match tokio::time::timeout_at(deadline, execution).await {
            Ok(outcome) => outcome?,
            Err(_) => {
                let look_up = aula_eventlog::lookups::stream_exists(
                    &state.pool,
                    <Application as Aggregate>::TYPE,
                    &stream,
                );
                let recorded = match tokio::time::timeout_at(look_up_by, look_up).await {
                    Ok(Ok(recorded)) => Some(recorded),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "could not tell whether a late application was recorded");
                        None
                    }
                    Err(_) => None,
                };
                if recorded == Some(false) {
                    return Err(not_recorded());
                }
                return Err(ApiError::Timeout {
                    message: if recorded == Some(true) {
                        "the service is busy, but your application was recorded; it will be decided in order".into()
                    } else {
                        "the service is busy and could not confirm yet that your application was recorded; sending it again is safe".into()
                    },
                    recorded: recorded == Some(true),
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
        .map(ApplyToCoursePayload::from)
    }

    /// Manager (own institution) or admin. Cancels an enrollment, freeing the seat.
    /// Returns the application id.
    async fn cancel_enrollment(
        ctx, input: CancelEnrollmentInput, wait_for_projections
    ) -> CancelEnrollmentPayload {
        let (claims, state) = authorize(ctx, STAFF)?;
        let institution_id = course_institution(state, input.course_id).await?;
        auth::ensure_institution(claims, institution_id)?;
        let command = CourseCommand::CancelEnrollment {
            application_id: ApplicationId::from_uuid(input.application_id),
            at: state.clock.now(),
        };
        Recording::new(ctx, Some(institution_id), wait_for_projections)
            .run(&state.buses.course, input.course_id, command, input.application_id)
            .await
            .map(|payload: CancelEnrollmentPayload| payload.owned_by(input.course_id))
    }
}
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
    let row = aula_eventlog::lookups::course_opening_and_closing(&state.pool, course_id).await?;
    let institution = row
        .0
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ApiError::not_found("COURSE_NOT_FOUND", "course not found"))?;
    if row.1 == Some(true) {
        return Err(closed());
    }
    Ok(institution)
}

fn idempotency_key(raw: &str) -> Result<String, ApiError> {
    let field = "idempotencyKey";
    non_empty_at_most(field, raw, MAX_IDEMPOTENCY_KEY_CHARS)?;
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
