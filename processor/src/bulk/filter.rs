//! The filter a bulk job keeps ([`BulkFilter`]): the admin list's filters, as stored in
//! `bulk_reprocess_jobs.filter`.

use aula_projections::admin_events::{DurationOp, EventListQuery};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::BulkError;

/// The filters of an [`EventListQuery`] a bulk job keeps (sort and page do not apply),
/// as stored in `bulk_reprocess_jobs.filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_to: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_to: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `("eq" | "gt" | "lt", milliseconds)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<(String, i64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub institution_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_failed_tasks: Option<bool>,
    /// See [`EventListQuery::resolved`]. Jobs stored before it have none (all events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<bool>,
    /// The list's payload search (issue #23); absent from jobs stored before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
}

impl From<&EventListQuery> for BulkFilter {
    fn from(query: &EventListQuery) -> Self {
        BulkFilter {
            event_types: query.event_types.clone(),
            recorded_from: query.recorded_from,
            recorded_to: query.recorded_to,
            processed_from: query.processed_from,
            processed_to: query.processed_to,
            status: query.status.clone(),
            duration: query.duration.map(|(op, ms)| {
                let op = match op {
                    DurationOp::Eq => "eq",
                    DurationOp::Gt => "gt",
                    DurationOp::Lt => "lt",
                };
                (op.to_owned(), ms)
            }),
            institution_id: query.institution_id,
            has_failed_tasks: query.has_failed_tasks,
            resolved: query.resolved,
            search: query.search.clone(),
        }
    }
}

impl BulkFilter {
    /// The list query with these filters (default sort and page).
    pub fn to_query(&self) -> Result<EventListQuery, BulkError> {
        let duration = match &self.duration {
            None => None,
            Some((op, ms)) => Some((
                match op.as_str() {
                    "eq" => DurationOp::Eq,
                    "gt" => DurationOp::Gt,
                    "lt" => DurationOp::Lt,
                    other => return Err(BulkError::Invalid(format!("duration operator {other}"))),
                },
                *ms,
            )),
        };
        Ok(EventListQuery {
            event_types: self.event_types.clone(),
            recorded_from: self.recorded_from,
            recorded_to: self.recorded_to,
            processed_from: self.processed_from,
            processed_to: self.processed_to,
            status: self.status.clone(),
            duration,
            institution_id: self.institution_id,
            has_failed_tasks: self.has_failed_tasks,
            resolved: self.resolved,
            search: self.search.clone(),
            ..EventListQuery::default()
        })
    }
}
