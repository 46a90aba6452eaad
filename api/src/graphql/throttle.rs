//! Rate limits by who is calling, per operation, whatever the transport: an HTTP request
//! and an operation sent over `/graphql/ws` (a query, a mutation, a subscription
//! started) take one token from the same bucket. Beside the per-address limit of the
//! public mutations, taken in their resolvers (`graphql::rate_limit`):
//!
//! | caller | queries, subscriptions | mutations |
//! |---|---|---|
//! | anonymous | per client address (`anonymous_read_limit`) | public ones per address |
//! | signed in | per account (`account_read_limit`) | per account (`account_write_limit`) |
//!
//! A socket used to escape them: a signed-in caller's reads had no budget at all, and
//! subscriptions were never counted, so sockets ran ~100 operations each, as many
//! sockets as an address may open, unbounded in time. Signed-in callers are limited by
//! account, not address, so one account spread over many addresses gets no more,
//! and colleagues behind one address do not share a budget.
//!
//! The token is taken right after parsing (the operation's type decides the bucket)
//! and, on a socket, after its session check (`session::SessionCheck`, inside this):
//! a socket whose token was revoked or expired must not spend the account's budget,
//! which is its owner's (it did, one refused operation at a time, when the token came
//! first). A refused socket operation thus costs one indexed look-up, as an HTTP
//! request's authentication does. Over the budget:
//! `RATE_LIMITED` with `retryAfterSeconds`: HTTP 429 (`application/graphql-response+json`)
//! or 200 with the error; on a socket, `next` with the error, then `complete`.

use std::sync::OnceLock;

use async_graphql::extensions::{Extension, ExtensionContext, NextParseQuery, NextPrepareRequest};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Request, ServerResult, Variables};

use crate::error::ApiError;
use crate::graphql::RequestContext;
use crate::state::AppState;

/// The extension, one instance per request (or socket operation).
#[derive(Default)]
pub(crate) struct ThrottleRequest {
    operation_name: OnceLock<Option<String>>,
}

/// The type of the operation `name` picks (the only one when `None`); `None` when
/// the document does not say (async-graphql's validation then refuses it).
fn operation_type(document: &ExecutableDocument, name: Option<&str>) -> Option<OperationType> {
    match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(operation.node.ty),
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.get(name).map(|operation| operation.node.ty)
        }
        (DocumentOperations::Multiple(operations), None) => {
            let mut all = operations.values();
            match (all.next(), all.next()) {
                (Some(only), None) => Some(only.node.ty),
                _ => None,
            }
        }
    }
}

/// Takes the token `ty` costs `request`'s caller; on refusal, how long until one frees.
fn take_token(
    state: &AppState,
    request: &RequestContext,
    ty: OperationType,
) -> Result<(), std::time::Duration> {
    match (ty, &request.claims, request.client) {
        (OperationType::Mutation, Some(claims), _) => {
            state.account_writes.check_key(claims.user_id)
        }
        // Anonymous mutations: the public ones take theirs in the resolver; any other
        // is refused there at once.
        (OperationType::Mutation, None, _) => Ok(()),
        (_, Some(claims), _) => state.account_reads.check_key(claims.user_id),
        (_, None, Some(client)) => state.anonymous_reads.check(client),
        // No address: a call from inside the process.
        (_, None, None) => Ok(()),
    }
}

#[async_trait::async_trait]
impl Extension for ThrottleRequest {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let _ = self.operation_name.set(request.operation_name.clone());
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let name = self.operation_name.get().cloned().flatten();
        let (Some(state), Some(request), Some(ty)) = (
            ctx.data_opt::<AppState>(),
            ctx.data_opt::<RequestContext>(),
            operation_type(&document, name.as_deref()),
        ) else {
            return Ok(document);
        };
        take_token(state, request, ty)
            .map_err(|wait| ApiError::rate_limited(wait).into_server_error())?;
        Ok(document)
    }
}
