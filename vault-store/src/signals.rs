//! The store's side of the ransomware signals: the history a new snapshot of a (pusher,
//! dataset) is judged against, read from the profiles sealed beside its earlier snapshots.
//! The signals never refuse a push, so nothing here is an error: what cannot be read is
//! left out of the history, and said.

use std::path::Path;

use vault_core::push::manifest::MAX_MANIFEST_BYTES;
use vault_core::push::signals::assess::BASELINE_SNAPSHOTS;
use vault_core::push::signals::profile::MAX_PROFILE_BYTES;
use vault_core::push::signals::{History, Previous, Profile};

use crate::owners::receipt_of;
use crate::writer::sorted_entries;
use crate::{Store, MANIFEST_FILE, PROFILE_FILE, SNAPSHOTS_DIR};

/// The history, and what could not be read into it (each a path and why).
#[derive(Debug, Default)]
pub struct SignalsHistory {
    pub history: History,
    pub unreadable: Vec<String>,
}

impl Store {
    /// The newest [`BASELINE_SNAPSHOTS`] profiles of `pusher`'s `dataset` (oldest first) and
    /// the newest snapshot's files. Snapshot ids start with their receive time and name their
    /// dataset, so only that dataset's receipts are read.
    pub fn signals_history(&self, pusher: &str, dataset: &str) -> SignalsHistory {
        let mut out = SignalsHistory::default();
        let dir = self.root().join(SNAPSHOTS_DIR);
        let entries = match sorted_entries(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                out.unreadable.push(e.to_string());
                return out;
            }
        };
        let of_dataset = |path: &Path| path.file_name().and_then(|n| n.to_str()).is_some_and(|name| dataset_of(name) == Some(dataset));
        let mut profiles = Vec::new();
        let mut newest_files = None;
        for snapshot in entries.iter().rev().filter(|p| of_dataset(p)) {
            if profiles.len() == BASELINE_SNAPSHOTS {
                break;
            }
            match receipt_of(snapshot) {
                Ok(receipt) if receipt.pusher == pusher && receipt.dataset == dataset => {}
                Ok(_) => continue,
                Err(why) => {
                    out.unreadable.push(format!("{}: {why}", snapshot.display()));
                    continue;
                }
            }
            let read_profile = || -> Result<Profile, String> {
                let bytes = vault_io::read_bounded(&snapshot.join(PROFILE_FILE), MAX_PROFILE_BYTES).map_err(|e| e.to_string())?;
                Profile::from_bytes(&bytes).map_err(|e| e.to_string())
            };
            let profile = match read_profile() {
                Ok(profile) => profile,
                // Sealed before the signals existed: the history starts after it.
                Err(_) if !snapshot.join(PROFILE_FILE).exists() => break,
                Err(why) => {
                    out.unreadable.push(format!("{}: {why}", snapshot.join(PROFILE_FILE).display()));
                    break;
                }
            };
            if profiles.is_empty() {
                let files = vault_io::read_bounded(&snapshot.join(MANIFEST_FILE), MAX_MANIFEST_BYTES).map_err(|e| e.to_string()).and_then(|m| Previous::read(m, &profile).map_err(|e| e.to_string()));
                match files {
                    Ok(files) => newest_files = Some(files),
                    Err(why) => {
                        out.unreadable.push(format!("{}: {why}", snapshot.display()));
                        break;
                    }
                }
            }
            profiles.push(profile);
        }
        profiles.reverse();
        out.history = History::from_profiles(&profiles, newest_files);
        out
    }
}

/// The dataset a snapshot id names: `{16-char time}-{dataset}-{8 hex}`.
fn dataset_of(id: &str) -> Option<&str> {
    let rest = id.get(17..)?;
    let end = rest.len().checked_sub(9)?;
    (id.as_bytes().get(16) == Some(&b'-') && rest.as_bytes().get(end) == Some(&b'-')).then(|| &rest[..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_snapshot_id_names_its_dataset() {
        assert_eq!(super::dataset_of("20261125T101500Z-db-main-0123abcd"), Some("db-main"));
        assert_eq!(super::dataset_of("20261125T101500Z-x-0123abcd"), Some("x"));
        assert_eq!(super::dataset_of("short"), None);
    }
}
