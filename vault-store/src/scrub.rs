//! Scrub: every chunk of every live pack read back and re-hashed, so a sector that rotted is
//! found by the vault, not on the day of a restore; and self-healing: a chunk found bad is
//! listed, the store then answers as if it did not hold it (so `have` asks for it and the next
//! push that carries the same bytes stores a good copy), and every reader skips the bad copy.
//!
//! The list is `store/damaged-chunks`: `"VBAD" | u8 version 1 | u32 count | count x (16 ASCII
//! hex bytes of the pack's name | 32-byte chunk id) | SHA-256 of everything before it`. It is
//! written atomically (temporary file, fsync, rename, fsync), only by a scrub and by garbage
//! collection (which drops the entries of packs it removes). A list that does not pass its
//! checks is not used (the chunks count as good until the next scrub finds them again) and is
//! reported.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use vault_core::push::chunk::ChunkId;
use vault_core::wire::{Reader, Writer};

use crate::index::PackSet;
use crate::writer::sorted_entries;
use crate::{Result, Store, DAMAGED_CHUNKS_FILE, SNAPSHOTS_DIR};

const MAGIC: &[u8; 4] = b"VBAD";
const VERSION: u8 = 1;
const STEM_BYTES: usize = 16;
const ENTRY_BYTES: usize = STEM_BYTES + 32;
/// How much a scrub reads from a pack at once.
const READ_BUFFER: usize = 1 << 20;
/// How often (in bytes read) a scrub lets its caller pace it.
const PACE_EVERY: u64 = 8 << 20;
/// At most this many bad copies are listed (a disk this damaged needs replacing, not a list).
pub const MAX_LISTED: usize = 1 << 20;

/// A bad copy: the pack (by name) that holds it, and the chunk.
pub type BadCopy = (String, ChunkId);

/// Encodes the list (sorted, so the same set is the same bytes).
pub(crate) fn encode(bad: &BTreeSet<BadCopy>) -> Result<Vec<u8>> {
    if bad.len() > MAX_LISTED {
        return Err(vault_core::Error::TooLarge { what: "damaged-chunks list", size: bad.len(), limit: MAX_LISTED }.into());
    }
    let mut w = Writer::default();
    w.raw(MAGIC).u8(VERSION).len_u32(bad.len(), "damaged chunks")?;
    for (stem, id) in bad {
        if stem.len() != STEM_BYTES || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(vault_core::Error::Malformed { what: "damaged-chunks list", reason: format!("`{stem}` is not a pack name") }.into());
        }
        w.raw(stem.as_bytes()).raw(&id.0);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &w.bytes);
    w.raw(digest.as_ref());
    Ok(w.bytes)
}

/// Decodes and checks a list; the error is the reason it is not used.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<BTreeSet<BadCopy>, String> {
    let body_len = bytes.len().checked_sub(32).ok_or("shorter than its checksum")?;
    let (body, trailer) = bytes.split_at(body_len);
    if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != trailer {
        return Err("checksum does not match (truncated or altered)".into());
    }
    let mut r = Reader::new(body, "damaged-chunks list");
    if r.take(4, "magic").map_err(|e| e.to_string())? != MAGIC || r.u8("version").map_err(|e| e.to_string())? != VERSION {
        return Err("not a version 1 damaged-chunks list".into());
    }
    let count = r.u32("count").map_err(|e| e.to_string())? as usize;
    if count > MAX_LISTED || count.checked_mul(ENTRY_BYTES) != Some(r.remaining()) {
        return Err(format!("says {count} entries but holds {} bytes of them", r.remaining()));
    }
    let mut bad = BTreeSet::new();
    for _ in 0..count {
        let stem = r.take(STEM_BYTES, "pack name").map_err(|e| e.to_string())?;
        if !stem.iter().all(u8::is_ascii_hexdigit) {
            return Err("a pack name is not hex".into());
        }
        let id = ChunkId(r.array("chunk id").map_err(|e| e.to_string())?);
        let entry = (String::from_utf8(stem.to_vec()).expect("hex is ASCII"), id);
        // Written sorted and once each, so one set has one encoding.
        if bad.last().is_some_and(|last| *last >= entry) {
            return Err("entries are not in ascending order, or repeat".into());
        }
        bad.insert(entry);
    }
    Ok(bad)
}

/// The list at `root`, if any: `Err` with the reason when it is there but not usable.
pub(crate) fn load(root: &Path) -> std::result::Result<BTreeSet<BadCopy>, String> {
    let path = root.join(DAMAGED_CHUNKS_FILE);
    if !path.exists() {
        return Ok(BTreeSet::new());
    }
    let bytes = vault_io::read_bounded(&path, 4 + 1 + 4 + MAX_LISTED * ENTRY_BYTES + 32).map_err(|e| e.to_string())?;
    decode(&bytes)
}

pub(crate) fn save(root: &Path, bad: &BTreeSet<BadCopy>) -> Result<()> {
    vault_io::write_atomic(&root.join(DAMAGED_CHUNKS_FILE), &encode(bad)?, 0o600)?;
    Ok(())
}

/// What one scrub read and found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scrubbed {
    pub packs: usize,
    pub chunks: u64,
    pub bytes: u64,
    /// Copies found bad in this scrub, with why (a hash that differs, a read error).
    pub found: Vec<(String, ChunkId, String)>,
    /// Chunks some snapshot needs that now have no good copy, and those snapshots.
    pub unrecoverable_chunks: usize,
    pub snapshots_affected: Vec<String>,
    /// `may_go_on` said stop before every pack was read.
    pub stopped_early: bool,
}

impl Store {
    /// Reads every chunk of every live pack and re-hashes it, calling `pace` with the bytes of
    /// each chunk read (the caller may sleep there: scrub is rate-limited) and `may_go_on`
    /// before each pack. Copies found bad are added to the damaged-chunks list, and the store
    /// stops offering them: `have` asks for them again.
    pub fn scrub(&self, may_go_on: &dyn Fn() -> bool, pace: &dyn Fn(u64)) -> Result<Scrubbed> {
        let packs: Vec<std::path::PathBuf> = self.packs_read().packs.clone();
        let mut done = Scrubbed::default();
        for pack in &packs {
            if !may_go_on() {
                done.stopped_early = true;
                break;
            }
            let stem = pack.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let entries = match crate::index::entries_of_pack(pack) {
                Ok(entries) => entries,
                // The index went bad since the start: the next start sets the pack aside.
                Err(reason) => {
                    done.found.push((stem, ChunkId([0; 32]), format!("index: {reason}")));
                    continue;
                }
            };
            done.packs += 1;
            // In the order the chunks lie in the pack (the index is sorted by id), through a
            // large buffer: one sequential read of the pack, whatever the chunk sizes.
            let mut entries = entries;
            entries.sort_by_key(|(_, offset, _)| *offset);
            let mut reader = File::open(pack).map(|f| std::io::BufReader::with_capacity(READ_BUFFER, f)).map_err(|e| e.to_string());
            let mut position = 0u64;
            let mut buf = Vec::new();
            let mut unpaced = 0u64;
            for (id, offset, len) in entries {
                buf.resize(len as usize, 0);
                let read = reader.as_mut().map_err(|e| e.clone()).and_then(|r| {
                    if offset != position {
                        r.seek(std::io::SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
                    }
                    r.read_exact(&mut buf).map_err(|e| e.to_string())
                });
                position = if read.is_ok() { offset + u64::from(len) } else { u64::MAX };
                done.chunks += 1;
                done.bytes += u64::from(len);
                unpaced += u64::from(len);
                if unpaced >= PACE_EVERY {
                    pace(unpaced);
                    unpaced = 0;
                }
                // A read that failed is tried once more, afresh, before the copy is called bad: a
                // listed copy is never offered again, and one glitch must not cost it for good.
                let read = read.or_else(|first| read_again(first, || File::open(pack).and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, offset))));
                match read {
                    Ok(()) if ChunkId::of(&buf) == id => {}
                    Ok(()) => done.found.push((stem.clone(), id, format!("reads back as {}", ChunkId::of(&buf)))),
                    Err(why) => done.found.push((stem.clone(), id, format!("read failed: {why}"))),
                }
            }
            pace(unpaced);
        }
        let found: BTreeSet<BadCopy> = done.found.iter().filter(|(_, id, _)| id.0 != [0; 32]).map(|(stem, id, _)| (stem.clone(), *id)).collect();
        let mut bad = self.damaged_copies();
        if !found.is_subset(&bad) {
            bad.extend(found);
            save(self.root(), &bad)?;
            *self.packs_write() = PackSet::load(self.root())?;
        }
        if !bad.is_empty() {
            (done.unrecoverable_chunks, done.snapshots_affected) = self.unrecoverable(&bad)?;
        }
        Ok(done)
    }

    /// The bad copies listed (an unusable list counts as empty).
    pub fn damaged_copies(&self) -> BTreeSet<BadCopy> {
        load(self.root()).unwrap_or_default()
    }

    /// Listed chunks that no good copy holds, counted, and the snapshots that need one.
    fn unrecoverable(&self, bad: &BTreeSet<BadCopy>) -> Result<(usize, Vec<String>)> {
        let missing: HashSet<ChunkId> = {
            let set = self.packs_read();
            bad.iter().map(|(_, id)| *id).filter(|id| !set.chunks.contains_key(id)).collect()
        };
        let mut affected = Vec::new();
        if !missing.is_empty() {
            for snapshot in sorted_entries(&self.root().join(SNAPSHOTS_DIR))? {
                let needs = crate::owners::chunks_of(&snapshot).map(|chunks| chunks.iter().any(|id| missing.contains(id))).unwrap_or(true);
                if needs {
                    affected.push(snapshot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                }
            }
        }
        Ok((missing.len(), affected))
    }
}

/// A second read after a `first` that failed: `Ok` if it succeeds, else both reasons.
fn read_again(first: String, again: impl FnOnce() -> std::io::Result<()>) -> std::result::Result<(), String> {
    again().map_err(|second| format!("{first}, and again: {second}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_fails_once_is_tried_again_before_the_copy_is_called_bad() {
        assert_eq!(read_again("EIO".into(), || Ok(())), Ok(()));
        let err = read_again("Input/output error (os error 5)".into(), || Err(std::io::Error::from_raw_os_error(libc::EIO))).unwrap_err();
        assert_eq!(err, "Input/output error (os error 5), and again: Input/output error (os error 5)");
    }

    #[test]
    fn the_list_round_trips_and_every_flaw_is_refused_by_name() {
        let bad: BTreeSet<BadCopy> = [("0123456789abcdef".to_string(), ChunkId::of(b"a")), ("fedcba9876543210".to_string(), ChunkId::of(b"b"))].into();
        let bytes = encode(&bad).unwrap();
        assert_eq!(decode(&bytes).unwrap(), bad);
        assert_eq!(decode(&encode(&BTreeSet::new()).unwrap()).unwrap(), BTreeSet::new());
        assert!(decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("checksum"));
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        assert!(decode(b"short").is_err());
        let mut body = bytes[..bytes.len() - 32].to_vec();
        let (first, second) = (body[9..57].to_vec(), body[57..105].to_vec());
        body[9..57].copy_from_slice(&second);
        body[57..105].copy_from_slice(&first);
        body.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &body).as_ref());
        assert!(decode(&body).unwrap_err().contains("ascending"));
        assert!(encode(&[("not-a-pack".to_string(), ChunkId::of(b"x"))].into()).is_err());
    }
}
