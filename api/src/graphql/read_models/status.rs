//! The projections' positions, lag and rebuilds (`aula_projections::status` and
//! `aula_projections::rebuild`).

use async_graphql::{Context, Object, SimpleObject};

use super::*;

#[derive(Default)]
pub struct StatusQuery;

/// Where a projection stands.
#[derive(SimpleObject, Debug, Clone)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Log position of the last event handled (0: none yet).
    pub position: BigInt,
    /// Events handled since it started (or was rebuilt).
    pub events_handled: BigInt,
    /// Committed events not handled yet.
    pub lag_events: BigInt,
    /// Age of the oldest event it has not handled, in seconds.
    pub lag_seconds: f64,
    /// Why its last batch failed, if it did.
    pub last_error: Option<String>,
    /// The event it keeps failing on, if any.
    pub failed_position: Option<BigInt>,
    /// When it started failing on `failedPosition`.
    pub failing_since: Option<DateTime<Utc>>,
    /// Tries on the failing event so far.
    pub attempts: i32,
    /// When its checkpoint last moved.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<aula_projections::ProjectionStatus> for ProjectionStatus {
    fn from(s: aula_projections::ProjectionStatus) -> Self {
        Self {
            name: s.name,
            position: BigInt(s.position),
            events_handled: BigInt(s.events_handled),
            lag_events: BigInt(s.lag_events),
            lag_seconds: s.lag_seconds,
            last_error: s.last_error,
            failed_position: s.failed_position.map(BigInt),
            failing_since: s.failing_since,
            attempts: s.attempts,
            updated_at: s.updated_at,
        }
    }
}

/// The latest rebuild of a projection.
#[derive(SimpleObject, Debug, Clone)]
pub struct RebuildProgress {
    /// The projection's name.
    pub name: String,
    /// Where the rebuild stands.
    pub state: RebuildState,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished; null while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// When its progress last moved.
    pub updated_at: DateTime<Utc>,
    /// The log position replayed so far.
    pub position: BigInt,
    /// Events replayed so far.
    pub events_done: BigInt,
    /// Replay rate.
    pub events_per_second: f64,
    /// Events in the log after `position` (an estimate while running; 0 when done).
    pub remaining: BigInt,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl TryFrom<aula_projections::RebuildProgress> for RebuildProgress {
    type Error = ApiError;

    fn try_from(p: aula_projections::RebuildProgress) -> Result<Self, ApiError> {
        Ok(Self {
            name: p.name,
            state: parse_status(&p.state)?,
            started_at: p.started_at,
            finished_at: p.finished_at,
            updated_at: p.updated_at,
            position: BigInt(p.position),
            events_done: BigInt(p.events_done),
            events_per_second: p.events_per_second,
            remaining: BigInt(p.remaining),
            error: p.error,
        })
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
