//! The queue controls (cancel, release, reprioritize, pause) and their audit trail.

use super::*;

/// A task of `institution` inserted as the reactions do; its id.
async fn queued(server: &TestServer, kind: &str, institution: Uuid) -> i64 {
    insert_waiting_task(server, kind, "q", institution).await
}

fn task_count(summary: &Value, status: &str) -> i64 {
    summary["data"]["processingSummary"]["statusCounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "task" && c["status"] == status)
        .map(|c| c["count"].as_i64().unwrap())
        .unwrap_or_else(|| panic!("no {status} count in {summary}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_controls_cancel_release_reprioritize_pause_and_leave_an_audit_trail() {
    use aula_processor::queue;
    let (server, admin) = TestServer::with_admin().await;
    let a = server.institution("Escola Fila").await;
    let lease = std::time::Duration::from_secs(60);
    let pool = &server.db.pool;

    // One task waits, one waits for its retry, one runs.
    let retried = queued(&server, "notification.grade", a.id).await;
    let failed = queue::claim(pool, "w", 1, lease, true).await.unwrap();
    queue::fail(
        pool,
        &[failed[0].failed("smtp down", Some(std::time::Duration::from_secs(600)))],
    )
    .await
    .unwrap();
    let running = queued(&server, "notification.grade", a.id).await;
    let stuck = queue::claim(pool, "stuck-worker", 1, lease, true)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stuck.id, running);
    let waiting = queued(&server, "email.welcome", a.id).await;

    let list = |filter: Value| {
        let token = admin.token.clone();
        let server = &server;
        async move {
            server
                .gql(
                    Some(&token),
                    "query($f: AdminTaskFilter) { adminTasks(filter: $f, first: 50) {
                         nodes { id status priority runAt leaseUntil worker } } }",
                    json!({ "f": filter }),
                )
                .await
        }
    };
    let r = list(json!({ "status": "retrying" })).await;
    assert_eq!(ids(&r), vec![retried], "{r}");
    let node = &r["data"]["adminTasks"]["nodes"][0];
    let run_at: DateTime<Utc> = node["runAt"].as_str().unwrap().parse().unwrap();
    assert!(run_at > Utc::now() + Duration::minutes(9), "{node}");
    let r = list(json!({ "status": "running" })).await;
    assert_eq!(
        r["data"]["adminTasks"]["nodes"][0]["worker"],
        "stuck-worker"
    );
    let summary = server
        .query(
            &admin.token,
            "{ processingSummary { statusCounts { kind status count } } }",
        )
        .await;
    assert_eq!(task_count(&summary, "retrying"), 1);
    assert_eq!(task_count(&summary, "pending"), 1);

    let gql = |query: &'static str, variables: Value| {
        let token = admin.token.clone();
        let server = &server;
        async move { server.gql(Some(&token), query, variables).await }
    };
    const CANCEL: &str =
        "mutation($t: BigInt!) { cancelTask(taskId: $t) { taskId previousStatus status } }";
    let r = gql(CANCEL, json!({ "t": waiting.to_string() })).await;
    assert_eq!(
        r["data"]["cancelTask"],
        json!({ "taskId": waiting, "previousStatus": "pending", "status": "cancelled" }),
        "{r}"
    );
    let r = gql(CANCEL, json!({ "t": running.to_string() })).await;
    assert_code(&r, "CONFLICT");
    assert_eq!(r["errors"][0]["extensions"]["reason"], "TASK_NOT_WAITING");
    let r = gql(CANCEL, json!({ "t": "987654" })).await;
    assert_code(&r, "NOT_FOUND");

    // Force release: the task is claimable again; the stuck worker's report is refused.
    let r = gql(
        "mutation($t: BigInt!) { forceReleaseTask(taskId: $t) { taskId status } }",
        json!({ "t": running.to_string() }),
    )
    .await;
    assert_eq!(r["data"]["forceReleaseTask"]["status"], "retrying", "{r}");
    assert!(queue::complete_deferred(pool, &[stuck.done()])
        .await
        .unwrap()
        .is_empty());

    // Priorities: validated, then changed on a waiting task only.
    const PRIORITY: &str = "mutation($t: BigInt!, $p: Int!) {
        setTaskPriority(taskId: $t, priority: $p) { previousPriority priority } }";
    let r = gql(PRIORITY, json!({ "t": retried.to_string(), "p": 500 })).await;
    assert_code(&r, "VALIDATION");
    assert_eq!(r["errors"][0]["extensions"]["field"], "priority", "{r}");
    let r = gql(PRIORITY, json!({ "t": retried.to_string(), "p": 2 })).await;
    assert_eq!(
        r["data"]["setTaskPriority"],
        json!({ "previousPriority": 40, "priority": 2 }),
        "{r}"
    );
    let r = gql(PRIORITY, json!({ "t": waiting.to_string(), "p": 2 })).await;
    assert_code(&r, "CONFLICT");
    assert_eq!(ids(&list(json!({ "priority": 2 })).await), vec![retried]);

    // Pause: the kind's waiting tasks are parked and nobody claims them.
    let r = gql(
        "mutation { pauseTaskKind(kind: \"notification.grade\") { kind changed tasksParked } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["pauseTaskKind"],
        json!({ "kind": "notification.grade", "changed": true, "tasksParked": 2 }),
        "{r}"
    );
    let r = gql(
        "mutation { pauseTaskKind(kind: \"no.such\") { kind } }",
        json!({}),
    )
    .await;
    assert_code(&r, "VALIDATION");
    sqlx::query("UPDATE tasks SET run_at = now()")
        .execute(pool)
        .await
        .unwrap();
    assert!(queue::claim(pool, "w", 10, lease, true)
        .await
        .unwrap()
        .is_empty());
    const PAUSED: &str = "{ pausedTaskKinds { kind pausedBy waiting } }";
    let r = gql(PAUSED, json!({})).await;
    assert_eq!(
        r["data"]["pausedTaskKinds"],
        json!([{ "kind": "notification.grade", "pausedBy": format!("user:{}", admin.id), "waiting": 2 }]),
        "{r}"
    );
    let r = server.query(&a.manager.token, PAUSED).await;
    assert_eq!(
        r["data"]["pausedTaskKinds"][0]["waiting"],
        Value::Null,
        "{r}"
    );
    assert_eq!(ids(&list(json!({ "status": "paused" })).await).len(), 2);
    let r = gql(
        "mutation { resumeTaskKind(kind: \"notification.grade\") { changed tasksResumed } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["resumeTaskKind"],
        json!({ "changed": true, "tasksResumed": 2 })
    );
    let claimed = queue::claim(pool, "w", 10, lease, true).await.unwrap();
    assert_eq!(claimed.len(), 2);

    // The audit trail, newest first; the manager of A sees its tasks' entries.
    let log = "{ queueControlLog(first: 10) { actor action taskId kind detail } }";
    let r = gql(log, json!({})).await;
    let actions: Vec<&str> = r["data"]["queueControlLog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["resume", "pause", "set_priority", "force_release", "cancel"]
    );
    assert_eq!(
        r["data"]["queueControlLog"][2]["detail"],
        "priority 40 -> 2"
    );
    assert!(r["data"]["queueControlLog"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == format!("user:{}", admin.id)));
    let r = server.query(&a.manager.token, log).await;
    assert_eq!(r["data"]["queueControlLog"].as_array().unwrap().len(), 5);
    // Each control is also a record in the log, committed with it: what `auditLog`
    // lists (its projection reads every event), with the actor and the task's
    // institution.
    let records: Vec<(String, Value, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event_type, payload, metadata->>'actor', metadata->>'institution_id'
         FROM events WHERE aggregate_type = 'queue_control' ORDER BY global_position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let types: Vec<&str> = records.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        types,
        [
            "TaskCancelled",
            "TaskForceReleased",
            "TaskPriorityChanged",
            "TaskKindPaused",
            "TaskKindResumed"
        ]
    );
    assert_eq!(records[0].1["task_id"], json!(waiting), "{records:?}");
    assert_eq!(records[2].1["detail"], "priority 40 -> 2", "{records:?}");
    for (event_type, _, actor, institution) in &records {
        assert_eq!(
            actor.as_deref(),
            Some(format!("user:{}", admin.id).as_str()),
            "{event_type}"
        );
        if event_type.starts_with("TaskKind") {
            assert_eq!(institution, &None, "{event_type}: a kind is platform-wide");
        } else {
            assert_eq!(
                institution.as_deref(),
                Some(a.id.to_string().as_str()),
                "{event_type}"
            );
        }
    }
    server.stop().await;
}
