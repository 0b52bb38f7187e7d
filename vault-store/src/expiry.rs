//! Expiry: the one way a sealed snapshot leaves the store. Which snapshots may go is decided
//! by the pure rules of [`vault_core::lifecycle::retention`]; this is how one goes, in an order
//! a power cut at any instant cannot turn into a half snapshot:
//!
//! 1. the snapshot directory's immutable flag is lifted (Linux refuses to rename an immutable
//!    inode; its files keep theirs). A cut here: the next open re-flags it, nothing is lost;
//! 2. one rename moves it from `snapshots/` into `expired/`, and both directories are fsynced:
//!    from here the snapshot is gone for every reader, whole;
//! 3. its files' flags are lifted and the directory removed, and `expired/` fsynced. A cut
//!    here: the next open empties `expired/`.
//!
//! The chunks it referenced stay in their packs (garbage collection reclaims them); its pusher
//! no longer owns them, so `have` asks for them again and a push re-proves them.

use std::fs;
use std::path::{Path, PathBuf};

use vault_core::lifecycle::retention::SealedSnapshot;

use crate::immutable::with_flags_lifted;
use crate::owners::Owners;
use crate::writer::{remove_entry_lifting_flags, sorted_entries, sync_dir};
use crate::{io_error, Result, Store, StoreError, EXPIRED_DIR, SNAPSHOTS_DIR};

/// Snapshots whose receipt cannot be read, with why: never expired.
pub type Unreadable = Vec<(PathBuf, String)>;

/// What [`Store::expire`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Gone, in the order asked.
    pub expired: Vec<String>,
    /// Asked for but not expired, with why (the snapshot stays whole).
    pub failed: Vec<(String, String)>,
    /// `may_go_on` said stop before every snapshot was done.
    pub stopped_early: bool,
}

impl Store {
    /// Every sealed snapshot with the retention facts its receipt signs. A snapshot whose
    /// receipt cannot be read or does not verify is listed apart, with why: it never expires.
    pub fn sealed_snapshots(&self) -> Result<(Vec<SealedSnapshot>, Unreadable)> {
        let mut sealed = Vec::new();
        let mut unreadable = Vec::new();
        for dir in sorted_entries(&self.root().join(SNAPSHOTS_DIR))? {
            match crate::owners::receipt_of(&dir) {
                Ok(r) if dir.file_name().is_some_and(|name| *name == *r.snapshot_id) => {
                    sealed.push(SealedSnapshot { id: r.snapshot_id, pusher: r.pusher, dataset: r.dataset, received_at: r.received_at, retain_until: r.retain_until, bytes_new: r.bytes_new });
                }
                Ok(r) => unreadable.push((dir, format!("its receipt names snapshot `{}`", r.snapshot_id))),
                Err(why) => unreadable.push((dir, why)),
            }
        }
        Ok((sealed, unreadable))
    }

    /// Expires `ids` one by one (each whole or not at all), asking `may_go_on` before each, then
    /// recounts what every pusher owns from the snapshots left.
    pub fn expire(&self, ids: &[String], may_go_on: &dyn Fn() -> bool) -> Result<Expired> {
        let mut done = Expired::default();
        for id in ids {
            if !may_go_on() {
                done.stopped_early = true;
                break;
            }
            match self.expire_one(id) {
                Ok(()) => done.expired.push(id.clone()),
                Err(e) => done.failed.push((id.clone(), e.to_string())),
            }
        }
        if !done.expired.is_empty() {
            let (owners, _) = Owners::load(self.root())?;
            *self.owners_mut() = owners;
        }
        Ok(done)
    }

    fn expire_one(&self, id: &str) -> Result<()> {
        // A snapshot id as the vault makes them: one path component, nothing hidden.
        vault_core::canonical::check_identifier("snapshot id", id)?;
        let snapshots = self.root().join(SNAPSHOTS_DIR);
        let expired = self.root().join(EXPIRED_DIR);
        let dir = snapshots.join(id);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(StoreError::NoSnapshot { id: id.to_string() });
        }
        let gone = expired.join(id);
        with_flags_lifted(&[&dir], || fs::rename(&dir, &gone).map_err(|e| io_error(&dir, e)))?;
        sync_dir(&snapshots)?;
        sync_dir(&expired)?;
        remove_entry_lifting_flags(&gone)?;
        sync_dir(&expired)
    }
}

/// Removes what an expiry cut by a power loss left in `expired/`; how many.
pub(crate) fn finish_interrupted(root: &Path) -> Result<usize> {
    let expired = root.join(EXPIRED_DIR);
    let mut removed = 0;
    for entry in sorted_entries(&expired)? {
        remove_entry_lifting_flags(&entry)?;
        removed += 1;
    }
    if removed > 0 {
        sync_dir(&expired)?;
    }
    Ok(removed)
}
