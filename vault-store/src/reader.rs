//! Reading a store offline (`vaultctl restore`, `vaultctl snapshots`): from the vault's own
//! disk or from a copy of its store. Read-only: it opens nothing for writing, and every
//! chunk is re-hashed before it is handed out.
//!
//! A damaged pack costs only the snapshots that need its chunks: [`StoreReader::snapshot_health`]
//! says which, without reading any data, and reading such a chunk names the pack and why.
//! At most [`MAX_OPEN_PACKS`] pack files are open at once, however many packs a snapshot spans.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use vault_core::push::chunk::ChunkId;
use vault_core::push::manifest::{Manifest, MAX_MANIFEST_BYTES};
use vault_core::push::receipt::{Receipt, SignedReceipt, MAX_RECEIPT_BYTES};

use crate::index::{self, ChunkLocation, DamagedPack, PackSet};
use crate::{io_error, Result, StoreError, MANIFEST_FILE, RECEIPT_FILE, SNAPSHOTS_DIR};

/// Pack files kept open at once: well under the usual 1024-descriptor limit, and enough that
/// a restore reading its chunks in order rarely reopens a pack.
pub const MAX_OPEN_PACKS: usize = 64;

pub struct StoreReader {
    root: PathBuf,
    packs: PackSet,
    open_packs: Mutex<OpenPacks>,
    /// Built the first time a chunk is found missing.
    damaged_chunks: OnceLock<Attribution>,
}

/// What the damaged packs' indexes say, read without trusting them.
struct Attribution {
    /// Chunk -> the damaged pack (position in `packs.damaged`) whose index names it.
    by_chunk: HashMap<ChunkId, usize>,
    /// Damaged packs whose index is unreadable or altered, so may hold chunks it does not name.
    unsure: Vec<usize>,
}

/// The least recently used pack file is closed first.
#[derive(Default)]
struct OpenPacks {
    files: HashMap<u32, (Arc<File>, u64)>,
    uses: u64,
}

impl OpenPacks {
    fn get(&mut self, pack: u32, path: &Path) -> Result<Arc<File>> {
        self.uses += 1;
        if let Some((file, last_use)) = self.files.get_mut(&pack) {
            *last_use = self.uses;
            return Ok(Arc::clone(file));
        }
        if self.files.len() >= MAX_OPEN_PACKS {
            let oldest = self.files.iter().min_by_key(|(_, (_, last_use))| *last_use).map(|(pack, _)| *pack);
            if let Some(oldest) = oldest {
                self.files.remove(&oldest);
            }
        }
        let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|e| io_error(path, e))?;
        let file = Arc::new(file);
        self.files.insert(pack, (Arc::clone(&file), self.uses));
        Ok(file)
    }
}

/// The chunks of one snapshot that no live pack holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotHealth {
    /// Distinct chunks the snapshot names.
    pub chunks: usize,
    /// Missing chunks a damaged pack's index names, by pack.
    pub in_damaged_packs: Vec<DamagedChunks>,
    /// Missing chunks no index names.
    pub in_no_pack: Vec<ChunkId>,
    /// When some chunks are in no pack: the damaged packs whose index is unreadable or
    /// altered, which may hold them.
    pub maybe_in: Vec<DamagedPack>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedChunks {
    pub pack: PathBuf,
    pub reason: String,
    pub chunks: Vec<ChunkId>,
}

impl SnapshotHealth {
    /// Every chunk is in a live pack (each is still re-hashed when read).
    pub fn is_restorable(&self) -> bool {
        self.in_damaged_packs.is_empty() && self.in_no_pack.is_empty()
    }

    pub fn unavailable_chunks(&self) -> usize {
        self.in_damaged_packs.iter().map(|d| d.chunks.len()).sum::<usize>() + self.in_no_pack.len()
    }
}

/// `ok`, or `UNRESTORABLE: ...` naming the damaged packs and why.
impl fmt::Display for SnapshotHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_restorable() {
            return write!(f, "ok");
        }
        write!(f, "UNRESTORABLE:")?;
        let mut sep = " ";
        if !self.in_damaged_packs.is_empty() {
            let n: usize = self.in_damaged_packs.iter().map(|d| d.chunks.len()).sum();
            let packs: Vec<String> = self.in_damaged_packs.iter().map(|d| format!("{}: {}", d.pack.display(), d.reason)).collect();
            write!(f, " {n} chunk(s) in damaged packs ({})", packs.join("; "))?;
            sep = ", ";
        }
        if !self.in_no_pack.is_empty() {
            write!(f, "{sep}{} chunk(s) in no live pack", self.in_no_pack.len())?;
            if !self.maybe_in.is_empty() {
                write!(f, ", perhaps in damaged packs ({})", describe_packs(&self.maybe_in))?;
            }
        }
        Ok(())
    }
}

/// `path: reason; path: reason`.
fn describe_packs(packs: &[DamagedPack]) -> String {
    packs.iter().map(|d| format!("{}: {}", d.pack.display(), d.reason)).collect::<Vec<_>>().join("; ")
}

/// That `root` looks like a store (it has `snapshots/`), for the offline readers; a mistyped
/// path is not a corrupt store, so it says what is there instead.
pub fn check_store_dir(root: &Path) -> Result<()> {
    if root.join(SNAPSHOTS_DIR).is_dir() {
        return Ok(());
    }
    let found = match std::fs::read_dir(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no such directory",
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => "not a directory",
        Err(e) => return Err(io_error(root, e)),
        Ok(mut entries) => match entries.next() {
            None => "an empty directory",
            Some(_) => "a directory without `snapshots/`",
        },
    };
    Err(StoreError::NotAStore { path: root.to_path_buf(), found })
}

impl StoreReader {
    /// Fails only if `root` is not a store or `packs/` cannot be listed: a bad pack or index
    /// is set aside (see [`StoreReader::damaged_packs`]) and every other pack is used.
    pub fn open(root: &Path) -> Result<StoreReader> {
        check_store_dir(root)?;
        Ok(StoreReader { root: root.to_path_buf(), packs: PackSet::load(root)?, open_packs: Mutex::new(OpenPacks::default()), damaged_chunks: OnceLock::new() })
    }

    /// Packs that were set aside, with why.
    pub fn damaged_packs(&self) -> &[DamagedPack] {
        &self.packs.damaged
    }

    /// Ids of the sealed snapshots, oldest first (ids start with the vault's receive time).
    /// Nothing in them is checked yet: see [`StoreReader::receipt`].
    pub fn snapshot_ids(&self) -> Result<Vec<String>> {
        let dir = self.root.join(SNAPSHOTS_DIR);
        let mut ids: Vec<String> = std::fs::read_dir(&dir).map_err(|e| io_error(&dir, e))?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        ids.sort();
        Ok(ids)
    }

    fn snapshot_dir(&self, id: &str) -> Result<PathBuf> {
        vault_core::canonical::check_identifier("snapshot id", id)?;
        let dir = self.root.join(SNAPSHOTS_DIR).join(id);
        if !dir.is_dir() {
            return Err(StoreError::NoSnapshot { id: id.to_string() });
        }
        Ok(dir)
    }

    /// The receipt as stored, unverified: check it against the vault key you pinned.
    pub fn receipt(&self, id: &str) -> Result<SignedReceipt> {
        let path = self.snapshot_dir(id)?.join(RECEIPT_FILE);
        Ok(SignedReceipt::from_file_bytes(&vault_io::read_bounded(&path, 2 * MAX_RECEIPT_BYTES)?)?)
    }

    /// The manifest, checked against the hash its receipt signs, trusting the key the receipt
    /// itself names. Use [`StoreReader::manifest_checked`] with a receipt verified under the
    /// pinned vault key to trust only that key.
    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        let receipt = self.receipt(id)?.verify_self_consistent()?;
        self.manifest_checked(id, &receipt)
    }

    /// The manifest, checked against the hash `receipt` (already verified by the caller) signs.
    pub fn manifest_checked(&self, id: &str, receipt: &Receipt) -> Result<Manifest> {
        let path = self.snapshot_dir(id)?.join(MANIFEST_FILE);
        let bytes = vault_io::read_bounded(&path, MAX_MANIFEST_BYTES)?;
        let actual = vault_core::keys::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        if actual != receipt.manifest_sha256 {
            return Err(StoreError::Corrupt { path, reason: format!("manifest hashes to {actual}, receipt says {}", receipt.manifest_sha256) });
        }
        Ok(Manifest::decode(&bytes)?)
    }

    /// Whether every chunk of the snapshot is in a live pack, without reading any chunk.
    pub fn snapshot_health(&self, id: &str) -> Result<SnapshotHealth> {
        Ok(self.health(&self.manifest(id)?))
    }

    /// [`StoreReader::snapshot_health`] of a manifest already read.
    pub fn health(&self, manifest: &Manifest) -> SnapshotHealth {
        let mut seen = HashSet::new();
        let mut health = SnapshotHealth::default();
        let mut by_pack: HashMap<usize, Vec<ChunkId>> = HashMap::new();
        for (_, chunk) in manifest.chunk_refs() {
            if !seen.insert(chunk.id) || self.packs.chunks.contains_key(&chunk.id) {
                continue;
            }
            match self.damaged_pack_of(&chunk.id) {
                Some(pack) => by_pack.entry(pack).or_default().push(chunk.id),
                None => health.in_no_pack.push(chunk.id),
            }
        }
        health.chunks = seen.len();
        if !health.in_no_pack.is_empty() {
            health.maybe_in = self.unsure_packs();
        }
        let mut by_pack: Vec<(usize, Vec<ChunkId>)> = by_pack.into_iter().collect();
        by_pack.sort_by_key(|(pack, _)| *pack);
        health.in_damaged_packs = by_pack
            .into_iter()
            .map(|(pack, chunks)| {
                let damaged = &self.packs.damaged[pack];
                DamagedChunks { pack: damaged.pack.clone(), reason: damaged.reason.clone(), chunks }
            })
            .collect();
        health
    }

    fn attribution(&self) -> &Attribution {
        self.damaged_chunks.get_or_init(|| {
            let mut attribution = Attribution { by_chunk: HashMap::new(), unsure: Vec::new() };
            for (position, damaged) in self.packs.damaged.iter().enumerate() {
                let (ids, sound) = index::named_by_damaged(damaged);
                for id in ids {
                    attribution.by_chunk.entry(id).or_insert(position);
                }
                if !sound {
                    attribution.unsure.push(position);
                }
            }
            attribution
        })
    }

    /// The damaged pack whose index names `id`, if any (position in `packs.damaged`).
    fn damaged_pack_of(&self, id: &ChunkId) -> Option<usize> {
        if self.packs.damaged.is_empty() {
            return None;
        }
        self.attribution().by_chunk.get(id).copied()
    }

    /// Damaged packs that may hold chunks no index names.
    fn unsure_packs(&self) -> Vec<DamagedPack> {
        if self.packs.damaged.is_empty() {
            return Vec::new();
        }
        self.attribution().unsure.iter().map(|p| self.packs.damaged[*p].clone()).collect()
    }

    /// The live pack files that hold a manifest's chunks (the one a restore would read each
    /// from). `Err`: a chunk no live pack holds, and which.
    pub fn packs_holding(&self, manifest: &Manifest) -> std::result::Result<std::collections::BTreeSet<PathBuf>, String> {
        let mut packs = std::collections::BTreeSet::new();
        for (_, chunk) in manifest.chunk_refs() {
            let loc = self.packs.chunks.get(&chunk.id).ok_or_else(|| format!("chunk {} is in no live pack", chunk.id))?;
            packs.insert(self.packs.pack_path(loc).to_path_buf());
        }
        Ok(packs)
    }

    /// A chunk's bytes, re-hashed: a chunk that does not match its id is an error, never data.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let Some(loc) = self.packs.chunks.get(id).copied() else {
            return Err(match self.damaged_pack_of(id) {
                Some(pack) => {
                    let damaged = &self.packs.damaged[pack];
                    StoreError::Corrupt { path: damaged.pack.clone(), reason: format!("chunk {id} cannot be read: this pack is damaged ({}) and no other pack holds the chunk", damaged.reason) }
                }
                None => {
                    let unsure = self.unsure_packs();
                    let perhaps = if unsure.is_empty() { String::new() } else { format!("; it may be in a damaged pack ({})", describe_packs(&unsure)) };
                    StoreError::Corrupt { path: self.root.clone(), reason: format!("chunk {id} is named by a snapshot but is in no live pack{perhaps}") }
                }
            });
        };
        // Any copy that re-hashes is the chunk (docs/STORE-FORMAT.md): each live copy is tried in
        // turn, so one that rotted since the last scrub (or whose listing was lost) costs nothing
        // while another is sound.
        let mut tried = Vec::new();
        for copy in self.packs.copies(id) {
            match self.read_copy(id, &copy) {
                Ok(data) => return Ok(data),
                Err(why) => tried.push(why),
            }
        }
        let path = self.packs.pack_path(&loc).to_path_buf();
        Err(StoreError::Corrupt { path, reason: format!("chunk {id}: no live copy re-hashes ({})", tried.join("; ")) })
    }

    /// One copy of a chunk, re-hashed; `Err` says which pack and why not.
    fn read_copy(&self, id: &ChunkId, copy: &ChunkLocation) -> std::result::Result<Vec<u8>, String> {
        let pack_path = self.packs.pack_path(copy);
        // A length comes from a u32: it fits a usize.
        let mut data = vec![0u8; usize::try_from(copy.len).expect("a u32 length fits a usize")];
        let file = self.open_packs.lock().expect("pack file cache").get(copy.pack, pack_path).map_err(|e| e.to_string())?;
        file.read_exact_at(&mut data, copy.offset).map_err(|e| format!("{}: {e}", pack_path.display()))?;
        let actual = ChunkId::of(&data);
        if actual != *id {
            return Err(format!("{}: reads back as {actual}", pack_path.display()));
        }
        Ok(data)
    }
}
