//! Validated values that cross the domain boundary: identifiers, names, e-mail addresses,
//! birth dates, capacities, grade notes and login sources.
//!
//! Parse, don't validate: every constructor returns `Result<T, ValidationError>`, and once a
//! value exists it is valid. Deserialization goes through the same parsers (`try_from`), so a
//! stored or submitted payload holding an invalid value fails to load instead of smuggling
//! it in. The one exception is [`BirthDate`]: its rules are relative to "today", which only
//! the caller knows, so it is checked when parsed and stored as a plain date.

mod birth_date;
mod capacity;
mod email;
mod grade_note;
mod ids;
mod login_source;
mod names;
#[cfg(test)]
mod tests;
mod validation;

pub use birth_date::BirthDate;
pub use capacity::Capacity;
pub use email::Email;
pub use grade_note::GradeNote;
pub use ids::{
    ApplicationId, CampusId, CourseId, ExamGradeId, InstitutionId, StudentId, TeacherId, UserId,
};
pub use login_source::LoginSource;
pub use names::{CampusName, CityName, CourseName, ExamName, InstitutionName, PersonName};
pub use validation::{ValidationError, ValidationReason};
