//! Garbage collection: packs no snapshot needs any more leave the store.
//!
//! Mark: every chunk named by the manifest of every snapshot in `snapshots/` (each manifest
//! checked against the hash its receipt signs). If any snapshot cannot be read, nothing is
//! collected: what it needs is unknown, so every pack stays. Sweep: a live pack whose index names
//! no chunk a snapshot needs (not even a second copy of one), and whose index was written longer
//! than `grace` ago, is removed in an order a power cut cannot turn into a lost chunk or a false
//! alarm:
//!
//! 1. the pack's and then the index's immutable flags are lifted (a cut here: the next open
//!    flags them again, the pack is live as before);
//! 2. the index is removed and `packs/` fsynced: the pack is no longer live (a cut here: the
//!    next open removes it as a pack that never got its index, which it now is);
//! 3. the pack is removed and `packs/` fsynced.
//!
//! Packs set aside as damaged are never touched. Packs that still hold a needed chunk are kept
//! whole (repacking their live chunks into a new pack is a later step).

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use vault_core::push::chunk::ChunkId;
use vault_core::units::Timestamp;

use crate::immutable::lift_immutable;
use crate::index::PackSet;
use crate::writer::{sorted_entries, sync_dir};
use crate::{io_error, Result, Store, StoreError, PACKS_DIR, SNAPSHOTS_DIR};

/// What one collection found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Chunks the snapshots need.
    pub live_chunks: usize,
    /// Packs removed, by name.
    pub packs_removed: Vec<String>,
    /// Bytes their packs and indexes took.
    pub bytes_freed: u64,
    /// Packs no snapshot needs, kept because they are younger than the grace.
    pub kept_young: usize,
    /// Packs kept because some of their chunks are needed.
    pub kept_live: usize,
    /// `may_go_on` said stop before every pack was done.
    pub stopped_early: bool,
}

impl Store {
    /// Removes every pack no snapshot needs whose index is older than `grace` at vault time
    /// `now`, asking `may_go_on` before each; then reloads the index of what is left, whether
    /// or not every removal succeeded (the store never offers a chunk of a removed pack).
    pub fn collect_garbage(&self, now: Timestamp, grace: std::time::Duration, may_go_on: &dyn Fn() -> bool) -> Result<Collected> {
        let live = live_chunks(self)?;
        let mut collected = Collected { live_chunks: live.len(), ..Collected::default() };
        let packs: Vec<PathBuf> = self.packs_read().packs.clone();
        let mut touched = false;
        let swept = self.sweep(&packs, &live, now, grace, may_go_on, &mut collected, &mut touched);
        if !touched {
            return swept.map(|()| collected);
        }
        {
            // Bad copies in removed packs are gone with them.
            let listed = crate::scrub::load(self.root()).unwrap_or_default();
            let kept: std::collections::BTreeSet<_> = listed.iter().filter(|(stem, _)| !collected.packs_removed.contains(stem)).cloned().collect();
            let saved = if kept.len() != listed.len() { crate::scrub::save(self.root(), &kept) } else { Ok(()) };
            let reloaded = PackSet::load(self.root());
            let mut packs = self.packs_write();
            *packs = match reloaded {
                // Orphans were removed at open; none can have appeared while sealed.
                Ok(mut reloaded) => {
                    reloaded.orphans.clear();
                    reloaded
                }
                // Offer nothing rather than a chunk that may be gone: pushes send it again.
                Err(_) => PackSet::default(),
            };
            drop(packs);
            swept?;
            saved?;
        }
        Ok(collected)
    }

    /// Removes the packs no snapshot needs (see the module's order); `touched` is set before the
    /// first change on disk.
    #[allow(clippy::too_many_arguments)]
    fn sweep(&self, packs: &[PathBuf], live: &HashSet<ChunkId>, now: Timestamp, grace: std::time::Duration, may_go_on: &dyn Fn() -> bool, collected: &mut Collected, touched: &mut bool) -> Result<()> {
        let dir = self.root().join(PACKS_DIR);
        for pack in packs {
            // Needed if its index names any chunk a snapshot needs, even one another pack also
            // holds: a second copy is not the collector's to judge. Unreadable now: kept.
            let needed = crate::index::entries_of_pack(pack).map_or(true, |entries| entries.iter().any(|(id, _, _)| live.contains(id)));
            if needed {
                collected.kept_live += 1;
                continue;
            }
            let index = pack.with_extension("idx");
            if !older_than(&index, now, grace)? {
                collected.kept_young += 1;
                continue;
            }
            if !may_go_on() {
                collected.stopped_early = true;
                break;
            }
            let freed = [pack, &index].iter().map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum::<u64>();
            *touched = true;
            lift_immutable(pack)?;
            lift_immutable(&index)?;
            fs::remove_file(&index).map_err(|e| io_error(&index, e))?;
            sync_dir(&dir)?;
            fs::remove_file(pack).map_err(|e| io_error(pack, e))?;
            sync_dir(&dir)?;
            collected.bytes_freed += freed;
            collected.packs_removed.push(pack.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        }
        Ok(())
    }
}

/// Every chunk some snapshot needs. One snapshot that cannot be read stops the collection.
fn live_chunks(store: &Store) -> Result<HashSet<ChunkId>> {
    let mut live = HashSet::new();
    for snapshot in sorted_entries(&store.root().join(SNAPSHOTS_DIR))? {
        let chunks = crate::owners::chunks_of(&snapshot).map_err(|reason| StoreError::Corrupt {
            path: snapshot.clone(),
            reason: format!("{reason}; garbage collection stopped before removing anything: what this snapshot needs is unknown"),
        })?;
        live.extend(chunks);
    }
    Ok(live)
}

/// Was `path` last written more than `grace` before `now`?
fn older_than(path: &std::path::Path, now: Timestamp, grace: std::time::Duration) -> Result<bool> {
    let modified = fs::metadata(path).and_then(|m| m.modified()).map_err(|e| io_error(path, e))?;
    let written = modified.duration_since(std::time::UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0);
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    Ok(now.unix().saturating_sub(written) > grace)
}
