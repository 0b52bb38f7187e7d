//! C2SP `tlog-tiles` (c2sp.org/tlog-tiles): how a log's hashes and entries lie in files.
//!
//! - A **hash tile** at level `L`, index `N` holds the hashes of up to 256 consecutive tree nodes
//!   at tree level `8L` (level 0: the leaf hashes; level 1: the roots of each full level-0 tile),
//!   32 bytes each, at `tile/<L>/<N>`; one not yet full (width `W` < 256) is at
//!   `tile/<L>/<N>.p/<W>`. `N` is written in groups of three digits, all but the last prefixed
//!   with `x` (`1234067` -> `x001/x234/067`).
//! - An **entry bundle** at `tile/entries/<N>` (or `.p/<W>`) holds entries `256N..256N+W`, each
//!   as a big-endian `u16` length and its bytes.
//!
//! A full tile never changes again; the log only appends. Every hash [`super::merkle`] needs is
//! computed from the tiles ([`TileHashes`]).

use super::merkle::{self, Hash, Subtrees};
use super::AuditError;

/// Levels of tree per tile level, and hashes per full tile.
pub const TILE_HEIGHT: u8 = 8;
pub const TILE_WIDTH: u64 = 256;
/// [`TILE_WIDTH`] as a usize, for lengths in memory (a const has no checked conversion; the
/// assertion below ties the two).
const TILE_ENTRIES: usize = 256;
const _: () = assert!(TILE_ENTRIES as u64 == TILE_WIDTH);
/// The largest entry an entry bundle can hold.
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;
/// The largest entry bundle: 256 entries of the largest size.
pub const MAX_BUNDLE_BYTES: usize = TILE_ENTRIES * (2 + MAX_ENTRY_BYTES);

/// `N` in the path syntax.
fn index_path(index: u64) -> String {
    let digits = format!("{index:03}");
    let pad = (3 - digits.len() % 3) % 3;
    let padded = format!("{}{digits}", "0".repeat(pad));
    let groups: Vec<&str> = (0..padded.len()).step_by(3).map(|i| &padded[i..i + 3]).collect();
    let last = groups.len() - 1;
    groups.iter().enumerate().map(|(i, g)| if i < last { format!("x{g}") } else { (*g).to_string() }).collect::<Vec<_>>().join("/")
}

/// The path of hash tile (`level`, `index`) with `width` hashes (1..=256).
pub fn tile_path(level: u8, index: u64, width: u64) -> String {
    with_width(format!("tile/{level}/{}", index_path(index)), width)
}

/// The path of entry bundle `index` with `width` entries (1..=256).
pub fn entries_path(index: u64, width: u64) -> String {
    with_width(format!("tile/entries/{}", index_path(index)), width)
}

fn with_width(path: String, width: u64) -> String {
    if width >= TILE_WIDTH {
        path
    } else {
        format!("{path}.p/{width}")
    }
}

/// How many nodes of tree level `8 * tile_level` a log of `size` entries has complete.
pub fn nodes_at(tile_level: u8, size: u64) -> u64 {
    size.checked_shr(u32::from(tile_level) * u32::from(TILE_HEIGHT)).unwrap_or(0)
}

/// The tiles, as (level, index, width), that growing a log from `old` to `new` entries writes or
/// rewrites, lowest level first: every tile whose width changed.
pub fn tiles_to_write(old: u64, new: u64) -> Vec<(u8, u64, u64)> {
    let mut tiles = Vec::new();
    for level in 0..=7u8 {
        let (before, after) = (nodes_at(level, old), nodes_at(level, new));
        if after == 0 {
            break;
        }
        if after == before {
            continue;
        }
        let first = before / TILE_WIDTH;
        let last = (after - 1) / TILE_WIDTH;
        for index in first..=last {
            let width = (after - index * TILE_WIDTH).min(TILE_WIDTH);
            tiles.push((level, index, width));
        }
    }
    tiles
}

/// Encodes entries as a bundle (each at most [`MAX_ENTRY_BYTES`]).
pub fn encode_bundle(entries: &[&[u8]]) -> Result<Vec<u8>, AuditError> {
    if entries.len() as u64 > TILE_WIDTH {
        return Err(AuditError::TooLarge { what: "entry bundle (entries)", size: entries.len(), limit: TILE_ENTRIES });
    }
    let mut out = Vec::new();
    for entry in entries {
        let len = u16::try_from(entry.len()).map_err(|_| AuditError::TooLarge { what: "audit log entry", size: entry.len(), limit: MAX_ENTRY_BYTES })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// Decodes a bundle that must hold exactly `width` entries.
pub fn decode_bundle(bytes: &[u8], width: u64) -> Result<Vec<&[u8]>, AuditError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(AuditError::TooLarge { what: "entry bundle", size: bytes.len(), limit: MAX_BUNDLE_BYTES });
    }
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if entries.len() as u64 >= width {
            return Err(AuditError::Malformed { what: "entry bundle", reason: format!("more than the {width} entries its name says") });
        }
        let (len, tail) = rest.split_at_checked(2).ok_or_else(|| AuditError::Malformed { what: "entry bundle", reason: "a length cut short".into() })?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (entry, tail) =
            tail.split_at_checked(len).ok_or_else(|| AuditError::Malformed { what: "entry bundle", reason: format!("entry {} says {len} bytes, {} are left", entries.len(), tail.len()) })?;
        entries.push(entry);
        rest = tail;
    }
    if entries.len() as u64 != width {
        return Err(AuditError::Malformed { what: "entry bundle", reason: format!("{} entries, its name says {width}", entries.len()) });
    }
    Ok(entries)
}

/// Reads hash tiles: at least the `width` hashes of tile (`level`, `index`), from a full tile or a
/// partial one at least that wide (the log only grows, so a wider tile starts with the same
/// hashes). An implementation checks nothing; [`TileHashes`] checks the length.
pub trait TileReader {
    fn read_tile(&self, level: u8, index: u64, width: u64) -> Result<Vec<u8>, AuditError>;
}

/// Every subtree hash of a log of `size` entries, computed from its hash tiles.
pub struct TileHashes<'a> {
    pub size: u64,
    pub tiles: &'a dyn TileReader,
}

impl TileHashes<'_> {
    /// The hashes `first..first + count` of tree level `8 * tile_level` (all in one tile).
    fn hashes(&self, tile_level: u8, first: u64, count: u64) -> Result<Vec<Hash>, AuditError> {
        let index = first / TILE_WIDTH;
        let available = nodes_at(tile_level, self.size);
        let width = (available - index * TILE_WIDTH).min(TILE_WIDTH);
        let bytes = self.tiles.read_tile(tile_level, index, width)?;
        let path = tile_path(tile_level, index, width);
        // A wider tile (the log grew since) holds these hashes as its prefix.
        if (bytes.len() as u64) < width * 32 || bytes.len() % 32 != 0 {
            return Err(AuditError::TileMismatch { path, reason: format!("{} bytes, {width} hashes need {}", bytes.len(), width * 32) });
        }
        // Both within one tile: `first % TILE_WIDTH` < 256, and `count` is at most 2^8 (`subtree`'s `within` is at most TILE_HEIGHT).
        let start = usize::try_from(first % TILE_WIDTH).expect("below TILE_WIDTH") * 32;
        let count = usize::try_from(count).expect("at most TILE_WIDTH");
        Ok(bytes[start..start + count * 32].chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect())
    }
}

impl Subtrees for TileHashes<'_> {
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        // From the tile level below it, so a level-8L node is the root of a full tile of level
        // L - 1 (what the level-L tile is written from) and never read from the tile it fills.
        let tile_level = level.saturating_sub(1) / TILE_HEIGHT;
        let within = level - tile_level * TILE_HEIGHT;
        let count = 1u64 << within;
        let first = index.checked_mul(count).ok_or_else(|| AuditError::Missing { what: format!("subtree {level}/{index}"), reason: "past any log".into() })?;
        if first + count > nodes_at(tile_level, self.size) {
            return Err(AuditError::Missing { what: format!("subtree {level}/{index}"), reason: format!("the log has {} entries", self.size) });
        }
        Ok(merkle::subtree_of(&self.hashes(tile_level, first, count)?))
    }
}

/// The `width` hashes of hash tile (`level` >= 1, `index`): the roots of the full tiles one level
/// down, from `source` (a [`TileHashes`] of the log as it now is). Level 0 holds the leaf hashes.
pub fn tile_content(level: u8, index: u64, width: u64, source: &dyn Subtrees) -> Result<Vec<u8>, AuditError> {
    // A tile holds at most TILE_WIDTH hashes; the capacity is only a hint.
    let mut out = Vec::with_capacity(usize::try_from(width.min(TILE_WIDTH)).expect("at most TILE_WIDTH") * 32);
    for i in 0..width {
        out.extend_from_slice(&source.subtree(level * TILE_HEIGHT, index * TILE_WIDTH + i)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::{leaf_hash, tree_hash, Leaves};
    use std::collections::HashMap;

    #[test]
    fn paths_follow_the_spec() {
        assert_eq!(tile_path(0, 0, 256), "tile/0/000");
        assert_eq!(tile_path(0, 1234067, 256), "tile/0/x001/x234/067");
        assert_eq!(tile_path(1, 5, 17), "tile/1/005.p/17");
        assert_eq!(tile_path(0, 1000, 256), "tile/0/x001/000");
        assert_eq!(entries_path(3, 1), "tile/entries/003.p/1");
    }

    #[test]
    fn growing_a_log_writes_the_tiles_whose_width_changed() {
        assert_eq!(tiles_to_write(0, 1), vec![(0, 0, 1)]);
        assert_eq!(tiles_to_write(1, 3), vec![(0, 0, 3)]);
        assert_eq!(tiles_to_write(255, 256), vec![(0, 0, 256), (1, 0, 1)]);
        assert_eq!(tiles_to_write(256, 257), vec![(0, 1, 1)]);
        assert_eq!(tiles_to_write(200, 600), vec![(0, 0, 256), (0, 1, 256), (0, 2, 88), (1, 0, 2)]);
        assert_eq!(tiles_to_write(5, 5), vec![]);
        assert_eq!(tiles_to_write(65_535, 65_536), vec![(0, 255, 256), (1, 0, 256), (2, 0, 1)]);
    }

    #[test]
    fn bundles_round_trip_and_every_flaw_is_refused() {
        let entries: Vec<&[u8]> = vec![b"a", b"", b"ccc"];
        let bytes = encode_bundle(&entries).unwrap();
        assert_eq!(decode_bundle(&bytes, 3).unwrap(), entries);
        assert!(decode_bundle(&bytes, 2).is_err());
        assert!(decode_bundle(&bytes, 4).is_err());
        assert!(decode_bundle(&bytes[..bytes.len() - 1], 3).is_err());
        assert!(decode_bundle(&[0], 1).is_err());
        assert!(encode_bundle(&[&vec![0u8; MAX_ENTRY_BYTES + 1]]).is_err());
        assert!(decode_bundle(&vec![0u8; MAX_BUNDLE_BYTES + 1], 256).is_err());
    }

    /// Tiles in memory, written as a log grows.
    #[derive(Default)]
    struct MemTiles(HashMap<(u8, u64), Vec<u8>>);

    impl TileReader for MemTiles {
        fn read_tile(&self, level: u8, index: u64, width: u64) -> Result<Vec<u8>, AuditError> {
            let tile = self.0.get(&(level, index)).ok_or_else(|| AuditError::Missing { what: tile_path(level, index, width), reason: "not written".into() })?;
            Ok(tile[..(usize::try_from(width).unwrap() * 32).min(tile.len())].to_vec())
        }
    }

    #[test]
    fn a_log_grown_tile_by_tile_has_the_tree_of_its_leaves_at_every_size() {
        let leaves: Vec<Hash> = (0..70_000u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tiles = MemTiles::default();
        let mut size = 0u64;
        for step in [1u64, 2, 253, 1, 300, 65_000, 4_443] {
            let new = size + step;
            let all = Leaves(leaves[..usize::try_from(new).unwrap()].to_vec());
            for (level, index, width) in tiles_to_write(size, new) {
                let content = if level == 0 {
                    leaves[usize::try_from(index * TILE_WIDTH).unwrap()..usize::try_from(index * TILE_WIDTH + width).unwrap()].concat()
                } else {
                    tile_content(level, index, width, &TileHashes { size: new, tiles: &tiles }).unwrap()
                };
                tiles.0.insert((level, index), content);
            }
            size = new;
            let from_tiles = TileHashes { size, tiles: &tiles };
            assert_eq!(tree_hash(size, &from_tiles).unwrap(), tree_hash(size, &all).unwrap(), "size {size}");
        }
        assert_eq!(size, 70_000);
        assert_eq!(tiles.0.get(&(2, 0)).map(Vec::len), Some(32), "one level-16 node at 65 536 entries");
        // A consistency proof from the tiles equals one from the leaves.
        let from_tiles = TileHashes { size, tiles: &tiles };
        let all = Leaves(leaves.clone());
        assert_eq!(merkle::consistency_proof(1000, size, &from_tiles).unwrap(), merkle::consistency_proof(1000, size, &all).unwrap());
    }
}
