//! The projections' integration tests, on a private PostgreSQL.
//!
//! One binary for every integration test of the crate (each file used to be a
//! binary of its own, and linking them dominated the build); each file is a module.

mod common;

mod read_models;
mod rebuild;
