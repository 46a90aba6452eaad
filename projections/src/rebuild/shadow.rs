//! One projection's part in a rebuild (a [`Target`]): its shadow copies in the schema
//! `rebuild_<name>`, created empty with their secondary indexes set aside, loaded batch
//! by batch with the progress recorded, then caught up and swapped in for the live
//! tables in one transaction. The orchestration of several targets (one read of the
//! log, the index builders, the carry-over) stays in the parent module.

use std::time::Instant;

use aula_eventlog::log::{LogPosition, RecordedEvent};
use aula_eventlog::subscription::error_chain;
use aula_eventlog::Consumer;
use chrono::{DateTime, Utc};
use sqlx::{Connection, Executor, PgConnection};

use super::carry::carry_over_since;
use super::{quote, BulkLoad, RebuildError, REBUILD_BATCH};

/// A secondary index of a shadow table, built after the bulk load.
pub(super) struct DeferredIndex {
    pub(super) table: String,
    /// `CREATE INDEX ...` naming the shadow schema.
    pub(super) definition: String,
    /// A GIN index (the trigram index of the search text): by far the longest build.
    pub(super) gin: bool,
}

pub(super) struct Target {
    pub(super) name: String,
    pub(super) tables: Vec<String>,
    pub(super) shadow: String,
    pub(super) live: String,
    pub(super) conn: PgConnection,
    pub(super) consumer: Box<dyn Consumer>,
    /// How the bulk load writes, when not by the consumer's live handler.
    pub(super) bulk: Option<BulkLoad>,
    pub(super) position: LogPosition,
    pub(super) done: i64,
    pub(super) last_recorded_at: Option<DateTime<Utc>>,
    pub(super) handle_seconds: f64,
    /// What the bulk carry-over may have missed
    /// ([`carry_over`](super::carry::carry_over)): writes of transactions from this one on.
    pub(super) carried_since: i64,
    /// Secondary indexes of the copies, dropped for the bulk load and built before the swap.
    pub(super) deferred_indexes: Vec<DeferredIndex>,
    /// The live tables' storage parameters (`fillfactor`), set on the copies after the
    /// bulk load: `LIKE ... INCLUDING ALL` does not copy them, and the load itself is
    /// best packed full (rebuilt rows of past events are rarely updated again), while
    /// the rows appended after the swap get the room for updates the live table keeps.
    pub(super) deferred_options: Vec<String>,
}

impl Target {
    /// Creates the empty copies and points the connection's `search_path` at them.
    pub(super) async fn prepare(&mut self, total: i64) -> Result<(), RebuildError> {
        self.live = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut self.conn)
            .await?;
        let mut ddl = format!(
            "DROP SCHEMA IF EXISTS {shadow} CASCADE; CREATE SCHEMA {shadow};",
            shadow = quote(&self.shadow)
        );
        for table in &self.tables {
            ddl.push_str(&format!(
                "CREATE TABLE {shadow}.{table} (LIKE {live}.{table} INCLUDING ALL);",
                shadow = quote(&self.shadow),
                live = quote(&self.live),
                table = quote(table)
            ));
        }
        ddl.push_str(&format!(
            "SET search_path TO {}, {};",
            quote(&self.shadow),
            quote(&self.live)
        ));
        (&mut self.conn).execute(ddl.as_str()).await?;
        // Building an index once over the loaded table is much cheaper than maintaining
        // it row by row; indexes that back a constraint (the keys ON CONFLICT needs) stay.
        let indexes: Vec<(String, String, String, bool)> = sqlx::query_as(
            "SELECT ic.relname::text, t.relname::text, pg_get_indexdef(i.indexrelid),
                    am.amname = 'gin'
             FROM pg_index i
             JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_class t ON t.oid = i.indrelid
             JOIN pg_am am ON am.oid = ic.relam
             JOIN pg_namespace n ON n.oid = ic.relnamespace
             WHERE n.nspname = $1
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
             ORDER BY ic.relname",
        )
        .bind(&self.shadow)
        .fetch_all(&mut self.conn)
        .await?;
        for (index, table, definition, gin) in indexes {
            let drop = format!("DROP INDEX {}.{}", quote(&self.shadow), quote(&index));
            (&mut self.conn).execute(drop.as_str()).await?;
            self.deferred_indexes.push(DeferredIndex {
                table,
                definition,
                gin,
            });
        }
        let options: Vec<(String, Vec<String>)> = sqlx::query_as(
            "SELECT c.relname::text, c.reloptions::text[]
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.reloptions IS NOT NULL",
        )
        .bind(&self.live)
        .bind(&self.tables)
        .fetch_all(&mut self.conn)
        .await?;
        for (table, settings) in options {
            // Each setting is `name=value` as PostgreSQL prints it back, with the name
            // and the value as the catalog holds them.
            self.deferred_options.push(format!(
                "ALTER TABLE {}.{} SET ({})",
                quote(&self.shadow),
                quote(&table),
                settings.join(", ")
            ));
        }
        sqlx::query(
            "INSERT INTO projection_rebuilds (name, state, started_at, updated_at, events_total)
             VALUES ($1, 'running', now(), now(), $2)
             ON CONFLICT (name) DO UPDATE SET state = 'running', started_at = now(), updated_at = now(),
                 finished_at = NULL, global_position = 0, events_done = 0, events_total = $2,
                 events_per_second = 0, error = NULL",
        )
        .bind(&self.name)
        .bind(total)
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Handles one batch in its own transaction, recording progress in it.
    pub(super) async fn feed(
        &mut self,
        batch: &[RecordedEvent],
        started: Instant,
    ) -> Result<(), RebuildError> {
        let clock = Instant::now();
        let mut tx = self.conn.begin().await?;
        match &mut self.bulk {
            Some(bulk) => bulk.load(&mut tx, batch).await?,
            None => apply(&mut *self.consumer, &mut tx, batch).await?,
        }
        self.done += batch.len() as i64;
        if let Some(last) = batch.last() {
            self.position = last.position;
            self.last_recorded_at = Some(last.recorded_at);
        }
        sqlx::query(
            "UPDATE projection_rebuilds SET global_position = $2, events_done = $3,
                 events_per_second = $4, updated_at = now() WHERE name = $1",
        )
        .bind(&self.name)
        .bind(self.position.global_position)
        .bind(self.done)
        .bind(self.done as f64 / started.elapsed().as_secs_f64().max(1e-6))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.handle_seconds += clock.elapsed().as_secs_f64();
        Ok(())
    }

    /// Writes what the bulk load kept back until the log was read to its end.
    pub(super) async fn finish_load(&mut self) -> Result<(), RebuildError> {
        let Some(bulk) = &mut self.bulk else {
            return Ok(());
        };
        let clock = Instant::now();
        let mut tx = self.conn.begin().await?;
        bulk.finish(&mut tx, self.position).await?;
        tx.commit().await?;
        self.handle_seconds += clock.elapsed().as_secs_f64();
        Ok(())
    }

    async fn build_indexes(&mut self) -> Result<(), RebuildError> {
        for statement in std::mem::take(&mut self.deferred_options) {
            (&mut self.conn).execute(statement.as_str()).await?;
        }
        for index in std::mem::take(&mut self.deferred_indexes) {
            (&mut self.conn).execute(index.definition.as_str()).await?;
        }
        Ok(())
    }

    /// Catches up the last events and moves the rebuilt tables in, in one transaction.
    pub(super) async fn swap(&mut self, started: Instant) -> Result<f64, RebuildError> {
        let name = self.name.clone();
        let live = self.live.clone();
        let shadow = self.shadow.clone();
        sqlx::query(
            "UPDATE projection_rebuilds SET state = 'swapping', updated_at = now() WHERE name = $1",
        )
        .bind(&name)
        .execute(&mut self.conn)
        .await?;
        self.build_indexes().await?;
        let mut tx = self.conn.begin().await?;
        // The swap is the one durable step.
        (&mut *tx)
            .execute("SET LOCAL synchronous_commit = on")
            .await?;
        sqlx::query(
            "INSERT INTO subscription_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(&name)
        .execute(&mut *tx)
        .await?;
        // Waits for the live subscription's batch in flight, and holds off the next one.
        sqlx::query("SELECT 1 FROM subscription_checkpoints WHERE name = $1 FOR UPDATE")
            .bind(&name)
            .execute(&mut *tx)
            .await?;
        // Writers of the live tables (the processor's columns) wait until the swap is
        // done; readers go on.
        for table in &self.tables {
            let lock = format!(
                "LOCK TABLE {}.{} IN EXCLUSIVE MODE",
                quote(&live),
                quote(table)
            );
            (&mut *tx).execute(lock.as_str()).await?;
        }
        let mut caught_up = Vec::new();
        loop {
            let batch = read_history(&mut tx, self.position, REBUILD_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            caught_up.extend(batch.iter().map(|e| e.event_id));
            apply(&mut *self.consumer, &mut tx, &batch).await?;
            self.done += batch.len() as i64;
            if let Some(last) = batch.last() {
                self.position = last.position;
                self.last_recorded_at = Some(last.recorded_at);
            }
        }
        carry_over_since(
            &name,
            &shadow,
            &live,
            &mut tx,
            (self.carried_since, self.position),
            &caught_up,
        )
        .await?;
        let retired = quote(&format!("retired_{name}"));
        let mut ddl = format!("DROP SCHEMA IF EXISTS {retired} CASCADE; CREATE SCHEMA {retired};");
        for table in &self.tables {
            ddl.push_str(&format!(
                "ALTER TABLE {live}.{table} SET SCHEMA {retired}; ALTER TABLE {shadow}.{table} SET SCHEMA {live};",
                live = quote(&live),
                shadow = quote(&shadow),
                table = quote(table)
            ));
        }
        ddl.push_str(&format!(
            "DROP SCHEMA {retired} CASCADE; DROP SCHEMA {shadow};",
            shadow = quote(&shadow)
        ));
        (&mut *tx).execute(ddl.as_str()).await?;
        sqlx::query(
            "UPDATE subscription_checkpoints
             SET tx_id = $2::text::xid8, global_position = $3, events_handled = $4,
                 last_event_at = $5, updated_at = now(), last_error = NULL, failed_position = NULL,
                 failing_since = NULL, attempts = 0
             WHERE name = $1",
        )
        .bind(&name)
        .bind(self.position.tx_id.to_string())
        .bind(self.position.global_position)
        .bind(self.done)
        .bind(self.last_recorded_at)
        .execute(&mut *tx)
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        sqlx::query(
            "UPDATE projection_rebuilds SET state = 'done', finished_at = now(), updated_at = now(),
                 global_position = $2, events_done = $3, events_per_second = $4 WHERE name = $1",
        )
        .bind(&name)
        .bind(self.position.global_position)
        .bind(self.done)
        .bind(self.done as f64 / seconds.max(1e-6))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(seconds)
    }
}

/// The same commit-ordered, guarded read as live subscriptions (so a rebuild sees
/// exactly the events, in exactly the order, a live projection would).
async fn read_history(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    aula_eventlog::log::read_batch(conn, after, limit).await
}

async fn apply(
    consumer: &mut dyn Consumer,
    tx: &mut PgConnection,
    batch: &[RecordedEvent],
) -> Result<(), RebuildError> {
    consumer
        .handle(tx, batch)
        .await
        .map_err(|error| RebuildError::Consumer {
            global_position: batch.first().map_or(0, |e| e.global_position()),
            message: error_chain(&*error),
        })
}
