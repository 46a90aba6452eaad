//! `aula bench ...`: throughput and latency figures printed by commands, not asserted by
//! tests. Run in release mode. Each run uses a fresh database (on `DATABASE_URL`'s
//! server, or a private durable server under `AULA_DATA_DIR/bench-postgres`) and drops it
//! after. The `aula` binary parses the command line and calls the functions here.
//!
//! One module per benchmark: [`append`], [`log`], [`rebuild`] (with [`floor`]),
//! [`lists`], [`tasks`], [`latency`], [`webhooks`], [`rush`], [`broker`]; [`database`]
//! holds the throwaway database every run uses, [`stats`] the shared figures and [`seed`]
//! the courses that benchmarks and tests open alike.
//!
//! **Boundary:** like tests, benchmarks seed and measure the tables of every crate
//! (ARCHITECTURE.md, "Who owns which table", exempts `benchmarks/src`); what needs a
//! crate's internals it asks through that crate's small `bench` functions
//! (`aula_processor::bench`). Nothing in the service depends on this crate.

pub mod append;
pub mod broker;
pub mod database;
pub mod floor;
pub mod latency;
pub mod lists;
pub mod log;
pub mod rebuild;
pub mod rush;
pub mod seed;
pub mod stats;
pub mod tasks;
pub mod webhooks;

use std::path::PathBuf;

pub use database::BenchDatabase;

/// Where and how a benchmark runs: what `aula`'s global flags say.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`: the server whose fresh database the run uses; unset, a private
    /// server under [`Settings::data_dir`].
    pub database_url: Option<String>,
    /// `AULA_DATA_DIR`: where the private server keeps its files.
    pub data_dir: PathBuf,
    /// `--log-format` (`text` or `json`), passed on to worker processes.
    pub log_format: &'static str,
}
