//! The task kinds: one table of every kind with its stored name, priority (lower runs
//! first), retry budget and, for kinds that share a concurrency cap, their
//! [`KindClass`]. The handler of each kind is chosen by an exhaustive `match`
//! over [`TaskKind`] in [`crate::handlers::Registry::standard`], so a kind added here
//! without a handler does not compile.
//!
//! **The kind names are stored in `tasks.kind`**: add kinds, never rename them.

use std::fmt;

/// How urgent a kind is (lower first) and how many attempts it gets before `dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindPolicy {
    pub priority: i16,
    pub max_attempts: i32,
}

/// What a task of a kind not in the table gets (tests' own kinds).
const DEFAULT_POLICY: KindPolicy = KindPolicy {
    priority: 50,
    max_attempts: 5,
};

/// Kinds that share a concurrency cap: a worker process runs at most so many tasks of
/// one class at once (`ProcessorConfig::class_cap`), and while a class is at its cap
/// its claims take other kinds only.
///
/// Why: e-mails sort before enrollment decisions (a person waits for the link), and each
/// SMTP send may take up to `mail::SEND_TIMEOUT`; with a slow relay, a rush's e-mails
/// held every slot and the decisions behind them waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KindClass {
    /// Every `email.*` kind: their time is the relay's.
    Mail,
}

impl KindClass {
    pub const ALL: &'static [KindClass] = &[KindClass::Mail];

    pub const fn name(self) -> &'static str {
        match self {
            KindClass::Mail => "mail",
        }
    }

    /// The stored names of the kinds of this class.
    pub fn kinds(self) -> Vec<&'static str> {
        TaskKind::ALL
            .iter()
            .filter(|kind| kind.class() == Some(self))
            .map(|kind| kind.name())
            .collect()
    }
}

/// Declares [`TaskKind`], its table and a `&str` constant per kind (the name the queue,
/// the API and the tests use).
macro_rules! task_kinds {
    (@class) => { None };
    (@class $class:ident) => { Some(KindClass::$class) };
    ($(
        $(#[$doc:meta])*
        $variant:ident, $constant:ident = $name:literal, priority $priority:literal, attempts $attempts:literal $(, class $class:ident)?;
    )*) => {
        /// A kind of task the processor runs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum TaskKind {
            $($(#[$doc])* $variant,)*
        }

        $($(#[$doc])* pub const $constant: &str = $name;)*

        impl TaskKind {
            /// Every kind, in table order.
            pub const ALL: &'static [TaskKind] = &[$(TaskKind::$variant,)*];

            /// The name stored in `tasks.kind`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(TaskKind::$variant => $name,)*
                }
            }

            /// The kind's priority and retry budget.
            pub const fn policy(self) -> KindPolicy {
                match self {
                    $(TaskKind::$variant => KindPolicy {
                        priority: $priority,
                        max_attempts: $attempts,
                    },)*
                }
            }

            /// The class whose cap the kind shares, if any.
            pub const fn class(self) -> Option<KindClass> {
                match self {
                    $(TaskKind::$variant => task_kinds!(@class $($class)?),)*
                }
            }

            /// The kind named `name`, if the processor runs it.
            pub fn parse(name: &str) -> Option<TaskKind> {
                match name {
                    $($name => Some(TaskKind::$variant),)*
                    _ => None,
                }
            }
        }

        /// Every kind's name (the standard registry registers exactly these; a test
        /// holds the two lists equal). The API refuses a filter naming another.
        pub const ALL: &[&str] = &[$($name,)*];
    };
}

task_kinds! {
    // One-time links: the person waits for them.
    EmailSignupConfirmation, EMAIL_SIGNUP_CONFIRMATION = "email.signup_confirmation", priority 10, attempts 8, class Mail;
    EmailPasswordReset, EMAIL_PASSWORD_RESET = "email.password_reset", priority 10, attempts 8, class Mail;
    /// The link that confirms a new e-mail address, sent to that address.
    EmailChangeConfirmation, EMAIL_CHANGE_CONFIRMATION = "email.email_change_confirmation", priority 10, attempts 8, class Mail;
    /// To the current address: a change of the account's e-mail was requested.
    EmailChangeNotice, EMAIL_CHANGE_NOTICE = "email.email_change_notice", priority 10, attempts 8, class Mail;
    /// The applicant hears at once that the application is queued: it never waits behind
    /// the decisions (or their result e-mails) of an application rush.
    EmailApplicationScheduled, EMAIL_APPLICATION_SCHEDULED = "email.application_scheduled", priority 15, attempts 8, class Mail;
    EnrollmentDecide, ENROLLMENT_DECIDE = "enrollment.decide", priority 20, attempts 10;
    /// Creates the institution of a confirmed sign-up if the API did not.
    InstitutionCreate, INSTITUTION_CREATE = "institution.create", priority 20, attempts 10;
    EmailEnrolled, EMAIL_ENROLLED = "email.enrolled", priority 30, attempts 8, class Mail;
    EmailDeclined, EMAIL_DECLINED = "email.declined", priority 30, attempts 8, class Mail;
    /// To the student whose enrollment a manager cancelled.
    EmailEnrollmentCancelled, EMAIL_ENROLLMENT_CANCELLED = "email.enrollment_cancelled", priority 30, attempts 8, class Mail;
    EmailWelcome, EMAIL_WELCOME = "email.welcome", priority 30, attempts 8, class Mail;
    /// To the owner of an account someone signed up for again. Anyone can cause one, so
    /// it never delays the kinds above.
    EmailAlreadyRegistered, EMAIL_ALREADY_REGISTERED = "email.already_registered", priority 30, attempts 8, class Mail;
    NotifyGrade, NOTIFY_GRADE = "notification.grade", priority 40, attempts 5;
    LinkStudentNotifications, LINK_STUDENT_NOTIFICATIONS = "notification.link_student", priority 40, attempts 5;
    LinkTeacherNotifications, LINK_TEACHER_NOTIFICATIONS = "notification.link_teacher", priority 40, attempts 5;
    /// One delivery attempt of one webhook message (`webhooks::deliver`). It retries on
    /// its own schedule (a new task per attempt): the queue's retries only cover a
    /// database that failed while recording it.
    WebhookDeliver, WEBHOOK_DELIVER = "webhook.deliver", priority 35, attempts 10;
    /// One batch of a webhook "recover since T" job (`webhooks::recover`).
    WebhookRecover, WEBHOOK_RECOVER = "webhook.recover", priority 60, attempts 10;
    DemoSeed, DEMO_SEED = "demo.seed", priority 90, attempts 3;
    /// Does nothing (benchmarks, queue tests).
    Noop, NOOP = "noop", priority 50, attempts 5;
}

impl TaskKind {
    pub const fn as_str(self) -> &'static str {
        self.name()
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The policy of the kind named `kind`; a name not in the table gets the default
/// (priority 50, 5 attempts).
pub fn policy(kind: &str) -> KindPolicy {
    TaskKind::parse(kind).map_or(DEFAULT_POLICY, TaskKind::policy)
}

/// The delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, capped,
/// plus up to 25 % jitter so a burst of failures does not retry in lockstep.
pub fn backoff(
    attempt: i32,
    base: std::time::Duration,
    max: std::time::Duration,
) -> std::time::Duration {
    use rand::Rng;
    let exponent = (attempt.max(1) - 1).min(20) as u32;
    let delay = base.saturating_mul(2u32.saturating_pow(exponent)).min(max);
    let jitter_ms = rand::thread_rng().gen_range(0..=(delay.as_millis() as u64 / 4));
    delay + std::time::Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter_and_a_cap() {
        let base = std::time::Duration::from_millis(100);
        let max = std::time::Duration::from_secs(10);
        for attempt in 1..=12 {
            let expected = (100u64 << (attempt - 1)).min(10_000);
            let delay = backoff(attempt, base, max).as_millis() as u64;
            assert!(
                delay >= expected && delay <= expected + expected / 4,
                "attempt {attempt}: {delay} ms, expected {expected}..{}",
                expected + expected / 4
            );
        }
    }

    use super::*;

    #[test]
    fn names_parse_back_to_their_kind() {
        for kind in TaskKind::ALL {
            assert_eq!(TaskKind::parse(kind.name()), Some(*kind));
        }
        assert_eq!(ALL.len(), TaskKind::ALL.len());
        assert_eq!(TaskKind::parse("email.unknown"), None);
        assert_eq!(policy("email.unknown"), DEFAULT_POLICY);
    }

    #[test]
    fn the_table_keeps_the_stored_policies() {
        // The values `policy` had before the table: a change here changes the queue.
        let expected: &[(&str, i16, i32)] = &[
            (EMAIL_PASSWORD_RESET, 10, 8),
            (EMAIL_SIGNUP_CONFIRMATION, 10, 8),
            (EMAIL_CHANGE_CONFIRMATION, 10, 8),
            (EMAIL_CHANGE_NOTICE, 10, 8),
            (EMAIL_APPLICATION_SCHEDULED, 15, 8),
            (ENROLLMENT_DECIDE, 20, 10),
            (INSTITUTION_CREATE, 20, 10),
            (EMAIL_ENROLLED, 30, 8),
            (EMAIL_DECLINED, 30, 8),
            (EMAIL_ENROLLMENT_CANCELLED, 30, 8),
            (EMAIL_WELCOME, 30, 8),
            (EMAIL_ALREADY_REGISTERED, 30, 8),
            (NOTIFY_GRADE, 40, 5),
            (LINK_STUDENT_NOTIFICATIONS, 40, 5),
            (LINK_TEACHER_NOTIFICATIONS, 40, 5),
            (WEBHOOK_DELIVER, 35, 10),
            (WEBHOOK_RECOVER, 60, 10),
            (DEMO_SEED, 90, 3),
            (NOOP, 50, 5),
        ];
        for (kind, priority, max_attempts) in expected {
            assert_eq!(
                policy(kind),
                KindPolicy {
                    priority: *priority,
                    max_attempts: *max_attempts
                },
                "{kind}"
            );
        }
        assert_eq!(expected.len(), ALL.len());
    }

    #[test]
    fn every_e_mail_kind_and_only_those_share_the_mail_cap() {
        for kind in TaskKind::ALL {
            let mail = kind.name().starts_with("email.");
            assert_eq!(kind.class() == Some(KindClass::Mail), mail, "{kind}");
        }
        assert_eq!(KindClass::Mail.kinds().len(), 10);
    }
}
