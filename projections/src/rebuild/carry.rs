//! The carry-over of the columns other components own in a rebuilt read model (only
//! `admin_events` has them): in bulk before the swap, then inside the swap for what
//! changed meanwhile.

use sqlx::{Executor, PgConnection};

use super::{quote, RebuildError};
use crate::admin_events;

/// Copies the columns other components own ([`admin_events::PRESERVED_COLUMNS`])
/// from the live rows to the rebuilt ones, touching only the rows that differ (a
/// no-op for the other projections). Done once in bulk before the secondary indexes
/// exist (cheap updates), then again inside the swap for what changed meanwhile
/// ([`carry_over_since`]). Returns the oldest transaction whose writes it may have
/// missed: the `xmin` of a snapshot taken just before (every older transaction had
/// ended, so the update saw its writes).
pub(super) async fn carry_over(
    name: &str,
    shadow: &str,
    live: &str,
    conn: &mut PgConnection,
) -> Result<i64, RebuildError> {
    let horizon: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut *conn)
            .await?;
    if name == admin_events::NAME {
        conn.execute(carry_statement(shadow, live, "true").as_str())
            .await?;
    }
    Ok(horizon)
}

/// [`carry_over`] again, inside the swap, for the rows that can differ since: the live
/// rows written by a transaction from `horizon` on (the `xmin` of a row version is the
/// transaction that wrote it), and the rows `caught_up` by the swap itself (their live
/// rows may be older). Finding those scans the live table but joins only them: a full
/// comparison joined every row of both tables, while the live tables were locked.
///
/// A live row whose event the rebuild has not read (after `read`, in log order, or
/// with no position yet) is copied whole: the processor wrote it before the projection
/// saw its event, and the swap's catch-up reads only the events of transactions older
/// than every one still running, so an event committed just before the swap can wait
/// for the live subscription, which then finds its row as the processor left it.
/// Before, such a row was lost with the retired table (a flaky test under a loaded
/// cluster showed it).
pub(super) async fn carry_over_since(
    name: &str,
    shadow: &str,
    live: &str,
    tx: &mut PgConnection,
    (horizon, read): (i64, aula_eventlog::LogPosition),
    caught_up: &[uuid::Uuid],
) -> Result<(), RebuildError> {
    if name != admin_events::NAME {
        return Ok(());
    }
    // `age(xmin)` counts from this transaction's id, which this assigns. A row version
    // written from `horizon` on is at most `now - horizon` transactions old. (A frozen
    // row keeps its `xmin`; ids wrap around after 2^31 transactions, far beyond a
    // rebuild, and the full comparison serves beyond that.)
    let now: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *tx)
        .await?;
    let Ok(age) = i32::try_from(now - horizon) else {
        tx.execute(carry_statement(shadow, live, "true").as_str())
            .await?;
        return Ok(());
    };
    let mut rows: Vec<uuid::Uuid> = sqlx::query_scalar(&format!(
        "SELECT event_id FROM {}.admin_events
         WHERE age(xmin) <= $1 OR global_position = 0 OR (tx_id, global_position) > ($2, $3)",
        quote(live)
    ))
    .bind(age)
    .bind(read.tx_id)
    .bind(read.global_position)
    .fetch_all(&mut *tx)
    .await?;
    rows.extend_from_slice(caught_up);
    if rows.is_empty() {
        return Ok(());
    }
    // The ids as a parameter, so the planner sees how many they are: a few are looked up
    // by key, many are joined as the full comparison does.
    sqlx::query(&carry_statement(shadow, live, "l.event_id = ANY($1)"))
        .bind(&rows)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO {shadow}.admin_events SELECT l.* FROM {live}.admin_events l
         WHERE l.event_id = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM {shadow}.admin_events s WHERE s.event_id = l.event_id)",
        shadow = quote(shadow),
        live = quote(live),
    ))
    .bind(&rows)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The carry-over's `UPDATE` of the rows that match `restrict` (over the live row `l`).
fn carry_statement(shadow: &str, live: &str, restrict: &str) -> String {
    let columns = admin_events::PRESERVED_COLUMNS;
    let assignments: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = l.{c}", c = quote(c)))
        .collect();
    let list = |prefix: &str| -> String {
        columns
            .iter()
            .map(|c| format!("{prefix}.{}", quote(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "UPDATE {shadow}.admin_events s SET {} FROM {live}.admin_events l
         WHERE s.event_id = l.event_id AND ({restrict}) AND ({}) IS DISTINCT FROM ({})",
        assignments.join(", "),
        list("s"),
        list("l"),
        shadow = quote(shadow),
        live = quote(live),
    )
}
