//! Standard Webhooks signatures: the `whsec_` secrets and the `v1` HMAC-SHA256 scheme.
//!
//! `webhook-signature` is `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`,
//! one entry per secret that signs (the current one, and the previous one during a
//! rotation window), separated by spaces. The secret is the base64 after `whsec_`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes of a new secret (the spec allows 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// An endpoint's signing key. Its `Debug` never shows the bytes; the text form
/// ([`WebhookSecret::reveal`]) is given to the endpoint's owner once, on create or rotate.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// A new random secret (the operating system's generator, via `rand`).
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The stored bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Parses `whsec_<base64>` (24 to 64 bytes).
    pub fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(SECRET_PREFIX)?;
        let bytes = STANDARD.decode(encoded).ok()?;
        (24..=64).contains(&bytes.len()).then_some(Self(bytes))
    }

    /// The bytes, to store.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64>`: shown to the endpoint's owner once, never logged.
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &str) -> String {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[&WebhookSecret],
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known-answer vector published with the Standard Webhooks libraries (the
    /// README of standard-webhooks/standard-webhooks and the Python library's tests).
    #[test]
    fn signs_the_published_known_answer_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_new_secret_round_trips_and_never_prints() {
        let secret = WebhookSecret::generate();
        let text = secret.reveal();
        assert!(text.starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(&text), Some(secret.clone()));
        assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
        assert!(
            WebhookSecret::parse("whsec_c2hvcnQ=").is_none(),
            "too short"
        );
    }

    #[test]
    fn both_secrets_sign_during_a_rotation() {
        let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
        let header = signature_header(&[&new, &old], "msg_1", 1, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [new.sign("msg_1", 1, "{}"), old.sign("msg_1", 1, "{}")]
        );
    }
}
