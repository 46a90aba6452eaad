//! Changes to an existing account: its name and e-mail (a new address applies once
//! confirmed) and its deactivation.

use async_graphql::InputObject;
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct UserMutation;

/// A change of name applies at once. A change of e-mail applies only when the link
/// sent to the new address is followed (`confirmEmailChange`); the current address is
/// told of the request.
#[derive(InputObject)]
pub struct UpdateUserInput {
    /// Defaults to the caller.
    pub user_id: Option<Uuid>,
    /// A new name (applies at once).
    pub name: Option<String>,
    /// A new e-mail (applies when the link sent to it is followed).
    pub email: Option<String>,
}

/// Confirms an e-mail change with the token e-mailed to the new address.
#[derive(InputObject)]
pub struct ConfirmEmailChangeInput {
    /// The account whose e-mail changes (from the link).
    pub user_id: Uuid,
    /// The token from the confirmation e-mail.
    pub token: String,
}

/// The account to deactivate, and why.
#[derive(InputObject)]
pub struct DeactivateUserInput {
    /// The account to deactivate.
    pub user_id: Uuid,
    /// Why, for the audit log.
    pub reason: String,
}

command_mutations! {
impl UserMutation {
    /// Any signed-in user on itself; a manager on users of its institution; an admin
    /// on anyone. Omitted fields are left as they are. Returns the user id.
    async fn update_user(ctx, input: UpdateUserInput, wait_for_projections) -> UpdateUserPayload {
        let claims = auth::require(request(ctx).claims.as_ref())?;
        let state = state(ctx);
        let target = input.user_id.unwrap_or(claims.user_id);
        if target != claims.user_id {
            auth::require_role(Some(claims), STAFF)?;
        }
        validate! {
            name = input
                .name
                .as_deref()
                .map(|n| parse("name", PersonName::parse(n)))
                .transpose(),
            email = input
                .email
                .as_deref()
                .map(|e| parse("email", Email::parse(e)))
                .transpose(),
        }
        let user = load_user(state, target).await?;
        let institution = user.institution_id().map(|id| id.as_uuid());
        if target != claims.user_id {
            match institution {
                Some(owner) => auth::ensure_institution(claims, owner)?,
                // Admin accounts belong to no institution: only admins touch them.
                None => auth::require_role(Some(claims), &[DomainRole::Admin]).map(|_| ())?,
            }
        }
        // A new address is only proposed here: whoever changes it (a manager, say)
        // must not be able to take the account by resetting its password at an
        // address its owner never confirmed.
        let change = email.filter(|e| Some(e) != user.email());
        let mut last_position = None;
        if name.is_some() {
            let command = UserCommand::UpdateUser { name, email: None };
            let committed = execute_on_user(ctx, target, institution, command).await?;
            last_position = committed.last_position().or(last_position);
        }
        if let Some(new_email) = change {
            let holder = emails::user_id_of(&state.pool, new_email.as_str()).await?;
            if let Some(holder) = holder.filter(|holder| *holder != target) {
                // A sign-up nobody confirmed gives the address up when the change is
                // confirmed (`reserve_email`); an account keeps it.
                if load(&state.buses.user, holder).await?.status() != UserStatus::Pending {
                    return Err(email_taken());
                }
            }
            // The link goes to the new address, or to the current one when someone
            // else asks for an active account (the domain decides; see
            // `EmailChangeLink`): the token is recorded for whichever receives it.
            let recipient = if target == claims.user_id || !user.has_password() {
                new_email.to_string()
            } else {
                user.email().map(ToString::to_string).unwrap_or_default()
            };
            let token_hash = issue(state, TokenKind::EmailChange, target, recipient).await?;
            let command = UserCommand::RequestEmailChange {
                new_email,
                token_hash,
                now: state.clock.now(),
                by_owner: target == claims.user_id,
            };
            let committed = execute_on_user(ctx, target, institution, command).await?;
            last_position = committed.last_position().or(last_position);
        }
        result(state, target, last_position, wait_for_projections)
            .await
            .map(UpdateUserPayload::from)
    }

    /// Public, rate-limited: whoever holds the token e-mailed to the new address.
    /// The e-mail changes now (if no other account took the address meanwhile).
    /// Returns the user id.
    async fn confirm_email_change(
        ctx, input: ConfirmEmailChangeInput, wait_for_projections
    ) -> CommandResult {
        rate_limit(ctx)?;
        let state = state(ctx);
        let token_hash = one_time_token("token", &input.token)?;
        let target = input.user_id;
        let unknown = || ApiError::rejection(&UserError::EmailChangeTokenUnknown);
        let user = load(&state.buses.user, target).await?;
        let Some(new_email) = user.pending_email_change(&token_hash).cloned() else {
            return Err(unknown());
        };
        let old_email = user.email().cloned();
        reserve_email(state, &new_email, target).await?;
        let command = UserCommand::ConfirmEmailChange {
            token_hash,
            now: state.clock.now(),
        };
        let institution = user.institution_id().map(|id| id.as_uuid());
        let outcome = execute_on_user(ctx, target, institution, command).await;
        let committed = match outcome {
            Ok(committed) => committed,
            Err(error) => {
                // Whatever went wrong, the address was not taken: free it again (a
                // failure here is logged; the reservation only blocks that address).
                if let Err(release) = emails::release(&state.pool, new_email.as_str(), target).await
                {
                    tracing::warn!(error = %release, "could not release an e-mail reservation");
                }
                return Err(match error {
                    CommandError::Rejected(UserError::NotFound | UserError::NotActive) => unknown(),
                    other => other.into(),
                });
            }
        };
        if let Some(old) = old_email.filter(|old| *old != new_email) {
            emails::release(&state.pool, old.as_str(), target).await?;
        }
        result(
            state,
            target,
            committed.last_position(),
            wait_for_projections,
        )
        .await
    }

    /// Manager (users of its institution) or admin. Users are never deleted.
    /// Returns the user id.
    async fn deactivate_user(
        ctx, input: DeactivateUserInput, wait_for_projections
    ) -> CommandResult {
        let (claims, state) = authorize(ctx, STAFF)?;
        let reason = input.reason.trim().to_owned();
        non_empty_at_most("reason", &reason, MAX_REASON_CHARS)?;
        let user = load_user(state, input.user_id).await?;
        let institution = user.institution_id().map(|id| id.as_uuid());
        match institution {
            Some(owner) => auth::ensure_institution(claims, owner)?,
            None => auth::require_role(Some(claims), &[DomainRole::Admin]).map(|_| ())?,
        }
        let command = UserCommand::DeactivateUser { reason };
        Recording::new(ctx, institution, wait_for_projections)
            .run(&state.buses.user, input.user_id, command, input.user_id)
            .await
    }
}
}
