//! `aula bench list-query` at a small scale: its data satisfies the schema's rules
//! (`0011`'s invariants among them) and it measures every filter × sort × direction,
//! following the cursors. Latencies are not checked here: that is the benchmark's job.

use aula_bench::lists::{bench_list_query, ListBenchOptions};
use aula_eventlog::testing::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_benchmark_measures_every_combination_on_valid_data() {
    let db = TestDatabase::new().await;
    let options = ListBenchOptions {
        events: 3_000,
        institutions: 4,
        samples: 1,
        pages: 3,
        page_size: 20,
    };
    let report = bench_list_query(&db.pool, &options).await.unwrap();
    assert_eq!(report.events, 3_000);
    assert!(report.tasks >= report.events, "{} tasks", report.tasks);
    // 12 filters (the 10 and issue #23's two searches) × 6 sorts × 2 directions.
    assert_eq!(report.measurements.len(), 144);
    for m in &report.measurements {
        assert_eq!(m.first.len(), 1, "{} {}", m.filter, m.sort);
        assert!(m.pages_reached >= 1 && m.pages_reached <= 3);
        // Pages 2.. while following the cursors, then the deepest one again.
        let expected_deep = if m.pages_reached > 1 {
            m.pages_reached
        } else {
            0
        };
        assert_eq!(m.deep.len(), expected_deep, "{} {}", m.filter, m.sort);
    }
    // The unfiltered list has 150 pages of 20: every sort reaches the third page.
    assert!(report
        .measurements
        .iter()
        .filter(|m| m.filter == "none")
        .all(|m| m.pages_reached == 3));
    // The search finds its one event, and every event when every payload matches.
    assert!(report
        .measurements
        .iter()
        .filter(|m| m.filter == "search (1 match)")
        .all(|m| m.pages_reached == 1));
    assert!(report
        .measurements
        .iter()
        .filter(|m| m.filter == "search (all)")
        .all(|m| m.pages_reached == 3));
    let rendered = report.render();
    assert!(
        rendered.contains("of 144 filter × sort × direction combinations"),
        "{rendered}"
    );
}
