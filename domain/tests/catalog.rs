//! The event catalog in `docs/events.md` stays in step with the code, and lists every
//! event variant.

use std::collections::BTreeSet;

use aula_domain::catalog::{catalog, render_markdown, sample_events};

const DOCS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");

#[test]
fn docs_events_md_matches_the_code() {
    let rendered = render_markdown();
    if std::env::var("AULA_BLESS").is_ok_and(|value| value == "1") {
        std::fs::write(DOCS_PATH, &rendered).expect("docs/events.md is writable");
        return;
    }
    let on_disk = std::fs::read_to_string(DOCS_PATH).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "docs/events.md is out of date with the domain's events. Regenerate it with \
         `aula events catalog > docs/events.md` (or `AULA_BLESS=1 cargo test -p aula-domain \
         --test catalog`) and review the diff."
    );
}

/// Variant names of `pub enum <name>` in a source file: lines indented by exactly four
/// spaces that start with an upper-case identifier (attributes and docs are skipped).
fn enum_variants(source: &str, name: &str) -> BTreeSet<String> {
    let header = format!("pub enum {name} {{");
    let body = source
        .split_once(&header)
        .unwrap_or_else(|| panic!("`{header}` not found"))
        .1;
    body.lines()
        .take_while(|line| *line != "}")
        .filter_map(|line| line.strip_prefix("    "))
        .filter(|line| line.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|line| {
            line.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_event_variant_has_a_sample_in_the_catalog() {
    let sources = [
        ("user", include_str!("../src/user.rs"), "UserEvent"),
        (
            "institution",
            include_str!("../src/institution.rs"),
            "InstitutionEvent",
        ),
        ("student", include_str!("../src/student.rs"), "StudentEvent"),
        ("teacher", include_str!("../src/teacher.rs"), "TeacherEvent"),
        ("course", include_str!("../src/course.rs"), "CourseEvent"),
        (
            "exam_grade",
            include_str!("../src/exam_grade.rs"),
            "ExamGradeEvent",
        ),
    ];
    let samples = sample_events();
    for (aggregate, source, enum_name) in sources {
        let declared = enum_variants(source, enum_name);
        assert!(!declared.is_empty(), "no variants parsed for {enum_name}");
        let sampled: BTreeSet<String> = samples
            .iter()
            .filter(|sample| sample.aggregate == aggregate)
            .map(|sample| sample.event_type.clone())
            .collect();
        assert_eq!(
            declared, sampled,
            "{enum_name}: every variant needs exactly one entry in {aggregate}::sample_events()"
        );
    }
    assert_eq!(catalog().len(), samples.len());
}

#[test]
fn catalog_lists_the_seed_events_with_their_tasks() {
    let catalog = catalog();
    let consumers_of = |event_type: &str| {
        catalog
            .iter()
            .find(|event| event.event_type == event_type)
            .unwrap_or_else(|| panic!("{event_type} is catalogued"))
            .consumers
            .clone()
    };
    assert!(consumers_of("PendingUserRegisterCreated")
        .contains(&"task: send_signup_confirmation_email"));
    assert!(consumers_of("InstitutionCreated").contains(&"task: seed_demo_data"));
    assert!(consumers_of("ExamGradeNoteAdded").contains(&"task: notify_student_new_grade"));
    let student_created = catalog
        .iter()
        .find(|event| event.event_type == "StudentCreated")
        .expect("StudentCreated is catalogued");
    assert_eq!(student_created.version, "2.0");
    assert_eq!(student_created.aggregate, "student");
}
