//! What a delivery needs (the message, its endpoint's URL and keys), read in batches:
//! one statement for every delivery task that started meanwhile, as
//! [`super::successes`] does for their records (one query per delivery was the next
//! largest database cost of `aula bench webhooks`).

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

use super::batcher::{self, Batcher};
use super::deliver::Delivery;

/// Most messages in one read.
pub const MAX_BATCH: usize = 256;

type Job = batcher::Job<Uuid, Option<Delivery>>;

/// The reader of one process (see [`Batcher`]).
#[derive(Clone, Default)]
pub(crate) struct Loads {
    batcher: Batcher<Uuid, Option<Delivery>>,
}

impl Loads {
    /// The delivery of `message_id` (`None`: no such message).
    pub(crate) async fn load(
        &self,
        pool: &PgPool,
        message_id: Uuid,
    ) -> Result<Option<Delivery>, String> {
        match self
            .batcher
            .ask(pool, message_id, "delivery reader", MAX_BATCH, serve)
            .await
        {
            Ok(answer) => answer,
            // The reader is gone (its runtime is shutting down): read it here.
            Err(message_id) => read(pool, &[message_id])
                .await
                .map(|mut found| found.remove(&message_id))
                .map_err(|e| e.to_string()),
        }
    }
}

async fn serve(pool: PgPool, jobs: Vec<Job>) {
    let ids: Vec<Uuid> = jobs.iter().map(|(id, _)| *id).collect();
    match read(&pool, &ids).await {
        Ok(found) => {
            for (id, reply) in jobs {
                let _ = reply.send(Ok(found.get(&id).cloned()));
            }
        }
        Err(error) => {
            let error = error.to_string();
            for (_, reply) in jobs {
                let _ = reply.send(Err(error.clone()));
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
