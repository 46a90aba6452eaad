//! The domain's integration tests: aggregates, events and their serialized shape.
//!
//! One binary for every integration test of the crate (each file used to be a
//! binary of its own, and linking them dominated the build); each file is a module.

mod application;
mod catalog;
mod course;
mod exam_grade;
mod fixtures;
mod institution;
mod people;
mod rejections;
mod serde_roundtrip;
mod upcasting;
mod user;
