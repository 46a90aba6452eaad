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
//! **Boundary:** over HTTP only; an operation over `/graphql/ws` still ends with its
//! socket.

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

/// The execution of one HTTP request, stopped when this is dropped unless it runs a
/// mutation (then it finishes on its own).
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
