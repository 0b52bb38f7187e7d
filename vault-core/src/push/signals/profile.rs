//! The profile sealed beside each snapshot's manifest: one mark per file (how much of it is
//! incompressible, whether it reads like a ransom note), the extensions the dataset has
//! shown so far and the snapshot's change counts. It is what the next snapshot of the same
//! (pusher, dataset) is judged against, so no snapshot's data is ever read a second time.
//! Canonical JSON, bounded before it is parsed; the per-file marks are base64 of one byte
//! each, in manifest order (files and streams only).

use std::collections::BTreeSet;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::error::{invalid, Error, Result};
use crate::push::manifest::{self, MAX_MANIFEST_BYTES};

pub const PROFILE_VERSION: u32 = 1;
/// A manifest's entries are at least 15 bytes, so it names fewer than this many files; the
/// profile's marks take 4/3 of a byte each in base64, plus the extensions and counts.
pub const MAX_PROFILE_BYTES: usize = MAX_MANIFEST_BYTES / 15 * 4 / 3 + 64 * 1024;
/// Distinct extensions remembered per dataset. Past this, a new one is not remembered (and
/// so counts as new again): the set cannot grow without bound.
pub const MAX_EXTENSIONS: usize = 1024;
pub const MAX_EXTENSION_CHARS: usize = 16;

/// One file's mark: bit 7 a ransom note, bits 0-6 the percent incompressible (0-100) or
/// [`FileMark::UNMEASURED_SHARE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMark(u8);

impl FileMark {
    const UNMEASURED_SHARE: u8 = 127;
    const NOTE_BIT: u8 = 0x80;

    pub fn new(incompressible_percent: Option<u8>, note: bool) -> FileMark {
        let share = incompressible_percent.map_or(Self::UNMEASURED_SHARE, |p| p.min(100));
        FileMark(share | if note { Self::NOTE_BIT } else { 0 })
    }

    /// Percent of the file no compressor could shrink; `None` when nothing of it was measured.
    pub fn incompressible_percent(self) -> Option<u8> {
        let share = self.0 & !Self::NOTE_BIT;
        (share != Self::UNMEASURED_SHARE).then_some(share)
    }

    pub fn is_note(self) -> bool {
        self.0 & Self::NOTE_BIT != 0
    }

    fn from_byte(byte: u8) -> Option<FileMark> {
        let share = byte & !Self::NOTE_BIT;
        (share <= 100 || share == Self::UNMEASURED_SHARE).then_some(FileMark(byte))
    }
}

/// How one snapshot differs from the one before it of its dataset: the history later
/// snapshots' rates are judged against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeStats {
    pub files: u64,
    pub added: u64,
    pub changed: u64,
    pub deleted: u64,
    pub renamed: u64,
    pub logical_bytes: u64,
    pub bytes_new: u64,
}

impl ChangeStats {
    /// Files changed, added, deleted or renamed, in thousandths of the files there were.
    pub fn churn_per_mille(&self, files_before: u64) -> u64 {
        per_mille(self.changed + self.added + self.deleted + self.renamed, files_before.max(1))
    }

    pub fn new_bytes_per_mille(&self) -> u64 {
        per_mille(self.bytes_new, self.logical_bytes.max(1))
    }
}

pub(crate) fn per_mille(part: u64, whole: u64) -> u64 {
    u64::try_from(u128::from(part) * 1000 / u128::from(whole.max(1))).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileDoc {
    version: u32,
    stats: ChangeStats,
    /// Files before this snapshot (the previous snapshot's count): what its rates divide by.
    files_before: u64,
    extensions: Vec<String>,
    marks: String,
}

/// A snapshot's profile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    pub stats: ChangeStats,
    pub files_before: u64,
    /// Every extension the dataset has shown up to and including this snapshot.
    pub extensions: BTreeSet<String>,
    /// One per file or stream of the manifest, in its order.
    pub marks: Vec<FileMark>,
}

impl Profile {
    pub fn to_bytes(&self) -> Vec<u8> {
        let marks: Vec<u8> = self.marks.iter().map(|m| m.0).collect();
        canonical::encode(&ProfileDoc {
            version: PROFILE_VERSION,
            stats: self.stats,
            files_before: self.files_before,
            extensions: self.extensions.iter().cloned().collect(),
            marks: base64::engine::general_purpose::STANDARD.encode(marks),
        })
    }

    /// Strict decoding, bounded before parsing: a profile the vault did not write is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Profile> {
        canonical::check_size(bytes.len(), MAX_PROFILE_BYTES, "snapshot profile")?;
        let doc: ProfileDoc = canonical::decode(bytes, "snapshot profile")?;
        if doc.version != PROFILE_VERSION {
            return Err(invalid("profile.version", format!("{}, this vault reads version {PROFILE_VERSION}", doc.version)));
        }
        if doc.extensions.len() > MAX_EXTENSIONS {
            return Err(invalid("profile.extensions", format!("{} extensions, at most {MAX_EXTENSIONS}", doc.extensions.len())));
        }
        if let Some(bad) = doc.extensions.iter().find(|e| !is_extension(e)) {
            return Err(invalid("profile.extensions", format!("`{}` is not an extension as the vault records them", bad.escape_default())));
        }
        let raw = base64::engine::general_purpose::STANDARD.decode(&doc.marks).map_err(|e| invalid("profile.marks", e.to_string()))?;
        let marks = raw.iter().map(|b| FileMark::from_byte(*b)).collect::<Option<Vec<_>>>().ok_or_else(|| invalid("profile.marks", "a mark outside 0-100 percent"))?;
        let extensions: BTreeSet<String> = doc.extensions.iter().cloned().collect();
        if extensions.len() != doc.extensions.len() {
            return Err(invalid("profile.extensions", "an extension is listed twice"));
        }
        let profile = Profile { stats: doc.stats, files_before: doc.files_before, extensions, marks };
        if profile.to_bytes() != bytes {
            return Err(Error::NonCanonical { what: "snapshot profile" });
        }
        Ok(profile)
    }
}

/// A file name's extension as the signals count them: after the last dot of the last
/// component, lowercased, 1-16 letters or digits; hidden files (`.bashrc`) have none.
pub fn extension_of(path: &[u8]) -> Option<String> {
    let name = path.rsplit(|b| *b == b'/').next()?;
    let dot = name.iter().rposition(|b| *b == b'.')?;
    let ext = &name[dot + 1..];
    if dot == 0 || ext.is_empty() || ext.len() > MAX_EXTENSION_CHARS || !ext.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    Some(String::from_utf8_lossy(ext).to_ascii_lowercase())
}

fn is_extension(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_EXTENSION_CHARS && text.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// Where a path lies in a manifest's bytes. The signals keep these, not copies: a manifest
/// may name hundreds of thousands of files, and each copy would cost its own allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathAt {
    start: u32,
    len: u16,
}

impl PathAt {
    /// `path` must lie inside `manifest` (an entry [`manifest::walk`] handed out).
    pub fn of(path: &[u8], manifest: &[u8]) -> PathAt {
        // Addresses compared, never dereferenced: the slice's offset in the manifest.
        let start = (path.as_ptr() as usize).checked_sub(manifest.as_ptr() as usize).filter(|s| s + path.len() <= manifest.len()).expect("a path of this manifest");
        PathAt { start: u32::try_from(start).expect("manifests are at most 16 MiB"), len: u16::try_from(path.len()).expect("paths are at most 4096 bytes") }
    }

    pub fn get(self, manifest: &[u8]) -> &[u8] {
        let start = self.start as usize;
        &manifest[start..start + usize::from(self.len)]
    }
}

/// The newest sealed snapshot of a dataset: its manifest and its files, as the signals see
/// them (their paths point into the manifest).
#[derive(Debug, Clone, Default)]
pub struct Previous {
    pub manifest: Vec<u8>,
    pub files: Vec<FileFacts>,
}

impl Previous {
    /// From its manifest and profile (which must agree on how many files there are).
    pub fn read(manifest: Vec<u8>, profile: &Profile) -> Result<Previous> {
        let files = sealed_files(&manifest, profile)?;
        Ok(Previous { manifest, files })
    }
}

/// One file of a sealed snapshot as the signals see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// In the snapshot's manifest.
    pub path: PathAt,
    pub size: u64,
    /// The first 16 bytes of SHA-256 over the file's chunk ids: equal content, equal key.
    pub content: [u8; 16],
    pub mark: FileMark,
}

/// The key of a file's content: its chunk ids, in order.
pub fn content_key(chunks: impl Iterator<Item = crate::push::chunk::ChunkId>) -> [u8; 16] {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    for id in chunks {
        hash.update(&id.0);
    }
    hash.finish().as_ref()[..16].try_into().expect("SHA-256 is 32 bytes")
}

/// A sealed snapshot's files, read from its manifest and profile (which must agree on how
/// many files there are).
pub fn sealed_files(manifest_bytes: &[u8], profile: &Profile) -> Result<Vec<FileFacts>> {
    let mut files = Vec::with_capacity(profile.marks.len());
    manifest::walk(manifest_bytes, |entry| {
        let (Some(chunks), Some(mark)) = (entry.chunks(), profile.marks.get(files.len())) else {
            return if entry.chunks().is_some() { Err(invalid("profile.marks", format!("fewer marks ({}) than the manifest has files", profile.marks.len()))) } else { Ok(()) };
        };
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        files.push(FileFacts { path: PathAt::of(entry.path, manifest_bytes), size, content: content_key(chunks.iter().map(|c| c.id)), mark: *mark });
        Ok(())
    })?;
    if files.len() != profile.marks.len() {
        return Err(invalid("profile.marks", format!("{} marks for {} files", profile.marks.len(), files.len())));
    }
    Ok(files)
}
