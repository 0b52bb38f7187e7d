//! The gatekeeper's side of the store: staging packs for sessions in flight, and sealing.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use vault_core::chunk::ChunkId;
use vault_core::receipt::SignedReceipt;

use crate::immutable::{make_immutable, Sealing};
use crate::index::{self, PackSet};
use crate::{io_error, random_hex, Result, StoreError, MANIFEST_FILE, PACKS_DIR, RECEIPT_FILE, SNAPSHOTS_DIR, STAGING_DIR};

/// Large enough that chunk writes become few big writes.
const PACK_BUFFER_BYTES: usize = 1024 * 1024;
/// Start writeback of each this many bytes as they arrive, so the fsync at sealing finds
/// little left to write instead of the whole push (the kernel would otherwise hold up to
/// gigabytes of dirty pages until then).
const WRITEBACK_EVERY: u64 = 32 * 1024 * 1024;

pub struct Store {
    root: PathBuf,
    packs: RwLock<PackSet>,
}

/// What [`Store::open`] found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Staging entries removed: sessions that never sealed.
    pub staging_removed: usize,
    /// Packs whose seal never finished (no index), removed.
    pub orphan_packs_removed: usize,
    pub live_packs: usize,
    pub chunks: usize,
    pub snapshots: usize,
}

/// A session's chunks on their way in. Removed on drop unless sealed.
pub struct StagingPack {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    entries: Vec<(ChunkId, u64, u32)>,
    offset: u64,
    /// Bytes already handed to writeback.
    written_back: u64,
}

/// What sealing needs besides the pack.
pub struct SealInput<'a> {
    pub snapshot_id: &'a str,
    pub manifest: &'a [u8],
    pub receipt: &'a SignedReceipt,
}

/// What sealing did; `fallbacks` lists files the filesystem would not mark immutable.
#[derive(Debug)]
pub struct Sealed {
    pub snapshot_dir: PathBuf,
    pub fallbacks: Vec<(PathBuf, String)>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, and cleans what a crash left: every
    /// staging entry and every pack that never got its index. Sealed data is not touched.
    pub fn open(root: &Path) -> Result<(Store, Recovery)> {
        for dir in [PACKS_DIR, SNAPSHOTS_DIR, STAGING_DIR] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|e| io_error(&path, e))?;
        }
        let mut recovery = Recovery::default();
        let staging = root.join(STAGING_DIR);
        for entry in fs::read_dir(&staging).map_err(|e| io_error(&staging, e))? {
            let path = entry.map_err(|e| io_error(&staging, e))?.path();
            let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removed.map_err(|e| io_error(&path, e))?;
            recovery.staging_removed += 1;
        }
        let mut packs = PackSet::load(root)?;
        for orphan in std::mem::take(&mut packs.orphans) {
            fs::remove_file(&orphan).map_err(|e| io_error(&orphan, e))?;
            recovery.orphan_packs_removed += 1;
        }
        recovery.live_packs = packs.packs.len();
        recovery.chunks = packs.chunks.len();
        let snapshots = root.join(SNAPSHOTS_DIR);
        recovery.snapshots = fs::read_dir(&snapshots).map_err(|e| io_error(&snapshots, e))?.count();
        Ok((Store { root: root.to_path_buf(), packs: RwLock::new(packs) }, recovery))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn has_chunk(&self, id: &ChunkId) -> bool {
        self.packs.read().expect("pack index lock").chunks.contains_key(id)
    }

    pub fn chunk_count(&self) -> usize {
        self.packs.read().expect("pack index lock").chunks.len()
    }

    pub fn snapshot_exists(&self, id: &str) -> bool {
        self.root.join(SNAPSHOTS_DIR).join(id).exists()
    }

    pub fn begin(&self) -> Result<StagingPack> {
        let path = self.root.join(STAGING_DIR).join(format!("{}.pack", random_hex(8)));
        let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| io_error(&path, e))?;
        Ok(StagingPack { path, file: Some(BufWriter::with_capacity(PACK_BUFFER_BYTES, file)), entries: Vec::new(), offset: 0, written_back: 0 })
    }

    /// Seals a snapshot: its files are written durably in staging, its new chunks become a
    /// live pack, then the snapshot directory appears in one rename. On error no snapshot
    /// is visible (staging leftovers and a pack without index go at the next open; a pack
    /// indexed just before a failed rename only holds chunks, and dedups later pushes).
    pub fn seal(&self, mut pack: StagingPack, input: SealInput<'_>) -> Result<Sealed> {
        vault_core::canonical::check_identifier("snapshot id", input.snapshot_id)?;
        let final_dir = self.root.join(SNAPSHOTS_DIR).join(input.snapshot_id);
        if final_dir.exists() {
            return Err(StoreError::SnapshotExists { id: input.snapshot_id.to_string() });
        }
        let mut fallbacks = Vec::new();
        let mut note = |path: &Path, sealing: Sealing| {
            if let Sealing::ReadOnlyFallback { reason } = sealing {
                fallbacks.push((path.to_path_buf(), reason));
            }
        };

        // 1. The snapshot's files, durable in staging first: a full disk fails here, before
        //    anything becomes live.
        let staging_dir = self.root.join(STAGING_DIR).join(format!("snapshot-{}", random_hex(8)));
        fs::create_dir(&staging_dir).map_err(|e| io_error(&staging_dir, e))?;
        for (name, bytes) in [(MANIFEST_FILE, input.manifest.to_vec()), (RECEIPT_FILE, input.receipt.to_file_bytes())] {
            write_durable(&staging_dir.join(name), &bytes)?;
        }
        sync_dir(&staging_dir)?;

        // 2. The pack: durable, renamed into place, indexed (the index makes it live), immutable.
        let file = pack.file.take().expect("a staging pack is sealed once");
        let file = file.into_inner().map_err(|e| io_error(&pack.path, e.into_error()))?;
        file.sync_all().map_err(|e| io_error(&pack.path, e))?;
        drop(file);
        let new_pack = if pack.entries.is_empty() {
            fs::remove_file(&pack.path).map_err(|e| io_error(&pack.path, e))?;
            None
        } else {
            let name = random_hex(8);
            let packs_dir = self.root.join(PACKS_DIR);
            let pack_path = packs_dir.join(format!("{name}.pack"));
            fs::rename(&pack.path, &pack_path).map_err(|e| io_error(&pack_path, e))?;
            let index_path = packs_dir.join(format!("{name}.idx"));
            vault_io::write_atomic(&index_path, &index::encode(&pack.entries), 0o444).map_err(disk_full_aware)?;
            note(&pack_path, make_immutable(&pack_path)?);
            note(&index_path, make_immutable(&index_path)?);
            Some((pack_path, std::mem::take(&mut pack.entries)))
        };

        // 3. One rename makes the snapshot visible; it needs no new space.
        fs::rename(&staging_dir, &final_dir).map_err(|e| io_error(&final_dir, e))?;
        sync_dir(&self.root.join(SNAPSHOTS_DIR))?;
        for name in [MANIFEST_FILE, RECEIPT_FILE] {
            let path = final_dir.join(name);
            note(&path, make_immutable(&path)?);
        }
        note(&final_dir, make_immutable(&final_dir)?);

        if let Some((pack_path, entries)) = new_pack {
            self.packs.write().expect("pack index lock").add_pack(pack_path, &entries);
        }
        Ok(Sealed { snapshot_dir: final_dir, fallbacks })
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

/// Asks the kernel to start writing `len` bytes at `offset` to disk, without waiting. Only a
/// hint for speed: durability comes from the fsync at sealing, so a failure is ignored.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: the descriptor is valid for the call (borrowed from a live File), and
    // sync_file_range with SYNC_FILE_RANGE_WRITE only schedules I/O on that file's pages;
    // it touches no memory of ours.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| io_error(path, e))
}

impl StagingPack {
    /// Appends a verified chunk. A full disk is reported as such.
    pub fn append(&mut self, id: ChunkId, data: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("append before seal");
        file.write_all(data).map_err(|e| io_error(&self.path, e))?;
        self.entries.push((id, self.offset, data.len() as u32));
        self.offset += data.len() as u64;
        if self.offset - self.written_back >= WRITEBACK_EVERY {
            file.flush().map_err(|e| io_error(&self.path, e))?;
            start_writeback(file.get_ref(), self.written_back, self.offset - self.written_back);
            self.written_back = self.offset;
        }
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.offset
    }
}

impl Drop for StagingPack {
    fn drop(&mut self) {
        // A session that did not seal leaves nothing behind (and the next start would
        // remove it anyway, should this process die first).
        if self.file.take().is_some() || self.path.exists() {
            let _ = fs::remove_file(&self.path);
        }
    }
}
