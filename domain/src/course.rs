//! The `Course` aggregate (TYPE `course`): one course's seats, applications and
//! enrollments.
//!
//! **Invariant:** a course never holds more enrolled students than its capacity. Every
//! seat decision (enroll, cancel, change capacity) goes through this one aggregate, so the
//! event store's optimistic concurrency on the course stream serializes parallel
//! enrollment workers: a worker that decided on stale state fails to append and retries.
//!
//! Applying is split in two so an application is never lost and never contends: the
//! application is recorded at once in a stream of its own
//! ([`crate::application::Application`], `ApplicationSubmitted`), and the processor's
//! `processor.admissions` subscription hands each course its new applications in the
//! log's commit order, in batches, with `DecideApplications`: one command (one append)
//! enrolls or declines many, first come first served. Applications already decided are
//! skipped, so a redelivered batch decides nothing twice.
//!
//! The older shape is still served: `RequestEnrollment` recorded `EnrollmentRequested`
//! in the course's own stream and `DecideEnrollment`, issued by the processor for each
//! one, decides it. Deciding the same application twice that way is refused with
//! [`EnrollmentError::AlreadyDecided`], which the processor treats as "done".

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::errors::{impl_rejection, RejectionKind};
use crate::event_types::impl_domain_event;
use crate::values::{
    ApplicationId, BirthDate, CampusId, Capacity, CourseName, Email, InstitutionId, PersonName,
};

/// The course aggregate needs no external services.
#[derive(Debug, Clone, Copy, Default)]
pub struct CourseServices;

#[derive(Debug, Clone, PartialEq)]
pub enum CourseCommand {
    /// Actor: the API, right after the institution recorded `CourseOffered`.
    OpenCourse {
        institution_id: InstitutionId,
        campus_id: CampusId,
        name: CourseName,
        capacity: Capacity,
    },
    /// Actor: an applicant (anonymous) or the demo-data seeding task.
    RequestEnrollment {
        application_id: ApplicationId,
        name: PersonName,
        birth_date: BirthDate,
        email: Email,
        requested_at: DateTime<Utc>,
    },
    /// Actor: the processor, reacting to `EnrollmentRequested`. `today` fixes the
    /// enrollment date and the age recorded for the metrics.
    DecideEnrollment {
        application_id: ApplicationId,
        today: NaiveDate,
    },
    /// Actor: the processor's `processor.admissions` subscription, for the applications
    /// (`ApplicationSubmitted`) of one course in the log's commit order. Decides each in
    /// that order: the first ones get the free seats, the rest are declined. An
    /// application already decided is skipped, so a redelivered batch decides nothing
    /// twice. `today` fixes the enrollment date and the age recorded for the metrics.
    DecideApplications {
        applications: Vec<ApplicationToDecide>,
        today: NaiveDate,
    },
    /// Actor: an institution manager. Frees the seat.
    CancelEnrollment {
        application_id: ApplicationId,
        at: DateTime<Utc>,
    },
    /// Actor: an institution manager.
    ChangeCapacity { capacity: Capacity },
    /// Actor: an institution manager, or the scheduled daily close.
    CloseCourse,
}

/// An application submitted in a stream of its own, handed to its course for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationToDecide {
    pub application_id: ApplicationId,
    pub name: PersonName,
    pub email: Email,
    pub birth_date: BirthDate,
}

/// Why an application was declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeclineReason {
    /// Every seat is taken.
    ClassFull,
    /// An application with the same e-mail is already enrolled in this course.
    AlreadyEnrolled,
    /// The course was closed before the application was decided.
    CourseClosed,
}

/// Events of the `course` aggregate, internally tagged: `{"type": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CourseEvent {
    CourseOpened {
        institution_id: InstitutionId,
        campus_id: CampusId,
        name: CourseName,
        capacity: Capacity,
    },
    EnrollmentRequested {
        application_id: ApplicationId,
        name: PersonName,
        birth_date: BirthDate,
        email: Email,
        requested_at: DateTime<Utc>,
    },
    /// Carries the campus, institution and age so the metrics projections need nothing
    /// else.
    StudentEnrolled {
        application_id: ApplicationId,
        name: PersonName,
        email: Email,
        birth_date: BirthDate,
        age_years: u32,
        enrolled_on: NaiveDate,
        campus_id: CampusId,
        institution_id: InstitutionId,
    },
    /// Carries the applicant's name and e-mail so the "declined" e-mail task is
    /// self-contained.
    EnrollmentDeclined {
        application_id: ApplicationId,
        name: PersonName,
        email: Email,
        reason: DeclineReason,
    },
    /// Carries the age recorded at enrollment so projections can take it back out of the
    /// age metrics.
    EnrollmentCancelled {
        application_id: ApplicationId,
        email: Email,
        age_years: u32,
        campus_id: CampusId,
        institution_id: InstitutionId,
        cancelled_on: NaiveDate,
    },
    CapacityChanged {
        from: Capacity,
        to: Capacity,
    },
    CourseClosed,
}

impl_domain_event!(CourseEvent {
    CourseOpened => COURSE_OPENED,
    EnrollmentRequested => ENROLLMENT_REQUESTED,
    StudentEnrolled => STUDENT_ENROLLED,
    EnrollmentDeclined => ENROLLMENT_DECLINED,
    EnrollmentCancelled => ENROLLMENT_CANCELLED,
    CapacityChanged => CAPACITY_CHANGED,
    CourseClosed => COURSE_CLOSED,
});

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentError {
    #[error("course not found")]
    CourseNotFound,
    #[error("the course is already open")]
    AlreadyOpened,
    #[error("an application with this id already exists")]
    ApplicationAlreadyExists,
    #[error("application not found")]
    ApplicationNotFound,
    #[error("the application was already decided")]
    AlreadyDecided,
    #[error("the application is not enrolled")]
    NotEnrolled,
    #[error("the enrollment was already cancelled")]
    AlreadyCancelled,
    #[error("the capacity cannot go below the {enrolled} enrolled students")]
    CapacityBelowEnrolled { enrolled: u32 },
    #[error("the course is closed")]
    CourseClosed,
}

impl EnrollmentError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::CourseNotFound => "COURSE_NOT_FOUND",
            Self::AlreadyOpened => "COURSE_ALREADY_OPENED",
            Self::ApplicationAlreadyExists => "APPLICATION_ALREADY_EXISTS",
            Self::ApplicationNotFound => "APPLICATION_NOT_FOUND",
            Self::AlreadyDecided => "APPLICATION_ALREADY_DECIDED",
            Self::NotEnrolled => "APPLICATION_NOT_ENROLLED",
            Self::AlreadyCancelled => "ENROLLMENT_ALREADY_CANCELLED",
            Self::CapacityBelowEnrolled { .. } => "CAPACITY_BELOW_ENROLLED",
            Self::CourseClosed => "COURSE_CLOSED",
        }
    }

    pub const fn kind(&self) -> RejectionKind {
        match self {
            Self::CourseNotFound | Self::ApplicationNotFound => RejectionKind::NotFound,
            Self::AlreadyOpened
            | Self::ApplicationAlreadyExists
            | Self::AlreadyDecided
            | Self::NotEnrolled
            | Self::AlreadyCancelled
            | Self::CapacityBelowEnrolled { .. }
            | Self::CourseClosed => RejectionKind::Conflict,
        }
    }
}

impl_rejection!(EnrollmentError);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CourseStatus {
    /// No event yet.
    #[default]
    NotOpened,
    Open,
    Closed,
}

/// An application waiting for `DecideEnrollment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingApplication {
    pub name: PersonName,
    pub email: Email,
    pub birth_date: BirthDate,
    pub requested_at: DateTime<Utc>,
}

/// A taken seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub email: Email,
    pub age_years: u32,
}

/// What happened to an application after it left `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Enrolled,
    Declined,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Course {
    status: CourseStatus,
    institution_id: Option<InstitutionId>,
    campus_id: Option<CampusId>,
    name: Option<CourseName>,
    capacity: Option<Capacity>,
    pending: BTreeMap<ApplicationId, PendingApplication>,
    enrolled: BTreeMap<ApplicationId, Enrollment>,
    outcomes: BTreeMap<ApplicationId, Outcome>,
}

/// The fixed facts of an opened course, available once `CourseOpened` was applied.
struct Opened {
    institution_id: InstitutionId,
    campus_id: CampusId,
    capacity: Capacity,
}

impl Course {
    pub fn status(&self) -> CourseStatus {
        self.status
    }
    pub fn capacity(&self) -> Option<Capacity> {
        self.capacity
    }
    pub fn name(&self) -> Option<&CourseName> {
        self.name.as_ref()
    }
    pub fn enrolled(&self) -> &BTreeMap<ApplicationId, Enrollment> {
        &self.enrolled
    }
    pub fn pending(&self) -> &BTreeMap<ApplicationId, PendingApplication> {
        &self.pending
    }
    pub fn enrolled_count(&self) -> u32 {
        // Bounded by the capacity (at most 10 000), so it always fits.
        u32::try_from(self.enrolled.len()).unwrap_or(u32::MAX)
    }

    fn opened(&self) -> Result<Opened, EnrollmentError> {
        match (self.institution_id, self.campus_id, self.capacity) {
            (Some(institution_id), Some(campus_id), Some(capacity)) => Ok(Opened {
                institution_id,
                campus_id,
                capacity,
            }),
            _ => Err(EnrollmentError::CourseNotFound),
        }
    }

    fn decide(
        &self,
        application_id: ApplicationId,
        today: NaiveDate,
    ) -> Result<CourseEvent, EnrollmentError> {
        let course = self.opened()?;
        let Some(application) = self.pending.get(&application_id) else {
            return Err(if self.outcomes.contains_key(&application_id) {
                EnrollmentError::AlreadyDecided
            } else {
                EnrollmentError::ApplicationNotFound
            });
        };
        Ok(self.decision(
            &course,
            application_id,
            &application.name,
            &application.email,
            application.birth_date,
            today,
        ))
    }

    /// Whether `application_id` was decided already (enrolled, declined or cancelled).
    pub fn is_decided(&self, application_id: &ApplicationId) -> bool {
        self.outcomes.contains_key(application_id)
    }

    /// The decision for one application on the current state: closed, the same e-mail
    /// already enrolled, no seat left, or a seat.
    fn decision(
        &self,
        course: &Opened,
        application_id: ApplicationId,
        name: &PersonName,
        email: &Email,
        birth_date: BirthDate,
        today: NaiveDate,
    ) -> CourseEvent {
        let decline = |reason| CourseEvent::EnrollmentDeclined {
            application_id,
            name: name.clone(),
            email: email.clone(),
            reason,
        };
        if self.status == CourseStatus::Closed {
            return decline(DeclineReason::CourseClosed);
        }
        if self
            .enrolled
            .values()
            .any(|enrollment| &enrollment.email == email)
        {
            return decline(DeclineReason::AlreadyEnrolled);
        }
        // The capacity as of now: a change applies from the next decision on.
        if self.enrolled_count() >= course.capacity.get() {
            return decline(DeclineReason::ClassFull);
        }
        CourseEvent::StudentEnrolled {
            application_id,
            name: name.clone(),
            email: email.clone(),
            birth_date,
            age_years: birth_date.age_on(today),
            enrolled_on: today,
            campus_id: course.campus_id,
            institution_id: course.institution_id,
        }
    }

    fn cancel(
        &self,
        application_id: ApplicationId,
        at: DateTime<Utc>,
    ) -> Result<CourseEvent, EnrollmentError> {
        let course = self.opened()?;
        if let Some(enrollment) = self.enrolled.get(&application_id) {
            return Ok(CourseEvent::EnrollmentCancelled {
                application_id,
                email: enrollment.email.clone(),
                age_years: enrollment.age_years,
                campus_id: course.campus_id,
                institution_id: course.institution_id,
                cancelled_on: at.date_naive(),
            });
        }
        Err(match self.outcomes.get(&application_id) {
            Some(Outcome::Cancelled) => EnrollmentError::AlreadyCancelled,
            Some(Outcome::Declined | Outcome::Enrolled) => EnrollmentError::NotEnrolled,
            None if self.pending.contains_key(&application_id) => EnrollmentError::NotEnrolled,
            None => EnrollmentError::ApplicationNotFound,
        })
    }

    fn change_capacity(&self, capacity: Capacity) -> Result<Option<CourseEvent>, EnrollmentError> {
        let course = self.opened()?;
        if self.status == CourseStatus::Closed {
            return Err(EnrollmentError::CourseClosed);
        }
        // Setting the current capacity again changes nothing and records nothing.
        if capacity == course.capacity {
            return Ok(None);
        }
        let enrolled = self.enrolled_count();
        if capacity.get() < enrolled {
            return Err(EnrollmentError::CapacityBelowEnrolled { enrolled });
        }
        Ok(Some(CourseEvent::CapacityChanged {
            from: course.capacity,
            to: capacity,
        }))
    }
}

impl Aggregate for Course {
    const TYPE: &'static str = "course";
    type Command = CourseCommand;
    type Event = CourseEvent;
    type Error = EnrollmentError;
    type Services = CourseServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            CourseCommand::OpenCourse {
                institution_id,
                campus_id,
                name,
                capacity,
            } => {
                if self.status != CourseStatus::NotOpened {
                    return Err(EnrollmentError::AlreadyOpened);
                }
                Some(CourseEvent::CourseOpened {
                    institution_id,
                    campus_id,
                    name,
                    capacity,
                })
            }
            CourseCommand::RequestEnrollment {
                application_id,
                name,
                birth_date,
                email,
                requested_at,
            } => {
                self.opened()?;
                if self.pending.contains_key(&application_id)
                    || self.outcomes.contains_key(&application_id)
                {
                    return Err(EnrollmentError::ApplicationAlreadyExists);
                }
                // Recorded even when the class is full or closed: the decision is separate
                // and the applicant is told the outcome either way.
                Some(CourseEvent::EnrollmentRequested {
                    application_id,
                    name,
                    birth_date,
                    email,
                    requested_at,
                })
            }
            CourseCommand::DecideEnrollment {
                application_id,
                today,
            } => Some(self.decide(application_id, today)?),
            CourseCommand::DecideApplications {
                applications,
                today,
            } => {
                let course = self.opened()?;
                for application in applications {
                    // Decided before (a redelivered batch, or a repeat in this one).
                    if self.outcomes.contains_key(&application.application_id) {
                        continue;
                    }
                    let event = self.decision(
                        &course,
                        application.application_id,
                        &application.name,
                        &application.email,
                        application.birth_date,
                        today,
                    );
                    // Applied at once: the next decision sees this one's seat.
                    sink.write(event, self).await;
                }
                None
            }
            CourseCommand::CancelEnrollment { application_id, at } => {
                Some(self.cancel(application_id, at)?)
            }
            CourseCommand::ChangeCapacity { capacity } => self.change_capacity(capacity)?,
            CourseCommand::CloseCourse => {
                self.opened()?;
                if self.status == CourseStatus::Closed {
                    return Err(EnrollmentError::CourseClosed);
                }
                Some(CourseEvent::CourseClosed)
            }
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CourseEvent::CourseOpened {
                institution_id,
                campus_id,
                name,
                capacity,
            } => {
                self.status = CourseStatus::Open;
                self.institution_id = Some(institution_id);
                self.campus_id = Some(campus_id);
                self.name = Some(name);
                self.capacity = Some(capacity);
            }
            CourseEvent::EnrollmentRequested {
                application_id,
                name,
                birth_date,
                email,
                requested_at,
            } => {
                self.pending.insert(
                    application_id,
                    PendingApplication {
                        name,
                        email,
                        birth_date,
                        requested_at,
                    },
                );
            }
            CourseEvent::StudentEnrolled {
                application_id,
                email,
                age_years,
                ..
            } => {
                self.pending.remove(&application_id);
                self.enrolled
                    .insert(application_id, Enrollment { email, age_years });
                self.outcomes.insert(application_id, Outcome::Enrolled);
            }
            CourseEvent::EnrollmentDeclined { application_id, .. } => {
                self.pending.remove(&application_id);
                self.outcomes.insert(application_id, Outcome::Declined);
            }
            CourseEvent::EnrollmentCancelled { application_id, .. } => {
                self.enrolled.remove(&application_id);
                self.outcomes.insert(application_id, Outcome::Cancelled);
            }
            CourseEvent::CapacityChanged { to, .. } => self.capacity = Some(to),
            CourseEvent::CourseClosed => self.status = CourseStatus::Closed,
        }
    }
}

/// One instance of every [`CourseEvent`] variant (catalog and round-trip tests).
pub fn sample_events() -> Vec<CourseEvent> {
    use crate::samples::*;
    vec![
        CourseEvent::CourseOpened {
            institution_id: institution_id(),
            campus_id: campus_id(),
            name: CourseName::parse("Física I").expect("valid literal"),
            capacity: capacity(),
        },
        CourseEvent::EnrollmentRequested {
            application_id: application_id(),
            name: person_name(),
            birth_date: birth_date(),
            email: email(),
            requested_at: instant(),
        },
        CourseEvent::StudentEnrolled {
            application_id: application_id(),
            name: person_name(),
            email: email(),
            birth_date: birth_date(),
            age_years: 17,
            enrolled_on: day(),
            campus_id: campus_id(),
            institution_id: institution_id(),
        },
        CourseEvent::EnrollmentDeclined {
            application_id: application_id(),
            name: person_name(),
            email: email(),
            reason: DeclineReason::ClassFull,
        },
        CourseEvent::EnrollmentCancelled {
            application_id: application_id(),
            email: email(),
            age_years: 17,
            campus_id: campus_id(),
            institution_id: institution_id(),
            cancelled_on: day(),
        },
        CourseEvent::CapacityChanged {
            from: capacity(),
            to: Capacity::new(35).expect("35 is within range"),
        },
        CourseEvent::CourseClosed,
    ]
}
