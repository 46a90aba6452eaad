//! The event type names as stored in `events.event_type`: one typed source for every
//! crate that matches on them (projections, reactions, webhooks, the API).
//!
//! **Invariant:** each name equals its variant's `DomainEvent::event_type()` (the
//! aggregates return these constants) and never changes: stored events carry it.

// `user` streams ([`crate::user`]).
pub const EMAIL_CHANGE_REQUESTED: &str = "EmailChangeRequested";
pub const LOGIN_FAILED: &str = "LoginFailed";
pub const LOGIN_SUCCEEDED: &str = "LoginSucceeded";
pub const PASSWORD_RESET: &str = "PasswordReset";
pub const PENDING_USER_REGISTER_CREATED: &str = "PendingUserRegisterCreated";
pub const REGISTERED_EMAIL_SIGN_UP_ATTEMPTED: &str = "RegisteredEmailSignUpAttempted";
pub const RESET_PASSWORD_TOKEN_CREATED: &str = "ResetPasswordTokenCreated";
pub const SIGN_UP_CONFIRMED: &str = "SignUpConfirmed";
pub const USER_CREATED: &str = "UserCreated";
pub const USER_DEACTIVATED: &str = "UserDeactivated";
pub const USER_LOCKED_OUT: &str = "UserLockedOut";
pub const USER_UPDATED: &str = "UserUpdated";

// `institution` streams ([`crate::institution`]).
pub const CAMPUS_CREATED: &str = "CampusCreated";
pub const COURSE_OFFERED: &str = "CourseOffered";
pub const INSTITUTION_CREATED: &str = "InstitutionCreated";

// `student` streams ([`crate::student`]).
pub const STUDENT_CREATED: &str = "StudentCreated";

// `teacher` streams ([`crate::teacher`]).
pub const TEACHER_CREATED: &str = "TeacherCreated";

// `course` streams ([`crate::course`]).
pub const CAPACITY_CHANGED: &str = "CapacityChanged";
pub const COURSE_CLOSED: &str = "CourseClosed";
pub const COURSE_OPENED: &str = "CourseOpened";
pub const ENROLLMENT_CANCELLED: &str = "EnrollmentCancelled";
pub const ENROLLMENT_DECLINED: &str = "EnrollmentDeclined";
pub const ENROLLMENT_REQUESTED: &str = "EnrollmentRequested";
pub const STUDENT_ENROLLED: &str = "StudentEnrolled";

// `application` streams ([`crate::application`]).
pub const APPLICATION_SUBMITTED: &str = "ApplicationSubmitted";

// `exam_grade` streams ([`crate::exam_grade`]).
pub const EXAM_GRADE_NOTE_ADDED: &str = "ExamGradeNoteAdded";
pub const EXAM_GRADE_NOTE_CHANGED: &str = "ExamGradeNoteChanged";

// `webhook_endpoint` streams ([`crate::webhook_endpoint`]).
pub const WEBHOOK_ENDPOINT_CREATED: &str = "WebhookEndpointCreated";
pub const WEBHOOK_ENDPOINT_DELETED: &str = "WebhookEndpointDeleted";
pub const WEBHOOK_ENDPOINT_DISABLED: &str = "WebhookEndpointDisabled";
pub const WEBHOOK_ENDPOINT_ENABLED: &str = "WebhookEndpointEnabled";
pub const WEBHOOK_ENDPOINT_SECRET_ROTATED: &str = "WebhookEndpointSecretRotated";
pub const WEBHOOK_ENDPOINT_UPDATED: &str = "WebhookEndpointUpdated";
pub const WEBHOOK_MESSAGE_RESENT: &str = "WebhookMessageResent";
pub const WEBHOOK_RECOVERY_CANCELLED: &str = "WebhookRecoveryCancelled";
pub const WEBHOOK_RECOVERY_STARTED: &str = "WebhookRecoveryStarted";

// `queue_control` streams ([`crate::queue_control`]).
pub const TASK_CANCELLED: &str = "TaskCancelled";
pub const TASK_FORCE_RELEASED: &str = "TaskForceReleased";
pub const TASK_KIND_PAUSED: &str = "TaskKindPaused";
pub const TASK_KIND_RESUMED: &str = "TaskKindResumed";
pub const TASK_PRIORITY_CHANGED: &str = "TaskPriorityChanged";

/// Every event type, in aggregate order.
pub const ALL: &[&str] = &[
    EMAIL_CHANGE_REQUESTED,
    LOGIN_FAILED,
    LOGIN_SUCCEEDED,
    PASSWORD_RESET,
    PENDING_USER_REGISTER_CREATED,
    REGISTERED_EMAIL_SIGN_UP_ATTEMPTED,
    RESET_PASSWORD_TOKEN_CREATED,
    SIGN_UP_CONFIRMED,
    USER_CREATED,
    USER_DEACTIVATED,
    USER_LOCKED_OUT,
    USER_UPDATED,
    CAMPUS_CREATED,
    COURSE_OFFERED,
    INSTITUTION_CREATED,
    STUDENT_CREATED,
    TEACHER_CREATED,
    CAPACITY_CHANGED,
    COURSE_CLOSED,
    COURSE_OPENED,
    ENROLLMENT_CANCELLED,
    ENROLLMENT_DECLINED,
    ENROLLMENT_REQUESTED,
    STUDENT_ENROLLED,
    APPLICATION_SUBMITTED,
    EXAM_GRADE_NOTE_ADDED,
    EXAM_GRADE_NOTE_CHANGED,
    WEBHOOK_ENDPOINT_CREATED,
    WEBHOOK_ENDPOINT_DELETED,
    WEBHOOK_ENDPOINT_DISABLED,
    WEBHOOK_ENDPOINT_ENABLED,
    WEBHOOK_ENDPOINT_SECRET_ROTATED,
    WEBHOOK_ENDPOINT_UPDATED,
    WEBHOOK_MESSAGE_RESENT,
    WEBHOOK_RECOVERY_CANCELLED,
    WEBHOOK_RECOVERY_STARTED,
    TASK_CANCELLED,
    TASK_FORCE_RELEASED,
    TASK_KIND_PAUSED,
    TASK_KIND_RESUMED,
    TASK_PRIORITY_CHANGED,
];

/// Implements [`cqrs_es::DomainEvent`] for an aggregate's event enum: each variant's
/// stored type name (one of the constants above) and its payload version: the one
/// after the variant (`Variant => NAME @ VERSION`), else the enum's (`version = ...`),
/// else `"1.0"`.
macro_rules! impl_domain_event {
    (@version) => {
        "1.0"
    };
    (@version $version:path) => {
        $version
    };
    (@variant $default:ident) => {
        $default
    };
    (@variant $default:ident $version:path) => {
        $version
    };
    ($event:ty $(, version = $version:path)? {
        $($variant:ident => $name:ident $(@ $variant_version:path)?),+ $(,)?
    }) => {
        impl ::cqrs_es::DomainEvent for $event {
            fn event_type(&self) -> String {
                match self {
                    $(Self::$variant { .. } => $crate::event_types::$name,)+
                }
                .to_owned()
            }

            fn event_version(&self) -> String {
                let enum_version: &str =
                    $crate::event_types::impl_domain_event!(@version $($version)?);
                match self {
                    $(Self::$variant { .. } => $crate::event_types::impl_domain_event!(
                        @variant enum_version $($variant_version)?
                    ),)+
                }
                .to_owned()
            }
        }
    };
}
pub(crate) use impl_domain_event;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn the_list_is_exactly_the_sampled_event_types() {
        // Every variant has a sample (the catalog tests hold that), so the samples name
        // every event type an aggregate can record.
        let sampled: BTreeSet<String> = crate::catalog::sample_events()
            .into_iter()
            .map(|sample| sample.event_type)
            .collect();
        let listed: BTreeSet<String> = super::ALL.iter().map(|name| name.to_string()).collect();
        assert_eq!(listed.len(), super::ALL.len(), "no name twice");
        assert_eq!(sampled, listed);
    }
}
