//! Aula's GraphQL API: a mutation per domain command, authentication with signed
//! access tokens, role- and institution-based authorization, and errors with stable
//! codes. Served by axum: `POST /graphql`, GraphiQL on `GET /graphql`, subscriptions
//! on `/graphql/ws`, `GET /health`, `GET /ready` and `GET /metrics` (Prometheus).
//!
//! **Boundary:** the only crate that knows HTTP and GraphQL. It writes through
//! `aula_eventlog::CommandBus` and owns two tables, `user_emails` (migration 0003) and
//! `application_keys` (0016). Every other fact comes from its owner's query functions:
//! the log's from `aula_eventlog::lookups`, the read models' from `aula-projections`,
//! the tasks' and notifications' from `aula-processor` (see ARCHITECTURE.md, "Who owns
//! which table"), which also runs the admin operations (reprocessing, task retries);
//! `aula-projections` runs the rebuilds.
//!
//! **Invariant:** every error leaves through [`error::ApiError`] with a stable
//! `extensions.code`; internal details go to the log, never to clients. Tokens and
//! passwords are never logged.
// Two libc calls need `unsafe` (process metrics, the open-file limit); each is allowed
// where it stands, with its SAFETY note.
#![deny(unsafe_code)]

mod account_sockets;
pub mod admin;
pub mod auth;
pub mod client_address;
pub mod clock;
pub mod config;
mod dashboard;
pub mod emails;
pub mod error;
pub mod freshness;
mod graphiql;
pub mod graphql;
mod http;
mod http_span;
mod keepalive;
pub mod metrics;
mod pages;
mod process_metrics;
pub mod ratelimit;
pub mod secrets;
mod server;
mod socket_rules;
pub mod state;
mod static_files;

pub use admin::{create_admin, CreateAdminError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    login_policy_from_env, ApiConfig, ConfigError, PasswordHashing, PasswordLanes, RateLimitConfig,
    Secret, ServerLimits,
};
pub use http::router;
pub use secrets::{
    token_hash, BoxError, DropTokens, IssuedToken, RecordingTokenSink, TokenKind, TokenSink,
};
pub use server::{serve, serve_with, MAX_HEADER_BYTES};
pub use state::{AppState, ReadinessProbe};

/// The schema in SDL, as committed in `schema.graphql`.
pub fn schema_sdl() -> String {
    graphql::build(None).sdl()
}
