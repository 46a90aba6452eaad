//! The per-operation report of the API test suite: for every operation (root field) of
//! the schema, how many calls the tests made and how each ended (`ok` or the error
//! code), from the counts each test binary left in `target/graphql-calls/` (see
//! `common::record_calls`). Operations no test called are listed as such.
//!
//! Cargo runs integration test binaries in name order, so this one (`zz_`) runs last
//! in `cargo test -p aula-api` and sees every other binary's counts. Run alone, it
//! reports what earlier runs left (or "no calls recorded" everywhere). The report is
//! printed on stderr (also without `--nocapture`) and written to
//! `target/graphql-operation-report.md`.

use crate::common;

use std::collections::BTreeMap;

use aula_api::metrics::schema_operations;
use serde_json::Value;

/// `operation -> outcome -> calls`, summed over every test binary's file.
fn recorded_calls() -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut calls: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(common::calls_dir()) else {
        return calls;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let file: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
        for row in file["calls"].as_array().into_iter().flatten() {
            let operation = row["operation"].as_str().expect("operation").to_owned();
            let outcome = row["outcome"].as_str().expect("outcome").to_owned();
            let n = row["calls"].as_u64().expect("calls");
            *calls
                .entry(operation)
                .or_default()
                .entry(outcome)
                .or_default() += n;
        }
    }
    calls
}

struct Row {
    kind: String,
    operation: String,
    calls: u64,
    outcomes: BTreeMap<String, u64>,
}

fn rows(recorded: &BTreeMap<String, BTreeMap<String, u64>>) -> Vec<Row> {
    let mut rows: Vec<Row> = schema_operations()
        .iter()
        .map(|op| {
            let outcomes = recorded.get(&op.name).cloned().unwrap_or_default();
            Row {
                kind: op.kind.to_owned(),
                operation: op.name.clone(),
                calls: outcomes.values().sum(),
                outcomes,
            }
        })
        .collect();
    // Calls that named no operation of the schema (refused requests, unknown fields,
    // introspection).
    for (operation, outcomes) in recorded {
        if !schema_operations().iter().any(|op| &op.name == operation) {
            rows.push(Row {
                kind: "other".into(),
                operation: operation.clone(),
                calls: outcomes.values().sum(),
                outcomes: outcomes.clone(),
            });
        }
    }
    rows
}

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "# GraphQL operations called by the API tests\n\n\
         | kind | operation | calls | outcomes |\n|---|---|---:|---|\n",
    );
    for row in rows {
        let outcomes = if row.outcomes.is_empty() {
            "no calls recorded".to_owned()
        } else {
            row.outcomes
                .iter()
                .map(|(outcome, n)| format!("{outcome}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            row.kind, row.operation, row.calls, outcomes
        ));
    }
    let called = rows
        .iter()
        .filter(|r| r.kind != "other" && r.calls > 0)
        .count();
    let schema = rows.iter().filter(|r| r.kind != "other").count();
    out.push_str(&format!(
        "\n{called} of {schema} schema operations were called; {} calls in all.\n",
        rows.iter().map(|r| r.calls).sum::<u64>()
    ));
    out
}

#[test]
fn report_of_calls_per_operation() {
    let recorded = recorded_calls();
    let rows = rows(&recorded);
    let report = markdown(&rows);
    // Straight to stderr: the test harness captures `println!`, and the suite should
    // end with this table even without `--nocapture`.
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "\n{report}");
    }
    let path = common::calls_dir()
        .parent()
        .expect("target directory")
        .join("graphql-operation-report.md");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &report).unwrap();

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
}
