//! The API's source of "now", injected so tests can move time (token expiry, lockouts).
//! One clock serves the API and the processor: it lives in `aula-eventlog`.

pub use aula_eventlog::clock::{Clock, ManualClock, SystemClock};
