//! Pack index files: which chunk is where in a pack, closed by a SHA-256 of the rest so a
//! torn or altered index is refused rather than trusted.
//!
//! One bad pack never costs the store: [`PackSet::load`] sets aside a pack whose index is
//! unreadable, oversized, truncated or altered, or whose pack is missing or shorter than its
//! index says, as a [`DamagedPack`], and loads every other pack.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use vault_core::push::chunk::ChunkId;
use vault_core::wire::Writer;

use crate::{Result, PACKS_DIR};
use vault_core::error::PushError;

const INDEX_MAGIC: &[u8; 4] = b"VIDX";
const INDEX_VERSION: u8 = 1;
/// Magic, version, entry count.
const HEADER_BYTES: usize = 4 + 1 + 4;
const TRAILER_BYTES: usize = 32;
const ENTRY_BYTES: usize = 32 + 8 + 4;
/// An index of a pack can never list more chunks than this.
pub(crate) const MAX_INDEX_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    /// Position in [`PackSet::packs`].
    pub pack: u32,
    pub offset: u64,
    pub len: u32,
}

/// A pack that is not used, and why: its chunks count as missing from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedPack {
    pub pack: PathBuf,
    pub index: PathBuf,
    pub reason: String,
}

/// The index of a pack holding `entries` (sorted by id). A session stages at most
/// [`vault_core::push::limits::MAX_SESSION_NEW_CHUNKS`] chunks, so the count always fits.
pub fn encode(entries: &[(ChunkId, u64, u32)]) -> Result<Vec<u8>> {
    let count = u32::try_from(entries.len()).map_err(|_| vault_core::Error::Push(PushError::Limit { limit: "index_entries", detail: format!("{} chunks in one pack", entries.len()) }))?;
    let mut w = Writer::default();
    w.raw(INDEX_MAGIC).u8(INDEX_VERSION).u32(count);
    for (id, offset, len) in entries {
        w.raw(&id.0).u64(*offset).u32(*len);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &w.bytes);
    w.raw(digest.as_ref());
    Ok(w.bytes)
}

/// One 44-byte entry: id, offset, length (big-endian, as [`Writer`] writes them).
fn parse_entry(raw: &[u8]) -> (ChunkId, u64, u32) {
    let (id, rest) = raw.split_at(32);
    let (offset, len) = rest.split_at(8);
    (ChunkId(id.try_into().expect("32-byte id")), u64::from_be_bytes(offset.try_into().expect("8-byte offset")), u32::from_be_bytes(len.try_into().expect("4-byte length")))
}

/// Checks a whole index (checksum, header, count, every chunk inside the pack's
/// `pack_len` bytes) before any of it is used. Checking first keeps a pack all-or-nothing and
/// needs no memory per entry. The error is the reason.
pub(crate) fn check(bytes: &[u8], pack_len: u64) -> std::result::Result<(), String> {
    if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(format!("index is {} bytes, shorter than the {} of an empty one (truncated)", bytes.len(), HEADER_BYTES + TRAILER_BYTES));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
    if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != trailer {
        return Err("index checksum does not match its contents (truncated or altered)".into());
    }
    let (header, entries) = (&body[..HEADER_BYTES], entries_of(bytes));
    if &header[..4] != INDEX_MAGIC || header[4] != INDEX_VERSION {
        return Err("not a version 1 pack index".into());
    }
    let count = u32::from_be_bytes(header[5..9].try_into().expect("4-byte count"));
    let fits = usize::try_from(count).ok().and_then(|c| c.checked_mul(ENTRY_BYTES)) == Some(entries.len());
    if !fits {
        return Err(format!("index says {count} entries but holds {} bytes of entries", entries.len()));
    }
    for raw in entries.chunks_exact(ENTRY_BYTES) {
        let (id, offset, len) = parse_entry(raw);
        if offset.checked_add(u64::from(len)).is_none_or(|end| end > pack_len) {
            return Err(format!("chunk {id} at {offset}+{len} lies past the pack's {pack_len} bytes (pack truncated)"));
        }
    }
    Ok(())
}

/// The entries of an index at least [`HEADER_BYTES`] + [`TRAILER_BYTES`] long.
fn entries_of(bytes: &[u8]) -> &[u8] {
    &bytes[HEADER_BYTES..bytes.len() - TRAILER_BYTES]
}

/// Why a pack cannot be used, if it cannot: reads its index (bounded) and checks it against
/// the pack's length.
fn read_index(pack: &Path, index: &Path) -> std::result::Result<Vec<u8>, String> {
    let pack_len = match std::fs::symlink_metadata(pack) {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => return Err("pack is not a regular file".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("pack file is missing (its index names chunks in it)".into()),
        Err(e) => return Err(format!("pack unreadable: {e}")),
    };
    let bytes = vault_io::read_bounded(index, MAX_INDEX_BYTES).map_err(|e| match e {
        vault_io::IoError::TooLarge { size, limit, .. } => format!("index is {size} bytes, over the {limit}-byte limit of an index"),
        vault_io::IoError::NotRegular { .. } => "index is not a regular file".into(),
        vault_io::IoError::Io { source, .. } => format!("index unreadable: {source}"),
        other => other.to_string(),
    })?;
    check(&bytes, pack_len)?;
    Ok(bytes)
}

/// The chunk ids an index names, the index checked whole first (its pack's length is not
/// known yet: an index of an export, decrypted before its pack).
pub(crate) fn chunk_ids(bytes: &[u8]) -> std::result::Result<Vec<ChunkId>, String> {
    check(bytes, u64::MAX)?;
    Ok(entries_of(bytes).chunks_exact(ENTRY_BYTES).map(|raw| parse_entry(raw).0).collect())
}

/// Every entry (id, offset, length) of a live pack's index, checked again against the pack.
pub(crate) fn entries_of_pack(pack: &Path) -> std::result::Result<Vec<(ChunkId, u64, u32)>, String> {
    let bytes = read_index(pack, &pack.with_extension("idx"))?;
    Ok(entries_of(&bytes).chunks_exact(ENTRY_BYTES).map(parse_entry).collect())
}

/// The chunk ids a damaged pack's index names, read without trusting it (no bounds on the
/// pack): only to tell which snapshots lost what, never to read data. `true` with them when
/// the index is sound (its checksum matches), so it names every chunk of its pack; an index
/// that is not may have lost or altered some ids, and one that cannot be read names none.
pub fn named_by_damaged(damaged: &DamagedPack) -> (Vec<ChunkId>, bool) {
    let Ok(bytes) = vault_io::read_bounded(&damaged.index, MAX_INDEX_BYTES) else { return (Vec::new(), false) };
    let sound = bytes.len() >= HEADER_BYTES + TRAILER_BYTES && {
        let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
        ring::digest::digest(&ring::digest::SHA256, body).as_ref() == trailer
    };
    let entries = bytes.get(HEADER_BYTES..).unwrap_or_default();
    // A trailer (32 bytes) never makes a whole entry (44), so no false id comes from it.
    (entries.chunks_exact(ENTRY_BYTES).map(|raw| parse_entry(raw).0).collect(), sound)
}

/// Every live pack (one with a sound index) and where each chunk is.
#[derive(Debug, Default)]
pub struct PackSet {
    pub packs: Vec<PathBuf>,
    pub chunks: HashMap<ChunkId, ChunkLocation>,
    /// Further live copies of chunks more than one pack holds (two pushes that stored the same
    /// new chunk at once, a copy healed beside one never listed bad): kept apart so the common
    /// single copy costs nothing more, and tried in turn when the first does not re-hash.
    pub other_copies: HashMap<ChunkId, Vec<ChunkLocation>>,
    /// Packs without an index: a seal that did not finish. Never referenced by a snapshot.
    pub orphans: Vec<PathBuf>,
    /// Packs set aside, with why; every other pack is live.
    pub damaged: Vec<DamagedPack>,
    /// Why the damaged-chunks list was not used, if it is there and unusable.
    pub damage_list_unusable: Option<String>,
}

impl PackSet {
    /// Fails only when `packs/` itself cannot be listed; a bad pack or index lands in
    /// [`PackSet::damaged`].
    pub fn load(store: &Path) -> Result<PackSet> {
        let dir = store.join(PACKS_DIR);
        let mut set = PackSet::default();
        // Copies a scrub found bad are not offered: the chunk counts as missing unless another
        // pack holds a good copy.
        let bad = crate::scrub::load(store).unwrap_or_else(|why| {
            set.damage_list_unusable = Some(why);
            Default::default()
        });
        // stem -> (has a pack, has an index); sorted, so pack numbers are stable.
        let mut stems: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| crate::io_error(&dir, e))?.filter_map(|e| e.ok()) {
            // The writer names packs in hex; a name that is not UTF-8 is not one of ours.
            let Ok(name) = entry.file_name().into_string() else { continue };
            if let Some(stem) = name.strip_suffix(".pack") {
                stems.entry(stem.to_string()).or_default().0 = true;
            } else if let Some(stem) = name.strip_suffix(".idx") {
                stems.entry(stem.to_string()).or_default().1 = true;
            }
        }
        for (stem, (has_pack, has_index)) in stems {
            let pack = dir.join(format!("{stem}.pack"));
            let index = dir.join(format!("{stem}.idx"));
            if !has_index {
                set.orphans.push(pack);
                continue;
            }
            let loaded = if has_pack { read_index(&pack, &index) } else { Err("pack file is missing (its index names chunks in it)".into()) };
            let numbered = loaded.and_then(|bytes| match u32::try_from(set.packs.len()) {
                Ok(number) => Ok((bytes, number)),
                Err(_) => Err(format!("the store has more than {} live packs, more than a reader can number", u32::MAX)),
            });
            match numbered {
                Ok((bytes, number)) => set.insert(pack, number, &bytes, |id| !bad.is_empty() && bad.contains(&(stem.clone(), *id))),
                Err(reason) => set.damaged.push(DamagedPack { pack, index, reason }),
            }
        }
        Ok(set)
    }

    /// `bytes` is an index [`check`] accepted; `is_bad` says which of its copies to skip.
    fn insert(&mut self, pack: PathBuf, number: u32, bytes: &[u8], is_bad: impl Fn(&ChunkId) -> bool) {
        for raw in entries_of(bytes).chunks_exact(ENTRY_BYTES) {
            let (id, offset, len) = parse_entry(raw);
            if !is_bad(&id) {
                self.locate(id, ChunkLocation { pack: number, offset, len });
            }
        }
        self.packs.push(pack);
    }

    pub fn add_pack(&mut self, pack: PathBuf, entries: &[(ChunkId, u64, u32)]) {
        // Every pack is two files, and the vault's filesystem has at most 2^32 inodes.
        let pack_number = u32::try_from(self.packs.len()).expect("fewer than 2^32 packs on one filesystem");
        self.packs.push(pack);
        for (id, offset, len) in entries {
            self.locate(*id, ChunkLocation { pack: pack_number, offset: *offset, len: *len });
        }
    }

    /// The first copy of a chunk is where it is read from; any further one is kept beside it.
    fn locate(&mut self, id: ChunkId, at: ChunkLocation) {
        match self.chunks.entry(id) {
            std::collections::hash_map::Entry::Vacant(first) => {
                first.insert(at);
            }
            std::collections::hash_map::Entry::Occupied(first) if *first.get() != at => self.other_copies.entry(id).or_default().push(at),
            std::collections::hash_map::Entry::Occupied(_) => {}
        }
    }

    /// Every live copy of a chunk, the one read first first.
    pub fn copies(&self, id: &ChunkId) -> impl Iterator<Item = ChunkLocation> + '_ {
        self.chunks.get(id).copied().into_iter().chain(self.other_copies.get(id).into_iter().flatten().copied())
    }

    /// The path of a live pack by its number.
    pub fn pack_path(&self, location: &ChunkLocation) -> &Path {
        // A pack number comes from a u32 and indexes this Vec.
        usize::try_from(location.pack).ok().and_then(|n| self.packs.get(n)).expect("a chunk's pack number names a live pack")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(chunks: &[&[u8]]) -> (Vec<u8>, u64) {
        let mut offset = 0u64;
        let mut entries = Vec::new();
        for data in chunks {
            let len = u32::try_from(data.len()).unwrap();
            entries.push((ChunkId::of(data), offset, len));
            offset += u64::from(len);
        }
        (encode(&entries).unwrap(), offset)
    }

    #[test]
    fn a_sound_index_is_accepted_and_every_flaw_is_named() {
        let (bytes, pack_len) = index_of(&[b"alpha", b"beta"]);
        assert_eq!(check(&bytes, pack_len), Ok(()));
        assert_eq!(entries_of(&bytes).len(), 2 * ENTRY_BYTES);
        assert!(check(&bytes, pack_len - 1).unwrap_err().contains("lies past the pack's 8 bytes (pack truncated)"));
        assert!(check(&bytes[..bytes.len() - 1], pack_len).unwrap_err().contains("checksum does not match"));
        assert!(check(&bytes[..10], pack_len).unwrap_err().contains("shorter than the 41 of an empty one"));
        let mut flipped = bytes.clone();
        flipped[12] ^= 1;
        assert!(check(&flipped, pack_len).unwrap_err().contains("checksum does not match"));
    }

    #[test]
    fn a_damaged_index_still_names_its_chunks_for_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let (mut bytes, _) = index_of(&[b"alpha", b"beta"]);
        let index = dir.path().join("sound.idx");
        std::fs::write(&index, &bytes).unwrap();
        let damaged = DamagedPack { pack: dir.path().join("sound.pack"), index, reason: String::new() };
        assert!(named_by_damaged(&damaged).1, "a sound index of a missing pack names all its chunks");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let index = dir.path().join("x.idx");
        std::fs::write(&index, &bytes).unwrap();
        let damaged = DamagedPack { pack: dir.path().join("x.pack"), index, reason: String::new() };
        assert_eq!(named_by_damaged(&damaged), (vec![ChunkId::of(b"alpha"), ChunkId::of(b"beta")], false));
    }
}
