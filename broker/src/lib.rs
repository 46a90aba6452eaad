//! Aula's events to NATS JetStream: the `broker.nats` subscription publishes every event
//! of the log, in commit order, as its public form
//! ([`aula_processor::public_form`]) on `<prefix>.<aggregate>.<event type>` with the
//! header `Nats-Msg-Id` = event id.
//!
//! - [`config`]: the settings (`AULA_NATS_*`).
//! - [`stream`]: the stream is created when missing; an existing one whose duplicate
//!   window is shorter than the publisher's retry horizon is refused.
//! - [`local_server`]: a private `nats-server` for the tests and the benchmark.
//! - [`publisher`]: the subscription's consumer. Publishing is pipelined (a whole batch
//!   in flight), and the batch's checkpoint commits only after every message of it was
//!   acknowledged by JetStream, *outside* the batch transaction
//!   ([`aula_eventlog::Consumer::deliver`]), so waiting on the broker never holds back
//!   the log's other readers.
//!
//! **Invariant:** the stream stores each event once, in commit order. A batch published
//! again (a lost acknowledgement, a crash before the checkpoint, a broker outage) is
//! deduplicated by the stream on `Nats-Msg-Id` within its duplicate window; an event
//! about to be published again later than the retry horizon after its first attempt is
//! first looked up in the stream's tail instead (see [`publisher`]).
//!
//! **Boundary:** the only crate that knows NATS. It reads the log through
//! `aula-eventlog`'s subscription machinery and writes nothing but its checkpoint.
#![forbid(unsafe_code)]

pub mod config;
pub mod local_server;
pub mod publisher;
pub mod stream;

pub use config::{BrokerConfig, Retention};
pub use publisher::{start, BrokerError, Publisher, SUBSCRIPTION};
