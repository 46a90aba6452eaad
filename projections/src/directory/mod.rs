//! Projection `directory`: the people of each institution (students and teachers, kept
//! in step with their accounts), every exam grade with its current note, and every
//! application with where its decision stands. It serves the student and teacher lists
//! of managers and admins, and each person's own reads (a student's grades and
//! applications, a teacher's courses and students).
//!
//! Like every domain read model it skips reprocessed copies.

use std::collections::{BTreeMap, HashSet};

use aula_domain::application::ApplicationEvent;
use aula_domain::course::CourseEvent;
use aula_domain::event_types;
use aula_domain::exam_grade::ExamGradeEvent;
use aula_domain::student::StudentEvent;
use aula_domain::teacher::TeacherEvent;
use aula_domain::user::UserEvent;
use aula_eventlog::db::{column, Page};
use aula_eventlog::RecordedEvent;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::copy_rows::CopyRows;
use crate::decode::{aggregate_uuid, decode, is_reprocessed};
use crate::ProjectionError;

mod queries;

pub use queries::{
    application, applications_of_email, course_names, grade, grades_by_teacher, grades_of_student,
    people_by_id, people_of_user, people_page, ApplicationRow, GradeRow, PeoplePage, PeopleQuery,
    PeopleSort, PersonRow,
};

pub const NAME: &str = "directory";
pub const TABLES: &[&str] = &[
    "directory_people",
    "directory_grades",
    "directory_applications",
];

/// The events this read model reads, by aggregate type.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    ("student", event_types::STUDENT_CREATED),
    ("teacher", event_types::TEACHER_CREATED),
    ("user", event_types::USER_UPDATED),
    ("user", event_types::USER_DEACTIVATED),
    ("exam_grade", event_types::EXAM_GRADE_NOTE_ADDED),
    ("exam_grade", event_types::EXAM_GRADE_NOTE_CHANGED),
    ("application", event_types::APPLICATION_SUBMITTED),
    ("course", event_types::ENROLLMENT_REQUESTED),
    ("course", event_types::STUDENT_ENROLLED),
    ("course", event_types::ENROLLMENT_DECLINED),
    ("course", event_types::ENROLLMENT_CANCELLED),
];

/// Whether this read model reads events of this type.
pub fn reads(aggregate_type: &str, event_type: &str) -> bool {
    EVENT_TYPES
        .iter()
        .any(|(aggregate, event)| *aggregate == aggregate_type && *event == event_type)
}

#[derive(Debug, Default)]
pub struct Directory;

read_model_consumer!(Directory);

/// A change to an account, folded over a batch.
#[derive(Debug, Default)]
struct AccountChange {
    name: Option<String>,
    email: Option<String>,
    deactivated: bool,
    position: i64,
}

/// A change of a grade's note, folded over a batch.
#[derive(Debug)]
struct NoteChange {
    note: String,
    teacher_id: Uuid,
    at: DateTime<Utc>,
    position: i64,
}

#[derive(Default)]
struct Batch {
    people: BTreeMap<Uuid, PersonRow>,
    /// The person of each account created in this batch (account events name users).
    person_of_user: BTreeMap<Uuid, Uuid>,
    accounts: BTreeMap<Uuid, AccountChange>,
    grades: BTreeMap<Uuid, GradeRow>,
    notes: BTreeMap<Uuid, NoteChange>,
    applications: BTreeMap<Uuid, ApplicationRow>,
    decisions: BTreeMap<Uuid, (&'static str, i64)>,
}

impl Batch {
    /// Applies an account change: to the person if this batch created it, otherwise
    /// folded with the batch's other changes of that account, written after the
    /// inserts. (Folding is exact: the changes apply in order to a row that existed
    /// before the batch; see the flush in `handle` for the one case where it would not.)
    fn account(
        &mut self,
        user_id: Uuid,
        position: i64,
        name: Option<String>,
        email: Option<String>,
        deactivated: bool,
    ) {
        if let Some(person) = self
            .person_of_user
            .get(&user_id)
            .and_then(|id| self.people.get_mut(id))
        {
            if let Some(name) = name {
                person.name = name;
            }
            if let Some(email) = email {
                person.email = email;
            }
            person.active &= !deactivated;
            person.global_position = position;
            return;
        }
        let change = self.accounts.entry(user_id).or_default();
        if name.is_some() {
            change.name = name;
        }
        if email.is_some() {
            change.email = email;
        }
        change.deactivated |= deactivated;
        change.position = position;
    }

    fn is_empty(&self) -> bool {
        self.people.is_empty()
            && self.accounts.is_empty()
            && self.grades.is_empty()
            && self.notes.is_empty()
            && self.applications.is_empty()
            && self.decisions.is_empty()
    }

    fn decide(&mut self, application: Uuid, status: &'static str, position: i64) {
        match self.applications.get_mut(&application) {
            Some(row) => {
                row.status = status.to_owned();
                row.global_position = position;
            }
            None => {
                self.decisions.insert(application, (status, position));
            }
        }
    }
}

async fn handle(tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    project(tx, events, None).await
}

/// A rebuild's load of `events` into its empty copies of this projection's tables,
/// which no one else writes: the rows [`handle`] leaves, the new applications (most of
/// the rows) by a binary `COPY` ([`crate::copy_rows`]) instead of its upsert. `loaded`
/// holds the ids of the applications loaded so far: an application among them is left
/// out, as the upsert's `ON CONFLICT DO NOTHING` would leave it.
pub(crate) async fn load(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
    loaded: &mut HashSet<Uuid>,
) -> Result<(), ProjectionError> {
    project(conn, events, Some(loaded)).await
}

/// [`handle`], or with `loaded` a rebuild's [`load`].
async fn project(
    tx: &mut PgConnection,
    events: &[RecordedEvent],
    mut loaded: Option<&mut HashSet<Uuid>>,
) -> Result<(), ProjectionError> {
    let mut batch = Batch::default();
    for event in events {
        if !reads(&event.aggregate_type, &event.event_type) || is_reprocessed(event) {
            continue;
        }
        let position = event.global_position();
        match event.aggregate_type.as_str() {
            "student" => {
                let StudentEvent::StudentCreated {
                    institution_id,
                    user_id,
                    name,
                    email,
                    birth_date,
                } = decode::<StudentEvent>(event)?;
                let person = new_person(event, "student", user_id.into(), institution_id.into())?;
                let person = PersonRow {
                    name: name.as_str().to_owned(),
                    email: email.as_str().to_owned(),
                    birth_date: Some(birth_date.date()),
                    ..person
                };
                add_person(tx, &mut batch, person, loaded.as_deref_mut()).await?;
            }
            "teacher" => {
                let TeacherEvent::TeacherCreated {
                    institution_id,
                    user_id,
                    name,
                    email,
                } = decode::<TeacherEvent>(event)?;
                let person = new_person(event, "teacher", user_id.into(), institution_id.into())?;
                let person = PersonRow {
                    name: name.as_str().to_owned(),
                    email: email.as_str().to_owned(),
                    ..person
                };
                add_person(tx, &mut batch, person, loaded.as_deref_mut()).await?;
            }
            "user" => {
                let user_id = aggregate_uuid(event)?;
                match decode::<UserEvent>(event)? {
                    UserEvent::UserUpdated { name, email } => batch.account(
                        user_id,
                        position,
                        name.map(|n| n.as_str().to_owned()),
                        email.map(|e| e.as_str().to_owned()),
                        false,
                    ),
                    UserEvent::UserDeactivated { .. } => {
                        batch.account(user_id, position, None, None, true)
                    }
                    _ => {}
                }
            }
            "exam_grade" => {
                let grade_id = aggregate_uuid(event)?;
                match decode::<ExamGradeEvent>(event)? {
                    ExamGradeEvent::ExamGradeNoteAdded {
                        institution_id,
                        course_id,
                        student_id,
                        teacher_id,
                        exam_name,
                        note,
                        at,
                    } => {
                        batch.grades.insert(
                            grade_id,
                            GradeRow {
                                grade_id,
                                institution_id: institution_id.into(),
                                course_id: course_id.into(),
                                student_id: student_id.into(),
                                teacher_id: teacher_id.into(),
                                exam_name: exam_name.as_str().to_owned(),
                                note: note.to_string(),
                                recorded_at: at,
                                changed_at: None,
                                global_position: position,
                            },
                        );
                    }
                    ExamGradeEvent::ExamGradeNoteChanged {
                        to, teacher_id, at, ..
                    } => match batch.grades.get_mut(&grade_id) {
                        Some(row) => {
                            row.note = to.to_string();
                            row.teacher_id = teacher_id.into();
                            row.changed_at = Some(at);
                            row.global_position = position;
                        }
                        None => {
                            batch.notes.insert(
                                grade_id,
                                NoteChange {
                                    note: to.to_string(),
                                    teacher_id: teacher_id.into(),
                                    at,
                                    position,
                                },
                            );
                        }
                    },
                }
            }
            "application" => {
                let ApplicationEvent::ApplicationSubmitted {
                    application_id,
                    course_id,
                    institution_id,
                    name,
                    email,
                    requested_at,
                    ..
                } = decode::<ApplicationEvent>(event)?;
                let application_id: Uuid = application_id.into();
                batch.applications.insert(
                    application_id,
                    ApplicationRow {
                        application_id,
                        course_id: course_id.into(),
                        institution_id: Some(institution_id.into()),
                        name: name.as_str().to_owned(),
                        email: email.as_str().to_owned(),
                        status: "pending".into(),
                        requested_at,
                        global_position: position,
                    },
                );
            }
            "course" => match decode::<CourseEvent>(event)? {
                // Applications of the first flow, recorded on the course's stream.
                CourseEvent::EnrollmentRequested {
                    application_id,
                    name,
                    email,
                    requested_at,
                    ..
                } => {
                    let application_id: Uuid = application_id.into();
                    let course_id = aggregate_uuid(event)?;
                    batch
                        .applications
                        .entry(application_id)
                        .or_insert(ApplicationRow {
                            application_id,
                            course_id,
                            institution_id: event.institution_id(),
                            name: name.as_str().to_owned(),
                            email: email.as_str().to_owned(),
                            status: "pending".into(),
                            requested_at,
                            global_position: position,
                        });
                }
                CourseEvent::StudentEnrolled { application_id, .. } => {
                    batch.decide(application_id.into(), "enrolled", position)
                }
                CourseEvent::EnrollmentDeclined { application_id, .. } => {
                    batch.decide(application_id.into(), "declined", position)
                }
                CourseEvent::EnrollmentCancelled { application_id, .. } => {
                    batch.decide(application_id.into(), "cancelled", position)
                }
                _ => {}
            },
            _ => {}
        }
    }
    write(tx, batch, loaded).await
}

/// The row of a person created by `event` (its stream id is the person's id), before
/// its name and address are filled in.
fn new_person(
    event: &RecordedEvent,
    role: &str,
    user_id: Uuid,
    institution_id: Uuid,
) -> Result<PersonRow, ProjectionError> {
    Ok(PersonRow {
        person_id: aggregate_uuid(event)?,
        user_id,
        institution_id,
        role: role.into(),
        name: String::new(),
        email: String::new(),
        birth_date: None,
        active: true,
        created_at: event.recorded_at,
        global_position: event.global_position(),
    })
}

/// Adds a created person to the batch (see [`flush_before_creation`]).
async fn add_person(
    tx: &mut PgConnection,
    batch: &mut Batch,
    person: PersonRow,
    loaded: Option<&mut HashSet<Uuid>>,
) -> Result<(), ProjectionError> {
    flush_before_creation(tx, batch, person.user_id, loaded).await?;
    batch
        .person_of_user
        .insert(person.user_id, person.person_id);
    batch.people.insert(person.person_id, person);
    Ok(())
}

/// A person created after changes to its account in the same batch: those changes
/// are older than the creation and must not overwrite it, so what the batch holds so
/// far is written first (as a smaller batch would have), keeping rebuilds equal to live.
async fn flush_before_creation(
    tx: &mut PgConnection,
    batch: &mut Batch,
    user_id: Uuid,
    loaded: Option<&mut HashSet<Uuid>>,
) -> Result<(), ProjectionError> {
    if batch.accounts.contains_key(&user_id) {
        write(tx, std::mem::take(batch), loaded).await?;
    }
    Ok(())
}

/// Writes what `batch` holds; the new applications by `COPY` when `loaded` is given
/// ([`load`]).
async fn write(
    tx: &mut PgConnection,
    batch: Batch,
    loaded: Option<&mut HashSet<Uuid>>,
) -> Result<(), ProjectionError> {
    if batch.is_empty() {
        return Ok(());
    }
    // People created in this batch already carry their accounts' later changes.
    let people: Vec<PersonRow> = batch.people.into_values().collect();
    if !people.is_empty() {
        sqlx::query(
            "INSERT INTO directory_people (person_id, user_id, institution_id, role, name, email,
                 birth_date, active, created_at, global_position)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                 $6::text[], $7::date[], $8::bool[], $9::timestamptz[], $10::bigint[])
             ON CONFLICT (person_id) DO NOTHING",
        )
        .bind(column(&people, |p| p.person_id))
        .bind(column(&people, |p| p.user_id))
        .bind(column(&people, |p| p.institution_id))
        .bind(column(&people, |p| p.role.as_str()))
        .bind(column(&people, |p| p.name.as_str()))
        .bind(column(&people, |p| p.email.as_str()))
        .bind(column(&people, |p| p.birth_date))
        .bind(column(&people, |p| p.active))
        .bind(column(&people, |p| p.created_at))
        .bind(column(&people, |p| p.global_position))
        .execute(&mut *tx)
        .await?;
    }
    // Accounts of people created before this batch (managers' and admins' changes
    // match no row).
    let accounts: Vec<(&Uuid, &AccountChange)> = batch.accounts.iter().collect();
    if !accounts.is_empty() {
        sqlx::query(
            "UPDATE directory_people p
             SET name = coalesce(c.name, p.name), email = coalesce(c.email, p.email),
                 active = p.active AND NOT c.deactivated, global_position = c.position
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::bigint[])
                  AS c(user_id, name, email, deactivated, position)
             WHERE p.user_id = c.user_id",
        )
        .bind(column(&accounts, |(u, _)| **u))
        .bind(column(&accounts, |(_, c)| c.name.clone()))
        .bind(column(&accounts, |(_, c)| c.email.clone()))
        .bind(column(&accounts, |(_, c)| c.deactivated))
        .bind(column(&accounts, |(_, c)| c.position))
        .execute(&mut *tx)
        .await?;
    }

    let grades: Vec<GradeRow> = batch.grades.into_values().collect();
    if !grades.is_empty() {
        sqlx::query(
            "INSERT INTO directory_grades (grade_id, institution_id, course_id, student_id,
                 teacher_id, exam_name, note, recorded_at, changed_at, global_position)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[],
                 $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[], $10::bigint[])
             ON CONFLICT (grade_id) DO NOTHING",
        )
        .bind(column(&grades, |g| g.grade_id))
        .bind(column(&grades, |g| g.institution_id))
        .bind(column(&grades, |g| g.course_id))
        .bind(column(&grades, |g| g.student_id))
        .bind(column(&grades, |g| g.teacher_id))
        .bind(column(&grades, |g| g.exam_name.as_str()))
        .bind(column(&grades, |g| g.note.as_str()))
        .bind(column(&grades, |g| g.recorded_at))
        .bind(column(&grades, |g| g.changed_at))
        .bind(column(&grades, |g| g.global_position))
        .execute(&mut *tx)
        .await?;
    }
    if !batch.notes.is_empty() {
        let notes: Vec<(&Uuid, &NoteChange)> = batch.notes.iter().collect();
        sqlx::query(
            "UPDATE directory_grades g
             SET note = c.note, teacher_id = c.teacher_id, changed_at = c.at,
                 global_position = c.position
             FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[], $5::bigint[])
                  AS c(grade_id, note, teacher_id, at, position)
             WHERE g.grade_id = c.grade_id",
        )
        .bind(column(&notes, |(g, _)| **g))
        .bind(column(&notes, |(_, c)| c.note.as_str()))
        .bind(column(&notes, |(_, c)| c.teacher_id))
        .bind(column(&notes, |(_, c)| c.at))
        .bind(column(&notes, |(_, c)| c.position))
        .execute(&mut *tx)
        .await?;
    }

    let applications: Vec<ApplicationRow> = batch.applications.into_values().collect();
    if let Some(loaded) = loaded {
        let mut rows = CopyRows::new();
        for a in applications
            .iter()
            .filter(|a| loaded.insert(a.application_id))
        {
            rows.row(8)
                .uuid(a.application_id)
                .uuid(a.course_id)
                .opt_uuid(a.institution_id)
                .text(&a.name)
                .text(&a.email)
                .text(&a.status)
                .timestamptz(a.requested_at)
                .bigint(a.global_position);
        }
        rows.copy_in(
            &mut *tx,
            "COPY directory_applications (application_id, course_id, institution_id, name,
                 email, status, requested_at, global_position)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    } else if !applications.is_empty() {
        sqlx::query(
            "INSERT INTO directory_applications (application_id, course_id, institution_id, name,
                 email, status, requested_at, global_position)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                 $6::text[], $7::timestamptz[], $8::bigint[])
             ON CONFLICT (application_id) DO NOTHING",
        )
        .bind(column(&applications, |a| a.application_id))
        .bind(column(&applications, |a| a.course_id))
        .bind(column(&applications, |a| a.institution_id))
        .bind(column(&applications, |a| a.name.as_str()))
        .bind(column(&applications, |a| a.email.as_str()))
        .bind(column(&applications, |a| a.status.as_str()))
        .bind(column(&applications, |a| a.requested_at))
        .bind(column(&applications, |a| a.global_position))
        .execute(&mut *tx)
        .await?;
    }
    if !batch.decisions.is_empty() {
        let decisions: Vec<(&Uuid, &(&str, i64))> = batch.decisions.iter().collect();
        sqlx::query(
            "UPDATE directory_applications a SET status = d.status, global_position = d.position
             FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS d(application_id, status, position)
             WHERE a.application_id = d.application_id",
        )
        .bind(column(&decisions, |(a, _)| **a))
        .bind(column(&decisions, |(_, d)| d.0))
        .bind(column(&decisions, |(_, d)| d.1))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_its_event_types() {
        assert!(reads("student", "StudentCreated"));
        assert!(reads("course", "StudentEnrolled"));
        assert!(!reads("course", "CapacityChanged"));
        assert!(!reads("user", "LoginSucceeded"));
    }
}
