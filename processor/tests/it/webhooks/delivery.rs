//! Delivery: a signed event verified by the standard library, retries with the same
//! id and body, `410 Gone`, `Retry-After`, timeouts and disabling.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_event_reaches_a_receiver_that_verifies_it_with_the_standard_library() {
    let db = TestDatabase::new().await;
    let (running, config) = start_locally(&db).await;
    let institution = institution(&db.pool).await;
    // The receiver is started with the endpoint's secret: register, then point the
    // endpoint at it.
    let (id, receiver) = receiving_endpoint(&db.pool, &config, "ok", None).await;

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

/// A processor delivering locally, endpoint `id` pointed at a receiver that answers as
/// `mode` says, and the message to it of campus `campus_name` of a new institution:
/// `(db, running, id, receiver, institution, message)`.
async fn one_message(
    mode: &str,
    campus_name: &str,
) -> (TestDatabase, Running, Uuid, Receiver, Uuid, Uuid) {
    let db = TestDatabase::new().await;
    let (running, config) = start_locally(&db).await;
    let (id, receiver) = receiving_endpoint(&db.pool, &config, mode, None).await;
    let (institution, _, message) = new_campus_message(&db.pool, id, campus_name).await;
    (db, running, id, receiver, institution, message)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempt_is_retried_with_the_same_id_and_body() {
    let (db, running, id, receiver, _, message) = one_message("fail_once", "Derby").await;
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
    let (db, running, id, receiver, institution, message) = one_message("gone", "Graças").await;
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
    let (id, _receiver) = receiving_endpoint(&db.pool, &config, "throttle", None).await;
    let (_, _, message) = new_campus_message(&db.pool, id, "Aflitos").await;
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
    let (id, receiver) = receiving_endpoint(&db.pool, &config, "hang", Some(owner)).await;
    let (_, _, message) = new_campus_message(&db.pool, id, "Casa Forte").await;
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

/// A failed attempt records itself on its endpoint's row without waiting for the
/// reactions' fan-out, which holds that row's key-share lock (the foreign key of the
/// messages it inserts) while it goes on to the task counters that the failed attempt
/// holds: with `FOR UPDATE` the two deadlocked under a crowd, and the reactions
/// crawled (found by probing the running server with 300 clients).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempt_does_not_wait_for_a_fan_out_to_its_endpoint() {
    let db = TestDatabase::new().await;
    let (running, config) = start_locally(&db).await;
    let (id, secret) = endpoint(&db.pool, &config, "http://127.0.0.1:9/placeholder", None).await;
    // The first answer, a 500, comes after 3 s: time to take the lock before it.
    let receiver = Receiver::start_with(
        json!({"behaviour": "fail_once", "delay_ms": 3000, "secrets": [secret.reveal()]}),
    )
    .await;
    point_at(&db.pool, &config, id, receiver.url()).await;
    let (_, _, message) = new_campus_message(&db.pool, id, "Leeds").await;
    // What a fan-out in progress holds on the endpoint, on a connection of its own.
    let mut fan_out = <sqlx::PgConnection as sqlx::Connection>::connect_with(&db.connect)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut fan_out).await.unwrap();
    sqlx::query("SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR KEY SHARE")
        .bind(id)
        .execute(&mut fan_out)
        .await
        .unwrap();
    let failed = tokio::time::timeout(
        Duration::from_secs(20),
        eventually("the failed attempt recorded", || async {
            let outcomes = outcomes(&db.pool, message).await;
            (!outcomes.is_empty()).then_some(outcomes)
        }),
    )
    .await
    .expect("the failed attempt waited for the fan-out's lock on its endpoint");
    assert_eq!(failed[0], ("failed".to_owned(), Some(500)));
    let endpoint = endpoints::get(&db.pool, id).await.unwrap().unwrap();
    assert!(endpoint.failing_since.is_some());
    sqlx::raw_sql("COMMIT").execute(&mut fan_out).await.unwrap();
    assert_eq!(wait_status(&db.pool, message, "delivered").await, 2);
    running.stop().await;
}
