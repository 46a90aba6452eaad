//! `enrollment.decide`: issues `DecideEnrollment` to the course for the application of
//! an `EnrollmentRequested`. The course aggregate serializes parallel decisions
//! (optimistic concurrency), so workers may decide many applications at once without
//! ever exceeding a course's capacity.

use aula_domain::course::{Course, CourseCommand, CourseEvent, CourseServices, EnrollmentError};
use aula_eventlog::{Cause, CommandBus, EventMetadata};
use chrono::Utc;

use super::{command_outcome, EventPayload, TaskContext, TaskError, TaskHandler};

pub struct DecideEnrollment;

/// The metadata of a command a task issues: caused by the task's event, continuing its
/// correlation.
pub fn task_metadata(ctx: &TaskContext) -> EventMetadata {
    let task = &ctx.task;
    let correlation = task.correlation_id.unwrap_or_else(uuid::Uuid::new_v4);
    match task.event_id {
        Some(event_id) => {
            EventMetadata::caused_by_event(event_id, correlation, task.institution_id)
        }
        None => {
            let mut metadata =
                EventMetadata::caused_by_event(uuid::Uuid::nil(), correlation, task.institution_id);
            metadata.causation = Cause::Task(task.id);
            metadata
        }
    }
}

#[async_trait::async_trait]
impl TaskHandler for DecideEnrollment {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let payload = EventPayload::of(&ctx.task)?;
        let CourseEvent::EnrollmentRequested { application_id, .. } = payload.decode()? else {
            return Err(TaskError::permanent(format!(
                "enrollment.decide needs EnrollmentRequested, not {}",
                payload.event_type
            )));
        };
        let bus = CommandBus::<Course>::with_upcasters(
            ctx.pool.clone(),
            CourseServices,
            aula_domain::upcasters(),
        );
        let command = CourseCommand::DecideEnrollment {
            application_id,
            today: Utc::now().date_naive(),
        };
        let result = bus
            .execute(payload.aggregate_id, command, &task_metadata(ctx))
            .await;
        // Decided by an earlier attempt (or for the original of a reprocessed copy).
        command_outcome(result, |e| matches!(e, EnrollmentError::AlreadyDecided))
    }
}
