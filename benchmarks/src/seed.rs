//! What benchmarks and the root crate's tests seed alike: institutions, and courses opened
//! as the API opens a course after its offer, each on an institution and a campus of its
//! own.

use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::institution::{Institution, InstitutionCommand, InstitutionServices};
use aula_domain::values::{CampusId, Capacity, CourseName, InstitutionId, InstitutionName, UserId};
use aula_eventlog::{Actor, CommandBus, EventMetadata};
use sqlx::PgPool;
use uuid::Uuid;

/// Creates an institution named `name` (managed by a user of no account), as the system:
/// returns its id.
pub async fn create_institution(pool: &PgPool, name: &str) -> anyhow::Result<Uuid> {
    let institution = Uuid::new_v4();
    CommandBus::<Institution>::with_upcasters(
        pool.clone(),
        InstitutionServices,
        aula_domain::upcasters(),
    )
    .execute(
        &institution.to_string(),
        InstitutionCommand::CreateInstitution {
            name: InstitutionName::parse(name)?,
            manager_user_id: UserId::from_uuid(Uuid::new_v4()),
        },
        &EventMetadata::new(Actor::System, Some(institution)),
    )
    .await?;
    Ok(institution)
}

/// Opens a course named `name` with `seats` seats through `bus`, as the system: returns
/// the new course's id.
pub async fn open_course(bus: &CommandBus<Course>, name: &str, seats: u32) -> anyhow::Result<Uuid> {
    let course = Uuid::new_v4();
    bus.execute(
        &course.to_string(),
        CourseCommand::OpenCourse {
            institution_id: InstitutionId::from_uuid(Uuid::new_v4()),
            campus_id: CampusId::from_uuid(Uuid::new_v4()),
            name: CourseName::parse(name)?,
            capacity: Capacity::new(seats)?,
        },
        &EventMetadata::new(Actor::System, None),
    )
    .await?;
    Ok(course)
}

/// Opens `count` courses of `seats` seats, one after another, named `{prefix} {i}`:
/// returns their ids in that order.
pub async fn open_courses(
    pool: &PgPool,
    prefix: &str,
    count: usize,
    seats: u32,
) -> anyhow::Result<Vec<Uuid>> {
    let bus = CommandBus::with_upcasters(pool.clone(), CourseServices, aula_domain::upcasters());
    let mut courses = Vec::with_capacity(count);
    for i in 0..count {
        courses.push(open_course(&bus, &format!("{prefix} {i}"), seats).await?);
    }
    Ok(courses)
}
