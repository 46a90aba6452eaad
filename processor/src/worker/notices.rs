//! The workers' notices of tasks that run long: the issuing events' rows in
//! `admin_events` are shown running once a task has run for a moment.
//!
//! A worker's claim leaves the events' rows alone (ADR 0001), and its completion queues
//! their refresh. Until session 14 the claim also queued a refresh, due
//! [`CLAIM_REFRESH_DELAY_MS`] later, that the completion's refresh deleted when the task
//! finished sooner: a row written and deleted per task, plus its index entry, for
//! nothing in a drain of short tasks. Now the worker keeps the claims with events in
//! memory and, once that moment has passed, queues a refresh (due at once) for those
//! of their tasks it still runs. What a refresh shows is the same; a worker that dies
//! within the moment leaves its tasks' events pending until their leases expire (the
//! rescue records them at once), where they showed running before.
//!
//! A task whose handler has returned is no longer running, even while its outcome waits
//! in the completer's batch: its event is not queued then (session 17: under load the
//! completions lag, and half the events of a drain had their row written twice, once
//! as running by a notice, once at the final status).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use super::{lock, InFlight};
use crate::processing::{self, CLAIM_REFRESH_DELAY_MS};
use crate::queue::{Done, TaskRow};

/// How often the notices look for claims whose moment has passed: a running task's
/// event shows running between [`CLAIM_REFRESH_DELAY_MS`] and this much later (plus the
/// refresher's round), well inside the admin view's one second.
const TICK: Duration = Duration::from_millis(100);

/// A claim's tasks that have an event, and when it was made.
type Claim = (Instant, Vec<(Done, Uuid)>);

/// The claims with events of the last moments, oldest first, and which of their tasks
/// are still running (their handler has not returned).
#[derive(Debug, Default)]
pub(super) struct Notices {
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    claims: VecDeque<Claim>,
    /// The ids of the held claims' tasks whose handler has not returned yet.
    running: HashSet<i64>,
}

impl Notices {
    /// Remembers a claim's tasks that have an event.
    pub(super) fn claimed(&self, tasks: &[TaskRow], at: Instant) {
        let with_events: Vec<(Done, Uuid)> = tasks
            .iter()
            .filter_map(|task| task.event_id.map(|event| (task.done(), event)))
            .collect();
        if !with_events.is_empty() {
            let mut held = self.lock();
            held.running
                .extend(with_events.iter().map(|(done, _)| done.id));
            held.claims.push_back((at, with_events));
        }
    }

    /// The handler of task `id` has returned: whatever its outcome, the task no longer
    /// runs, so its event is not shown running for it.
    pub(super) fn ended(&self, id: i64) {
        self.lock().running.remove(&id);
    }

    /// The events of the claims made before `until` whose tasks have not ended and that
    /// `still_running` says this worker still holds (each event once); those claims are
    /// forgotten.
    pub(super) fn due(&self, until: Instant, still_running: impl Fn(&Done) -> bool) -> Vec<Uuid> {
        let mut events = Vec::new();
        let mut held = self.lock();
        while held.claims.front().is_some_and(|(at, _)| *at <= until) {
            if let Some((_, tasks)) = held.claims.pop_front() {
                for (done, event) in tasks {
                    if held.running.remove(&done.id) && still_running(&done) {
                        events.push(event);
                    }
                }
            }
        }
        events.sort_unstable();
        events.dedup();
        events
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every [`TICK`], queues the refresh of the events whose tasks this worker has run for
/// [`CLAIM_REFRESH_DELAY_MS`] or more, and wakes the refresher; stops when `stop` turns
/// true. A failure only delays what the admin view shows: logged, and the next tick
/// goes on.
pub(super) async fn notice_loop(
    pool: PgPool,
    notices: Arc<Notices>,
    in_flight: InFlight,
    refresh_wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let delay = Duration::from_millis(CLAIM_REFRESH_DELAY_MS);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(until) = Instant::now().checked_sub(delay) else {
            continue;
        };
        let events = {
            let map = lock(&in_flight);
            notices.due(until, |done| map.get(&done.id) == Some(done))
        };
        if events.is_empty() {
            continue;
        }
        match processing::queue_refresh(&pool, &events).await {
            Ok(_) => refresh_wake.notify_one(),
            Err(error) => {
                tracing::warn!(%error, events = events.len(), "queueing the refresh of running tasks' events failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn task(id: i64, event: Option<Uuid>) -> TaskRow {
        let now = Utc::now();
        TaskRow {
            id,
            kind: "noop".into(),
            attempt: 1,
            max_attempts: 3,
            event_id: event,
            event_type: None,
            origin_task_id: None,
            idempotency_key: format!("k{id}"),
            payload: serde_json::json!({}),
            institution_id: None,
            correlation_id: None,
            created_at: now,
            claimed_at: now,
            priority: 50,
            run_at: now,
        }
    }

    #[test]
    fn a_claims_events_are_due_after_their_moment_if_their_tasks_still_run() {
        let notices = Notices::default();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let start = Instant::now();
        let first = [
            task(1, Some(a)),
            task(2, Some(b)),
            task(3, None),
            task(4, Some(a)),
        ];
        notices.claimed(&first, start);
        notices.claimed(&[task(5, None)], start);
        let later = start + Duration::from_millis(10);
        notices.claimed(&[task(6, Some(c))], later);

        // Not yet: nothing before the moment.
        assert!(notices
            .due(start - Duration::from_millis(1), |_| true)
            .is_empty());
        // Task 2 finished; tasks 1 and 4 still run, both of event `a` (named once).
        let running = [first[0].done(), first[3].done()];
        assert_eq!(notices.due(start, |done| running.contains(done)), [a]);
        // Forgotten once due; the later claim comes in its turn.
        assert!(notices.due(start, |_| true).is_empty());
        assert_eq!(notices.due(later, |_| true), [c]);
        assert!(notices
            .due(later + Duration::from_secs(1), |_| true)
            .is_empty());
        assert!(notices.lock().running.is_empty(), "nothing is kept");
    }

    #[test]
    fn a_task_whose_handler_returned_does_not_show_its_event_running() {
        let notices = Notices::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let start = Instant::now();
        notices.claimed(&[task(1, Some(a)), task(2, Some(b))], start);
        // Task 1's handler returned; its outcome is not recorded yet (still held).
        notices.ended(1);
        assert_eq!(notices.due(start, |_| true), [b]);
        // A task that ends after its claim was due leaves nothing behind.
        notices.ended(2);
        assert!(notices.lock().running.is_empty());
    }
}
