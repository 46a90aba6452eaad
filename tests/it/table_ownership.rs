//! One owner per table: ARCHITECTURE.md's "Who owns which table" names, for every table
//! the migrations create, the one crate that writes and queries it, and the documented
//! exceptions. This test reads that map and every crate's `src/` (Rust and embedded SQL)
//! and fails, naming file and line, when SQL outside a table's owner names it.
//!
//! "SQL naming a table" is an upper-case keyword that takes a table (`FROM`, `JOIN`,
//! `INTO`, `UPDATE`, `TABLE`, `COPY`, `TRUNCATE`, `REFERENCES`, `LIKE`) followed,
//! possibly on the next line and after a schema prefix, by a table the migrations create.
//! Comment lines are skipped. Only `src/` is read: a crate's `tests/` and `benches/` may
//! set up and inspect any table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SECTION: &str = "## Who owns which table";
const KEYWORDS: &[&str] = &[
    "FROM",
    "JOIN",
    "INTO",
    "UPDATE",
    "TABLE",
    "COPY",
    "TRUNCATE",
    "REFERENCES",
    "LIKE",
];
/// Words that may stand between a keyword and its table (`DELETE FROM ONLY x`,
/// `CREATE TABLE IF NOT EXISTS x`).
const FILLERS: &[&str] = &["ONLY", "IF", "NOT", "EXISTS"];

/// One row of the map.
struct Owner {
    crate_name: String,
    /// Crate names or paths (files or folders, from the repository root) that may also
    /// name the table.
    exceptions: Vec<String>,
}

/// The map: table -> owner, and the paths exempt from the check altogether.
struct Map {
    tables: BTreeMap<String, Owner>,
    exempt: Vec<String>,
}

/// The backticked words of a Markdown table cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn cells(line: &str) -> Vec<&str> {
    let line = line.trim().trim_start_matches('|').trim_end_matches('|');
    line.split('|').map(str::trim).collect()
}

fn read_map() -> Map {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md is readable");
    let start = text
        .find(SECTION)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no section {SECTION:?}"));
    let section = &text[start + SECTION.len()..];
    let section = section.find("\n## ").map_or(section, |end| &section[..end]);
    let mut tables = BTreeMap::new();
    let mut exempt = Vec::new();
    let mut header: Option<String> = None;
    for line in section.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            header = None;
            continue;
        }
        let row = cells(line);
        if header.is_none() {
            header = Some(row[0].to_owned());
            continue;
        }
        if row[0].starts_with("---") || row[0].starts_with(":--") {
            continue;
        }
        match header.as_deref() {
            Some("Table") => {
                assert!(row.len() >= 4, "map row with fewer than 4 cells: {line}");
                let table = backticked(row[0]);
                let owner = backticked(row[1]);
                assert!(
                    table.len() == 1 && owner.len() == 1,
                    "a map row names one table and one owner: {line}"
                );
                let exceptions = backticked(row[2]);
                assert!(
                    exceptions.is_empty() || !row[3].is_empty(),
                    "an exception says why: {line}"
                );
                let previous = tables.insert(
                    table[0].clone(),
                    Owner {
                        crate_name: owner[0].clone(),
                        exceptions,
                    },
                );
                assert!(previous.is_none(), "table {} listed twice", table[0]);
            }
            Some("Exempt path") => {
                assert!(
                    row.len() >= 2 && !row[1].is_empty(),
                    "an exempt path says why: {line}"
                );
                exempt.extend(backticked(row[0]));
            }
            other => panic!("unknown table in {SECTION:?}: header {other:?}"),
        }
    }
    Map { tables, exempt }
}

/// The relations the migrations leave: tables and views created, in migration order,
/// with `ALTER TABLE x RENAME TO y` followed (0046 renamed `tasks` to `task_history`
/// and made `tasks` a view over the queue and the history).
fn migrated_tables() -> BTreeSet<String> {
    let is_name =
        |name: &str| !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    let mut tables = BTreeSet::new();
    let mut paths = files(&Path::new(ROOT).join("migrations/sql"), &["sql"]);
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("migration is readable");
        let words: Vec<&str> = text.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            let at = |k: usize| words.get(i + k).copied().unwrap_or("");
            let created = word.eq_ignore_ascii_case("CREATE")
                && (at(1).eq_ignore_ascii_case("TABLE") || at(1).eq_ignore_ascii_case("VIEW"));
            if created {
                let name = at(2).trim_end_matches('(');
                if is_name(name) {
                    tables.insert(name.to_owned());
                }
            }
            let renamed = word.eq_ignore_ascii_case("ALTER")
                && at(1).eq_ignore_ascii_case("TABLE")
                && at(3).eq_ignore_ascii_case("RENAME")
                && at(4).eq_ignore_ascii_case("TO");
            if renamed {
                let (from, to) = (at(2), at(5).trim_end_matches(';'));
                if is_name(from) && is_name(to) && tables.remove(from) {
                    tables.insert(to.to_owned());
                }
            }
        }
    }
    tables
}

/// The workspace's crates: (name used in the map, source folder).
fn crates() -> Vec<(String, PathBuf)> {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml"))
        .expect("Cargo.toml is readable");
    let members = manifest
        .lines()
        .find(|line| line.trim_start().starts_with("members"))
        .expect("the workspace lists its members");
    members
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|member| {
            // The root package is `aula`; the others go by their folder's name.
            let name = if member == "." { "aula" } else { member };
            (name.to_owned(), Path::new(ROOT).join(member).join("src"))
        })
        .collect()
}

fn files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            found.extend(files(&path, extensions));
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e))
        {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The tables `text` names in SQL, with their 1-based line numbers.
fn tables_named(text: &str, sql: bool, known: &BTreeSet<String>) -> Vec<(usize, String)> {
    let comment = if sql { "--" } else { "//" };
    let mut words = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with(comment) {
            continue;
        }
        let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '{' | '}');
        words.extend(
            line.split(|c: char| !is_word(c))
                .filter(|w| !w.is_empty())
                .map(|w| (number + 1, w)),
        );
    }
    let mut hits = Vec::new();
    for (i, (_, word)) in words.iter().enumerate() {
        if !KEYWORDS.contains(word) {
            continue;
        }
        let Some((line, name)) = words[i + 1..]
            .iter()
            .find(|(_, w)| !FILLERS.contains(w))
            .copied()
        else {
            continue;
        };
        // `schema.table` and `{schema}.table` name the table.
        let name = name.rsplit('.').next().unwrap_or(name);
        if known.contains(name) {
            hits.push((line, name.to_owned()));
        }
    }
    hits
}

fn allowed(owner: &Owner, crate_name: &str, path: &str) -> bool {
    owner.crate_name == crate_name
        || owner
            .exceptions
            .iter()
            .any(|e| e == crate_name || (e.contains('/') && path.starts_with(e.as_str())))
}

#[test]
fn every_migrated_table_has_one_owner_in_the_map() {
    let map = read_map();
    let migrated = migrated_tables();
    let crates: BTreeSet<String> = crates().into_iter().map(|(name, _)| name).collect();
    let listed: BTreeSet<String> = map.tables.keys().cloned().collect();
    let missing: Vec<_> = migrated.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&migrated).collect();
    assert!(missing.is_empty(), "tables without an owner: {missing:?}");
    assert!(
        unknown.is_empty(),
        "the map names tables no migration creates: {unknown:?}"
    );
    for (table, owner) in &map.tables {
        assert!(
            crates.contains(&owner.crate_name),
            "{table}: owner {} is not a workspace crate",
            owner.crate_name
        );
        for exception in &owner.exceptions {
            assert!(
                crates.contains(exception) || Path::new(ROOT).join(exception).exists(),
                "{table}: exception {exception} is neither a crate nor a path"
            );
        }
    }
    for path in &map.exempt {
        assert!(
            Path::new(ROOT).join(path).exists(),
            "exempt path {path} does not exist"
        );
    }
}

#[test]
fn sql_names_a_table_only_in_its_owner() {
    let map = read_map();
    let known: BTreeSet<String> = map.tables.keys().cloned().collect();
    let mut violations = Vec::new();
    let mut scanned = 0;
    for (crate_name, src) in crates() {
        for file in files(&src, &["rs", "sql"]) {
            let path = file
                .strip_prefix(ROOT)
                .expect("inside the repository")
                .to_string_lossy()
                .replace('\\', "/");
            if map.exempt.iter().any(|e| path.starts_with(e.as_str())) {
                continue;
            }
            scanned += 1;
            let text = std::fs::read_to_string(&file).expect("source is readable");
            let sql = path.ends_with(".sql");
            for (line, table) in tables_named(&text, sql, &known) {
                let owner = &map.tables[&table];
                if !allowed(owner, &crate_name, &path) {
                    violations.push(format!(
                        "{path}:{line}: `{crate_name}` names `{table}`, owned by `{}`",
                        owner.crate_name
                    ));
                }
            }
        }
    }
    assert!(
        scanned > 50,
        "only {scanned} source files read: wrong root?"
    );
    assert!(
        violations.is_empty(),
        "SQL names tables outside their owner (ask the owner's query functions, or \
         document an exception in ARCHITECTURE.md's {SECTION:?}):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scanner_sees_sql_across_lines_and_schemas() {
    let known: BTreeSet<String> = ["events", "tasks"].map(String::from).into();
    let text = "let q = \"SELECT 1 FROM\n    {schema}.events e JOIN tasks t\";\n// FROM tasks\n";
    assert_eq!(
        tables_named(text, false, &known),
        vec![(2, "events".to_owned()), (2, "tasks".to_owned())]
    );
    assert_eq!(
        tables_named("DELETE FROM ONLY tasks", false, &known),
        vec![(1, "tasks".to_owned())]
    );
    assert!(tables_named("the events from tasks", false, &known).is_empty());
}
