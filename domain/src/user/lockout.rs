//! Failed logins and lockouts, counted per source ([`LoginSource`]) under an account-wide
//! ceiling: the part of a [`super::User`]'s state that [`UserCommand::AttemptLogin`]
//! decides on.
//!
//! Keyed by account and source, so that a stranger who fails on purpose locks out only
//! themselves: `max_failed_logins` failures in a row from one source lock that source
//! out for `lockout`; the owner, from another source, still logs in. A guesser spread
//! over many sources is bounded by the ceiling: `max_failed_logins_per_account`
//! failures in a row from all sources together lock the whole account, as every
//! lockout did before sources were recorded.
//!
//! The ceiling must not become the crowd's weapon against the owner, so the sources the
//! owner logged in from recently are trusted (as mature products treat familiar
//! locations): a source with a success within `trusted_source_window` is not subject to
//! the whole account's lockout; its own still applies. A crowd of strangers then locks
//! out only the strangers and the owner's new addresses. Trust comes only from a
//! success, that is from the password; the most recent [`MAX_TRUSTED_SOURCES`] are
//! kept, from the `LoginSucceeded` events (which carry their source), and a password
//! reset ends them with every count and lockout.
//!
//! **Invariant:** the state stays bounded. A failure counts for one lockout duration
//! (`LoginFailed::counts_until`, decided when it is recorded); a source is forgotten
//! once its failures no longer count and its lockout has ended, judged at the time of
//! each later login event (no clock: only the events' own times).
//!
//! [`UserCommand::AttemptLogin`]: super::UserCommand::AttemptLogin

use std::collections::BTreeMap;

use super::*;

/// What the account remembers of its login attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Logins {
    /// Sources with failures that still count, or locked out.
    sources: BTreeMap<LoginSource, SourceRecord>,
    /// Logins from no known source (every login recorded before sources were): one
    /// count, whose lockout is the whole account's, as it was.
    unknown: Count,
    /// Failures in a row from every source: the ceiling's count.
    account: Count,
    /// The whole account is locked out until then.
    locked_until: Option<DateTime<Utc>>,
    /// Sources of the last successes, the most recent first, at most
    /// [`MAX_TRUSTED_SOURCES`], each with the time of its last success.
    #[serde(default)]
    trusted: Vec<(LoginSource, DateTime<Utc>)>,
}

/// Sources of successful logins the account remembers: enough for an owner's home,
/// office, phone and laptop, few enough to keep the state small.
pub(super) const MAX_TRUSTED_SOURCES: usize = 5;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct SourceRecord {
    count: Count,
    locked_until: Option<DateTime<Utc>>,
}

/// Failures in a row, and until when the last of them counts (`None`: until a success
/// or a lockout, as failures recorded before sources did).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Count {
    failures: u32,
    until: Option<DateTime<Utc>>,
}

impl Count {
    /// The failures that still count at `now`.
    fn at(&self, now: DateTime<Utc>) -> u32 {
        if self.until.is_none_or(|until| until > now) {
            self.failures
        } else {
            0
        }
    }
}

impl Logins {
    /// Until when a login from `source` is refused at `now`: the whole account's
    /// lockout (unless the source is trusted), or the source's own.
    pub(super) fn locked_until(
        &self,
        source: Option<&LoginSource>,
        now: DateTime<Utc>,
        services: &UserServices,
    ) -> Option<DateTime<Utc>> {
        let trusted = source.is_some_and(|source| self.trusts(source, now, services));
        let account = self.locked_until.filter(|_| !trusted);
        let own = source
            .and_then(|source| self.sources.get(source))
            .and_then(|record| record.locked_until);
        account.max(own).filter(|until| *until > now)
    }

    /// The whole account's lockout, ended or not.
    pub(super) fn account_locked_until(&self) -> Option<DateTime<Utc>> {
        self.locked_until
    }

    /// How many sources the account remembers (failures that count, or a lockout).
    pub(super) fn sources_remembered(&self) -> usize {
        self.sources.len()
    }

    /// How many sources of successful logins the account remembers (trusted or not
    /// any more): at most [`MAX_TRUSTED_SOURCES`].
    pub(super) fn trusted_remembered(&self) -> usize {
        self.trusted.len()
    }

    /// Whether `source` had a success within the trust window before `now`.
    fn trusts(&self, source: &LoginSource, now: DateTime<Utc>, services: &UserServices) -> bool {
        self.trusted
            .iter()
            .any(|(known, last)| known == source && now - *last < services.trusted_source_window)
    }

    /// The events of a wrong password from `source` at `now`.
    pub(super) fn fail(
        &self,
        source: Option<LoginSource>,
        now: DateTime<Utc>,
        services: &UserServices,
    ) -> Vec<UserEvent> {
        let own = match &source {
            Some(source) => self
                .sources
                .get(source)
                .map_or(0, |record| record.count.at(now)),
            None => self.unknown.at(now),
        };
        let consecutive_failures = own + 1;
        let account_failures = self.account.at(now) + 1;
        let until = now + services.lockout;
        let mut events = vec![UserEvent::LoginFailed {
            at: now,
            consecutive_failures,
            source,
            counts_until: Some(until),
        }];
        if account_failures >= services.max_failed_logins_per_account {
            events.push(UserEvent::UserLockedOut {
                until,
                source: None,
            });
            // The source reached its own threshold too: locked out as well, since a
            // trusted one is not held by the account's lockout (recorded after the
            // account's, which would otherwise end it).
            if source.is_some() && consecutive_failures >= services.max_failed_logins {
                events.push(UserEvent::UserLockedOut { until, source });
            }
        } else if consecutive_failures >= services.max_failed_logins {
            // An unknown source (`None`) locks the whole account.
            events.push(UserEvent::UserLockedOut { until, source });
        }
        events
    }

    pub(super) fn record_failure(
        &mut self,
        at: DateTime<Utc>,
        consecutive_failures: u32,
        source: Option<LoginSource>,
        counts_until: Option<DateTime<Utc>>,
    ) {
        self.forget_at(at);
        let count = Count {
            failures: consecutive_failures,
            until: counts_until,
        };
        match source {
            Some(source) => self.sources.entry(source).or_default().count = count,
            None => self.unknown = count,
        }
        self.account = Count {
            failures: self.account.at(at) + 1,
            until: counts_until,
        };
    }

    pub(super) fn record_lockout(&mut self, until: DateTime<Utc>, source: Option<LoginSource>) {
        match source {
            Some(source) => {
                // After the lockout the source gets a full set of attempts again.
                let record = self.sources.entry(source).or_default();
                record.locked_until = Some(until);
                record.count = Count::default();
            }
            None => {
                self.locked_until = Some(until);
                // Every failure so far stops counting by `until` (each counts for one
                // lockout duration), so after the lockout every source and the ceiling
                // start afresh; only a source locked out for longer is remembered, and
                // the sources of successes keep their counts: one that is trusted may
                // log in during the lockout, and must not get fresh attempts from it.
                self.unknown = Count::default();
                self.account = Count::default();
                let trusted = &self.trusted;
                let kept = |source: &LoginSource| trusted.iter().any(|(known, _)| known == source);
                self.sources.retain(|source, record| {
                    record.locked_until.is_some_and(|own| own > until) || kept(source)
                });
                for (source, record) in self.sources.iter_mut() {
                    if !kept(source) {
                        record.count = Count::default();
                    }
                }
            }
        }
    }

    /// A success resets its own source's count and the ceiling's, never another
    /// source's: the owner logging in must not give a stranger fresh attempts. Failures
    /// from no known source were the account's: they are reset too, as they were. Nor
    /// does it end the whole account's lockout (a trusted source logs in during one):
    /// the crowd that caused it waits it out. The source becomes the most recent
    /// trusted one.
    pub(super) fn record_success(&mut self, at: DateTime<Utc>, source: Option<&LoginSource>) {
        self.forget_at(at);
        if let Some(source) = source {
            self.sources.remove(source);
            self.trusted.retain(|(known, _)| known != source);
            self.trusted.insert(0, (*source, at));
            self.trusted.truncate(MAX_TRUSTED_SOURCES);
        }
        self.unknown = Count::default();
        self.account = Count::default();
    }

    /// Forgets what no longer matters at `at`: sources whose failures stopped counting
    /// and whose lockout (if any) has ended, and an ended account lockout.
    fn forget_at(&mut self, at: DateTime<Utc>) {
        self.sources.retain(|_, record| {
            record.count.at(at) > 0 || record.locked_until.is_some_and(|until| until > at)
        });
        if self.locked_until.is_some_and(|until| until <= at) {
            self.locked_until = None;
        }
    }
}
