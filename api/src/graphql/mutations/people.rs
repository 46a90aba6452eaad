//! An institution's students and teachers: each is created with its login account
//! (no password: the person sets one through the reset flow).

use async_graphql::{Context, InputObject};
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct PeopleMutation;

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

command_mutations! {
impl PeopleMutation {
    /// Manager (own institution) or admin. Creates the student and its login account
    /// (role Student, no password: the student sets one through the reset flow). The
    /// student id is also its user id. Returns the student id.
    async fn create_student(
        ctx, input: CreateStudentInput, wait_for_projections
    ) -> CreateStudentPayload {
        let (claims, state) = authorize(ctx, STAFF)?;
        let institution_id = auth::target_institution(claims, input.institution_id)?;
        let today = state.clock.now().date_naive();
        validate! {
            name = parse("name", PersonName::parse(&input.name)),
            email = parse("email", Email::parse(&input.email)),
            birth_date = parse("birthDate", BirthDate::parse_str(&input.birth_date, today)),
        }
        let role = DomainRole::Student;
        let (id, recording) =
            person_account(ctx, institution_id, &email, &name, role, wait_for_projections).await?;
        let command = StudentCommand::CreateStudent {
            institution_id: InstitutionId::from_uuid(institution_id),
            user_id: UserId::from_uuid(id),
            name,
            email,
            birth_date,
        };
        recording.run(&state.buses.student, id, command, id).await
    }

    /// Manager (own institution) or admin. Like `createStudent`, for a teacher.
    async fn create_teacher(
        ctx, input: CreateTeacherInput, wait_for_projections
    ) -> CreateTeacherPayload {
        let (claims, state) = authorize(ctx, STAFF)?;
        let institution_id = auth::target_institution(claims, input.institution_id)?;
        validate! {
            name = parse("name", PersonName::parse(&input.name)),
            email = parse("email", Email::parse(&input.email)),
        }
        let role = DomainRole::Teacher;
        let (id, recording) =
            person_account(ctx, institution_id, &email, &name, role, wait_for_projections).await?;
        let command = TeacherCommand::CreateTeacher {
            institution_id: InstitutionId::from_uuid(institution_id),
            user_id: UserId::from_uuid(id),
            name,
            email,
        };
        recording.run(&state.buses.teacher, id, command, id).await
    }
}
}

/// The login account of a new student or teacher of `institution_id` (which must
/// exist), and how its person's creation is recorded (the account's metadata; `wait` is
/// `waitForProjections`).
async fn person_account<'a>(
    ctx: &Context<'a>,
    institution_id: Uuid,
    email: &Email,
    name: &PersonName,
    role: DomainRole,
    wait: Option<bool>,
) -> Result<(Uuid, Recording<'a>), ApiError> {
    let recording = Recording::new(ctx, Some(institution_id), wait);
    let state = recording.state;
    existing_institution(state, institution_id).await?;
    let meta = &recording.meta;
    let (id, _) = create_account_at(state, meta, email, name, role, Some(institution_id)).await?;
    Ok((id, recording))
}
