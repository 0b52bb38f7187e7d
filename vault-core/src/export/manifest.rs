//! The export manifest: the last file the vault writes into an export, signed by the vault key.
//! It says which vault made the export, for which order, onto which medium, for which
//! recipients; which snapshots it holds; the audit log's checkpoint at that moment; and every
//! file of the export by path, size and SHA-256 of the bytes on the medium. So anyone holding
//! the pinned vault key can check an export whole without the recipients' keys (the vault does
//! when a medium comes back), and a reader with a key can decrypt what the hashes vouch for.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::canonical::check_identifier;
use crate::error::{invalid, Result};
use crate::export::{check_medium_id, check_recipients, MAX_EXPORT_SNAPSHOTS};
use crate::keys::{PublicKey, SignedDoc, SigningKey};
use crate::units::Timestamp;

/// Exports live in this directory at the top of the medium, one directory each, named by id.
pub const EXPORTS_DIR: &str = "vault-exports";
/// In an export's directory: the signed manifest, written last. An export without it is
/// unfinished (the medium was pulled, or the vault stopped) and is not an export.
pub const MANIFEST_FILE: &str = "export.json";
/// An export being written is `vault-exports/.<id>.partial`, renamed to `<id>` when done.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Files whose bytes are `age`-encrypted end with this.
pub const ENCRYPTED_SUFFIX: &str = ".age";
pub const FORMAT: u32 = 1;
/// The manifest file is read bounded to this.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;
/// Files one export holds: packs and their indexes, three per snapshot, the log's tiles.
pub const MAX_EXPORT_FILES: usize = 500_000;
/// Finished exports one medium may hold (rotations keep at most 16; orders add theirs): a
/// medium with more is not one this vault wrote, and is not read.
pub const MAX_EXPORTS_PER_MEDIUM: usize = 64;
/// A path in an export: short, relative, plain.
pub const MAX_PATH_BYTES: usize = 200;
const MAX_PATH_DEPTH: usize = 8;
const CONTEXT: &str = "airgap-vault/export/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportManifest {
    pub format: u32,
    pub vault_id: String,
    pub vault_key: String,
    pub export_id: String,
    pub medium_id: String,
    /// Hex SHA-256 of the export order's payload.
    pub order: String,
    pub created_at: String,
    pub recipients: Vec<String>,
    pub snapshots: Vec<ExportedSnapshot>,
    /// Snapshots the order named that were no longer sealed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// The audit log's signed checkpoint (C2SP signed note) as the export was closed.
    pub checkpoint: String,
    /// Every other file of the export, sorted by path.
    pub files: Vec<ExportedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedSnapshot {
    pub id: String,
    pub pusher: String,
    pub dataset: String,
    pub received_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedFile {
    /// Relative to the export's directory, `/`-separated.
    pub path: String,
    pub bytes: u64,
    /// Hex SHA-256 of the bytes on the medium (the ciphertext, for an encrypted file).
    pub sha256: String,
}

impl ExportedFile {
    /// Whether the file is `age`-encrypted (its name says so).
    pub fn encrypted(&self) -> bool {
        self.path.ends_with(ENCRYPTED_SUFFIX)
    }
}

/// A path an export may hold: relative, at most [`MAX_PATH_DEPTH`] components of letters,
/// digits, `-`, `_` and `.`, none empty or starting with `.`: it stays inside the export's
/// directory on any filesystem, and names nothing hidden.
pub fn check_path(field: &str, path: &str) -> Result<()> {
    let components: Vec<&str> = path.split('/').collect();
    let plain = |c: &str| !c.is_empty() && !c.starts_with('.') && c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if path.len() > MAX_PATH_BYTES || components.len() > MAX_PATH_DEPTH || !components.iter().all(|c| plain(c)) {
        return Err(invalid(field, format!("`{}` is not a plain relative path of at most {MAX_PATH_BYTES} bytes", path.escape_default())));
    }
    Ok(())
}

impl ExportManifest {
    pub fn sign(&self, key: &SigningKey) -> SignedDoc {
        SignedDoc::sign(self, key, CONTEXT)
    }

    /// The signature under the pinned vault key, then every field.
    pub fn verify(signed: &SignedDoc, vault_key: &PublicKey) -> Result<ExportManifest> {
        let manifest: ExportManifest = signed.verify(vault_key, CONTEXT, "export manifest")?;
        if manifest.vault_key != vault_key.to_string() {
            return Err(invalid("vault_key", format!("the manifest names {}, it was verified under {vault_key}", manifest.vault_key)));
        }
        manifest.check()?;
        Ok(manifest)
    }

    pub fn check(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(invalid("format", format!("export format {}, this reader knows {FORMAT}", self.format)));
        }
        check_identifier("vault_id", &self.vault_id)?;
        check_identifier("export_id", &self.export_id)?;
        check_medium_id("medium_id", &self.medium_id)?;
        if self.order.len() != 64 || !self.order.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid("order", "not a hex SHA-256"));
        }
        Timestamp::parse(&self.created_at).map_err(|reason| invalid("created_at", reason))?;
        check_recipients("recipients", &self.recipients)?;
        if self.snapshots.len() > MAX_EXPORT_SNAPSHOTS || self.missing.len() > crate::policy::orders::MAX_ORDER_SNAPSHOTS {
            return Err(invalid("snapshots", format!("{} snapshots and {} missing, at most {MAX_EXPORT_SNAPSHOTS}", self.snapshots.len(), self.missing.len())));
        }
        for (i, snapshot) in self.snapshots.iter().enumerate() {
            check_identifier(&format!("snapshots[{i}].id"), &snapshot.id)?;
            check_identifier(&format!("snapshots[{i}].pusher"), &snapshot.pusher)?;
            check_identifier(&format!("snapshots[{i}].dataset"), &snapshot.dataset)?;
            Timestamp::parse(&snapshot.received_at).map_err(|reason| invalid(format!("snapshots[{i}].received_at"), reason))?;
        }
        let ids: BTreeSet<&str> = self.snapshots.iter().map(|s| s.id.as_str()).collect();
        if ids.len() != self.snapshots.len() {
            return Err(invalid("snapshots", "a snapshot is listed twice"));
        }
        if self.files.len() > MAX_EXPORT_FILES {
            return Err(invalid("files", format!("{} files, at most {MAX_EXPORT_FILES}", self.files.len())));
        }
        for (i, file) in self.files.iter().enumerate() {
            check_path(&format!("files[{i}].path"), &file.path)?;
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(invalid(format!("files[{i}].sha256"), "not a hex SHA-256"));
            }
            if i > 0 && self.files[i - 1].path >= file.path {
                return Err(invalid(format!("files[{i}].path"), format!("`{}` is out of order or listed twice (paths are sorted and unique)", file.path)));
            }
            if file.path == MANIFEST_FILE {
                return Err(invalid(format!("files[{i}].path"), "the manifest does not list itself"));
            }
        }
        Ok(())
    }

    /// The export's files, totalled.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).fold(0, u64::saturating_add)
    }
}
