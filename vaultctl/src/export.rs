//! `vaultctl export verify` and `vaultctl restore --export`: reading what the vault wrote onto
//! a removable medium, on any machine, with the vault key pinned as always. Verifying needs no
//! secret: every file is checked against the export's signed manifest. Restoring needs an
//! `age` identity the export was encrypted to; what it decrypts goes into a scratch store beside
//! the target and is read like any store (receipts under the pinned key, every chunk re-hashed).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Serialize;
use vault_core::export::manifest::{EXPORTS_DIR, MANIFEST_FILE};
use vault_core::keys::PublicKey;
use vault_store::export::{check_export, decrypt_export, Share};

use crate::error::{CliError, Result};
use crate::keyfile;
use crate::restore::{restore, RestoreReport, Trust};

#[derive(Subcommand)]
pub enum ExportCommand {
    /// Checks an export (or every export on a medium) against the vault key, without any
    /// secret: the signed manifest, every file's size and SHA-256, the receipts and the audit
    /// log. Exit 0 all as signed, 1 with each problem named.
    Verify {
        /// An export's directory (`vault-exports/<id>`), or the medium's top directory.
        dir: PathBuf,
        /// The vault's public key (`ed25519:...` or a file holding it).
        #[arg(long)]
        vault_key: String,
    },
}

pub fn run(command: ExportCommand, json: bool) -> Result<()> {
    match command {
        ExportCommand::Verify { dir, vault_key } => verify(&dir, &keyfile::public_key_arg(&vault_key)?, json),
    }
}

#[derive(Serialize)]
struct Verified {
    export: String,
    dir: PathBuf,
    created_at: String,
    medium: String,
    snapshots: Vec<String>,
    missing: Vec<String>,
    recipients: Vec<String>,
    files: usize,
    bytes: u64,
    log_entries: Option<u64>,
    problems: Vec<String>,
}

/// The export directories `dir` names: itself, or those under its `vault-exports/` (finished
/// ones only: an unfinished `.partial` is not an export).
fn exports_in(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.join(MANIFEST_FILE).exists() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let exports = dir.join(EXPORTS_DIR);
    let entries =
        std::fs::read_dir(&exports).map_err(|e| CliError::Failed(format!("{}: neither an export (no {MANIFEST_FILE}) nor a medium with exports ({}: {e})", dir.display(), exports.display())))?;
    let mut found: Vec<PathBuf> = entries.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')).map(|e| e.path()).collect();
    found.sort();
    if found.is_empty() {
        return Err(CliError::Failed(format!("{}: no finished export on this medium", dir.display())));
    }
    Ok(found)
}

fn verify(dir: &Path, vault_key: &PublicKey, json: bool) -> Result<()> {
    let mut results = Vec::new();
    for export in exports_in(dir)? {
        let checked = check_export(&export, vault_key, Share::All)?;
        let m = &checked.manifest;
        let log_entries = vault_core::audit::checkpoint::Checkpoint::open(m.checkpoint.as_bytes(), vault_key).ok().map(|c| c.size);
        results.push(Verified {
            export: m.export_id.clone(),
            dir: export.clone(),
            created_at: m.created_at.clone(),
            medium: m.medium_id.clone(),
            snapshots: m.snapshots.iter().map(|s| s.id.clone()).collect(),
            missing: m.missing.clone(),
            recipients: m.recipients.clone(),
            files: checked.files_checked,
            bytes: checked.bytes_checked,
            log_entries,
            problems: checked.problems.iter().map(|p| format!("{}: {}", p.path, p.reason)).collect(),
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results).expect("serializable"));
    } else {
        for r in &results {
            let verdict = if r.problems.is_empty() { "every file as signed".to_string() } else { format!("{} PROBLEM(S)", r.problems.len()) };
            println!(
                "export {} (written {}, medium {}): {} snapshot(s), {} files, {} bytes checked, audit log of {} entries: {verdict}",
                r.export,
                r.created_at,
                r.medium,
                r.snapshots.len(),
                r.files,
                r.bytes,
                r.log_entries.map_or("?".into(), |n| n.to_string())
            );
            for s in &r.snapshots {
                println!("  snapshot {s}");
            }
            for s in &r.missing {
                println!("  not exported (no longer sealed when it was written): {s}");
            }
            for p in &r.problems {
                println!("  PROBLEM {p}");
            }
        }
    }
    let bad: Vec<&str> = results.iter().filter(|r| !r.problems.is_empty()).map(|r| r.export.as_str()).collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(CliError::Untrusted(format!("export(s) {} do not match what the vault signed (each problem is listed): restore from another copy", bad.join(", "))))
}

/// Restores `snapshot` from the export in `dir` into `to`, decrypting with the identities in
/// `identity_file` (an `age-keygen` file).
pub fn restore_from_export(dir: &Path, identity_file: &Path, snapshot: &str, to: &Path, vault_key: &PublicKey, keep_going: bool, selection: &crate::restore::Selection) -> Result<RestoreReport> {
    let bytes = vault_io::read_bounded(&dir.join(MANIFEST_FILE), vault_core::export::manifest::MAX_MANIFEST_BYTES)?;
    let signed = vault_core::keys::SignedDoc::from_file_bytes(&bytes, vault_core::export::manifest::MAX_MANIFEST_BYTES, "export manifest")?;
    let manifest = vault_core::export::manifest::ExportManifest::verify(&signed, vault_key)
        .map_err(|e| CliError::Untrusted(format!("{}: {e}; is --vault-key this vault's?", dir.join(MANIFEST_FILE).display())))?;
    let identities = load_identities(identity_file)?;
    let parent = to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| CliError::Failed(format!("{}: {e}", parent.display())))?;
    let scratch = tempfile::Builder::new().prefix(".vaultctl-export-").tempdir_in(parent).map_err(|e| CliError::Failed(format!("{}: no room for a scratch store: {e}", parent.display())))?;
    let store = scratch.path().join("store");
    decrypt_export(dir, &manifest, &identities, &[snapshot.to_string()], &store)?;
    restore(&store, snapshot, to, &Trust::Pinned(*vault_key), keep_going, selection)
}

fn load_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity>>> {
    let bytes = vault_io::read_bounded(path, 64 * 1024)?;
    let file =
        age::IdentityFile::from_buffer(std::io::BufReader::new(&bytes[..])).map_err(|e| CliError::KeyFile { path: path.display().to_string(), reason: format!("not an age identity file: {e}") })?;
    let identities = file.into_identities().map_err(|e| CliError::KeyFile { path: path.display().to_string(), reason: format!("not an age identity file: {e}") })?;
    if identities.is_empty() {
        return Err(CliError::KeyFile { path: path.display().to_string(), reason: "holds no identity (make one with age-keygen)".into() });
    }
    Ok(identities)
}
