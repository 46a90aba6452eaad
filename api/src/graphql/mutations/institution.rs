//! An institution's campuses and courses: creating a campus, offering a course and
//! changing its capacity (managers in their own institution, admins anywhere).

use async_graphql::InputObject;
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct InstitutionMutation;

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

command_mutations! {
impl InstitutionMutation {
    /// Manager (own institution) or admin. Returns the campus id.
    async fn create_campus(
        ctx, input: CreateCampusInput, wait_for_projections
    ) -> CreateCampusPayload {
        let (claims, state) = authorize(ctx, STAFF)?;
        let institution_id = auth::target_institution(claims, input.institution_id)?;
        validate! {
            name = parse("name", CampusName::parse(&input.name)),
            city = parse("city", CityName::parse(&input.city)),
        }
        let campus_id = Uuid::new_v4();
        let command = InstitutionCommand::CreateCampus {
            campus_id: CampusId::from_uuid(campus_id),
            name,
            city,
        };
        Recording::new(ctx, Some(institution_id), wait_for_projections)
            .run(&state.buses.institution, institution_id, command, campus_id)
            .await
            .map(|payload: CreateCampusPayload| payload.owned_by(institution_id))
    }

    /// Manager (own institution) or admin. Offers a course on a campus and opens its
    /// enrollment. Returns the course id.
    async fn offer_course(
        ctx, input: OfferCourseInput, wait_for_projections
    ) -> OfferCoursePayload {
        let (claims, state) = authorize(ctx, STAFF)?;
        let institution_id = auth::target_institution(claims, input.institution_id)?;
        validate! {
            name = parse("name", CourseName::parse(&input.name)),
            capacity = parse("capacity", Capacity::from_i64(i64::from(input.capacity))),
        }
        let course_id = input.course_id.unwrap_or_else(Uuid::new_v4);
        if input.course_id.is_some() {
            // A course id the client chose may be anyone's: an opened course is not
            // offered again (nor recorded in this institution's list).
            let course = load(&state.buses.course, course_id).await?;
            if course.status() != CourseStatus::NotOpened {
                return Err(ApiError::rejection(&InstitutionError::CourseAlreadyExists));
            }
        }
        let recording = Recording::new(ctx, Some(institution_id), wait_for_projections);
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
                &recording.meta,
            )
            .await;
        match offered {
            Ok(_) => {}
            // A retry of an offer whose opening failed: finish it.
            Err(CommandError::Rejected(InstitutionError::CourseAlreadyExists))
                if input.course_id.is_some() =>
            {
                let institution = load(&state.buses.institution, institution_id).await?;
                let course = load(&state.buses.course, course_id).await?;
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
        let command = CourseCommand::OpenCourse {
            institution_id: InstitutionId::from_uuid(institution_id),
            campus_id: CampusId::from_uuid(input.campus_id),
            name,
            capacity,
        };
        recording.run(&state.buses.course, course_id, command, course_id).await
    }

    /// Manager (own institution) or admin. Returns the course id.
    async fn change_course_capacity(
        ctx, input: ChangeCourseCapacityInput, wait_for_projections
    ) -> ChangeCourseCapacityPayload {
        let (claims, state) = authorize(ctx, STAFF)?;
        let capacity = parse("capacity", Capacity::from_i64(i64::from(input.capacity)))?;
        let institution_id = course_institution(state, input.course_id).await?;
        auth::ensure_institution(claims, institution_id)?;
        let command = CourseCommand::ChangeCapacity { capacity };
        Recording::new(ctx, Some(institution_id), wait_for_projections)
            .run(&state.buses.course, input.course_id, command, input.course_id)
            .await
    }
}
}
