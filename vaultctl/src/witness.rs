//! Every pusher is a witness of the vault's audit log (`vault_core::audit::witness`): it keeps
//! the newest checkpoint it was given, per vault, beside its receipts
//! (`audit-<the vault's log id>.checkpoint`), says its size at `begin`, and checks each receipt's
//! checkpoint and proof against it. A log that was rewound or forked fails here, at the pusher,
//! whatever the vault's disk now says.

use std::path::{Path, PathBuf};

use vault_core::audit::checkpoint::{origin_of, Checkpoint};
use vault_core::audit::witness::{witness, LogEvidence};
use vault_core::audit::AuditError;
use vault_core::keys::PublicKey;

use crate::error::{CliError, Result};

pub struct Witness {
    path: PathBuf,
    vault_key: PublicKey,
    held: Option<Checkpoint>,
}

/// What one receipt's evidence showed.
pub enum Witnessed {
    /// The vault's log, now of `entries`, extends the checkpoint held (of `from` entries, 0: none).
    Consistent { entries: u64, from: u64 },
    /// The vault sent no checkpoint and none was held: nothing to witness yet.
    NothingYet,
}

impl Witness {
    /// The checkpoint held for the vault of `vault_key` in `dir`, which must verify under that key.
    pub fn load(dir: &Path, vault_key: &PublicKey) -> Result<Witness> {
        let origin = origin_of(vault_key);
        let id = origin.rsplit('/').next().expect("an origin has a part after its slash");
        let path = dir.join(format!("audit-{id}.checkpoint"));
        let held = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            _ => {
                let note = vault_io::read_bounded(&path, vault_core::audit::note::MAX_NOTE_BYTES)?;
                let checkpoint = Checkpoint::open(&note, vault_key).map_err(|e| {
                    CliError::Untrusted(format!(
                        "{}: the audit checkpoint this pusher holds for the vault does not verify against the pinned vault key ({e}); it was altered or is another vault's. Keep it as evidence, find out why, and move it away to start witnessing afresh",
                        path.display()
                    ))
                })?;
                Some(checkpoint)
            }
        };
        Ok(Witness { path, vault_key: *vault_key, held })
    }

    /// The size of the checkpoint held (0: none), for `begin`.
    pub fn held_size(&self) -> u64 {
        self.held.as_ref().map_or(0, |c| c.size)
    }

    /// Checks a receipt's evidence (already saved at `receipt_path`) and keeps the newer
    /// checkpoint. Refused evidence leaves the held checkpoint as it was.
    pub fn check(&mut self, evidence: Option<&LogEvidence>, receipt_path: &Path) -> Result<Witnessed> {
        let inconsistent = |detail: String| {
            CliError::AuditInconsistent(format!(
                "{detail}. The snapshot is sealed and its receipt is saved ({}); the checkpoint this pusher held is kept ({}). Both are evidence: tell the vault's admins, whose log was rewound, replaced or forked",
                receipt_path.display(),
                self.path.display()
            ))
        };
        let Some(evidence) = evidence else {
            return match &self.held {
                None => Ok(Witnessed::NothingYet),
                Some(held) => Err(inconsistent(format!("audit log not consistent: the vault sent no checkpoint, but this pusher holds one of {} entries", held.size))),
            };
        };
        let from = self.held_size();
        let newer = witness(evidence, self.held.as_ref(), &self.vault_key).map_err(|e| match e {
            AuditError::Inconsistent(_) => inconsistent(e.to_string()),
            other => inconsistent(format!("audit log not consistent: the receipt's checkpoint is refused ({other})")),
        })?;
        let entries = newer.size;
        if self.held.as_ref().is_none_or(|held| newer.size > held.size) {
            vault_io::write_atomic(&self.path, evidence.checkpoint.as_bytes(), 0o644)?;
            self.held = Some(newer);
        }
        Ok(Witnessed::Consistent { entries, from })
    }
}
