//! What mutations answer with, and what the audit log keeps of webhook endpoints.

use super::*;

/// Each command mutation returns its own payload with the object a client shows next:
/// read-model objects are current with `waitForProjections: true`, aggregate ones always.
#[tokio::test(flavor = "multi_thread")]
async fn command_payloads_carry_the_changed_object() {
    let (server, _projections) = server_with_projections().await;
    let a = server.institution("Escola Payload").await;
    let m = Some(a.manager.token.as_str());
    let run = |mutation: &'static str, selection: &'static str, vars: Value| {
        let server = &server;
        let input = input_type(mutation);
        async move {
            let r = server
                .gql(
                    m,
                    &format!("mutation($i: {input}!) {{ {mutation}(input: $i, waitForProjections: true) {{ id logPosition {selection} }} }}"),
                    json!({ "i": vars }),
                )
                .await;
            assert_ok(&r);
            r["data"][mutation].clone()
        }
    };
    let campus = run(
        "createCampus",
        "campus { name city }",
        json!({ "name": "Sul", "city": "Faro" }),
    )
    .await;
    assert_eq!(campus["campus"], json!({ "name": "Sul", "city": "Faro" }));
    let campus_id = campus["id"].clone();
    let course = run(
        "offerCourse",
        "course { name capacity seatsLeft }",
        json!({ "campusId": campus_id, "name": "Física", "capacity": 2 }),
    )
    .await;
    assert_eq!(
        course["course"],
        json!({ "name": "Física", "capacity": 2, "seatsLeft": 2 })
    );
    let course_id = course["id"].clone();
    let resized = run(
        "changeCourseCapacity",
        "course { capacity }",
        json!({ "courseId": course_id, "capacity": 3 }),
    )
    .await;
    assert_eq!(resized["course"]["capacity"], 3);
    let student = run(
        "createStudent",
        "student { name email active }",
        json!({ "name": "Rui Mota", "email": "rui.payload@aula.test", "birthDate": "2004-04-04" }),
    )
    .await;
    assert_eq!(student["student"]["name"], "Rui Mota");
    assert_eq!(student["student"]["active"], true);
    let teacher = run(
        "createTeacher",
        "teacher { name }",
        json!({ "name": "Eva Luz", "email": "eva.payload@aula.test" }),
    )
    .await;
    assert_eq!(teacher["teacher"]["name"], "Eva Luz");

    let applied = server
        .gql(
            None,
            "mutation($i: ApplyToCourseInput!) { applyToCourse(input: $i, waitForProjections: true) { id application { status courseName } } }",
            json!({ "i": { "courseId": course_id, "name": "Rui Mota", "email": "rui.payload@aula.test", "birthDate": "2004-04-04" } }),
        )
        .await;
    assert_ok(&applied);
    assert_eq!(
        applied["data"]["applyToCourse"]["application"]["status"],
        "pending"
    );
    assert_eq!(
        applied["data"]["applyToCourse"]["application"]["courseName"],
        "Física"
    );
    let application: Uuid =
        serde_json::from_value(applied["data"]["applyToCourse"]["id"].clone()).unwrap();
    let course_uuid: Uuid = serde_json::from_value(course_id.clone()).unwrap();
    server.enroll(course_uuid, application).await;

    let grade = run("recordExamNote", "grade { examName note }", json!({ "courseId": course_id, "studentId": student["id"], "examName": "Final", "note": 9, "teacherId": teacher["id"] })).await;
    assert_eq!(
        grade["grade"],
        json!({ "examName": "Final", "note": "9.00" })
    );
    let changed = run(
        "changeExamNote",
        "grade { note changedAt }",
        json!({ "examGradeId": grade["id"], "note": 9.5, "teacherId": teacher["id"] }),
    )
    .await;
    assert_eq!(changed["grade"]["note"], "9.50");
    let cancelled = run(
        "cancelEnrollment",
        "enrollment { status cancelledOn }",
        json!({ "courseId": course_id, "applicationId": application }),
    )
    .await;
    assert_eq!(cancelled["enrollment"]["status"], "cancelled");
    let renamed = run(
        "updateUser",
        "user { name role }",
        json!({ "name": "Gestora Nova" }),
    )
    .await;
    assert_eq!(
        renamed["user"],
        json!({ "name": "Gestora Nova", "role": "MANAGER" })
    );
    server.stop().await;
}

/// Every operation on a webhook endpoint, made through the API, is in `auditLog` with
/// its actor and institution, in order; no record holds a secret, a key or the URL's
/// path and query.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_endpoint_operations_are_in_the_audit_log() {
    let (server, _projections) = server_with_projections().await;
    let a = server.institution("Escola Gancho").await;
    let manager = a.manager.token.clone();
    let gql = |query: &'static str, variables: Value| {
        let (server, manager) = (&server, manager.clone());
        async move {
            let r = server.gql(Some(&manager), query, variables).await;
            assert_ok(&r);
            r
        }
    };
    // A public address that is never contacted (nothing delivers in this test).
    let url = "https://93.184.216.34/hooks/secret-path-token?key=query-token";
    let created = gql(
        "mutation($u: String!) { createWebhookEndpoint(input: { url: $u, signatureScheme: v1a }) { secret endpoint { id signatureScheme publicKey } } }",
        json!({ "u": url }),
    )
    .await;
    let created = &created["data"]["createWebhookEndpoint"];
    assert!(
        created["secret"].is_null(),
        "a v1a secret key is never shown: {created}"
    );
    assert_eq!(created["endpoint"]["signatureScheme"], "v1a");
    let public_key = created["endpoint"]["publicKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(public_key.starts_with("whpk_"), "{public_key}");
    let endpoint: Uuid = created["endpoint"]["id"].as_str().unwrap().parse().unwrap();

    // Described and disabled, then enabled again.
    for update in [
        "mutation($id: UUID!) { updateWebhookEndpoint(id: $id, input: { description: \"ERP\", enabled: false }) { id } }",
        "mutation($id: UUID!) { updateWebhookEndpoint(id: $id, input: { enabled: true }) { id } }",
    ] {
        gql(update, json!({ "id": endpoint })).await;
    }
    let rotated = gql(
        "mutation($id: UUID!) { rotateWebhookEndpointSecret(id: $id, previousSecretValidForMinutes: 60, signatureScheme: v1) { secret endpoint { signatureScheme publicKey } } }",
        json!({ "id": endpoint }),
    )
    .await;
    let rotated = &rotated["data"]["rotateWebhookEndpointSecret"];
    let secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{rotated}");
    assert!(rotated["endpoint"]["publicKey"].is_null(), "{rotated}");
    // A message to resend (nothing fans out here: written as the fan-out would).
    let message = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO webhook_messages (id, endpoint_id, event_id, event_type, institution_id,
                                       event_recorded_at, body, status, attempts)
         VALUES ($1, $2, $3, 'CampusCreated', $4, now(), '{}', 'failed', 8)",
    )
    .bind(message)
    .bind(endpoint)
    .bind(Uuid::new_v4())
    .bind(a.id)
    .execute(&server.db.pool)
    .await
    .unwrap();
    gql(
        "mutation($m: String!) { resendWebhookMessage(messageId: $m) { id } }",
        json!({ "m": message.to_string() }),
    )
    .await;
    let recovery = gql(
        "mutation($id: UUID!) { recoverWebhookEndpoint(endpointId: $id, since: \"2026-01-01T00:00:00Z\") { id } }",
        json!({ "id": endpoint }),
    )
    .await;
    let recovery = recovery["data"]["recoverWebhookEndpoint"]["id"].clone();
    gql(
        "mutation($r: UUID!) { cancelWebhookRecovery(id: $r) { id } }",
        json!({ "r": recovery }),
    )
    .await;
    gql(
        "mutation($id: UUID!) { deleteWebhookEndpoint(id: $id) }",
        json!({ "id": endpoint }),
    )
    .await;

    let expected = [
        "WebhookEndpointCreated",
        "WebhookEndpointUpdated",
        "WebhookEndpointDisabled",
        "WebhookEndpointEnabled",
        "WebhookEndpointSecretRotated",
        "WebhookMessageResent",
        "WebhookRecoveryStarted",
        "WebhookRecoveryCancelled",
        "WebhookEndpointDeleted",
    ];
    let query = "query($f: AuditLogFilter) { auditLog(filter: $f, first: 50, direction: ASC) { nodes { eventType actor actorUserId institutionId aggregateType aggregateId sequence requestId } } }";
    let filter = json!({ "f": { "aggregateType": "webhook_endpoint", "aggregateId": endpoint.to_string() } });
    let mut nodes = Vec::new();
    for _ in 0..200 {
        let r = gql(query, filter.clone()).await;
        nodes = r["data"]["auditLog"]["nodes"].as_array().unwrap().clone();
        if nodes.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let types: Vec<&str> = nodes
        .iter()
        .map(|n| n["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, expected, "{nodes:?}");
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node["actor"], format!("user:{}", a.manager.id), "{node}");
        assert_eq!(node["actorUserId"], a.manager.id.to_string(), "{node}");
        assert_eq!(node["institutionId"], a.id.to_string(), "{node}");
        assert_eq!(node["sequence"], json!(i + 1), "{node}");
        assert!(node["requestId"].is_string(), "{node}");
    }
    // A manager of another institution sees none of them.
    let b = server.institution("Escola Outra").await;
    let r = server
        .gql(
            Some(&b.manager.token),
            query,
            json!({ "f": { "aggregateType": "webhook_endpoint", "institutionId": b.id } }),
        )
        .await;
    assert_eq!(r["data"]["auditLog"]["nodes"], json!([]), "{r}");
    // No record holds a secret, a key or more of the URL than its origin.
    let payloads: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_type = 'webhook_endpoint' AND aggregate_id = $1",
    )
    .bind(endpoint.to_string())
    .fetch_all(&server.db.pool)
    .await
    .unwrap();
    let keys: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT unnest(ARRAY[secret, previous_secret]) FROM webhook_endpoints WHERE id = $1",
    )
    .bind(endpoint)
    .fetch_all(&server.db.pool)
    .await
    .unwrap();
    let encoded: Vec<String> = keys
        .iter()
        .map(|k| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, k))
        .collect();
    for payload in &payloads {
        for forbidden in [
            "secret-path-token",
            "query-token",
            "whsec_",
            "whsk_",
            "whpk_",
            secret.trim_start_matches("whsec_"),
            public_key.trim_start_matches("whpk_"),
        ]
        .into_iter()
        .chain(encoded.iter().map(String::as_str))
        {
            assert!(!payload.contains(forbidden), "{forbidden} in {payload}");
        }
    }
    assert!(
        payloads[0].contains("https://93.184.216.34"),
        "{}",
        payloads[0]
    );
    // Every other read model passes over these events without failing.
    let admin = server.admin().await;
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let r = server
            .query(
                &admin.token,
                "{ projectionStatus { name lagEvents lastError } }",
            )
            .await;
        assert_ok(&r);
        statuses = r["data"]["projectionStatus"].as_array().unwrap().clone();
        if statuses.iter().all(|p| p["lagEvents"] == json!(0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(statuses.len() >= 6, "{statuses:?}");
    for status in &statuses {
        assert_eq!(status["lagEvents"], json!(0), "{status}");
        assert!(status["lastError"].is_null(), "{status}");
    }
}
