//! The API's one error type, mapped once to GraphQL errors with a stable
//! `extensions.code`:
//!
//! | code | extensions | when |
//! |---|---|---|
//! | `VALIDATION` | `field`, `reason`, `fields` | input breaks a rule (also malformed requests); `field` and `reason` name the first refused input field, `fields` lists every one (`[{field, reason, message}]`) |
//! | `NOT_FOUND` | `reason` | the target does not exist |
//! | `CONFLICT` | `reason` | the command contradicts the current state |
//! | `UNAUTHENTICATED` | `reason` | missing/bad/expired access token, bad credentials or one-time token |
//! | `FORBIDDEN` | `reason` | the caller may not do this (role, other institution, locked out) |
//! | `RATE_LIMITED` | `retryAfterSeconds` | too many requests from one address or account (HTTP or WebSocket alike) |
//! | `TIMEOUT` | `requestId` | the request took longer than the configured timeout |
//! | `UNAVAILABLE` | `retryAfterSeconds`, `requestId` | the database cannot be reached now (down, restarting, every connection busy), or too many password hashes are asked at once: retry; HTTP 503 with `Retry-After` |
//! | `TIMEOUT` | `requestId`; `recorded`, `id` when known | the request took longer than the configured timeout; `recorded` says whether its change was recorded all the same (`applyToCourse`) |
//! | `INTERNAL` | `requestId` | anything else; details are logged with the request id |
//!
//! `reason` is the domain's stable rejection code (e.g. `RESET_TOKEN_EXPIRED`) or one
//! of the API's own (e.g. `OTHER_INSTITUTION`).
//!
//! `ApiError` deliberately does not implement `Display`: async-graphql converts every
//! `Display` type into an error *without* a code, so resolvers return
//! `Result<_, ApiError>` and every failure has to pass through the mapping below.

use async_graphql::ErrorExtensions as _;
use aula_domain::values::ValidationError;
use aula_domain::Rejection;
use aula_domain::RejectionKind;
use aula_eventlog::db::PageError;
use aula_eventlog::{CommandError, StoreError};

pub const VALIDATION: &str = "VALIDATION";
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const CONFLICT: &str = "CONFLICT";
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const RATE_LIMITED: &str = "RATE_LIMITED";
pub const TIMEOUT: &str = "TIMEOUT";
pub const INTERNAL: &str = "INTERNAL";
pub const UNAVAILABLE: &str = "UNAVAILABLE";

/// What an `UNAVAILABLE` answer asks the client to wait before retrying.
pub const UNAVAILABLE_RETRY_AFTER_SECONDS: u64 = 2;

/// One refused input field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub reason: String,
    pub message: String,
}

/// Checks several input fields and reports every refusal at once: each
/// `name = check` binds the checked value, and when any check failed the enclosing
/// function returns one `VALIDATION` error listing them all (`extensions.fields`).
///
/// ```text
/// validate! {
///     name = parse("name", PersonName::parse(&input.name)),
///     email = parse("email", Email::parse(&input.email)),
/// }
/// ```
#[macro_export]
macro_rules! validate {
    ($($var:ident = $check:expr),+ $(,)?) => {
        // Every check runs (in order) before any verdict.
        let ($($var,)+) = match ($($check,)+) {
            ($(::std::result::Result::Ok($var),)+) => ($($var,)+),
            ($($var,)+) => {
                let mut refused: ::std::vec::Vec<$crate::error::ApiError> = ::std::vec::Vec::new();
                $(
                    if let ::std::result::Result::Err(error) = $var {
                        refused.push(error);
                    }
                )+
                return ::std::result::Result::Err($crate::error::ApiError::all(refused));
            }
        };
    };
}

#[derive(Debug, Clone)]
pub enum ApiError {
    Validation {
        field: String,
        reason: String,
        message: String,
        /// Further input fields of the same request refused at the same time: a client
        /// learns every mistake of a form at once, not one per round trip.
        more: Vec<FieldProblem>,
    },
    /// NOT_FOUND, CONFLICT, UNAUTHENTICATED or FORBIDDEN.
    Rejected {
        code: &'static str,
        reason: String,
        message: String,
    },
    RateLimited {
        retry_after_seconds: u64,
    },
    /// The database cannot be reached now, or password hashing is saturated: a
    /// retryable condition, not a bug. The details are logged, never sent.
    Unavailable(String),
    /// The operation outlived its deadline. `recorded` says whether its change was
    /// recorded all the same, so the caller knows whether repeating it is needed.
    Timeout {
        message: String,
        recorded: bool,
        id: Option<uuid::Uuid>,
    },
    /// Never shown to clients: logged, then replaced by a generic message.
    Internal(String),
}

impl ApiError {
    pub fn validation(
        field: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Validation {
            field: field.into(),
            reason: reason.into(),
            message: message.into(),
            more: Vec::new(),
        }
    }

    /// Every refusal of a request's input fields as one `VALIDATION` error (see
    /// [`validate!`](crate::validate)). A non-validation error among them wins as it is.
    pub fn all(errors: Vec<ApiError>) -> Self {
        let mut problems = Vec::new();
        for error in errors {
            match error {
                Self::Validation {
                    field,
                    reason,
                    message,
                    more,
                } => {
                    problems.push(FieldProblem {
                        field,
                        reason,
                        message,
                    });
                    problems.extend(more);
                }
                other => return other,
            }
        }
        let mut problems = problems.into_iter();
        match problems.next() {
            Some(first) => Self::Validation {
                field: first.field,
                reason: first.reason,
                message: first.message,
                more: problems.collect(),
            },
            None => Self::internal("ApiError::all called without errors"),
        }
    }

    fn rejected(code: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self::Rejected {
            code,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    pub fn not_found(reason: &str, message: impl Into<String>) -> Self {
        Self::rejected(NOT_FOUND, reason, message)
    }

    pub fn conflict(reason: &str, message: impl Into<String>) -> Self {
        Self::rejected(CONFLICT, reason, message)
    }

    pub fn unauthenticated(reason: &str, message: impl Into<String>) -> Self {
        Self::rejected(UNAUTHENTICATED, reason, message)
    }

    pub fn forbidden(reason: &str, message: impl Into<String>) -> Self {
        Self::rejected(FORBIDDEN, reason, message)
    }

    /// Refused by a rate limit that frees a token after `wait`: the client is told to
    /// retry in whole seconds, never in 0.
    pub(crate) fn rate_limited(wait: std::time::Duration) -> Self {
        Self::RateLimited {
            retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    /// The error as a schema extension answers it, outside any resolver (no position).
    pub(crate) fn into_server_error(self) -> async_graphql::ServerError {
        async_graphql::Error::from(self).into_server_error(Default::default())
    }

    pub fn internal(details: impl std::fmt::Display) -> Self {
        Self::Internal(details.to_string())
    }

    /// An error from code plugged into the API (a [`TokenSink`](crate::TokenSink)), which
    /// only knows it as a boxed error: `UNAVAILABLE` when a database error in its chain
    /// says the database cannot be reached now (the mapping of [`From<sqlx::Error>`]),
    /// `INTERNAL` otherwise.
    pub(crate) fn plugged_in(
        context: &str,
        error: &(dyn std::error::Error + Send + Sync + 'static),
    ) -> Self {
        let details = format!("{context}: {error}");
        let mut chain: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(cause) = chain {
            if cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(is_unavailable)
            {
                return Self::Unavailable(details);
            }
            chain = cause.source();
        }
        Self::internal(details)
    }

    /// A domain rejection, reported by kind with the variant's stable code as `reason`.
    pub fn rejection<E: Rejection>(error: &E) -> Self {
        match error.kind() {
            RejectionKind::Validation => Self::validation("input", error.code(), error.to_string()),
            RejectionKind::NotFound => Self::not_found(error.code(), error.to_string()),
            RejectionKind::Conflict => Self::conflict(error.code(), error.to_string()),
            RejectionKind::Forbidden => Self::forbidden(error.code(), error.to_string()),
            RejectionKind::Unauthenticated => {
                Self::unauthenticated(error.code(), error.to_string())
            }
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => VALIDATION,
            Self::Rejected { code, .. } => code,
            Self::RateLimited { .. } => RATE_LIMITED,
            Self::Unavailable(_) => UNAVAILABLE,
            Self::Timeout { .. } => TIMEOUT,
            Self::Internal(_) => INTERNAL,
        }
    }
}

/// A validated value refused: reported against the GraphQL input field it came from.
pub fn invalid(field: &'static str, error: ValidationError) -> ApiError {
    ApiError::validation(field, error.code(), error.for_field(field).to_string())
}

/// A conversion that cannot fail (a `From` seen as a `TryFrom`) has no error to map.
impl From<std::convert::Infallible> for ApiError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError::validation(error.field, error.code(), error.to_string())
    }
}

impl<E: Rejection> From<CommandError<E>> for ApiError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(rejection) => ApiError::rejection(&rejection),
            CommandError::Conflict { attempts } => {
                // The attempt count is for the logs; the caller gets plain words.
                tracing::info!(attempts, "command gave up after concurrent changes");
                ApiError::conflict(
                    "CONCURRENT_MODIFICATION",
                    "this was being changed by someone else at the same moment; nothing was recorded, please try again",
                )
            }
            CommandError::Store(store) => store.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Database(database) if is_unavailable(database) => {
                ApiError::Unavailable(error.to_string())
            }
            // The stream broke off while loading: the database, not the data.
            StoreError::Unavailable(_) => ApiError::Unavailable(error.to_string()),
            _ => ApiError::internal(error),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            ApiError::Unavailable(format!("database unavailable: {error}"))
        } else {
            ApiError::internal(format!("database error: {error}"))
        }
    }
}

/// Too many password hashes asked at once: the server is saturated now, a retryable
/// condition like a database that cannot be reached (503, `Retry-After`).
impl From<crate::secrets::Saturated> for ApiError {
    fn from(saturated: crate::secrets::Saturated) -> Self {
        ApiError::Unavailable(format!(
            "password hashing saturated ({} requests waiting for a lane)",
            saturated.waiting
        ))
    }
}

/// A cursor the list did not hand out.
pub(crate) fn bad_cursor() -> ApiError {
    ApiError::validation("after", "INVALID_CURSOR", "not a cursor of this list")
}

/// A keyset-paginated list's error: a cursor the list refuses is the caller's mistake
/// (`VALIDATION` on `after`); a database error is like any other.
impl From<PageError> for ApiError {
    fn from(error: PageError) -> Self {
        match error {
            PageError::BadCursor => bad_cursor(),
            PageError::Database(e) => e.into(),
        }
    }
}

/// See [`aula_eventlog::db::is_unavailable`].
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    aula_eventlog::db::is_unavailable(error)
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        match error {
            ApiError::Validation {
                field,
                reason,
                message,
                more,
            } => {
                let mut fields = vec![problem_value(&field, &reason, &message)];
                fields.extend(
                    more.iter()
                        .map(|p| problem_value(&p.field, &p.reason, &p.message)),
                );
                let message = if more.is_empty() {
                    message
                } else {
                    let mut all = vec![format!("{field}: {message}")];
                    all.extend(more.iter().map(|p| format!("{}: {}", p.field, p.message)));
                    format!("{} inputs are invalid: {}", all.len(), all.join("; "))
                };
                async_graphql::Error::new(message).extend_with(|_, e| {
                    e.set("code", code);
                    e.set("field", field);
                    e.set("reason", reason);
                    e.set("fields", async_graphql::Value::List(fields));
                })
            }
            ApiError::Rejected {
                reason, message, ..
            } => async_graphql::Error::new(message).extend_with(|_, e| {
                e.set("code", code);
                e.set("reason", reason);
            }),
            ApiError::RateLimited {
                retry_after_seconds,
            } => async_graphql::Error::new(format!(
                "too many requests; retry in {retry_after_seconds} s"
            ))
            .extend_with(|_, e| {
                e.set("code", code);
                e.set("retryAfterSeconds", retry_after_seconds);
            }),
            ApiError::Unavailable(details) => {
                tracing::warn!(error = %details, "unavailable now; the client is asked to retry");
                async_graphql::Error::new("the service is temporarily unavailable; retry shortly")
                    .extend_with(|_, e| {
                        e.set("code", code);
                        e.set("retryAfterSeconds", UNAVAILABLE_RETRY_AFTER_SECONDS);
                    })
            }
            ApiError::Timeout {
                message,
                recorded,
                id,
            } => async_graphql::Error::new(message).extend_with(|_, e| {
                e.set("code", code);
                e.set("recorded", recorded);
                if let Some(id) = id {
                    e.set("id", id.to_string());
                }
            }),
            ApiError::Internal(details) => {
                // Runs inside the request's span, which carries the request id; the HTTP
                // layer adds that id to the error it sends.
                tracing::error!(error = %details, "internal error");
                async_graphql::Error::new("internal error").extend_with(|_, e| {
                    e.set("code", code);
                })
            }
        }
    }
}

fn problem_value(field: &str, reason: &str, message: &str) -> async_graphql::Value {
    let mut object = async_graphql::indexmap::IndexMap::new();
    object.insert(
        async_graphql::Name::new("field"),
        async_graphql::Value::from(field),
    );
    object.insert(
        async_graphql::Name::new("reason"),
        async_graphql::Value::from(reason),
    );
    object.insert(
        async_graphql::Name::new("message"),
        async_graphql::Value::from(message),
    );
    async_graphql::Value::Object(object)
}
