//! What each command mutation returns: its own payload type, with the id, the log
//! position and read-your-writes of `CommandResult`, plus the object a client wants to
//! show after the change. Objects from read models reflect them: ask
//! `waitForProjections: true` to read your own write (the object is null when the read
//! model has not seen it yet); `campus` and `user` come from the aggregate itself.

use async_graphql::{ComplexObject, Context, SimpleObject};
use aula_projections::{course_capacity, directory as directory_model, enrollments};
use uuid::Uuid;

use super::directory::{course_names, Application, Grade, Person};
use super::query::Campus;
use super::read_models::{CourseCapacity, Enrollment};
use super::types::{BigInt, CommandResult, Me};
use super::{load, state};
use crate::error::ApiError;
use crate::state::AppState;

macro_rules! payload {
    ($(#[doc = $doc:literal])* $name:ident) => {
        $(#[doc = $doc])*
        #[derive(SimpleObject, Debug, Clone)]
        #[graphql(complex)]
        pub struct $name {
            /// The affected entity (see the mutation for which).
            pub id: Uuid,
            /// Global log position of the command's last event; null when the command
            /// changed nothing.
            pub log_position: Option<BigInt>,
            /// Only when `waitForProjections: true` was asked: whether every projection
            /// reached `logPosition` before the read-your-writes timeout.
            pub projections_caught_up: Option<bool>,
            /// The owner the object is read under (the institution of a campus, the
            /// course of an enrollment).
            #[graphql(skip)]
            #[allow(dead_code)] // read by the payloads whose object needs it
            pub owner: Option<Uuid>,
        }

        impl From<CommandResult> for $name {
            fn from(result: CommandResult) -> Self {
                Self {
                    id: result.id,
                    log_position: result.log_position,
                    projections_caught_up: result.projections_caught_up,
                    owner: None,
                }
            }
        }

        impl $name {

            #[allow(dead_code)] // used by the payloads whose object needs it
            pub(crate) fn owned_by(mut self, owner: Uuid) -> Self {
                self.owner = Some(owner);
                self
            }
        }
    };
    // A payload whose object is loaded by `$load(ctx, id)`.
    (
        $(#[doc = $doc:literal])*
        $name:ident,
        $(#[doc = $object_doc:literal])*
        $object:ident: $object_type:ty = $load:ident
    ) => {
        payload!($(#[doc = $doc])* $name);

        #[ComplexObject]
        impl $name {
            $(#[doc = $object_doc])*
            async fn $object(&self, ctx: &Context<'_>) -> Result<Option<$object_type>, ApiError> {
                $load(ctx, self.id).await
            }
        }
    };
}

payload!(
    /// What `createCampus` returns.
    CreateCampusPayload
);
payload!(
    /// What `offerCourse` returns.
    OfferCoursePayload,
    /// The course with its seats (read model `course_capacity`).
    course: CourseCapacity = course
);
payload!(
    /// What `changeCourseCapacity` returns.
    ChangeCourseCapacityPayload,
    /// The course with its seats (read model `course_capacity`).
    course: CourseCapacity = course
);
payload!(
    /// What `createStudent` returns.
    CreateStudentPayload,
    /// The new student (read model `directory`).
    student: Person = person
);
payload!(
    /// What `createTeacher` returns.
    CreateTeacherPayload,
    /// The new teacher (read model `directory`).
    teacher: Person = person
);
payload!(
    /// What `applyToCourse` returns.
    ApplyToCoursePayload
);
payload!(
    /// What `cancelEnrollment` returns.
    CancelEnrollmentPayload
);
payload!(
    /// What `recordExamNote` returns.
    RecordExamNotePayload,
    /// The grade (read model `directory`).
    grade: Grade = grade
);
payload!(
    /// What `changeExamNote` returns.
    ChangeExamNotePayload,
    /// The grade with its corrected note (read model `directory`).
    grade: Grade = grade
);
payload!(
    /// What `updateUser` returns.
    UpdateUserPayload
);

async fn course(ctx: &Context<'_>, id: Uuid) -> Result<Option<CourseCapacity>, ApiError> {
    Ok(course_capacity::course_capacity(&state(ctx).pool, id)
        .await?
        .map(Into::into))
}

async fn person(ctx: &Context<'_>, id: Uuid) -> Result<Option<Person>, ApiError> {
    Ok(directory_model::people_by_id(&state(ctx).pool, &[id])
        .await?
        .into_iter()
        .next()
        .map(Into::into))
}

/// The name of one course, if it has one.
async fn course_name(state: &AppState, id: Uuid) -> Result<Option<String>, ApiError> {
    Ok(course_names(state, [id]).await?.remove(&id).flatten())
}

async fn grade(ctx: &Context<'_>, id: Uuid) -> Result<Option<Grade>, ApiError> {
    let state = state(ctx);
    let Some(row) = directory_model::grade(&state.pool, id).await? else {
        return Ok(None);
    };
    let name = course_name(state, row.course_id).await?;
    Ok(Some(Grade::from((row, name))))
}

#[ComplexObject]
impl CreateCampusPayload {
    /// The new campus (from its institution).
    async fn campus(&self, ctx: &Context<'_>) -> Result<Option<Campus>, ApiError> {
        let Some(institution) = self.owner else {
            return Ok(None);
        };
        let institution = load(&state(ctx).buses.institution, institution).await?;
        Ok(institution
            .campuses()
            .iter()
            .find(|(id, _)| id.as_uuid() == self.id)
            .map(Campus::from))
    }
}

#[ComplexObject]
impl ApplyToCoursePayload {
    /// The application and its decision so far (read model `directory`).
    async fn application(&self, ctx: &Context<'_>) -> Result<Option<Application>, ApiError> {
        let state = state(ctx);
        let Some(row) = directory_model::application(&state.pool, self.id).await? else {
            return Ok(None);
        };
        let name = course_name(state, row.course_id).await?;
        Application::try_from((row, name)).map(Some)
    }
}

#[ComplexObject]
impl CancelEnrollmentPayload {
    /// The cancelled enrollment (read model `course_enrollments`).
    async fn enrollment(&self, ctx: &Context<'_>) -> Result<Option<Enrollment>, ApiError> {
        let Some(course) = self.owner else {
            return Ok(None);
        };
        enrollments::course_enrollments(&state(ctx).pool, course, true)
            .await?
            .into_iter()
            .find(|e| e.application_id == self.id)
            .map(TryInto::try_into)
            .transpose()
    }
}

#[ComplexObject]
impl UpdateUserPayload {
    /// The account as it is now (from the account itself). Its e-mail changes only
    /// when the link sent to the new address is followed.
    async fn user(&self, ctx: &Context<'_>) -> Result<Me, ApiError> {
        let user = load(&state(ctx).buses.user, self.id).await?;
        let role = user
            .role()
            .map(Into::into)
            .ok_or_else(|| ApiError::internal("an updated user has a role"))?;
        Ok(Me::of(self.id, &user, role))
    }
}
