//! The per-operation report (`common::operation_report`): a row for every schema
//! operation, rows that add up to the recorded calls, and a written file that reads
//! back. It holds whatever this process has counted when the test runs (the report
//! is rewritten after every call, so the file left at the end has the whole run's).

use std::collections::BTreeSet;

use aula_api::metrics::schema_operations;

use crate::common::operation_report;

#[test]
fn report_of_calls_per_operation() {
    // Under the writers' lock: nobody rewrites the file between writing and reading.
    let _guard = operation_report::lock();
    let recorded = operation_report::recorded();
    let rows = operation_report::write(&recorded);
    let path = operation_report::path();
    eprintln!("GraphQL operation report: {}", path.display());

    // Every operation of the schema has exactly one row.
    let operations = schema_operations();
    assert!(
        operations.len() > 20,
        "the schema lists its operations: {operations:?}"
    );
    for op in operations {
        let matching = rows.iter().filter(|r| r.operation == op.name).count();
        assert_eq!(matching, 1, "{} has {matching} rows", op.name);
    }
    // Nothing recorded is lost: the rows add up to the recorded calls.
    let recorded_total: u64 = recorded.values().flat_map(|o| o.values()).sum();
    assert_eq!(rows.iter().map(|r| r.calls).sum::<u64>(), recorded_total);

    // The written report reads back: each row's outcome counts add up to its calls, and
    // an operation without calls says so.
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, operation_report::markdown(&rows));
    let mut table_rows = 0;
    for line in written
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| kind"))
    {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "{line}");
        let calls: u64 = cells[2].parse().unwrap_or_else(|_| panic!("{line}"));
        if cells[3] == "no calls recorded" {
            assert_eq!(calls, 0, "{line}");
        } else {
            let sum: u64 = cells[3]
                .split(", ")
                .map(|part| {
                    let (_, n) = part.rsplit_once(": ").unwrap_or_else(|| panic!("{line}"));
                    n.parse::<u64>().unwrap()
                })
                .sum();
            assert_eq!(sum, calls, "{line}");
            assert!(calls > 0, "{line}");
        }
        table_rows += 1;
    }
    assert_eq!(table_rows, rows.len());
    let names: BTreeSet<&str> = rows.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(names.len(), rows.len(), "no operation has two rows");
}
