//! The metadata stored next to every event: who did it, for which institution, and
//! the chain of causes that led to it.
//!
//! It is stored as postgres-es expects, a JSON object of strings (cqrs-es's
//! `HashMap<String, String>`), under the stable keys below. **The keys are part of the
//! stored event contract**: add keys, never rename them.

use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;

pub const INSTITUTION_ID: &str = "institution_id";
pub const ACTOR: &str = "actor";
pub const CORRELATION_ID: &str = "correlation_id";
pub const CAUSATION_ID: &str = "causation_id";
pub const REQUEST_ID: &str = "request_id";
/// The W3C trace context of the span that appended the event (`events.append`, only
/// when spans are exported), in the `traceparent` header's form: handlers of the event
/// continue that trace (see [`crate::trace`]).
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// On a reprocessed copy: the original's `traceparent`. The copy's tasks start a trace
/// of their own (the reprocess request's) and link to the original's with it.
pub const ORIGINAL_TRACEPARENT: &str = "original_traceparent";
/// On a reprocessed copy: the id of the event it copies. Read models of the domain skip
/// copies; the processor treats a copy like its original.
pub const REPROCESSED_FROM: &str = "reprocessed_from";
/// On a reprocessed copy: the priority its tasks get instead of their kinds' (a number,
/// as text like every metadata value; `reprocessEvent(priority:)`).
pub const TASK_PRIORITY: &str = "task_priority";

/// Who issued a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in user.
    User(Uuid),
    /// The service itself: reactions, scheduled jobs, demo seeding.
    System,
    /// An anonymous caller of a public operation (sign-up, course application).
    Public,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::System => f.write_str("system"),
            Actor::Public => f.write_str("public"),
        }
    }
}

impl Actor {
    pub fn parse(text: &str) -> Option<Actor> {
        match text {
            "system" => Some(Actor::System),
            "public" => Some(Actor::Public),
            other => other
                .strip_prefix("user:")
                .and_then(|id| id.parse().ok())
                .map(Actor::User),
        }
    }
}

/// What caused a command: nothing but a request, or an earlier event or task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Request,
    Event(Uuid),
    Task(i64),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Request => f.write_str("request"),
            Cause::Event(id) => write!(f, "event:{id}"),
            Cause::Task(id) => write!(f, "task:{id}"),
        }
    }
}

/// Metadata for the events of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    pub institution_id: Option<Uuid>,
    pub actor: Actor,
    /// Shared by every event and task descending from one original request.
    pub correlation_id: Uuid,
    pub causation: Cause,
    pub request_id: Option<String>,
    /// Further keys (e.g. trace context); must not collide with the ones above.
    pub extra: Vec<(String, String)>,
}

impl EventMetadata {
    /// A command that starts a new chain (a request or a scheduled job).
    pub fn new(actor: Actor, institution_id: Option<Uuid>) -> Self {
        Self {
            institution_id,
            actor,
            correlation_id: Uuid::new_v4(),
            causation: Cause::Request,
            request_id: None,
            extra: Vec::new(),
        }
    }

    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Metadata for a command caused by an earlier event, continuing its correlation.
    pub fn caused_by_event(
        event_id: Uuid,
        correlation_id: Uuid,
        institution_id: Option<Uuid>,
    ) -> Self {
        Self {
            institution_id,
            actor: Actor::System,
            correlation_id,
            causation: Cause::Event(event_id),
            request_id: None,
            extra: Vec::new(),
        }
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = self.extra.iter().cloned().collect();
        if let Some(id) = self.institution_id {
            map.insert(INSTITUTION_ID.into(), id.to_string());
        }
        map.insert(ACTOR.into(), self.actor.to_string());
        map.insert(CORRELATION_ID.into(), self.correlation_id.to_string());
        map.insert(CAUSATION_ID.into(), self.causation.to_string());
        if let Some(request_id) = &self.request_id {
            map.insert(REQUEST_ID.into(), request_id.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_round_trips_through_text() {
        let id = Uuid::new_v4();
        for actor in [Actor::User(id), Actor::System, Actor::Public] {
            assert_eq!(Actor::parse(&actor.to_string()), Some(actor));
        }
        assert_eq!(Actor::parse("user:not-a-uuid"), None);
    }

    #[test]
    fn map_holds_every_key() {
        let institution = Uuid::new_v4();
        let event = Uuid::new_v4();
        let mut metadata = EventMetadata::caused_by_event(event, Uuid::nil(), Some(institution));
        metadata.request_id = Some("req-1".into());
        let map = metadata.to_map();
        assert_eq!(map[INSTITUTION_ID], institution.to_string());
        assert_eq!(map[ACTOR], "system");
        assert_eq!(map[CORRELATION_ID], Uuid::nil().to_string());
        assert_eq!(map[CAUSATION_ID], format!("event:{event}"));
        assert_eq!(map[REQUEST_ID], "req-1");
    }
}
