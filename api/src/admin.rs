//! Creating the first platform admin (`aula admin create`), never a public mutation.

use aula_domain::user::{Role, User, UserCommand, UserServices};
use aula_domain::values::{Email, PersonName};
use aula_eventlog::{Actor, CommandBus, CommandError, EventMetadata};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::PasswordHashing;
use crate::emails;
use crate::secrets;

#[derive(Debug, thiserror::Error)]
pub enum CreateAdminError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the e-mail {0} already belongs to an account")]
    EmailTaken(String),
    #[error("the admin could not be created: {0}")]
    Rejected(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Creates an active admin account with a password. The name is the e-mail's local
/// part; the admin can change it with `updateUser`.
pub async fn create_admin(
    pool: &PgPool,
    email: &str,
    password: &str,
) -> Result<Uuid, CreateAdminError> {
    let email = Email::parse(email).map_err(|e| CreateAdminError::Invalid {
        field: "email",
        reason: e.reason.to_string(),
    })?;
    if password.chars().count() < 8 {
        return Err(CreateAdminError::Invalid {
            field: "password",
            reason: "must be at least 8 characters".into(),
        });
    }
    let local = email.as_str().split('@').next().unwrap_or("admin");
    let name = PersonName::parse(local).map_err(|e| CreateAdminError::Invalid {
        field: "email",
        reason: e.reason.to_string(),
    })?;
    let password_hash = secrets::hash_password(password.to_owned(), PasswordHashing::default())
        .await
        .map_err(CreateAdminError::Hashing)?;
    let candidate = Uuid::new_v4();
    let bus = CommandBus::<User>::with_upcasters(
        pool.clone(),
        UserServices::default(),
        aula_domain::upcasters(),
    );
    let holder = emails::reserve(pool, email.as_str(), candidate).await?;
    // As for the mutations (`reserve_email`): anyone may sign up with the operator's
    // address first, or hang up right after reserving it.
    if holder != candidate {
        let (held_by, _) = bus
            .load(&holder.to_string())
            .await
            .map_err(|e| CreateAdminError::Rejected(e.to_string()))?;
        let now = chrono::Utc::now();
        if !emails::reclaim(pool, email.as_str(), (holder, &held_by), candidate, now).await? {
            return Err(CreateAdminError::EmailTaken(email.to_string()));
        }
    }
    let outcome = bus
        .execute(
            &candidate.to_string(),
            UserCommand::CreateUser {
                email: email.clone(),
                name,
                role: Role::Admin,
                institution_id: None,
                password_hash: Some(password_hash),
            },
            &EventMetadata::new(Actor::System, None),
        )
        .await;
    match outcome {
        Ok(_) => Ok(candidate),
        Err(CommandError::Rejected(rejection)) => {
            emails::release(pool, email.as_str(), candidate).await?;
            Err(CreateAdminError::Rejected(rejection.to_string()))
        }
        Err(CommandError::Conflict { attempts }) => Err(CreateAdminError::Rejected(format!(
            "lost {attempts} concurrency races"
        ))),
        Err(CommandError::Store(e)) => Err(CreateAdminError::Rejected(e.to_string())),
    }
}
