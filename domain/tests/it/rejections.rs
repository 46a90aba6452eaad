//! Every aggregate's rejections keep their stable code and kind: clients branch on the
//! code, and the API maps the kind once, through the [`Rejection`] trait.

use aula_domain::course::EnrollmentError;
use aula_domain::errors::{Rejection, RejectionKind};
use aula_domain::exam_grade::ExamGradeError;
use aula_domain::institution::InstitutionError;
use aula_domain::student::StudentError;
use aula_domain::teacher::TeacherError;
use aula_domain::user::UserError;
use chrono::{TimeZone, Utc};

/// Asserts a rejection's code and kind, through its own methods and through the trait
/// that gives the API one generic path.
macro_rules! assert_rejection {
    ($error:expr, $code:expr, $kind:expr) => {{
        let error = $error;
        assert_eq!(error.code(), $code);
        assert_eq!(error.kind(), $kind);
        let rejection: &dyn Rejection = &error;
        assert_eq!(rejection.code(), $code);
        assert_eq!(rejection.kind(), $kind);
    }};
}

#[test]
fn course_rejections() {
    use EnrollmentError::*;
    assert_rejection!(
        AlreadyDecided,
        "APPLICATION_ALREADY_DECIDED",
        RejectionKind::Conflict
    );
    assert_rejection!(CourseNotFound, "COURSE_NOT_FOUND", RejectionKind::NotFound);
}

#[test]
fn exam_grade_rejections() {
    use ExamGradeError::*;
    assert_rejection!(
        AlreadyRecorded,
        "EXAM_GRADE_ALREADY_RECORDED",
        RejectionKind::Conflict
    );
    assert_rejection!(NotFound, "EXAM_GRADE_NOT_FOUND", RejectionKind::NotFound);
}

#[test]
fn institution_rejections() {
    use InstitutionError::*;
    assert_rejection!(CampusNotFound, "CAMPUS_NOT_FOUND", RejectionKind::NotFound);
    assert_rejection!(
        DuplicateCourseName,
        "DUPLICATE_COURSE_NAME",
        RejectionKind::Conflict
    );
}

#[test]
fn people_rejections() {
    let conflict = RejectionKind::Conflict;
    assert_rejection!(
        StudentError::AlreadyExists,
        "STUDENT_ALREADY_EXISTS",
        conflict
    );
    assert_rejection!(
        TeacherError::AlreadyExists,
        "TEACHER_ALREADY_EXISTS",
        conflict
    );
}

#[test]
fn user_rejections() {
    use UserError::*;
    let until = Utc.with_ymd_and_hms(2026, 2, 3, 12, 15, 0).unwrap();
    assert_rejection!(NotFound, "USER_NOT_FOUND", RejectionKind::NotFound);
    assert_rejection!(
        LockedOut { until },
        "USER_LOCKED_OUT",
        RejectionKind::Forbidden
    );
    assert_rejection!(
        ResetTokenExpired,
        "RESET_TOKEN_EXPIRED",
        RejectionKind::Unauthenticated
    );
    assert_rejection!(
        AlreadyConfirmed,
        "SIGN_UP_ALREADY_CONFIRMED",
        RejectionKind::Conflict
    );
    assert_rejection!(
        InstitutionRequired,
        "INSTITUTION_REQUIRED",
        RejectionKind::Validation
    );
}
