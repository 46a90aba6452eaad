//! The benchmark functions run end to end on a small scale (figures are printed, not
//! asserted: the real runs are `aula bench tasks|latency`).

use aula_eventlog::testing::TestDatabase;

#[tokio::test(flavor = "multi_thread")]
async fn bench_tasks_drains_everything_it_inserted() {
    let db = TestDatabase::new().await;
    let report = aula_bench::tasks::bench_tasks(&db.pool, 5000, 2, 8)
        .await
        .unwrap();
    println!("{report}");
    assert_eq!(report.tasks, 5000);
    let succeeded = db
        .scalar("SELECT count(*) FROM tasks WHERE status = 'succeeded'")
        .await;
    assert_eq!(succeeded, 5000);
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_latency_measures_every_event() {
    let db = TestDatabase::new().await;
    let report = aula_bench::latency::bench_latency(&db.pool, db.connect.clone(), 50)
        .await
        .unwrap();
    println!("event -> task start: {}", report.event_to_task_start);
    println!("task insert -> start: {}", report.task_insert_to_start);
    assert_eq!(report.events, 50);
    assert!(report.event_to_task_start.min <= report.event_to_task_start.max);
    let started = db
        .scalar("SELECT count(*) FROM tasks WHERE started_at IS NOT NULL")
        .await;
    assert_eq!(started, 50);
}
