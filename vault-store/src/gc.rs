//! Garbage collection: packs no snapshot needs any more leave the store, and packs mostly dead
//! are rewritten.
//!
//! Mark: every chunk named by the manifest of every snapshot in `snapshots/` (each manifest
//! checked against the hash its receipt signs). If any snapshot cannot be read, nothing is
//! collected: what it needs is unknown, so every pack stays. Only packs whose index was written
//! longer than `grace` ago are touched ([`vault_core::lifecycle::collection`] says how long and
//! which are worth rewriting).
//!
//! Sweep: a pack whose index names no chunk a snapshot needs (not even a second copy of one) is
//! removed ([`GcStep::IndexRemoved`], [`GcStep::PackRemoved`]) in an order a power cut cannot
//! turn into a lost chunk or a false alarm:
//!
//! 1. the pack's and then the index's immutable flags are lifted (a cut here: the next open
//!    flags them again, the pack is live as before);
//! 2. the index is removed and `packs/` fsynced: the pack is no longer live (a cut here: the
//!    next open removes it as a pack that never got its index, which it now is);
//! 3. the pack is removed and `packs/` fsynced.
//!
//! Repack: a pack that still holds needed chunks but is mostly dead has those chunks (the ones no
//! pack that stays holds a good copy of) read back, re-hashed and appended to a new pack through
//! staging, like a push's. The new pack is published as a seal publishes one (fsynced, renamed,
//! indexed, flagged: [`GcStep::CopyDurable`] to [`GcStep::CopyImmutable`]) and only then are
//! the old packs removed as above. A cut before the new index is durable leaves an unindexed
//! pack the next open removes, and the old packs live; a cut after it leaves every chunk in two
//! live packs, and the next collection finishes the job. A chunk that does not read back as its
//! hash stops the repack of its pack (the pack stays, for the scrub to list), and packs holding
//! copies a scrub listed as bad are not rewritten.
//!
//! Packs set aside as damaged are never touched.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use vault_core::lifecycle::collection::{repack_has_room, worth_repacking};
use vault_core::push::chunk::ChunkId;
use vault_core::units::Timestamp;

use crate::immutable::{make_immutable, with_flags_lifted, Sealing};
use crate::index::PackSet;
use crate::writer::{sorted_entries, sync_dir, SealStep, StagingPack};
use crate::{io_error, Result, Store, StoreError, PACKS_DIR, SNAPSHOTS_DIR};

/// The steps of a collection that change the disk, in order; the gatekeeper reports each as a
/// `gc_step` event naming the pack (the power-cut tests cut at each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GcStep {
    /// A repack's new pack fsynced in staging.
    CopyDurable,
    /// Renamed into `packs/`, without an index yet (removed at the next open if a cut stops it
    /// here).
    CopyRenamed,
    /// Its index written durably: the new pack is live beside the old ones.
    CopyIndexed,
    /// The new pack and its index carry the immutable flag.
    CopyImmutable,
    /// An old pack's index removed and `packs/` fsynced: that pack is no longer live.
    IndexRemoved,
    /// The old pack removed and `packs/` fsynced.
    PackRemoved,
}

impl GcStep {
    pub const ALL: [GcStep; 6] = [GcStep::CopyDurable, GcStep::CopyRenamed, GcStep::CopyIndexed, GcStep::CopyImmutable, GcStep::IndexRemoved, GcStep::PackRemoved];

    pub fn name(self) -> &'static str {
        match self {
            GcStep::CopyDurable => "copy_durable",
            GcStep::CopyRenamed => "copy_renamed",
            GcStep::CopyIndexed => "copy_indexed",
            GcStep::CopyImmutable => "copy_immutable",
            GcStep::IndexRemoved => "index_removed",
            GcStep::PackRemoved => "pack_removed",
        }
    }
}

impl serde::Serialize for GcStep {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// What one collection found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Chunks the snapshots need.
    pub live_chunks: usize,
    /// Packs removed (wholly dead, or rewritten), by name.
    pub packs_removed: Vec<String>,
    /// Bytes the removed packs and indexes took, less what their rewritten chunks take now.
    pub bytes_freed: u64,
    /// Packs no snapshot needs, or mostly dead, kept because they are younger than the grace.
    pub kept_young: usize,
    /// Packs kept because enough of their chunks are needed.
    pub kept_live: usize,
    /// Mostly dead packs whose needed chunks were copied into new packs (and that then went).
    pub packs_repacked: usize,
    /// The new packs, by name, and the chunks and bytes copied into them.
    pub packs_written: Vec<String>,
    pub chunks_copied: u64,
    pub bytes_copied: u64,
    /// Packs not rewritten, with why (a chunk that did not read back as its hash, a copy a
    /// scrub listed as bad, no room above the reserve).
    pub repack_skipped: Vec<(String, String)>,
    /// New packs the filesystem would not flag immutable (made read-only instead).
    pub fallbacks: Vec<(PathBuf, String)>,
    /// `may_go_on` said stop before every pack was done.
    pub stopped_early: bool,
}

/// A new pack being filled by a repack, and the old packs it replaces.
struct Repacking {
    pack: StagingPack,
    entries: Vec<(ChunkId, u64, u32)>,
    sources: Vec<PathBuf>,
}

impl Store {
    /// [`Store::collect_garbage_observed`] with no one watching the steps.
    pub fn collect_garbage(&self, now: Timestamp, grace: std::time::Duration, may_go_on: &dyn Fn() -> bool) -> Result<Collected> {
        self.collect_garbage_observed(now, grace, may_go_on, &|_, _| {})
    }

    /// Removes every pack no snapshot needs and rewrites those mostly dead, of those whose index
    /// is older than `grace` at vault time `now`, asking `may_go_on` before each and calling
    /// `observe` after each step on the disk (with the pack's name); then reloads the index of
    /// what is left, whether or not every step succeeded (the store never offers a chunk of a
    /// removed pack).
    pub fn collect_garbage_observed(&self, now: Timestamp, grace: std::time::Duration, may_go_on: &dyn Fn() -> bool, observe: &dyn Fn(GcStep, &str)) -> Result<Collected> {
        let live = live_chunks(self)?;
        let mut collected = Collected { live_chunks: live.len(), ..Collected::default() };
        let packs: Vec<PathBuf> = self.packs_read().packs.clone();
        let mut touched = false;
        let swept = self.sweep(&packs, &live, now, grace, may_go_on, observe, &mut collected, &mut touched);
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

    /// Removes the packs no snapshot needs, then rewrites those mostly dead (see the module's
    /// order); `touched` is set before the first change on disk.
    #[allow(clippy::too_many_arguments)]
    fn sweep(
        &self,
        packs: &[PathBuf],
        live: &HashSet<ChunkId>,
        now: Timestamp,
        grace: std::time::Duration,
        may_go_on: &dyn Fn() -> bool,
        observe: &dyn Fn(GcStep, &str),
        collected: &mut Collected,
        touched: &mut bool,
    ) -> Result<()> {
        let bad = crate::scrub::load(self.root()).unwrap_or_default();
        let mut mostly_dead = Vec::new();
        // Needed chunks with a good copy in a pack that stays whole: a repack copies none of them.
        let mut kept_copies: HashSet<ChunkId> = HashSet::new();
        for pack in packs {
            // Needed if its index names any chunk a snapshot needs, even one another pack also
            // holds: a second copy is not the collector's to judge. Unreadable now: kept.
            let Ok(entries) = crate::index::entries_of_pack(pack) else {
                collected.kept_live += 1;
                continue;
            };
            let stem = stem_of(pack);
            let needed = entries.iter().any(|(id, _, _)| live.contains(id));
            let live_bytes: u64 = entries.iter().filter(|(id, _, _)| live.contains(id)).map(|(_, _, len)| u64::from(*len)).sum();
            let pack_bytes = fs::metadata(pack).map(|m| m.len()).unwrap_or(0);
            let holds_bad_copies = bad.iter().any(|(bad_stem, _)| *bad_stem == stem);
            let young = !older_than(&pack.with_extension("idx"), now, grace)?;
            let worth = worth_repacking(pack_bytes, live_bytes);
            let rewrite = needed && worth && !young && !holds_bad_copies;
            if needed && !rewrite {
                kept_copies.extend(entries.iter().map(|(id, _, _)| *id).filter(|id| live.contains(id) && !bad.contains(&(stem.clone(), *id))));
                // Young counts only where age alone kept it.
                if young && worth && !holds_bad_copies {
                    collected.kept_young += 1;
                } else {
                    collected.kept_live += 1;
                }
                if holds_bad_copies && worth && !young {
                    collected.repack_skipped.push((stem, "a scrub listed a copy in it as bad: kept whole, for the chunks it still holds".into()));
                }
                continue;
            }
            if rewrite {
                mostly_dead.push(pack.clone());
                continue;
            }
            if young {
                collected.kept_young += 1;
                continue;
            }
            if !may_go_on() {
                collected.stopped_early = true;
                return Ok(());
            }
            *touched = true;
            self.remove_pack(pack, observe, collected)?;
        }
        self.repack(&mostly_dead, live, &kept_copies, may_go_on, observe, collected, touched)
    }

    /// Copies the needed chunks of `candidates` (those no pack in `kept_copies` holds) into new
    /// packs, each published before the old packs it replaces are removed.
    #[allow(clippy::too_many_arguments)]
    fn repack(
        &self,
        candidates: &[PathBuf],
        live: &HashSet<ChunkId>,
        kept_copies: &HashSet<ChunkId>,
        may_go_on: &dyn Fn() -> bool,
        observe: &dyn Fn(GcStep, &str),
        collected: &mut Collected,
        touched: &mut bool,
    ) -> Result<()> {
        // A chunk copied once needs no second copy.
        let mut copied: HashSet<ChunkId> = HashSet::new();
        let mut current: Option<Repacking> = None;
        let mut buffer = Vec::new();
        for source in candidates {
            if !may_go_on() {
                collected.stopped_early = true;
                break;
            }
            let stem = stem_of(source);
            let mut wanted: Vec<(ChunkId, u64, u32)> = match crate::index::entries_of_pack(source) {
                Ok(entries) => entries.into_iter().filter(|(id, _, _)| live.contains(id) && !kept_copies.contains(id) && !copied.contains(id)).collect(),
                Err(why) => {
                    collected.repack_skipped.push((stem, format!("index: {why}")));
                    continue;
                }
            };
            if wanted.is_empty() {
                // Every chunk it holds for the snapshots has a copy elsewhere: in a pack that
                // stays, one already published, or the one being filled (then it goes after).
                match current.as_mut() {
                    Some(repacking) => repacking.sources.push(source.clone()),
                    None => {
                        *touched = true;
                        self.remove_pack(source, observe, collected)?;
                        collected.packs_repacked += 1;
                    }
                }
                continue;
            }
            // Read in the order the chunks lie in the pack: one sequential pass.
            wanted.sort_by_key(|(_, offset, _)| *offset);
            let wanted_bytes: u64 = wanted.iter().map(|(_, _, len)| u64::from(*len)).sum();
            let has_room = current.as_ref().is_none_or(|r| repack_has_room(r.entries.len(), r.pack.bytes(), wanted.len(), wanted_bytes));
            if !has_room {
                let full = current.take().expect("a pack to close");
                self.finish_repack(full, observe, collected)?;
            }
            if current.is_none() {
                match self.begin() {
                    Ok(pack) => current = Some(Repacking { pack, entries: Vec::new(), sources: Vec::new() }),
                    Err(e) => {
                        collected.repack_skipped.push((stem, format!("{e}")));
                        break;
                    }
                }
            }
            let repacking = current.as_mut().expect("a pack being filled");
            *touched = true;
            match copy_chunks(source, &wanted, &mut repacking.pack, &mut buffer) {
                Ok(placed) => {
                    copied.extend(placed.iter().map(|(id, _, _)| *id));
                    repacking.entries.extend(placed);
                    repacking.sources.push(source.clone());
                }
                // What was appended before the failure stays as dead bytes of the new pack;
                // this pack stays whole.
                Err(why) => collected.repack_skipped.push((stem, why)),
            }
        }
        match current {
            Some(last) => self.finish_repack(last, observe, collected),
            None => Ok(()),
        }
    }

    /// Publishes a repack's new pack, then removes the packs it replaces.
    fn finish_repack(&self, repacking: Repacking, observe: &dyn Fn(GcStep, &str), collected: &mut Collected) -> Result<()> {
        let Repacking { mut pack, mut entries, sources } = repacking;
        if sources.is_empty() {
            // Nothing was copied whole: the staging pack goes (on drop).
            return Ok(());
        }
        // Every chunk the old packs held for the snapshots may already be elsewhere: then the
        // new pack has nothing to hold, and the old ones simply go.
        let published = if entries.is_empty() {
            None
        } else {
            entries.sort_unstable_by_key(|(id, _, _)| *id);
            let index = crate::index::encode(&entries)?;
            let step = |seal_step: SealStep, name: &str| match seal_step {
                SealStep::PackDurable => observe(GcStep::CopyDurable, name),
                SealStep::PackRenamed => observe(GcStep::CopyRenamed, name),
                _ => observe(GcStep::CopyIndexed, name),
            };
            self.publish_pack(&mut pack, Some(&index), &step)?
        };
        if let Some((pack_path, index_path)) = &published {
            let name = stem_of(pack_path);
            for path in [pack_path, index_path] {
                if let Sealing::ReadOnlyFallback { reason } = make_immutable(path)? {
                    collected.fallbacks.push((path.clone(), reason));
                }
            }
            observe(GcStep::CopyImmutable, &name);
            collected.packs_written.push(name);
            collected.chunks_copied += entries.len() as u64;
            collected.bytes_copied += entries.iter().map(|(_, _, len)| u64::from(*len)).sum::<u64>();
        }
        let written = published.iter().flat_map(|(p, i)| [p, i]).map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum::<u64>();
        for source in &sources {
            self.remove_pack(source, observe, collected)?;
            collected.packs_repacked += 1;
        }
        // What the new pack takes was not freed.
        collected.bytes_freed = collected.bytes_freed.saturating_sub(written);
        Ok(())
    }

    /// Removes a pack no longer needed, index first (see the module's order).
    fn remove_pack(&self, pack: &Path, observe: &dyn Fn(GcStep, &str), collected: &mut Collected) -> Result<()> {
        let dir = self.root().join(PACKS_DIR);
        let index = pack.with_extension("idx");
        let name = stem_of(pack);
        let freed = [pack, &index].iter().map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum::<u64>();
        // Both flagged again if the index stays; once it is gone the pack is an orphan, which
        // the next open removes should its unlink below fail.
        with_flags_lifted(&[pack, &index], || fs::remove_file(&index).map_err(|e| io_error(&index, e)))?;
        sync_dir(&dir)?;
        observe(GcStep::IndexRemoved, &name);
        fs::remove_file(pack).map_err(|e| io_error(pack, e))?;
        sync_dir(&dir)?;
        observe(GcStep::PackRemoved, &name);
        collected.bytes_freed += freed;
        collected.packs_removed.push(name);
        Ok(())
    }
}

/// Appends the chunks `wanted` (sorted by offset) of `source` to `pack`, each re-hashed on the
/// way; returns where each now lies in `pack`. A chunk that does not read back as its id stops
/// the copy: its pack must not go.
fn copy_chunks(source: &Path, wanted: &[(ChunkId, u64, u32)], pack: &mut StagingPack, buffer: &mut Vec<u8>) -> std::result::Result<Vec<(ChunkId, u64, u32)>, String> {
    let mut reader = File::open(source).map(|f| std::io::BufReader::with_capacity(1 << 20, f)).map_err(|e| format!("opening {}: {e}", source.display()))?;
    let mut position = 0u64;
    let mut placed = Vec::with_capacity(wanted.len());
    for (id, offset, len) in wanted {
        if *offset != position {
            reader.seek(std::io::SeekFrom::Start(*offset)).map_err(|e| format!("reading {}: {e}", source.display()))?;
        }
        buffer.resize(*len as usize, 0);
        reader.read_exact(buffer).map_err(|e| format!("reading chunk {id} of {}: {e}", source.display()))?;
        position = offset + u64::from(*len);
        if ChunkId::of(buffer) != *id {
            return Err(format!("chunk {id} reads back as {}: the pack stays whole, and the next scrub lists the bad copy", ChunkId::of(buffer)));
        }
        let at = pack.bytes();
        pack.append(*id, buffer).map_err(|e| format!("writing the new pack: {e}"))?;
        placed.push((*id, at, *len));
    }
    Ok(placed)
}

/// A pack's name: the stem of its file.
fn stem_of(pack: &Path) -> String {
    pack.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Every chunk some snapshot needs. One snapshot that cannot be read stops the collection.
fn live_chunks(store: &Store) -> Result<HashSet<ChunkId>> {
    let mut live = HashSet::new();
    for snapshot in sorted_entries(&store.root().join(SNAPSHOTS_DIR))? {
        let chunks = crate::owners::chunks_of(&snapshot)
            .map_err(|reason| StoreError::Corrupt { path: snapshot.clone(), reason: format!("{reason}; garbage collection stopped before removing anything: what this snapshot needs is unknown") })?;
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
