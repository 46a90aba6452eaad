//! The `broker.nats` subscription's consumer: each batch of the log published to
//! JetStream, pipelined, and acknowledged before its checkpoint moves.
//!
//! [`Publisher::deliver`] runs before the subscription's batch transaction (see
//! [`aula_eventlog::Consumer::deliver`]): it sends every message of the batch without
//! waiting, then awaits the acknowledgements in order. Only when all arrived does it
//! return `Ok`, and only then does the subscription commit the checkpoint: it never
//! passes an unacknowledged event. Any failure (the broker unreachable, an
//! acknowledgement late or negative) fails the batch; the subscription retries it with
//! backoff (capped by `AULA_NATS_RETRY_MAX_MS`), and the stream deduplicates what it
//! already stored by `Nats-Msg-Id`.
//!
//! **Retry horizon.** The stream deduplicates only within its duplicate window. So the
//! publisher remembers when it first published each event not yet checkpointed; before
//! it publishes a batch again in which some event is older than the horizon (or the
//! first batch after start, when it cannot know), it reads the stream's last messages
//! (as many as the batch holds: our subjects are written by one active publisher, so
//! whatever of the batch was stored is among them) and leaves out the events found there.
//!
//! **Order.** Each message names the one it must follow (`Nats-Expected-Last-Msg-Id`:
//! the event before it in the log, or the stream's last message), and the stream
//! refuses a message whose predecessor is not its last one. Without it, a broker
//! outage could reorder the stream: messages of a failed attempt that the client still
//! held were sent when it reconnected, after messages lost in the old connection, and
//! the retry stored those later, behind them (the scale-out test caught it under load).
//! A duplicate is recognised before the check (a retry of a stored message is
//! acknowledged as a duplicate); a refusal makes the publisher read where the stream
//! ends before it tries again.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage};
use aula_eventlog::subscription::{self, BoxError, SubscriptionHandle};
use aula_eventlog::{Consumer, LogPosition, RecordedEvent, SubscriptionOptions, Wakeups};
use sqlx::postgres::PgConnectOptions;

use crate::config::BrokerConfig;
use crate::stream::ensure_stream;

/// The subscription's name (its checkpoint in `subscription_checkpoints`).
pub const SUBSCRIPTION: &str = "broker.nats";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("AULA_NATS_URL is not set")]
    NotConfigured,
    #[error("invalid broker settings: {0}")]
    Invalid(String),
    #[error("the JetStream stream {stream} keeps duplicates for {window} s, less than the publisher's retry horizon of {horizon} s: a retry after the window would be stored twice (raise the stream's duplicate_window or lower AULA_NATS_RETRY_HORIZON_SECONDS)")]
    WindowTooShort {
        stream: String,
        window: u64,
        horizon: u64,
    },
    #[error("NATS: {0}")]
    Broker(#[source] BoxError),
}

/// The subject of `event`: `<prefix>.<aggregate>.<event type>`, each token limited to
/// characters NATS allows in a token (others become `_`).
pub fn subject(prefix: &str, event: &RecordedEvent) -> String {
    fn token(text: &str) -> String {
        let token: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if token.is_empty() {
            "_".into()
        } else {
            token
        }
    }
    format!(
        "{prefix}.{}.{}",
        token(&event.aggregate_type),
        token(&event.event_type)
    )
}

/// The consumer of the `broker.nats` subscription.
pub struct Publisher {
    js: jetstream::Context,
    config: BrokerConfig,
    /// The stream was found (or created) and checked since the last failure.
    stream_checked: bool,
    /// Before the first batch of this process is published, the stream's tail is read:
    /// a process that died may have published it already, however long ago.
    tail_check_pending: bool,
    /// When each event not yet checkpointed was first published by this process.
    first_published: BTreeMap<LogPosition, Instant>,
    /// The id of the stream's last message as far as this process knows, which the
    /// batch's first message must follow: `Some(None)` for an empty stream, `None` when
    /// not known (at start, after a refusal): then it is read from the stream.
    last_stored: Option<Option<String>>,
}

impl Publisher {
    pub fn new(js: jetstream::Context, config: BrokerConfig) -> Publisher {
        Publisher {
            js,
            config,
            stream_checked: false,
            tail_check_pending: true,
            first_published: BTreeMap::new(),
            last_stored: None,
        }
    }

    /// The stream and its state (message count, first and last sequence).
    async fn stream_state(
        &self,
    ) -> Result<(jetstream::stream::Stream, jetstream::stream::State), BrokerError> {
        let broker = |e: Box<dyn std::error::Error + Send + Sync>| BrokerError::Broker(e);
        let mut stream = self
            .js
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| broker(Box::new(e)))?;
        let state = stream
            .info()
            .await
            .map_err(|e| broker(Box::new(e)))?
            .state
            .clone();
        Ok((stream, state))
    }

    /// The id of the stream's last message (`None` for an empty stream).
    async fn stream_last_id(&self) -> Result<Option<String>, BrokerError> {
        let (stream, state) = self.stream_state().await?;
        if state.messages == 0 {
            return Ok(None);
        }
        let message = stream
            .get_raw_message(state.last_sequence)
            .await
            .map_err(|e| BrokerError::Broker(Box::new(e)))?;
        Ok(message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|id| id.as_str().to_owned()))
    }

    /// The ids among the stream's last `count` messages.
    async fn stored_ids(&self, count: usize) -> Result<HashSet<String>, BrokerError> {
        let (stream, state) = self.stream_state().await?;
        let mut ids = HashSet::with_capacity(count);
        if state.messages == 0 {
            return Ok(ids);
        }
        let first = state
            .first_sequence
            .max(state.last_sequence.saturating_sub(count as u64 - 1).max(1));
        for sequence in first..=state.last_sequence {
            match stream.get_raw_message(sequence).await {
                Ok(message) => {
                    if let Some(id) = message.headers.get(async_nats::header::NATS_MESSAGE_ID) {
                        ids.insert(id.as_str().to_owned());
                    }
                }
                // Removed meanwhile (limits, or a deleted message): nothing of ours to find.
                Err(error)
                    if matches!(
                        error.kind(),
                        async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                    ) => {}
                Err(error) => return Err(BrokerError::Broker(Box::new(error))),
            }
        }
        Ok(ids)
    }

    async fn publish(&mut self, events: &[RecordedEvent]) -> Result<(), BrokerError> {
        if !self.stream_checked {
            ensure_stream(&self.js, &self.config).await?;
            self.stream_checked = true;
        }
        // Events before this batch are checkpointed: forget them.
        let first = events[0].position;
        self.first_published = self.first_published.split_off(&first);
        let stale = self.tail_check_pending
            || events.iter().any(|e| {
                self.first_published
                    .get(&e.position)
                    .is_some_and(|at| at.elapsed() >= self.config.retry_horizon)
            });
        let already_stored = if stale {
            let ids = self.stored_ids(events.len()).await?;
            self.tail_check_pending = false;
            if !ids.is_empty() {
                tracing::info!(
                    found = ids.len(),
                    "events of this batch are already in the stream; publishing the rest"
                );
            }
            ids
        } else {
            HashSet::new()
        };
        if self.last_stored.is_none() {
            self.last_stored = Some(self.stream_last_id().await?);
        }
        // The message each one must follow: the stream's last, then each other in turn.
        let mut previous: Option<String> = self.last_stored.clone().flatten();
        let now = Instant::now();
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(events.len());
        for event in events {
            if stale {
                // Just looked up: what is not in the stream was never stored.
                self.first_published.insert(event.position, now);
            } else {
                self.first_published.entry(event.position).or_insert(now);
            }
            let id = event.event_id.to_string();
            if already_stored.contains(&id) {
                previous = Some(id);
                continue;
            }
            let body = aula_processor::public_form::public_form_bytes(event);
            let mut message = PublishMessage::build().payload(body.into()).message_id(&id);
            if let Some(previous) = &previous {
                message = message.expected_last_message_id(previous);
            }
            previous = Some(id);
            let ack = self
                .js
                .send_publish(subject(&self.config.subject_prefix, event), message)
                .await
                .map_err(|e| BrokerError::Broker(Box::new(e)))?;
            acks.push(ack);
        }
        let mut duplicates = 0usize;
        for ack in acks {
            match ack.await {
                Ok(ack) => duplicates += usize::from(ack.duplicate),
                Err(error) => {
                    if error.kind() == PublishErrorKind::WrongLastMessageId {
                        // The stream does not end where this process thought (it was
                        // recreated, or another process published): look again.
                        self.last_stored = None;
                        self.tail_check_pending = true;
                    }
                    return Err(BrokerError::Broker(Box::new(error)));
                }
            }
        }
        self.last_stored = Some(previous);
        if duplicates > 0 {
            tracing::info!(
                duplicates,
                "the stream already held some events of a republished batch (deduplicated)"
            );
        }
        Ok(())
    }
}

/// Everything happens in `deliver`; the default `handle` writes nothing, and the
/// subscription commits the checkpoint.
#[async_trait::async_trait]
impl Consumer for Publisher {
    /// The acknowledgements of a batch take longer than reading the next one: overlap them.
    fn reads_ahead(&self) -> bool {
        true
    }

    async fn deliver(&mut self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        if events.is_empty() {
            return Ok(());
        }
        match self.publish(events).await {
            Ok(()) => Ok(()),
            Err(error) => {
                // Look at the stream again before the retry (it may have been deleted).
                self.stream_checked = false;
                Err(Box::new(error))
            }
        }
    }
}

/// Connects to NATS, checks (or creates) the stream and starts the `broker.nats`
/// subscription. Refuses to start on invalid settings or a stream whose duplicate
/// window is too short; when the broker does not answer within a few seconds it starts
/// anyway and keeps trying (the subscription reports the failure and backs off).
pub async fn start(
    config: BrokerConfig,
    connect: PgConnectOptions,
    wakeups: Wakeups,
    shutdown: aula_eventlog::shutdown::Shutdown,
) -> Result<SubscriptionHandle, BrokerError> {
    config.validate().map_err(BrokerError::Invalid)?;
    let url = config.url.clone().ok_or(BrokerError::NotConfigured)?;
    let client = async_nats::ConnectOptions::new()
        .name("aula broker")
        .connection_timeout(Duration::from_secs(5))
        // Started while the broker is down: connect in the background, keep reconnecting.
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts.min(20) as u64).max(100))
        })
        .connect(url.as_str())
        .await
        .map_err(|e| BrokerError::Broker(Box::new(e)))?;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(config.ack_timeout)
        .ack_timeout(config.ack_timeout)
        .max_ack_inflight(usize::try_from(config.batch_size).unwrap_or(2000).max(1))
        .build(client);
    match tokio::time::timeout(Duration::from_secs(5), ensure_stream(&js, &config)).await {
        Ok(Ok(stream)) => {
            tracing::info!(stream = %stream.cached_info().config.name, "publishing events to NATS JetStream")
        }
        Ok(Err(refused @ BrokerError::WindowTooShort { .. })) => return Err(refused),
        Ok(Err(error)) => {
            tracing::warn!(%error, "the NATS stream could not be checked yet; publishing will retry")
        }
        Err(_) => tracing::warn!("NATS did not answer within 5 s; publishing will retry"),
    }
    let mut options = SubscriptionOptions::new(SUBSCRIPTION);
    options.batch_size = config.batch_size;
    // A batch is published within the acknowledgement window above: it does not grow.
    options.max_batch_size = Some(config.batch_size);
    options.max_backoff = config.retry_max;
    Ok(subscription::spawn(
        connect,
        options,
        Publisher::new(js, config),
        wakeups,
        shutdown,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_aggregate_and_event_type_in_valid_tokens() {
        let event = RecordedEvent {
            position: LogPosition::START,
            event_id: uuid::Uuid::nil(),
            aggregate_type: "exam_grade".into(),
            aggregate_id: "x".into(),
            sequence: 1,
            event_type: "Odd.Type *>".into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({}).into(),
            metadata: serde_json::json!({}).into(),
            recorded_at: Default::default(),
        };
        assert_eq!(
            subject("aula.events", &event),
            "aula.events.exam_grade.Odd_Type___"
        );
    }
}
