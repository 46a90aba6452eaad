//! The per-operation report of the API test suite: for every operation (root field) of
//! the schema, how many calls the tests made and how each ended (`ok` or the error
//! code), as the server's own metrics counted them. Operations no test called are
//! listed as such.
//!
//! Every API test runs in this one process, so the process's counts are the suite's.
//! [`record_calls`] rewrites the report after each call a test makes, so whatever order
//! the tests run in, the file left when the binary ends holds every call of the run:
//! `target/graphql-operation-report.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use aula_api::metrics::schema_operations;

/// `operation -> outcome -> calls`.
pub type Recorded = BTreeMap<String, BTreeMap<String, u64>>;

pub struct Row {
    pub kind: String,
    pub operation: String,
    pub calls: u64,
    pub outcomes: BTreeMap<String, u64>,
}

/// Held while the report is written (and, by its test, read back): the snapshot is
/// taken under it, so the last file written is the newest.
pub fn lock() -> MutexGuard<'static, ()> {
    static WRITE: Mutex<()> = Mutex::new(());
    WRITE.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's GraphQL operation counts.
pub fn recorded() -> Recorded {
    let mut calls = Recorded::new();
    for (operation, outcome, n) in aula_api::metrics::graphql_calls() {
        *calls
            .entry(operation)
            .or_default()
            .entry(outcome)
            .or_default() += n;
    }
    calls
}

pub fn rows(recorded: &Recorded) -> Vec<Row> {
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

pub fn markdown(rows: &[Row]) -> String {
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

/// `target/graphql-operation-report.md`.
pub fn path() -> PathBuf {
    // The test binary is target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .map(|target| target.join("graphql-operation-report.md"))
        .unwrap_or_else(|| std::env::temp_dir().join("aula-graphql-operation-report.md"))
}

/// Writes the report of `recorded` (whole, through a temporary file); the caller holds
/// [`lock`]. Returns its rows.
pub fn write(recorded: &Recorded) -> Vec<Row> {
    let rows = rows(recorded);
    let path = path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let temporary = path.with_extension(format!("md.{}.tmp", std::process::id()));
    if std::fs::write(&temporary, markdown(&rows)).is_ok() {
        let _ = std::fs::rename(&temporary, &path);
    }
    rows
}

/// Rewrites the report with this process's counts so far.
pub fn record_calls() {
    let _guard = lock();
    let recorded = recorded();
    if recorded.is_empty() {
        return;
    }
    write(&recorded);
}
