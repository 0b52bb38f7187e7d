//! `vaultctl audit`: the vault's audit log read from its store (its data disk, or a copy),
//! offline. `verify` checks it whole against the vault key; `show` prints its entries.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use vault_core::audit::witness::{check_receipts, ReceiptEvidence};
use vault_core::push::receipt::SignedReceipt;

use crate::error::{CliError, Result};
use crate::keyfile;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Checks the audit log in a store against the vault key: the signed checkpoint, every
    /// entry against its hash tile (naming the first that differs), every tile against the ones
    /// below it, and the root. Prints the checkpoint. Exit 0 whole, 1 anything altered.
    ///
    /// With `--receipts DIR` instead, checks the log from a pusher's receipts alone: every
    /// receipt's checkpoint signed by the vault, none smaller than an older receipt's, and each
    /// proven to extend the one before it.
    Verify {
        #[arg(long, required_unless_present = "receipts", conflicts_with = "receipts")]
        store: Option<PathBuf>,
        /// A pusher's receipts folder (`vaultctl push --receipts`).
        #[arg(long)]
        receipts: Option<PathBuf>,
        /// The vault's public key (`ed25519:...` or a file holding it).
        #[arg(long)]
        vault_key: String,
    },
    /// Prints the log's entries (after verifying it), oldest first, optionally only some.
    Show {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        vault_key: String,
        /// Only entries of this kind (`committed`, `alarm`, `link_up`, ...); repeatable.
        #[arg(long)]
        kind: Vec<String>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
}

/// `json`: the global `--json`; `show` then prints one JSON object per line (the entries as logged).
pub fn run(command: AuditCommand, json: bool) -> Result<()> {
    match command {
        AuditCommand::Verify { store: None, receipts: Some(dir), vault_key } => verify_receipts(&dir, &vault_key, json),
        AuditCommand::Verify { store, vault_key, .. } => {
            let store = store.expect("clap requires --store or --receipts");
            let verified = verify(&store, &vault_key)?;
            let value = serde_json::json!({ "verified": true, "entries": verified.entries, "root": verified.checkpoint.root_base64(), "checkpoint": verified.checkpoint.to_text() });
            crate::output::emit(json, value, || {
                println!("audit log verified: {} entries, root {}", verified.entries, verified.checkpoint.root_base64());
                print!("{}", verified.checkpoint.to_text());
            });
            Ok(())
        }
        AuditCommand::Show { store, vault_key, kind, since, until } => {
            let verified = verify(&store, &vault_key)?;
            let since = since.as_deref().map(|t| crate::time_arg(Some(t), "--since")).transpose()?;
            let until = until.as_deref().map(|t| crate::time_arg(Some(t), "--until")).transpose()?;
            const PAGE: u64 = 4096;
            let mut from = 0;
            while from < verified.entries {
                let to = (from + PAGE).min(verified.entries);
                for (offset, entry) in vault_store::audit::read_entries(&store, from, to)?.iter().enumerate() {
                    let value: serde_json::Value = serde_json::from_slice(entry).map_err(|e| CliError::Untrusted(format!("audit log entry {} is not JSON: {e}", from + offset as u64)))?;
                    let kind_of = value["event"].as_str().unwrap_or("");
                    let time = value["time"].as_str().and_then(|t| vault_core::units::Timestamp::parse(t).ok());
                    let in_time = time.is_none_or(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u));
                    if (!kind.is_empty() && !kind.iter().any(|k| k == kind_of)) || !in_time {
                        continue;
                    }
                    if json {
                        println!("{}", String::from_utf8_lossy(entry));
                    } else {
                        println!("{:>8}  {}  {:<22} {}", from + offset as u64, value["time"].as_str().unwrap_or("-"), kind_of, details(&value));
                    }
                }
                from = to;
            }
            Ok(())
        }
    }
}

fn verify(store: &Path, vault_key: &str) -> Result<vault_store::audit::Verified> {
    let key = keyfile::public_key_arg(vault_key)?;
    // A mistyped --store is said as such, not as a log that is not what the vault signed.
    vault_store::check_store_dir(store)?;
    vault_store::audit::verify(store, &key).map_err(|e| CliError::Untrusted(format!("{e}; the log under {} is not what the vault signed", store.join(vault_store::audit::LOG_DIR).display())))
}

/// Most receipts one check reads.
const MAX_RECEIPTS: usize = 1 << 20;

/// `audit verify --receipts`: the receipts in `dir`, each verified under the vault key, and their
/// checkpoints checked against one another.
fn verify_receipts(dir: &Path, vault_key: &str, json: bool) -> Result<()> {
    let key = keyfile::public_key_arg(vault_key)?;
    let mut receipts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| CliError::Failed(format!("--receipts {}: {e}", dir.display())))? {
        let path = entry.map_err(|e| CliError::Failed(format!("--receipts {}: {e}", dir.display())))?.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        if receipts.len() == MAX_RECEIPTS {
            return Err(CliError::Failed(format!("--receipts {}: more than {MAX_RECEIPTS} receipts; check them in parts", dir.display())));
        }
        let bytes = vault_io::read_bounded(&path, 2 * vault_core::push::receipt::MAX_RECEIPT_BYTES)?;
        let signed = SignedReceipt::from_file_bytes(&bytes).map_err(|e| CliError::Untrusted(format!("{}: {e}", path.display())))?;
        let receipt = signed.verify(&key).map_err(|e| CliError::Untrusted(format!("{}: {e}", path.display())))?;
        receipts.push((receipt.received_at, receipt.snapshot_id, signed.audit));
    }
    let with_evidence: Vec<ReceiptEvidence<'_>> =
        receipts.iter().filter_map(|(received_at, id, audit)| Some(ReceiptEvidence { name: id, received_at: *received_at, evidence: audit.as_ref()? })).collect();
    if with_evidence.is_empty() {
        return Err(CliError::Incomplete(format!("none of the {} receipts in {} carries an audit checkpoint: nothing to check", receipts.len(), dir.display())));
    }
    let chain = check_receipts(&with_evidence, &key).map_err(|e| CliError::AuditInconsistent(e.to_string()))?;
    let value = serde_json::json!({ "consistent": true, "checkpoints": chain.checkpoints, "newest": chain.newest, "proofs_checked": chain.links_proven, "unlinked": chain.unlinked, "receipts_without_checkpoint": receipts.len() - chain.checkpoints });
    crate::output::emit(json, value, || {
        println!(
            "audit log consistent across {} receipts: {} entries at the newest, {} proofs checked, {} from checkpoints not among these receipts, {} receipts without a checkpoint",
            chain.checkpoints,
            chain.newest,
            chain.links_proven,
            chain.unlinked,
            receipts.len() - chain.checkpoints
        )
    });
    Ok(())
}

/// An entry's fields other than its kind, time and sequence, as `key=value`.
fn details(value: &serde_json::Value) -> String {
    let Some(map) = value.as_object() else { return String::new() };
    map.iter().filter(|(k, _)| !["event", "time", "seq"].contains(&k.as_str())).map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect::<Vec<_>>().join(" ")
}
