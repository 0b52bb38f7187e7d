//! A removable medium: what `vaultctl media init` writes at the top of its filesystem (the
//! label: an id and a name), and the seal the vault adds the first time it writes there (its
//! signature over that label and its own vault id). An export order names a medium by id; the
//! vault writes to a medium only if its label is well formed and it is either unsealed (first
//! use) or sealed by this vault, so a disk made to look like another vault's medium, or one of
//! ours with its label changed, is refused.

use serde::{Deserialize, Serialize};

use crate::canonical::{self, check_identifier};
use crate::error::{invalid, Result};
use crate::export::check_medium_id;
use crate::keys::{PublicKey, SignedDoc, SigningKey};
use crate::units::Timestamp;

/// At the top of the medium's filesystem: the label.
pub const LABEL_FILE: &str = "vault-medium.json";
/// Beside it: the vault's seal (a [`SignedDoc`]).
pub const SEAL_FILE: &str = "vault-medium.seal";
/// Both files are read bounded to this.
pub const MAX_MEDIUM_FILE_BYTES: usize = 4096;
pub const LABEL_FORMAT: &str = "airgap-vault-medium/v1";
const SEAL_CONTEXT: &str = "airgap-vault/medium-seal/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediumLabel {
    pub format: String,
    pub medium_id: String,
    /// What people call it (printed on the cartridge): an identifier.
    pub name: String,
}

impl MediumLabel {
    pub fn new(medium_id: &str, name: &str) -> Result<MediumLabel> {
        let label = MediumLabel { format: LABEL_FORMAT.into(), medium_id: medium_id.into(), name: name.into() };
        label.check()?;
        Ok(label)
    }

    fn check(&self) -> Result<()> {
        if self.format != LABEL_FORMAT {
            return Err(invalid("format", format!("`{}`, this vault reads `{LABEL_FORMAT}`", self.format.escape_default())));
        }
        check_medium_id("medium_id", &self.medium_id)?;
        check_identifier("name", &self.name)
    }

    /// The label file's bytes: canonical JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = canonical::encode(self);
        bytes.push(b'\n');
        bytes
    }

    /// Strict: bounded, canonical, every field checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<MediumLabel> {
        canonical::check_size(bytes.len(), MAX_MEDIUM_FILE_BYTES, "medium label")?;
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let label: MediumLabel = canonical::decode(body, "medium label")?;
        canonical::require_canonical(body, &label, "medium label")?;
        label.check()?;
        Ok(label)
    }
}

/// What the vault signs onto a medium it adopts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediumSeal {
    pub vault_id: String,
    pub medium_id: String,
    pub name: String,
    pub sealed_at: String,
}

impl MediumSeal {
    pub fn sign(vault_id: &str, label: &MediumLabel, at: Timestamp, key: &SigningKey) -> SignedDoc {
        SignedDoc::sign(&MediumSeal { vault_id: vault_id.into(), medium_id: label.medium_id.clone(), name: label.name.clone(), sealed_at: at.to_string() }, key, SEAL_CONTEXT)
    }
}

/// Whose medium this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// No seal yet: the vault may adopt it (seal it) on first use.
    Unsealed,
    /// Sealed by this vault, for this label.
    Ours(MediumSeal),
}

/// Judges a medium's seal file (absent: `None`) against its label and this vault. Refuses a
/// seal that does not verify under the vault key (another vault's, or forged), or one that
/// names another vault or another label (a label edited after sealing).
pub fn adoption(label: &MediumLabel, seal_file: Option<&[u8]>, vault_id: &str, vault_key: &PublicKey) -> Result<Adoption> {
    let Some(bytes) = seal_file else { return Ok(Adoption::Unsealed) };
    let signed = SignedDoc::from_file_bytes(bytes, MAX_MEDIUM_FILE_BYTES, "medium seal")?;
    let seal: MediumSeal = signed.verify(vault_key, SEAL_CONTEXT, "medium seal")?;
    if seal.vault_id != vault_id {
        return Err(invalid("medium seal", format!("it names vault `{}`, this is `{vault_id}`", seal.vault_id)));
    }
    if seal.medium_id != label.medium_id || seal.name != label.name {
        return Err(invalid("medium seal", format!("it was made for medium {} ({}), the label now says {} ({}): the label was changed", seal.medium_id, seal.name, label.medium_id, label.name)));
    }
    Ok(Adoption::Ours(seal))
}
