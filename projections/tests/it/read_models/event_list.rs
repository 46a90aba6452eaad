//! The admin event list: filters, sorts, keyset pages both ways, and search.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_event_list_filters_sorts_and_pages() {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let s = scenario(&world).await;
    let other = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let course = Uuid::new_v4();
    other
        .open(
            course,
            other.metadata.institution_id.unwrap(),
            Uuid::new_v4(),
            "Outra",
            1,
        )
        .await;
    catch_up(&db, &["admin_events"]).await;
    let pool = &db.pool;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        admin_events::count_admin_events(pool, &EventListQuery::default())
            .await
            .unwrap(),
        total
    );

    // What the processor will write; simulated here.
    sqlx::query(
        "UPDATE admin_events SET status = 'processed', processed_at = recorded_at + interval '1 second',
             duration_ms = global_position * 10 WHERE event_type = 'StudentEnrolled'",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE admin_events SET status = 'failed', tasks_failed = 1, duration_ms = 5, error = 'smtp down',
             processed_at = recorded_at + interval '5 milliseconds'
         WHERE event_type = 'EnrollmentDeclined'",
    )
    .execute(pool)
    .await
    .unwrap();

    let query =
        |q: EventListQuery| async move { admin_events::list_admin_events(pool, &q).await.unwrap() };
    let types = query(EventListQuery {
        event_types: vec!["StudentEnrolled".into(), "EnrollmentCancelled".into()],
        limit: Some(100),
        ..Default::default()
    })
    .await;
    assert_eq!(types.events.len(), 6 + 2);
    let institution = query(EventListQuery {
        institution_id: Some(s.institution),
        limit: Some(500),
        ..Default::default()
    })
    .await;
    assert_eq!(institution.events.len() as i64, total - 1);
    let failed = query(EventListQuery {
        has_failed_tasks: Some(true),
        ..Default::default()
    })
    .await;
    assert_eq!(failed.events.len(), 1);
    assert_eq!(failed.events[0].error.as_deref(), Some("smtp down"));
    let status = query(EventListQuery {
        status: Some("processed".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(status.events.len(), 6);
    let slow_threshold = status.events[2].duration_ms.unwrap();
    let slow = query(EventListQuery {
        duration: Some((DurationOp::Gt, slow_threshold)),
        ..Default::default()
    })
    .await;
    assert_eq!(slow.events.len(), 3);
    let exact = query(EventListQuery {
        duration: Some((DurationOp::Eq, 5)),
        ..Default::default()
    })
    .await;
    assert_eq!(exact.events.len(), 1);
    let fast = query(EventListQuery {
        duration: Some((DurationOp::Lt, slow_threshold)),
        ..Default::default()
    })
    .await;
    assert_eq!(
        fast.events.len(),
        3,
        "the failed one (5 ms) and two processed ones"
    );

    // Every sort, both directions, paged by 3: the pages concatenate to the full sorted list.
    every_order_pages_the_sorted_list(pool, &EventListQuery::default(), 3, total).await;
    // Events processed late (an hour and a minute, two days after being recorded) and
    // one processed "before" it was recorded (another clock): a time range sorted by the
    // other time reads them apart from the events processed on time.
    for (rank, lateness) in [(3, "2 days"), (5, "61 minutes"), (7, "-1 minute")] {
        sqlx::query(&format!(
            "UPDATE admin_events SET status = 'succeeded', processed_at = recorded_at + interval '{lateness}',
                 duration_ms = greatest(extract(epoch FROM interval '{lateness}') * 1000, 0)
             WHERE global_position = (SELECT global_position FROM admin_events WHERE status = 'pending'
                                      ORDER BY global_position OFFSET $1 LIMIT 1)"
        ))
        .bind(rank)
        .execute(pool)
        .await
        .unwrap();
    }
    // Filters that take other plans (time ranges: candidates from the range's index,
    // the cursor applied outside, or on-time / late / pending branches; processed-only
    // filters: a bound past the pending events): paged by 2, every sort and direction,
    // the pages are the whole filtered list, sorted, and as many as the count.
    let everything = query(EventListQuery {
        limit: Some(500),
        ..Default::default()
    })
    .await
    .events;
    let mut recorded: Vec<_> = everything.iter().map(|e| e.recorded_at).collect();
    recorded.sort();
    let mut processed: Vec<_> = everything.iter().filter_map(|e| e.processed_at).collect();
    processed.sort();
    let filters = [
        EventListQuery {
            recorded_from: Some(recorded[2]),
            recorded_to: Some(recorded[recorded.len() - 3]),
            ..Default::default()
        },
        EventListQuery {
            processed_from: Some(processed[1]),
            processed_to: Some(processed[processed.len() - 1]),
            ..Default::default()
        },
        EventListQuery {
            processed_from: Some(processed[0]),
            processed_to: Some(processed[processed.len() - 1] + chrono::TimeDelta::seconds(1)),
            ..Default::default()
        },
        EventListQuery {
            recorded_from: Some(recorded[2]),
            recorded_to: Some(recorded[recorded.len() - 3]),
            status: Some("pending".into()),
            ..Default::default()
        },
        EventListQuery {
            recorded_from: Some(recorded[1]),
            status: Some("succeeded".into()),
            ..Default::default()
        },
        EventListQuery {
            processed_to: Some(processed[processed.len() - 2]),
            ..Default::default()
        },
        EventListQuery {
            status: Some("failed".into()),
            ..Default::default()
        },
        EventListQuery {
            status: Some("pending".into()),
            ..Default::default()
        },
        EventListQuery {
            duration: Some((DurationOp::Lt, slow_threshold)),
            ..Default::default()
        },
    ];
    for filter in filters {
        let expected = admin_events::count_admin_events(pool, &filter)
            .await
            .unwrap();
        assert!(expected > 0, "{filter:?} matches something");
        every_order_pages_the_sorted_list(pool, &filter, 2, expected).await;
    }
    assert!(admin_events::list_admin_events(
        pool,
        &EventListQuery {
            after: Some("garbage".into()),
            ..Default::default()
        }
    )
    .await
    .is_err());
    // A key of the wrong type for the sort is a bad cursor too, not a database error.
    for (sort, key) in [
        (EventSort::Position, "12:twelve"),
        (EventSort::RecordedAt, "12:yesterday-ish"),
        (EventSort::ProcessedAt, "12:2026-13-45"),
        (EventSort::Duration, "12:1.5"),
    ] {
        let bad = admin_events::list_admin_events(
            pool,
            &EventListQuery {
                sort,
                recorded_from: Some(recorded[0]),
                after: Some(key.into()),
                ..Default::default()
            },
        )
        .await;
        assert!(
            matches!(bad, Err(aula_eventlog::db::PageError::BadCursor)),
            "{sort:?} {key}: {bad:?}"
        );
    }
}

/// For every sort in both directions: the pages of `page` rows under `filter`, followed
/// by their cursors, are the whole list; it has `expected` rows and is sorted (missing
/// times and durations first, ties by position).
async fn every_order_pages_the_sorted_list(
    pool: &sqlx::PgPool,
    filter: &EventListQuery,
    page: i64,
    expected: i64,
) {
    let sorts = [
        EventSort::Position,
        EventSort::RecordedAt,
        EventSort::ProcessedAt,
        EventSort::Duration,
        EventSort::EventType,
        EventSort::Status,
    ];
    for sort in sorts {
        for descending in [false, true] {
            let paged = every_page(
                pool,
                EventListQuery {
                    sort,
                    descending,
                    limit: Some(page),
                    ..filter.clone()
                },
            )
            .await;
            let whole = admin_events::list_admin_events(
                pool,
                &EventListQuery {
                    sort,
                    descending,
                    limit: Some(500),
                    ..filter.clone()
                },
            )
            .await
            .unwrap()
            .events;
            assert_eq!(paged, whole, "{filter:?} {sort:?} desc={descending}");
            assert_eq!(whole.len() as i64, expected, "{filter:?} {sort:?}");
            let mut sorted = whole.clone();
            let key = |e: &admin_events::AdminEventRow| {
                let (number, text) = match sort {
                    EventSort::Position => (0, String::new()),
                    EventSort::RecordedAt => (e.recorded_at.timestamp_micros(), String::new()),
                    EventSort::ProcessedAt => (
                        e.processed_at.map_or(i64::MIN, |t| t.timestamp_micros()),
                        String::new(),
                    ),
                    EventSort::Duration => (e.duration_ms.unwrap_or(-1), String::new()),
                    EventSort::EventType => (0, e.event_type.clone()),
                    EventSort::Status => (0, e.status.clone()),
                };
                (number, text, e.global_position)
            };
            sorted.sort_by_key(key);
            if descending {
                sorted.reverse();
            }
            assert_eq!(whole, sorted, "{filter:?} {sort:?} desc={descending}");
        }
    }
}

/// Every page of the admin event list for `q`, following the cursors.
async fn every_page(
    pool: &sqlx::PgPool,
    mut q: EventListQuery,
) -> Vec<admin_events::AdminEventRow> {
    let mut rows = Vec::new();
    loop {
        let page = admin_events::list_admin_events(pool, &q).await.unwrap();
        // A cursor that does not move on would page forever.
        assert!(rows.len() <= 1_000, "{q:?} keeps paging");
        rows.extend(page.events);
        match page.next {
            Some(next) => q.after = Some(next),
            None => return rows,
        }
    }
}

/// The late branch of the admin event list must repeat the late indexes' predicate, or
/// the planner cannot prove that their rows are the ones asked for and reads the whole
/// range instead: compared as PostgreSQL parses both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_late_branch_repeats_the_late_indexes_predicate() {
    let db = TestDatabase::new().await;
    sqlx::query(&format!(
        "CREATE INDEX late_probe ON admin_events (recorded_at) WHERE {}",
        admin_events::LATE
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let predicates: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(i.indpred, i.indrelid)
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relname IN ('late_probe', 'admin_events_late_recorded_idx', 'admin_events_late_processed_idx')
         ORDER BY c.relname",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(predicates.len(), 3, "{predicates:?}");
    assert!(
        predicates.iter().all(|(_, p)| *p == predicates[0].1),
        "{predicates:?}"
    );
}

/// Issue #23: the admin list's search finds an event by any value of its payload, at
/// any depth, case ignored, and never by a sensitive field (what the dashboard redacts
/// cannot be probed by searching).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_list_searches_payload_values_but_not_sensitive_fields() {
    let db = TestDatabase::new().await;
    for (i, payload) in [
        serde_json::json!({ "email": "Ada.Lovelace@Example.org", "password_hash": "argon2-secret-hash",
                            "nested": { "token_hash": "tok-secret", "note": "Course not found" } }),
        serde_json::json!({ "email": "grace@example.org", "name": "Grace 100%_sure" }),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('user', $1, 1, 'UserCreated', '1.0', $2, '{}')",
        )
        .bind(format!("user-{i}"))
        .bind(payload)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    catch_up(&db, &["admin_events"]).await;
    let found = |text: &str| {
        let query = EventListQuery {
            search: Some(text.to_owned()),
            ..EventListQuery::default()
        };
        let pool = db.pool.clone();
        async move {
            admin_events::list_admin_events(&pool, &query)
                .await
                .unwrap()
                .events
                .into_iter()
                .map(|e| e.aggregate_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(found("ada.lovelace@example").await, ["user-0"]);
    assert_eq!(found("course NOT found").await, ["user-0"]);
    let mut both = found("example.org").await;
    both.sort();
    assert_eq!(both, ["user-0", "user-1"]);
    // `%` and `_` are matched as themselves.
    assert_eq!(found("100%_s").await, ["user-1"]);
    assert!(found("0%s").await.is_empty());
    for secret in ["argon2-secret", "tok-secret", "password_hash", "email"] {
        assert!(found(secret).await.is_empty(), "{secret} must not be found");
    }
    // The SQL function leaves out every field the catalog calls sensitive.
    for field in aula_domain::catalog::SENSITIVE_FIELDS {
        let mut doc = serde_json::Map::new();
        doc.insert("keep".into(), "visible".into());
        doc.insert((*field).to_owned(), "hidden-value".into());
        let body: String = sqlx::query_scalar("SELECT aula_search_text($1)")
            .bind(serde_json::Value::Object(doc))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(body, "visible", "{field}");
    }
}

/// The projection computes the search text itself (`admin_events::search_text`); the
/// database's `aula_search_text` filled it for the events projected before. A rebuild
/// recomputes every row, so the two must agree on every payload: every event of the
/// catalog, and documents that reach the corners (key order, depth, numbers, escapes,
/// empty strings, sensitive fields that are not strings).
#[tokio::test]
async fn the_projections_search_text_is_the_databases() {
    let db = TestDatabase::new().await;
    let mut documents: Vec<serde_json::Value> = aula_domain::catalog::sample_events()
        .into_iter()
        .map(|sample| sample.payload)
        .collect();
    documents.extend([
        serde_json::json!({}),
        serde_json::json!("a bare string"),
        serde_json::json!([1, [2, [3, {"k": "v"}]], null, false]),
        serde_json::json!({"bb": 1, "a": 2, "ab": 3, "B": 4, "é": 5, "z": {"yy": "q \"quoted\" \\ \u{e9}\n", "x": ""}}),
        serde_json::json!({"n": [0, -0.0, 6.0, -2.5, 1e21, 1.5e-7, 12345678901234567890u64, -9007199254740993i64, 0.1]}),
        serde_json::json!({"password_hash": 12, "token_hash": {"inner": "shown"}, "deep": {"password_hash": "hidden", "token_hash": null}}),
        serde_json::json!({"": "", " ": " ", "empty": [], "o": {}}),
    ]);
    for document in documents {
        let text = document.to_string();
        let database: String = sqlx::query_scalar("SELECT aula_search_text($1::text::jsonb)")
            .bind(&text)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            aula_projections::admin_events::search_text(&document),
            database,
            "{text}"
        );
    }
}
