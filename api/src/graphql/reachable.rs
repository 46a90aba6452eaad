//! Operations stop waiting for a database that refuses connections: sqlx's pool
//! retries a refused connect for its whole acquire timeout (10 s), so without this an
//! operation over HTTP or the WebSocket waited that long before its `UNAVAILABLE`.
//! [`Reachable`] races each operation against
//! [`Reachability::cut`](aula_eventlog::db::Reachability::cut): once the operation has
//! run 0.5 s and a direct connect finds the server refusing, it is answered
//! `UNAVAILABLE`. A busy pool is not an outage: the operation goes on waiting.

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerResult, Variables};
use std::sync::Arc;

use crate::state::AppState;

/// The extension's factory; see the module's docs.
pub(crate) struct Reachable;

impl ExtensionFactory for Reachable {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Reachable)
    }
}

#[async_trait::async_trait]
impl Extension for Reachable {
    /// The checks before execution (a socket's session re-check reads the database):
    /// they run in the parse step of the extensions registered after this one.
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let Some(state) = ctx.data_opt::<AppState>() else {
            return next.run(ctx, query, variables).await;
        };
        let started = tokio::time::Instant::now();
        tokio::select! {
            biased;
            prepared = next.run(ctx, query, variables) => prepared,
            () = state.reachability.cut(started) => {
                Err(crate::http::database_unreachable().into_server_error())
            }
        }
    }

    /// The execution of a query or mutation, over HTTP and over the socket alike.
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let Some(state) = ctx.data_opt::<AppState>() else {
            return next.run(ctx, operation_name).await;
        };
        let started = tokio::time::Instant::now();
        tokio::select! {
            biased;
            response = next.run(ctx, operation_name) => response,
            () = state.reachability.cut(started) => Response::from_errors(vec![
                crate::http::database_unreachable().into_server_error(),
            ]),
        }
    }
}
