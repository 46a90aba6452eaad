//! Signing up, signing in and resetting a password: the public, rate-limited mutations
//! of the user's own account. None of them tells whether an e-mail has an account.

use async_graphql::InputObject;
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct IdentityMutation;

/// The e-mail a self-service registration starts with.
#[derive(InputObject)]
pub struct SignUpInput {
    /// The e-mail to register; the confirmation link is sent there.
    pub email: String,
}

/// What completes a self-service registration: the e-mailed token and the new account's details.
#[derive(InputObject)]
pub struct ConfirmSignUpInput {
    /// The e-mail the sign-up started with.
    pub email: String,
    /// The token from the confirmation e-mail.
    pub token: String,
    /// The manager's name.
    pub name: String,
    /// The new account's password.
    pub password: String,
    /// The name of the institution the new manager runs.
    pub institution_name: String,
}

/// An e-mail and password to sign in with.
#[derive(InputObject)]
pub struct LoginInput {
    /// The account's e-mail.
    pub email: String,
    /// The account's password.
    pub password: String,
}

/// The e-mail of the account whose password is forgotten.
#[derive(InputObject)]
pub struct RequestPasswordResetInput {
    /// The account's e-mail.
    pub email: String,
}

/// A new password, with the e-mailed reset token.
#[derive(InputObject)]
pub struct ResetPasswordInput {
    /// The account's e-mail.
    pub email: String,
    /// The token from the reset e-mail.
    pub token: String,
    /// The new password.
    pub new_password: String,
}

command_mutations! {
impl IdentityMutation {
    /// Public, rate-limited. Starts a self-service registration: a confirmation token
    /// is issued for the e-mail. An e-mail that already has an account gets the same
    /// answer (its owner is told by e-mail instead), and the answer names no account:
    /// whether an e-mail has an account, or which one, is not told.
    async fn sign_up(ctx, input: SignUpInput, wait_for_projections) -> SignUpAccepted {
        rate_limit(ctx)?;
        let state = state(ctx);
        let email = parse("email", Email::parse(&input.email))?;
        let user_id = emails::reserve(&state.pool, email.as_str(), Uuid::new_v4()).await?;
        let now = state.clock.now();
        let expires_at = now
            + Duration::from_std(state.config.signup_token_ttl)
                .map_err(|e| ApiError::internal(format!("sign-up token ttl: {e}")))?;
        let kind = TokenKind::SignUpConfirmation;
        let confirmation_token_hash = issue(state, kind, user_id, email.to_string()).await?;
        let command = UserCommand::SignUp {
            email: email.clone(),
            confirmation_token_hash,
            expires_at,
            now,
        };
        let committed = execute_on_user(ctx, user_id, None, command).await?;
        let position = committed.last_position();
        Ok(SignUpAccepted {
            accepted: true,
            log_position: position.map(BigInt),
            projections_caught_up: settle(state, position, wait_for_projections).await?,
        })
    }

    /// Public, rate-limited. Confirms a sign-up: creates the user as the manager of a
    /// new institution.
    async fn confirm_sign_up(
        ctx, input: ConfirmSignUpInput, wait_for_projections
    ) -> SignUpConfirmed {
        rate_limit(ctx)?;
        let state = state(ctx);
        validate! {
            email = parse("email", Email::parse(&input.email)),
            token_hash = one_time_token("token", &input.token),
            name = parse("name", PersonName::parse(&input.name)),
            institution_name = parse(
                "institutionName",
                InstitutionName::parse(&input.institution_name),
            ),
            password = password(state, "password", &input.password),
        }
        let unknown = || ApiError::rejection(&UserError::SignUpTokenUnknown);
        let refused = |e: UserError| match e {
            // Do not tell "no sign-up for this e-mail" from "wrong token".
            UserError::NotFound => unknown(),
            other => ApiError::rejection(&other),
        };
        // The password is hashed (Argon2, slow on purpose) only for a token that can
        // succeed; the command decides again.
        let check = |user: &User| match user.check_sign_up_token(&token_hash, state.clock.now()) {
            // A link to an address another account holds: staff made an account for
            // it, which voided the sign-up (`take_from_sign_up`).
            Err(_) if matches!(user.status(), UserStatus::Active | UserStatus::Deactivated)
                && !user.issued_sign_up_token(&token_hash) => Err(UserError::SignUpTokenExpired),
            checked => checked,
        };
        let user_id = token_account(state, &email, check, &refused).await?;
        let password_hash = hash_password(state, password).await?;
        let institution_id = Uuid::new_v4();
        let meta = metadata(request(ctx), Some(institution_id));
        // Held until the account is recorded, so that no staff action takes the
        // address from the sign-up meanwhile; one already taken voided it.
        let held = emails::hold(&state.pool, email.as_str()).await?;
        if held.holder != Some(user_id) {
            return Err(refused(UserError::SignUpTokenExpired));
        }
        let user_committed = state
            .buses
            .user
            .execute(
                &user_id.to_string(),
                UserCommand::ConfirmSignUp {
                    token_hash,
                    name,
                    password_hash,
                    institution_id: InstitutionId::from_uuid(institution_id),
                    institution_name: institution_name.clone(),
                    now: state.clock.now(),
                },
                &meta,
            )
            .await
            .map_err(|e| match e {
                CommandError::Rejected(e) => refused(e),
                other => other.into(),
            })?;
        held.settle().await?;
        // A second aggregate, so not atomic with the user: if this process stops here,
        // the processor's `institution.create` task (issued by `SignUpConfirmed`)
        // creates it. If that task came first, the institution is already there.
        let created = state
            .buses
            .institution
            .execute(
                &institution_id.to_string(),
                InstitutionCommand::CreateInstitution {
                    name: institution_name,
                    manager_user_id: UserId::from_uuid(user_id),
                },
                &meta,
            )
            .await;
        let position = match created {
            Ok(committed) => committed.last_position(),
            Err(CommandError::Rejected(InstitutionError::AlreadyExists)) => {
                user_committed.last_position()
            }
            Err(other) => return Err(other.into()),
        };
        Ok(SignUpConfirmed {
            user_id,
            institution_id,
            log_position: position.map(BigInt),
            projections_caught_up: settle(state, position, wait_for_projections).await?,
        })
    }

    /// Public, rate-limited. Returns a signed access token. A wrong password is
    /// UNAUTHENTICATED `INVALID_CREDENTIALS` (and recorded); the failure that reaches
    /// the threshold locks the account out for the lockout duration from the client's
    /// address (its IPv6 /64), so a stranger locks out only themselves; failures from
    /// all addresses together reach a much higher ceiling before the whole account is
    /// locked, except from the addresses the account logged in from recently (30 days
    /// by default). Only the right password learns of the lockout (FORBIDDEN
    /// `USER_LOCKED_OUT`): to anyone else a locked account answers as an unknown e-mail
    /// does, so failing on purpose cannot tell which e-mails have accounts.
    async fn login(ctx, input: LoginInput) -> LoginResult {
        rate_limit(ctx)?;
        let state = state(ctx);
        let bad_credentials =
            || ApiError::unauthenticated("INVALID_CREDENTIALS", "wrong e-mail or password");
        let email = parse("email", Email::parse(&input.email))?;
        if input.password.chars().count() > state.config.max_password_chars {
            return Err(bad_credentials());
        }
        let Some(user_id) = emails::user_id_of(&state.pool, email.as_str()).await? else {
            let cost = state.config.password_hashing;
            state.hashing.verify(input.password, None, cost).await?;
            return Err(bad_credentials());
        };
        let user = load(&state.buses.user, user_id).await?;
        let stored = user.password_hash().map(str::to_owned);
        let has_password = stored.is_some();
        let cost = state.config.password_hashing;
        let matches = state.hashing.verify(input.password, stored, cost).await?;
        if !has_password {
            // Not confirmed yet, or an account whose password was never set.
            return Err(bad_credentials());
        }
        let command = UserCommand::AttemptLogin {
            password_matches: matches,
            // The address the per-address rate limit keys on (a trusted proxy's client).
            source: request(ctx).client.map(LoginSource::from_ip),
            now: state.clock.now(),
        };
        let institution = user.institution_id().map(|id| id.as_uuid());
        let committed = execute_on_user(ctx, user_id, institution, command)
            .await
            .map_err(|e| match e {
                // A deactivated account answers as a wrong password does, whatever the
                // password: the hash was verified above either way, so neither the
                // answer nor its timing tells that the e-mail has an account.
                CommandError::Rejected(
                    UserError::NotFound | UserError::NotActive | UserError::Deactivated,
                ) => bad_credentials(),
                CommandError::Rejected(locked @ UserError::LockedOut { .. }) if matches => {
                    ApiError::rejection(&locked)
                }
                CommandError::Rejected(UserError::LockedOut { .. }) => bad_credentials(),
                other => other.into(),
            })?;
        // A failure (the one that reaches the threshold too) is a wrong password.
        if committed
            .events
            .iter()
            .any(|event| matches!(event, UserEvent::LoginFailed { .. }))
        {
            return Err(bad_credentials());
        }
        let role = user
            .role()
            .ok_or_else(|| ApiError::internal(format!("active user {user_id} has no role")))?;
        let ttl = Duration::from_std(state.config.token_ttl)
            .map_err(|e| ApiError::internal(format!("token ttl: {e}")))?;
        // Whole seconds: the token carries Unix seconds.
        let expires_at = chrono::DateTime::from_timestamp((state.clock.now() + ttl).timestamp(), 0)
            .ok_or_else(|| ApiError::internal("token expiry out of range"))?;
        let claims = Claims {
            user_id,
            role,
            institution_id: user.institution_id().map(|id| id.as_uuid()),
            expires_at,
            credential_version: user.credential_version(),
        };
        Ok(LoginResult {
            access_token: auth::issue(&state.config.token_secret, &claims),
            expires_at,
            user_id,
            role: role.into(),
            institution_id: claims.institution_id,
            log_position: committed.last_position().map(BigInt),
        })
    }

    /// Public, rate-limited. Issues a reset token if the e-mail belongs to an active
    /// account. The answer is the same either way.
    async fn request_password_reset(ctx, input: RequestPasswordResetInput) -> RequestAccepted {
        rate_limit(ctx)?;
        let state = state(ctx);
        let email = parse("email", Email::parse(&input.email))?;
        // The answer never comes before the floor, so a known address (a token
        // stashed, a command appended: ~11 ms) cannot be told from an unknown one
        // (~4 ms) by its timing.
        let answer_at = tokio::time::Instant::now() + state.config.reset_request_floor;
        let outcome = async {
            if let Some(user_id) = emails::user_id_of(&state.pool, email.as_str()).await? {
                let kind = TokenKind::PasswordReset;
                let token_hash = issue(state, kind, user_id, email.to_string()).await?;
                let command = UserCommand::RequestPasswordReset {
                    token_hash,
                    now: state.clock.now(),
                };
                let outcome = execute_on_user(ctx, user_id, None, command).await;
                match outcome {
                    Ok(_) => {}
                    // Pending or deactivated accounts, and accounts that had too many
                    // resets lately, get nothing, silently (the token handed to the sink
                    // is never sent).
                    Err(CommandError::Rejected(_)) => {}
                    Err(other) => return Err(ApiError::from(other)),
                }
            }
            Ok(RequestAccepted { accepted: true })
        }
        .await;
        tokio::time::sleep_until(answer_at).await;
        outcome
    }

    /// Public, rate-limited. Sets a new password with a reset token. Returns the user id.
    async fn reset_password(ctx, input: ResetPasswordInput, wait_for_projections) -> CommandResult {
        rate_limit(ctx)?;
        let state = state(ctx);
        validate! {
            email = parse("email", Email::parse(&input.email)),
            token_hash = one_time_token("token", &input.token),
            new_password = password(state, "newPassword", &input.new_password),
        }
        let unknown = || ApiError::rejection(&UserError::ResetTokenUnknown);
        let refused = |e: UserError| match e {
            UserError::NotFound | UserError::NotActive => unknown(),
            other => ApiError::rejection(&other),
        };
        // As in `confirm_sign_up`: hash only for a token that can succeed.
        let check = |user: &User| user.check_reset_token(&token_hash, state.clock.now());
        let user_id = token_account(state, &email, check, &refused).await?;
        let new_password_hash = hash_password(state, new_password).await?;
        let command = UserCommand::ResetPassword {
            token_hash,
            new_password_hash,
            now: state.clock.now(),
        };
        let committed = execute_on_user(ctx, user_id, None, command)
            .await
            .map_err(|e| match e {
                CommandError::Rejected(e) => refused(e),
                other => other.into(),
            })?;
        result(
            state,
            user_id,
            committed.last_position(),
            wait_for_projections,
        )
        .await
    }
}
}

/// The account of `email`, once `check` accepts the one-time token it holds (checked
/// before any slow work; the command decides again). An e-mail without an account is
/// refused as `refused(NotFound)`, the answer to a wrong token.
async fn token_account<T>(
    state: &AppState,
    email: &Email,
    check: impl FnOnce(&User) -> Result<T, UserError>,
    refused: &impl Fn(UserError) -> ApiError,
) -> Result<Uuid, ApiError> {
    let user_id = emails::user_id_of(&state.pool, email.as_str())
        .await?
        .ok_or_else(|| refused(UserError::NotFound))?;
    let user = load(&state.buses.user, user_id).await?;
    check(&user).map_err(refused)?;
    Ok(user_id)
}
