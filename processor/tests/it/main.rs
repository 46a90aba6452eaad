//! The processor's integration tests: reactions, the task queue and its workers.
//!
//! One binary for every integration test of the crate (each file used to be a
//! binary of its own, and linking them dominated the build); each file is a module.

mod common;

mod bulk;
mod caps;
mod controls;
mod crash;
mod faults;
mod processing;
mod queue;
mod queue_statements;
mod reactions;
mod reactions_batch;
mod refresh;
mod reprocess_catalog;
mod reprocess_outcomes;
mod row_versions;
mod smtp;
mod upgrade;
mod webhooks;
