//! Given/when/then tests of the `ExamGrade` aggregate.

use aula_domain::exam_grade::{
    ExamGrade, ExamGradeCommand, ExamGradeError, ExamGradeEvent, ExamGradeServices,
};
use aula_domain::values::{ExamName, GradeNote};
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use crate::fixtures::{course_id, institution_id, student_id, teacher_id};

type ExamGradeTest = TestFramework<ExamGrade>;

fn framework() -> ExamGradeTest {
    ExamGradeTest::with(ExamGradeServices)
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 3, 10, 0, 0).unwrap()
}

fn note(raw: &str) -> GradeNote {
    GradeNote::parse(raw).unwrap()
}

/// The fixed exam and student's note `raw`, recorded by teacher 6: the fields that
/// `RecordNote` carries and `ExamGradeNoteAdded` records alike.
macro_rules! recorded_note {
    ($($variant:ident)::+, $raw:expr) => {
        $($variant)::+ {
            institution_id: institution_id(),
            course_id: course_id(),
            student_id: student_id(),
            teacher_id: teacher_id(),
            exam_name: ExamName::parse("Midterm").unwrap(),
            note: note($raw),
            at: at(),
        }
    };
}

fn record(raw: &str) -> ExamGradeCommand {
    recorded_note!(ExamGradeCommand::RecordNote, raw)
}

fn added(raw: &str) -> ExamGradeEvent {
    recorded_note!(ExamGradeEvent::ExamGradeNoteAdded, raw)
}

fn changed(from: &str, to: &str) -> ExamGradeEvent {
    ExamGradeEvent::ExamGradeNoteChanged {
        from: note(from),
        to: note(to),
        teacher_id: teacher_id(),
        at: at(),
    }
}

fn change(raw: &str) -> ExamGradeCommand {
    ExamGradeCommand::ChangeNote {
        note: note(raw),
        teacher_id: teacher_id(),
        at: at(),
    }
}

#[test]
fn recording_a_note_records_it() {
    framework()
        .given_no_previous_events()
        .when(record("7.5"))
        .then_expect_events(vec![added("7.50")]);
}

#[test]
fn recording_twice_is_rejected() {
    framework()
        .given(vec![added("7.5")])
        .when(record("8"))
        .then_expect_error(ExamGradeError::AlreadyRecorded);
}

#[test]
fn changing_a_note_records_from_and_to() {
    framework()
        .given(vec![added("7.5")])
        .when(change("8.25"))
        .then_expect_events(vec![changed("7.5", "8.25")]);
}

#[test]
fn changing_from_the_latest_value() {
    framework()
        .given(vec![added("7.5"), changed("7.5", "9")])
        .when(change("10"))
        .then_expect_events(vec![changed("9", "10")]);
}

#[test]
fn changing_to_the_same_note_records_nothing() {
    framework()
        .given(vec![added("7.5")])
        .when(change("7.50"))
        .then_expect_events(vec![]);
}

#[test]
fn changing_an_unrecorded_note_is_not_found() {
    framework()
        .given_no_previous_events()
        .when(change("7"))
        .then_expect_error(ExamGradeError::NotFound);
}
