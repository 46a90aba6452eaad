//! Aula's event log: the PostgreSQL event store (cqrs-es aggregates persisted with
//! postgres-es in event-store mode), the commit-ordered log reader, subscriptions with
//! exactly-once checkpoints, and the private PostgreSQL used when no `DATABASE_URL`
//! is configured.
//!
//! **Boundary:** this crate knows PostgreSQL and cqrs-es, not HTTP, GraphQL or any
//! particular aggregate. The schema itself belongs to `aula-migrations`.

pub mod clock;
pub mod copy;
pub mod db;
pub mod health;
mod lane;
pub mod listen;
pub mod local_pg;
pub mod log;
pub mod lookups;
pub mod metadata;
pub mod metrics;
pub mod shutdown;
pub mod store;
pub mod subscription;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

// The crate's surface: the names other crates use; the modules stay the namespaces of
// their finer parts (`metadata::TRACEPARENT`, `subscription::spawn`).
pub use clock::{Clock, ManualClock, SystemClock};
pub use copy::{append_copy, append_records, AppendedCopy, Record};
pub use log::{LogPosition, RecordedEvent, StoredJson};
pub use metadata::{Actor, Cause, EventMetadata};
pub use store::{Appended, CommandBus, CommandError, Committed, StoreError};
pub use subscription::{
    BoxError, Consumer, SubscriptionHandle, SubscriptionOptions, SubscriptionState, Wakeups,
};
