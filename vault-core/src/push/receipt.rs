//! The receipt the vault signs when it seals a snapshot: proof for the pusher (and its
//! auditors) of exactly what the vault holds and until when. Times are the vault's; the
//! time the pusher claimed is kept only as information.

use serde::{Deserialize, Serialize};

use crate::audit::witness::LogEvidence;
use crate::canonical;
use crate::error::PushError;
use crate::error::{invalid, Error, Result};
use crate::keys::{domain_hash, PublicKey, SigningKey, SIGNATURE_LEN};
use crate::push::signals::Signal;
use crate::units::Timestamp;

const RECEIPT_CONTEXT: &str = "airgap-vault/receipt/v1";
pub const MAX_RECEIPT_BYTES: usize = 16 * 1024;

/// `20261125T101500Z`: the receive time in a snapshot id.
const SNAPSHOT_ID_TIME_CHARS: usize = 16;
/// Hex of 4 random bytes, so two snapshots of one dataset in one second differ.
const SNAPSHOT_ID_SUFFIX_CHARS: usize = 8;
/// The longest dataset name whose snapshot id still fits an identifier's 64 characters.
pub const MAX_DATASET_BYTES: usize = 64 - SNAPSHOT_ID_TIME_CHARS - SNAPSHOT_ID_SUFFIX_CHARS - 2;

/// `{received_at}-{dataset}-{suffix}`, e.g. `20261125T101500Z-db-1a2b3c4d`: sorts by receive
/// time, safe in a file name and on a console line.
pub fn snapshot_id(received_at: Timestamp, dataset: &str, suffix: [u8; 4]) -> Result<String> {
    let time: String = received_at.to_string().chars().filter(|c| *c != '-' && *c != ':').collect();
    let id = format!("{time}-{dataset}-{}", crate::keys::hex(&suffix));
    canonical::check_identifier("snapshot id", &id)?;
    Ok(id)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub vault_id: String,
    pub vault_key: PublicKey,
    pub policy_version: u64,
    pub snapshot_id: String,
    pub dataset: String,
    pub pusher: String,
    /// Hex SHA-256 of the manifest bytes as sealed.
    pub manifest_sha256: String,
    pub files: u64,
    /// Sum of file sizes in the manifest.
    pub logical_bytes: u64,
    pub chunks_total: u64,
    /// Chunks this push sent that the vault did not already have, and their bytes.
    pub chunks_new: u64,
    pub bytes_new: u64,
    /// The vault's clock when it sealed.
    pub received_at: Timestamp,
    /// received_at + the pusher's retention: the vault keeps the snapshot at least until then.
    pub retain_until: Timestamp,
    /// What the pusher said the time was; informational only.
    pub client_time: i64,
    /// The ransomware signals judged this snapshot suspect (it is sealed all the same, and
    /// its dataset's earlier snapshots are held until a quorum releases them).
    pub suspect: bool,
    /// Every signal that fired, suspect or not (see [`crate::push::signals`]).
    pub signals: Vec<Signal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptDoc {
    vault_id: String,
    vault_key: String,
    policy_version: u64,
    snapshot_id: String,
    dataset: String,
    pusher: String,
    manifest_sha256: String,
    files: u64,
    logical_bytes: u64,
    chunks_total: u64,
    chunks_new: u64,
    bytes_new: u64,
    received_at: String,
    retain_until: String,
    client_time: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    suspect: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    signals: Vec<Signal>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Signals a receipt may list: one of each kind at most.
const MAX_RECEIPT_SIGNALS: usize = 16;

impl Receipt {
    fn to_doc(&self) -> ReceiptDoc {
        ReceiptDoc {
            vault_id: self.vault_id.clone(),
            vault_key: self.vault_key.to_string(),
            policy_version: self.policy_version,
            snapshot_id: self.snapshot_id.clone(),
            dataset: self.dataset.clone(),
            pusher: self.pusher.clone(),
            manifest_sha256: self.manifest_sha256.clone(),
            files: self.files,
            logical_bytes: self.logical_bytes,
            chunks_total: self.chunks_total,
            chunks_new: self.chunks_new,
            bytes_new: self.bytes_new,
            received_at: self.received_at.to_string(),
            retain_until: self.retain_until.to_string(),
            client_time: self.client_time,
            suspect: self.suspect,
            signals: self.signals.clone(),
        }
    }

    /// The canonical bytes that are signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical::encode(&self.to_doc())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Receipt> {
        canonical::check_size(bytes.len(), MAX_RECEIPT_BYTES, "receipt")?;
        let doc: ReceiptDoc = canonical::decode(bytes, "receipt")?;
        let time = |field: &str, text: &str| Timestamp::parse(text).map_err(|reason| invalid(field, reason));
        let receipt = Receipt {
            vault_key: PublicKey::parse(&doc.vault_key, "vault_key")?,
            received_at: time("received_at", &doc.received_at)?,
            retain_until: time("retain_until", &doc.retain_until)?,
            vault_id: doc.vault_id,
            policy_version: doc.policy_version,
            snapshot_id: doc.snapshot_id,
            dataset: doc.dataset,
            pusher: doc.pusher,
            manifest_sha256: doc.manifest_sha256,
            files: doc.files,
            logical_bytes: doc.logical_bytes,
            chunks_total: doc.chunks_total,
            chunks_new: doc.chunks_new,
            bytes_new: doc.bytes_new,
            client_time: doc.client_time,
            suspect: doc.suspect,
            signals: doc.signals,
        };
        if receipt.signals.len() > MAX_RECEIPT_SIGNALS {
            return Err(invalid("signals", format!("{} signals, at most {MAX_RECEIPT_SIGNALS}", receipt.signals.len())));
        }
        canonical::require_canonical(bytes, &receipt.to_doc(), "receipt")?;
        Ok(receipt)
    }

    /// Signs with the vault key; returns (body, signature) as the wire carries them.
    pub fn sign(&self, vault_key: &SigningKey) -> (Vec<u8>, [u8; SIGNATURE_LEN]) {
        let body = self.to_bytes();
        let signature = vault_key.sign(&domain_hash(RECEIPT_CONTEXT, &body));
        (body, signature)
    }

    /// Checks a receipt against the vault key the pusher pinned, then decodes it.
    pub fn verify(body: &[u8], signature: &[u8], pinned_vault_key: &PublicKey) -> Result<Receipt> {
        canonical::check_size(body.len(), MAX_RECEIPT_BYTES, "receipt")?;
        if !pinned_vault_key.verify(&domain_hash(RECEIPT_CONTEXT, body), signature) {
            return Err(Error::Push(PushError::BadReceiptSignature { vault_key: pinned_vault_key.to_string() }));
        }
        let receipt = Receipt::from_bytes(body)?;
        if receipt.vault_key != *pinned_vault_key {
            return Err(Error::Push(PushError::BadReceiptSignature { vault_key: pinned_vault_key.to_string() }));
        }
        Ok(receipt)
    }
}

/// A receipt as kept on disk (in the vault's snapshot and in the pusher's receipts folder):
/// the exact signed bytes and the signature, so it can be re-verified at any time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    pub body: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
    /// The audit log's checkpoint and proof that came with it (a pusher's copy only: the vault's
    /// own copy is written before they exist). Signed on its own, so outside the receipt's body.
    pub audit: Option<LogEvidence>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedReceiptDoc {
    receipt: String,
    signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit: Option<LogEvidence>,
}

impl SignedReceipt {
    pub fn to_file_bytes(&self) -> Vec<u8> {
        use base64::Engine as _;
        let doc =
            SignedReceiptDoc { receipt: String::from_utf8_lossy(&self.body).into_owned(), signature: base64::engine::general_purpose::STANDARD.encode(self.signature), audit: self.audit.clone() };
        let mut out = serde_json::to_vec_pretty(&doc).expect("receipt files serialize");
        out.push(b'\n');
        out
    }

    pub fn from_file_bytes(bytes: &[u8]) -> Result<SignedReceipt> {
        use base64::Engine as _;
        canonical::check_size(bytes.len(), 2 * MAX_RECEIPT_BYTES, "receipt file")?;
        let doc: SignedReceiptDoc = canonical::decode(bytes, "receipt file")?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&doc.signature)
            .ok()
            .and_then(|s| <[u8; SIGNATURE_LEN]>::try_from(s).ok())
            .ok_or_else(|| invalid("signature", "not a base64 Ed25519 signature"))?;
        Ok(SignedReceipt { body: doc.receipt.into_bytes(), signature, audit: doc.audit })
    }

    /// Verifies against a vault key (the one the pusher pinned, or the one in the receipt).
    pub fn verify(&self, vault_key: &PublicKey) -> Result<Receipt> {
        Receipt::verify(&self.body, &self.signature, vault_key)
    }

    /// The receipt's own claim of which key signed it, checked against that key.
    pub fn verify_self_consistent(&self) -> Result<Receipt> {
        let claimed = Receipt::from_bytes(&self.body)?;
        self.verify(&claimed.vault_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_keys::key;

    pub fn example(vault: &SigningKey) -> Receipt {
        Receipt {
            vault_id: "vault-01".into(),
            vault_key: vault.public_key(),
            policy_version: 7,
            snapshot_id: "20261125T101500Z-db-0123abcd".into(),
            dataset: "db".into(),
            pusher: "db-backup".into(),
            manifest_sha256: "00".repeat(32),
            files: 3,
            logical_bytes: 1000,
            chunks_total: 4,
            chunks_new: 2,
            bytes_new: 500,
            received_at: Timestamp::parse("2026-11-25T10:15:00Z").unwrap(),
            retain_until: Timestamp::parse("2026-12-30T10:15:00Z").unwrap(),
            client_time: 0,
            suspect: false,
            signals: Vec::new(),
        }
    }

    #[test]
    fn signs_and_verifies_against_the_pinned_key_only() {
        let vault = key(40);
        let receipt = example(&vault);
        let (body, sig) = receipt.sign(&vault);
        assert_eq!(Receipt::verify(&body, &sig, &vault.public_key()).unwrap(), receipt);
        let err = Receipt::verify(&body, &sig, &key(41).public_key()).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::BadReceiptSignature { .. })), "{err}");
        let mut tampered = body.clone();
        let pos = tampered.iter().position(|b| *b == b'7').unwrap();
        tampered[pos] = b'8';
        assert!(Receipt::verify(&tampered, &sig, &vault.public_key()).is_err());
    }

    #[test]
    fn receipt_files_round_trip() {
        let vault = key(40);
        let (body, signature) = example(&vault).sign(&vault);
        let signed = SignedReceipt { body, signature, audit: None };
        let back = SignedReceipt::from_file_bytes(&signed.to_file_bytes()).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.verify_self_consistent().unwrap(), example(&vault));
    }
}
