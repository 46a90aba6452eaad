//! Mutations run to their end, whoever stops listening.
//!
//! A mutation is often several steps: `createStudent` reserves the address, records
//! the account, then the student. Over HTTP the execution was the request's future, so
//! a caller hanging up (hyper drops the future) or the request timeout stopped it
//! wherever it stood: the probe of session 20 left accounts without their student and
//! addresses held by accounts that never came. The HTTP handler now runs each
//! execution as a task of its own, and stops it with the request only when the
//! document held no mutation ([`MarkMutations`] tells, once the document is parsed):
//! a query nobody waits for is still stopped at once, so hanging up never leaves
//! reads running.
//!
//! Over `/graphql/ws` likewise: [`Finishing`] runs each operation of a socket as a task
//! of its own, stopped when its socket closes (or the client completes it) unless it
//! runs a mutation. Before (session 20), a `createStudent` whose socket closed right
//! after it was sent could leave its account without its student.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{ServerResult, Variables};
use tracing::Instrument as _;

/// Whether the request's execution finishes on its own (its document holds a
/// mutation) or was given up on (its answer is no longer awaited): decided once, by
/// whichever comes first, so a mutation never starts once given up on and is never
/// stopped once started. (The handler's stop request reaches a running task only at
/// its next wait, after the current step, a statement already sent to the database,
/// has taken effect: deciding by that alone left reservations without their account.)
#[derive(Clone, Default)]
pub(crate) struct MutationSeen(Arc<AtomicU8>);

const UNDECIDED: u8 = 0;
const FINISHES: u8 = 1;
const GIVEN_UP: u8 = 2;

impl MutationSeen {
    /// Claims the execution for a mutation: false when it was given up on already.
    fn finish(&self) -> bool {
        let decided =
            self.0
                .compare_exchange(UNDECIDED, FINISHES, Ordering::AcqRel, Ordering::Acquire);
        decided.map_or_else(|now| now == FINISHES, |_| true)
    }

    /// Gives the execution up: true unless a mutation claimed it first.
    fn give_up(&self) -> bool {
        let decided =
            self.0
                .compare_exchange(UNDECIDED, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire);
        decided.map_or_else(|now| now == GIVEN_UP, |_| true)
    }
}

/// The execution of one HTTP request or socket operation, stopped when this is dropped
/// unless it runs a mutation (then it finishes on its own).
struct Execution {
    task: tokio::task::AbortHandle,
    mutation: MutationSeen,
}

impl Drop for Execution {
    fn drop(&mut self) {
        if self.mutation.give_up() {
            self.task.abort();
        }
    }
}

/// Runs `request` as a task of its own and awaits its answer for at most `within`
/// (`None` past it): given up on then, or when the caller hangs up (this future is
/// dropped), the task is stopped unless it runs a mutation, which finishes.
pub(crate) async fn execute(
    schema: super::AulaSchema,
    request: async_graphql::Request,
    within: std::time::Duration,
) -> Option<async_graphql::Response> {
    let mutation = MutationSeen::default();
    let request = request.data(mutation.clone());
    let task = tokio::spawn(async move { schema.execute(request).await }.in_current_span());
    let _execution = Execution {
        task: task.abort_handle(),
        mutation,
    };
    match tokio::time::timeout(within, task).await {
        Ok(Ok(response)) => Some(response),
        // Nothing stops the task while it is awaited but a panic (passed on as it
        // would have been without the task) or the runtime shutting down.
        Ok(Err(failed)) => match failed.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
        Err(_) => None,
    }
}

/// The executor of `/graphql/ws`: the schema, each operation run as a task of its own
/// whose answers are passed on, and stopped when the socket stops listening (its
/// stream is dropped) unless it runs a mutation, which finishes. A subscription's
/// answers wait for the socket to take them (a short queue), as they did without the
/// task.
#[derive(Clone)]
pub(crate) struct Finishing(pub(crate) super::AulaSchema);

/// Answers queued between an operation's task and its socket.
const SOCKET_ANSWERS_QUEUED: usize = 16;

impl async_graphql::Executor for Finishing {
    async fn execute(&self, request: async_graphql::Request) -> async_graphql::Response {
        self.0.execute(request).await
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        session_data: Option<Arc<async_graphql::Data>>,
    ) -> futures::stream::BoxStream<'static, async_graphql::Response> {
        use futures::StreamExt as _;
        let mutation = MutationSeen::default();
        let request = request.data(mutation.clone());
        let mut answers = async_graphql::Executor::execute_stream(&self.0, request, session_data);
        let (sender, receiver) = tokio::sync::mpsc::channel(SOCKET_ANSWERS_QUEUED);
        let task = tokio::spawn(
            async move {
                while let Some(answer) = answers.next().await {
                    if sender.send(answer).await.is_err() {
                        break;
                    }
                }
            }
            .in_current_span(),
        );
        let execution = Execution {
            task: task.abort_handle(),
            mutation,
        };
        // The execution lives as long as the stream the socket holds.
        futures::stream::unfold(
            (receiver, execution),
            |(mut receiver, execution)| async move {
                let answer = receiver.recv().await?;
                Some((answer, (receiver, execution)))
            },
        )
        .boxed()
    }
}

/// Claims the request's execution ([`MutationSeen`]) when its document holds a
/// mutation, or stops it there if it was given up on already. Registered
/// after the document guard, which must see the raw document first.
pub(crate) struct MarkMutations;

impl ExtensionFactory for MarkMutations {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(MarkMutations)
    }
}

#[async_trait::async_trait]
impl Extension for MarkMutations {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        // Any operation of the document: the one chosen is not known yet, and a query
        // run to its end costs only its own time.
        let mutation = document
            .operations
            .iter()
            .any(|(_, operation)| operation.node.ty == OperationType::Mutation);
        if let (true, Some(seen)) = (mutation, ctx.data_opt::<MutationSeen>()) {
            if !seen.finish() {
                // Nobody waits for it: nothing of it has run, and nothing will.
                let given_up = crate::error::ApiError::Timeout {
                    message: "the answer was given up on before the mutation started; nothing was recorded".into(),
                    recorded: false,
                    id: None,
                };
                return Err(given_up.into_server_error());
            }
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mutation_and_giving_up_are_decided_once_whichever_comes_first() {
        let started = MutationSeen::default();
        assert!(started.finish());
        assert!(!started.give_up(), "a started mutation is never stopped");
        assert!(started.finish());

        let abandoned = MutationSeen::default();
        assert!(abandoned.give_up());
        assert!(!abandoned.finish(), "a mutation given up on never starts");
        assert!(abandoned.give_up());
    }
}
