//! Endpoints: secret rotation, Ed25519 signatures, internal addresses refused, and
//! recovering what an endpoint missed.

use super::*;

/// Once the rotation window of endpoint `id` is over (its previous secret expired),
/// creates campus `campus`: `receiver`'s second delivery is verified only by the holder
/// of the new secret (its second).
async fn after_the_rotation_window(
    pool: &PgPool,
    id: Uuid,
    receiver: &Receiver,
    institution: Uuid,
    campus_name: &str,
) {
    let expires = endpoints::get(pool, id)
        .await
        .unwrap()
        .unwrap()
        .previous_secret_expires_at
        .unwrap();
    let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    campus(pool, institution, campus_name).await;
    let after = receiver.wait_for(2).await;
    assert_eq!(after[1]["verified"], json!([false, true]), "{}", after[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn during_a_rotation_both_secrets_sign_and_after_it_only_the_new_one() {
    let db = TestDatabase::new().await;
    let (running, config) = start_locally(&db).await;
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
    point_at(&db.pool, &config, id, receiver.url()).await;
    let institution = institution(&db.pool).await;
    campus(&db.pool, institution, "Madalena").await;
    let during = receiver.wait_for(1).await;
    assert_eq!(during[0]["verified"], json!([true, true]), "{}", during[0]);
    assert_eq!(
        during[0]["signature"].as_str().unwrap().split(' ').count(),
        2
    );
    after_the_rotation_window(&db.pool, id, &receiver, institution, "Torre").await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn v1a_endpoints_sign_with_ed25519_that_an_independent_implementation_verifies() {
    let db = TestDatabase::new().await;
    let (running, config) = start_locally(&db).await;
    let (endpoint, key) = endpoints::create(
        &db.pool,
        &config,
        NewEndpoint {
            event_types: Some(vec!["CampusCreated".into()]),
            signature_scheme: SignatureScheme::V1a,
            ..NewEndpoint::by_system("http://127.0.0.1:9/", "v1a receiver")
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
    after_the_rotation_window(&db.pool, endpoint.id, &receiver, institution, "Jordão").await;
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
            NewEndpoint::by_system(url, ""),
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
    let (running, config) = start_locally(&db).await;
    let institution = institution(&db.pool).await;
    let since = chrono::Utc::now();
    let missed = [
        campus(&db.pool, institution, "Iputinga").await,
        campus(&db.pool, institution, "Caxangá").await,
    ];
    fanned_out(&db.pool, missed[1]).await;
    // Registered after those events: the fan-out does not send them.
    let (id, receiver) = receiving_endpoint(&db.pool, &config, "ok", None).await;
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
