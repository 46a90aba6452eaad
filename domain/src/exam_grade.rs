//! The `ExamGrade` aggregate: one student's note on one exam (one aggregate per
//! (exam, student) pair, so teachers grading a class never contend for one stream).
//!
//! Changing a note to the value it already has is accepted and records nothing, so a
//! retried request is harmless. Whether the teacher may grade this student is an
//! authorization question answered by the API before the command is sent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::impl_aggregate;
use crate::errors::{impl_rejection, RejectionKind};
use crate::event_types::impl_domain_event;
use crate::values::{CourseId, ExamName, GradeNote, InstitutionId, StudentId, TeacherId};

/// The exam grade aggregate needs no external services.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExamGradeServices;

#[derive(Debug, Clone, PartialEq)]
pub enum ExamGradeCommand {
    /// Actor: a teacher (or the demo-data seeding task).
    RecordNote {
        institution_id: InstitutionId,
        course_id: CourseId,
        student_id: StudentId,
        teacher_id: TeacherId,
        exam_name: ExamName,
        note: GradeNote,
        at: DateTime<Utc>,
    },
    /// Actor: a teacher correcting a recorded note.
    ChangeNote {
        note: GradeNote,
        teacher_id: TeacherId,
        at: DateTime<Utc>,
    },
}

/// Events of the `exam_grade` aggregate, internally tagged: `{"type": ..., ...}`.
/// Notes serialize as two-decimal strings (see [`GradeNote`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ExamGradeEvent {
    ExamGradeNoteAdded {
        institution_id: InstitutionId,
        course_id: CourseId,
        student_id: StudentId,
        teacher_id: TeacherId,
        exam_name: ExamName,
        note: GradeNote,
        at: DateTime<Utc>,
    },
    ExamGradeNoteChanged {
        from: GradeNote,
        to: GradeNote,
        teacher_id: TeacherId,
        at: DateTime<Utc>,
    },
}

impl_domain_event!(ExamGradeEvent {
    ExamGradeNoteAdded => EXAM_GRADE_NOTE_ADDED,
    ExamGradeNoteChanged => EXAM_GRADE_NOTE_CHANGED,
});

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExamGradeError {
    #[error("no note was recorded for this exam and student")]
    NotFound,
    #[error("a note was already recorded for this exam and student")]
    AlreadyRecorded,
}

impl ExamGradeError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "EXAM_GRADE_NOT_FOUND",
            Self::AlreadyRecorded => "EXAM_GRADE_ALREADY_RECORDED",
        }
    }

    pub const fn kind(&self) -> RejectionKind {
        match self {
            Self::NotFound => RejectionKind::NotFound,
            Self::AlreadyRecorded => RejectionKind::Conflict,
        }
    }
}

impl_rejection!(ExamGradeError);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExamGrade {
    institution_id: Option<InstitutionId>,
    course_id: Option<CourseId>,
    student_id: Option<StudentId>,
    exam_name: Option<ExamName>,
    note: Option<GradeNote>,
}

impl ExamGrade {
    pub fn note(&self) -> Option<GradeNote> {
        self.note
    }
    pub fn student_id(&self) -> Option<StudentId> {
        self.student_id
    }
    pub fn course_id(&self) -> Option<CourseId> {
        self.course_id
    }
    pub fn institution_id(&self) -> Option<InstitutionId> {
        self.institution_id
    }
    pub fn exam_name(&self) -> Option<&ExamName> {
        self.exam_name.as_ref()
    }
}

impl_aggregate!(
    ExamGrade,
    type: "exam_grade",
    command: ExamGradeCommand,
    event: ExamGradeEvent,
    error: ExamGradeError,
    services: ExamGradeServices,
);

impl ExamGrade {
    fn decide(&self, command: ExamGradeCommand) -> Result<Vec<ExamGradeEvent>, ExamGradeError> {
        let event = match command {
            ExamGradeCommand::RecordNote {
                institution_id,
                course_id,
                student_id,
                teacher_id,
                exam_name,
                note,
                at,
            } => {
                if self.note.is_some() {
                    return Err(ExamGradeError::AlreadyRecorded);
                }
                ExamGradeEvent::ExamGradeNoteAdded {
                    institution_id,
                    course_id,
                    student_id,
                    teacher_id,
                    exam_name,
                    note,
                    at,
                }
            }
            ExamGradeCommand::ChangeNote {
                note,
                teacher_id,
                at,
            } => {
                let current = self.note.ok_or(ExamGradeError::NotFound)?;
                if current == note {
                    return Ok(vec![]);
                }
                ExamGradeEvent::ExamGradeNoteChanged {
                    from: current,
                    to: note,
                    teacher_id,
                    at,
                }
            }
        };
        Ok(vec![event])
    }

    fn evolve(&mut self, event: ExamGradeEvent) {
        match event {
            ExamGradeEvent::ExamGradeNoteAdded {
                institution_id,
                course_id,
                student_id,
                exam_name,
                note,
                ..
            } => {
                self.institution_id = Some(institution_id);
                self.course_id = Some(course_id);
                self.student_id = Some(student_id);
                self.exam_name = Some(exam_name);
                self.note = Some(note);
            }
            ExamGradeEvent::ExamGradeNoteChanged { to, .. } => self.note = Some(to),
        }
    }
}

/// One instance of every [`ExamGradeEvent`] variant (catalog and round-trip tests).
pub fn sample_events() -> Vec<ExamGradeEvent> {
    use crate::samples::*;
    vec![
        ExamGradeEvent::ExamGradeNoteAdded {
            institution_id: institution_id(),
            course_id: course_id(),
            student_id: student_id(),
            teacher_id: teacher_id(),
            exam_name: ExamName::parse("Midterm").expect("valid literal"),
            note: note(),
            at: instant(),
        },
        ExamGradeEvent::ExamGradeNoteChanged {
            from: note(),
            to: GradeNote::parse("8.25").expect("valid literal"),
            teacher_id: teacher_id(),
            at: instant(),
        },
    ]
}
