//! Operator records of webhook endpoints: who registered, changed, enabled, disabled,
//! rotated, deleted an endpoint, resent one of its messages or recovered it.
//!
//! Endpoints are not an aggregate: their state lives in the processor's
//! `webhook_endpoints` table, which decides nothing an event would have to replay. These
//! events are the record of each operation, appended in the same transaction as the
//! change, to a stream per endpoint ([`AGGREGATE_TYPE`], id = the endpoint's id), so
//! that the audit log (built from events alone, rebuildable) holds them with their
//! actor, institution and request id like every other operator action.
//!
//! **Never** a secret, a signing key or the endpoint's full URL (receivers often put a
//! token in its path or query): the URL's origin (`scheme://host[:port]`) only.
//! Webhook endpoints are not sent these events (the configuration of the delivery is
//! not delivered through itself).

use crate::event_types::impl_domain_event;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `aggregate_type` of endpoint streams.
pub const AGGREGATE_TYPE: &str = "webhook_endpoint";

/// One operation on a webhook endpoint (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WebhookEndpointEvent {
    /// Registered (by an operator or a manager).
    WebhookEndpointCreated {
        endpoint_id: Uuid,
        /// `scheme://host[:port]` of the URL.
        url_origin: String,
        /// `None`: every event type.
        event_types: Option<Vec<String>>,
        /// `v1` or `v1a`.
        signature_scheme: String,
    },
    /// URL, event types or description changed; `changed` names the fields.
    WebhookEndpointUpdated {
        endpoint_id: Uuid,
        changed: Vec<String>,
        /// The new URL's origin when the URL changed.
        url_origin: Option<String>,
    },
    /// Enabled again by an operator (its failure run cleared).
    WebhookEndpointEnabled { endpoint_id: Uuid },
    /// Disabled: by an operator, or by delivery (410 Gone, failing too long).
    WebhookEndpointDisabled { endpoint_id: Uuid, reason: String },
    /// A new signing secret or key was issued; the previous one signs too until
    /// `previous_valid_until`.
    WebhookEndpointSecretRotated {
        endpoint_id: Uuid,
        signature_scheme: String,
        previous_valid_until: DateTime<Utc>,
    },
    /// Deleted: no new messages, pending ones not sent.
    WebhookEndpointDeleted { endpoint_id: Uuid },
    /// One message sent again by hand.
    WebhookMessageResent { endpoint_id: Uuid, message_id: Uuid },
    /// "Recover since T" started.
    WebhookRecoveryStarted {
        endpoint_id: Uuid,
        recovery_id: Uuid,
        since: DateTime<Utc>,
    },
    /// A recovery was cancelled.
    WebhookRecoveryCancelled {
        endpoint_id: Uuid,
        recovery_id: Uuid,
    },
}

impl_domain_event!(WebhookEndpointEvent {
    WebhookEndpointCreated => WEBHOOK_ENDPOINT_CREATED,
    WebhookEndpointUpdated => WEBHOOK_ENDPOINT_UPDATED,
    WebhookEndpointEnabled => WEBHOOK_ENDPOINT_ENABLED,
    WebhookEndpointDisabled => WEBHOOK_ENDPOINT_DISABLED,
    WebhookEndpointSecretRotated => WEBHOOK_ENDPOINT_SECRET_ROTATED,
    WebhookEndpointDeleted => WEBHOOK_ENDPOINT_DELETED,
    WebhookMessageResent => WEBHOOK_MESSAGE_RESENT,
    WebhookRecoveryStarted => WEBHOOK_RECOVERY_STARTED,
    WebhookRecoveryCancelled => WEBHOOK_RECOVERY_CANCELLED,
});

/// One sample of every event, for the catalog.
pub fn sample_events() -> Vec<WebhookEndpointEvent> {
    let endpoint_id = Uuid::from_u128(0x0e0d_0000_0000_4000_8000_0000_0000_00a1);
    let at = DateTime::parse_from_rfc3339("2026-12-06T18:00:00Z")
        .expect("valid literal")
        .with_timezone(&Utc);
    let recovery_id = Uuid::from_u128(0x0e0d_0000_0000_4000_8000_0000_0000_00b2);
    vec![
        WebhookEndpointEvent::WebhookEndpointCreated {
            endpoint_id,
            url_origin: "https://hooks.example.org".into(),
            event_types: Some(vec!["StudentCreated".into()]),
            signature_scheme: "v1a".into(),
        },
        WebhookEndpointEvent::WebhookEndpointUpdated {
            endpoint_id,
            changed: vec!["url".into(), "description".into()],
            url_origin: Some("https://hooks.example.org:8443".into()),
        },
        WebhookEndpointEvent::WebhookEndpointEnabled { endpoint_id },
        WebhookEndpointEvent::WebhookEndpointDisabled {
            endpoint_id,
            reason: "disabled by an operator".into(),
        },
        WebhookEndpointEvent::WebhookEndpointSecretRotated {
            endpoint_id,
            signature_scheme: "v1".into(),
            previous_valid_until: at,
        },
        WebhookEndpointEvent::WebhookEndpointDeleted { endpoint_id },
        WebhookEndpointEvent::WebhookMessageResent {
            endpoint_id,
            message_id: Uuid::from_u128(0x0e0d_0000_0000_4000_8000_0000_0000_00c3),
        },
        WebhookEndpointEvent::WebhookRecoveryStarted {
            endpoint_id,
            recovery_id,
            since: at,
        },
        WebhookEndpointEvent::WebhookRecoveryCancelled {
            endpoint_id,
            recovery_id,
        },
    ]
}
