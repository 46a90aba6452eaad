//! Exam notes: recording a student's note on an exam of a course, and correcting it.

use async_graphql::InputObject;
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct GradeMutation;

/// An exam note for a student of a course.
#[derive(InputObject)]
pub struct RecordExamNoteInput {
    /// The course the exam belongs to.
    pub course_id: Uuid,
    /// The student graded.
    pub student_id: Uuid,
    /// The exam's name (e.g. `Midterm`).
    pub exam_name: String,
    /// 0 to 10, at most two decimals.
    pub note: f64,
    /// Teachers record as themselves; managers and admins name the teacher.
    pub teacher_id: Option<Uuid>,
}

/// A correction of a recorded exam note.
#[derive(InputObject)]
pub struct ChangeExamNoteInput {
    /// The grade to correct (returned by `recordExamNote`).
    pub exam_grade_id: Uuid,
    /// The corrected note: 0 to 10, at most two decimals.
    pub note: f64,
    /// Teachers correct as themselves; managers and admins name the teacher.
    pub teacher_id: Option<Uuid>,
}

command_mutations! {
impl GradeMutation {
    /// Teacher, manager (own institution) or admin. Records a student's note on an
    /// exam of a course. Returns the exam grade id (one per course, student and exam).
    async fn record_exam_note(
        ctx, input: RecordExamNoteInput, wait_for_projections
    ) -> RecordExamNotePayload {
        let (claims, state) = authorize(ctx, GRADERS)?;
        validate! {
            exam_name = parse("examName", ExamName::parse(&input.exam_name)),
            note = parse("note", GradeNote::from_f64(input.note)),
        }
        let student = load(&state.buses.student, input.student_id).await?;
        let institution_id = student
            .institution_id()
            .ok_or_else(|| ApiError::not_found("STUDENT_NOT_FOUND", "student not found"))?
            .as_uuid();
        auth::ensure_institution(claims, institution_id)?;
        let course_institution = course_institution(state, input.course_id).await?;
        auth::ensure_institution(claims, course_institution)?;
        if course_institution != institution_id {
            return Err(ApiError::validation(
                "courseId",
                "OTHER_INSTITUTION",
                "the course and the student belong to different institutions",
            ));
        }
        let teacher_id = acting_teacher(state, claims, input.teacher_id, institution_id).await?;
        // Only a student enrolled in the course (by the student's e-mail) gets notes in
        // it; the course's stream is the truth of who holds a seat now.
        let course = load(&state.buses.course, input.course_id).await?;
        let enrolled = student.email().is_some_and(|email| {
            course
                .enrolled()
                .values()
                .any(|enrollment| &enrollment.email == email)
        });
        if !enrolled {
            return Err(ApiError::conflict(
                "STUDENT_NOT_ENROLLED",
                "the student is not enrolled in this course",
            ));
        }
        let grade_id = exam_grade_id(input.course_id, input.student_id, &exam_name);
        let command = ExamGradeCommand::RecordNote {
            institution_id: InstitutionId::from_uuid(institution_id),
            course_id: CourseId::from_uuid(input.course_id),
            student_id: StudentId::from_uuid(input.student_id),
            teacher_id,
            exam_name,
            note,
            at: state.clock.now(),
        };
        Recording::new(ctx, Some(institution_id), wait_for_projections)
            .run(&state.buses.exam_grade, grade_id, command, grade_id)
            .await
    }

    /// Teacher, manager (own institution) or admin. Corrects a recorded note.
    /// Returns the exam grade id.
    async fn change_exam_note(
        ctx, input: ChangeExamNoteInput, wait_for_projections
    ) -> ChangeExamNotePayload {
        let (claims, state) = authorize(ctx, GRADERS)?;
        let note = parse("note", GradeNote::from_f64(input.note))?;
        let grade = load(&state.buses.exam_grade, input.exam_grade_id).await?;
        let institution_id = grade
            .institution_id()
            .ok_or_else(|| {
                ApiError::not_found("EXAM_GRADE_NOT_FOUND", "no note was recorded for this id")
            })?
            .as_uuid();
        auth::ensure_institution(claims, institution_id)?;
        let teacher_id = acting_teacher(state, claims, input.teacher_id, institution_id).await?;
        let command = ExamGradeCommand::ChangeNote {
            note,
            teacher_id,
            at: state.clock.now(),
        };
        Recording::new(ctx, Some(institution_id), wait_for_projections)
            .run(&state.buses.exam_grade, input.exam_grade_id, command, input.exam_grade_id)
            .await
    }
}
}

/// The teacher on whose behalf a note is recorded: a teacher is always itself; a
/// manager or admin names one. The teacher must belong to `institution`.
async fn acting_teacher(
    state: &AppState,
    claims: &Claims,
    requested: Option<Uuid>,
    institution: Uuid,
) -> Result<TeacherId, ApiError> {
    let teacher_id = match (claims.role, requested) {
        (DomainRole::Teacher, Some(other)) if other != claims.user_id => {
            return Err(ApiError::forbidden(
                "OTHER_TEACHER",
                "a teacher records notes as itself",
            ))
        }
        (DomainRole::Teacher, _) => claims.user_id,
        (_, Some(id)) => id,
        (_, None) => {
            return Err(ApiError::validation(
                "teacherId",
                "EMPTY",
                "name the teacher the note is recorded for",
            ))
        }
    };
    let teacher = load(&state.buses.teacher, teacher_id).await?;
    match teacher.institution_id() {
        None if claims.role == DomainRole::Teacher => Err(ApiError::forbidden(
            "NOT_A_TEACHER",
            "your account has no teacher record",
        )),
        None => Err(ApiError::not_found(
            "TEACHER_NOT_FOUND",
            "teacher not found",
        )),
        Some(owner) if owner.as_uuid() != institution => Err(ApiError::forbidden(
            "OTHER_INSTITUTION",
            "the teacher belongs to another institution",
        )),
        Some(_) => Ok(TeacherId::from_uuid(teacher_id)),
    }
}

/// A deterministic id per (course, student, exam), so recording the same exam twice is
/// a CONFLICT rather than a second grade.
fn exam_grade_id(course: Uuid, student: Uuid, exam: &ExamName) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x6175_6c61_2d65_7861_6d2d_6772_6164_6573);
    let key = format!("{course}/{student}/{}", exam.as_str().to_lowercase());
    Uuid::new_v5(&NAMESPACE, key.as_bytes())
}
