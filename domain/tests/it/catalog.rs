//! The event catalog in `docs/events.md` stays in step with the code, and lists every
//! event variant.

use std::collections::BTreeSet;

use aula_domain::catalog::{catalog, sample_events};

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
        (
            "user",
            include_str!("../../src/user/events.rs"),
            "UserEvent",
        ),
        (
            "institution",
            include_str!("../../src/institution.rs"),
            "InstitutionEvent",
        ),
        (
            "student",
            include_str!("../../src/student.rs"),
            "StudentEvent",
        ),
        (
            "teacher",
            include_str!("../../src/teacher.rs"),
            "TeacherEvent",
        ),
        (
            "application",
            include_str!("../../src/application.rs"),
            "ApplicationEvent",
        ),
        ("course", include_str!("../../src/course.rs"), "CourseEvent"),
        (
            "exam_grade",
            include_str!("../../src/exam_grade.rs"),
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
    // The domain lists the commands chained to an event; tasks and projections are
    // added by the binary's catalog (tests/event_catalog.rs).
    assert!(consumers_of("CourseOffered")
        .iter()
        .any(|c| c.contains("OpenCourse")));
    let student_created = catalog
        .iter()
        .find(|event| event.event_type == "StudentCreated")
        .expect("StudentCreated is catalogued");
    assert_eq!(student_created.version, "2.0");
    assert_eq!(student_created.aggregate, "student");
    // Versions are per event type: the login events gained their source in 2.0, the
    // other user events are still at 1.0.
    let version_of = |event_type: &str| {
        catalog
            .iter()
            .find(|event| event.event_type == event_type)
            .map(|event| event.version.as_str())
    };
    for event_type in ["LoginSucceeded", "LoginFailed", "UserLockedOut"] {
        assert_eq!(version_of(event_type), Some("2.0"), "{event_type}");
    }
    assert_eq!(version_of("UserCreated"), Some("1.0"));
}
