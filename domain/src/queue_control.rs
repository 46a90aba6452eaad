//! Operator records of queue controls (issue #19): who cancelled a waiting task,
//! force-released a running one, changed a task's priority, or paused and resumed a task
//! kind.
//!
//! Tasks are not an aggregate: their state lives in the processor's `tasks` table, which
//! decides nothing an event would have to replay. These events are the record of each
//! control, appended in the same transaction as the change, each to a stream of its own
//! ([`AGGREGATE_TYPE`], id = a new UUID, sequence 1: two controls never race for a
//! sequence), so the audit log (built from events alone, rebuildable) holds them with
//! their actor and institution like every other operator action. Like the webhook
//! endpoints' records they are not sent to webhook endpoints.

use crate::event_types::impl_domain_event;
use serde::{Deserialize, Serialize};

/// The `aggregate_type` of queue-control records.
pub const AGGREGATE_TYPE: &str = "queue_control";

/// One queue control (see the module docs). `detail` is the change as the operator's
/// view shows it (e.g. "retrying -> cancelled").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum QueueControlEvent {
    /// A waiting task was cancelled: it will never run.
    TaskCancelled {
        task_id: i64,
        kind: String,
        detail: String,
    },
    /// A running task's lease was ended by an operator; its worker's late outcome is
    /// refused.
    TaskForceReleased {
        task_id: i64,
        kind: String,
        detail: String,
    },
    /// A waiting task's priority changed.
    TaskPriorityChanged {
        task_id: i64,
        kind: String,
        detail: String,
    },
    /// A task kind was paused: claims skip it.
    TaskKindPaused { kind: String, detail: String },
    /// A paused task kind was resumed.
    TaskKindResumed { kind: String, detail: String },
}

impl QueueControlEvent {
    /// The record of `action` (the processor's `task_controls.action`), or `None` for an
    /// action this version does not know.
    pub fn of_action(
        action: &str,
        task_id: Option<i64>,
        kind: &str,
        detail: &str,
    ) -> Option<QueueControlEvent> {
        let (kind, detail) = (kind.to_owned(), detail.to_owned());
        Some(match (action, task_id) {
            ("cancel", Some(task_id)) => Self::TaskCancelled {
                task_id,
                kind,
                detail,
            },
            ("force_release", Some(task_id)) => Self::TaskForceReleased {
                task_id,
                kind,
                detail,
            },
            ("set_priority", Some(task_id)) => Self::TaskPriorityChanged {
                task_id,
                kind,
                detail,
            },
            ("pause", _) => Self::TaskKindPaused { kind, detail },
            ("resume", _) => Self::TaskKindResumed { kind, detail },
            _ => return None,
        })
    }
}

impl_domain_event!(QueueControlEvent {
    TaskCancelled => TASK_CANCELLED,
    TaskForceReleased => TASK_FORCE_RELEASED,
    TaskPriorityChanged => TASK_PRIORITY_CHANGED,
    TaskKindPaused => TASK_KIND_PAUSED,
    TaskKindResumed => TASK_KIND_RESUMED,
});

/// One sample of every event, for the catalog.
pub fn sample_events() -> Vec<QueueControlEvent> {
    vec![
        QueueControlEvent::TaskCancelled {
            task_id: 42,
            kind: "email.enrollment_requested".into(),
            detail: "retrying -> cancelled".into(),
        },
        QueueControlEvent::TaskForceReleased {
            task_id: 43,
            kind: "enrollment.decide".into(),
            detail: "running on worker-1 -> retrying".into(),
        },
        QueueControlEvent::TaskPriorityChanged {
            task_id: 44,
            kind: "notify.enrollment".into(),
            detail: "priority 50 -> 5".into(),
        },
        QueueControlEvent::TaskKindPaused {
            kind: "demo.seed".into(),
            detail: "3 waiting tasks parked".into(),
        },
        QueueControlEvent::TaskKindResumed {
            kind: "demo.seed".into(),
            detail: "3 parked tasks pending again".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_action_has_its_record() {
        for (action, task) in [
            ("cancel", Some(1)),
            ("force_release", Some(1)),
            ("set_priority", Some(1)),
            ("pause", None),
            ("resume", None),
        ] {
            assert!(
                QueueControlEvent::of_action(action, task, "k", "d").is_some(),
                "{action}"
            );
        }
        assert_eq!(QueueControlEvent::of_action("cancel", None, "k", "d"), None);
    }
}
