//! Webhooks end to end: command → event → message (reactions) → `webhook.deliver`
//! attempt → a receiver that verifies the signature with the official Standard Webhooks
//! library (`tests/webhooks/receiver.py`, Python `standardwebhooks`), not with Aula's
//! code. One receiver behaviour per test: success, 500 then 200, 410, 429 with
//! `Retry-After`, never answering; rotation; SSRF refusals; resend, reprocessed copies
//! and "recover since T".

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use aula_domain::institution::{Institution, InstitutionCommand, InstitutionServices};
use aula_domain::values::*;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Actor, CommandBus, EventMetadata};
use aula_processor::handlers::Registry;
use aula_processor::webhooks::endpoints::{self, NewEndpoint};
use aula_processor::webhooks::signing::public_key_text;
use aula_processor::webhooks::target::TargetError;
use aula_processor::webhooks::{
    recover, SignatureScheme, Signer, WebhookConfig, WebhookError, WebhookSigningKey,
};
use common::webhook_receiver::Receiver;
use common::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

mod delivery;
mod endpoint_changes;
mod hostile_receivers;

/// Local receivers allowed, a fast schedule.
fn local_config() -> WebhookConfig {
    WebhookConfig {
        insecure_hosts: vec!["127.0.0.1".into(), "localhost".into()],
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        timeout: Duration::from_secs(5),
        retry_schedule: vec![Duration::from_millis(100); 3],
        ..WebhookConfig::default()
    }
}

async fn start_delivering(db: &TestDatabase, config: WebhookConfig) -> (Running, RecordingMailer) {
    let mailer = RecordingMailer::default();
    // Only the webhook kinds: the other tasks of these events (demo data) stay out.
    let mut registry = Registry::new();
    registry.with_webhooks(config, Some(Arc::new(mailer.clone())));
    (
        start(db, registry, fast_config("webhook-worker"), true).await,
        mailer,
    )
}

/// The processor delivering with [`local_config`], which it returns.
async fn start_locally(db: &TestDatabase) -> (Running, WebhookConfig) {
    let config = local_config();
    let (running, _) = start_delivering(db, config.clone()).await;
    (running, config)
}

async fn endpoint(
    pool: &PgPool,
    config: &WebhookConfig,
    url: &str,
    owner: Option<Uuid>,
) -> (Uuid, Signer) {
    let (endpoint, secret) = endpoints::create(
        pool,
        config,
        NewEndpoint {
            event_types: Some(vec!["CampusCreated".into()]),
            created_by_user: owner,
            ..NewEndpoint::by_system(url, "test receiver")
        },
        &operator(),
    )
    .await
    .unwrap();
    (endpoint.id, secret)
}

/// An endpoint for `CampusCreated` (of `owner`, if any) pointed at a receiver that
/// answers as `mode` says and holds the endpoint's secret.
async fn receiving_endpoint(
    pool: &PgPool,
    config: &WebhookConfig,
    mode: &str,
    owner: Option<Uuid>,
) -> (Uuid, Receiver) {
    let (id, secret) = endpoint(pool, config, "http://127.0.0.1:9/placeholder", owner).await;
    let receiver = Receiver::start(mode, &[secret.reveal()]).await;
    point_at(pool, config, id, receiver.url()).await;
    (id, receiver)
}

/// Campus `campus_name` of a new institution: the institution, the campus's event and
/// its message to endpoint `id`.
async fn new_campus_message(pool: &PgPool, id: Uuid, campus_name: &str) -> (Uuid, Uuid, Uuid) {
    let institution = institution(pool).await;
    let event = campus(pool, institution, campus_name).await;
    let (message, _, _) = message_of(pool, event, id).await;
    (institution, event, message)
}

/// The metadata of an operator's change (the audit record's).
fn operator() -> EventMetadata {
    EventMetadata::new(Actor::System, None)
}

/// An institution (its id) to add campuses to.
async fn institution(pool: &PgPool) -> Uuid {
    let id = Uuid::new_v4();
    bus(pool)
        .execute(
            &id.to_string(),
            InstitutionCommand::CreateInstitution {
                name: InstitutionName::parse("Escola Webhook").unwrap(),
                manager_user_id: UserId::from_uuid(Uuid::new_v4()),
            },
            &EventMetadata::new(Actor::System, Some(id)),
        )
        .await
        .unwrap();
    id
}

fn bus(pool: &PgPool) -> CommandBus<Institution> {
    CommandBus::with_upcasters(pool.clone(), InstitutionServices, aula_domain::upcasters())
}

/// Waits until the reactions (and so the webhook fan-out) have handled `event`.
async fn fanned_out(pool: &PgPool, event: Uuid) {
    eventually("the reactions to pass the event", || async {
        let passed: bool = sqlx::query_scalar(
            "SELECT (c.tx_id, c.global_position) >= (e.tx_id, e.global_position)
             FROM subscription_checkpoints c, events e
             WHERE c.name = 'processor.reactions' AND e.event_id = $1",
        )
        .bind(event)
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or(false);
        passed.then_some(())
    })
    .await
}

/// Appends one `CampusCreated`; returns its event id.
async fn campus(pool: &PgPool, institution: Uuid, name: &str) -> Uuid {
    let campus = Uuid::new_v4();
    bus(pool)
        .execute(
            &institution.to_string(),
            InstitutionCommand::CreateCampus {
                campus_id: CampusId::from_uuid(campus),
                name: CampusName::parse(name).unwrap(),
                city: CityName::parse("Recife").unwrap(),
            },
            &EventMetadata::new(Actor::System, Some(institution)),
        )
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT event_id FROM events WHERE event_type = 'CampusCreated' AND payload::text LIKE '%' || $1 || '%'",
    )
    .bind(campus.to_string())
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn message_of(pool: &PgPool, event: Uuid, endpoint: Uuid) -> (Uuid, String, i32) {
    eventually("the message", || async {
        sqlx::query_as("SELECT id, status, attempts FROM webhook_messages WHERE event_id = $1 AND endpoint_id = $2")
            .bind(event)
            .bind(endpoint)
            .fetch_optional(pool)
            .await
            .unwrap()
    })
    .await
}

async fn wait_status(pool: &PgPool, message: Uuid, status: &str) -> i32 {
    eventually(&format!("message {message} {status}"), || async {
        let (s, attempts): (String, i32) =
            sqlx::query_as("SELECT status, attempts FROM webhook_messages WHERE id = $1")
                .bind(message)
                .fetch_one(pool)
                .await
                .unwrap();
        (s == status).then_some(attempts)
    })
    .await
}

async fn outcomes(pool: &PgPool, message: Uuid) -> Vec<(String, Option<i32>)> {
    sqlx::query_as(
        "SELECT outcome, status_code FROM webhook_attempts WHERE message_id = $1 ORDER BY attempt",
    )
    .bind(message)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn header_id(message: Uuid) -> String {
    aula_processor::webhooks::message_header_id(message)
}

/// Points endpoint `id` at `url`.
async fn point_at(pool: &PgPool, config: &WebhookConfig, id: Uuid, url: String) {
    endpoints::update(
        pool,
        config,
        id,
        endpoints::EndpointChange {
            url: Some(url),
            ..Default::default()
        },
        &operator(),
    )
    .await
    .unwrap();
}
