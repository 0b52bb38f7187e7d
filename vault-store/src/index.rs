//! Pack index files: which chunk is where in a pack, closed by a SHA-256 of the rest so a
//! torn or altered index is refused rather than trusted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vault_core::chunk::ChunkId;
use vault_core::wire::{Reader, Writer};

use crate::{StoreError, Result, PACKS_DIR};

const INDEX_MAGIC: &[u8; 4] = b"VIDX";
const INDEX_VERSION: u8 = 1;
const ENTRY_BYTES: usize = 32 + 8 + 4;
/// An index of a pack can never list more chunks than this.
const MAX_INDEX_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    /// Position in [`PackSet::packs`].
    pub pack: u32,
    pub offset: u64,
    pub len: u32,
}

pub fn encode(entries: &[(ChunkId, u64, u32)]) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(INDEX_MAGIC).u8(INDEX_VERSION).u32(entries.len() as u32);
    for (id, offset, len) in entries {
        w.raw(&id.0).u64(*offset).u32(*len);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &w.bytes);
    w.raw(digest.as_ref());
    w.bytes
}

fn decode(path: &Path, bytes: &[u8], pack_len: u64) -> Result<Vec<(ChunkId, u64, u32)>> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.len() < 9 + 32 {
        return Err(corrupt("too short".into()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != trailer {
        return Err(corrupt("checksum does not match".into()));
    }
    let mut r = Reader::new(body, "pack index");
    if r.take(4, "magic")? != INDEX_MAGIC || r.u8("version")? != INDEX_VERSION {
        return Err(corrupt("not a version 1 pack index".into()));
    }
    let count = r.u32("count")? as usize;
    if count.checked_mul(ENTRY_BYTES) != Some(r.remaining()) {
        return Err(corrupt(format!("{count} entries do not match {} bytes", r.remaining())));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (id, offset, len) = (ChunkId(r.array("id")?), r.u64("offset")?, r.u32("len")?);
        if offset.checked_add(u64::from(len)).is_none_or(|end| end > pack_len) {
            return Err(corrupt(format!("chunk {id} at {offset}+{len} lies past the pack's {pack_len} bytes")));
        }
        out.push((id, offset, len));
    }
    Ok(out)
}

/// Every live pack (one with an index) and where each chunk is.
#[derive(Debug, Default)]
pub struct PackSet {
    pub packs: Vec<PathBuf>,
    pub chunks: HashMap<ChunkId, ChunkLocation>,
    /// Packs without an index: a seal that did not finish. Never referenced by a snapshot.
    pub orphans: Vec<PathBuf>,
}

impl PackSet {
    pub fn load(store: &Path) -> Result<PackSet> {
        let dir = store.join(PACKS_DIR);
        let mut set = PackSet::default();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| crate::io_error(&dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in &names {
            let Some(stem) = name.strip_suffix(".pack") else { continue };
            let pack = dir.join(name);
            let index_path = dir.join(format!("{stem}.idx"));
            if !index_path.exists() {
                set.orphans.push(pack);
                continue;
            }
            let pack_len = std::fs::metadata(&pack).map_err(|e| crate::io_error(&pack, e))?.len();
            let bytes = vault_io::read_bounded(&index_path, MAX_INDEX_BYTES)?;
            let pack_number = set.packs.len() as u32;
            for (id, offset, len) in decode(&index_path, &bytes, pack_len)? {
                set.chunks.entry(id).or_insert(ChunkLocation { pack: pack_number, offset, len });
            }
            set.packs.push(pack);
        }
        Ok(set)
    }

    pub fn add_pack(&mut self, pack: PathBuf, entries: &[(ChunkId, u64, u32)]) {
        let pack_number = self.packs.len() as u32;
        self.packs.push(pack);
        for (id, offset, len) in entries {
            self.chunks.entry(*id).or_insert(ChunkLocation { pack: pack_number, offset: *offset, len: *len });
        }
    }
}
