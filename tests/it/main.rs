//! The service's integration tests: the whole `aula` binary and `aula serve`.
//!
//! One binary for every integration test of the crate (each file used to be a
//! binary of its own, and linking them dominated the build); each file is a module.

mod support;

mod account_pages;
mod application_rush;
mod bench_tasks;
mod dashboard;
mod dashboard_insights;
mod dashboard_links;
mod dashboard_queue;
mod dashboard_reprocess;
mod database_outage;
mod enrollment_race;
mod event_catalog;
mod graphiql;
mod lifecycle;
mod private_pg_faults;
mod scale_out;
mod table_ownership;
mod telemetry;
mod telemetry_reprocess;
