//! The dashboard's charts (`processingSeries`): events and tasks processed and failed per
//! minute or per hour, and the queue's depth by task kind, read from the rollups
//! `aula_processor::dashboard` keeps as the work happens (never from the event or task
//! tables). Staff and observers; an institution's caller sees its institution's series.

use async_graphql::{Context, Enum, Object, SimpleObject};
use aula_processor::dashboard::{self, Width};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::read_models::WATCHERS;
use super::types::BigInt;
use super::{authorize, request, state};
use crate::auth;
use crate::error::ApiError;

#[derive(Default)]
pub struct ChartQuery;

/// How far back a series reaches, and so its buckets' width.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesRange {
    /// The last 60 minutes, per minute.
    #[graphql(name = "LAST_HOUR")]
    Hour,
    /// The last 6 hours, per minute.
    #[graphql(name = "LAST_6_HOURS")]
    SixHours,
    /// The last 24 hours, per hour.
    #[graphql(name = "LAST_24_HOURS")]
    Day,
    /// The last 7 days, per hour.
    #[graphql(name = "LAST_7_DAYS")]
    Week,
    /// The last 14 days, per hour.
    #[graphql(name = "LAST_14_DAYS")]
    Fortnight,
}

impl SeriesRange {
    fn buckets(self) -> (Width, i64) {
        match self {
            SeriesRange::Hour => (Width::Minute, 60),
            SeriesRange::SixHours => (Width::Minute, 360),
            SeriesRange::Day => (Width::Hour, 24),
            SeriesRange::Week => (Width::Hour, 168),
            SeriesRange::Fortnight => (Width::Hour, 336),
        }
    }
}

/// The width of a series' buckets.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesWidth {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
}

row_object! {
    /// One bucket of a series.
    SeriesPoint from dashboard::Point as p {
        /// The bucket's start.
        at: DateTime<Utc>,
        /// Events that reached `succeeded` in the bucket.
        events_succeeded: BigInt = BigInt(p.events_succeeded),
        /// Events that reached `failed` in the bucket.
        events_failed: BigInt = BigInt(p.events_failed),
        /// Tasks (issued by events) that succeeded in the bucket.
        tasks_succeeded: BigInt = BigInt(p.tasks_succeeded),
        /// Tasks (issued by events) that failed or died in the bucket.
        tasks_failed: BigInt = BigInt(p.tasks_failed),
    }
}

row_object! {
    /// Unfinished tasks of one kind at one sample.
    QueueDepthPoint from dashboard::DepthSample as d {
        /// When the sample was taken (its bucket's start for hourly series).
        at: DateTime<Utc>,
        /// The task kind (e.g. `email.welcome`).
        kind: String = d.task_kind,
        /// Tasks waiting to run.
        pending: BigInt = BigInt(d.pending),
        /// Tasks running.
        running: BigInt = BigInt(d.running),
    }
}

/// The dashboard's charts over one range.
#[derive(SimpleObject, Debug, Clone)]
pub struct ProcessingSeries {
    /// The institution covered; null for the whole platform.
    pub institution_id: Option<Uuid>,
    /// The buckets' width.
    pub width: SeriesWidth,
    /// Every bucket of the range, oldest first (zero when nothing finished).
    pub points: Vec<SeriesPoint>,
    /// The queue's depth by task kind, sampled once a minute (per hour: the bucket's
    /// last sample), oldest first; kinds with nothing unfinished are left out.
    pub queue_depth: Vec<QueueDepthPoint>,
}

/// An institution the dashboard's institution filter can name.
#[derive(SimpleObject, Debug, Clone)]
pub struct InstitutionSuggestion {
    /// The institution's id.
    pub id: Uuid,
    /// Its name when it was created.
    pub name: String,
}

/// Most suggestions one `institutionSuggestions` returns.
const MAX_SUGGESTIONS: i64 = 10;

#[Object]
impl ChartQuery {
    /// Institutions whose id starts with `text` (the list shows the first 8 characters)
    /// or whose name contains it, by name, at most 10: what the dashboard's institution
    /// filter resolves and suggests. Admins and platform-wide observers (the others'
    /// lists are held to their own institution).
    async fn institution_suggestions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A short or full id, or part of a name (1 to 200 characters).")]
        text: String,
    ) -> Result<Vec<InstitutionSuggestion>, ApiError> {
        super::read_models::require_platform_reader(request(ctx).claims.as_ref())?;
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 200 {
            return Err(ApiError::validation(
                "text",
                "OUT_OF_RANGE",
                "must be 1 to 200 characters",
            ));
        }
        let id_prefix = text.to_ascii_lowercase();
        let id_prefix = id_prefix
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-')
            .then_some(id_prefix);
        // One row per institution: as many rows as institutions, never the log.
        let rows = aula_projections::lookups::institutions_matching(
            &state(ctx).pool,
            &id_prefix
                .map(|p| format!("{p}%"))
                .unwrap_or_else(|| "-".into()),
            &aula_projections::admin_events::like_pattern(text),
            MAX_SUGGESTIONS,
        )
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, name)| {
                Some(InstitutionSuggestion {
                    id: id.parse().ok()?,
                    name: name.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Events and tasks processed and failed per bucket over `range`, and the queue's
    /// depth by kind, from the dashboard's rollups. Admins and platform-wide observers:
    /// the platform, or the institution named; managers and an institution's observers:
    /// their own institution (naming another is FORBIDDEN).
    async fn processing_series(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How far back, and so per minute or per hour.")] range: SeriesRange,
        #[graphql(desc = "The institution (admins and platform-wide observers).")]
        institution_id: Option<Uuid>,
    ) -> Result<ProcessingSeries, ApiError> {
        let (claims, state) = authorize(ctx, WATCHERS)?;
        let institution = auth::read_scope(claims, institution_id)?;
        let now = state.clock.now();
        let (width, count) = range.buckets();
        let points = dashboard::series(&state.pool, institution, width, count, now).await?;
        let from = points.first().map_or(now, |p| p.at);
        let depth = dashboard::queue_depth(&state.pool, institution, width, from).await?;
        Ok(ProcessingSeries {
            institution_id: institution,
            width: match width {
                Width::Minute => SeriesWidth::Minute,
                Width::Hour => SeriesWidth::Hour,
            },
            points: points.into_iter().map(Into::into).collect(),
            queue_depth: depth
                .into_iter()
                .filter(|d| !d.task_kind.is_empty() && d.pending + d.running > 0)
                .map(Into::into)
                .collect(),
        })
    }
}
