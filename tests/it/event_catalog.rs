//! `docs/events.md` is generated from the code (`aula events catalog`) and must not go
//! stale: this test fails when it differs. `AULA_BLESS=1 cargo test --test
//! event_catalog` rewrites it.

const DOCS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md");

#[test]
fn docs_events_md_matches_the_code() {
    let rendered = aula::catalog::markdown();
    if std::env::var_os("AULA_BLESS").is_some() {
        std::fs::write(DOCS_PATH, &rendered).expect("docs/events.md is writable");
    }
    let committed = std::fs::read_to_string(DOCS_PATH).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/events.md is out of date. Regenerate it with `cargo run -- events catalog > docs/events.md` \
         (or `AULA_BLESS=1 cargo test --test it event_catalog::`)."
    );
}

#[test]
fn the_catalog_names_the_real_consumers() {
    let rendered = aula::catalog::markdown();
    let row = |event: &str| {
        rendered
            .lines()
            .find(|line| line.starts_with(&format!("| [{event}]")))
            .unwrap_or_else(|| panic!("{event} is in the summary table"))
            .to_owned()
    };
    assert!(row("PendingUserRegisterCreated").contains("task: email.signup_confirmation"));
    assert!(row("StudentEnrolled").contains("projection: age_metrics"));
    assert!(row("StudentEnrolled").contains("projection: course_capacity"));
    assert!(row("EnrollmentRequested").contains("task: enrollment.decide"));
    assert!(!row("UserCreated").contains("projection: course_capacity"));
}
