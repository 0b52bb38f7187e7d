//! Ed25519 keys as the policy and the trust root spell them (`ed25519:<base64>`), their
//! key ids, and signature checks. All cryptography is ring's; this module only names things.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};

use crate::error::{Error, Result};

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;
const KEY_PREFIX: &str = "ed25519:";

/// An Ed25519 public key. Equality is on the 32 key bytes, which is what thresholds count.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Parses `ed25519:<base64 of 32 bytes>`; `field` names the place for the error.
    pub fn parse(text: &str, field: &str) -> Result<PublicKey> {
        let encoded = text.trim().strip_prefix(KEY_PREFIX).ok_or_else(|| Error::InvalidField { field: field.to_string(), reason: format!("key must start with `{KEY_PREFIX}`") })?;
        let bytes = BASE64.decode(encoded).map_err(|e| Error::InvalidField { field: field.to_string(), reason: format!("key is not valid base64 ({e})") })?;
        let bytes: [u8; PUBLIC_KEY_LEN] =
            bytes.try_into().map_err(|b: Vec<u8>| Error::InvalidField { field: field.to_string(), reason: format!("key is {} bytes, an Ed25519 public key is {PUBLIC_KEY_LEN}", b.len()) })?;
        Ok(PublicKey(bytes))
    }

    /// The key id: lowercase hex SHA-256 of the raw key bytes. Derived, never chosen, so one
    /// key cannot hide behind two ids.
    pub fn key_id(&self) -> String {
        hex(ring::digest::digest(&ring::digest::SHA256, &self.0).as_ref())
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0).verify(message, sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", BASE64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A secret Ed25519 key loaded from its PKCS#8 document. Signing is deterministic and pure;
/// generating a key needs randomness and so lives in the CLI.
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map(SigningKey).map_err(|e| Error::Malformed { what: "secret key", reason: e.to_string() })
    }

    pub fn public_key(&self) -> PublicKey {
        let bytes: [u8; PUBLIC_KEY_LEN] = self.0.public_key().as_ref().try_into().expect("ring Ed25519 public keys are 32 bytes");
        PublicKey(bytes)
    }

    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let sig = self.0.sign(message);
        sig.as_ref().try_into().expect("ring Ed25519 signatures are 64 bytes")
    }
}

/// Lowercase hex, for digests and key ids.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The byte two hex digits (either case) spell; `None` for anything else, signs included
/// (`u8::from_str_radix` would take `+f`).
pub fn hex_byte(pair: &str) -> Option<u8> {
    let digit = |c: u8| char::from(c).to_digit(16);
    match pair.as_bytes() {
        [high, low] => u8::try_from(digit(*high)? << 4 | digit(*low)?).ok(),
        _ => None,
    }
}

/// `N` bytes from exactly `2 * N` hex digits.
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = hex_byte(text.get(2 * i..2 * i + 2)?)?;
    }
    Some(out)
}

/// SHA-256 of `context || 0x00 || data`: every hash the vault signs or compares is bound to
/// what it is for, so bytes signed as one thing can never be replayed as another.
pub fn domain_hash(context: &str, data: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(context.as_bytes());
    ctx.update(&[0]);
    ctx.update(data);
    ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A document the vault signs (a drill report, an export's manifest, a medium's seal): its
/// canonical JSON and the signature over it under `context`. On disk it is one JSON object,
/// `{"body": "<the canonical JSON as a string>", "signature": "<base64>"}`, so the exact signed
/// bytes survive any reader.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDoc {
    pub body: String,
    pub signature: String,
}

impl SignedDoc {
    pub fn sign<T: serde::Serialize>(doc: &T, key: &SigningKey, context: &str) -> SignedDoc {
        let body = crate::canonical::encode(doc);
        let signature = BASE64.encode(key.sign(&domain_hash(context, &body)));
        SignedDoc { body: String::from_utf8(body).expect("canonical JSON is UTF-8"), signature }
    }

    /// The signature checked against `key` first, then the body decoded strictly and required
    /// to be canonical.
    pub fn verify<T: serde::Serialize + serde::de::DeserializeOwned>(&self, key: &PublicKey, context: &str, what: &'static str) -> Result<T> {
        let signature = BASE64.decode(&self.signature).map_err(|_| Error::Malformed { what, reason: "its signature is not base64".into() })?;
        if !key.verify(&domain_hash(context, self.body.as_bytes()), &signature) {
            return Err(Error::InvalidField { field: what.to_string(), reason: format!("its signature does not verify against {key}") });
        }
        let doc: T = crate::canonical::decode(self.body.as_bytes(), what)?;
        crate::canonical::require_canonical(self.body.as_bytes(), &doc, what)?;
        Ok(doc)
    }

    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("signed documents serialize");
        out.push(b'\n');
        out
    }

    /// Bounded before it is parsed.
    pub fn from_file_bytes(bytes: &[u8], limit: usize, what: &'static str) -> Result<SignedDoc> {
        crate::canonical::check_size(bytes.len(), limit, what)?;
        crate::canonical::decode(bytes, what)
    }
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Deterministic keys for tests: PKCS#8 built from fixed seeds, no RNG needed.
    use super::SigningKey;

    /// The PKCS#8 v1 prefix for an Ed25519 private key, followed by the 32-byte seed.
    const PKCS8_V1_PREFIX: [u8; 16] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

    pub fn key(seed: u8) -> SigningKey {
        let mut der = PKCS8_V1_PREFIX.to_vec();
        der.extend_from_slice(&[seed; 32]);
        SigningKey::from_pkcs8(&der).expect("valid test key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn hex_is_lowercase_two_digits_a_byte_and_unhex_reverses_it(bytes in proptest::array::uniform32(proptest::num::u8::ANY)) {
            let text = hex(&bytes);
            let per_byte: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            proptest::prop_assert_eq!(&text, &per_byte);
            proptest::prop_assert_eq!(unhex::<32>(&text), Some(bytes));
            proptest::prop_assert_eq!(unhex::<32>(&text.to_uppercase()), Some(bytes));
        }
    }

    #[test]
    fn unhex_takes_exactly_its_digits_and_nothing_else() {
        assert_eq!(unhex::<2>("0aFf"), Some([0x0a, 0xff]));
        for bad in ["0a", "0aff00", "+a00", "0a+f", "-1ff", " aff", "0g00", "0aé"] {
            assert_eq!(unhex::<2>(bad), None, "{bad}");
        }
        assert_eq!(hex_byte("+f"), None);
        assert_eq!(hex_byte("f"), None);
    }

    #[test]
    fn parse_and_display_round_trip() {
        let key = test_keys::key(1).public_key();
        assert_eq!(PublicKey::parse(&key.to_string(), "k").unwrap(), key);
    }

    #[test]
    fn parse_refuses_with_reason() {
        let err = |s: &str| PublicKey::parse(s, "pusher[0].key").unwrap_err().to_string();
        assert!(err("rsa:AAAA").contains("must start with `ed25519:`"));
        assert!(err("ed25519:!!!").contains("not valid base64"));
        assert!(err("ed25519:AAAA").contains("is 3 bytes"));
        assert!(err("ed25519:AAAA").contains("pusher[0].key"));
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let (a, b) = (test_keys::key(1), test_keys::key(2));
        let sig = a.sign(b"hello");
        assert!(a.public_key().verify(b"hello", &sig));
        assert!(!a.public_key().verify(b"hellO", &sig));
        assert!(!b.public_key().verify(b"hello", &sig));
    }

    #[test]
    fn domain_hash_separates_contexts() {
        assert_ne!(domain_hash("a", b"bc"), domain_hash("ab", b"c"));
    }
}
