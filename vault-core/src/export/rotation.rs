//! Rotation (the seed's SMB tier: "encrypted external drives rotated daily"): the policy names a
//! set of media and a cadence; whenever one of them is inserted while the vault is sealed, the
//! vault first verifies what the medium brought back, then writes a new export of the named
//! datasets, and only once that one is read back removes the oldest exports beyond `keep`.
//! No medium of the set written for longer than `every` (and a day's grace) is an alarm.
//!
//! A rotation needs no export order: the policy that names it is signed by the quorum.

use serde::{Deserialize, Serialize};

use crate::canonical::check_identifier;
use crate::error::{invalid, Result};
use crate::export::{check_medium_id, check_recipients, MAX_NEWEST};
use crate::keys::{domain_hash, hex};
use crate::policy::orders::{DatasetDoc, ExportSpec, PendingExport, MAX_ORDER_DATASETS};
use crate::units::{Duration, Timestamp};

/// Media one rotation set names.
pub const MAX_ROTATION_MEDIA: usize = 16;
/// Exports kept on one medium, at most.
pub const MAX_KEEP: u32 = 16;
/// A returning medium re-hashes at least one pack in this many.
pub const MAX_VERIFY_SHARE: u32 = 64;
/// Past `every`, a day more before the rotation is overdue (the medium may come a little late).
pub const OVERDUE_GRACE_SECS: i64 = 86_400;
const ROTATION_CONTEXT: &str = "airgap-vault/rotation/v1";

/// The policy's `[rotation]`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationDoc {
    /// Medium ids (`vaultctl media init` prints them).
    pub media: Vec<String>,
    /// How often a medium of the set is to be written, in whole days.
    pub every: String,
    /// `age` recipients every rotation export is encrypted to.
    pub recipients: Vec<String>,
    /// What goes onto the media, as `PUSHER/DATASET`.
    pub datasets: Vec<String>,
    /// Of each dataset, the newest this many snapshots (absent: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<u32>,
    /// Exports kept on each medium (absent: 1): older ones are removed once a new one is read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// When a medium returns, one pack in this many is re-hashed (a different share each day),
    /// every other file always (absent: 4; 1: every pack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_share: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub media: Vec<String>,
    pub every: Duration,
    pub recipients: Vec<String>,
    pub datasets: Vec<DatasetDoc>,
    pub newest: u32,
    pub keep: u32,
    pub verify_share: u32,
}

impl Rotation {
    /// `every` is parsed by the policy (whole days, the bounds scrubs and drills share).
    pub fn from_doc(doc: &RotationDoc, every: Duration) -> Result<Rotation> {
        if doc.media.is_empty() || doc.media.len() > MAX_ROTATION_MEDIA {
            return Err(invalid("rotation.media", format!("{} media; a rotation set has 1 to {MAX_ROTATION_MEDIA}", doc.media.len())));
        }
        for (i, medium) in doc.media.iter().enumerate() {
            check_medium_id(&format!("rotation.media[{i}]"), medium)?;
            if doc.media[..i].contains(medium) {
                return Err(invalid(format!("rotation.media[{i}]"), format!("{medium} is named twice")));
            }
        }
        check_recipients("rotation.recipients", &doc.recipients)?;
        if doc.datasets.is_empty() || doc.datasets.len() > MAX_ORDER_DATASETS {
            return Err(invalid("rotation.datasets", format!("{} datasets; 1 to {MAX_ORDER_DATASETS}", doc.datasets.len())));
        }
        let mut datasets = Vec::with_capacity(doc.datasets.len());
        for (i, text) in doc.datasets.iter().enumerate() {
            let field = format!("rotation.datasets[{i}]");
            let (pusher, dataset) = text.split_once('/').ok_or_else(|| invalid(&field, format!("`{}`: write it PUSHER/DATASET", text.escape_default())))?;
            check_identifier(&field, pusher)?;
            check_identifier(&field, dataset)?;
            datasets.push(DatasetDoc { pusher: pusher.into(), dataset: dataset.into() });
        }
        let bounded = |field: &str, value: Option<u32>, default: u32, max: u32| match value.unwrap_or(default) {
            n if (1..=max).contains(&n) => Ok(n),
            n => Err(invalid(field, format!("{n}; 1 to {max}"))),
        };
        Ok(Rotation {
            media: doc.media.clone(),
            every,
            recipients: doc.recipients.clone(),
            datasets,
            newest: bounded("rotation.newest", doc.newest, 1, MAX_NEWEST)?,
            keep: bounded("rotation.keep", doc.keep, 1, MAX_KEEP)?,
            verify_share: bounded("rotation.verify_share", doc.verify_share, 4, MAX_VERIFY_SHARE)?,
        })
    }

    pub fn to_doc(&self) -> RotationDoc {
        RotationDoc {
            media: self.media.clone(),
            every: self.every.to_string(),
            recipients: self.recipients.clone(),
            datasets: self.datasets.iter().map(|d| format!("{}/{}", d.pusher, d.dataset)).collect(),
            newest: (self.newest != 1).then_some(self.newest),
            keep: (self.keep != 1).then_some(self.keep),
            verify_share: (self.verify_share != 4).then_some(self.verify_share),
        }
    }

    pub fn names(&self, medium: &str) -> bool {
        self.media.iter().any(|m| m == medium)
    }

    /// What a rotation export of `medium` is, as an export order would say it. Its id (what
    /// the export's manifest names as its order) is the hash of the rotation as the policy
    /// signs it, so an export says which rotation made it.
    pub fn as_export(&self, medium: &str, now: Timestamp) -> PendingExport {
        let id = hex(&domain_hash(ROTATION_CONTEXT, &crate::canonical::encode(&self.to_doc())));
        PendingExport {
            id,
            snapshots: Vec::new(),
            datasets: self.datasets.clone(),
            export: ExportSpec { medium: medium.into(), recipients: self.recipients.clone(), newest: Some(self.newest), since: None },
            reason: format!("rotation: every {}, {} media", self.every, self.media.len()),
            signers: Vec::new(),
            accepted_at: now.to_string(),
            expires: Timestamp::MAX.to_string(),
        }
    }

    /// Whether the set is overdue at `now`: no medium written since `last` (or since `since`,
    /// when the vault first ran this rotation) for longer than `every` and a day.
    pub fn is_overdue(&self, last: Option<Timestamp>, since: Timestamp, now: Timestamp) -> bool {
        let from = last.unwrap_or(since);
        now.secs_since(from) > self.every.secs().saturating_add(OVERDUE_GRACE_SECS)
    }

    /// Which share of packs a returning medium re-hashes today (`turn` for
    /// `vault_store::export::Share::Rotating`): a different one each day, all of them over
    /// `verify_share` days.
    pub fn share_turn(now: Timestamp) -> u64 {
        u64::try_from(now.unix() / 86_400).unwrap_or(0)
    }
}

/// The exports to remove from a medium once a new one is written and read back: the oldest
/// beyond the newest `keep` (ids sort by creation time).
pub fn beyond_keep(export_ids: &[String], keep: u32) -> Vec<String> {
    let mut sorted = export_ids.to_vec();
    sorted.sort();
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    let surplus = sorted.len().saturating_sub(keep);
    sorted.truncate(surplus);
    sorted
}
