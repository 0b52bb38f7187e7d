//! Reading a store offline (`vaultctl restore`, `vaultctl snapshots`): from the vault's own
//! disk or from a copy of its store. Read-only: it opens nothing for writing, and every
//! chunk is re-hashed before it is handed out.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vault_core::chunk::ChunkId;
use vault_core::manifest::{Manifest, MAX_MANIFEST_BYTES};
use vault_core::receipt::{Receipt, SignedReceipt, MAX_RECEIPT_BYTES};

use crate::index::PackSet;
use crate::{io_error, Result, StoreError, MANIFEST_FILE, RECEIPT_FILE, SNAPSHOTS_DIR};

pub struct StoreReader {
    root: PathBuf,
    packs: PackSet,
    open_packs: Mutex<HashMap<u32, File>>,
}

#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub id: String,
    /// Verified against the vault key the receipt names (pin it with `vaultctl` to check
    /// it is *your* vault).
    pub receipt: Receipt,
}

impl StoreReader {
    pub fn open(root: &Path) -> Result<StoreReader> {
        if !root.join(SNAPSHOTS_DIR).is_dir() {
            return Err(StoreError::Corrupt { path: root.to_path_buf(), reason: "not a vault store (no snapshots/)".into() });
        }
        Ok(StoreReader { root: root.to_path_buf(), packs: PackSet::load(root)?, open_packs: Mutex::new(HashMap::new()) })
    }

    /// Sealed snapshots, oldest first (ids start with the vault's receive time).
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let dir = self.root.join(SNAPSHOTS_DIR);
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| io_error(&dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids.into_iter().map(|id| Ok(SnapshotInfo { receipt: self.receipt(&id)?.verify_self_consistent()?, id })).collect()
    }

    fn snapshot_dir(&self, id: &str) -> Result<PathBuf> {
        vault_core::canonical::check_identifier("snapshot id", id)?;
        let dir = self.root.join(SNAPSHOTS_DIR).join(id);
        if !dir.is_dir() {
            return Err(StoreError::NoSnapshot { id: id.to_string() });
        }
        Ok(dir)
    }

    pub fn receipt(&self, id: &str) -> Result<SignedReceipt> {
        let path = self.snapshot_dir(id)?.join(RECEIPT_FILE);
        Ok(SignedReceipt::from_file_bytes(&vault_io::read_bounded(&path, 2 * MAX_RECEIPT_BYTES)?)?)
    }

    /// The manifest, checked against the hash its receipt signs.
    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        let path = self.snapshot_dir(id)?.join(MANIFEST_FILE);
        let bytes = vault_io::read_bounded(&path, MAX_MANIFEST_BYTES)?;
        let receipt = self.receipt(id)?.verify_self_consistent()?;
        let actual = vault_core::keys::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        if actual != receipt.manifest_sha256 {
            return Err(StoreError::Corrupt { path, reason: format!("manifest hashes to {actual}, receipt says {}", receipt.manifest_sha256) });
        }
        Ok(Manifest::decode(&bytes)?)
    }

    /// A chunk's bytes, re-hashed: a chunk that does not match its id is an error, never data.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let loc = *self.packs.chunks.get(id).ok_or_else(|| StoreError::Corrupt {
            path: self.root.clone(),
            reason: format!("chunk {id} is named by a snapshot but is in no pack"),
        })?;
        let pack_path = &self.packs.packs[loc.pack as usize];
        let mut data = vec![0u8; loc.len as usize];
        {
            let mut open = self.open_packs.lock().expect("pack file cache");
            let file = match open.entry(loc.pack) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(File::open(pack_path).map_err(|e| io_error(pack_path, e))?),
            };
            file.read_exact_at(&mut data, loc.offset).map_err(|e| io_error(pack_path, e))?;
        }
        let actual = ChunkId::of(&data);
        if actual != *id {
            return Err(StoreError::Corrupt { path: pack_path.clone(), reason: format!("chunk {id} reads back as {actual}") });
        }
        Ok(data)
    }
}
