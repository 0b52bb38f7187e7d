//! `vaultctl receipts list | show | verify`: the receipts a pusher kept, each checked against the
//! vault key it pinned, and, given the vault's store (its disk, or a copy), against what the
//! vault itself sealed: the same snapshot, the same signed bytes, a manifest that still hashes
//! to what the receipt says.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use vault_core::push::receipt::{Receipt, SignedReceipt, MAX_RECEIPT_BYTES};
use vault_store::StoreReader;

use crate::error::{CliError, Result};
use crate::{keyfile, profile};

/// A receipts directory holds one file per push; far more than years of nightly pushes.
const MAX_RECEIPT_FILES: usize = 200_000;

#[derive(Subcommand)]
pub enum ReceiptsCommand {
    /// The kept receipts, oldest first, each verified against the pinned vault key.
    List {
        #[command(flatten)]
        place: Place,
    },
    /// One receipt in full (by snapshot id or file), verified.
    Show {
        #[command(flatten)]
        place: Place,
        /// A snapshot id, or a receipt file.
        snapshot: String,
    },
    /// Verifies every kept receipt (or the ones named) against the pinned vault key and, with
    /// --store, against the vault's own copy and manifest. Exit 6 if any does not verify.
    Verify {
        #[command(flatten)]
        place: Place,
        /// The vault's store (its data disk mounted read-only, or a copy).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Snapshot ids; none: every kept receipt.
        snapshots: Vec<String>,
    },
}

#[derive(clap::Args)]
pub struct Place {
    /// Where the receipts are kept (default: $XDG_DATA_HOME/vaultctl/receipts).
    #[arg(long, env = "VAULTCTL_RECEIPTS")]
    receipts: Option<PathBuf>,
    /// The vault's public key (`ed25519:...` or a file): receipts signed by any other are refused.
    #[arg(long, env = "VAULTCTL_VAULT_KEY")]
    vault_key: String,
}

impl Place {
    fn dir(&self) -> PathBuf {
        self.receipts.clone().unwrap_or_else(profile::default_receipts)
    }
}

pub fn run(command: ReceiptsCommand, json: bool) -> Result<()> {
    match command {
        ReceiptsCommand::List { place } => list(&place, json),
        ReceiptsCommand::Show { place, snapshot } => show(&place, &snapshot, json),
        ReceiptsCommand::Verify { place, store, snapshots } => verify(&place, store.as_deref(), &snapshots, json),
    }
}

/// The receipt files of `dir`, by name (`<snapshot id>.json`); the audit checkpoint
/// (`audit-*.checkpoint`) and temporary files beside them are not receipts.
fn receipt_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::Usage(format!("{}: {e} (receipts are kept there by `vaultctl push`; give --receipts DIR)", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".json") && !name.starts_with('.') {
            files.push(entry.path());
            if files.len() > MAX_RECEIPT_FILES {
                return Err(CliError::Usage(format!("{}: more than {MAX_RECEIPT_FILES} receipt files", dir.display())));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn load(path: &Path) -> Result<SignedReceipt> {
    Ok(SignedReceipt::from_file_bytes(&vault_io::read_bounded(path, 2 * MAX_RECEIPT_BYTES)?)?)
}

/// A receipt file by snapshot id or path.
fn locate(dir: &Path, snapshot: &str) -> PathBuf {
    let as_path = Path::new(snapshot);
    if as_path.is_file() {
        as_path.to_path_buf()
    } else {
        dir.join(format!("{snapshot}.json"))
    }
}

fn summary(receipt: &Receipt) -> serde_json::Value {
    serde_json::json!({
        "snapshot": receipt.snapshot_id,
        "vault_id": receipt.vault_id,
        "dataset": receipt.dataset,
        "pusher": receipt.pusher,
        "received_at": receipt.received_at.to_string(),
        "retain_until": receipt.retain_until.to_string(),
        "files": receipt.files,
        "logical_bytes": receipt.logical_bytes,
        "bytes_new": receipt.bytes_new,
        "manifest_sha256": receipt.manifest_sha256,
        "policy_version": receipt.policy_version,
        "suspect": receipt.suspect,
        "signals": receipt.signals.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn list(place: &Place, json: bool) -> Result<()> {
    let key = keyfile::public_key_arg(&place.vault_key)?;
    let dir = place.dir();
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for file in receipt_files(&dir)? {
        match load(&file).and_then(|signed| Ok(signed.verify(&key)?)) {
            Ok(receipt) => rows.push(receipt),
            Err(e) => bad.push((file, e.to_string())),
        }
    }
    rows.sort_by(|a, b| (a.received_at, &a.snapshot_id).cmp(&(b.received_at, &b.snapshot_id)));
    if json {
        let value = serde_json::json!({
            "receipts": rows.iter().map(summary).collect::<Vec<_>>(),
            "not_verified": bad.iter().map(|(f, e)| serde_json::json!({ "file": f, "error": e })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON values serialize"));
    } else {
        for r in &rows {
            println!("{}  {}  {:>10} files {:>14} bytes  retained until {}{}", r.snapshot_id, r.received_at, r.files, r.logical_bytes, r.retain_until, if r.suspect { "  SUSPECT" } else { "" });
        }
        for (file, error) in &bad {
            println!("{}  NOT VERIFIED: {error}", file.display());
        }
        eprintln!("{} receipt(s) in {} verified against vault key {key}", rows.len(), dir.display());
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CliError::Incomplete(format!("{} receipt file(s) in {} do not verify against vault key {key}", bad.len(), dir.display())))
    }
}

fn show(place: &Place, snapshot: &str, json: bool) -> Result<()> {
    let key = keyfile::public_key_arg(&place.vault_key)?;
    let file = locate(&place.dir(), snapshot);
    let receipt = load(&file)?.verify(&key)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary(&receipt)).expect("JSON values serialize"));
        return Ok(());
    }
    println!("receipt {} (verified against vault key {key})", file.display());
    if let serde_json::Value::Object(fields) = summary(&receipt) {
        for (name, value) in fields {
            println!("  {name:<16} {}", value.as_str().map_or_else(|| value.to_string(), str::to_string));
        }
    }
    Ok(())
}

/// One receipt checked against the store: the vault's own copy has the same signed bytes, and
/// the manifest it sealed still hashes to the receipt's `manifest_sha256`.
fn against_store(reader: &StoreReader, kept: &SignedReceipt, receipt: &Receipt) -> std::result::Result<(), String> {
    let stored = reader.receipt(&receipt.snapshot_id).map_err(|e| format!("the store has no receipt for it ({e})"))?;
    // The kept receipt verified under the pinned key, so the same bytes need no second check.
    if stored.body != kept.body || stored.signature != kept.signature {
        return Err("the store's receipt for this snapshot differs from the kept one".into());
    }
    reader.manifest_checked(&receipt.snapshot_id, receipt).map_err(|e| format!("its manifest in the store does not check out ({e})"))?;
    Ok(())
}

fn verify(place: &Place, store: Option<&Path>, snapshots: &[String], json: bool) -> Result<()> {
    let key = keyfile::public_key_arg(&place.vault_key)?;
    let dir = place.dir();
    let files = if snapshots.is_empty() { receipt_files(&dir)? } else { snapshots.iter().map(|s| locate(&dir, s)).collect() };
    let reader = store.map(StoreReader::open).transpose()?;
    let mut results = Vec::new();
    for file in &files {
        let outcome = load(file).and_then(|signed| Ok((signed.verify(&key)?, signed))).map_err(|e| e.to_string()).and_then(|(receipt, signed)| {
            if let Some(reader) = &reader {
                against_store(reader, &signed, &receipt)?;
            }
            Ok(receipt.snapshot_id)
        });
        results.push((file.clone(), outcome));
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if json {
        let value: Vec<_> = results.iter().map(|(f, r)| serde_json::json!({ "file": f, "verified": r.is_ok(), "error": r.as_ref().err() })).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "store": store, "receipts": value })).expect("JSON values serialize"));
    } else {
        for (file, result) in &results {
            match result {
                Ok(id) => println!("OK      {id}"),
                Err(e) => println!("FAILED  {}: {e}", file.display()),
            }
        }
    }
    let against = store.map_or_else(String::new, |s| format!(" and the store at {}", s.display()));
    if failed > 0 {
        return Err(CliError::Incomplete(format!("{failed} of {} receipt(s) do not verify against vault key {key}{against}", results.len())));
    }
    eprintln!("{} receipt(s) verify against vault key {key}{against}", results.len());
    Ok(())
}
