//! What each task kind does. A [`TaskHandler`] per kind, looked up in a [`Registry`].
//!
//! Handlers are idempotent where the outside world allows: e-mails are recorded in
//! `outbox_emails` and notifications in `notifications`, once per idempotency key, so a
//! task run again after a crash does not repeat its effect (an e-mail whose SMTP
//! conversation finished just before the process died is the one exception:
//! at-least-once; a record that fails after the send is retried, not the send).

pub mod demo;
pub mod email;
pub mod enrollment;
pub mod institution;
pub mod notify;

use std::collections::HashMap;
use std::sync::Arc;

use aula_eventlog::subscription::BoxError;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;

use crate::config::MailConfig;
use crate::kinds::{self, TaskKind};
use crate::mail::Mailer;
use crate::queue::TaskRow;

/// A claimed task and what its handler may use.
pub struct TaskContext {
    pub pool: PgPool,
    pub task: TaskRow,
    pub worker: String,
}

/// Why a task attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Worth trying again later (database, network, SMTP 4xx, a race).
    #[error(transparent)]
    Retry(BoxError),
    /// Retrying cannot help (bad payload, invalid address, unknown kind).
    #[error(transparent)]
    Permanent(BoxError),
    /// The outcome can never change, not even by a manual retry (a one-time token that
    /// is gone): the task ends `dead` at once, with this reason, instead of `failed`.
    #[error(transparent)]
    Final(BoxError),
}

impl TaskError {
    pub fn retry(error: impl Into<BoxError>) -> Self {
        TaskError::Retry(error.into())
    }

    pub fn permanent(error: impl Into<BoxError>) -> Self {
        TaskError::Permanent(error.into())
    }

    pub fn final_outcome(error: impl Into<BoxError>) -> Self {
        TaskError::Final(error.into())
    }

    /// Not worth an automatic retry ([`TaskError::Permanent`] or [`TaskError::Final`]).
    pub fn is_permanent(&self) -> bool {
        matches!(self, TaskError::Permanent(_) | TaskError::Final(_))
    }

    /// Ends the task `dead`: see [`TaskError::Final`].
    pub fn is_final(&self) -> bool {
        matches!(self, TaskError::Final(_))
    }

    /// Whether the attempt failed because the database could not be used at all: no
    /// connection in time, a lost or refused connection, a server shutting down or out
    /// of resources (not a serialization failure or deadlock: see
    /// [`database_unavailable`]), or the SMTP server could not be reached
    /// ([`crate::mail::MailError::is_unreachable`]). Such an attempt says nothing
    /// about the task, so it is retried without counting against its attempts.
    pub fn is_unavailable(&self) -> bool {
        let TaskError::Retry(error) = self else {
            return false;
        };
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(error) = current {
            if let Some(error) = error.downcast_ref::<sqlx::Error>() {
                return database_unavailable(error);
            }
            if let Some(error) = error.downcast_ref::<crate::mail::MailError>() {
                return error.is_unreachable();
            }
            current = error.source();
        }
        false
    }

    /// "outer: cause: root cause".
    pub fn chain(&self) -> String {
        let inner: &(dyn std::error::Error + 'static) = match self {
            TaskError::Retry(e) | TaskError::Permanent(e) | TaskError::Final(e) => e.as_ref(),
        };
        aula_eventlog::subscription::error_chain(inner)
    }
}

/// A command's result as its task's: a rejection that `already_done` recognizes means an
/// earlier attempt (or the API, or the original of a reprocessed copy) did it, which is
/// success; any other rejection is permanent, a lost race is retried.
pub(crate) fn command_outcome<T, E>(
    result: Result<T, aula_eventlog::CommandError<E>>,
    already_done: impl Fn(&E) -> bool,
) -> Result<(), TaskError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    use aula_eventlog::CommandError;
    match result {
        Ok(_) => Ok(()),
        Err(CommandError::Rejected(rejection)) if already_done(&rejection) => Ok(()),
        Err(CommandError::Rejected(rejection)) => Err(TaskError::permanent(rejection)),
        Err(error @ CommandError::Conflict { .. }) => Err(TaskError::retry(error.to_string())),
        Err(CommandError::Store(error)) => Err(error.into()),
    }
}

/// See [`TaskError::is_unavailable`] and [`aula_eventlog::db::is_unavailable`], less
/// serialization failures and deadlocks (40001, 40P01): those are the task's own
/// contention, retried like any error but counted, so a task that always deadlocks
/// against a hot row still ends `dead` instead of retrying forever.
pub fn database_unavailable(error: &sqlx::Error) -> bool {
    let contention = matches!(
        error,
        sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("40001" | "40P01"))
    );
    aula_eventlog::db::is_unavailable(error) && !contention
}

impl From<sqlx::Error> for TaskError {
    fn from(error: sqlx::Error) -> Self {
        TaskError::Retry(Box::new(error))
    }
}

/// Only what is proven permanent fails a task for good: stored events that do not
/// decode. A pool timeout, a lost connection, a serialization failure are retried with
/// the task's backoff like any other transient error.
impl From<aula_eventlog::StoreError> for TaskError {
    fn from(error: aula_eventlog::StoreError) -> Self {
        if error.is_permanent() {
            TaskError::Permanent(Box::new(error))
        } else {
            TaskError::Retry(Box::new(error))
        }
    }
}

#[async_trait::async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError>;
}

/// Handlers by task kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn TaskHandler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the webhook kinds with `config`; `mailer` tells an endpoint's owner
    /// when it is disabled.
    pub fn with_webhooks(
        &mut self,
        config: crate::webhooks::WebhookConfig,
        mailer: Option<Arc<dyn Mailer>>,
    ) -> &mut Self {
        self.register(
            kinds::WEBHOOK_DELIVER,
            crate::webhooks::WebhookDelivery::new(config, mailer),
        )
        .register(
            kinds::WEBHOOK_RECOVER,
            crate::webhooks::recover::WebhookRecover,
        )
    }

    pub fn register(&mut self, kind: &str, handler: impl TaskHandler) -> &mut Self {
        self.handlers.insert(kind.to_owned(), Arc::new(handler));
        self
    }

    pub fn register_arc(&mut self, kind: &str, handler: Arc<dyn TaskHandler>) -> &mut Self {
        self.handlers.insert(kind.to_owned(), handler);
        self
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn TaskHandler>> {
        self.handlers.get(kind).cloned()
    }

    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    /// A handler for every kind in the table ([`TaskKind::ALL`]).
    pub fn standard(mailer: Arc<dyn Mailer>, mail: MailConfig) -> Self {
        // `aula serve` checks the settings at start-up (and refuses bad ones); here a bad
        // value falls back to the strict defaults.
        let webhooks = crate::webhooks::WebhookConfig::from_env().unwrap_or_else(|error| {
            tracing::error!(%error, "invalid webhook settings; using the defaults");
            crate::webhooks::WebhookConfig::default()
        });
        let email: Arc<dyn TaskHandler> = Arc::new(email::EmailHandler::new(mailer.clone(), mail));
        let mut registry = Registry::new();
        for kind in TaskKind::ALL {
            // Exhaustive: a kind added to the table without a handler does not compile.
            let handler: Arc<dyn TaskHandler> = match kind {
                TaskKind::EmailSignupConfirmation
                | TaskKind::EmailPasswordReset
                | TaskKind::EmailAlreadyRegistered
                | TaskKind::EmailChangeConfirmation
                | TaskKind::EmailChangeNotice
                | TaskKind::EmailWelcome
                | TaskKind::EmailApplicationScheduled
                | TaskKind::EmailEnrolled
                | TaskKind::EmailDeclined
                | TaskKind::EmailEnrollmentCancelled => email.clone(),
                TaskKind::EnrollmentDecide => Arc::new(enrollment::DecideEnrollment),
                TaskKind::NotifyGrade => Arc::new(notify::GradeNotification),
                TaskKind::LinkStudentNotifications => Arc::new(notify::LinkBroadcasts::students()),
                TaskKind::LinkTeacherNotifications => Arc::new(notify::LinkBroadcasts::teachers()),
                TaskKind::InstitutionCreate => Arc::new(institution::CreateRegisteredInstitution),
                TaskKind::DemoSeed => Arc::new(demo::SeedDemoData),
                TaskKind::Noop => Arc::new(Noop),
                TaskKind::WebhookDeliver => Arc::new(crate::webhooks::WebhookDelivery::new(
                    webhooks.clone(),
                    Some(mailer.clone()),
                )),
                TaskKind::WebhookRecover => Arc::new(crate::webhooks::recover::WebhookRecover),
            };
            registry.register_arc(kind.name(), handler);
        }
        registry
    }
}

/// Does nothing (benchmarks).
pub struct Noop;

#[async_trait::async_trait]
impl TaskHandler for Noop {
    async fn run(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// The fields of a task payload issued by a reaction (see `reactions::tasks_for`).
pub struct EventPayload<'a> {
    pub aggregate_id: &'a str,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub event: &'a Value,
}

impl<'a> EventPayload<'a> {
    pub fn of(task: &'a TaskRow) -> Result<Self, TaskError> {
        let field = |name: &str| -> Result<&'a Value, TaskError> {
            task.payload
                .get(name)
                .ok_or_else(|| TaskError::permanent(format!("the task payload has no {name:?}")))
        };
        let text = |name: &str| -> Result<&'a str, TaskError> {
            field(name)?
                .as_str()
                .ok_or_else(|| TaskError::permanent(format!("{name:?} is not a string")))
        };
        Ok(Self {
            aggregate_id: text("aggregate_id")?,
            event_type: text("event_type")?,
            event_version: text("event_version")?,
            event: field("event")?,
        })
    }

    /// Decodes the event with the domain's types, upcasting older versions first.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, TaskError> {
        aula_domain::decode(self.event_type, self.event_version, self.event).map_err(|e| {
            TaskError::permanent(format!(
                "the {} {} payload does not decode: {e}",
                self.event_type, self.event_version
            ))
        })
    }

    pub fn aggregate_uuid(&self) -> Result<uuid::Uuid, TaskError> {
        self.aggregate_id
            .parse()
            .map_err(|e| TaskError::permanent(format!("aggregate id {:?}: {e}", self.aggregate_id)))
    }
}
