//! Which pusher owns which chunks: storage is deduplicated across pushers, knowledge is not.
//! A pusher owns a chunk once one of its sealed snapshots names it after it sent the chunk's
//! bytes (stored, or proven against bytes another pusher stored). Only owned chunks answer
//! its `have` and may be named by its manifest without being sent.
//!
//! Each sealed snapshot holds an `owned` file: the chunks that seal gave its pusher (named by
//! the receipt beside it). Ownership is the union over the snapshots on disk, so it is never
//! more than what the pusher proved; when a snapshot goes, what only it gave is re-sent once.
//! A snapshot sealed before `owned` files existed gives its pusher the chunks its manifest
//! names.
//!
//! The file: `VOWN`, version 1, a 4-byte count, that many 32-byte chunk ids (sorted), and a
//! SHA-256 of everything before it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use vault_core::push::chunk::ChunkId;
use vault_core::push::limits::MAX_SESSION_NEW_CHUNKS;
use vault_core::push::manifest::MAX_MANIFEST_BYTES;
use vault_core::push::receipt::{SignedReceipt, MAX_RECEIPT_BYTES};
use vault_core::wire::Writer;

use crate::{Result, MANIFEST_FILE, OWNED_FILE, RECEIPT_FILE, SNAPSHOTS_DIR};
use vault_core::error::PushError;

const OWNED_MAGIC: &[u8; 4] = b"VOWN";
const OWNED_VERSION: u8 = 1;
/// Magic, version, count.
const HEADER_BYTES: usize = 4 + 1 + 4;
const TRAILER_BYTES: usize = 32;
const ID_BYTES: usize = 32;
/// A seal gives at most one session's new chunks: [`MAX_SESSION_NEW_CHUNKS`] as a usize (a const
/// has no checked conversion; the assertion below ties the two).
const MAX_OWNED_IDS: usize = 1 << 20;
const _: () = assert!(MAX_OWNED_IDS as u64 == MAX_SESSION_NEW_CHUNKS);
const MAX_OWNED_BYTES: usize = HEADER_BYTES + MAX_OWNED_IDS * ID_BYTES + TRAILER_BYTES;

/// An `owned` file naming `ids`.
pub fn encode(ids: &[ChunkId]) -> Result<Vec<u8>> {
    let count = u32::try_from(ids.len()).map_err(|_| vault_core::Error::Push(PushError::Limit { limit: "owned_chunks", detail: format!("{} chunks in one seal", ids.len()) }))?;
    let mut w = Writer::default();
    w.raw(OWNED_MAGIC).u8(OWNED_VERSION).u32(count);
    for id in ids {
        w.raw(&id.0);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &w.bytes);
    w.raw(digest.as_ref());
    Ok(w.bytes)
}

/// The ids of an `owned` file, checked whole first (checksum, header, count). The error is
/// the reason.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Vec<ChunkId>, String> {
    if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(format!("{} bytes, shorter than the {} of an empty one (truncated)", bytes.len(), HEADER_BYTES + TRAILER_BYTES));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
    if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != trailer {
        return Err("checksum does not match its contents (truncated or altered)".into());
    }
    let (header, ids) = body.split_at(HEADER_BYTES);
    if &header[..4] != OWNED_MAGIC || header[4] != OWNED_VERSION {
        return Err("not a version 1 `owned` file".into());
    }
    let count = u32::from_be_bytes(header[5..9].try_into().expect("4-byte count"));
    if usize::try_from(count).ok().and_then(|c| c.checked_mul(ID_BYTES)) != Some(ids.len()) {
        return Err(format!("says {count} chunks but holds {} bytes of ids", ids.len()));
    }
    Ok(ids.chunks_exact(ID_BYTES).map(|raw| ChunkId(raw.try_into().expect("32-byte id"))).collect())
}

/// Every pusher's chunks, as the snapshots on disk say.
#[derive(Debug, Default)]
pub struct Owners {
    numbers: HashMap<String, u32>,
    owned: HashSet<(u32, ChunkId)>,
}

impl Owners {
    /// Reads every snapshot's pusher and `owned` file. A snapshot whose receipt or `owned`
    /// file cannot be read gives nothing (its pusher re-sends what only it gave) and is named
    /// with why; nothing here fails the store.
    pub fn load(root: &Path) -> Result<(Owners, Vec<(PathBuf, String)>)> {
        let dir = root.join(SNAPSHOTS_DIR);
        let mut owners = Owners::default();
        let mut unreadable = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| crate::io_error(&dir, e))? {
            let snapshot = entry.map_err(|e| crate::io_error(&dir, e))?.path();
            match given_by(&snapshot) {
                Ok((pusher, ids)) => owners.add(&pusher, &ids),
                Err(reason) => unreadable.push((snapshot, reason)),
            }
        }
        Ok((owners, unreadable))
    }

    pub fn owns(&self, pusher: &str, id: &ChunkId) -> bool {
        self.numbers.get(pusher).is_some_and(|number| self.owned.contains(&(*number, *id)))
    }

    pub fn add(&mut self, pusher: &str, ids: &[ChunkId]) {
        let next = u32::try_from(self.numbers.len()).unwrap_or(u32::MAX);
        let number = *self.numbers.entry(pusher.to_string()).or_insert(next);
        self.owned.extend(ids.iter().map(|id| (number, *id)));
    }

    /// (pusher, chunk) pairs held.
    pub fn len(&self) -> usize {
        self.owned.len()
    }
}

/// A snapshot's receipt, read and verified against the vault key it names.
pub(crate) fn receipt_of(snapshot: &Path) -> std::result::Result<vault_core::push::receipt::Receipt, String> {
    let bytes = vault_io::read_bounded(&snapshot.join(RECEIPT_FILE), 2 * MAX_RECEIPT_BYTES).map_err(|e| format!("{RECEIPT_FILE}: {e}"))?;
    SignedReceipt::from_file_bytes(&bytes).and_then(|r| r.verify_self_consistent()).map_err(|e| format!("{RECEIPT_FILE}: {e}"))
}

/// Every chunk a snapshot's manifest names (the manifest its receipt signs).
pub(crate) fn chunks_of(snapshot: &Path) -> std::result::Result<Vec<ChunkId>, String> {
    let receipt = receipt_of(snapshot)?;
    let manifest = vault_io::read_bounded(&snapshot.join(MANIFEST_FILE), MAX_MANIFEST_BYTES).map_err(|e| format!("{MANIFEST_FILE}: {e}"))?;
    named_by_manifest(&manifest, &receipt.manifest_sha256)
}

/// The pusher a snapshot's receipt names and the chunks the snapshot gave it.
fn given_by(snapshot: &Path) -> std::result::Result<(String, Vec<ChunkId>), String> {
    let read = |name: &str, limit: usize| vault_io::read_bounded(&snapshot.join(name), limit).map_err(|e| format!("{name}: {e}"));
    let receipt = receipt_of(snapshot)?;
    let ids = match read(OWNED_FILE, MAX_OWNED_BYTES) {
        Ok(bytes) => decode(&bytes).map_err(|reason| format!("{OWNED_FILE}: {reason}"))?,
        Err(_) if !snapshot.join(OWNED_FILE).exists() => named_by_manifest(&read(MANIFEST_FILE, MAX_MANIFEST_BYTES)?, &receipt.manifest_sha256)?,
        Err(e) => return Err(e),
    };
    Ok((receipt.pusher, ids))
}

/// A snapshot sealed before `owned` files: the chunks its manifest (the one its receipt
/// signs) names.
fn named_by_manifest(bytes: &[u8], signed_sha256: &str) -> std::result::Result<Vec<ChunkId>, String> {
    let actual = vault_core::keys::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    if actual != signed_sha256 {
        return Err(format!("{MANIFEST_FILE}: hashes to {actual}, its receipt says {signed_sha256}"));
    }
    let mut ids = Vec::new();
    vault_core::push::manifest::walk(bytes, |entry| {
        ids.extend(entry.chunks().iter().flat_map(|c| c.iter()).map(|c| c.id));
        Ok(())
    })
    .map_err(|e| format!("{MANIFEST_FILE}: {e}"))?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_file_round_trips_and_every_flaw_is_named() {
        let ids = vec![ChunkId::of(b"a"), ChunkId::of(b"b")];
        let bytes = encode(&ids).unwrap();
        assert_eq!(decode(&bytes).unwrap(), ids);
        assert_eq!(decode(&encode(&[]).unwrap()).unwrap(), vec![]);
        assert!(decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("checksum"));
        assert!(decode(&bytes[..20]).unwrap_err().contains("truncated"));
        let mut flipped = bytes.clone();
        flipped[HEADER_BYTES] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
    }

    #[test]
    fn ownership_is_per_pusher() {
        let mut owners = Owners::default();
        owners.add("a", &[ChunkId::of(b"x")]);
        owners.add("b", &[ChunkId::of(b"y")]);
        assert!(owners.owns("a", &ChunkId::of(b"x")) && !owners.owns("a", &ChunkId::of(b"y")));
        assert!(owners.owns("b", &ChunkId::of(b"y")) && !owners.owns("c", &ChunkId::of(b"x")));
    }
}
