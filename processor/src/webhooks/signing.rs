//! Standard Webhooks signatures: the symmetric `v1` scheme (HMAC-SHA256, `whsec_`
//! secrets) and the asymmetric `v1a` scheme (ed25519, `whsk_` secret keys that never
//! leave Aula and `whpk_` public keys that receivers verify with).
//!
//! `webhook-signature` holds one entry per key that signs (the current one, and the
//! previous one during a rotation window), separated by spaces:
//! `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>` or
//! `v1a,<base64 ed25519 signature of "{id}.{timestamp}.{body}">` (64 bytes).

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

/// Prefix of a `v1a` secret key's text form (the 32-byte ed25519 seed).
pub const SIGNING_KEY_PREFIX: &str = "whsk_";
/// Prefix of a `v1a` public key's text form (the 32-byte ed25519 public key).
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// An endpoint's `v1a` key pair. `Debug` never shows the secret half; only the public
/// key ([`WebhookSigningKey::public_key_text`]) is shown, to anyone who may read the
/// endpoint: receivers verify with it, and only Aula can sign.
#[derive(Clone)]
pub struct WebhookSigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for WebhookSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSigningKey({})", self.public_key_text())
    }
}

impl PartialEq for WebhookSigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.verifying_key() == other.0.verifying_key()
    }
}

impl WebhookSigningKey {
    /// A new key pair from the operating system's generator.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// From the stored 32-byte seed; `None` for any other length.
    pub fn from_seed(seed: &[u8]) -> Option<Self> {
        let seed: [u8; 32] = seed.try_into().ok()?;
        Some(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Parses `whsk_<base64>`: the 32-byte seed, or the 64 bytes of seed and public key
    /// (the two forms ed25519 libraries write), checked against each other.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = STANDARD
            .decode(text.strip_prefix(SIGNING_KEY_PREFIX)?)
            .ok()?;
        match bytes.len() {
            32 => Self::from_seed(&bytes),
            64 => {
                let key = Self::from_seed(&bytes[..32])?;
                (key.public_key() == bytes[32..]).then_some(key)
            }
            _ => None,
        }
    }

    /// The seed, to store.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// `whsk_<base64 seed>`: for the operator's own tests; Aula never shows it.
    pub fn reveal(&self) -> String {
        format!("{SIGNING_KEY_PREFIX}{}", STANDARD.encode(self.0.to_bytes()))
    }

    /// The 32 bytes of the public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// `whpk_<base64>`: what receivers verify `v1a` signatures with.
    pub fn public_key_text(&self) -> String {
        public_key_text(&self.public_key())
    }

    /// The `v1a,<base64>` signature of one message.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &str) -> String {
        use ed25519_dalek::Signer as _;
        let signed = format!("{message_id}.{timestamp}.{body}");
        let signature = self.0.sign(signed.as_bytes());
        format!("v1a,{}", STANDARD.encode(signature.to_bytes()))
    }
}

/// `whpk_<base64>` of a stored public key.
pub fn public_key_text(public_key: &[u8]) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(public_key))
}

/// How an endpoint's messages are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// `v1`: HMAC-SHA256 with a shared `whsec_` secret.
    V1,
    /// `v1a`: ed25519; receivers hold only the `whpk_` public key.
    V1a,
}

impl SignatureScheme {
    /// As stored and as in the signature's prefix.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1a => "v1a",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "v1" => Some(Self::V1),
            "v1a" => Some(Self::V1a),
            _ => None,
        }
    }
}

/// One key that signs an endpoint's messages, of either scheme.
#[derive(Debug, Clone, PartialEq)]
pub enum Signer {
    V1(WebhookSecret),
    V1a(WebhookSigningKey),
}

impl Signer {
    /// A new key of `scheme`.
    pub fn generate(scheme: SignatureScheme) -> Self {
        match scheme {
            SignatureScheme::V1 => Self::V1(WebhookSecret::generate()),
            SignatureScheme::V1a => Self::V1a(WebhookSigningKey::generate()),
        }
    }

    /// From the stored scheme and bytes; `None` when they do not fit together.
    pub fn from_stored(scheme: &str, bytes: &[u8]) -> Option<Self> {
        match SignatureScheme::parse(scheme)? {
            SignatureScheme::V1 => Some(Self::V1(WebhookSecret::from_bytes(bytes.to_vec()))),
            SignatureScheme::V1a => WebhookSigningKey::from_seed(bytes).map(Self::V1a),
        }
    }

    pub fn scheme(&self) -> SignatureScheme {
        match self {
            Self::V1(_) => SignatureScheme::V1,
            Self::V1a(_) => SignatureScheme::V1a,
        }
    }

    /// The bytes to store in `secret` (the HMAC key, or the ed25519 seed).
    pub fn stored_bytes(&self) -> Vec<u8> {
        match self {
            Self::V1(secret) => secret.bytes().to_vec(),
            Self::V1a(key) => key.seed().to_vec(),
        }
    }

    /// The public key (`v1a` only).
    pub fn public_key(&self) -> Option<[u8; 32]> {
        match self {
            Self::V1(_) => None,
            Self::V1a(key) => Some(key.public_key()),
        }
    }

    /// What the endpoint's owner is given: the `whsec_` secret of a `v1` endpoint
    /// (shown once), or the `whpk_` public key of a `v1a` one (the secret key is
    /// never shown).
    pub fn shown_to_owner(&self) -> String {
        match self {
            Self::V1(secret) => secret.reveal(),
            Self::V1a(key) => key.public_key_text(),
        }
    }

    /// The secret half's text form (`whsec_…` or `whsk_…`), for tests and the
    /// operator's own tools; owners are given [`Signer::shown_to_owner`].
    pub fn reveal(&self) -> String {
        match self {
            Self::V1(secret) => secret.reveal(),
            Self::V1a(key) => key.reveal(),
        }
    }

    pub fn sign(&self, message_id: &str, timestamp: i64, body: &str) -> String {
        match self {
            Self::V1(secret) => secret.sign(message_id, timestamp, body),
            Self::V1a(key) => key.sign(message_id, timestamp, body),
        }
    }
}

/// The `webhook-signature` header: one signature per key, space-separated.
pub fn signature_header(
    signers: &[&Signer],
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> String {
    signers
        .iter()
        .map(|signer| signer.sign(message_id, timestamp, body))
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

    /// `v1a` known answer. The key is RFC 8032's first ed25519 test vector (its public
    /// key below is the RFC's); the signature of the spec's sample message was computed
    /// with an independent implementation (Python `cryptography` 48, OpenSSL's
    /// ed25519), not with this code.
    #[test]
    fn signs_v1a_known_answers() {
        let key =
            WebhookSigningKey::parse("whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=").unwrap();
        assert_eq!(
            key.public_key_text(),
            "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        );
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw=="
        );
        // The 64-byte form (seed and public key) is the same key; a mismatched one is not.
        let mut long = key.seed().to_vec();
        long.extend_from_slice(&key.public_key());
        assert_eq!(
            WebhookSigningKey::parse(&format!("whsk_{}", STANDARD.encode(&long))),
            Some(key.clone())
        );
        long[40] ^= 1;
        assert!(WebhookSigningKey::parse(&format!("whsk_{}", STANDARD.encode(&long))).is_none());
    }

    #[test]
    fn a_v1a_key_never_prints_its_secret_half() {
        let key = WebhookSigningKey::generate();
        let stored = Signer::from_stored("v1a", &key.seed()).unwrap();
        assert_eq!(stored, Signer::V1a(key.clone()));
        assert_eq!(stored.shown_to_owner(), key.public_key_text());
        let printed = format!("{stored:?}");
        assert!(!printed.contains(&STANDARD.encode(key.seed())), "{printed}");
        assert!(Signer::from_stored("v1a", &[0u8; 31]).is_none());
        assert!(Signer::from_stored("v2", &[0u8; 32]).is_none());
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
        let (old, new) = (
            Signer::V1(WebhookSecret::generate()),
            Signer::V1a(WebhookSigningKey::generate()),
        );
        let header = signature_header(&[&new, &old], "msg_1", 1, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [new.sign("msg_1", 1, "{}"), old.sign("msg_1", 1, "{}")]
        );
    }
}
