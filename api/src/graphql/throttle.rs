//! Rate limits by who is calling, per operation, whatever the transport: an HTTP request
//! and an operation sent over `/graphql/ws` (a query, a mutation, a subscription
//! started) take one token from the same bucket per root field they run (aliases
//! included, at most the burst). Beside the per-address limit of the
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

use std::collections::HashSet;
use std::sync::OnceLock;

use async_graphql::extensions::{Extension, ExtensionContext, NextParseQuery, NextPrepareRequest};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Request, ServerResult, Variables};

use crate::error::ApiError;
use crate::graphql::RequestContext;
use crate::state::AppState;

/// The extension, one instance per request (or socket operation).
#[derive(Default)]
pub(crate) struct ThrottleRequest {
    operation_name: OnceLock<Option<String>>,
}

/// The operation `name` picks (the only one when `None`), if the document says.
fn operation<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d OperationDefinition> {
    match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.get(name).map(|operation| &operation.node)
        }
        (DocumentOperations::Multiple(operations), None) => {
            let mut all = operations.values();
            match (all.next(), all.next()) {
                (Some(only), None) => Some(&only.node),
                _ => None,
            }
        }
    }
}

/// The root fields `operation` runs, each a resolver of its own (a command, a page):
/// distinct response keys, through fragments, `__typename` and introspection left out
/// (they read nothing); at least 1. Aliases used to run up to 100 mutations (or
/// pages) for one token.
fn root_fields(document: &ExecutableDocument, operation: &OperationDefinition) -> u32 {
    let mut keys = HashSet::new();
    let mut spread = HashSet::new();
    let mut pending: Vec<&SelectionSet> = vec![&operation.selection_set.node];
    while let Some(set) = pending.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    if !field.name.node.starts_with("__") {
                        keys.insert(field.response_key().node.as_str());
                    }
                }
                Selection::FragmentSpread(fragment) => {
                    let name = &fragment.node.fragment_name.node;
                    if spread.insert(name.as_str()) {
                        if let Some(fragment) = document.fragments.get(name) {
                            pending.push(&fragment.node.selection_set.node);
                        }
                    }
                }
                Selection::InlineFragment(inline) => {
                    pending.push(&inline.node.selection_set.node);
                }
            }
        }
    }
    u32::try_from(keys.len()).unwrap_or(u32::MAX).max(1)
}

/// Takes the tokens an operation of type `ty` with `cost` root fields costs
/// `request`'s caller; on refusal, how long until they free.
fn take_token(
    state: &AppState,
    request: &RequestContext,
    ty: OperationType,
    cost: u32,
) -> Result<(), std::time::Duration> {
    match (ty, &request.claims, request.client) {
        (OperationType::Mutation, Some(claims), _) => {
            state.account_writes.take(claims.user_id, cost)
        }
        // Anonymous mutations: the public ones take theirs in the resolver (one per
        // field); any other is refused there at once.
        (OperationType::Mutation, None, _) => Ok(()),
        (_, Some(claims), _) => state.account_reads.take(claims.user_id, cost),
        (_, None, Some(client)) => state.anonymous_reads.check_cost(client, cost),
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
        let (Some(state), Some(request), Some(operation)) = (
            ctx.data_opt::<AppState>(),
            ctx.data_opt::<RequestContext>(),
            operation(&document, name.as_deref()),
        ) else {
            return Ok(document);
        };
        let cost = root_fields(&document, operation);
        take_token(state, request, operation.ty, cost)
            .map_err(|wait| ApiError::rate_limited(wait).into_server_error())?;
        Ok(document)
    }
}
