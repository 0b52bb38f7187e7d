//! The audit log on the data disk, under `store/log/`: entry bundles and hash tiles in the C2SP
//! `tlog-tiles` layout (`vault_core::audit::tiles`), and `checkpoint`, the last checkpoint the
//! vault signed (a C2SP signed note).
//!
//! Writing ([`AuditLog`], one writer): entries are appended as entry bundles, then the level-0
//! hash tile, then every higher tile whose width changed, each written atomically (temporary
//! file, fsync, rename, fsync); a full tile or bundle is flagged immutable and the partial one it
//! replaces removed. Only then is a checkpoint signed, after checking that it extends the last
//! one signed (a consistency proof computed from the tiles and verified), and written atomically.
//! A power cut between leaves entries past the signed checkpoint: the next open appends them
//! again from their bundle, so the tiles always describe exactly what the bundles hold.
//!
//! Reading ([`read_checkpoint`], [`consistency_proof`], [`read_entries`]) needs no lock: tiles
//! only grow, and a reader asking for a partial tile the writer has since widened reads the
//! wider one's prefix.

use std::fs;
use std::path::{Path, PathBuf};

use vault_core::audit::checkpoint::Checkpoint;
use vault_core::audit::merkle::{self, Hash};
use vault_core::audit::tiles::{self, TileHashes, TileReader, TILE_WIDTH};
use vault_core::audit::AuditError;
use vault_core::keys::{PublicKey, SigningKey};

use crate::immutable::make_immutable;
use crate::{io_error, Result, StoreError};

/// The log's directory under the store.
pub const LOG_DIR: &str = "log";
/// The last signed checkpoint, in the log's directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// Reads tiles of the log at `dir` (a full tile, or a partial one at least as wide).
struct DiskTiles<'a> {
    dir: &'a Path,
}

impl TileReader for DiskTiles<'_> {
    fn read_tile(&self, level: u8, index: u64, width: u64) -> std::result::Result<Vec<u8>, AuditError> {
        read_prefix(self.dir, &tiles::tile_path(level, index, TILE_WIDTH), &tiles::tile_path(level, index, 1), width * 32)
    }
}

/// The first `len` bytes of the file at `full` (relative to `dir`), or of the widest partial file
/// beside `partial`'s `.p/` directory that holds them.
fn read_prefix(dir: &Path, full: &str, partial: &str, len: u64) -> std::result::Result<Vec<u8>, AuditError> {
    let missing = |reason: String| AuditError::Missing { what: full.to_string(), reason };
    let full_path = dir.join(full);
    let path = if full_path.exists() {
        full_path
    } else {
        let partials = dir.join(partial).parent().map(Path::to_path_buf).ok_or_else(|| missing("no partial directory".into()))?;
        let widest = fs::read_dir(&partials).map_err(|e| missing(format!("{}: {e}", partials.display())))?.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok()).max();
        partials.join(widest.ok_or_else(|| missing("no partial tile".into()))?.to_string())
    };
    let limit = usize::try_from(len).unwrap_or(usize::MAX).max(tiles::MAX_BUNDLE_BYTES);
    let bytes = vault_io::read_bounded(&path, limit).map_err(|e| missing(e.to_string()))?;
    if (bytes.len() as u64) < len {
        return Err(AuditError::TileMismatch { path: path.display().to_string(), reason: format!("{} bytes, {len} needed", bytes.len()) });
    }
    Ok(bytes)
}

/// The entries of bundle `index` of a log of `size` entries.
fn bundle_entries(dir: &Path, index: u64, size: u64) -> std::result::Result<Vec<Vec<u8>>, AuditError> {
    let width = (size - index * TILE_WIDTH).min(TILE_WIDTH);
    let bytes = read_prefix(dir, &tiles::entries_path(index, TILE_WIDTH), &tiles::entries_path(index, 1), 0)?;
    // A wider bundle than the log's size holds (entries appended past the checkpoint) is read
    // for its first `width` entries.
    let mut entries = Vec::new();
    let mut rest = &bytes[..];
    while (entries.len() as u64) < width {
        let (len, tail) = rest.split_at_checked(2).ok_or_else(|| AuditError::Malformed { what: "entry bundle", reason: format!("{} entries, {width} expected", entries.len()) })?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (entry, tail) = tail.split_at_checked(len).ok_or_else(|| AuditError::Malformed { what: "entry bundle", reason: "an entry cut short".into() })?;
        entries.push(entry.to_vec());
        rest = tail;
    }
    Ok(entries)
}

/// The entries `from..to` of the log under `store` (at most `to - from` <= 65 536 at once).
pub fn read_entries(store: &Path, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
    const MAX_READ: u64 = 1 << 16;
    let dir = store.join(LOG_DIR);
    if to < from || to - from > MAX_READ {
        return Err(AuditError::Malformed { what: "entry range", reason: format!("{from}..{to}: at most {MAX_READ} at once") }.into());
    }
    let mut out = Vec::new();
    let mut index = from / TILE_WIDTH;
    while index * TILE_WIDTH < to {
        let bundle = bundle_entries(&dir, index, to)?;
        for (i, entry) in bundle.into_iter().enumerate() {
            let n = index * TILE_WIDTH + i as u64;
            if n >= from && n < to {
                out.push(entry);
            }
        }
        index += 1;
    }
    Ok(out)
}

/// The last checkpoint the vault signed (the note's bytes), if any.
pub fn read_checkpoint(store: &Path) -> Result<Option<Vec<u8>>> {
    let path = store.join(LOG_DIR).join(CHECKPOINT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(vault_io::read_bounded(&path, vault_core::audit::note::MAX_NOTE_BYTES)?))
}

/// The proof that the log of `old` entries is a prefix of the log of `new` entries.
pub fn consistency_proof(store: &Path, old: u64, new: u64) -> Result<Vec<Hash>> {
    let dir = store.join(LOG_DIR);
    let tiles = DiskTiles { dir: &dir };
    Ok(merkle::consistency_proof(old, new, &TileHashes { size: new, tiles: &tiles })?)
}

/// The root of the log of `size` entries, from its tiles.
pub fn tree_hash(store: &Path, size: u64) -> Result<Hash> {
    let dir = store.join(LOG_DIR);
    let tiles = DiskTiles { dir: &dir };
    Ok(merkle::tree_hash(size, &TileHashes { size, tiles: &tiles })?)
}

/// Every file of the log of `size` entries in the tlog-tiles layout, as `(path under log/,
/// bytes)`: each hash tile and entry bundle at the width that size gives it (a wider partial or a
/// full tile on disk is cut to that width), so the files handed out are exactly that log's.
pub fn copy_log(store: &Path, size: u64, put: &mut dyn FnMut(&str, &[u8]) -> Result<()>) -> Result<()> {
    let dir = store.join(LOG_DIR);
    let disk = DiskTiles { dir: &dir };
    for (level, index, width) in tiles::tiles_to_write(0, size) {
        let bytes = disk.read_tile(level, index, width)?;
        let len = usize::try_from(width * 32).expect("a tile is at most 8 KiB");
        put(&tiles::tile_path(level, index, width), &bytes[..len])?;
        if level == 0 {
            let entries = bundle_entries(&dir, index, size)?;
            let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
            put(&tiles::entries_path(index, width), &tiles::encode_bundle(&refs)?)?;
        }
    }
    Ok(())
}

/// Whether `checkpoint` (a signed note from elsewhere: an export, a receipt) describes a prefix
/// of the log under `store`: signed by `key`, no longer than the log, and its root the log's
/// root at that size. `Err` says how it is not.
pub fn is_prefix(store: &Path, checkpoint: &[u8], key: &PublicKey) -> std::result::Result<(), String> {
    let theirs = Checkpoint::open(checkpoint, key).map_err(|e| format!("its checkpoint does not verify: {e}"))?;
    let ours = read_checkpoint(store).map_err(|e| e.to_string())?.ok_or("the vault's log has no checkpoint yet")?;
    let ours = Checkpoint::open(&ours, key).map_err(|e| format!("the vault's own checkpoint does not verify: {e}"))?;
    if theirs.size > ours.size {
        return Err(format!("its checkpoint has {} entries, the vault's log {}: the vault's log was rewound, or the checkpoint is not this log's", theirs.size, ours.size));
    }
    let root = tree_hash(store, theirs.size).map_err(|e| e.to_string())?;
    if root != theirs.root {
        return Err(format!("its checkpoint of {} entries does not match the vault's log at that size: the log was forked", theirs.size));
    }
    Ok(())
}

/// The newest signed restore drill report among the log's first `size` entries, verified under
/// `key` (a report that does not verify is an error: the log holds only what the vault wrote).
pub fn last_drill_report(store: &Path, size: u64, key: &PublicKey) -> Result<Option<vault_core::keys::SignedDoc>> {
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(TILE_WIDTH * 64);
        for entry in read_entries(store, start, end)?.iter().rev() {
            if let Some(report) = vault_core::lifecycle::drill::report_in_log_entry(entry, key) {
                report?;
                let line: serde_json::Value = serde_json::from_slice(entry).map_err(|e| AuditError::Malformed { what: "drill entry", reason: e.to_string() })?;
                let field = |name: &str| line.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                return Ok(Some(vault_core::keys::SignedDoc { body: field("report"), signature: field("signature") }));
            }
        }
        end = start;
    }
    Ok(None)
}

/// What opening the log found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogRecovery {
    /// Entries the last signed checkpoint covers.
    pub signed: u64,
    /// Entries found in bundles past it (a cut before their checkpoint), appended again.
    pub appended_again: u64,
}

/// The log's one writer.
pub struct AuditLog {
    store: PathBuf,
    dir: PathBuf,
    origin: String,
    size: u64,
    /// The last checkpoint signed (the note's text is the file).
    signed: Option<Checkpoint>,
    /// The entries of the last, partial bundle (what the next append adds to).
    tail: Vec<Vec<u8>>,
}

impl AuditLog {
    /// Opens (or starts) the log under `store` for the vault whose key is `key`. The signed
    /// checkpoint must verify under that key and match the tiles; entries past it are appended
    /// again. Refused (the log left as it is, for whoever investigates) when it does not.
    pub fn open(store: &Path, key: &PublicKey) -> Result<(AuditLog, LogRecovery)> {
        let dir = store.join(LOG_DIR);
        fs::create_dir_all(dir.join("tile")).map_err(|e| io_error(&dir, e))?;
        let origin = vault_core::audit::checkpoint::origin_of(key);
        let signed = match read_checkpoint(store)? {
            Some(bytes) => Some(Checkpoint::open(&bytes, key)?),
            None => None,
        };
        let size = signed.as_ref().map_or(0, |c| c.size);
        if let Some(checkpoint) = &signed {
            let root = tree_hash(store, size)?;
            if root != checkpoint.root {
                return Err(AuditError::Inconsistent(format!("the tiles of the first {size} entries do not hash to the signed checkpoint's root: the log on this disk was altered")).into());
            }
        }
        let mut log = AuditLog { store: store.to_path_buf(), dir, origin, size, signed, tail: Vec::new() };
        log.tail = if size % TILE_WIDTH == 0 { Vec::new() } else { bundle_entries(&log.dir, size / TILE_WIDTH, size)? };
        // Entries written past the checkpoint (a cut before it was signed): in order, again.
        let past = log.entries_past(size)?;
        let recovery = LogRecovery { signed: size, appended_again: past.len() as u64 };
        if !past.is_empty() {
            log.append(&past)?;
        }
        Ok((log, recovery))
    }

    /// Entries in the bundles beyond the first `size`.
    fn entries_past(&self, size: u64) -> Result<Vec<Vec<u8>>> {
        let mut past = Vec::new();
        let mut index = size / TILE_WIDTH;
        loop {
            let bytes = match read_prefix(&self.dir, &tiles::entries_path(index, TILE_WIDTH), &tiles::entries_path(index, 1), 0) {
                Ok(bytes) => bytes,
                Err(AuditError::Missing { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            let entries = tiles::decode_bundle(&bytes, count_entries(&bytes)?)?;
            let skip = if index == size / TILE_WIDTH { (size % TILE_WIDTH) as usize } else { 0 };
            past.extend(entries.into_iter().skip(skip).map(<[u8]>::to_vec));
            if count_entries(&bytes)? < TILE_WIDTH {
                break;
            }
            index += 1;
        }
        Ok(past)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The last checkpoint signed.
    pub fn signed(&self) -> Option<&Checkpoint> {
        self.signed.as_ref()
    }

    /// Appends `entries` (each at most 65 535 bytes): bundles, then tiles, all durable.
    pub fn append(&mut self, entries: &[Vec<u8>]) -> Result<()> {
        for entry in entries {
            if entry.len() > tiles::MAX_ENTRY_BYTES {
                return Err(AuditError::TooLarge { what: "audit log entry", size: entry.len(), limit: tiles::MAX_ENTRY_BYTES }.into());
            }
        }
        let old = self.size;
        let mut leaf_tile: Vec<u8> = if old % TILE_WIDTH == 0 {
            Vec::new()
        } else {
            DiskTiles { dir: &self.dir }.read_tile(0, old / TILE_WIDTH, old % TILE_WIDTH)?[..usize::try_from(old % TILE_WIDTH).expect("below TILE_WIDTH") * 32].to_vec()
        };
        let mut size = old;
        for entry in entries {
            self.tail.push(entry.clone());
            leaf_tile.extend_from_slice(&merkle::leaf_hash(entry));
            size += 1;
            if size % TILE_WIDTH == 0 || size == old + entries.len() as u64 {
                let index = (size - 1) / TILE_WIDTH;
                let width = size - index * TILE_WIDTH;
                let refs: Vec<&[u8]> = self.tail.iter().map(Vec::as_slice).collect();
                self.write(&tiles::entries_path(index, width), &tiles::encode_bundle(&refs)?, width)?;
                self.write(&tiles::tile_path(0, index, width), &leaf_tile, width)?;
                if width == TILE_WIDTH {
                    self.tail.clear();
                    leaf_tile.clear();
                }
            }
        }
        for (level, index, width) in tiles::tiles_to_write(old, size) {
            if level == 0 {
                continue;
            }
            let content = tiles::tile_content(level, index, width, &TileHashes { size, tiles: &DiskTiles { dir: &self.dir } })?;
            self.write(&tiles::tile_path(level, index, width), &content, width)?;
        }
        self.size = size;
        Ok(())
    }

    /// Writes one tile or bundle durably; a full one is flagged immutable, and the partial ones
    /// it or a wider partial replaces are removed.
    fn write(&self, relative: &str, bytes: &[u8], width: u64) -> Result<()> {
        let path = self.dir.join(relative);
        let parent = path.parent().expect("tile paths have a directory");
        fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        if width == TILE_WIDTH && path.exists() {
            // Written before a cut, and sealed: it must say the same.
            let there = vault_io::read_bounded(&path, tiles::MAX_BUNDLE_BYTES)?;
            if there != bytes {
                return Err(AuditError::TileMismatch { path: path.display().to_string(), reason: "a sealed tile or bundle differs from what the entries make".into() }.into());
            }
            make_immutable(&path)?;
            return Ok(());
        }
        vault_io::write_atomic(&path, bytes, 0o444)?;
        let partials = if width == TILE_WIDTH {
            make_immutable(&path)?;
            PathBuf::from(format!("{}.p", path.display()))
        } else {
            parent.to_path_buf()
        };
        if let Ok(listing) = fs::read_dir(&partials) {
            for old in listing.flatten() {
                let narrower = old.file_name().to_str().and_then(|w| w.parse::<u64>().ok()).is_some_and(|w| w < width || width == TILE_WIDTH);
                if narrower {
                    let _ = fs::remove_file(old.path());
                }
            }
        }
        Ok(())
    }

    /// Signs a checkpoint of the log as it is, if it grew since the last one, after checking it
    /// extends that one; writes it durably and returns the note. `None`: nothing new to sign.
    pub fn sign(&mut self, key: &SigningKey) -> Result<Option<String>> {
        if self.signed.as_ref().is_some_and(|c| c.size == self.size) {
            return Ok(None);
        }
        let checkpoint = Checkpoint { origin: self.origin.clone(), size: self.size, root: tree_hash(&self.store, self.size)?, extensions: Vec::new() };
        if let Some(last) = &self.signed {
            let proof = consistency_proof(&self.store, last.size, self.size)?;
            last.check_extended_by(&checkpoint, &proof)?;
        }
        let note = checkpoint.sign(key)?;
        vault_io::write_atomic(&self.dir.join(CHECKPOINT_FILE), note.as_bytes(), 0o444)?;
        self.signed = Some(checkpoint);
        Ok(Some(note))
    }
}

/// What [`verify`] found: the checkpoint, checked to the last entry.
#[derive(Debug)]
pub struct Verified {
    pub checkpoint: Checkpoint,
    pub entries: u64,
}

/// Checks the whole log under `store` against the vault key: the signed checkpoint, every
/// entry's hash against its level-0 tile (naming the first entry that differs), every higher tile
/// against the tiles below it, and the root against the checkpoint.
pub fn verify(store: &Path, key: &PublicKey) -> Result<Verified> {
    let dir = store.join(LOG_DIR);
    let bytes = read_checkpoint(store)?.ok_or_else(|| AuditError::Missing { what: format!("{}/{CHECKPOINT_FILE}", dir.display()), reason: "no checkpoint was ever signed".into() })?;
    let checkpoint = Checkpoint::open(&bytes, key)?;
    let size = checkpoint.size;
    let disk = DiskTiles { dir: &dir };
    let mut index = 0u64;
    while index * TILE_WIDTH < size {
        let width = (size - index * TILE_WIDTH).min(TILE_WIDTH);
        let entries = bundle_entries(&dir, index, size)?;
        let tile = disk.read_tile(0, index, width)?;
        for (i, entry) in entries.iter().enumerate() {
            let n = index * TILE_WIDTH + i as u64;
            if merkle::leaf_hash(entry)[..] != tile[i * 32..i * 32 + 32] {
                return Err(
                    AuditError::NotIncluded { index: n, reason: format!("entry {n} does not hash to its leaf in {} (the entry or the tile was altered)", tiles::tile_path(0, index, width)) }.into()
                );
            }
        }
        index += 1;
    }
    let hashes = TileHashes { size, tiles: &disk };
    for (level, index, width) in tiles::tiles_to_write(0, size) {
        if level == 0 {
            continue;
        }
        let expected = tiles::tile_content(level, index, width, &hashes)?;
        let there = disk.read_tile(level, index, width)?;
        if there[..expected.len()] != expected[..] {
            return Err(AuditError::TileMismatch { path: tiles::tile_path(level, index, width), reason: "it does not hold the roots of the tiles below it".into() }.into());
        }
    }
    let root = merkle::tree_hash(size, &hashes)?;
    if root != checkpoint.root {
        return Err(AuditError::Inconsistent(format!("the {size} entries hash to a root other than the signed checkpoint's")).into());
    }
    Ok(Verified { checkpoint, entries: size })
}

/// How many entries a bundle holds (each a u16 length and its bytes).
fn count_entries(bytes: &[u8]) -> std::result::Result<u64, AuditError> {
    let (mut count, mut rest) = (0u64, bytes);
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(2).ok_or_else(|| AuditError::Malformed { what: "entry bundle", reason: "a length cut short".into() })?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        rest = tail.get(len..).ok_or_else(|| AuditError::Malformed { what: "entry bundle", reason: "an entry cut short".into() })?;
        count += 1;
        if count > TILE_WIDTH {
            return Err(AuditError::Malformed { what: "entry bundle", reason: "more than 256 entries".into() });
        }
    }
    Ok(count)
}

impl From<AuditError> for StoreError {
    fn from(e: AuditError) -> Self {
        StoreError::Core(vault_core::Error::Audit(e))
    }
}
