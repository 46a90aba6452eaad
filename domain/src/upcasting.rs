//! Upcasters that turn stored payloads of older event versions into the current shape
//! before they are deserialized. One list serves every aggregate: each upcaster filters on
//! the event type, and event type names are unique across aggregates (a catalog test
//! checks that).

use std::sync::OnceLock;

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster, SerializedEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::event_types::{LOGIN_FAILED, LOGIN_SUCCEEDED, STUDENT_CREATED, USER_LOCKED_OUT};
use crate::student::STUDENT_CREATED_VERSION;
use crate::user::LOGIN_EVENTS_VERSION;

/// Every upcaster, for the event store (`PostgresEventRepository::with_upcasters` or
/// equivalent). Each one applies to payloads of its event type with a version older than
/// its target; they run in order, so a chain 1.0 → 2.0 → 3.0 is listed oldest first.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    let upcaster = |event_type: &str, version: &str, upcast: fn(Value) -> Value| {
        let upcaster = SemanticVersionEventUpcaster::new(event_type, version, Box::new(upcast));
        Box::new(upcaster) as Box<dyn EventUpcaster>
    };
    vec![
        upcaster(
            STUDENT_CREATED,
            STUDENT_CREATED_VERSION,
            student_created_v1_to_v2,
        ),
        upcaster(LOGIN_SUCCEEDED, LOGIN_EVENTS_VERSION, login_v1_to_v2),
        upcaster(LOGIN_FAILED, LOGIN_EVENTS_VERSION, login_failed_v1_to_v2),
        upcaster(USER_LOCKED_OUT, LOGIN_EVENTS_VERSION, login_v1_to_v2),
    ]
}

/// Deserializes a stored payload of `event_type` at `event_version` as `E`, upcasting it
/// first when it is of an older version: the one decode path for readers of the log
/// outside the event store (projections, task handlers).
pub fn decode<E: DeserializeOwned>(
    event_type: &str,
    event_version: &str,
    payload: &Value,
) -> Result<E, serde_json::Error> {
    static UPCASTERS: OnceLock<Vec<Box<dyn EventUpcaster>>> = OnceLock::new();
    let upcasters = UPCASTERS.get_or_init(upcasters);
    if !upcasters
        .iter()
        .any(|u| u.can_upcast(event_type, event_version))
    {
        // Borrowing deserializer: no copy of the payload.
        return E::deserialize(payload);
    }
    // The upcasters read only the type, version and payload.
    let mut serialized = SerializedEvent {
        aggregate_id: String::new(),
        sequence: 0,
        aggregate_type: String::new(),
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        payload: payload.clone(),
        metadata: Value::Null,
    };
    for upcaster in upcasters {
        if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
            serialized = upcaster.upcast(serialized);
        }
    }
    serde_json::from_value(serialized.payload)
}

/// `StudentCreated` 1.0 → 2.0: the field `full_name` became `name`, and the e-mail is
/// stored normalized (trimmed, lower-case) like every [`crate::values::Email`].
///
/// Must not panic: a payload it cannot make sense of is passed on unchanged, and the
/// deserialization that follows reports it as a store error with context.
fn student_created_v1_to_v2(mut payload: Value) -> Value {
    if let Some(fields) = payload.as_object_mut() {
        if let Some(full_name) = fields.remove("full_name") {
            fields.entry("name").or_insert(full_name);
        }
        if let Some(Value::String(email)) = fields.get_mut("email") {
            *email = email.trim().to_lowercase();
        }
    }
    payload
}

/// `LoginSucceeded` and `UserLockedOut` 1.0 → 2.0: `source` added. A 1.0 event had none
/// and meant the whole account (a success cleared its count, a lockout locked all of
/// it), which is what `source: null` means.
fn login_v1_to_v2(mut payload: Value) -> Value {
    if let Some(fields) = payload.as_object_mut() {
        fields.entry("source").or_insert(Value::Null);
    }
    payload
}

/// `LoginFailed` 1.0 → 2.0: `source` and `counts_until` added. A 1.0 failure counted
/// against the whole account until a success or a lockout: `source: null`,
/// `counts_until: null`.
fn login_failed_v1_to_v2(payload: Value) -> Value {
    let mut payload = login_v1_to_v2(payload);
    if let Some(fields) = payload.as_object_mut() {
        fields.entry("counts_until").or_insert(Value::Null);
    }
    payload
}
