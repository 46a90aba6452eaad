//! `aula bench rebuild` at a small scale: its synthetic events are valid course events
//! (the read models handle them all) and every projection rebuilds from them.

use aula_eventlog::testing::TestDatabase;

use aula_projections::NAMES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_generates_valid_events_and_rebuilds_them() {
    let db = TestDatabase::new().await;
    let report = aula_bench::rebuild::bench_rebuild(&db.pool, db.connect.clone(), 3000)
        .await
        .unwrap();
    assert_eq!(report.log_events, 3000);
    assert_eq!(report.each.len(), NAMES.len());
    // Every generated event is a valid course event: the domain models handled them all,
    // so three read models count the same enrolled students.
    let mut counts = Vec::new();
    for sql in [
        "SELECT coalesce(sum(enrolled), 0) FROM course_capacity",
        "SELECT count(*) FROM course_enrollments WHERE status = 'enrolled'",
        "SELECT coalesce(sum(students), 0) FROM age_counts WHERE scope = 'course'",
    ] {
        counts.push(db.scalar(sql).await);
    }
    assert!(counts[0] > 0, "enrolled: {counts:?}");
    assert_eq!(counts, [counts[0]; 3], "enrolled, enrollments, students");
}
