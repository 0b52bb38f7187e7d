//! C2SP `tlog-checkpoint` (c2sp.org/tlog-checkpoint): the text a log signs to commit to its state,
//! `<origin>\n<tree size>\n<base64 root hash>\n` and optional extension lines, carried as the
//! text of a [`super::note`]. The vault's origin names the vault by its key, so no two vaults'
//! logs can be confused, and the note is signed under the same name.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::merkle::{self, Hash, Subtrees};
use super::note::{self, Note};
use super::AuditError;
use crate::keys::{PublicKey, SigningKey};

/// Extension lines a checkpoint may carry.
pub const MAX_EXTENSIONS: usize = 8;

/// A log's state: how many entries, and the root of their tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines (without their newlines), in order.
    pub extensions: Vec<String>,
}

/// The log origin (and note key name) of the vault whose key is `key`:
/// `airgap-vault/<the key's first 8 bytes in hex>`.
pub fn origin_of(key: &PublicKey) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    format!("airgap-vault/{}", digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Checkpoint {
    /// The root hash as the checkpoint writes it (base64).
    pub fn root_base64(&self) -> String {
        BASE64.encode(self.root)
    }

    /// The checkpoint text.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, self.root_base64());
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses checkpoint text (the note's text): origin, a decimal size without leading zeros,
    /// a base64 root of 32 bytes, then extension lines.
    pub fn from_text(text: &str) -> Result<Checkpoint, AuditError> {
        let bad = |reason: String| AuditError::Malformed { what: "checkpoint", reason };
        let body = text.strip_suffix('\n').ok_or_else(|| bad("does not end in a newline".into()))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or_else(|| bad("no origin line".into()))?;
        let size_line = lines.next().ok_or_else(|| bad("no tree size line".into()))?;
        if size_line.is_empty() || !size_line.bytes().all(|b| b.is_ascii_digit()) || (size_line.len() > 1 && size_line.starts_with('0')) {
            return Err(bad(format!("tree size `{size_line}` is not a decimal number without leading zeros")));
        }
        let size: u64 = size_line.parse().map_err(|_| bad(format!("tree size `{size_line}` does not fit 64 bits")))?;
        let root_line = lines.next().ok_or_else(|| bad("no root hash line".into()))?;
        let root: Hash = BASE64.decode(root_line).ok().and_then(|r| r.try_into().ok()).ok_or_else(|| bad(format!("root hash `{root_line}` is not 32 bytes of base64")))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.len() > MAX_EXTENSIONS || extensions.iter().any(String::is_empty) {
            return Err(bad(format!("{} extension lines (at most {MAX_EXTENSIONS}, none empty)", extensions.len())));
        }
        Ok(Checkpoint { origin: origin.to_string(), size, root, extensions })
    }

    /// This checkpoint as a note signed by `key` under the checkpoint's origin.
    pub fn sign(&self, key: &SigningKey) -> Result<String, AuditError> {
        note::sign(&self.to_text(), &self.origin, key)
    }

    /// Parses a signed checkpoint and checks the signature of `key` under its origin, which must
    /// be the origin of that key.
    pub fn open(signed: &[u8], key: &PublicKey) -> Result<Checkpoint, AuditError> {
        let note = Note::parse(signed)?;
        let checkpoint = Checkpoint::from_text(&note.text)?;
        let expected = origin_of(key);
        if checkpoint.origin != expected {
            return Err(AuditError::Malformed { what: "checkpoint", reason: format!("origin `{}` is not this vault's log (`{expected}`)", checkpoint.origin) });
        }
        note.verify(&checkpoint.origin, key)?;
        Ok(checkpoint)
    }

    /// The checkpoint of a log of `size` entries.
    pub fn of(origin: &str, size: u64, source: &dyn Subtrees) -> Result<Checkpoint, AuditError> {
        Ok(Checkpoint { origin: origin.to_string(), size, root: merkle::tree_hash(size, source)?, extensions: Vec::new() })
    }

    /// Checks that `newer` extends this checkpoint, by `proof` (from [`merkle::consistency_proof`]).
    pub fn check_extended_by(&self, newer: &Checkpoint, proof: &[Hash]) -> Result<(), AuditError> {
        if self.origin != newer.origin {
            return Err(AuditError::Inconsistent(format!("checkpoints of two logs (`{}` and `{}`)", self.origin, newer.origin)));
        }
        merkle::verify_consistency(self.size, &self.root, newer.size, &newer.root, proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::{leaf_hash, Leaves};

    fn key() -> SigningKey {
        SigningKey::from_pkcs8(ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref()).unwrap()
    }

    /// The example of c2sp.org/tlog-checkpoint.
    #[test]
    fn the_specs_example_round_trips() {
        let text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let checkpoint = Checkpoint::from_text(text).unwrap();
        assert_eq!((checkpoint.origin.as_str(), checkpoint.size), ("example.com/behind-the-sofa", 20_852_163));
        assert_eq!(checkpoint.to_text(), text);
    }

    #[test]
    fn a_signed_checkpoint_opens_only_under_its_vaults_key_and_every_flaw_is_named() {
        let key = key();
        let log = Leaves((0..5u8).map(|i| leaf_hash(&[i])).collect());
        let origin = origin_of(&key.public_key());
        let checkpoint = Checkpoint::of(&origin, 5, &log).unwrap();
        let signed = checkpoint.sign(&key).unwrap();
        assert_eq!(Checkpoint::open(signed.as_bytes(), &key.public_key()).unwrap(), checkpoint);
        assert!(Checkpoint::open(signed.as_bytes(), &self::key().public_key()).unwrap_err().to_string().contains("not this vault's log"));
        for (text, why) in [
            ("o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "leading zeros"),
            ("o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "decimal"),
            ("o\n99999999999999999999\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "64 bits"),
            ("o\n1\nAAAA\n", "32 bytes"),
            ("o\n1\n", "root hash line"),
            ("\n1\nAAAA\n", "origin"),
            ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=", "newline"),
        ] {
            assert!(Checkpoint::from_text(text).unwrap_err().to_string().contains(why), "{text:?}: {why}");
        }
    }

    #[test]
    fn a_checkpoint_is_extended_only_by_a_consistent_one_of_the_same_log() {
        let log = Leaves((0..9u8).map(|i| leaf_hash(&[i])).collect());
        let old = Checkpoint::of("o", 4, &log).unwrap();
        let new = Checkpoint::of("o", 9, &log).unwrap();
        let proof = merkle::consistency_proof(4, 9, &log).unwrap();
        old.check_extended_by(&new, &proof).unwrap();
        let forked = Checkpoint::of("o", 9, &Leaves((0..9u8).map(|i| leaf_hash(&[i ^ u8::from(i == 7)])).collect())).unwrap();
        assert!(old.check_extended_by(&forked, &proof).unwrap_err().to_string().contains("audit log not consistent"));
        assert!(old.check_extended_by(&Checkpoint { origin: "p".into(), ..new.clone() }, &proof).is_err());
    }
}
