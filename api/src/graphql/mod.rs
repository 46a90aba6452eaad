//! The GraphQL schema: queries, one mutation per domain command, subscriptions.

/// The `#[Object]` impl of command mutations. Each takes the command's `input` and, where
/// it records events a client may want to read back, `waitForProjections`: their
/// descriptions are part of the schema, so they are written here once. A resolver reads
/// `async fn name(ctx, input: Input, wait_for_projections) -> Answer { ... }`, and
/// answers `Result<Answer, ApiError>`.
macro_rules! command_mutations {
    (
        impl $mutation:ident {
            $(
                $(#[$attr:meta])*
                async fn $name:ident(
                    $ctx:ident, $input:ident: $input_ty:ty $(, $wait:ident)? $(,)?
                ) -> $answer:ty $body:block
            )*
        }
    ) => {
        #[async_graphql::Object]
        impl $mutation {
            $(
                $(#[$attr])*
                async fn $name(
                    &self,
                    $ctx: &async_graphql::Context<'_>,
                    #[graphql(desc = "The command's input.")] $input: $input_ty,
                    $(
                        #[graphql(
                            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
                        )]
                        $wait: Option<bool>,
                    )?
                ) -> Result<$answer, crate::error::ApiError> $body
            )*
        }
    };
}

/// One page of a cursor-paginated list: `nodes`, and the `nextCursor` to pass as `after`
/// for the next page. Every list answers this shape; each page type keeps its own
/// descriptions (they are part of the schema).
macro_rules! page {
    (
        $(#[$attr:meta])*
        $name:ident {
            $(#[$nodes_attr:meta])*
            nodes: $node:ty $(,)?
        }
    ) => {
        page! {
            $(#[$attr])*
            $name {
                $(#[$nodes_attr])*
                nodes: $node,
                /// Pass as `after` for the next page; null on the last page.
                next_cursor,
            }
        }
    };
    (
        $(#[$attr:meta])*
        $name:ident {
            $(#[$nodes_attr:meta])*
            nodes: $node:ty,
            $(#[$cursor_attr:meta])*
            next_cursor $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(async_graphql::SimpleObject, Debug, Clone)]
        pub struct $name {
            $(#[$nodes_attr])*
            pub nodes: Vec<$node>,
            $(#[$cursor_attr])*
            pub next_cursor: Option<String>,
        }
    };
}

/// A GraphQL object that shows one row of a read model (or of the processor's tables):
/// the struct, with each field's description, and its conversion from the row, written
/// as one list. A field takes the row's field of the same name as it is (`name: Type`),
/// or the value of an expression over the row (`name: Type = BigInt(row.position)`).
/// `from` converts with `From`; `try_from` with `TryFrom<Error = ApiError>`, where an
/// expression may refuse the row with `?`. The expressions are evaluated before the
/// plain fields are moved out of the row, so they may still borrow any part of it. A
/// row that comes with values from elsewhere converts from a tuple, `as (row, extra)`,
/// the extra values named apart from the fields they fill
/// (`course_name: Option<String> = looked_up_name`).
macro_rules! row_object {
    (
        @ $pattern:pat,
        $(#[$attr:meta])*
        $name:ident $conversion:ident $row_type:ty as $row:ident {
            $(
                $(#[$field_attr:meta])*
                $field:ident: $type:ty $(= $value:expr)?
            ),* $(,)?
        }
    ) => {
        #[derive(async_graphql::SimpleObject, Debug, Clone)]
        $(#[$attr])*
        pub struct $name {
            $(
                $(#[$field_attr])*
                pub $field: $type,
            )*
        }

        row_object!(@ $conversion $name, $row_type, $pattern, {
            $($(let $field = $value;)?)*
            $name { $($field: row_object!(@field $row.$field $(, $value)?),)* }
        });
    };
    (@ from $name:ident, $row_type:ty, $pattern:pat, $body:block) => {
        impl From<$row_type> for $name {
            fn from($pattern: $row_type) -> Self $body
        }
    };
    (@ try_from $name:ident, $row_type:ty, $pattern:pat, $body:block) => {
        impl TryFrom<$row_type> for $name {
            type Error = crate::error::ApiError;

            fn try_from($pattern: $row_type) -> Result<Self, crate::error::ApiError> {
                Ok($body)
            }
        }
    };
    (@field $row:ident.$field:ident) => {
        $row.$field
    };
    (@field $row:ident.$field:ident, $value:expr) => {
        $field
    };
    (
        $(#[$attr:meta])*
        $name:ident $conversion:ident $row_type:ty as ($row:ident $(, $extra:ident)+) {
            $($fields:tt)*
        }
    ) => {
        row_object! {
            @ ($row $(, $extra)+),
            $(#[$attr])*
            $name $conversion $row_type as $row { $($fields)* }
        }
    };
    (
        $(#[$attr:meta])*
        $name:ident $conversion:ident $row_type:ty as $row:ident { $($fields:tt)* }
    ) => {
        row_object! {
            @ $row,
            $(#[$attr])*
            $name $conversion $row_type as $row { $($fields)* }
        }
    };
}

mod admin_ops;
pub(crate) mod bulk;
mod charts;
mod directory;
pub(crate) mod finish;
pub mod limits;
mod mutations;
mod notifications;
mod observers;
mod payloads;
mod processing;
mod query;
mod queue_controls;
mod reachable;
mod read_models;
pub(crate) mod session;
pub(crate) mod shared_poll;
mod subscription;
mod tasks;
mod throttle;
mod types;
mod webhooks;

use std::borrow::Cow;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionFactory};
use async_graphql::parser::types::Field;
use async_graphql::{
    Context, ContextSelectionSet, MergedObject, OutputType, Positioned, Schema, ServerResult,
};
use aula_eventlog::{Actor, CommandBus, EventMetadata};
use cqrs_es::Aggregate;
use uuid::Uuid;

use crate::auth::Claims;
use crate::error::ApiError;
use crate::state::AppState;

pub use subscription::SubscriptionRoot;

/// Every query: the aggregates' small reads and the read models.
#[derive(MergedObject, Default)]
pub struct QueryRoot(
    query::CoreQuery,
    read_models::ReadModelQuery,
    notifications::NotificationQuery,
    processing::ProcessingQuery,
    bulk::BulkQuery,
    tasks::TaskQuery,
    queue_controls::QueueControlQuery,
    directory::DirectoryQuery,
    webhooks::WebhookQuery,
    charts::ChartQuery,
);

/// Every mutation: one per domain command, and the admin operations.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    mutations::CommandMutation,
    admin_ops::AdminMutation,
    notifications::NotificationMutation,
    bulk::BulkMutation,
    queue_controls::QueueControlMutation,
    webhooks::WebhookMutation,
    observers::ObserverMutation,
);

pub type AulaSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Who is asking, per request (HTTP) or per connection (WebSocket).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub claims: Option<Claims>,
    pub client: Option<IpAddr>,
    pub request_id: String,
}

static ANONYMOUS: RequestContext = RequestContext {
    claims: None,
    client: None,
    request_id: String::new(),
};

/// Builds the schema with the configured limits; `state` may be `None` only for
/// printing the SDL.
pub fn build(state: Option<AppState>) -> AulaSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    );
    // The guard comes first: it must see the raw document before anything parses it.
    if let Some(state) = &state {
        builder = builder.extension(limits::DocumentGuard(state.config.document_limits));
    }
    builder = builder.extension(finish::MarkMutations);
    // Each wraps the ones after it. The parse step runs the checks before execution,
    // innermost first: a socket's session look-up, then the throttle's token (a
    // revoked or expired socket must not spend its account's budget: the owner's),
    // raced by `Reachable` against an outage.
    builder = builder
        .extension(PerRequest::<crate::metrics::OperationRecorder>::default())
        .extension(reachable::Reachable)
        .extension(PerRequest::<throttle::ThrottleRequest>::default())
        .extension(PerRequest::<session::SessionCheck>::default())
        .extension(SocketErrorCodes);
    if let Some(state) = state {
        builder = builder
            .limit_directives(state.config.document_limits.max_directives)
            .limit_depth(state.config.max_query_depth)
            .limit_complexity(state.config.max_query_complexity)
            .limit_recursive_depth(32)
            .data(state);
    }
    builder.finish()
}

/// Gives the errors of an operation run over `/graphql/ws` the codes an HTTP response's
/// errors get (`crate::http::normalize`): async-graphql's own errors (syntax, unknown
/// field, wrong type) carried no `extensions.code` on the socket, where the API
/// promises one on every error, and `INTERNAL` ones no request id.
struct SocketErrorCodes;

impl ExtensionFactory for SocketErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SocketErrorCodes)
    }
}

#[async_trait::async_trait]
impl Extension for SocketErrorCodes {
    fn subscribe<'s>(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        stream: futures::stream::BoxStream<'s, async_graphql::Response>,
        next: async_graphql::extensions::NextSubscribe<'_>,
    ) -> futures::stream::BoxStream<'s, async_graphql::Response> {
        use futures::StreamExt as _;
        let request_id = ctx
            .data_opt::<RequestContext>()
            .map(|context| context.request_id.clone())
            .unwrap_or_default();
        next.run(ctx, stream)
            .map(move |mut response| {
                for error in &mut response.errors {
                    crate::http::normalize(error, &request_id);
                }
                response
            })
            .boxed()
    }
}

/// The factory of a schema extension that keeps what it learns for one request: each
/// request gets a fresh `E::default()`.
struct PerRequest<E>(PhantomData<fn() -> E>);

impl<E> Default for PerRequest<E> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<E: Extension + Default> ExtensionFactory for PerRequest<E> {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(E::default())
    }
}

/// The current state of the aggregate `id` (its decision model), for a resolver that
/// reads it; the version that comes with it matters only to commands.
pub(crate) async fn load<A>(bus: &CommandBus<A>, id: Uuid) -> Result<A, ApiError>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
{
    let (aggregate, _) = bus.load(&id.to_string()).await?;
    Ok(aggregate)
}

pub(crate) fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    // `build` always adds the state for a schema that executes requests.
    ctx.data_unchecked::<AppState>()
}

pub(crate) fn request<'a>(ctx: &Context<'a>) -> &'a RequestContext {
    ctx.data_opt::<RequestContext>().unwrap_or(&ANONYMOUS)
}

/// The caller's claims, refused unless its role is one of `roles`, and the state to
/// serve it with: the first step of a resolver that only some roles may call.
pub(crate) fn authorize<'a>(
    ctx: &Context<'a>,
    roles: &[aula_domain::user::Role],
) -> Result<(&'a Claims, &'a AppState), ApiError> {
    let claims = crate::auth::require_role(request(ctx).claims.as_ref(), roles)?;
    Ok((claims, state(ctx)))
}

pub(crate) fn metadata(request: &RequestContext, institution: Option<Uuid>) -> EventMetadata {
    let actor = match &request.claims {
        Some(claims) => Actor::User(claims.user_id),
        None => Actor::Public,
    };
    EventMetadata::new(actor, institution).with_request_id(request.request_id.clone())
}

/// Error text the processor and the projections record (task error chains: SQL, SMTP and
/// handler messages), as a field shows it: the text is for the platform's administrators
/// (and its platform-wide observers, who read what admins read); other callers learn that
/// there was an error, not its internals ([`WITHHELD_ERROR`]). A `String` in the schema.
#[derive(Debug, Clone)]
pub(crate) struct OperatorError(pub(crate) String);

impl OutputType for OperatorError {
    fn type_name() -> Cow<'static, str> {
        <String as OutputType>::type_name()
    }

    fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
        <String as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<async_graphql::Value> {
        let admin = ctx
            .data_opt::<RequestContext>()
            .and_then(|request| request.claims.as_ref())
            .is_some_and(crate::auth::sees_every_institution);
        let shown = if admin {
            self.0.clone()
        } else {
            WITHHELD_ERROR.to_owned()
        };
        shown.resolve(ctx, field).await
    }
}

/// What non-admins see instead of an error's text.
pub const WITHHELD_ERROR: &str = "an error occurred; platform administrators can see its details";

/// Takes a rate-limit token for the caller of a public mutation.
pub(crate) fn rate_limit(ctx: &Context<'_>) -> Result<(), ApiError> {
    let Some(client) = request(ctx).client else {
        return Ok(());
    };
    state(ctx)
        .limiter
        .check(client)
        .map_err(ApiError::rate_limited)
}
