//! The projections' positions, lag and rebuilds (`aula_projections::status` and
//! `aula_projections::rebuild`).

use async_graphql::{Context, Object};

use super::*;

#[derive(Default)]
pub struct StatusQuery;

row_object! {
    /// Where a projection stands.
    ProjectionStatus from aula_projections::ProjectionStatus as s {
        /// The projection's name.
        name: String,
        /// Log position of the last event handled (0: none yet).
        position: BigInt = BigInt(s.position),
        /// Events handled since it started (or was rebuilt).
        events_handled: BigInt = BigInt(s.events_handled),
        /// Committed events not handled yet.
        lag_events: BigInt = BigInt(s.lag_events),
        /// Age of the oldest event it has not handled, in seconds.
        lag_seconds: f64,
        /// Why its last batch failed, if it did.
        last_error: Option<String>,
        /// The event it keeps failing on, if any.
        failed_position: Option<BigInt> = s.failed_position.map(BigInt),
        /// When it started failing on `failedPosition`.
        failing_since: Option<DateTime<Utc>>,
        /// Tries on the failing event so far.
        attempts: i32,
        /// When its checkpoint last moved.
        updated_at: Option<DateTime<Utc>>,
    }
}

row_object! {
    /// The latest rebuild of a projection.
    RebuildProgress try_from aula_projections::RebuildProgress as p {
        /// The projection's name.
        name: String,
        /// Where the rebuild stands.
        state: RebuildState = parse_status(&p.state)?,
        /// When it started.
        started_at: DateTime<Utc>,
        /// When it finished; null while running.
        finished_at: Option<DateTime<Utc>>,
        /// When its progress last moved.
        updated_at: DateTime<Utc>,
        /// The log position replayed so far.
        position: BigInt = BigInt(p.position),
        /// Events replayed so far.
        events_done: BigInt = BigInt(p.events_done),
        /// Replay rate.
        events_per_second: f64,
        /// Events in the log after `position` (an estimate while running; 0 when done).
        remaining: BigInt = BigInt(p.remaining),
        /// Why it failed, if it did.
        error: Option<String>,
    }
}

#[Object]
impl StatusQuery {
    /// Each projection's position, lag and last error. Admins and platform-wide observers.
    async fn projection_status(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<ProjectionStatus>, ApiError> {
        require_platform_reader(request(ctx).claims.as_ref())?;
        let rows = aula_projections::status(&state(ctx).pool).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The latest rebuild of each projection ever rebuilt (or only `name`'s). Admins and platform-wide observers.
    async fn rebuild_progress(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The projection's name.")] name: Option<String>,
    ) -> Result<Vec<RebuildProgress>, ApiError> {
        require_platform_reader(request(ctx).claims.as_ref())?;
        let rows = aula_projections::rebuild_progress(&state(ctx).pool).await?;
        rows.into_iter()
            .filter(|p| name.as_deref().is_none_or(|n| n == p.name))
            .map(TryInto::try_into)
            .collect()
    }
}
