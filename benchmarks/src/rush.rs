//! `aula bench rush`: applicants applying at once over HTTP, with the whole service
//! running in this process; applications accepted per second, decisions and e-mails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aula_eventlog::Wakeups;
use uuid::Uuid;

use crate::{BenchDatabase, Settings};

/// What `aula bench rush` measured.
struct RushReport {
    accepted: usize,
    refused: usize,
    accepting: Duration,
    last_decision: Duration,
    scheduled_p50_ms: f64,
    scheduled_p95_ms: f64,
    all_emails: Duration,
    cpu: Option<AcceptCpu>,
}

/// Where the CPU went while the applications were being accepted: this process (the
/// service and the load generator), the load generator alone (its own thread), and the
/// database's processes; out of `cpus` × the window's length.
struct AcceptCpu {
    process_seconds: f64,
    load_generator_seconds: f64,
    database_seconds: f64,
    cpus: usize,
}

/// What the load generator reports: accepted and refused first tries, the window's
/// length, and its own thread's CPU seconds in it.
struct Rush {
    accepted: usize,
    refused: usize,
    accepting: Duration,
    cpu_seconds: f64,
}

/// `aula bench rush`: `applicants` apply at once (each from its own loopback address,
/// at most 300 requests in flight) over HTTP to `courses` courses of 30 seats, with
/// the API, the projections, the admissions, the reactions and the workers running in
/// this process (the processor with its own connections) and e-mails written to a file
/// outbox.
pub async fn run(settings: &Settings, applicants: usize, courses: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        applicants > 0 && courses > 0,
        "--applicants and --courses must be positive"
    );
    anyhow::ensure!(
        applicants <= 250 * 250,
        "at most 62,500 applicants (one loopback address each)"
    );
    let db = BenchDatabase::create(settings).await?;
    let result = rush_on(&db, applicants, courses).await;
    db.drop_database().await?;
    let report = result?;
    println!(
        "aula bench rush: {applicants} applicants, {courses} course(s) of 30 seats, 300 in flight"
    );
    println!(
        "  applications accepted:        {} in {:.2} s = {:.0}/s",
        report.accepted,
        report.accepting.as_secs_f64(),
        report.accepted as f64 / report.accepting.as_secs_f64()
    );
    println!("  first-try refusals:           {}", report.refused);
    println!(
        "  first application -> last decision: {:.2} s (last application + {:.2} s)",
        report.last_decision.as_secs_f64(),
        (report.last_decision.saturating_sub(report.accepting)).as_secs_f64()
    );
    println!(
        "  \"scheduled\" e-mail after its application: p50 {:.0} ms, p95 {:.0} ms",
        report.scheduled_p50_ms, report.scheduled_p95_ms
    );
    println!(
        "  all e-mails (scheduled + result) sent {:.2} s after the first application",
        report.all_emails.as_secs_f64()
    );
    if let Some(cpu) = &report.cpu {
        let available = cpu.cpus as f64 * report.accepting.as_secs_f64();
        let service = cpu.process_seconds - cpu.load_generator_seconds;
        println!(
            "  CPU while accepting ({:.1} s of {} cores = {available:.1} s): service {service:.1} s, \
             load generator {:.1} s, PostgreSQL {:.1} s; {:.0} µs of service + database CPU \
             per accepted application",
            report.accepting.as_secs_f64(),
            cpu.cpus,
            cpu.load_generator_seconds,
            cpu.database_seconds,
            (service + cpu.database_seconds) * 1e6 / report.accepted.max(1) as f64,
        );
    }
    Ok(())
}

async fn rush_on(
    db: &BenchDatabase,
    applicants: usize,
    courses: usize,
) -> anyhow::Result<RushReport> {
    const IN_FLIGHT: usize = 300;
    const SEATS: u32 = 30;
    let (trigger, shutdown) = aula_eventlog::shutdown::channel();
    let wakeups = Wakeups::listen(&db.pool, shutdown.clone()).await?;
    let mut handles =
        aula_projections::spawn_all(db.connect.clone(), wakeups.clone(), shutdown.clone());
    let reactions =
        aula_processor::spawn_reactions(db.connect.clone(), wakeups.clone(), shutdown.clone());
    // The processor's connections apart from the API's, as with `aula serve --only
    // processor` beside `--only api`: the e-mails do not queue for connections behind
    // hundreds of requests in flight.
    let processor_pool = aula_eventlog::db::pool(db.connect.clone(), 16).await?;
    let admissions = aula_processor::spawn_admissions(
        processor_pool.clone(),
        db.connect.clone(),
        wakeups.clone(),
        shutdown.clone(),
    );
    // The outbox's folder: the system's temporary one, or `AULA_BENCH_OUTBOX` (a file
    // system in memory, say, to see what the file outbox itself costs).
    let outbox = std::env::var_os("AULA_BENCH_OUTBOX")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("aula-bench-rush-{}", Uuid::new_v4().simple()));
    let mail = aula_processor::MailConfig {
        outbox_dir: outbox.clone(),
        ..aula_processor::MailConfig::default()
    };
    let mailer = Arc::new(aula_processor::FileMailer::new(&outbox, mail.from.clone()));
    let registry = aula_processor::Registry::standard(mailer, mail);
    let workers = tokio::spawn(aula_processor::run_workers(
        processor_pool.clone(),
        aula_processor::ProcessorConfig::from_env()?,
        registry,
        shutdown.clone(),
    ));
    let mut config = aula_api::ApiConfig::new(aula_api::Secret::new(
        b"bench rush secret of at least 32 bytes".to_vec(),
    ));
    config.projections = Vec::new();
    let state = aula_api::AppState::new(db.pool.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(aula_api::serve(
        listener,
        aula_api::router(state),
        async move { server_shutdown.wait().await },
    ));

    let course_ids = crate::seed::open_courses(&db.pool, "Rush course", courses, SEATS).await?;
    // Let the projections see the courses (the API reads course_capacity first).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The load generator runs on a thread of its own (a runtime of one thread), as a
    // separate client would, so its CPU is measured apart from the service's.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let generator = {
        let base = base.clone();
        let course_ids = course_ids.clone();
        std::thread::Builder::new()
            .name("rush-clients".into())
            .spawn(move || -> anyhow::Result<Rush> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(apply_all(
                        base, course_ids, applicants, IN_FLIGHT, ready_tx, go_rx,
                    ))
            })?
    };
    ready_rx
        .await
        .map_err(|_| anyhow::anyhow!("the load generator stopped before it was ready"))?;
    let process = [std::process::id()];
    let server_pids = crate::tasks::database_pids(&db.pool).await?;
    let cpu_before = (
        crate::tasks::cpu_seconds(&process),
        crate::tasks::cpu_seconds(&server_pids),
    );
    let _ = go_tx.send(());
    // The clock of the later figures (decisions, e-mails); the accept window is the
    // load generator's own.
    let started = Instant::now();
    let rush = tokio::task::spawn_blocking(move || generator.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
    // Server processes that appeared meanwhile count from zero.
    let mut server_pids_after = crate::tasks::database_pids(&db.pool).await?;
    server_pids_after.retain(|pid| !server_pids.contains(pid));
    let cpu = match (
        cpu_before,
        crate::tasks::cpu_seconds(&process),
        crate::tasks::cpu_seconds(&server_pids),
    ) {
        ((Some(p0), Some(d0)), Some(p1), Some(d1)) => Some(AcceptCpu {
            process_seconds: p1 - p0,
            load_generator_seconds: rush.cpu_seconds,
            database_seconds: d1 - d0
                + crate::tasks::cpu_seconds(&server_pids_after).unwrap_or(0.0),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }),
        _ => None,
    };
    let Rush {
        accepted,
        refused,
        accepting,
        ..
    } = rush;

    let decided = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE aggregate_type = 'course'
               AND event_type IN ('StudentEnrolled', 'EnrollmentDeclined')",
        )
        .fetch_one(&db.pool)
        .await
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while decided().await? < accepted as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "decisions did not finish within 10 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_decision = started.elapsed();
    let sent = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox_emails")
            .fetch_one(&db.pool)
            .await
    };
    while sent().await? < 2 * accepted as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "e-mails did not finish within 10 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_emails = started.elapsed();
    let (p50, p95): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT extract(epoch FROM o.sent_at - e.recorded_at) * 1000 AS ms
               FROM outbox_emails o JOIN tasks t ON t.id = o.task_id JOIN events e ON e.event_id = t.event_id
               WHERE o.kind = 'email.application_scheduled') s",
    )
    .fetch_one(&db.pool)
    .await?;

    trigger.trigger();
    let _ = server.await;
    let _ = workers.await;
    let _ = reactions.task.await;
    let _ = admissions.task.await;
    for (_, handle) in handles.drain(..) {
        let _ = handle.task.await;
    }
    processor_pool.close().await;
    let _ = std::fs::remove_dir_all(&outbox);
    Ok(RushReport {
        accepted,
        refused,
        accepting,
        last_decision,
        scheduled_p50_ms: p50.unwrap_or(f64::NAN),
        scheduled_p95_ms: p95.unwrap_or(f64::NAN),
        all_emails,
        cpu,
    })
}

/// The load generator: `applicants` clients, each bound to its own loopback address
/// and built before the clock starts, apply at once, at most `in_flight` at a time.
/// Says `ready` once the clients are built and starts on `go`.
async fn apply_all(
    base: String,
    course_ids: Vec<Uuid>,
    applicants: usize,
    in_flight: usize,
    ready: tokio::sync::oneshot::Sender<()>,
    go: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<Rush> {
    const APPLY: &str =
        "mutation($input: ApplyToCourseInput!) { applyToCourse(input: $input) { id } }";
    let mut clients = Vec::with_capacity(applicants);
    for i in 0..applicants {
        let address = std::net::Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8);
        clients.push(
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::V4(address))
                .timeout(Duration::from_secs(60))
                .build()?,
        );
    }
    let _ = ready.send(());
    go.await
        .map_err(|_| anyhow::anyhow!("the benchmark stopped before the rush"))?;
    let cpu_start = thread_cpu_seconds();
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let started = Instant::now();
    let mut requests = Vec::with_capacity(applicants);
    for (i, client) in clients.into_iter().enumerate() {
        let (gate, base) = (gate.clone(), base.clone());
        let course = course_ids[i % course_ids.len()];
        requests.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let body = serde_json::json!({ "query": APPLY, "variables": { "input": {
                "courseId": course, "name": format!("Applicant {i}"), "birthDate": "2004-05-06",
                "email": format!("applicant{i}@bench.test"), "idempotencyKey": format!("k{i}"),
            }}});
            let answer: serde_json::Value = client
                .post(format!("{base}/graphql"))
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(answer["data"]["applyToCourse"]["id"].is_string())
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for request in requests {
        if request.await?? {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    Ok(Rush {
        accepted,
        refused,
        accepting: started.elapsed(),
        cpu_seconds: thread_cpu_seconds() - cpu_start,
    })
}

/// CPU seconds (user and system) of the calling thread so far.
fn thread_cpu_seconds() -> f64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
}
