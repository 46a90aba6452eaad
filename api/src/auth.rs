//! Access tokens and the authorization rules every resolver applies.
//!
//! An access token is `base64url(payload) "." base64url(HMAC-SHA256(secret, payload))`
//! with payload `v1|<user id>|<role>|<institution id or empty>|<expiry, unix seconds>`.
//! It is self-contained (no session table); the one server-side check is that the
//! account was not deactivated since ([`authenticate`]). A role or institution change
//! takes effect at the next login, so `token_ttl` is short (15 minutes by default).

use aula_domain::user::Role;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::Secret;
use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

/// Who is calling, as proven by a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user_id: Uuid,
    pub role: Role,
    pub institution_id: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
    /// The account's credential version when the token was issued (see
    /// `User::credential_version`): a password reset ends every earlier token.
    pub credential_version: u32,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Manager => "manager",
        Role::Teacher => "teacher",
        Role::Student => "student",
        Role::Observer => "observer",
    }
}

fn parse_role(text: &str) -> Option<Role> {
    Some(match text {
        "admin" => Role::Admin,
        "manager" => Role::Manager,
        "teacher" => Role::Teacher,
        "student" => Role::Student,
        "observer" => Role::Observer,
        _ => return None,
    })
}

fn mac(secret: &Secret) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(secret.expose()).expect("HMAC takes keys of any length")
}

pub fn issue(secret: &Secret, claims: &Claims) -> String {
    let payload = format!(
        "v2|{}|{}|{}|{}|{}",
        claims.user_id,
        role_name(claims.role),
        claims
            .institution_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        claims.expires_at.timestamp(),
        claims.credential_version
    );
    let mut mac = mac(secret);
    mac.update(payload.as_bytes());
    let signature = mac.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Signs any other payload with the token secret (e.g. the bulk reprocessing confirm
/// token): `base64url(payload) "." base64url(HMAC-SHA256(secret, payload))`. Callers
/// use payloads that can never parse as an access token's (`v1|...`).
pub(crate) fn sign(secret: &Secret, payload: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(payload);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// The payload of a [`sign`]ed value whose signature is valid (constant-time check).
pub(crate) fn open(secret: &Secret, signed: &str) -> Option<Vec<u8>> {
    if signed.len() > 16 * 1024 {
        return None;
    }
    let (payload_b64, signature_b64) = signed.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).ok()?;
    let mut mac = mac(secret);
    mac.update(&payload);
    mac.verify_slice(&signature).ok()?;
    Some(payload)
}

/// Checks signature and expiry. Any failure is the same `UNAUTHENTICATED` to the
/// client (the reason says which, without helping a forger).
pub fn verify(secret: &Secret, token: &str, now: DateTime<Utc>) -> Result<Claims, ApiError> {
    let invalid = || ApiError::unauthenticated("INVALID_TOKEN", "the access token is invalid");
    if token.len() > 1024 {
        return Err(invalid());
    }
    let (payload_b64, signature_b64) = token.split_once('.').ok_or_else(invalid)?;
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| invalid())?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| invalid())?;
    let mut mac = mac(secret);
    mac.update(&payload);
    // Constant-time comparison.
    mac.verify_slice(&signature).map_err(|_| invalid())?;
    let payload = String::from_utf8(payload).map_err(|_| invalid())?;
    let parts: Vec<&str> = payload.split('|').collect();
    // v1 tokens (before credential versions) are refused: they lived 15 minutes.
    let [version, user_id, role, institution, expires, credential_version] = parts[..] else {
        return Err(invalid());
    };
    if version != "v2" {
        return Err(invalid());
    }
    let claims = Claims {
        user_id: user_id.parse().map_err(|_| invalid())?,
        role: parse_role(role).ok_or_else(invalid)?,
        institution_id: if institution.is_empty() {
            None
        } else {
            Some(institution.parse().map_err(|_| invalid())?)
        },
        expires_at: expires
            .parse::<i64>()
            .ok()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .ok_or_else(invalid)?,
        credential_version: credential_version.parse().map_err(|_| invalid())?,
    };
    if claims.expires_at <= now {
        return Err(expired());
    }
    Ok(claims)
}

/// The account's standing for its tokens: deactivated, and its credential version
/// (password resets so far). One indexed look-up on the user's own stream.
pub async fn credential_state(
    pool: &sqlx::PgPool,
    user_id: Uuid,
) -> Result<(bool, u32), sqlx::Error> {
    let (deactivated, resets) =
        aula_eventlog::lookups::user_credential_state(pool, user_id).await?;
    Ok((deactivated, u32::try_from(resets).unwrap_or(u32::MAX)))
}

/// Verifies a token and refuses the tokens of deactivated accounts.
pub async fn authenticate(
    pool: &sqlx::PgPool,
    secret: &Secret,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Claims, ApiError> {
    let claims = verify(secret, token, now)?;
    still_valid(pool, &claims, now).await?;
    Ok(claims)
}

/// Whether claims verified earlier (a WebSocket connection's) still hold at `now`: not
/// expired, the account not deactivated.
pub async fn still_valid(
    pool: &sqlx::PgPool,
    claims: &Claims,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if claims.expires_at <= now {
        return Err(expired());
    }
    let (deactivated, credential_version) = credential_state(pool, claims.user_id).await?;
    still_holds(claims, deactivated, credential_version)
}

/// Whether claims hold for an account in this state (deactivated, and its credential
/// version now): the part of [`still_valid`] that reads nothing.
pub fn still_holds(
    claims: &Claims,
    deactivated: bool,
    credential_version: u32,
) -> Result<(), ApiError> {
    if deactivated {
        return Err(ApiError::unauthenticated(
            "ACCOUNT_DEACTIVATED",
            "the account is deactivated",
        ));
    }
    if claims.credential_version < credential_version {
        return Err(ApiError::unauthenticated(
            "TOKEN_REVOKED",
            "the password changed since this token was issued; log in again",
        ));
    }
    Ok(())
}

pub(crate) fn expired() -> ApiError {
    ApiError::unauthenticated(
        "TOKEN_EXPIRED",
        "the access token has expired; log in again",
    )
}

/// Extracts the token from an `Authorization: Bearer <token>` value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Requires a signed-in caller.
pub fn require(claims: Option<&Claims>) -> Result<&Claims, ApiError> {
    claims.ok_or_else(|| {
        ApiError::unauthenticated("LOGIN_REQUIRED", "this operation needs an access token")
    })
}

/// Requires a signed-in caller with one of `roles`.
pub fn require_role<'a>(
    claims: Option<&'a Claims>,
    roles: &[Role],
) -> Result<&'a Claims, ApiError> {
    let claims = require(claims)?;
    if roles.contains(&claims.role) {
        Ok(claims)
    } else {
        Err(role_not_allowed())
    }
}

/// The refusal of a signed-in caller whose role may not do what it asked.
pub(crate) fn role_not_allowed() -> ApiError {
    ApiError::forbidden(
        "ROLE_NOT_ALLOWED",
        "your role may not perform this operation",
    )
}

/// Whether the caller's scope is every institution: an admin, or an observer that
/// belongs to none (platform-wide support staff, who read what an admin reads).
pub fn sees_every_institution(claims: &Claims) -> bool {
    match claims.role {
        Role::Admin => true,
        Role::Observer => claims.institution_id.is_none(),
        _ => false,
    }
}

/// The institution a read lists when the caller may name any (`sees_every_institution`:
/// the one named, or all when none is) or only its own (naming another is FORBIDDEN).
pub fn read_scope(claims: &Claims, requested: Option<Uuid>) -> Result<Option<Uuid>, ApiError> {
    if sees_every_institution(claims) {
        Ok(requested)
    } else {
        target_institution(claims, requested).map(Some)
    }
}

/// The institution a staff operation acts on: a manager's own (naming another one is
/// FORBIDDEN), or the one an admin (or a platform-wide observer, for reads) names
/// (required).
pub fn target_institution(claims: &Claims, requested: Option<Uuid>) -> Result<Uuid, ApiError> {
    if sees_every_institution(claims) {
        return requested.ok_or_else(|| {
            ApiError::validation(
                "institutionId",
                "EMPTY",
                "an admin must name the institution",
            )
        });
    }
    let own = own_institution(claims)?;
    match requested {
        Some(other) if other != own => Err(other_institution()),
        _ => Ok(own),
    }
}

/// Institution isolation: only an admin (or, for reads, a platform-wide observer)
/// reaches beyond its own institution.
pub fn ensure_institution(claims: &Claims, owner: Uuid) -> Result<(), ApiError> {
    if sees_every_institution(claims) || claims.institution_id == Some(owner) {
        Ok(())
    } else {
        Err(other_institution())
    }
}

fn own_institution(claims: &Claims) -> Result<Uuid, ApiError> {
    claims.institution_id.ok_or_else(|| {
        ApiError::forbidden("NO_INSTITUTION", "your account belongs to no institution")
    })
}

fn other_institution() -> ApiError {
    ApiError::forbidden("OTHER_INSTITUTION", "this belongs to another institution")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_at: DateTime<Utc>) -> Claims {
        Claims {
            user_id: Uuid::new_v4(),
            role: Role::Manager,
            institution_id: Some(Uuid::new_v4()),
            expires_at,
            credential_version: 3,
        }
    }

    #[test]
    fn token_round_trips_and_rejects_tampering() {
        let secret = Secret::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let now = Utc::now();
        let claims = claims(DateTime::from_timestamp(now.timestamp() + 60, 0).unwrap());
        let token = issue(&secret, &claims);
        assert_eq!(verify(&secret, &token, now).unwrap(), claims);

        let other = Secret::new(b"another secret".to_vec());
        assert!(verify(&other, &token, now).is_err());
        let forged = issue(
            &other,
            &Claims {
                role: Role::Admin,
                ..claims.clone()
            },
        );
        assert!(verify(&secret, &forged, now).is_err());
        assert!(verify(&secret, "garbage", now).is_err());
        let later = now + chrono::Duration::seconds(61);
        assert!(verify(&secret, &token, later).is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
