//! Aula's processor: reacts to events by issuing tasks and runs those tasks.
//!
//! - [`reactions`]: a subscription on the log (`processor.reactions`) that maps each
//!   event to its tasks and inserts them in the subscription's batch transaction, so an
//!   event issues its tasks exactly once (`UNIQUE (event_id, kind)`).
//! - [`admissions`]: a subscription on the log (`processor.admissions`) that decides
//!   the applications in commit order, one `DecideApplications` per course and batch.
//! - [`queue`]: the task table's statements: claim (`FOR UPDATE SKIP LOCKED`), batched
//!   completion with fencing by attempt number, lease heartbeats and rescue.
//! - [`worker`]: the worker loop of one process (LISTEN `aula_tasks` + polling,
//!   configurable concurrency, graceful drain).
//! - [`handlers`]: what each task kind does (e-mails, notifications, the enrollment
//!   decision, demo data), keyed by kind in a [`handlers::Registry`].
//! - [`mail`]: the [`mail::Mailer`] trait, SMTP (lettre) and `.eml` file outbox.
//! - [`metrics`]: task attempts, e-mails and queue depth for `GET /metrics`.
//! - [`processing`]: the processing status of events in `admin_events`, per-minute
//!   rollups and status counts, written in the transaction of every task change.
//! - [`dashboard`]: the dashboard's charts: rollups per minute and hour, per
//!   institution, kept beside the events' processing rows; queue depth samples.
//! - [`public_form`]: the public form of an event (what a broker message or a webhook
//!   carries: no sensitive field).
//! - [`controls`]: operators' queue controls (cancel, force release, priority, pause
//!   and resume a kind), each with its audit row.
//! - [`reprocess`]: re-emitting copies of events, manual task retries.
//! - [`bulk`]: bulk reprocessing jobs (preview, background batches, cancel).
//! - [`task_list`]: the admin dashboard's task list (filters, sorts, keyset pages).
//! - [`archive`]: the nightly move of old succeeded tasks into `*_archive`.
//! - [`webhooks`]: endpoints, messages fanned out in the reactions' transaction, signed
//!   delivery attempts as `webhook.deliver` tasks, resend and recovery.
//! - [`bench`](mod@bench): what `aula bench tasks` (crate `aula-bench`) needs: no-op
//!   workers, seeding and measuring the queue.
//!
//! **Boundary:** no HTTP or GraphQL here. Commands go through the domain's aggregates
//! (`aula_eventlog::CommandBus`), never by writing events directly, except for
//! reprocessed copies, which are deliberately outside any aggregate's stream.
//!
//! **Invariant:** a task's completion is accepted only from the attempt that currently
//! holds it (`WHERE id = $1 AND attempt = $2 AND status = 'running'`).
#![forbid(unsafe_code)]

pub mod admissions;
pub mod archive;
pub mod bench;
pub mod bulk;
pub mod config;
pub mod controls;
pub mod dashboard;
pub mod handlers;
pub mod kinds;
pub mod lookups;
pub mod mail;
pub mod metrics;
pub mod processing;
pub mod public_form;
pub mod queue;
pub mod reactions;
pub mod reprocess;
pub mod spans;
pub mod task_list;
pub mod tokens;
pub mod webhooks;
pub mod worker;

pub use admissions::{spawn_admissions, Admissions, ADMISSIONS_SUBSCRIPTION};
pub use archive::{archive_once, run_archive_scheduler, ArchiveReport, Clock, SystemClock};
pub use bulk::{BulkError, BulkFilter, BulkJob, Preview};
pub use config::{MailConfig, ProcessorConfig};
pub use handlers::{Registry, TaskContext, TaskError, TaskHandler};
pub use mail::{EmailMessage, FileMailer, Mailer, SmtpMailer};
pub use processing::{processing_rate_today, status_counts};
pub use queue::{NewTask, TaskRow};
pub use reactions::{spawn_reactions, Reactions, REACTIONS_SUBSCRIPTION};
pub use reprocess::{reprocess_event, reprocess_event_with_priority, retry_task, ReprocessError};
pub use tokens::stash_token;
pub use worker::{run_workers, WorkerHandle};

/// Errors of the processor's own operations (not of task handlers).
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
}

/// What the unit tests share.
#[cfg(test)]
mod test_support {
    use chrono::{DateTime, Utc};

    /// The instant `text` (RFC 3339) names.
    pub(crate) fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }
}
