//! Which sealed snapshots an export order comes to, judged against the receipts at the moment
//! the export is written: the ids it names, and of each dataset it names the newest `newest`
//! (received at or after `since`, when given). A named id that is no longer sealed (expired,
//! purged) is listed as missing, not an error: the rest is still worth carrying out.

use std::collections::BTreeSet;

use crate::error::{invalid, Result};
use crate::export::MAX_EXPORT_SNAPSHOTS;
use crate::policy::orders::PendingExport;
use crate::units::Timestamp;

/// A sealed snapshot, as its verified receipt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub id: String,
    pub pusher: String,
    pub dataset: String,
    pub received_at: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Ids to export, sorted (ids sort by seal time).
    pub snapshots: Vec<String>,
    /// Ids the order names that are not sealed.
    pub missing: Vec<String>,
}

pub fn select(order: &PendingExport, sealed: &[Sealed]) -> Result<Selection> {
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut missing = Vec::new();
    for id in &order.snapshots {
        if sealed.iter().any(|s| &s.id == id) {
            chosen.insert(id.clone());
        } else {
            missing.push(id.clone());
        }
    }
    let since = match &order.export.since {
        Some(text) => Some(Timestamp::parse(text).map_err(|reason| invalid("export.since", reason))?),
        None => None,
    };
    // Absent `newest`: one, or all of them when `since` bounds the choice.
    let newest = order.export.newest.map_or(if since.is_some() { usize::MAX } else { 1 }, |n| usize::try_from(n).unwrap_or(usize::MAX));
    for dataset in &order.datasets {
        let mut of_dataset: Vec<&Sealed> = sealed.iter().filter(|s| s.pusher == dataset.pusher && s.dataset == dataset.dataset && since.is_none_or(|since| s.received_at >= since)).collect();
        of_dataset.sort_by(|a, b| (b.received_at, &b.id).cmp(&(a.received_at, &a.id)));
        chosen.extend(of_dataset.into_iter().take(newest).map(|s| s.id.clone()));
    }
    if chosen.len() > MAX_EXPORT_SNAPSHOTS {
        return Err(invalid(
            "export",
            format!("the order comes to {} snapshots, at most {MAX_EXPORT_SNAPSHOTS} go in one export: sign orders with a smaller `newest` or a later `since`", chosen.len()),
        ));
    }
    Ok(Selection { snapshots: chosen.into_iter().collect(), missing })
}
