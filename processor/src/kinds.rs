//! The task kinds, their priorities (lower runs first) and retry budgets.
//!
//! **The kind names are stored in `tasks.kind`**: add kinds, never rename them.

pub const EMAIL_SIGNUP_CONFIRMATION: &str = "email.signup_confirmation";
pub const EMAIL_PASSWORD_RESET: &str = "email.password_reset";
/// To the owner of an account someone signed up for again.
pub const EMAIL_ALREADY_REGISTERED: &str = "email.already_registered";
pub const EMAIL_WELCOME: &str = "email.welcome";
/// The link that confirms a new e-mail address, sent to that address.
pub const EMAIL_CHANGE_CONFIRMATION: &str = "email.email_change_confirmation";
/// To the current address: a change of the account's e-mail was requested.
pub const EMAIL_CHANGE_NOTICE: &str = "email.email_change_notice";
pub const EMAIL_APPLICATION_SCHEDULED: &str = "email.application_scheduled";
pub const EMAIL_ENROLLED: &str = "email.enrolled";
pub const EMAIL_DECLINED: &str = "email.declined";
/// To the student whose enrollment a manager cancelled.
pub const EMAIL_ENROLLMENT_CANCELLED: &str = "email.enrollment_cancelled";
pub const ENROLLMENT_DECIDE: &str = "enrollment.decide";
pub const NOTIFY_GRADE: &str = "notification.grade";
pub const LINK_STUDENT_NOTIFICATIONS: &str = "notification.link_student";
pub const LINK_TEACHER_NOTIFICATIONS: &str = "notification.link_teacher";
/// Creates the institution of a confirmed sign-up if the API did not.
pub const INSTITUTION_CREATE: &str = "institution.create";
pub const DEMO_SEED: &str = "demo.seed";
/// One delivery attempt of one webhook message (`webhooks::deliver`).
pub const WEBHOOK_DELIVER: &str = "webhook.deliver";
/// One batch of a webhook "recover since T" job (`webhooks::recover`).
pub const WEBHOOK_RECOVER: &str = "webhook.recover";
/// Does nothing (benchmarks, queue tests).
pub const NOOP: &str = "noop";

/// Every kind the processor runs (the standard registry registers exactly these; a test
/// holds the two lists equal). The API refuses a filter naming another.
pub const ALL: &[&str] = &[
    EMAIL_SIGNUP_CONFIRMATION,
    EMAIL_PASSWORD_RESET,
    EMAIL_ALREADY_REGISTERED,
    EMAIL_WELCOME,
    EMAIL_CHANGE_CONFIRMATION,
    EMAIL_CHANGE_NOTICE,
    EMAIL_APPLICATION_SCHEDULED,
    EMAIL_ENROLLED,
    EMAIL_DECLINED,
    EMAIL_ENROLLMENT_CANCELLED,
    ENROLLMENT_DECIDE,
    NOTIFY_GRADE,
    LINK_STUDENT_NOTIFICATIONS,
    LINK_TEACHER_NOTIFICATIONS,
    INSTITUTION_CREATE,
    DEMO_SEED,
    NOOP,
    WEBHOOK_DELIVER,
    WEBHOOK_RECOVER,
];

/// How urgent a kind is (lower first) and how many attempts it gets before `dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindPolicy {
    pub priority: i16,
    pub max_attempts: i32,
}

pub fn policy(kind: &str) -> KindPolicy {
    let (priority, max_attempts) = match kind {
        EMAIL_PASSWORD_RESET => (10, 8),
        EMAIL_SIGNUP_CONFIRMATION => (10, 8),
        EMAIL_CHANGE_CONFIRMATION | EMAIL_CHANGE_NOTICE => (10, 8),
        // The applicant hears at once that the application is queued: it never waits
        // behind the decisions (or their result e-mails) of an application rush.
        EMAIL_APPLICATION_SCHEDULED => (15, 8),
        ENROLLMENT_DECIDE | INSTITUTION_CREATE => (20, 10),
        // Anyone can cause an `email.already_registered`: it never delays the ones above.
        EMAIL_ENROLLED
        | EMAIL_DECLINED
        | EMAIL_ENROLLMENT_CANCELLED
        | EMAIL_WELCOME
        | EMAIL_ALREADY_REGISTERED => (30, 8),
        NOTIFY_GRADE | LINK_STUDENT_NOTIFICATIONS | LINK_TEACHER_NOTIFICATIONS => (40, 5),
        // A webhook attempt retries on its own schedule (a new task per attempt): the
        // queue's retries only cover a database that failed while recording it.
        WEBHOOK_DELIVER => (35, 10),
        WEBHOOK_RECOVER => (60, 10),
        DEMO_SEED => (90, 3),
        _ => (50, 5),
    };
    KindPolicy {
        priority,
        max_attempts,
    }
}
