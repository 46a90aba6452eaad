//! What a delivery needs (the message, its endpoint's URL and keys), read in batches:
//! one statement for every delivery task that started meanwhile, as
//! [`super::successes`] does for their records (one query per delivery was the next
//! largest database cost of `aula bench webhooks`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::deliver::Delivery;

/// Most messages in one read.
pub const MAX_BATCH: usize = 256;

type Job = (Uuid, oneshot::Sender<Result<Option<Delivery>, String>>);

/// The reader of one process (shared by the clones of its delivery handler); started on
/// first use, it stops when the handler is dropped.
#[derive(Clone, Default)]
pub(crate) struct Loads {
    sender: Arc<OnceLock<mpsc::UnboundedSender<Job>>>,
}

impl Loads {
    /// The delivery of `message_id` (`None`: no such message).
    pub(crate) async fn load(
        &self,
        pool: &PgPool,
        message_id: Uuid,
    ) -> Result<Option<Delivery>, String> {
        let sender = self.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(run(pool.clone(), receiver));
            sender
        });
        let (reply, answer) = oneshot::channel();
        if sender.send((message_id, reply)).is_err() {
            // The reader is gone (its runtime is shutting down): read it here.
            return read(pool, &[message_id])
                .await
                .map(|mut found| found.remove(&message_id))
                .map_err(|e| e.to_string());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the delivery reader stopped".into()))
    }
}

async fn run(pool: PgPool, mut receiver: mpsc::UnboundedReceiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let ids: Vec<Uuid> = jobs.iter().map(|(id, _)| *id).collect();
        match read(&pool, &ids).await {
            Ok(found) => {
                for (id, reply) in jobs.drain(..) {
                    let _ = reply.send(Ok(found.get(&id).cloned()));
                }
            }
            Err(error) => {
                let error = error.to_string();
                for (_, reply) in jobs.drain(..) {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

async fn read(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, Delivery>, sqlx::Error> {
    let rows: Vec<Delivery> = sqlx::query_as(
        "SELECT m.id AS message_id, m.endpoint_id, m.body, m.status, m.attempts, e.url, e.enabled,
                e.deleted_at IS NOT NULL AS deleted, e.signature_scheme, e.secret,
                e.previous_signature_scheme, e.previous_secret, e.previous_secret_expires_at
         FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id
         WHERE m.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|d| (d.message_id, d)).collect())
}
