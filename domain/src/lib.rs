//! Aula's domain: aggregates, commands, events, validated values and business rules.
//!
//! **Boundary:** pure. No I/O, no clock, no randomness: time, ids and hashes arrive in
//! commands, policy values through each aggregate's `Services`. Infrastructure (event
//! store, HTTP, e-mail) lives in other crates and depends on this one, never the reverse.
//!
//! Aggregates and their `TYPE`: [`user::User`] (`user`),
//! [`institution::Institution`] (`institution`), [`student::Student`] (`student`),
//! [`teacher::Teacher`] (`teacher`), [`course::Course`] (`course`),
//! [`application::Application`] (`application`),
//! [`exam_grade::ExamGrade`] (`exam_grade`). Webhook endpoints are no aggregate: their
//! operations are recorded as [`webhook_endpoint::WebhookEndpointEvent`]s
//! (`webhook_endpoint` streams) for the audit log, and queue controls as
//! [`queue_control::QueueControlEvent`]s (`queue_control` streams).
//!
//! **Invariant:** the stored event format is a contract. Events are internally tagged JSON
//! (`{"type": "<EventType>", ...}`), event type names are unique across aggregates, and a
//! payload change bumps `event_version` and adds an upcaster to [`upcasters()`]. The names
//! are constants in [`event_types`], which other crates match on; readers of the log
//! decode stored payloads with [`decode()`].
#![forbid(unsafe_code)]

mod aggregate;
pub mod application;
pub mod catalog;
pub mod course;
pub mod errors;
pub mod event_types;
pub mod exam_grade;
pub mod institution;
pub mod queue_control;
pub mod samples;
pub mod student;
pub mod teacher;
mod upcasting;
pub mod user;
pub mod values;
pub mod webhook_endpoint;

// The crate's surface beside the aggregates' modules (each the namespace of its
// commands, events and errors) and `values`.
pub use errors::{Rejection, RejectionKind};
pub use upcasting::{decode, upcasters};
