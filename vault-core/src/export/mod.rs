//! Exports: sealed snapshots copied onto a removable disk, encrypted to recipients, the one way
//! data leaves the vault without a network path ("nothing pulls back").
//!
//! The data flow, each step its own module:
//! - an **export order** ([`crate::policy::orders`], kind `export`) names snapshots, `age`
//!   recipients and a medium; the root's `export_threshold` of admins signs it;
//! - a **medium** ([`medium`]) is a disk `vaultctl media init` prepared: a GPT partition of
//!   [`crate::gpt::VAULT_EXPORT_TYPE`] holding one FAT filesystem with a [`medium::MediumLabel`]
//!   (its id); the vault seals it with its own signature the first time it writes to it;
//! - **selection** ([`selection`]) turns the order into snapshot ids against what is sealed;
//! - the vault writes the export (packs, indexes and manifests encrypted per file with `age`;
//!   receipts, the audit log and the last drill report as they are) and closes it with a signed
//!   **export manifest** ([`manifest`]) that names every file by size and SHA-256, so the export
//!   can be checked byte for byte without the recipients' keys, and decrypted with stock `age`;
//! - a **rotation** ([`rotation`]) in the policy names a set of media written in turn, each
//!   verified when it comes back before anything on it is replaced.

pub mod manifest;
pub mod medium;
pub mod rotation;
pub mod selection;

use crate::error::{invalid, Result};
use crate::policy::orders::ExportSpec;

/// A medium id: 16 random bytes, lowercase hex.
pub const MEDIUM_ID_HEX_CHARS: usize = 32;
/// Recipients one export is encrypted to.
pub const MAX_RECIPIENTS: usize = 16;
/// The most snapshots one export holds (an order selecting more is refused when carried out).
pub const MAX_EXPORT_SNAPSHOTS: usize = 1000;
/// `newest` at most this.
pub const MAX_NEWEST: u32 = 1000;

/// A medium id as `vaultctl media init` makes them.
pub fn check_medium_id(field: &str, id: &str) -> Result<()> {
    if id.len() != MEDIUM_ID_HEX_CHARS || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(invalid(field, format!("`{}` is not a medium id ({MEDIUM_ID_HEX_CHARS} lowercase hex characters, as `vaultctl media init` prints)", id.escape_default())));
    }
    Ok(())
}

/// An `age` X25519 recipient: Bech32 with the human-readable part `age` and a 32-byte key,
/// written in lowercase (as `age-keygen` prints it).
pub fn check_recipient(field: &str, text: &str) -> Result<()> {
    use bech32::FromBase32 as _;
    let refuse = |why: &str| invalid(field, format!("`{}` is not an age recipient ({why}); use the `age1...` line `age-keygen` prints", text.escape_default()));
    if text.len() > 100 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(refuse("too long or not lowercase"));
    }
    let (hrp, data, variant) = bech32::decode(text).map_err(|_| refuse("not Bech32, or its checksum fails"))?;
    let key = Vec::<u8>::from_base32(&data).map_err(|_| refuse("its data is not whole bytes"))?;
    if hrp != "age" || variant != bech32::Variant::Bech32 || key.len() != 32 {
        return Err(refuse("not an X25519 key"));
    }
    Ok(())
}

/// The recipients an export is encrypted to (an order's, a rotation's, a manifest's): 1 to
/// [`MAX_RECIPIENTS`] distinct `age` X25519 recipients, each named `field[i]` when refused.
pub fn check_recipients(field: &str, recipients: &[String]) -> Result<()> {
    if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
        return Err(invalid(field, format!("{} recipients; an export is encrypted to 1 to {MAX_RECIPIENTS}", recipients.len())));
    }
    for (i, recipient) in recipients.iter().enumerate() {
        check_recipient(&format!("{field}[{i}]"), recipient)?;
        if recipients[..i].contains(recipient) {
            return Err(invalid(format!("{field}[{i}]"), format!("{recipient} is named twice")));
        }
    }
    Ok(())
}

/// An export order's own fields (the snapshots and datasets it names are checked with the
/// order's): the medium, one to [`MAX_RECIPIENTS`] distinct recipients, and `newest`/`since`
/// only where there are datasets to apply them to.
pub fn check_spec(spec: &ExportSpec, no_datasets: bool) -> Result<()> {
    check_medium_id("export.medium", &spec.medium)?;
    check_recipients("export.recipients", &spec.recipients)?;
    if let Some(newest) = spec.newest {
        if newest == 0 || newest > MAX_NEWEST {
            return Err(invalid("export.newest", format!("{newest}; the newest 1 to {MAX_NEWEST} snapshots of each dataset")));
        }
    }
    if let Some(since) = &spec.since {
        crate::units::Timestamp::parse(since).map_err(|reason| invalid("export.since", reason))?;
    }
    if no_datasets && (spec.newest.is_some() || spec.since.is_some()) {
        return Err(invalid("export.newest", "`newest` and `since` choose among a dataset's snapshots: name a dataset (PUSHER/DATASET)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
