//! C2SP `signed-note` (c2sp.org/signed-note), Ed25519 signatures only: a UTF-8 text ending in a
//! newline, a blank line, then one line per signature, `— <key name> <base64(key id || sig)>`,
//! where the key id is the first four bytes of `SHA-256(key name || 0x0A || 0x01 || public key)`
//! and the signature is Ed25519 over the text. A verifier names the key it trusts; lines from
//! other keys are ignored, as the spec asks.
//!
//! Sizes are bounded before anything is parsed: a note of at most [`MAX_NOTE_BYTES`], at most
//! [`MAX_SIGNATURES`] signature lines.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::AuditError;
use crate::keys::{PublicKey, SigningKey};

/// A checkpoint is a few hundred bytes; a note far larger is not one of ours.
pub const MAX_NOTE_BYTES: usize = 8 * 1024;
/// Signature lines a note may carry (the vault's, and witnesses' one day).
pub const MAX_SIGNATURES: usize = 16;
/// The signature type byte of Ed25519 in signed-note.
const ED25519_TYPE: u8 = 0x01;
const DASH: &str = "\u{2014} ";

/// The key id the note format gives an Ed25519 key under `name`.
pub fn key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ED25519_TYPE]);
    ctx.update(key.as_bytes());
    ctx.finish().as_ref()[..4].try_into().expect("4 bytes")
}

/// A key name is non-empty, has no whitespace and no `+` (the verifier-key syntax uses it).
pub fn check_key_name(name: &str) -> Result<(), AuditError> {
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
        return Err(AuditError::Malformed { what: "note key name", reason: format!("`{name}`: must be 1-255 characters, no spaces or `+`") });
    }
    Ok(())
}

/// The text signed by `key` under `name`: `text` (ending in a newline), a blank line, the line.
pub fn sign(text: &str, name: &str, key: &SigningKey) -> Result<String, AuditError> {
    check_text(text)?;
    check_key_name(name)?;
    let mut blob = key_id(name, &key.public_key()).to_vec();
    blob.extend_from_slice(&key.sign(text.as_bytes()));
    Ok(format!("{text}\n{DASH}{name} {}\n", BASE64.encode(blob)))
}

/// A signed note, checked for shape (not yet for any signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    /// (key name, key id, signature) for every signature line.
    pub signatures: Vec<(String, [u8; 4], Vec<u8>)>,
}

fn check_text(text: &str) -> Result<(), AuditError> {
    if !text.ends_with('\n') || text.contains("\n\n") {
        return Err(AuditError::Malformed { what: "note", reason: "the text must end in a newline and hold no blank line".into() });
    }
    Ok(())
}

impl Note {
    /// Parses a signed note: size and line count bounded first, then the split at the last blank
    /// line, then each signature line.
    pub fn parse(bytes: &[u8]) -> Result<Note, AuditError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(AuditError::TooLarge { what: "signed note", size: bytes.len(), limit: MAX_NOTE_BYTES });
        }
        let all = std::str::from_utf8(bytes).map_err(|_| AuditError::Malformed { what: "signed note", reason: "not UTF-8".into() })?;
        let (text, signatures) = all.rsplit_once("\n\n").ok_or_else(|| AuditError::Malformed { what: "signed note", reason: "no blank line before the signatures".into() })?;
        let text = format!("{text}\n");
        check_text(&text)?;
        if !signatures.ends_with('\n') {
            return Err(AuditError::Malformed { what: "signed note", reason: "the last signature line does not end in a newline".into() });
        }
        let lines: Vec<&str> = signatures[..signatures.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(AuditError::TooLarge { what: "signature lines of a note", size: lines.len(), limit: MAX_SIGNATURES });
        }
        let mut parsed = Vec::with_capacity(lines.len());
        for line in lines {
            let rest = line.strip_prefix(DASH).ok_or_else(|| AuditError::Malformed { what: "note signature line", reason: format!("`{line}` does not start with `— `") })?;
            let (name, blob) = rest.split_once(' ').ok_or_else(|| AuditError::Malformed { what: "note signature line", reason: "no space between the key name and the signature".into() })?;
            check_key_name(name)?;
            let blob = BASE64.decode(blob).map_err(|e| AuditError::Malformed { what: "note signature", reason: format!("base64: {e}") })?;
            if blob.len() < 5 {
                return Err(AuditError::Malformed { what: "note signature", reason: format!("{} bytes, too short for a key id and a signature", blob.len()) });
            }
            let id: [u8; 4] = blob[..4].try_into().expect("4 bytes");
            parsed.push((name.to_string(), id, blob[4..].to_vec()));
        }
        if parsed.is_empty() {
            return Err(AuditError::Malformed { what: "signed note", reason: "no signature line".into() });
        }
        Ok(Note { text, signatures: parsed })
    }

    /// Checks that `key` under `name` signed this note (other signatures are ignored).
    pub fn verify(&self, name: &str, key: &PublicKey) -> Result<(), AuditError> {
        let id = key_id(name, key);
        let ours: Vec<&(String, [u8; 4], Vec<u8>)> = self.signatures.iter().filter(|(n, i, _)| n == name && *i == id).collect();
        if ours.is_empty() {
            return Err(AuditError::BadSignature { key: format!("{name} (no signature by this key)") });
        }
        if ours.iter().any(|(_, _, sig)| key.verify(self.text.as_bytes(), sig)) {
            Ok(())
        } else {
            Err(AuditError::BadSignature { key: name.to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of golang.org/x/mod/sumdb/note, where signed notes come from.
    #[test]
    fn the_go_note_packages_example_verifies() {
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let mut parts = vkey.splitn(3, '+');
        let (name, id, key) = (parts.next().unwrap(), parts.next().unwrap(), BASE64.decode(parts.next().unwrap()).unwrap());
        assert_eq!(key[0], ED25519_TYPE);
        let key = PublicKey::from_bytes(key[1..].try_into().unwrap());
        assert_eq!(key_id(name, &key).iter().map(|b| format!("{b:02x}")).collect::<String>(), id);
        let note = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let parsed = Note::parse(note.as_bytes()).unwrap();
        parsed.verify(name, &key).unwrap();
        // One changed letter of the text, and the signature is refused.
        let altered = Note::parse(note.replace("answer", "Answer").as_bytes()).unwrap();
        assert!(matches!(altered.verify(name, &key), Err(AuditError::BadSignature { .. })));
    }

    #[test]
    fn a_note_signed_here_verifies_and_every_flaw_is_refused_by_name() {
        let key = SigningKey::from_pkcs8(ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref()).unwrap();
        let signed = sign("vault.example/log\n3\nAAAA\n", "vault.example/log", &key).unwrap();
        let note = Note::parse(signed.as_bytes()).unwrap();
        assert_eq!(note.text, "vault.example/log\n3\nAAAA\n");
        note.verify("vault.example/log", &key.public_key()).unwrap();
        let other = SigningKey::from_pkcs8(ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref()).unwrap();
        assert!(note.verify("vault.example/log", &other.public_key()).unwrap_err().to_string().contains("no signature by this key"));
        assert!(note.verify("another-name", &key.public_key()).is_err());
        assert!(matches!(Note::parse(&vec![b'a'; MAX_NOTE_BYTES + 1]), Err(AuditError::TooLarge { .. })));
        assert!(Note::parse(b"text without signatures\n").is_err());
        assert!(Note::parse(signed.trim_end().as_bytes()).is_err());
        assert!(Note::parse(signed.replace('\u{2014}', "-").as_bytes()).is_err());
        let many = format!("{}{}", signed, signed.rsplit_once("\n\n").unwrap().1.repeat(MAX_SIGNATURES));
        assert!(matches!(Note::parse(many.as_bytes()), Err(AuditError::TooLarge { .. })), "{many}");
        assert!(sign("no newline", "n", &key).is_err());
        assert!(sign("text\n", "has space", &key).is_err());
    }
}
