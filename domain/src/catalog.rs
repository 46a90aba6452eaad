//! The event catalog: for every event, its aggregate, version, kind (CUD or business),
//! producing command, payload, and consumers — rendered to `docs/events.md`.
//!
//! The payload field list is not written by hand: it is read from a serialized sample of
//! each event (each aggregate's `sample_events()`), and only the field *types* and the
//! prose come from the tables below. A field or event missing from those tables shows up
//! as `UNDOCUMENTED`, which the catalog tests refuse, as they refuse an event variant that
//! has no sample.

use std::fmt::Write as _;

use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;

use crate::{
    application, course, exam_grade, institution, queue_control, student, teacher, user,
    webhook_endpoint,
};

/// Placeholder for anything the tables below do not describe; tests fail on it.
pub const UNDOCUMENTED: &str = "UNDOCUMENTED";

/// Seed 003's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Data replication: something was created or updated.
    Cud,
    /// A business fact that other processes react to.
    Business,
}

impl EventKind {
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Cud => "CUD",
            Self::Business => "business",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventDescription {
    /// The aggregate's `TYPE`.
    pub aggregate: &'static str,
    pub event_type: String,
    pub version: String,
    pub kind: EventKind,
    /// The command that produces it.
    pub produced_by: &'static str,
    pub summary: &'static str,
    /// `(field, type)`, fields in the order of the serialized sample (alphabetical).
    pub payload: Vec<(String, &'static str)>,
    /// Fields holding secrets' hashes: admin views must redact them.
    pub sensitive: Vec<String>,
    /// Who reacts to it. The domain knows only the commands chained to it; the
    /// binary's catalog (`aula events catalog`) adds the projections and task kinds
    /// from their own code.
    pub consumers: Vec<String>,
    /// The sample serialized exactly as stored.
    pub example: Value,
}

struct Meta {
    kind: EventKind,
    produced_by: &'static str,
    summary: &'static str,
    consumers: &'static [&'static str],
}

/// Payload fields no reader of the log is shown (password and one-time token hashes).
pub const SENSITIVE_FIELDS: &[&str] = &["password_hash", "token_hash"];

const AGE_METRICS: &str = "projection: age_metrics (min/max/avg age per course and per campus)";

fn meta(event_type: &str) -> Option<Meta> {
    use EventKind::{Business, Cud};
    let meta = |kind, produced_by, summary, consumers| Meta {
        kind,
        produced_by,
        summary,
        consumers,
    };
    Some(match event_type {
        // user
        "PendingUserRegisterCreated" => meta(
            Business,
            "SignUp",
            "Someone signed up with an e-mail; a (re-)issued confirmation token supersedes earlier ones.",
            &["task: send_signup_confirmation_email"],
        ),
        "UserCreated" => meta(
            Cud,
            "ConfirmSignUp, CreateUser",
            "An account exists: a confirmed sign-up (role Manager) or an account created by an admin, manager or seeding.",
            &["projection: users"],
        ),
        "LoginSucceeded" => meta(
            Business,
            "AttemptLogin",
            "A login succeeded; its source's failure count (and the account-wide one) is cleared, never another source's (version 2.0: `source`).",
            &["projection: users (last login)", "audit: login history (query over events)"],
        ),
        "LoginFailed" => meta(
            Business,
            "AttemptLogin",
            "A login failed (wrong password). Recorded even though the caller reports a failure. Counts against its source and towards the account-wide ceiling until `counts_until` (version 2.0: `source`, `counts_until`).",
            &["audit: login history (query over events)"],
        ),
        "UserLockedOut" => meta(
            Business,
            "AttemptLogin",
            "Too many consecutive failed logins: logins from `source` are refused until `until`; with no source (the account-wide ceiling, an unknown source, or recorded before version 2.0), every login of the account is.",
            &["projection: users (locked_until)", "audit: login history (query over events)"],
        ),
        "ResetPasswordTokenCreated" => meta(
            Business,
            "RequestPasswordReset",
            "A reset-password token was issued; it supersedes earlier ones and expires at `expires_at`.",
            &["task: send_reset_password_email"],
        ),
        "PasswordReset" => meta(
            Business,
            "ResetPassword",
            "The password was replaced using a reset token, which is now used; clears any lockout.",
            &["projection: users"],
        ),
        "UserUpdated" => meta(
            Cud,
            "UpdateUser / ConfirmEmailChange",
            "Name and/or e-mail changed; only changed fields are present (non-null). Since e-mail changes need confirming, the e-mail is recorded here only by `ConfirmEmailChange`.",
            &["projection: users"],
        ),
        "EmailChangeRequested" => meta(
            Business,
            "RequestEmailChange",
            "A change of the account's e-mail to `new_email` was asked for; it applies (as `UserUpdated`) only when the e-mailed link is followed before `expires_at`: sent to the new address, or to the current one (`link_to`) when someone else asked for an active account, so its owner consents. Supersedes earlier requests.",
            &["task: email.email_change_confirmation", "task: email.email_change_notice"],
        ),
        "UserDeactivated" => meta(
            Business,
            "DeactivateUser",
            "The account can no longer log in. Users are never deleted.",
            &["projection: users"],
        ),
        "SignUpConfirmed" => meta(
            Business,
            "ConfirmSignUp",
            "Recorded with the new manager's UserCreated: the institution they registered. The API creates it at once; the task creates it if the API stopped before.",
            &["task: create_registered_institution"],
        ),
        "RegisteredEmailSignUpAttempted" => meta(
            Business,
            "SignUp",
            "Someone signed up with the e-mail of a registered account. Nothing changes; the sign-up gets the same answer as a new one, and an active account's owner is told by e-mail.",
            &["task: send_already_registered_email"],
        ),
        // institution
        "InstitutionCreated" => meta(
            Business,
            "CreateInstitution",
            "Registration finished: a new institution with its manager.",
            &["task: seed_demo_data", "projection: institutions"],
        ),
        "CampusCreated" => meta(
            Cud,
            "CreateCampus",
            "A campus was added to the institution.",
            &["projection: campuses"],
        ),
        "CourseOffered" => meta(
            Cud,
            "OfferCourse",
            "A course was added to a campus's catalogue.",
            &["command: course.OpenCourse (issued by the API right after)", "projection: courses"],
        ),
        // student, teacher
        "StudentCreated" => meta(
            Cud,
            "CreateStudent",
            "A student was registered at an institution (version 2.0: `full_name` became `name`).",
            &[
                "task: link_student_notifications",
                "task: send_student_welcome_email",
                "projection: students",
            ],
        ),
        "TeacherCreated" => meta(
            Cud,
            "CreateTeacher",
            "A teacher was registered at an institution.",
            &["task: link_teacher_notifications", "projection: teachers"],
        ),
        // application
        "ApplicationSubmitted" => meta(
            Business,
            "SubmitApplication",
            "Someone applied to a course; recorded at once in the application's own stream (its id derives from course and e-mail, so a repeat is the same application). The seat is decided afterwards, in the log's commit order.",
            &[
                "command: course.DecideApplications (issued in commit order by the processor's admissions subscription)",
            ],
        ),
        // course
        "CourseOpened" => meta(
            Cud,
            "OpenCourse",
            "The course's enrollment stream exists and accepts applications.",
            &["projection: course_capacity"],
        ),
        "EnrollmentRequested" => meta(
            Business,
            "RequestEnrollment",
            "The older shape of an application, recorded in the course's own stream (no longer issued by the API; stored ones still load, project and get decided).",
            &[
                "task: send_application_scheduled_email",
                "command: course.DecideEnrollment (issued by the processor)",
            ],
        ),
        "StudentEnrolled" => meta(
            Business,
            "DecideApplications, DecideEnrollment",
            "The application took a seat; carries the age on the enrollment day for the metrics.",
            &[
                "projection: course_capacity",
                AGE_METRICS,
                "task: send_enrolled_email",
            ],
        ),
        "EnrollmentDeclined" => meta(
            Business,
            "DecideApplications, DecideEnrollment",
            "The application was declined: class full, already enrolled, or course closed.",
            &["task: send_declined_email"],
        ),
        "EnrollmentCancelled" => meta(
            Business,
            "CancelEnrollment",
            "An enrollment was cancelled and its seat freed; carries the age recorded at enrollment.",
            &["projection: course_capacity", AGE_METRICS],
        ),
        "CapacityChanged" => meta(
            Cud,
            "ChangeCapacity",
            "The number of seats changed (never below the enrolled count).",
            &["projection: course_capacity"],
        ),
        "CourseClosed" => meta(
            Business,
            "CloseCourse",
            "The course takes no more students; pending applications will be declined.",
            &["projection: course_capacity"],
        ),
        // exam grade
        "ExamGradeNoteAdded" => meta(
            Business,
            "RecordNote",
            "A teacher recorded a student's note for an exam.",
            &["task: notify_student_new_grade", "projection: exam_grades"],
        ),
        "ExamGradeNoteChanged" => meta(
            Business,
            "ChangeNote",
            "A teacher corrected a recorded note.",
            &["projection: exam_grades"],
        ),
        // webhook endpoints (operator records, not an aggregate)
        "WebhookEndpointCreated" => meta(
            Business,
            "createWebhookEndpoint",
            "A webhook endpoint was registered. Records the URL's origin only (never the path, query or any secret).",
            AUDIT,
        ),
        "WebhookEndpointUpdated" => meta(
            Business,
            "updateWebhookEndpoint",
            "An endpoint's URL, event types or description changed; `changed` names which.",
            AUDIT,
        ),
        "WebhookEndpointEnabled" => meta(
            Business,
            "updateWebhookEndpoint (enabled: true)",
            "An operator enabled an endpoint again; its failure run is cleared.",
            AUDIT,
        ),
        "WebhookEndpointDisabled" => meta(
            Business,
            "updateWebhookEndpoint (enabled: false), or delivery (410 Gone, failing too long)",
            "An endpoint stopped receiving messages; `reason` says why (actor `system` when delivery disabled it).",
            AUDIT,
        ),
        "WebhookEndpointSecretRotated" => meta(
            Business,
            "rotateWebhookEndpointSecret",
            "A new signing secret (v1) or key pair (v1a) was issued; the previous one signs too until `previous_valid_until`. Holds no key.",
            AUDIT,
        ),
        "WebhookEndpointDeleted" => meta(
            Business,
            "deleteWebhookEndpoint",
            "An endpoint was deleted: no new messages, pending ones not sent.",
            AUDIT,
        ),
        "WebhookMessageResent" => meta(
            Business,
            "resendWebhookMessage",
            "One message was sent again by hand (same `webhook-id` and body).",
            AUDIT,
        ),
        "WebhookRecoveryStarted" => meta(
            Business,
            "recoverWebhookEndpoint",
            "\"Recover since T\" started for an endpoint.",
            AUDIT,
        ),
        "WebhookRecoveryCancelled" => meta(
            Business,
            "cancelWebhookRecovery",
            "A running recovery was cancelled.",
            AUDIT,
        ),
        // queue controls (operator records, not an aggregate)
        "TaskCancelled" => meta(
            Business,
            "cancelTask",
            "An operator cancelled a waiting task: it will never run.",
            QUEUE_AUDIT,
        ),
        "TaskForceReleased" => meta(
            Business,
            "forceReleaseTask",
            "An operator ended a running task's lease; its worker's late outcome is refused.",
            QUEUE_AUDIT,
        ),
        "TaskPriorityChanged" => meta(
            Business,
            "setTaskPriority",
            "An operator changed a waiting task's priority.",
            QUEUE_AUDIT,
        ),
        "TaskKindPaused" => meta(
            Business,
            "pauseTaskKind",
            "An admin paused a task kind: claims skip it until it is resumed.",
            QUEUE_AUDIT,
        ),
        "TaskKindResumed" => meta(
            Business,
            "resumeTaskKind",
            "An admin resumed a paused task kind.",
            QUEUE_AUDIT,
        ),
        _ => return None,
    })
}

/// The consumers webhook endpoints' records note (the binary adds the projections).
const AUDIT: &[&str] = &["audit: webhook endpoint operations (auditLog)"];
/// The consumers of queue-control records.
const QUEUE_AUDIT: &[&str] = &["audit: queue controls (auditLog)"];

/// Whether events of `aggregate` are operators' records of the service's own
/// configuration and queue (webhook endpoints, queue controls) rather than facts of the
/// academic domain: they are audited, never sent to webhook endpoints.
pub fn is_operator_record(aggregate: &str) -> bool {
    aggregate == webhook_endpoint::AGGREGATE_TYPE || aggregate == queue_control::AGGREGATE_TYPE
}

/// The type of `field` in `event_type`'s payload, as documented in the catalog.
fn field_type(event_type: &str, field: &str) -> Option<&'static str> {
    const TIMESTAMP: &str = "timestamp (RFC 3339, UTC)";
    const DATE: &str = "date (ISO 8601, `YYYY-MM-DD`)";
    Some(match (event_type, field) {
        ("InstitutionCreated", "name") => "InstitutionName (string, 1..=200 chars)",
        ("SignUpConfirmed", "institution_name") => "InstitutionName (string, 1..=200 chars)",
        ("CampusCreated", "name") => "CampusName (string, 1..=120 chars)",
        ("CourseOffered" | "CourseOpened", "name") => "CourseName (string, 1..=200 chars)",
        ("UserUpdated", "name") => "PersonName or null (unchanged)",
        ("UserUpdated", "email") => "Email or null (unchanged)",
        ("UserCreated", "institution_id") => "InstitutionId (UUID) or null (admins)",
        ("UserCreated", "password_hash") => {
            "string or null (password hash; null until set through a reset)"
        }
        ("UserDeactivated", "reason") => "string (free text)",
        ("ApplicationSubmitted", "idempotency_key") => {
            "string or null (the client's idempotency key, 1..=200 chars)"
        }
        ("EnrollmentDeclined", "reason") => {
            "DeclineReason: \"ClassFull\" | \"AlreadyEnrolled\" | \"CourseClosed\""
        }
        ("CapacityChanged", "from" | "to") => "Capacity (integer 1..=10000)",
        ("ExamGradeNoteChanged", "from" | "to") => {
            "GradeNote (string with two decimals, \"0.00\"..=\"10.00\")"
        }
        (_, "task_id") => "TaskId (integer, the processor's task id)",
        (_, "kind") => "TaskKind (string, e.g. \"email.enrollment_requested\")",
        (_, "detail") => "string (the change as the dashboard shows it)",
        (_, "endpoint_id") => "WebhookEndpointId (UUID)",
        (_, "message_id") => "WebhookMessageId (UUID; `webhook-id` is `msg_` + its hex)",
        (_, "recovery_id") => "WebhookRecoveryId (UUID)",
        ("WebhookEndpointUpdated", "url_origin") => {
            "string or null (the new URL's origin, when the URL changed)"
        }
        (_, "url_origin") => "string (`scheme://host[:port]` of the URL)",
        ("WebhookEndpointCreated", "event_types") => {
            "array of event types, or null (every type)"
        }
        ("WebhookEndpointUpdated", "changed") => {
            "array of \"url\" | \"event_types\" | \"description\""
        }
        (_, "signature_scheme") => "\"v1\" (HMAC-SHA256) | \"v1a\" (ed25519)",
        ("WebhookEndpointDisabled", "reason") => "string (why)",
        (_, "previous_valid_until" | "since") => TIMESTAMP,
        (_, "name") => "PersonName (string, 1..=200 chars)",
        (_, "email" | "new_email") => "Email (string, trimmed, lower-case)",
        (_, "previous_email") => "Email or null (the address before the change)",
        (_, "link_to") => "\"NewAddress\" | \"CurrentAddress\" (who confirms: the new address, or the owner at the current one when someone else asked for an active account)",
        (_, "role") => "Role: \"Admin\" | \"Manager\" | \"Teacher\" | \"Student\" | \"Observer\"",
        (_, "user_id" | "manager_user_id") => "UserId (UUID)",
        (_, "institution_id") => "InstitutionId (UUID)",
        (_, "campus_id") => "CampusId (UUID)",
        (_, "course_id") => "CourseId (UUID)",
        (_, "student_id") => "StudentId (UUID)",
        (_, "teacher_id") => "TeacherId (UUID)",
        (_, "application_id") => "ApplicationId (UUID)",
        (_, "token_hash") => "string (hash of the e-mailed token)",
        (_, "password_hash") => "string (password hash)",
        (_, "at" | "expires_at" | "until" | "requested_at") => TIMESTAMP,
        (_, "birth_date" | "enrolled_on" | "cancelled_on") => DATE,
        (_, "consecutive_failures") => {
            "integer (failures in a row from the source, including this one; from the account before 2.0)"
        }
        (_, "source") => {
            "LoginSource or null (the client's IPv4 address, or its IPv6 /64 as `prefix/64`; null: unknown, the whole account)"
        }
        (_, "counts_until") => {
            "timestamp or null (until when the failure counts; null before 2.0: until a success or a lockout)"
        }
        (_, "age_years") => "integer (whole years)",
        (_, "capacity") => "Capacity (integer 1..=10000)",
        (_, "city") => "CityName (string, 1..=120 chars)",
        (_, "exam_name") => "ExamName (string, 1..=200 chars)",
        (_, "note") => "GradeNote (string with two decimals, \"0.00\"..=\"10.00\")",
        _ => return None,
    })
}

/// One serialized sample of every event variant, tagged with its aggregate's `TYPE`.
pub struct SampleEvent {
    pub aggregate: &'static str,
    pub event_type: String,
    pub version: String,
    pub payload: Value,
}

fn samples_of<A: Aggregate>(events: Vec<A::Event>) -> impl Iterator<Item = SampleEvent> {
    samples_of_stream(A::TYPE, events)
}

/// Samples of events recorded in streams of `aggregate` without an aggregate to
/// replay them (webhook endpoints' operator records).
fn samples_of_stream<E: DomainEvent>(
    aggregate: &'static str,
    events: Vec<E>,
) -> impl Iterator<Item = SampleEvent> {
    events.into_iter().map(move |event| SampleEvent {
        aggregate,
        event_type: event.event_type(),
        version: event.event_version(),
        // Serializing our own event types to a `Value` cannot fail: every field is a
        // string, number, bool or struct with string keys.
        payload: serde_json::to_value(&event).expect("events serialize to JSON"),
    })
}

/// Samples of every event of every aggregate, in catalog order.
pub fn sample_events() -> Vec<SampleEvent> {
    samples_of::<user::User>(user::sample_events())
        .chain(samples_of::<institution::Institution>(
            institution::sample_events(),
        ))
        .chain(samples_of::<student::Student>(student::sample_events()))
        .chain(samples_of::<teacher::Teacher>(teacher::sample_events()))
        .chain(samples_of::<application::Application>(
            application::sample_events(),
        ))
        .chain(samples_of::<course::Course>(course::sample_events()))
        .chain(samples_of::<exam_grade::ExamGrade>(
            exam_grade::sample_events(),
        ))
        .chain(samples_of_stream(
            webhook_endpoint::AGGREGATE_TYPE,
            webhook_endpoint::sample_events(),
        ))
        .chain(samples_of_stream(
            queue_control::AGGREGATE_TYPE,
            queue_control::sample_events(),
        ))
        .collect()
}

/// Whether `name` is the type of an event in the catalog (every event any aggregate
/// records). Filters use it to refuse a typo instead of matching nothing.
pub fn is_event_type(name: &str) -> bool {
    crate::event_types::ALL.contains(&name)
}

/// Every event, described. Built from the samples, so an event with a sample is always
/// listed; gaps in the tables show as [`UNDOCUMENTED`].
pub fn catalog() -> Vec<EventDescription> {
    sample_events()
        .into_iter()
        .map(|sample| {
            let meta = meta(&sample.event_type).unwrap_or(Meta {
                kind: EventKind::Business,
                produced_by: UNDOCUMENTED,
                summary: UNDOCUMENTED,
                consumers: &[UNDOCUMENTED],
            });
            let fields: Vec<String> = match &sample.payload {
                Value::Object(map) => map.keys().filter(|key| *key != "type").cloned().collect(),
                _ => Vec::new(),
            };
            let payload = fields
                .iter()
                .map(|field| {
                    let ty = field_type(&sample.event_type, field).unwrap_or(UNDOCUMENTED);
                    (field.clone(), ty)
                })
                .collect();
            let sensitive = fields
                .into_iter()
                .filter(|field| SENSITIVE_FIELDS.contains(&field.as_str()))
                .collect();
            EventDescription {
                aggregate: sample.aggregate,
                event_type: sample.event_type,
                version: sample.version,
                kind: meta.kind,
                produced_by: meta.produced_by,
                summary: meta.summary,
                payload,
                sensitive,
                // The domain vouches only for chained commands; the planned projections
                // and tasks noted beside them are replaced by the real ones when the
                // binary renders the catalog.
                consumers: meta
                    .consumers
                    .iter()
                    .filter(|c| c.starts_with("command:"))
                    .map(|c| c.to_string())
                    .collect(),
                example: sample.payload,
            }
        })
        .collect()
}

/// The domain's catalog as Markdown (consumers as the domain knows them).
pub fn render_markdown() -> String {
    render_markdown_of(&catalog())
}

/// Renders a catalog, e.g. one whose consumers were completed by the binary: the
/// content of `docs/events.md`.
pub fn render_markdown_of(catalog: &[EventDescription]) -> String {
    let mut out = String::new();
    // `write!` to a `String` cannot fail; its `Result` is ignored on purpose throughout.
    let _ = writeln!(
        out,
        "# Event catalog\n\n\
         <!-- Generated by `aula events catalog` (the domain's catalog, consumers from the projections' and processor's code). Do not edit by hand: \
         change the code, then run `aula events catalog > docs/events.md` \
         (or `AULA_BLESS=1 cargo test --test it event_catalog::`). -->\n\n\
         Every change in Aula is one of these events, appended to its aggregate's stream. \
         The stored form is a contract:\n\n\
         - Payloads are internally tagged JSON objects: `{{\"type\": \"<event type>\", ...fields}}`. \
         Event type names are unique across aggregates.\n\
         - Ids are UUID strings; timestamps RFC 3339 in UTC; dates `YYYY-MM-DD`; grade notes \
         strings with exactly two decimals (`\"7.50\"`).\n\
         - A payload change bumps the event version and adds an upcaster \
         (`aula_domain::upcasters()`), with a test that old payloads still load.\n\
         - Fields marked sensitive hold hashes of secrets and must be redacted in admin views.\n"
    );
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(
        out,
        "| Event | Aggregate | Version | Kind | Produced by | Consumers |\n\
         |---|---|---|---|---|---|"
    );
    for event in catalog {
        let _ = writeln!(
            out,
            "| [{ty}](#{anchor}) | `{aggregate}` | {version} | {kind} | `{produced_by}` | {consumers} |",
            ty = event.event_type,
            anchor = event.event_type.to_lowercase(),
            aggregate = event.aggregate,
            version = event.version,
            kind = event.kind.label(),
            produced_by = event.produced_by,
            consumers = event.consumers.join("<br>"),
        );
    }
    let mut current_aggregate = "";
    for event in catalog {
        if event.aggregate != current_aggregate {
            current_aggregate = event.aggregate;
            let _ = writeln!(out, "\n## Aggregate `{current_aggregate}`");
        }
        let _ = writeln!(out, "\n### {}\n", event.event_type);
        let _ = writeln!(out, "{}\n", event.summary);
        let _ = writeln!(
            out,
            "- Version: {}\n- Kind: {}\n- Produced by: `{}`",
            event.version,
            event.kind.label(),
            event.produced_by
        );
        let _ = writeln!(out, "- Consumers:");
        for consumer in &event.consumers {
            let _ = writeln!(out, "  - {consumer}");
        }
        if event.payload.is_empty() {
            let _ = writeln!(out, "\nPayload: no fields besides `type`.");
        } else {
            let _ = writeln!(out, "\n| Field | Type |\n|---|---|");
            for (field, ty) in &event.payload {
                let marker = if event.sensitive.contains(field) {
                    " (sensitive)"
                } else {
                    ""
                };
                let _ = writeln!(out, "| `{field}` | {ty}{marker} |");
            }
        }
        // Pretty-printing a `Value` cannot fail.
        let example = serde_json::to_string_pretty(&event.example).unwrap_or_default();
        let _ = writeln!(out, "\nExample:\n\n```json\n{example}\n```");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_and_field_is_documented() {
        for event in catalog() {
            assert_ne!(event.produced_by, UNDOCUMENTED, "{}", event.event_type);
            assert_ne!(event.summary, UNDOCUMENTED, "{}", event.event_type);
            for (field, ty) in &event.payload {
                assert_ne!(*ty, UNDOCUMENTED, "{}.{field}", event.event_type);
            }
        }
    }

    #[test]
    fn event_types_are_unique_across_aggregates() {
        // Upcasters filter on the event type alone, so names must not repeat.
        let catalog = catalog();
        let mut names: Vec<&str> = catalog.iter().map(|e| e.event_type.as_str()).collect();
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total);
    }

    #[test]
    fn sensitive_fields_are_flagged() {
        let catalog = catalog();
        let user_created = catalog
            .iter()
            .find(|e| e.event_type == "UserCreated")
            .expect("UserCreated is catalogued");
        assert_eq!(user_created.sensitive, vec!["password_hash".to_owned()]);
    }
}
