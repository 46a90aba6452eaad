//! The event log's integration tests: the private PostgreSQL and the log reader.
//!
//! One binary for every integration test of the crate (each file used to be a
//! binary of its own, and linking them dominated the build); each file is a module.

mod checkpoints;
mod copy_read;
mod event_ids;
mod failing_consumers;
mod local_pg;
mod log_reader;
mod outage;
mod unavailable;
