//! Sessions that outlive their token: a WebSocket connection authenticates once, at
//! `connection_init`, and may then stay open for hours, running queries, mutations and
//! subscriptions with the claims it had then. An expired token or a deactivated account
//! must stop working there as it does over HTTP, where every request authenticates.
//!
//! [`SessionCheck`] (an async-graphql extension) therefore, on connections marked
//! [`SocketSession`]:
//! - checks the claims again before every operation sent over the socket (expiry, then
//!   deactivation: one indexed look-up, as an HTTP request makes), once it is parsed
//!   and before it takes its rate-limit token (`throttle`), so that a revoked socket
//!   cannot spend its owner's budget;
//! - ends every subscription with an UNAUTHENTICATED error when its token expires, or
//!   when the account is deactivated (checked every
//!   [`ApiConfig::socket_recheck_interval`](crate::config::ApiConfig) while it streams).

use async_graphql::extensions::{Extension, ExtensionContext, NextParseQuery, NextSubscribe};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerResult, Variables};
use futures::future::Either;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::RequestContext;
use crate::auth::{self, Claims};
use crate::error::ApiError;
use crate::state::AppState;

/// Marks the data of a WebSocket connection (set at `connection_init`).
pub(crate) struct SocketSession;

/// The extension; see the module's docs.
#[derive(Default)]
pub(crate) struct SessionCheck;

/// The state and the claims of a signed-in WebSocket session; `None` over HTTP (already
/// authenticated per request) and for anonymous sockets (nothing to expire).
fn socket_claims<'a>(ctx: &ExtensionContext<'a>) -> Option<(&'a AppState, &'a Claims)> {
    ctx.data_opt::<SocketSession>()?;
    let claims = ctx.data_opt::<RequestContext>()?.claims.as_ref()?;
    Some((ctx.data_opt::<AppState>()?, claims))
}

#[async_trait::async_trait]
impl Extension for SessionCheck {
    /// After the extensions inside it have parsed the operation, before the throttle
    /// (outside it) takes its token, and before it is validated and run.
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Some((state, claims)) = socket_claims(ctx) {
            auth::still_valid(&state.pool, claims, state.clock.now())
                .await
                .map_err(ApiError::into_server_error)?;
        }
        Ok(document)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let stream = next.run(ctx, stream);
        let Some((state, claims)) = socket_claims(ctx) else {
            return stream;
        };
        let end = Box::pin(session_end(state.clone(), claims.clone()));
        futures::stream::unfold(Some((stream, end)), |open| async move {
            let (mut stream, end) = open?;
            match futures::future::select(stream.next(), end).await {
                Either::Left((Some(response), end)) => Some((response, Some((stream, end)))),
                Either::Left((None, _)) => None,
                Either::Right((refused, _)) => Some((refused, None)),
            }
        })
        .boxed()
    }
}

/// Resolves with the error that ends the session's subscriptions: at the token's expiry,
/// or when the account is found deactivated or its password changed. The account is
/// read by one poll shared by all its subscriptions (every `socket_recheck_interval`,
/// [`LivePolls::credentials`](super::shared_poll::LivePolls)): a thousand subscriptions
/// of one account used to check it a thousand times. A database error in a check does
/// not end the stream (the poll asks again at its next interval).
async fn session_end(state: AppState, claims: Claims) -> Response {
    let every = state.config.socket_recheck_interval;
    let mut account = state.live.credentials.watch(claims.user_id);
    let mut polled = true;
    loop {
        if let Some((deactivated, version)) = *account.borrow_and_update() {
            if let Err(refused) = auth::still_holds(&claims, deactivated, version) {
                return Response::from_errors(vec![refused.into_server_error()]);
            }
        }
        let to_expiry = (claims.expires_at - state.clock.now())
            .to_std()
            .unwrap_or_default();
        // The expiry is read from the (injectable) clock at least every `every`.
        tokio::select! {
            changed = account.changed(), if polled => polled = changed.is_ok(),
            _ = tokio::time::sleep(to_expiry.min(every)) => {}
        }
        if claims.expires_at <= state.clock.now() {
            return Response::from_errors(vec![auth::expired().into_server_error()]);
        }
    }
}
