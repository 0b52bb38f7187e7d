//! How the log leaves the vault and who checks it. A pusher says at `begin` how many entries the
//! newest checkpoint it holds has; the vault's receipt carries [`LogEvidence`]: its own newest
//! signed checkpoint and the consistency proof from that size. The pusher runs [`witness`]: the
//! new checkpoint must be signed by the pinned vault key, no smaller than the one it holds, and
//! proven to extend it. A log that was rewound (an older copy put back, or deleted and begun
//! again) or forked (rewritten from some entry on) cannot pass, whatever the vault sends.
//!
//! The checkpoint is one the vault's log writer signed before the receipt was sent, so it may end
//! just before this push's own events; the next receipt covers them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::merkle::Hash;
use super::note::MAX_NOTE_BYTES;
use super::AuditError;
use crate::keys::PublicKey;
use crate::units::Timestamp;
use crate::wire::{Reader, Writer};

/// A consistency proof between two trees of at most 2^64 entries has at most 2 * 64 hashes.
pub const MAX_PROOF_HASHES: usize = 128;

/// What a receipt carries about the vault's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEvidence {
    /// The vault's newest signed checkpoint (a C2SP signed note).
    pub checkpoint: String,
    /// The size of the checkpoint the pusher said it holds (0: none) ...
    pub proof_from: u64,
    /// ... and the proof that the log of `checkpoint` extends it (base64 hashes in files).
    #[serde(with = "base64_hashes")]
    pub proof: Vec<Hash>,
}

impl LogEvidence {
    /// Appends the evidence to a frame being written: `u16 note length | note | u64 from | u8
    /// count | count hashes`.
    pub fn encode(&self, w: &mut Writer) -> crate::error::Result<()> {
        check_bounds(self.checkpoint.len(), self.proof.len()).map_err(crate::Error::Audit)?;
        w.short_bytes(self.checkpoint.as_bytes())?.u64(self.proof_from).u8(u8::try_from(self.proof.len()).expect("MAX_PROOF_HASHES fits a u8"));
        for hash in &self.proof {
            w.raw(hash);
        }
        Ok(())
    }

    /// Reads what [`LogEvidence::encode`] wrote; bounds are checked before anything is kept.
    pub fn decode(r: &mut Reader<'_>) -> crate::error::Result<LogEvidence> {
        let note = r.short_bytes("audit checkpoint")?;
        let proof_from = r.u64("audit proof size")?;
        let count = usize::from(r.u8("audit proof length")?);
        check_bounds(note.len(), count).map_err(crate::Error::Audit)?;
        let checkpoint = String::from_utf8(note.to_vec()).map_err(|_| r.malformed("the audit checkpoint is not UTF-8"))?;
        let proof = (0..count).map(|_| r.array("audit proof hash")).collect::<crate::error::Result<Vec<Hash>>>()?;
        Ok(LogEvidence { checkpoint, proof_from, proof })
    }
}

fn check_bounds(note_bytes: usize, proof_hashes: usize) -> Result<(), AuditError> {
    if note_bytes > MAX_NOTE_BYTES {
        return Err(AuditError::TooLarge { what: "checkpoint note", size: note_bytes, limit: MAX_NOTE_BYTES });
    }
    if proof_hashes > MAX_PROOF_HASHES {
        return Err(AuditError::TooLarge { what: "consistency proof", size: proof_hashes, limit: MAX_PROOF_HASHES });
    }
    Ok(())
}

/// The pusher's check of a receipt's evidence against the checkpoint it `held` (if any): returns
/// the checkpoint to hold from now on (the newer of the two). Every failure is
/// [`AuditError::Inconsistent`] or a signature error, and names the sizes involved.
pub fn witness(evidence: &LogEvidence, held: Option<&Checkpoint>, vault_key: &PublicKey) -> Result<Checkpoint, AuditError> {
    let newer = Checkpoint::open(evidence.checkpoint.as_bytes(), vault_key)?;
    let Some(held) = held else {
        return Ok(newer);
    };
    if newer.size < held.size {
        return Err(AuditError::Inconsistent(format!("the vault's log now has {} entries, fewer than the {} of the checkpoint this pusher holds: it was rewound or replaced", newer.size, held.size)));
    }
    if evidence.proof_from != held.size {
        return Err(AuditError::Inconsistent(format!("the vault proved its log from {} entries, not from the {} this pusher holds", evidence.proof_from, held.size)));
    }
    held.check_extended_by(&newer, &evidence.proof).map_err(|e| match e {
        AuditError::Inconsistent(why) => {
            AuditError::Inconsistent(format!("the vault's log of {} entries does not extend the {} this pusher holds ({why}): it was rewritten or forked", newer.size, held.size))
        }
        other => other,
    })?;
    Ok(newer)
}

/// What [`check_receipts`] found in a set of receipts' evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptChain {
    /// Receipts that carried evidence.
    pub checkpoints: usize,
    /// Proofs checked between two of them.
    pub links_proven: usize,
    /// Proofs from a checkpoint none of these receipts holds (another pusher's): not checkable here.
    pub unlinked: usize,
    /// The largest log size seen.
    pub newest: u64,
}

/// One receipt's evidence for [`check_receipts`]: a name for messages (its snapshot id), and
/// when the vault sealed it.
pub struct ReceiptEvidence<'a> {
    pub name: &'a str,
    pub received_at: Timestamp,
    pub evidence: &'a LogEvidence,
}

/// Checks the evidence of a set of receipts against one another, in any order: every checkpoint
/// signed by `vault_key`; no proof from a log larger than the one it proves (the pusher had
/// seen more); no log smaller than one a receipt sealed earlier showed; no two checkpoints of one
/// size with different roots; every proof from a size another receipt shows verified against it.
/// An error names the receipts involved.
pub fn check_receipts(receipts: &[ReceiptEvidence<'_>], vault_key: &PublicKey) -> Result<ReceiptChain, AuditError> {
    let opened = receipts
        .iter()
        .map(|r| {
            Checkpoint::open(r.evidence.checkpoint.as_bytes(), vault_key)
                .map_err(|e| AuditError::Inconsistent(format!("the receipt of {}: {}", r.name, e.to_string().trim_start_matches("audit log not consistent: "))))
        })
        .collect::<Result<Vec<Checkpoint>, AuditError>>()?;
    let mut chain = ReceiptChain { checkpoints: receipts.len(), links_proven: 0, unlinked: 0, newest: opened.iter().map(|c| c.size).max().unwrap_or(0) };
    for (receipt, checkpoint) in receipts.iter().zip(&opened) {
        let name = receipt.name;
        for (other, seen) in receipts.iter().zip(&opened) {
            if seen.size == checkpoint.size && seen.root != checkpoint.root {
                return Err(AuditError::Inconsistent(format!("the receipts of {} and {name} show logs of {} entries with different roots: the log was forked", other.name, seen.size)));
            }
            if other.received_at < receipt.received_at && seen.size > checkpoint.size {
                let why = format!(
                    "the receipt of {name} shows a log of {} entries, fewer than the {} shown by the older receipt of {}: the log was rewound or replaced",
                    checkpoint.size, seen.size, other.name
                );
                return Err(AuditError::Inconsistent(why));
            }
        }
        let from = receipt.evidence.proof_from;
        if from > checkpoint.size {
            return Err(AuditError::Inconsistent(format!(
                "the receipt of {name} shows a log of {} entries, fewer than the {from} its pusher had seen: the log was rewound or replaced",
                checkpoint.size
            )));
        }
        if from == 0 || from == checkpoint.size {
            continue;
        }
        match receipts.iter().zip(&opened).find(|(_, c)| c.size == from) {
            Some((older, seen)) => {
                seen.check_extended_by(checkpoint, &receipt.evidence.proof)
                    .map_err(|e| AuditError::Inconsistent(format!("the log shown by the receipt of {name} does not extend the one of {from} entries shown by the receipt of {} ({e})", older.name)))?;
                chain.links_proven += 1;
            }
            None => chain.unlinked += 1,
        }
    }
    Ok(chain)
}

mod base64_hashes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(hashes.iter().map(|h| BASE64.encode(h)))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let texts: Vec<String> = Vec::deserialize(d)?;
        if texts.len() > MAX_PROOF_HASHES {
            return Err(serde::de::Error::custom(format!("{} proof hashes, at most {MAX_PROOF_HASHES}", texts.len())));
        }
        texts.iter().map(|t| BASE64.decode(t).ok().and_then(|h| Hash::try_from(h).ok()).ok_or_else(|| serde::de::Error::custom(format!("`{t}` is not 32 bytes of base64")))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint::origin_of;
    use crate::audit::merkle::{consistency_proof, leaf_hash, Leaves};
    use crate::keys::test_keys::key;

    fn log(entries: &[&str]) -> Leaves {
        Leaves(entries.iter().map(|e| leaf_hash(e.as_bytes())).collect())
    }

    /// The evidence a vault holding `log` gives a pusher that holds a checkpoint of `from` entries.
    fn evidence(log: &Leaves, from: u64, vault: &crate::keys::SigningKey) -> LogEvidence {
        let size = log.0.len() as u64;
        let checkpoint = Checkpoint::of(&origin_of(&vault.public_key()), size, log).unwrap();
        let proof = if from <= size { consistency_proof(from, size, log).unwrap() } else { Vec::new() };
        LogEvidence { checkpoint: checkpoint.sign(vault).unwrap(), proof_from: from, proof }
    }

    #[test]
    fn a_growing_log_is_witnessed_and_a_rewound_forked_or_foreign_one_is_not() {
        let vault = key(60);
        let first = log(&["boot", "window", "commit"]);
        let held = witness(&evidence(&first, 0, &vault), None, &vault.public_key()).unwrap();
        assert_eq!(held.size, 3);
        let grown = log(&["boot", "window", "commit", "link down", "boot"]);
        let newer = witness(&evidence(&grown, 3, &vault), Some(&held), &vault.public_key()).unwrap();
        assert_eq!(newer.size, 5);
        // The same checkpoint again (no new events) is fine.
        assert_eq!(witness(&evidence(&first, 3, &vault), Some(&held), &vault.public_key()).unwrap(), held);

        let rewound = log(&["boot", "window"]);
        let err = witness(&evidence(&rewound, 3, &vault), Some(&held), &vault.public_key()).unwrap_err();
        assert!(err.to_string().contains("audit log not consistent") && err.to_string().contains("rewound"), "{err}");
        let forked = log(&["boot", "window", "nothing happened", "link down", "boot"]);
        let err = witness(&evidence(&forked, 3, &vault), Some(&held), &vault.public_key()).unwrap_err();
        assert!(err.to_string().contains("audit log not consistent") && err.to_string().contains("forked"), "{err}");
        let err = witness(&evidence(&grown, 2, &vault), Some(&held), &vault.public_key()).unwrap_err();
        assert!(err.to_string().contains("from 2 entries, not from the 3"), "{err}");
        let stranger = key(61);
        assert!(witness(&evidence(&grown, 3, &stranger), Some(&held), &vault.public_key()).is_err());
    }

    #[test]
    fn receipts_alone_prove_a_log_grew_and_name_the_one_that_shows_a_rewind_or_a_fork() {
        let vault = key(60);
        let entries = ["boot", "window", "commit", "link down", "boot", "window", "commit"];
        let at = |n: usize| log(&entries[..n]);
        let time = |secs: i64| Timestamp::from_unix(1_800_000_000 + secs).unwrap();
        let check = |list: &[(&str, i64, &LogEvidence)]| {
            let receipts: Vec<ReceiptEvidence<'_>> = list.iter().map(|(name, at, evidence)| ReceiptEvidence { name, received_at: time(*at), evidence }).collect();
            check_receipts(&receipts, &vault.public_key()).map_err(|e| e.to_string())
        };
        let a = evidence(&at(3), 0, &vault);
        let b = evidence(&at(5), 3, &vault);
        let c = evidence(&at(7), 5, &vault);
        let foreign = evidence(&at(7), 4, &vault);
        // In any order, and two in one second.
        let chain = check(&[("d", 9, &foreign), ("c", 9, &c), ("a", 1, &a), ("b", 5, &b)]).unwrap();
        assert_eq!(chain, ReceiptChain { checkpoints: 4, links_proven: 2, unlinked: 1, newest: 7 });

        let rewound = evidence(&at(4), 5, &vault);
        let err = check(&[("a", 1, &a), ("b", 5, &b), ("c", 5, &rewound)]).unwrap_err();
        assert!(err.contains("receipt of c shows a log of 4 entries, fewer than the 5 its pusher had seen") && err.contains("rewound"), "{err}");
        let rewound_unseen = evidence(&at(4), 0, &vault);
        let err = check(&[("c", 9, &rewound_unseen), ("a", 1, &a), ("b", 5, &b)]).unwrap_err();
        assert!(err.contains("receipt of c shows a log of 4 entries, fewer than the 5 shown by the older receipt of b"), "{err}");
        let forked = evidence(&log(&["boot", "window", "commit", "link down", "nothing"]), 0, &vault);
        let err = check(&[("a", 1, &a), ("b", 5, &b), ("c", 9, &forked)]).unwrap_err();
        assert!(err.contains("receipts of c and b") || err.contains("receipts of b and c"), "{err}");
        let forked_later = evidence(&log(&["boot", "window", "commit", "link down", "nothing", "window", "commit"]), 5, &vault);
        let err = check(&[("a", 1, &a), ("b", 5, &b), ("c", 9, &forked_later)]).unwrap_err();
        assert!(err.contains("receipt of c does not extend the one of 5 entries shown by the receipt of b"), "{err}");
        let stranger = evidence(&at(5), 3, &key(61));
        let err = check(&[("a", 1, &a), ("b", 5, &stranger)]).unwrap_err();
        assert!(err.starts_with("audit log not consistent: the receipt of b: "), "{err}");
    }

    #[test]
    fn evidence_round_trips_on_the_wire_and_in_files_and_bounds_are_checked() {
        let vault = key(60);
        let ev = evidence(&log(&["a", "b", "c", "d", "e", "f", "g"]), 3, &vault);
        let mut w = Writer::default();
        ev.encode(&mut w).unwrap();
        let mut r = Reader::new(&w.bytes, "frame");
        assert_eq!(LogEvidence::decode(&mut r).unwrap(), ev);
        r.finish().unwrap();
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(serde_json::from_str::<LogEvidence>(&json).unwrap(), ev);

        let mut too_long = ev.clone();
        too_long.proof = vec![[0; 32]; MAX_PROOF_HASHES + 1];
        assert!(too_long.encode(&mut Writer::default()).is_err());
        // A hostile count is refused before any hash is read.
        let mut w = Writer::default();
        w.short_bytes(b"x").unwrap().u64(1).u8(200);
        let err = LogEvidence::decode(&mut Reader::new(&w.bytes, "frame")).unwrap_err();
        assert!(err.to_string().contains("consistency proof"), "{err}");
    }
}
