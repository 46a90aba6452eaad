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

/// Argon2id PHC string of `password`. CPU-heavy: call it off the async workers.
fn hash_now(password: &str, cost: PasswordHashing) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2(cost)
        .map_err(|e| e.to_string())?
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the stored PHC string (its own parameters are used).
/// With no stored hash, a dummy hash runs anyway, at the configured `cost` (what stored
/// hashes use), so that timing does not tell "no such account" from "wrong password".
fn verify_now(password: &str, stored: Option<&str>, cost: PasswordHashing) -> bool {
    let Some(stored) = stored else {
        if let Ok(argon2) = argon2(cost) {
            let _ = argon2.hash_password(
                password.as_bytes(),
                &SaltString::generate(&mut argon2::password_hash::rand_core::OsRng),
            );
        }
        return false;
    };
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Argon2id PHC string of `password` on the blocking pool, outside any bound: for
/// one-off work beside the server (creating an admin), never for requests.
pub(crate) async fn hash_password(
    password: String,
    cost: PasswordHashing,
) -> Result<String, String> {
    tokio::task::spawn_blocking(move || hash_now(&password, cost))
        .await
        .map_err(|e| e.to_string())?
}

/// Every lane is busy and the queue for them is full, or the wait outlived its bound:
/// the request is answered "unavailable, retry" rather than queued without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Saturated {
    pub waiting: usize,
}

/// The Argon2 work of requests, a bounded number at a time.
///
/// Each hash takes one core for tens of milliseconds on purpose. Without a bound, a
/// flood of logins (unknown e-mails cost a dummy hash too) put hundreds of hashes on
/// the blocking pool at once: every request, `/health` included, then waited behind
/// them for the CPU and the database pool timed out. With lanes, at most `lanes`
/// hashes run at once, at most `max_waiting` requests wait for one, each at most
/// `max_wait`; beyond that a request is refused at once (`UNAVAILABLE`, retry).
/// A request waits here holding no database connection: its queries before are done,
/// and those after start once its hash is.
#[derive(Debug)]
pub(crate) struct HashingLanes {
    lanes: std::sync::Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
    max_wait: std::time::Duration,
}

impl HashingLanes {
    pub(crate) fn new(config: &crate::config::PasswordLanes) -> Self {
        let lanes = config.lanes.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        Self {
            lanes: std::sync::Arc::new(tokio::sync::Semaphore::new(lanes.max(1))),
            waiting: Default::default(),
            max_waiting: config.max_waiting,
            max_wait: config.max_wait,
        }
    }

    /// Runs `work` on the blocking pool once a lane is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Result<T, tokio::task::JoinError>, Saturated> {
        let lane = match self.lanes.clone().try_acquire_owned() {
            Ok(lane) => lane,
            Err(_) => {
                let _queued = Queued::enter(&self.waiting, self.max_waiting)?;
                let waiting = self.waiting.load(std::sync::atomic::Ordering::Relaxed);
                tokio::time::timeout(self.max_wait, self.lanes.clone().acquire_owned())
                    .await
                    .map_err(|_| Saturated { waiting })?
                    // The semaphore is never closed.
                    .map_err(|_| Saturated { waiting })?
            }
        };
        // The lane goes with the work: a request dropped meanwhile (its client gone,
        // its timeout) frees it only when the hash is really over.
        Ok(tokio::task::spawn_blocking(move || {
            let _lane = lane;
            work()
        })
        .await)
    }

    /// [`hash_now`] in a lane.
    pub(crate) async fn hash(
        &self,
        password: String,
        cost: PasswordHashing,
    ) -> Result<Result<String, String>, Saturated> {
        let outcome = self.run(move || hash_now(&password, cost)).await?;
        Ok(outcome.map_err(|e| e.to_string()).and_then(|hashed| hashed))
    }

    /// [`verify_now`] in a lane; a hash that panicked matches nothing.
    pub(crate) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
        cost: PasswordHashing,
    ) -> Result<bool, Saturated> {
        let outcome = self
            .run(move || verify_now(&password, stored.as_deref(), cost))
            .await?;
        Ok(outcome.unwrap_or(false))
    }
}

/// One request counted among those waiting for a lane, while it waits.
struct Queued<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(
        waiting: &'a std::sync::atomic::AtomicUsize,
        max_waiting: usize,
    ) -> Result<Self, Saturated> {
        let before = waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queued = Self(waiting);
        if before >= max_waiting {
            return Err(Saturated { waiting: before });
        }
        Ok(queued)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
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
        let lanes = HashingLanes::new(&Default::default());
        let hash = lanes
            .hash("correct horse".into(), cost)
            .await
            .unwrap()
            .unwrap();
        let verify = |password: &str, stored: Option<&String>| {
            lanes.verify(password.into(), stored.cloned(), cost)
        };
        assert_eq!(verify("correct horse", Some(&hash)).await, Ok(true));
        assert_eq!(verify("wrong", Some(&hash)).await, Ok(false));
        assert_eq!(verify("x", None).await, Ok(false));
        assert!(hash_password("correct horse".into(), cost).await.is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_long_wait_gives_up() {
        let config = crate::config::PasswordLanes {
            lanes: Some(1),
            max_waiting: 1,
            max_wait: std::time::Duration::from_millis(200),
        };
        let lanes = std::sync::Arc::new(HashingLanes::new(&config));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let busy = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.run(move || hold.recv().is_ok()).await })
        };
        while lanes.lanes.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let queued = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.run(|| ()).await.map(|_| ()) })
        };
        while lanes.waiting.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        // The queue (one place) is full: refused at once.
        assert!(lanes.run(|| ()).await.is_err());
        // The one that queued gives up after its wait.
        assert!(queued.await.unwrap().is_err());
        release.send(()).unwrap();
        assert!(busy.await.unwrap().unwrap().unwrap());
        // The lane is free again, the queue empty.
        assert!(lanes.run(|| ()).await.is_ok());
        assert_eq!(lanes.waiting.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
