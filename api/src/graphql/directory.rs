//! The people of an institution and each person's own reads, from the `directory`
//! read model (and `course_enrollments`): the student and teacher lists of managers and
//! admins; a student's grades, enrollments and applications; a teacher's courses and
//! the students it grades.

use std::collections::{BTreeMap, BTreeSet};

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};
use aula_domain::user::Role as DomainRole;
use aula_projections::directory::{self, PeopleQuery, PeopleSort, PersonRow};
use aula_projections::enrollments;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::authorize;
use super::query::{nodes, paged};
use super::read_models::{filter_text, Enrollment, SortDirection, WATCHERS};
use super::types::{parse_status, BigInt};
use crate::auth;
use crate::error::{bad_cursor, ApiError};
use crate::state::AppState;

#[derive(Default)]
pub struct DirectoryQuery;

row_object! {
    /// A student or a teacher of an institution (read model `directory`).
    Person from PersonRow as row {
        /// The student's or teacher's id (what `recordExamNote` and the grades name).
        id: Uuid = row.person_id,
        /// The person's account.
        user_id: Uuid,
        /// The institution the person belongs to.
        institution_id: Uuid,
        /// The person's name, as the account now has it.
        name: String,
        /// The person's e-mail, as the account now has it.
        email: String,
        /// Students only: the date of birth.
        birth_date: Option<NaiveDate>,
        /// False once the account was deactivated.
        active: bool,
        /// When the student or teacher was created.
        created_at: DateTime<Utc>,
        /// The log position of the latest change.
        log_position: BigInt = BigInt(row.global_position),
    }
}

page! {
    /// One page of students or teachers.
    PersonPage {
        /// The people of this page, in the requested order.
        nodes: Person,
    }
}

/// Filters of the student and teacher lists; they combine with AND.
#[derive(InputObject, Debug, Clone, Default)]
pub struct PersonFilter {
    /// Only this institution's (admins; managers always see their own). Admins without
    /// it see every institution's.
    pub institution_id: Option<Uuid>,
    /// Text found in the name or the e-mail, ignoring case.
    pub search: Option<String>,
    /// Only active (true) or deactivated (false) people.
    pub active: Option<bool>,
}

/// The column the student and teacher lists are sorted by (ties broken by id).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[graphql(remote = "aula_projections::directory::PeopleSort")]
pub enum PersonSortField {
    /// Name.
    #[default]
    Name,
    /// When created.
    CreatedAt,
}

/// How the student and teacher lists are sorted.
#[derive(InputObject, Debug, Clone)]
pub struct PersonSort {
    /// The column to sort by.
    #[graphql(default)]
    pub field: PersonSortField,
    /// Ascending (default) or descending.
    #[graphql(default_with = "SortDirection::Asc")]
    pub direction: SortDirection,
}

row_object! {
    /// An exam grade (read model `directory`).
    Grade from (directory::GradeRow, Option<String>) as (g, looked_up_name) {
        /// The grade's id (what `changeExamNote` names).
        id: Uuid = g.grade_id,
        /// The course the exam belongs to.
        course_id: Uuid,
        /// The course's name.
        course_name: Option<String> = looked_up_name,
        /// The student graded.
        student_id: Uuid,
        /// The teacher who recorded it, or last changed it.
        teacher_id: Uuid,
        /// The exam's name.
        exam_name: String,
        /// The note, 0.00 to 10.00, as recorded (two decimals).
        note: String,
        /// When it was recorded.
        recorded_at: DateTime<Utc>,
        /// When it was last corrected; null if never.
        changed_at: Option<DateTime<Utc>>,
    }
}

/// Where an application's decision stands.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum ApplicationStatus {
    /// Recorded, not decided yet.
    Pending,
    /// It took a seat.
    Enrolled,
    /// The course was full or closed.
    Declined,
    /// It took a seat that a manager later cancelled.
    Cancelled,
}

row_object! {
    /// An application to a course (read model `directory`).
    Application try_from (directory::ApplicationRow, Option<String>) as (a, looked_up_name) {
        /// The application's id.
        id: Uuid = a.application_id,
        /// The course applied to.
        course_id: Uuid,
        /// The course's name.
        course_name: Option<String> = looked_up_name,
        /// The name applied with.
        name: String,
        /// Where its decision stands.
        status: ApplicationStatus = parse_status(&a.status)?,
        /// When it was made.
        requested_at: DateTime<Utc>,
    }
}

/// A course a teacher grades in, with what the teacher recorded there.
#[derive(SimpleObject, Debug, Clone)]
pub struct TeacherCourse {
    /// The course.
    pub course_id: Uuid,
    /// The course's name.
    pub name: Option<String>,
    /// Students the teacher graded in it.
    pub students: i32,
    /// Grades the teacher recorded or last changed in it.
    pub grades: i32,
}

/// A sort key and id, as a list cursor: `<key>|<id>` (the id has no `|`).
fn encode_cursor(key: &str, id: Uuid) -> String {
    format!("{key}|{id}")
}

fn decode_cursor(cursor: &str, sort: PeopleSort) -> Result<(String, Uuid), ApiError> {
    let (key, id) = cursor.rsplit_once('|').ok_or_else(bad_cursor)?;
    let id: Uuid = id.parse().map_err(|_| bad_cursor())?;
    if sort == PeopleSort::CreatedAt && DateTime::parse_from_rfc3339(key).is_err() {
        return Err(bad_cursor());
    }
    Ok((key.to_owned(), id))
}

async fn people(
    ctx: &Context<'_>,
    role: &'static str,
    filter: Option<PersonFilter>,
    sort: Option<PersonSort>,
    first: i32,
    after: Option<String>,
) -> Result<PersonPage, ApiError> {
    let (claims, state, first) = paged(ctx, WATCHERS, first)?;
    let filter = filter.unwrap_or_default();
    let institution_id = auth::read_scope(claims, filter.institution_id)?;
    let sort = sort.unwrap_or(PersonSort {
        field: PersonSortField::Name,
        direction: SortDirection::Asc,
    });
    let people_sort = PeopleSort::from(sort.field);
    let search = filter_text("search", filter.search)?.filter(|s| !s.trim().is_empty());
    let after = after
        .as_deref()
        .map(|c| decode_cursor(c, people_sort))
        .transpose()?;
    let page = directory::people_page(
        &state.pool,
        &PeopleQuery {
            role,
            institution_id,
            search: search.map(|s| s.trim().to_owned()),
            active: filter.active,
            sort: people_sort,
            descending: sort.direction == SortDirection::Desc,
            limit: first as i64,
            after,
        },
    )
    .await?;
    Ok(PersonPage {
        nodes: page.rows.into_iter().map(Into::into).collect(),
        next_cursor: page.next.map(|(key, id)| encode_cursor(&key, id)),
    })
}

/// The signed-in user's own record of `kind` (`student` or `teacher`), callers
/// without `role` refused, with the state to read on with; none while the account has
/// no such record.
async fn own_person<'a>(
    ctx: &Context<'a>,
    role: DomainRole,
    kind: &str,
) -> Result<Option<(&'a AppState, PersonRow)>, ApiError> {
    let (claims, state) = authorize(ctx, &[role])?;
    Ok(directory::people_of_user(&state.pool, claims.user_id)
        .await?
        .into_iter()
        .find(|p| p.role == kind)
        .map(|person| (state, person)))
}

pub(crate) async fn course_names(
    state: &AppState,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<BTreeMap<Uuid, Option<String>>, ApiError> {
    let ids: Vec<Uuid> = ids
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(directory::course_names(&state.pool, &ids)
        .await?
        .into_iter()
        .collect())
}

/// Each row with the name of its course, the names looked up at once for all rows.
async fn with_course_names<R>(
    state: &AppState,
    rows: Vec<R>,
    course_id: impl Fn(&R) -> Uuid,
) -> Result<Vec<(R, Option<String>)>, ApiError> {
    let names = course_names(state, rows.iter().map(&course_id)).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let name = names.get(&course_id(&row)).cloned().flatten();
            (row, name)
        })
        .collect())
}

#[Object]
impl DirectoryQuery {
    /// The students of an institution: filter, sort (default: by name) and keyset
    /// pages. Admin: any institution (all without `institutionId`); manager: own.
    async fn students(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Filters; they combine with AND.")] filter: Option<PersonFilter>,
        #[graphql(desc = "Sort column and direction.")] sort: Option<PersonSort>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<PersonPage, ApiError> {
        people(ctx, "student", filter, sort, first, after).await
    }

    /// The teachers of an institution: filter, sort (default: by name) and keyset
    /// pages. Admin: any institution (all without `institutionId`); manager: own.
    async fn teachers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Filters; they combine with AND.")] filter: Option<PersonFilter>,
        #[graphql(desc = "Sort column and direction.")] sort: Option<PersonSort>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<PersonPage, ApiError> {
        people(ctx, "teacher", filter, sort, first, after).await
    }

    /// The signed-in student's grades, oldest first. Students only.
    async fn my_grades(&self, ctx: &Context<'_>) -> Result<Vec<Grade>, ApiError> {
        let Some((state, me)) = own_person(ctx, DomainRole::Student, "student").await? else {
            return Ok(Vec::new());
        };
        let rows = directory::grades_of_student(&state.pool, me.person_id).await?;
        nodes(with_course_names(state, rows, |g| g.course_id).await?)
    }

    /// The signed-in student's enrollments (those made with its e-mail), newest first,
    /// cancelled ones included. Students only.
    async fn my_enrollments(&self, ctx: &Context<'_>) -> Result<Vec<Enrollment>, ApiError> {
        let Some((state, me)) = own_person(ctx, DomainRole::Student, "student").await? else {
            return Ok(Vec::new());
        };
        nodes(enrollments::enrollments_of_email(&state.pool, &me.email).await?)
    }

    /// The signed-in student's applications (those made with its e-mail), newest
    /// first, with their decisions. Students only.
    async fn my_applications(&self, ctx: &Context<'_>) -> Result<Vec<Application>, ApiError> {
        let Some((state, me)) = own_person(ctx, DomainRole::Student, "student").await? else {
            return Ok(Vec::new());
        };
        let rows = directory::applications_of_email(&state.pool, &me.email).await?;
        nodes(with_course_names(state, rows, |a| a.course_id).await?)
    }

    /// The courses the signed-in teacher grades in (where it recorded or last changed
    /// a grade), by name. Teachers only.
    async fn my_courses(&self, ctx: &Context<'_>) -> Result<Vec<TeacherCourse>, ApiError> {
        let Some((state, me)) = own_person(ctx, DomainRole::Teacher, "teacher").await? else {
            return Ok(Vec::new());
        };
        let grades = directory::grades_by_teacher(&state.pool, me.person_id).await?;
        let mut courses: BTreeMap<Uuid, (BTreeSet<Uuid>, i32)> = BTreeMap::new();
        for grade in &grades {
            let entry = courses.entry(grade.course_id).or_default();
            entry.0.insert(grade.student_id);
            entry.1 += 1;
        }
        let names = course_names(state, courses.keys().copied()).await?;
        let mut list: Vec<TeacherCourse> = courses
            .into_iter()
            .map(|(course_id, (students, grades))| TeacherCourse {
                course_id,
                name: names.get(&course_id).cloned().flatten(),
                students: students.len() as i32,
                grades,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.course_id.cmp(&b.course_id)));
        Ok(list)
    }

    /// The students the signed-in teacher graded in a course, by name. Teachers only.
    async fn my_students(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The course.")] course_id: Uuid,
    ) -> Result<Vec<Person>, ApiError> {
        let Some((state, me)) = own_person(ctx, DomainRole::Teacher, "teacher").await? else {
            return Ok(Vec::new());
        };
        let students: Vec<Uuid> = directory::grades_by_teacher(&state.pool, me.person_id)
            .await?
            .into_iter()
            .filter(|g| g.course_id == course_id)
            .map(|g| g.student_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(directory::people_by_id(&state.pool, &students)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }
}
