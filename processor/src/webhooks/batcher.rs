//! One worker per process that serves requests in batches, for [`super::loads`] and
//! [`super::successes`]: each caller hands it a request and waits for the answer; the
//! worker takes whatever has gathered (up to a bound) and serves it in one statement.
//! While one batch is served the next gathers, so under load batches grow and alone a
//! request is served at once.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

/// Where a request's answer goes.
pub(super) type Reply<O> = oneshot::Sender<Result<O, String>>;

/// A request and where its answer goes.
pub(super) type Job<I, O> = (I, Reply<O>);

/// The worker of one process (shared by the clones of its delivery handler); started
/// on first use, it stops when the handler is dropped.
pub(super) struct Batcher<I, O> {
    sender: Arc<OnceLock<mpsc::UnboundedSender<Job<I, O>>>>,
}

// By hand: a derive would ask `I` and `O` to be `Clone` and `Default` too.
impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            sender: Arc::clone(&self.sender),
        }
    }
}

impl<I, O> Default for Batcher<I, O> {
    fn default() -> Self {
        Self {
            sender: Arc::default(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Hands `input` to the worker and waits for its answer. The worker, `name` in
    /// errors, is started on first use: it takes up to `max_batch` requests at a time
    /// and `serve` answers each of them. `Err(input)` when the worker is gone (its
    /// runtime is shutting down): the caller serves the request itself.
    pub(super) async fn ask<S, F>(
        &self,
        pool: &PgPool,
        input: I,
        name: &str,
        max_batch: usize,
        serve: S,
    ) -> Result<Result<O, String>, I>
    where
        S: Fn(PgPool, Vec<Job<I, O>>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let sender = self.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(run(pool.clone(), receiver, max_batch, serve));
            sender
        });
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((input, _))) = sender.send((input, reply)) {
            return Err(input);
        }
        Ok(answer
            .await
            .unwrap_or_else(|_| Err(format!("the {name} stopped"))))
    }
}

async fn run<I, O, S, F>(
    pool: PgPool,
    mut receiver: mpsc::UnboundedReceiver<Job<I, O>>,
    max_batch: usize,
    serve: S,
) where
    S: Fn(PgPool, Vec<Job<I, O>>) -> F,
    F: Future<Output = ()>,
{
    let mut jobs = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut jobs, max_batch).await > 0 {
        let batch = std::mem::replace(&mut jobs, Vec::with_capacity(max_batch));
        serve(pool.clone(), batch).await;
    }
}
