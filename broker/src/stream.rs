//! The JetStream stream the events go to: created when missing, checked when present.

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};

use crate::config::{BrokerConfig, Retention};
use crate::publisher::BrokerError;

/// The stream's configuration as we create it.
pub fn stream_config(config: &BrokerConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        retention: match config.retention {
            Retention::Limits => stream::RetentionPolicy::Limits,
            Retention::Interest => stream::RetentionPolicy::Interest,
            Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
        },
        max_age: config.max_age,
        duplicate_window: config.duplicate_window,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..stream::Config::default()
    }
}

/// The stream, created from [`stream_config`] when missing. An existing stream whose
/// duplicate window is shorter than `config.retry_horizon` is refused
/// ([`BrokerError::WindowTooShort`]): an event published again after the window would
/// be stored twice.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &BrokerConfig,
) -> Result<stream::Stream, BrokerError> {
    match js.get_stream(&config.stream).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| BrokerError::Broker(Box::new(e)))?;
            let window = info.config.duplicate_window;
            if window < config.retry_horizon {
                return Err(BrokerError::WindowTooShort {
                    stream: config.stream.clone(),
                    window: window.as_secs(),
                    horizon: config.retry_horizon.as_secs(),
                });
            }
            Ok(existing)
        }
        Err(error)
            if matches!(error.kind(), GetStreamErrorKind::JetStream(ref e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            tracing::info!(stream = %config.stream, subjects = %format!("{}.>", config.subject_prefix), "creating the JetStream stream");
            js.create_stream(stream_config(config))
                .await
                .map_err(|e| BrokerError::Broker(Box::new(e)))
        }
        Err(error) => Err(BrokerError::Broker(Box::new(error))),
    }
}
