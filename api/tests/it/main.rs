//! The API's integration tests, over HTTP against the real server.
//!
//! One binary for every integration test of the crate (each file used to be a
//! binary of its own, and linking them dominated the build); each file is a module.

mod common;

mod authorization;
mod bulk;
mod errors;
mod graphql_http;
mod hostile;
mod log_stall;
mod metrics;
mod mutations;
mod operation_report;
mod processing;
mod read_models;
mod schema;
mod socket_keepalive;
mod standard_clients;
mod subscriptions;
mod tasks;
