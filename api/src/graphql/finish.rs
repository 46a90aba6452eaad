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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{ServerResult, Variables};

/// Whether the request's document holds a mutation: set while it is parsed.
#[derive(Clone, Default)]
pub(crate) struct MutationSeen(Arc<AtomicBool>);

impl MutationSeen {
    pub(crate) fn seen(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The execution of one HTTP request, stopped when this is dropped unless it runs a
/// mutation (then it finishes on its own).
pub(crate) struct Execution {
    pub(crate) task: tokio::task::AbortHandle,
    pub(crate) mutation: MutationSeen,
}

impl Drop for Execution {
    fn drop(&mut self) {
        if !self.mutation.seen() {
            self.task.abort();
        }
    }
}

/// Marks the request's [`MutationSeen`] when its document holds a mutation. Registered
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
            seen.0.store(true, Ordering::Release);
        }
        Ok(document)
    }
}
