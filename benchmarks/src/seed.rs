//! What benchmarks and the root crate's tests seed alike: courses opened as the API opens
//! a course after its offer, each on an institution and a campus of its own.

use aula_domain::course::{Course, CourseCommand};
use aula_domain::values::{CampusId, Capacity, CourseName, InstitutionId};
use aula_eventlog::{Actor, CommandBus, EventMetadata};
use uuid::Uuid;

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
