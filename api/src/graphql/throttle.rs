//! Rate limits by who is calling, beside the per-address limit of the public mutations
//! (`graphql::rate_limit`): signed-in callers' mutations per account, anonymous
//! queries per client address. Signed-in reads stay unlimited (the page size and
//! complexity limits bound each one).

use std::sync::OnceLock;

use async_graphql::extensions::{Extension, ExtensionContext, NextExecute, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Response, ServerResult, Variables};

use crate::error::ApiError;
use crate::graphql::RequestContext;
use crate::state::AppState;

/// The extension, one instance per request: the type of each operation of its
/// document, once parsed.
#[derive(Default)]
pub(crate) struct ThrottleRequest {
    operations: OnceLock<Vec<(Option<String>, OperationType)>>,
}

#[async_trait::async_trait]
impl Extension for ThrottleRequest {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let _ = self.operations.set(
            document
                .operations
                .iter()
                .map(|(name, operation)| (name.map(|n| n.to_string()), operation.node.ty))
                .collect(),
        );
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let operation = self.operations.get().and_then(|operations| {
            operations
                .iter()
                .find(|(name, _)| operation_name.is_none() || name.as_deref() == operation_name)
                .map(|(_, ty)| *ty)
        });
        let (Some(state), Some(request)) =
            (ctx.data_opt::<AppState>(), ctx.data_opt::<RequestContext>())
        else {
            return next.run(ctx, operation_name).await;
        };
        let verdict = match (operation, &request.claims, request.client) {
            (Some(OperationType::Mutation), Some(claims), _) => {
                state.account_writes.check_key(claims.user_id)
            }
            (Some(OperationType::Query), None, Some(client)) => state.anonymous_reads.check(client),
            _ => Ok(()),
        };
        match verdict {
            Ok(()) => next.run(ctx, operation_name).await,
            Err(wait) => {
                Response::from_errors(vec![ApiError::rate_limited(wait).into_server_error()])
            }
        }
    }
}
