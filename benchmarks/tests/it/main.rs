//! The benchmarks' integration tests: each benchmark function runs end to end on a
//! small scale (figures are printed, not asserted: the real runs are `aula bench ...`).
//!
//! One binary for every integration test of the crate; each file is a module.

mod lists;
mod rebuild;
mod tasks;
