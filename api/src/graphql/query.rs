//! Queries that read the decision models (aggregates) directly and are small. The
//! read-model queries are in `read_models`.

use async_graphql::{Context, Object, SimpleObject};
use aula_domain::user::Role as DomainRole;
use aula_domain::values::CampusId;
use aula_projections::course_capacity::Page;
use uuid::Uuid;

use super::mutations::{existing_institution, load_user};
use super::read_models::READERS;
use super::types::{BigInt, Health, Me};
use super::{authorize, request, state};
use crate::auth::{self, Claims};
use crate::error::{bad_cursor, ApiError};
use crate::freshness::wait_for_projections;
use crate::state::AppState;

#[derive(Default)]
pub struct CoreQuery;

/// A campus of an institution.
#[derive(SimpleObject, Debug, Clone)]
pub struct Campus {
    /// The campus's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// The city it is in.
    pub city: String,
}

impl From<(&CampusId, &aula_domain::institution::Campus)> for Campus {
    fn from((id, campus): (&CampusId, &aula_domain::institution::Campus)) -> Self {
        Campus {
            id: id.as_uuid(),
            name: campus.name.to_string(),
            city: campus.city.to_string(),
        }
    }
}

#[Object]
impl CoreQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me, ApiError> {
        let claims = auth::require(request(ctx).claims.as_ref())?;
        let user = load_user(state(ctx), claims.user_id).await?;
        let role = user.role().unwrap_or(claims.role).into();
        Ok(Me::of(claims.user_id, &user, role))
    }

    /// Liveness, and whether the database answers. Public.
    async fn health(&self, ctx: &Context<'_>) -> Health {
        let state = state(ctx);
        let database = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
        Health {
            status: "ok".into(),
            database,
            server_time: state.clock.now(),
        }
    }

    /// Read-your-writes for a later query: waits (bounded by the configured timeout)
    /// until every projection has consumed the event at `logPosition` (a position a
    /// mutation answered); false on timeout. A position the log does not have is a
    /// VALIDATION error, never true: past its head (`POSITION_NOT_WRITTEN`: no event
    /// was written there yet, so nothing can be read) or below 1 (`OUT_OF_RANGE`).
    async fn projections_reached(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The global log position to wait for: one a mutation answered (at most the log's head)."
        )]
        log_position: BigInt,
    ) -> Result<bool, ApiError> {
        let log_position = log_position.0;
        auth::require(request(ctx).claims.as_ref())?;
        let state = state(ctx);
        written_position(state, log_position).await?;
        Ok(wait_for_projections(
            &state.pool,
            &state.config.projections,
            log_position,
            state.config.read_your_writes_timeout,
        )
        .await?)
    }

    /// Campuses of an institution (a manager's own by default), by name, at most
    /// `first` (capped by the maximum page size).
    async fn campuses(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The institution (admins; others get their own).")] institution_id: Option<
            Uuid,
        >,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
    ) -> Result<Vec<Campus>, ApiError> {
        let (claims, state) = authorize(ctx, READERS)?;
        let first = page_size(first, state.config.max_page_size)?;
        let institution_id = match institution_id {
            Some(id) => {
                auth::ensure_institution(claims, id)?;
                id
            }
            None => auth::target_institution(claims, None)?,
        };
        let institution = existing_institution(state, institution_id).await?;
        let mut campuses: Vec<Campus> = institution.campuses().iter().map(Campus::from).collect();
        campuses.sort_by_key(|campus| campus.name.to_lowercase());
        campuses.truncate(first);
        Ok(campuses)
    }
}

/// Refuses a log position no event can be at: below the first (1) or past the head
/// of the log. Waiting for one would answer `true` at once ("nothing to wait for"),
/// telling a client its write is readable at a position nobody wrote. A position at or
/// below the head that no event holds (a rolled-back transaction's) has nothing to
/// wait for and passes.
async fn written_position(state: &AppState, log_position: i64) -> Result<(), ApiError> {
    if log_position < 1 {
        return Err(ApiError::validation(
            "logPosition",
            "OUT_OF_RANGE",
            format!("log positions start at 1; {log_position} is none"),
        ));
    }
    let head = aula_eventlog::lookups::log_head(&state.pool)
        .await?
        .unwrap_or(0);
    if log_position > head {
        return Err(ApiError::validation(
            "logPosition",
            "POSITION_NOT_WRITTEN",
            format!(
                "no event has been written at log position {log_position}: the log ends at \
                 {head}; wait for a position a mutation answered"
            ),
        ));
    }
    Ok(())
}

/// What a paged list starts with: the caller, one of `roles`; the state; and the page
/// size `first`, checked against the configured maximum.
pub(crate) fn paged<'a>(
    ctx: &Context<'a>,
    roles: &[DomainRole],
    first: i32,
) -> Result<(&'a Claims, &'a AppState, usize), ApiError> {
    let (claims, state) = authorize(ctx, roles)?;
    Ok((claims, state, page_size(first, state.config.max_page_size)?))
}

/// The `after` of a paged list, parsed as the cursor type the list hands out.
pub(crate) fn parse_cursor<T: std::str::FromStr>(
    after: Option<String>,
) -> Result<Option<T>, ApiError> {
    after
        .map(|a| a.parse::<T>().map_err(|_| bad_cursor()))
        .transpose()
}

/// The nodes of a list, each row converted for the schema; a row it cannot show
/// refuses the whole list.
pub(crate) fn nodes<R, N>(rows: Vec<R>) -> Result<Vec<N>, ApiError>
where
    R: TryInto<N>,
    ApiError: From<R::Error>,
{
    rows.into_iter()
        .map(|row| row.try_into().map_err(ApiError::from))
        .collect()
}

/// A page of rows as GraphQL nodes, each row converted, and the cursor of the next
/// page as text.
pub(crate) fn page_nodes<R, N, C: ToString>(
    page: Page<R, C>,
) -> Result<(Vec<N>, Option<String>), ApiError>
where
    R: TryInto<N>,
    ApiError: From<R::Error>,
{
    Ok((
        nodes(page.rows)?,
        page.next.map(|cursor| cursor.to_string()),
    ))
}

/// Checks a requested page size against the maximum.
pub(crate) fn page_size(first: i32, max: usize) -> Result<usize, ApiError> {
    match usize::try_from(first) {
        Ok(first) if (1..=max).contains(&first) => Ok(first),
        _ => Err(ApiError::validation(
            "first",
            "OUT_OF_RANGE",
            format!("must be between 1 and {max}"),
        )),
    }
}
