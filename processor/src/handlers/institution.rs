//! `institution.create`: creates the institution a confirmed sign-up registered
//! (`SignUpConfirmed`), unless it exists.
//!
//! Confirming a sign-up is two commands on two aggregates: the user (`ConfirmSignUp`,
//! which records `UserCreated` and `SignUpConfirmed`), then the institution
//! (`CreateInstitution`). The API issues both at once; if it stops in between, the new
//! manager would be left without an institution. This task is issued by the first
//! command's event, so the second one happens whatever became of the API. Whichever
//! comes second finds the institution there (`AlreadyExists`), which is success.

use aula_domain::institution::{
    Institution, InstitutionCommand, InstitutionError, InstitutionServices,
};
use aula_domain::user::UserEvent;
use aula_domain::values::UserId;
use aula_eventlog::CommandBus;

use super::enrollment::task_metadata;
use super::{command_outcome, EventPayload, TaskContext, TaskError, TaskHandler};

pub struct CreateRegisteredInstitution;

#[async_trait::async_trait]
impl TaskHandler for CreateRegisteredInstitution {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let payload = EventPayload::of(&ctx.task)?;
        let UserEvent::SignUpConfirmed {
            institution_id,
            institution_name,
        } = payload.decode()?
        else {
            return Err(TaskError::permanent(format!(
                "institution.create needs SignUpConfirmed, not {}",
                payload.event_type
            )));
        };
        let manager = payload
            .aggregate_id
            .parse()
            .map(UserId::from_uuid)
            .map_err(|e| {
                TaskError::permanent(format!("user id {:?}: {e}", payload.aggregate_id))
            })?;
        let bus = CommandBus::<Institution>::with_upcasters(
            ctx.pool.clone(),
            InstitutionServices,
            aula_domain::upcasters(),
        );
        let command = InstitutionCommand::CreateInstitution {
            name: institution_name,
            manager_user_id: manager,
        };
        let result = bus
            .execute(&institution_id.to_string(), command, &task_metadata(ctx))
            .await;
        // The API created it (the usual case), or an earlier attempt did.
        command_outcome(result, |e| matches!(e, InstitutionError::AlreadyExists))
    }
}
