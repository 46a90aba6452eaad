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
            institution_id: None,
            url: url.into(),
            event_types: Some(vec!["CampusCreated".into()]),
            description: "test receiver".into(),
            created_by: "system".into(),
            created_by_user: owner,
            signature_scheme: SignatureScheme::V1,
        },
        &operator(),
    )
    .await
    .unwrap();
    (endpoint.id, secret)
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

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_event_reaches_a_receiver_that_verifies_it_with_the_standard_library() {
    let db = TestDatabase::new().await;
    let config = local_config();
    let (running, _) = start_delivering(&db, config.clone()).await;
    let institution = institution(&db.pool).await;
    // The receiver is started with the endpoint's secret: register, then point the
    // endpoint at it.
    let (id, secret) = endpoint(&db.pool, &config, "http://127.0.0.1:9/placeholder", None).await;
    let receiver = Receiver::start("ok", &[secret.reveal()]).await;
    endpoints::update(
        &db.pool,
        &config,
        id,
        endpoints::EndpointChange {
            url: Some(receiver.url()),
            ..Default::default()
        },
        &operator(),
    )
    .await
    .unwrap();

    let event = campus(&db.pool, institution, "Boa Vista").await;
    let (message, _, _) = message_of(&db.pool, event, id).await;
    assert_eq!(wait_status(&db.pool, message, "delivered").await, 1);
    let requests = receiver.wait_for(1).await;
    let request = &requests[0];
    assert_eq!(request["id"], header_id(message));
    assert_eq!(request["verified"], json!([true]), "{request}");
    let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "CampusCreated");
    assert_eq!(body["event_id"], event.to_string());
    assert_eq!(body["institution_id"], institution.to_string());
    assert_eq!(body["data"]["name"], "Boa Vista");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        outcomes(&db.pool, message).await,
        [("succeeded".to_owned(), Some(200))]
    );
    // Other event types are not this endpoint's.
    let other: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_messages WHERE event_type <> 'CampusCreated'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(other, 0);

    // Resend: the same id and body again.
    recover::resend(&db.pool, message, &operator())
        .await
        .unwrap();
    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[1]["id"], requests[0]["id"]);
    assert_eq!(requests[1]["body"], requests[0]["body"]);
    assert_eq!(requests[1]["verified"], json!([true]));

    // A reprocessed copy is a new message naming its original.
    let copy = aula_processor::reprocess_event(&db.pool, event, Actor::System)
        .await
        .unwrap();
    let (copy_message, _, _) = message_of(&db.pool, copy.event_id, id).await;
    assert_ne!(copy_message, message);
    wait_status(&db.pool, copy_message, "delivered").await;
    let requests = receiver.wait_for(3).await;
    let copied: Value = serde_json::from_str(requests[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(requests[2]["id"], header_id(copy_message));
    assert_eq!(copied["original_event_id"], event.to_string());
    assert_eq!(copied["event_id"], copy.event_id.to_string());

    // The metrics count by outcome.
    let mut text = aula_eventlog::metrics::Text::new();
    aula_processor::metrics::encode(&mut text);
    let text = text.finish();
    assert!(
        text.contains("aula_webhook_deliveries_total{outcome=\"succeeded\"}"),
        "{text}"
    );
    assert!(text.contains("aula_webhook_delivery_duration_seconds_bucket"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempt_is_retried_with_the_same_id_and_body() {
    let db = TestDatabase::new().await;
    let config = local_config();
    let (running, _) = start_delivering(&db, config.clone()).await;
    let (id, secret) = endpoint(&db.pool, &config, "http://127.0.0.1:9/", None).await;
    let receiver = Receiver::start("fail_once", &[secret.reveal()]).await;
    endpoints::update(
        &db.pool,
        &config,
        id,
        endpoints::EndpointChange {
            url: Some(receiver.url()),
            ..Default::default()
        },
        &operator(),
    )
    .await
    .unwrap();
    let institution = institution(&db.pool).await;
    let event = campus(&db.pool, institution, "Derby").await;
    let (message, _, _) = message_of(&db.pool, event, id).await;
    assert_eq!(wait_status(&db.pool, message, "delivered").await, 2);
    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[0]["status"], 500);
    assert_eq!(requests[1]["status"], 200);
    assert_eq!(requests[0]["id"], requests[1]["id"]);
    assert_eq!(requests[0]["body"], requests[1]["body"]);
    assert!(requests.iter().all(|r| r["verified"] == json!([true])));
    assert_eq!(
        outcomes(&db.pool, message).await,
        [
            ("failed".to_owned(), Some(500)),
            ("succeeded".to_owned(), Some(200))
        ]
    );
    let endpoint = endpoints::get(&db.pool, id).await.unwrap().unwrap();
    assert!(endpoint.failing_since.is_none(), "healthy again");
    assert_eq!((endpoint.attempts_24h, endpoint.succeeded_24h), (2, 1));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_disables_the_endpoint() {
    let db = TestDatabase::new().await;
    let config = local_config();
    let (running, _) = start_delivering(&db, config.clone()).await;
    let (id, secret) = endpoint(&db.pool, &config, "http://127.0.0.1:9/", None).await;
    let receiver = Receiver::start("gone", &[secret.reveal()]).await;
    endpoints::update(
        &db.pool,
        &config,
        id,
        endpoints::EndpointChange {
            url: Some(receiver.url()),
            ..Default::default()
        },
        &operator(),
    )
    .await
    .unwrap();
    let institution = institution(&db.pool).await;
    let event = campus(&db.pool, institution, "Graças").await;
    let (message, _, _) = message_of(&db.pool, event, id).await;
    assert_eq!(
        wait_status(&db.pool, message, "failed").await,
        1,
        "no retry after 410"
    );
    let endpoint = endpoints::get(&db.pool, id).await.unwrap().unwrap();
    assert!(!endpoint.enabled);
    assert_eq!(
        endpoint.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );
    // A disabled endpoint gets no new messages.
    let later = campus(&db.pool, institution, "Espinheiro").await;
    fanned_out(&db.pool, later).await;
    let messages: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_messages WHERE event_id = $1")
            .bind(later)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(messages, 0);
    assert_eq!(receiver.requests().len(), 1);
    // Disabled by delivery: recorded for the audit log, by the system, caused by the task.
    let (actor, causation, reason): (String, String, String) = sqlx::query_as(
        "SELECT metadata->>'actor', metadata->>'causation_id', payload->>'reason' FROM events
         WHERE aggregate_type = 'webhook_endpoint' AND aggregate_id = $1
           AND event_type = 'WebhookEndpointDisabled'",
    )
    .bind(id.to_string())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(actor, "system");
    assert!(causation.starts_with("task:"), "{causation}");
    assert_eq!(reason, "the endpoint answered 410 Gone");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured_on_429() {
    let db = TestDatabase::new().await;
    // The schedule's next step is 10 minutes: only `Retry-After: 1` can bring the second
    // attempt within the test.
    let config = WebhookConfig {
        retry_schedule: vec![Duration::from_secs(600); 3],
        ..local_config()
    };
    let (running, _) = start_delivering(&db, config.clone()).await;
    let (id, secret) = endpoint(&db.pool, &config, "http://127.0.0.1:9/", None).await;
    let receiver = Receiver::start("throttle", &[secret.reveal()]).await;
    endpoints::update(
        &db.pool,
        &config,
        id,
        endpoints::EndpointChange {
            url: Some(receiver.url()),
            ..Default::default()
        },
        &operator(),
    )
    .await
    .unwrap();
    let institution = institution(&db.pool).await;
    let event = campus(&db.pool, institution, "Aflitos").await;
    let (message, _, _) = message_of(&db.pool, event, id).await;
    assert_eq!(wait_status(&db.pool, message, "delivered").await, 2);
    assert_eq!(
        outcomes(&db.pool, message).await,
        [
            ("failed".to_owned(), Some(429)),
            ("succeeded".to_owned(), Some(200))
        ]
    );
    let gap: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(started_at) - min(started_at))::float8 FROM webhook_attempts WHERE message_id = $1",
    )
    .bind(message)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(gap >= 0.9, "the receiver asked for a second: {gap}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_answers_times_out_and_an_endpoint_failing_too_long_is_disabled() {
    let db = TestDatabase::new().await;
    let config = WebhookConfig {
        timeout: Duration::from_millis(500),
        retry_schedule: vec![Duration::from_millis(100); 2],
        // Failing for longer than nothing: disabled at its second failure.
        disable_after: Duration::ZERO,
        ..local_config()
    };
    let (running, mailer) = start_delivering(&db, config.clone()).await;
    let owner = Uuid::new_v4();
    sqlx::query("INSERT INTO user_emails (email, user_id) VALUES ('owner@example.org', $1)")
        .bind(owner)
        .execute(&db.pool)
        .await
        .unwrap();
    let (id, secret) = endpoint(&db.pool, &config, "http://127.0.0.1:9/", Some(owner)).await;
    let receiver = Receiver::start("hang", &[secret.reveal()]).await;
    endpoints::update(
        &db.pool,
        &config,
        id,
        endpoints::EndpointChange {
            url: Some(receiver.url()),
            ..Default::default()
        },
        &operator(),
    )
    .await
    .unwrap();
    let institution = institution(&db.pool).await;
    let event = campus(&db.pool, institution, "Casa Forte").await;
    let (message, _, _) = message_of(&db.pool, event, id).await;
    wait_status(&db.pool, message, "failed").await;
    let recorded = outcomes(&db.pool, message).await;
    assert!(recorded.len() >= 2);
    assert!(
        recorded
            .iter()
            .all(|(outcome, code)| outcome == "timeout" && code.is_none()),
        "{recorded:?}"
    );
    let endpoint = endpoints::get(&db.pool, id).await.unwrap().unwrap();
    assert!(!endpoint.enabled);
    assert!(endpoint
        .disabled_reason
        .unwrap()
        .starts_with("failing for more than"));
    let mails = eventually("the owner's e-mail", || async {
        let mails = mailer.to("owner@example.org");
        (!mails.is_empty()).then_some(mails)
    })
    .await;
    assert_eq!(mails.len(), 1);
    assert!(mails[0].text.contains(&receiver.url()));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn during_a_rotation_both_secrets_sign_and_after_it_only_the_new_one() {
    let db = TestDatabase::new().await;
    let config = local_config();
    let (running, _) = start_delivering(&db, config.clone()).await;
    let (id, old) = endpoint(&db.pool, &config, "http://127.0.0.1:9/", None).await;
    let (_, new) = endpoints::rotate(
        &db.pool,
        &config,
        id,
        Duration::from_secs(3),
        None,
        &operator(),
    )
    .await
    .unwrap();
    // One receiver, each secret checked alone: [holder of the old, holder of the new].
    let receiver = Receiver::start("ok", &[old.reveal(), new.reveal()]).await;
    endpoints::update(
        &db.pool,
        &config,
        id,
        endpoints::EndpointChange {
            url: Some(receiver.url()),
            ..Default::default()
        },
        &operator(),
    )
    .await
    .unwrap();
    let institution = institution(&db.pool).await;
    campus(&db.pool, institution, "Madalena").await;
    let during = receiver.wait_for(1).await;
    assert_eq!(during[0]["verified"], json!([true, true]), "{}", during[0]);
    assert_eq!(
        during[0]["signature"].as_str().unwrap().split(' ').count(),
        2
    );
    let expires = endpoints::get(&db.pool, id)
        .await
        .unwrap()
        .unwrap()
        .previous_secret_expires_at
        .unwrap();
    let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    campus(&db.pool, institution, "Torre").await;
    let after = receiver.wait_for(2).await;
    assert_eq!(after[1]["verified"], json!([false, true]), "{}", after[1]);
    running.stop().await;
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

#[tokio::test(flavor = "multi_thread")]
async fn v1a_endpoints_sign_with_ed25519_that_an_independent_implementation_verifies() {
    let db = TestDatabase::new().await;
    let config = local_config();
    let (running, _) = start_delivering(&db, config.clone()).await;
    let (endpoint, key) = endpoints::create(
        &db.pool,
        &config,
        NewEndpoint {
            institution_id: None,
            url: "http://127.0.0.1:9/".into(),
            event_types: Some(vec!["CampusCreated".into()]),
            description: "v1a receiver".into(),
            created_by: "system".into(),
            created_by_user: None,
            signature_scheme: SignatureScheme::V1a,
        },
        &operator(),
    )
    .await
    .unwrap();
    // What the owner is given, and what every read shows: the public key only.
    assert_eq!(endpoint.signature_scheme, "v1a");
    let public = public_key_text(endpoint.public_key.as_deref().unwrap());
    assert!(public.starts_with("whpk_"));
    assert_eq!(key.shown_to_owner(), public);
    // [the endpoint's public key, a stranger's]: only the first may verify.
    let stranger = WebhookSigningKey::generate().public_key_text();
    let receiver = Receiver::start("ok", &[public.clone(), stranger]).await;
    point_at(&db.pool, &config, endpoint.id, receiver.url()).await;
    let institution = institution(&db.pool).await;
    campus(&db.pool, institution, "Afogados").await;
    let first = receiver.wait_for(1).await;
    assert_eq!(first[0]["verified"], json!([true, false]), "{}", first[0]);
    let signature = first[0]["signature"].as_str().unwrap();
    assert!(
        signature.starts_with("v1a,") && !signature.contains(' '),
        "{signature}"
    );

    // Rotation to `v1` keeps the `v1a` key signing during the window: a receiver with
    // only the public key verifies during it, one with only the new secret after it.
    let (_, secret) = endpoints::rotate(
        &db.pool,
        &config,
        endpoint.id,
        Duration::from_secs(3),
        Some(SignatureScheme::V1),
        &operator(),
    )
    .await
    .unwrap();
    assert!(secret.shown_to_owner().starts_with("whsec_"));
    let receiver = Receiver::start("ok", &[public, secret.reveal()]).await;
    point_at(&db.pool, &config, endpoint.id, receiver.url()).await;
    campus(&db.pool, institution, "Imbiribeira").await;
    let during = receiver.wait_for(1).await;
    assert_eq!(during[0]["verified"], json!([true, true]), "{}", during[0]);
    let entries: Vec<&str> = during[0]["signature"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    assert!(
        entries.len() == 2 && entries[0].starts_with("v1,") && entries[1].starts_with("v1a,"),
        "{entries:?}"
    );
    let expires = endpoints::get(&db.pool, endpoint.id)
        .await
        .unwrap()
        .unwrap()
        .previous_secret_expires_at
        .unwrap();
    let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    campus(&db.pool, institution, "Jordão").await;
    let after = receiver.wait_for(2).await;
    assert_eq!(after[1]["verified"], json!([false, true]), "{}", after[1]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_addresses_are_refused_at_registration_and_at_delivery() {
    let db = TestDatabase::new().await;
    let strict = WebhookConfig::default();
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fe80::1]/hook",
        "https://localhost/hook",
    ] {
        let refused = endpoints::create(
            &db.pool,
            &strict,
            NewEndpoint {
                institution_id: None,
                url: url.into(),
                event_types: None,
                description: String::new(),
                created_by: "system".into(),
                created_by_user: None,
                signature_scheme: SignatureScheme::V1,
            },
            &operator(),
        )
        .await;
        assert!(
            matches!(refused, Err(WebhookError::Url(_))),
            "{url}: {refused:?}"
        );
    }
    // Registered while loopback was allowed; the workers no longer allow it (a setting
    // or a DNS answer changed): every delivery checks again, and no request is made.
    let receiver = Receiver::start("ok", &[]).await;
    let (id, _) = endpoint(
        &db.pool,
        &local_config(),
        &receiver.url().replace("127.0.0.1", "localhost"),
        None,
    )
    .await;
    let workers = WebhookConfig {
        insecure_hosts: vec!["localhost".into()],
        retry_schedule: vec![],
        ..WebhookConfig::default()
    };
    let (running, _) = start_delivering(&db, workers).await;
    let institution = institution(&db.pool).await;
    let event = campus(&db.pool, institution, "Pina").await;
    let (message, _, _) = message_of(&db.pool, event, id).await;
    wait_status(&db.pool, message, "failed").await;
    assert_eq!(
        outcomes(&db.pool, message).await,
        [("refused".to_owned(), None)]
    );
    let error: String =
        sqlx::query_scalar("SELECT error FROM webhook_attempts WHERE message_id = $1")
            .bind(message)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(error.contains("may not reach"), "{error}");
    assert!(receiver.requests().is_empty());
    assert!(matches!(
        aula_processor::webhooks::target::parse(&strict, "http://localhost/"),
        Err(TargetError::NotHttps)
    ));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_since_sends_what_an_endpoint_missed() {
    let db = TestDatabase::new().await;
    let config = local_config();
    let (running, _) = start_delivering(&db, config.clone()).await;
    let institution = institution(&db.pool).await;
    let since = chrono::Utc::now();
    let missed = [
        campus(&db.pool, institution, "Iputinga").await,
        campus(&db.pool, institution, "Caxangá").await,
    ];
    fanned_out(&db.pool, missed[1]).await;
    // Registered after those events: the fan-out does not send them.
    let (id, secret) = endpoint(&db.pool, &config, "http://127.0.0.1:9/", None).await;
    let receiver = Receiver::start("ok", &[secret.reveal()]).await;
    endpoints::update(
        &db.pool,
        &config,
        id,
        endpoints::EndpointChange {
            url: Some(receiver.url()),
            ..Default::default()
        },
        &operator(),
    )
    .await
    .unwrap();
    let job = recover::start(&db.pool, id, since, "user:test", &operator())
        .await
        .unwrap();
    assert_eq!(job.status, "running");
    let requests = receiver.wait_for(2).await;
    let mut got: Vec<String> = requests
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = missed.iter().map(Uuid::to_string).collect();
    want.sort();
    assert_eq!(got, want);
    let job = eventually("the recovery to finish", || async {
        let job = recover::job(&db.pool, job.id).await.unwrap().unwrap();
        (job.status == "done").then_some(job)
    })
    .await;
    assert!(job.done >= 2);
    // A cancelled job stops.
    let second = recover::start(&db.pool, id, since, "user:test", &operator())
        .await
        .unwrap();
    recover::cancel(&db.pool, second.id, &operator())
        .await
        .unwrap();
    assert_ne!(
        recover::job(&db.pool, second.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "running"
    );
    running.stop().await;
}
