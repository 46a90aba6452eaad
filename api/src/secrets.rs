//! One-time tokens (sign-up confirmation, password reset) and passwords.
//!
//! A one-time token is 32 random bytes, base64url; only its SHA-256 (hex) goes into
//! commands and events. The raw token is handed to a [`TokenSink`] once, when issued:
//! whoever delivers it to the user (e-mail) plugs in there. Tokens and passwords are
//! never logged.

use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::PasswordHashing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    SignUpConfirmation,
    PasswordReset,
    /// Sent to the new address of an e-mail change.
    EmailChange,
}

/// A raw one-time token at the moment it is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub kind: TokenKind,
    pub user_id: Uuid,
    pub email: String,
    /// The secret itself: deliver it, never log it.
    pub token: String,
}

/// Receives every raw one-time token the API issues.
///
/// Called **before** the command that records the token's hash, and awaited: once that
/// command commits, the e-mail task that needs the raw token may run, and a crash
/// between the two must not lose the token (the user would never get the link). A token
/// whose command then fails or is refused is never used; the sink's store purges it. An
/// error fails the request before anything is recorded.
#[async_trait::async_trait]
pub trait TokenSink: Send + Sync + 'static {
    async fn issued(&self, token: &IssuedToken) -> Result<(), BoxError>;
}

pub use aula_eventlog::subscription::BoxError;

/// Production default: drops the raw token (delivery is wired elsewhere).
#[derive(Debug, Default, Clone, Copy)]
pub struct DropTokens;

#[async_trait::async_trait]
impl TokenSink for DropTokens {
    async fn issued(&self, _token: &IssuedToken) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Keeps every issued token in memory (tests).
#[derive(Debug, Default)]
pub struct RecordingTokenSink(Mutex<Vec<IssuedToken>>);

impl RecordingTokenSink {
    /// The last token of `kind` issued for `email`.
    pub fn last(&self, kind: TokenKind, email: &str) -> Option<String> {
        let tokens = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens
            .iter()
            .rev()
            .find(|t| t.kind == kind && t.email == email)
            .map(|t| t.token.clone())
    }

    pub fn count(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

#[async_trait::async_trait]
impl TokenSink for RecordingTokenSink {
    async fn issued(&self, token: &IssuedToken) -> Result<(), BoxError> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(token.clone());
        Ok(())
    }
}

/// A fresh random one-time token.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What commands carry instead of the token.
/// The SHA-256 (hex) under which a one-time token is stored and looked up.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn argon2(cost: PasswordHashing) -> Result<Argon2<'static>, argon2::Error> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Argon2id PHC string of `password`. CPU-heavy: runs on the blocking pool.
pub(crate) async fn hash_password(
    password: String,
    cost: PasswordHashing,
) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        argon2(cost)
            .map_err(|e| e.to_string())?
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Whether `password` matches the stored PHC string (its own parameters are used).
/// With no stored hash, a dummy hash runs anyway, at the configured `cost` (what stored
/// hashes use), so that timing does not tell "no such account" from "wrong password".
pub(crate) async fn verify_password(
    password: String,
    stored: Option<String>,
    cost: PasswordHashing,
) -> bool {
    tokio::task::spawn_blocking(move || {
        let Some(stored) = stored else {
            if let Ok(argon2) = argon2(cost) {
                let _ = argon2.hash_password(
                    password.as_bytes(),
                    &SaltString::generate(&mut argon2::password_hash::rand_core::OsRng),
                );
            }
            return false;
        };
        match PasswordHash::new(&stored) {
            Ok(parsed) => Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_hex_sha256() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(new_token(), new_token());
    }

    #[tokio::test]
    async fn password_round_trips() {
        let cost = PasswordHashing {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let hash = hash_password("correct horse".into(), cost).await.unwrap();
        assert!(verify_password("correct horse".into(), Some(hash.clone()), cost).await);
        assert!(!verify_password("wrong".into(), Some(hash), cost).await);
        assert!(!verify_password("x".into(), None, cost).await);
    }
}
