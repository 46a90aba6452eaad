//! Observer accounts: support staff who watch and search the staff screens but change
//! nothing. An observer belongs to one institution, or to none and then sees the whole
//! platform (as an admin reads). Every resolver that changes state requires `STAFF`
//! (admins and managers) and so refuses observers; the reads require `WATCHERS`
//! (`read_models.rs`) and hold an institution's observer to its institution
//! (`auth::read_scope`).

use async_graphql::{InputObject, SimpleObject};
use aula_domain::user::Role as DomainRole;
use aula_domain::values::{Email, PersonName};
use uuid::Uuid;

use super::mutations::{create_account_at, existing_institution, parse, result};
use super::read_models::STAFF;
use super::types::BigInt;
use super::{authorize, metadata, request};
use crate::auth;
use crate::validate;

#[derive(Default)]
pub struct ObserverMutation;

/// A new observer account: read-only access to the staff screens of one institution,
/// or (admins only) of the whole platform.
#[derive(InputObject)]
pub struct CreateObserverInput {
    /// The institution the observer watches. Managers create observers of their own
    /// institution (the default); an admin names one, or none for a platform-wide
    /// observer.
    pub institution_id: Option<Uuid>,
    /// The observer's full name.
    pub name: String,
    /// The observer's e-mail (unique across accounts). The account has no password
    /// until its owner sets one with `requestPasswordReset`.
    pub email: String,
}

/// What `createObserver` returns.
#[derive(SimpleObject, Debug, Clone)]
pub struct CreateObserverPayload {
    /// The new observer's user id.
    pub id: Uuid,
    /// The institution it watches; null for a platform-wide observer.
    pub institution_id: Option<Uuid>,
    /// Global log position of the account's creation.
    pub log_position: Option<BigInt>,
    /// Only when `waitForProjections: true` was asked: whether every projection reached
    /// `logPosition` before the read-your-writes timeout.
    pub projections_caught_up: Option<bool>,
}

command_mutations! {
impl ObserverMutation {
    /// Manager (own institution) or admin (any institution, or none: platform-wide).
    /// Creates a read-only observer account without a password.
    async fn create_observer(
        ctx, input: CreateObserverInput, wait_for_projections
    ) -> CreateObserverPayload {
        let (claims, state) = authorize(ctx, STAFF)?;
        // An admin's observer may watch the whole platform; a manager's watches its own
        // institution (naming another is FORBIDDEN).
        let institution_id = if claims.role == DomainRole::Admin {
            input.institution_id
        } else {
            Some(auth::target_institution(claims, input.institution_id)?)
        };
        validate! {
            name = parse("name", PersonName::parse(&input.name)),
            email = parse("email", Email::parse(&input.email)),
        }
        if let Some(id) = institution_id {
            existing_institution(state, id).await?;
        }
        let meta = metadata(request(ctx), institution_id);
        let (id, position) = create_account_at(
            state,
            &meta,
            &email,
            &name,
            DomainRole::Observer,
            institution_id,
        )
        .await?;
        let done = result(state, id, position, wait_for_projections).await?;
        Ok(CreateObserverPayload {
            id,
            institution_id,
            log_position: done.log_position,
            projections_caught_up: done.projections_caught_up,
        })
    }
}
}
