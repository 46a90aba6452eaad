//! Six processes on one database, two of them SIGKILLed mid-rush: nothing lost,
//! nothing done twice, read models as one process would leave them.

use super::*;

const APPLICANTS: usize = 2_000;
const COURSES: usize = 4;
const SEATS: u32 = 40;

/// The backend holding subscription `name`'s advisory lock (its active instance).
async fn lock_holder(pool: &PgPool, name: &str) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('aula.subscription/' || $1, 0)",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Applies through `bases[i % 2]`, and through the other API when that one does not
/// answer (it may have been killed): the idempotency key makes the retry the same
/// application. Returns the acknowledged application id.
async fn apply(bases: [String; 2], course: Uuid, i: usize) -> Uuid {
    let client = support::applicant_client(2, i, Duration::from_secs(30));
    let body = json!({ "query": support::APPLY_TO_COURSE, "variables": { "input": {
        "courseId": course, "name": format!("Applicant {i}"), "birthDate": "2004-05-06",
        "email": format!("applicant{i}@scale.test"), "idempotencyKey": format!("key-{i}"),
    }}});
    let mut last = String::new();
    for attempt in 0..20 {
        let base = &bases[(i + attempt) % 2];
        match client
            .post(format!("{base}/graphql"))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => match response.json::<Value>().await {
                Ok(answer) => match answer["data"]["applyToCourse"]["id"].as_str() {
                    Some(id) => return id.parse().unwrap(),
                    None => last = answer.to_string(),
                },
                Err(error) => last = error.to_string(),
            },
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt as u64 + 1))).await;
    }
    panic!("applicant {i} never acknowledged: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn six_processes_on_one_database_lose_and_duplicate_nothing_when_two_are_killed() {
    let _heavy = support::one_heavy_test_at_a_time().await;
    let started = Instant::now();
    let db = TestDatabase::new().await;
    let dir = test_dir("scale");
    let outbox = dir.join("outbox");
    let common = vec![
        ("DATABASE_URL", database_url(&db)),
        ("AULA_MAIL_OUTBOX", outbox.display().to_string()),
        ("AULA_WORKER_CONCURRENCY", "8".to_owned()),
        ("AULA_WORKER_POLL_MS", "100".to_owned()),
        ("AULA_RETRY_BASE_MS", "20".to_owned()),
        ("AULA_RETRY_MAX_MS", "200".to_owned()),
        ("AULA_TASK_LEASE_MS", "2000".to_owned()),
        ("AULA_WORKER_RESCUE_MS", "200".to_owned()),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut env = common.clone();
        env.extend(extra.iter().cloned());
        env
    };
    // The first processor alone, until it holds both processor subscriptions: the one
    // killed later is then the active instance, and the others its standbys.
    let subscriptions = ["processor.reactions", "processor.admissions"];
    let mut processors = vec![Process::spawn(
        "processor-1",
        &dir,
        &["serve", "--only", "processor"],
        &with(&[]),
    )];
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in subscriptions {
        while lock_holder(&db.pool, name).await.is_none() {
            assert!(processors[0].alive(), "see {}", processors[0].log.display());
            assert!(Instant::now() < deadline, "{name} never became active");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let active: Vec<i32> = {
        let mut pids = Vec::new();
        for name in subscriptions {
            pids.push(lock_holder(&db.pool, name).await.unwrap());
        }
        pids
    };
    for n in 2..=3 {
        processors.push(Process::spawn(
            &format!("processor-{n}"),
            &dir,
            &["serve", "--only", "processor"],
            &with(&[]),
        ));
    }
    let mut projections = Process::spawn(
        "projections",
        &dir,
        &["serve", "--only", "projections"],
        &with(&[]),
    );
    let ports = [free_port(), free_port()];
    let bases = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let mut apis: Vec<Process> = (0..2)
        .map(|n| {
            Process::spawn(
                &format!("api-{}", n + 1),
                &dir,
                &["serve", "--only", "api"],
                &with(&[("AULA_HTTP_ADDR", format!("127.0.0.1:{}", ports[n]))]),
            )
        })
        .collect();
    for (n, base) in bases.iter().enumerate() {
        wait_ready(base, &mut apis[n]).await;
    }

    // The courses, opened as the API opens them after an offer.
    let courses = aula_bench::seed::open_courses(&db.pool, "Scale", COURSES, SEATS)
        .await
        .unwrap();
    println!("six processes up in {:?}", started.elapsed());

    // The workload, 200 applicants at a time, half through each API. Halfway, one
    // processor (the active one) and one API are SIGKILLed.
    let workload_started = Instant::now();
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let applications = {
        let (bases, courses, acknowledged) = (bases.clone(), courses.clone(), acknowledged.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..APPLICANTS)
                .map(|i| {
                    let (bases, course, acknowledged) =
                        (bases.clone(), courses[i % COURSES], acknowledged.clone());
                    async move {
                        let id = apply(bases, course, i).await;
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        (i, course, id)
                    }
                })
                .buffer_unordered(200)
                .collect::<Vec<_>>()
                .await
        })
    };
    while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < APPLICANTS / 2 {
        assert!(!applications.is_finished());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    processors[0].sigkill();
    apis[0].sigkill();
    let killed = Instant::now();
    let mut takeover = BTreeMap::new();
    while takeover.len() < subscriptions.len() {
        for (name, old) in subscriptions.iter().zip(&active) {
            if takeover.contains_key(name) {
                continue;
            }
            if let Some(pid) = lock_holder(&db.pool, name).await {
                if pid != *old {
                    takeover.insert(*name, killed.elapsed());
                }
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no standby took over: {takeover:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("standby takeover after SIGKILL of the active processor: {takeover:?}");
    let applications = applications.await.unwrap();
    println!(
        "{APPLICANTS} applications acknowledged in {:?} through 2 APIs (one killed halfway)",
        workload_started.elapsed()
    );

    // Every acknowledged application's event is in the log once.
    let submitted: Vec<(String,)> =
        sqlx::query_as("SELECT aggregate_id FROM events WHERE event_type = 'ApplicationSubmitted'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut per_application: HashMap<String, usize> = HashMap::new();
    for (id,) in &submitted {
        *per_application.entry(id.clone()).or_default() += 1;
    }
    for (i, _, id) in &applications {
        assert_eq!(
            per_application.get(&id.to_string()),
            Some(&1),
            "applicant {i}'s application once in the log"
        );
    }
    assert_eq!(
        submitted.len(),
        APPLICANTS,
        "nothing but the acknowledged applications"
    );

    // Every application decided once; no course over capacity.
    let decided =
        "SELECT count(*) FROM events WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined')";
    support::eventually(support::PATIENCE, support::POLL_EVERY, || async {
        let done = db.scalar(decided).await;
        (done >= APPLICANTS as i64)
            .then_some(())
            .ok_or(format!("{done} of {APPLICANTS} applications decided"))
    })
    .await;
    let decisions: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT aggregate_id, event_type, payload->>'application_id' FROM events
         WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let distinct: BTreeSet<&String> = decisions.iter().map(|(_, _, a)| a).collect();
    assert_eq!(
        (decisions.len(), distinct.len()),
        (APPLICANTS, APPLICANTS),
        "each decided once"
    );
    for course in &courses {
        let enrolled = decisions
            .iter()
            .filter(|(c, t, _)| *c == course.to_string() && t == "StudentEnrolled")
            .count();
        assert_eq!(
            enrolled, SEATS as usize,
            "course {course}: every seat taken, none over capacity"
        );
    }

    // Every task done once: two e-mails per applicant (scheduled, then the decision),
    // each recorded once and written once (the outbox file is named by its key).
    support::eventually(support::PATIENCE, support::POLL_EVERY, || async {
        let (tasks, done): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM tasks",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (tasks == 2 * APPLICANTS as i64 && done == tasks)
            .then_some(())
            .ok_or(format!("tasks stuck: {done} of {tasks} succeeded"))
    })
    .await;
    let per_task: Vec<(i64,)> = sqlx::query_as(
        "SELECT count(o.*) FROM tasks t LEFT JOIN outbox_emails o ON o.idempotency_key = t.idempotency_key GROUP BY t.id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        per_task.iter().all(|(n,)| *n == 1),
        "one recorded e-mail per task"
    );
    let files = std::fs::read_dir(&outbox)
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "eml"))
        })
        .count();
    assert_eq!(files, 2 * APPLICANTS, "one e-mail per idempotency key");
    let killed_attempts: i64 = db
        .scalar("SELECT count(*) FROM task_attempts WHERE outcome = 'lease_expired'")
        .await;
    println!("{killed_attempts} attempts of the killed processor were rescued after their lease");

    // Read models equal a rebuild; nothing stuck anywhere. The events' admin rows are
    // also written by the processors' refreshers (ADR 0001), which may still hold queued
    // ids (a claim's is due 300 ms after it): wait for them too, or the snapshot below
    // could catch a row between its task's end and its refresh.
    support::eventually(Duration::from_secs(30), support::POLL_EVERY, || async {
        let lagging: i64 = db.scalar("SELECT count(*) FROM subscription_checkpoints c WHERE c.last_error IS NOT NULL OR EXISTS (
               SELECT 1 FROM events e WHERE (e.tx_id, e.global_position) > (c.tx_id, c.global_position))",
        )
        .await
            + db.scalar("SELECT count(*) FROM admin_event_refresh").await;
        (lagging == 0).then_some(()).ok_or(format!(
            "{lagging} subscriptions lag or fail, or admin rows wait for their refresh"
        ))
    })
    .await;
    let live = aula_projections::snapshot(&db.pool).await.unwrap();
    aula_projections::rebuild_many(&db.pool, db.connect.clone(), aula_projections::NAMES)
        .await
        .unwrap();
    assert!(
        aula_projections::snapshot(&db.pool).await.unwrap() == live,
        "the read models equal a rebuild"
    );

    for process in processors
        .iter_mut()
        .skip(1)
        .chain(apis.iter_mut().skip(1))
        .chain([&mut projections])
    {
        assert!(
            process.alive(),
            "a survivor died; see {}",
            process.log.display()
        );
    }
    drop((processors, apis, projections));
    println!("whole run {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
