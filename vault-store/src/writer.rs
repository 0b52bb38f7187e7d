//! The gatekeeper's side of the store: staging packs for sessions in flight, and sealing.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use vault_core::error::PushError;
use vault_core::push::chunk::ChunkId;
use vault_core::push::receipt::SignedReceipt;
use vault_core::push::signals::ChunkProbe;

use crate::direct::Appender;
use crate::immutable::{ensure_immutable, is_sealed, lift_immutable, make_immutable, Sealing};
use crate::index::{self, PackSet};
use crate::owners::{self, Owners};
use crate::space::{Need, Reserve, Space};
use crate::{io_error, random_hex, Result, StoreError, EXPIRED_DIR, MANIFEST_FILE, OWNED_FILE, PACKS_DIR, PROFILE_FILE, RECEIPT_FILE, SNAPSHOTS_DIR, STAGING_DIR};

/// Files a session stages (`begin`): pack, chunk records, manifest parts.
const STAGING_FILES: u64 = 3;
/// Inodes sealing adds at its peak: staging directory, manifest, receipt, `owned` list,
/// index and its temporary name.
const SEAL_INODES: u64 = 6;
/// What sealing writes besides its files' bytes (directory blocks, each file's last block),
/// and the least a push must find above the reserve to start.
const SEAL_OVERHEAD_BYTES: u64 = 64 * 1024;

pub struct Store {
    root: PathBuf,
    packs: RwLock<PackSet>,
    owners: RwLock<Owners>,
    space: Arc<Space>,
}

/// The steps of [`Store::seal_observed`], in order; the gatekeeper reports each as a
/// `seal_step` event (the power-cut tests cut at each). A seal without new chunks skips
/// `PackRenamed` and `IndexWritten`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SealStep {
    /// Manifest, receipt and `owned` list written and fsynced in a staging directory.
    StagedFiles,
    /// The staging pack fsynced.
    PackDurable,
    /// The pack renamed into `packs/`, without an index yet (removed at the next open if the
    /// seal stops here).
    PackRenamed,
    /// Its index written durably: the pack is live.
    IndexWritten,
    /// Pack, index and the snapshot's files carry the immutable flag, each fsynced.
    FilesImmutable,
    /// The snapshot directory renamed into `snapshots/`: from here the push is sealed.
    SnapshotVisible,
    /// The snapshot directory flagged and fsynced, and `snapshots/` fsynced: the receipt may go.
    DirSynced,
}

impl SealStep {
    pub const ALL: [SealStep; 7] =
        [SealStep::StagedFiles, SealStep::PackDurable, SealStep::PackRenamed, SealStep::IndexWritten, SealStep::FilesImmutable, SealStep::SnapshotVisible, SealStep::DirSynced];

    /// The step as events and the test harness name it (`pack_durable`).
    pub fn name(self) -> &'static str {
        match self {
            SealStep::StagedFiles => "staged_files",
            SealStep::PackDurable => "pack_durable",
            SealStep::PackRenamed => "pack_renamed",
            SealStep::IndexWritten => "index_written",
            SealStep::FilesImmutable => "files_immutable",
            SealStep::SnapshotVisible => "snapshot_visible",
            SealStep::DirSynced => "dir_synced",
        }
    }
}

/// Events carry a step by its [`SealStep::name`].
impl serde::Serialize for SealStep {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// What [`Store::open`] found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Staging entries removed: sessions that never sealed.
    pub staging_removed: usize,
    /// Expired snapshots a power cut left half removed in `expired/`, removed.
    pub expiries_finished: usize,
    /// Packs whose seal never finished (no index), removed.
    pub orphan_packs_removed: usize,
    pub live_packs: usize,
    pub chunks: usize,
    pub snapshots: usize,
    /// Packs set aside because they or their index are unreadable, oversized, truncated or
    /// altered (path, why): only the snapshots that need their chunks are unrestorable.
    pub damaged_packs: Vec<(PathBuf, String)>,
    /// Sealed files and directories that lacked the immutable flag, and what was done: a
    /// power cut inside a seal, or flags lifted offline.
    pub immutable_fixed: Vec<(PathBuf, Sealing)>,
    /// Sealed paths whose flag could not be checked or set (path, why).
    pub immutable_failed: Vec<(PathBuf, String)>,
    /// Packs without an index that are sealed (immutable): a pack is flagged only after its
    /// index is durable, so its index was lost since. Kept, never removed.
    pub sealed_orphans_kept: Vec<PathBuf>,
    /// (pusher, chunk) ownerships read from the snapshots.
    pub owned_chunks: usize,
    /// Snapshots whose pusher or `owned` list could not be read (path, why): their pusher
    /// re-sends what only they gave it. The snapshots themselves are untouched.
    pub ownership_unreadable: Vec<(PathBuf, String)>,
}

/// A session's chunks and manifest on their way in, all in staging: the chunk bytes (the
/// pack), one 45-byte record per chunk (id, offset, length, probe), and the manifest parts. Nothing
/// per chunk is kept in memory, so a session's memory does not grow with what it sends; the
/// records are read back once, at commit. Removed on drop unless sealed.
pub struct StagingPack {
    path: PathBuf,
    /// The pack's bytes, written around the page cache where the filesystem allows.
    file: Option<Appender>,
    records_path: PathBuf,
    records: BufWriter<File>,
    manifest_path: PathBuf,
    manifest: BufWriter<File>,
    count: u64,
    space: Arc<Space>,
    /// Bytes of the reserve check this pack holds (see [`crate::space`]).
    granted: u64,
    /// Bytes staged so far (pack, records, manifest parts), and up to where the grant covers.
    staged: u64,
    room_until: u64,
}

/// A session's staged chunks, read back at commit and sorted by id: what the manifest is
/// checked against, and (the ones it names) the new pack's index.
pub struct StagedTable {
    /// Id, offset in the pack, length, probe: 48 bytes each, as without the probe (it fits
    /// the tuple's padding).
    entries: Vec<(ChunkId, u64, u32, ChunkProbe)>,
}

const _: () = assert!(std::mem::size_of::<(ChunkId, u64, u32, ChunkProbe)>() == 48, "a staged chunk's entry stays 48 bytes in memory");

impl vault_core::push::ingest::StagedChunks for StagedTable {
    fn count(&self) -> usize {
        self.entries.len()
    }

    fn find(&self, id: &ChunkId) -> Option<(usize, u32)> {
        self.entries.binary_search_by(|(c, _, _, _)| c.cmp(id)).ok().map(|i| (i, self.entries[i].2))
    }

    fn probe(&self, index: usize) -> ChunkProbe {
        self.entries.get(index).map_or(ChunkProbe::UNMEASURED, |e| e.3)
    }

    fn is_proven(&self, index: usize) -> bool {
        self.entries.get(index).is_some_and(|e| e.1 == PROVEN_OFFSET)
    }
}

/// What sealing needs besides the pack.
pub struct SealInput<'a> {
    pub snapshot_id: &'a str,
    pub manifest: &'a [u8],
    pub receipt: &'a SignedReceipt,
    /// What the ransomware signals found ([`vault_core::push::signals::Profile`]): sealed
    /// beside the manifest, for the dataset's next snapshot to be judged against.
    pub profile: Option<&'a [u8]>,
}

/// What sealing did. The snapshot exists: the receipt is owed.
#[derive(Debug)]
pub struct Sealed {
    pub snapshot_dir: PathBuf,
    /// Files the filesystem would not mark immutable (made read-only instead).
    pub fallbacks: Vec<(PathBuf, String)>,
    /// What failed after the snapshot became visible, each naming the problem and what to do.
    pub warnings: Vec<String>,
    /// Chunks a scrub had found bad (with no good copy) that this seal stored afresh: healed.
    pub healed: Vec<ChunkId>,
}

impl Store {
    /// [`Store::open_with`] the default [`Reserve`].
    pub fn open(root: &Path) -> Result<(Store, Recovery)> {
        Store::open_with(root, Reserve::DEFAULT)
    }

    /// Opens (creating if needed) the store at `root`, and cleans what a crash left: every
    /// staging entry and every pack that never got its index. Sealed data is not touched,
    /// except that every sealed file and directory gets back an immutable flag it lacks.
    /// Pushes keep `reserve` free on the filesystem.
    pub fn open_with(root: &Path, reserve: Reserve) -> Result<(Store, Recovery)> {
        for dir in [PACKS_DIR, SNAPSHOTS_DIR, STAGING_DIR, EXPIRED_DIR] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|e| io_error(&path, e))?;
        }
        let mut recovery = Recovery::default();
        let staging = root.join(STAGING_DIR);
        for entry in fs::read_dir(&staging).map_err(|e| io_error(&staging, e))? {
            remove_entry_lifting_flags(&entry.map_err(|e| io_error(&staging, e))?.path())?;
            recovery.staging_removed += 1;
        }
        recovery.expiries_finished = crate::expiry::finish_interrupted(root)?;
        let mut packs = PackSet::load(root)?;
        for orphan in std::mem::take(&mut packs.orphans) {
            if is_sealed(&orphan)? {
                recovery.sealed_orphans_kept.push(orphan);
                continue;
            }
            fs::remove_file(&orphan).map_err(|e| io_error(&orphan, e))?;
            recovery.orphan_packs_removed += 1;
        }
        reseal(root, &mut recovery)?;
        recovery.live_packs = packs.packs.len();
        recovery.chunks = packs.chunks.len();
        recovery.damaged_packs = packs.damaged.iter().map(|d| (d.pack.clone(), d.reason.clone())).collect();
        let snapshots = root.join(SNAPSHOTS_DIR);
        recovery.snapshots = fs::read_dir(&snapshots).map_err(|e| io_error(&snapshots, e))?.count();
        let (owners, unreadable) = Owners::load(root)?;
        (recovery.owned_chunks, recovery.ownership_unreadable) = (owners.len(), unreadable);
        let store = Store { root: root.to_path_buf(), packs: RwLock::new(packs), owners: RwLock::new(owners), space: Arc::new(Space::new(root, reserve)) };
        Ok((store, recovery))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What pushes never take of the store's filesystem.
    pub fn reserve(&self) -> Reserve {
        self.space.reserve()
    }

    pub(crate) fn packs_read(&self) -> std::sync::RwLockReadGuard<'_, PackSet> {
        self.packs.read().expect("pack index lock")
    }

    pub(crate) fn packs_write(&self) -> std::sync::RwLockWriteGuard<'_, PackSet> {
        self.packs.write().expect("pack index lock")
    }

    pub(crate) fn owners_mut(&self) -> std::sync::RwLockWriteGuard<'_, Owners> {
        self.owners.write().expect("owners lock")
    }

    pub fn has_chunk(&self, id: &ChunkId) -> bool {
        self.chunk_len(id).is_some()
    }

    /// The length of a sealed chunk, if the store has it.
    pub fn chunk_len(&self, id: &ChunkId) -> Option<u32> {
        self.packs.read().expect("pack index lock").chunks.get(id).map(|loc| loc.len)
    }

    /// The length of a sealed chunk that `pusher` owns (sent itself, in a snapshot it sealed).
    pub fn owned_len(&self, pusher: &str, id: &ChunkId) -> Option<u32> {
        if !self.owners.read().expect("owners lock").owns(pusher, id) {
            return None;
        }
        self.chunk_len(id)
    }

    pub fn chunk_count(&self) -> usize {
        self.packs.read().expect("pack index lock").chunks.len()
    }

    pub fn snapshot_exists(&self, id: &str) -> bool {
        self.root.join(SNAPSHOTS_DIR).join(id).exists()
    }

    /// Starts a push's staging files; refused by the reserve rule before anything is created.
    pub fn begin(&self) -> Result<StagingPack> {
        let granted = self.space.grant(Need { bytes: SEAL_OVERHEAD_BYTES, inodes: STAGING_FILES + SEAL_INODES }, 0)?;
        self.begin_granted(granted).inspect_err(|_| self.space.release(granted))
    }

    fn begin_granted(&self, granted: u64) -> Result<StagingPack> {
        let stem = self.root.join(STAGING_DIR).join(random_hex(8));
        let create = |suffix: &str| -> Result<(PathBuf, File)> {
            let path = stem.with_extension(suffix);
            let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|e| io_error(&path, e))?;
            Ok((path, file))
        };
        let path = stem.with_extension("pack");
        let file = Appender::create(&path, true).map_err(|e| io_error(&path, e))?;
        let (records_path, records) = create("records")?;
        let (manifest_path, manifest) = create("manifest")?;
        Ok(StagingPack {
            path,
            file: Some(file),
            records_path,
            records: BufWriter::new(records),
            manifest_path,
            manifest: BufWriter::new(manifest),
            count: 0,
            space: self.space.clone(),
            granted,
            staged: 0,
            room_until: granted,
        })
    }

    /// Seals with every staged chunk indexed: for callers that staged exactly the chunks
    /// their manifest names (tools, tests). The gatekeeper seals what its manifest check
    /// marked ([`Store::seal`]).
    pub fn seal_all(&self, mut pack: StagingPack, input: SealInput<'_>) -> Result<Sealed> {
        let (_, table) = pack.read_back()?;
        let referenced = vec![true; table.entries.len()];
        self.seal(pack, table, &referenced, input)
    }

    /// [`Store::seal_observed`] with no one watching the steps.
    pub fn seal(&self, pack: StagingPack, table: StagedTable, referenced: &[bool], input: SealInput<'_>) -> Result<Sealed> {
        self.seal_observed(pack, table, referenced, input, &|_| {})
    }

    /// Seals a snapshot in the order of [`SealStep`], calling `observe` after each step. Every
    /// file carries the immutable flag, durably, before the snapshot becomes visible; its
    /// directory gets it right after its rename (Linux refuses to rename an immutable inode).
    ///
    /// An `Err` is a refusal: no snapshot is visible, and what staging held is removed (a
    /// pack indexed before the error only holds chunks, and dedups later pushes). Once the
    /// rename has made the snapshot visible nothing is an `Err` any more: what fails after it
    /// is a warning in [`Sealed`], and the receipt is owed.
    pub fn seal_observed(&self, mut pack: StagingPack, table: StagedTable, referenced: &[bool], input: SealInput<'_>, observe: &dyn Fn(SealStep)) -> Result<Sealed> {
        vault_core::canonical::check_identifier("snapshot id", input.snapshot_id)?;
        let final_dir = self.root.join(SNAPSHOTS_DIR).join(input.snapshot_id);
        if final_dir.exists() {
            return Err(StoreError::SnapshotExists { id: input.snapshot_id.to_string() });
        }
        // Only the chunks the manifest names are kept (sorted by id): all become the
        // pusher's, and the stored ones are indexed. The rest stay dead bytes in the pack,
        // paid for by the pusher's quota.
        let mut entries = table.entries;
        let mut position = 0;
        entries.retain(|_| {
            position += 1;
            referenced.get(position - 1).copied().unwrap_or(false)
        });
        // The last word on a proven chunk (the manifest check asked too): its copy must still be
        // live, or the snapshot would name bytes collection removed while the session ran.
        // The caller holds off collection from that check to the end of the seal.
        if let Some((id, _, _, _)) = entries.iter().find(|(id, offset, len, _)| *offset == PROVEN_OFFSET && self.chunk_len(id) != Some(*len)) {
            return Err(vault_core::Error::Push(PushError::ProvenChunkCollected { id: id.to_hex(), path: format!("snapshot `{}`", input.snapshot_id) }).into());
        }
        let owned: Vec<ChunkId> = entries.iter().map(|(id, _, _, _)| *id).collect();
        // The probes are done with; same size, so this reuses the table's memory.
        let entries: Vec<(ChunkId, u64, u32)> = entries.into_iter().filter(|(_, offset, _, _)| *offset != PROVEN_OFFSET).map(|(id, offset, len, _)| (id, offset, len)).collect();
        let owned_bytes = owners::encode(&owned)?;
        let index_bytes = index::encode(&entries)?;
        let receipt_bytes = input.receipt.to_file_bytes();
        // The seal gives the chunks to the pusher its receipt names, as `Owners::load` reads it.
        let pusher = vault_core::push::receipt::Receipt::from_bytes(&input.receipt.body)?.pusher;

        // 0. Room above the reserve for everything sealing writes.
        let files = [input.manifest.len(), receipt_bytes.len(), owned_bytes.len(), index_bytes.len(), input.profile.map_or(0, <[u8]>::len)];
        let need = files.iter().fold(SEAL_OVERHEAD_BYTES, |sum, len| sum.saturating_add(u64::try_from(*len).unwrap_or(u64::MAX)));
        pack.ask_room(Need { bytes: need, inodes: SEAL_INODES })?;

        let mut fallbacks = Vec::new();
        let mut flag = |path: &Path| -> Result<()> {
            if let Sealing::ReadOnlyFallback { reason } = make_immutable(path)? {
                fallbacks.push((path.to_path_buf(), reason));
            }
            Ok(())
        };

        // 1. The snapshot's files, durable in staging first.
        let staged = StagedSnapshot::create(&self.root)?;
        write_durable(&staged.path.join(MANIFEST_FILE), input.manifest)?;
        write_durable(&staged.path.join(RECEIPT_FILE), &receipt_bytes)?;
        write_durable(&staged.path.join(OWNED_FILE), &owned_bytes)?;
        if let Some(profile) = input.profile {
            write_durable(&staged.path.join(PROFILE_FILE), profile)?;
        }
        sync_dir(&staged.path)?;
        observe(SealStep::StagedFiles);

        // 2-4. The pack durable, renamed into place and indexed (the index makes it live). A
        //    pack of only dead bytes (proven or unnamed chunks) is published all the same, with
        //    an empty index, for collection to reclaim: the same work as any other commit.
        let keep = !entries.is_empty() || pack.bytes() > 0;
        let new_pack = self.publish_pack(&mut pack, keep.then_some(&index_bytes[..]), &|step, _| observe(step))?;

        // 5. Every file flagged and fsynced under its final name (the snapshot's files keep
        //    theirs when their directory moves).
        if let Some((pack_path, index_path)) = &new_pack {
            flag(pack_path)?;
            flag(index_path)?;
        }
        for file in [MANIFEST_FILE, RECEIPT_FILE, OWNED_FILE].into_iter().chain(input.profile.map(|_| PROFILE_FILE)) {
            flag(&staged.path.join(file))?;
        }
        let mut healed = Vec::new();
        if let Some((pack_path, _)) = new_pack {
            // A chunk stored again because every listed copy of it was bad is healed: the store
            // offers this copy from now on.
            let damaged = crate::scrub::load(&self.root).unwrap_or_default();
            healed = entries.iter().map(|(id, _, _)| *id).filter(|id| damaged.iter().any(|(_, bad)| bad == id)).collect();
            self.packs.write().expect("pack index lock").add_pack(pack_path, &entries);
        }
        observe(SealStep::FilesImmutable);

        // 6. The boundary: one rename makes the snapshot visible (it needs no new space).
        //    Before it, a refusal; after it, sealed.
        fs::rename(&staged.path, &final_dir).map_err(|e| io_error(&final_dir, e))?;
        staged.published();
        self.owners.write().expect("owners lock").add(&pusher, &owned);
        observe(SealStep::SnapshotVisible);

        // 7. Nothing below may refuse the push.
        let warnings = self.confirm(input.snapshot_id, &final_dir, &mut fallbacks);
        observe(SealStep::DirSynced);
        Ok(Sealed { snapshot_dir: final_dir, fallbacks, warnings, healed })
    }

    /// Makes a staged pack live, calling `observe` after each step: fsynced
    /// ([`SealStep::PackDurable`]), renamed into `packs/` under a fresh name
    /// ([`SealStep::PackRenamed`]), its `index` ([`index::encode`]) written durably
    /// ([`SealStep::IndexWritten`]). With no index (no chunk to keep) the pack is removed
    /// instead (`None`). The caller flags both files: until then a power cut leaves them for the
    /// next open to flag. `observe` is also told the new pack's name.
    pub(crate) fn publish_pack(&self, pack: &mut StagingPack, index: Option<&[u8]>, observe: &dyn Fn(SealStep, &str)) -> Result<Option<(PathBuf, PathBuf)>> {
        let name = random_hex(8);
        let file = pack.file.take().expect("a staging pack is published once");
        let file = file.finish().map_err(|e| io_error(&pack.path, e))?;
        file.sync_all().map_err(|e| io_error(&pack.path, e))?;
        drop(file);
        observe(SealStep::PackDurable, &name);
        let Some(index_bytes) = index else {
            fs::remove_file(&pack.path).map_err(|e| io_error(&pack.path, e))?;
            return Ok(None);
        };
        let packs_dir = self.root.join(PACKS_DIR);
        let pack_path = packs_dir.join(format!("{name}.pack"));
        fs::rename(&pack.path, &pack_path).map_err(|e| io_error(&pack_path, e))?;
        observe(SealStep::PackRenamed, &name);
        let index_path = packs_dir.join(format!("{name}.idx"));
        if let Err(e) = vault_io::write_atomic(&index_path, index_bytes, 0o444) {
            // Not live without its index: it goes now rather than at the next open.
            let _ = fs::remove_file(&pack_path);
            return Err(disk_full_aware(e));
        }
        observe(SealStep::IndexWritten, &name);
        Ok(Some((pack_path, index_path)))
    }

    /// The last step of a seal, after the snapshot became visible: flags its directory and
    /// makes the rename durable. Cannot fail; says what went wrong instead.
    fn confirm(&self, id: &str, dir: &Path, fallbacks: &mut Vec<(PathBuf, String)>) -> Vec<String> {
        let mut warnings = Vec::new();
        match make_immutable(dir) {
            Ok(Sealing::Immutable) => {}
            Ok(Sealing::ReadOnlyFallback { reason }) => fallbacks.push((dir.to_path_buf(), reason)),
            Err(e) => warnings
                .push(format!("snapshot `{id}` is sealed, but its directory could not be marked immutable ({e}); the next start re-applies the flag: restart the vault once the data disk is healthy")),
        }
        let snapshots = self.root.join(SNAPSHOTS_DIR);
        if let Err(e) = sync_dir(&snapshots) {
            warnings.push(format!(
                "snapshot `{id}` is sealed, but syncing {} failed ({e}): the snapshot may not survive a power cut; check the data disk, and push again if it is gone after a restart",
                snapshots.display()
            ));
        }
        warnings
    }
}

/// A snapshot directory in staging, removed (flags lifted) unless sealing published it.
struct StagedSnapshot {
    path: PathBuf,
    published: bool,
}

impl StagedSnapshot {
    fn create(root: &Path) -> Result<StagedSnapshot> {
        let path = root.join(STAGING_DIR).join(format!("snapshot-{}", random_hex(8)));
        fs::create_dir(&path).map_err(|e| io_error(&path, e))?;
        Ok(StagedSnapshot { path, published: false })
    }

    fn published(mut self) {
        self.published = true;
    }
}

impl Drop for StagedSnapshot {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: what is left goes at the next open.
            let _ = remove_entry_lifting_flags(&self.path);
        }
    }
}

/// Removes a staging entry (a session's file, or a snapshot directory of files) or an expired
/// snapshot. A seal that stopped after flagging its files and before publishing them left them
/// immutable; lifting the flag is safe only there, and in `expired/`, where nothing refers to
/// them any more.
pub(crate) fn remove_entry_lifting_flags(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| io_error(path, e))?;
    if !meta.is_dir() {
        if meta.is_file() {
            lift_immutable(path)?;
        }
        return fs::remove_file(path).map_err(|e| io_error(path, e));
    }
    lift_immutable(path)?;
    for entry in fs::read_dir(path).map_err(|e| io_error(path, e))? {
        let child = entry.map_err(|e| io_error(path, e))?.path();
        if fs::symlink_metadata(&child).is_ok_and(|m| m.is_file()) {
            lift_immutable(&child)?;
        }
    }
    fs::remove_dir_all(path).map_err(|e| io_error(path, e))
}

/// The entries of `dir`, sorted (so reports come in a stable order).
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        paths.push(entry.map_err(|e| io_error(dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Gives every sealed file and directory back an immutable flag it lacks: live packs and
/// indexes, each snapshot's files, then its directory. One open and one ioctl per sealed
/// path, at every start. A path that cannot be checked is reported, not fatal.
fn reseal(root: &Path, recovery: &mut Recovery) -> Result<()> {
    // Orphans are gone or kept by now; a `.tmp` left by an interrupted index write is not sealed.
    for path in sorted_entries(&root.join(PACKS_DIR))? {
        if path.extension().is_some_and(|ext| ext == "pack" || ext == "idx") {
            reseal_one(path, recovery);
        }
    }
    for snapshot in sorted_entries(&root.join(SNAPSHOTS_DIR))? {
        if fs::symlink_metadata(&snapshot).is_ok_and(|m| m.is_dir()) {
            match sorted_entries(&snapshot) {
                Ok(files) => files.into_iter().for_each(|file| reseal_one(file, recovery)),
                Err(e) => recovery.immutable_failed.push((snapshot.clone(), e.to_string())),
            }
        }
        reseal_one(snapshot, recovery);
    }
    Ok(())
}

fn reseal_one(path: PathBuf, recovery: &mut Recovery) {
    // Regular files and directories only: a symlink planted offline is not followed.
    if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() || m.is_dir()) {
        return;
    }
    match ensure_immutable(&path) {
        Ok(None) => {}
        Ok(Some(sealing)) => recovery.immutable_fixed.push((path, sealing)),
        Err(e) => recovery.immutable_failed.push((path, e.to_string())),
    }
}

fn disk_full_aware(err: vault_io::IoError) -> StoreError {
    match err {
        vault_io::IoError::Io { path, source } => io_error(&path, source),
        other => StoreError::File(other),
    }
}

fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| io_error(path, e))?;
    file.write_all(bytes).map_err(|e| io_error(path, e))?;
    file.sync_all().map_err(|e| io_error(path, e))
}

pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| io_error(path, e))
}

/// A staged chunk's record: id, offset in the pack, length (the pack index's entry), probe.
const RECORD_BYTES: usize = 32 + 8 + 4 + 1;
/// The offset of a proven chunk's record: its bytes are in a sealed pack already (the copy
/// the session sent, if any, is dead bytes in its own pack).
const PROVEN_OFFSET: u64 = u64::MAX;
/// The same, for byte counts (45 always fits).
const RECORD_BYTES_U64: u64 = RECORD_BYTES as u64;

impl StagingPack {
    /// [`StagingPack::append_probed`] for a chunk nobody probed.
    pub fn append(&mut self, id: ChunkId, data: &[u8]) -> Result<()> {
        self.append_probed(id, data, ChunkProbe::UNMEASURED)
    }

    /// Appends a verified chunk and its record. A full disk is reported as such.
    pub fn append_probed(&mut self, id: ChunkId, data: &[u8], probe: ChunkProbe) -> Result<()> {
        let offset = self.bytes();
        self.write_bytes(data)?;
        self.write_record(id, offset, self.len_of(data)?, probe)
    }

    /// Records a chunk the store already holds under another pusher, whose bytes this
    /// session sent and verified: sealing makes it this pusher's too, without a second copy.
    /// Records only: for tools and tests. The daemon uses [`StagingPack::prove_sent`].
    pub fn prove(&mut self, id: ChunkId, len: u32) -> Result<()> {
        self.ensure_room(RECORD_BYTES_U64)?;
        self.write_record(id, PROVEN_OFFSET, len, ChunkProbe::UNMEASURED)
    }

    /// [`StagingPack::prove`] for a chunk a pusher sent, with what probing its bytes found.
    /// The bytes are written to the pack like a stored chunk's and left there dead (not
    /// indexed; collection reclaims them), so a commit does the same disk work whether or not
    /// another pusher stored the chunk, and its timing does not tell the pusher which.
    pub fn prove_sent(&mut self, id: ChunkId, data: &[u8], probe: ChunkProbe) -> Result<()> {
        self.write_bytes(data)?;
        self.write_record(id, PROVEN_OFFSET, self.len_of(data)?, probe)
    }

    fn len_of(&self, data: &[u8]) -> Result<u32> {
        u32::try_from(data.len()).map_err(|_| StoreError::Corrupt { path: self.path.clone(), reason: format!("chunk of {} bytes", data.len()) })
    }

    /// Appends chunk bytes to the pack (room for them and their record checked first).
    fn write_bytes(&mut self, data: &[u8]) -> Result<()> {
        let len = u64::from(self.len_of(data)?);
        self.ensure_room(len.saturating_add(RECORD_BYTES_U64))?;
        let file = self.file.as_mut().expect("append before seal");
        file.write_all(data).map_err(|e| io_error(&self.path, e))
    }

    fn write_record(&mut self, id: ChunkId, offset: u64, len: u32, probe: ChunkProbe) -> Result<()> {
        let mut record = [0u8; RECORD_BYTES];
        record[..32].copy_from_slice(&id.0);
        record[32..40].copy_from_slice(&offset.to_be_bytes());
        record[40..44].copy_from_slice(&len.to_be_bytes());
        record[44] = probe.to_byte();
        self.records.write_all(&record).map_err(|e| io_error(&self.records_path, e))?;
        self.count += 1;
        Ok(())
    }

    /// Chunk bytes appended to the pack so far: where the next chunk starts (0 once published).
    pub fn bytes(&self) -> u64 {
        self.file.as_ref().map_or(0, Appender::len)
    }

    /// Appends the next part of the manifest.
    pub fn append_manifest(&mut self, part: &[u8]) -> Result<()> {
        self.ensure_room(u64::try_from(part.len()).unwrap_or(u64::MAX))?;
        self.manifest.write_all(part).map_err(|e| io_error(&self.manifest_path, e))
    }

    /// Checks the reserve before `bytes` more are staged: cheap while the last grant covers
    /// them, a statvfs when it does not (every few MiB; every write close to the reserve).
    fn ensure_room(&mut self, bytes: u64) -> Result<()> {
        let end = self.staged.saturating_add(bytes);
        if end > self.room_until {
            self.ask_room(Need { bytes, inodes: 0 })?;
        }
        self.staged = end;
        Ok(())
    }

    /// Replaces this pack's grant with one for `need`, after flushing what it buffered so
    /// statvfs counts every byte it staged.
    fn ask_room(&mut self, need: Need) -> Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush().map_err(|e| io_error(&self.path, e))?;
        }
        self.records.flush().map_err(|e| io_error(&self.records_path, e))?;
        self.manifest.flush().map_err(|e| io_error(&self.manifest_path, e))?;
        self.granted = self.space.grant(need, self.granted)?;
        self.room_until = self.staged.saturating_add(self.granted);
        Ok(())
    }

    /// The staged manifest and chunk table, read back once at commit (bounded by the
    /// session's limits before anything is allocated for them).
    pub fn read_back(&mut self) -> Result<(Vec<u8>, StagedTable)> {
        use vault_core::push::limits::MAX_SESSION_NEW_CHUNKS;
        use vault_core::push::manifest::MAX_MANIFEST_BYTES;
        self.manifest.flush().map_err(|e| io_error(&self.manifest_path, e))?;
        self.records.flush().map_err(|e| io_error(&self.records_path, e))?;
        let manifest = vault_io::read_bounded(&self.manifest_path, MAX_MANIFEST_BYTES)?;
        // Streamed record by record: the table is the only copy in memory (49 bytes a chunk: record and probe).
        if self.count > MAX_SESSION_NEW_CHUNKS {
            return Err(StoreError::Corrupt { path: self.records_path.clone(), reason: format!("{} records, at most {MAX_SESSION_NEW_CHUNKS}", self.count) });
        }
        let file = File::open(&self.records_path).map_err(|e| io_error(&self.records_path, e))?;
        let expected = self.count.saturating_mul(RECORD_BYTES as u64);
        let on_disk = file.metadata().map_err(|e| io_error(&self.records_path, e))?.len();
        if on_disk != expected {
            return Err(StoreError::Corrupt { path: self.records_path.clone(), reason: format!("{on_disk} bytes of records for {} chunks", self.count) });
        }
        let mut records = std::io::BufReader::new(file);
        let mut entries = Vec::with_capacity(usize::try_from(self.count).unwrap_or(0));
        let mut record = [0u8; RECORD_BYTES];
        for _ in 0..self.count {
            std::io::Read::read_exact(&mut records, &mut record).map_err(|e| io_error(&self.records_path, e))?;
            let id = ChunkId(record[..32].try_into().expect("32 bytes"));
            let offset = u64::from_be_bytes(record[32..40].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(record[40..44].try_into().expect("4 bytes"));
            let probe = ChunkProbe::from_byte(record[44])
                .ok_or_else(|| StoreError::Corrupt { path: self.records_path.clone(), reason: format!("chunk {id} has probe byte {:#04x}, which no probe writes", record[44]) })?;
            entries.push((id, offset, len, probe));
        }
        // A chunk staged twice keeps one record, a stored one before a proven one.
        entries.sort_unstable_by_key(|entry| (entry.0, entry.1));
        entries.dedup_by(|a, b| a.0 == b.0);
        // Both now live in memory only. Unlinked here, before the seal's fsyncs, so those
        // make the removal durable too: a power cut after the seal leaves staging empty.
        fs::remove_file(&self.records_path).map_err(|e| io_error(&self.records_path, e))?;
        fs::remove_file(&self.manifest_path).map_err(|e| io_error(&self.manifest_path, e))?;
        Ok((manifest, StagedTable { entries }))
    }
}

impl Drop for StagingPack {
    fn drop(&mut self) {
        // A session that did not seal leaves nothing behind (and the next start would
        // remove it anyway, should this process die first).
        if self.file.take().is_some() || self.path.exists() {
            let _ = fs::remove_file(&self.path);
        }
        let _ = fs::remove_file(&self.records_path);
        let _ = fs::remove_file(&self.manifest_path);
        self.space.release(self.granted);
    }
}
