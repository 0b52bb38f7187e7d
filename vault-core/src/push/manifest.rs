//! The manifest: what a snapshot contains, as a list of entries sorted by path. Files name
//! their chunks in order; a stream is a single unnamed file. The encoding is binary and
//! strict, and every name is checked so that a restore can never be steered outside its
//! target directory: no absolute paths, no `..` or `.`, no empty components, no NUL.

use std::collections::HashSet;

use crate::error::PushError;
use crate::error::{Error, Result};
use crate::push::chunk::{ChunkId, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES};
use crate::wire::{Reader, Writer};

pub const MANIFEST_MAGIC: &[u8; 4] = b"VMAN";
pub const MANIFEST_VERSION: u8 = 1;
/// Bounds the manifest the vault buffers per session (and so its memory).
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_COMPONENT_BYTES: usize = 255;
/// The fewest bytes a file entry takes: kind, a one-byte path with its length, mode, mtime,
/// size and an empty chunk list's count.
pub const MIN_FILE_ENTRY_BYTES: usize = 1 + 2 + 1 + 4 + 8 + 8 + 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
        chunks: Vec<ChunkRef>,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// The one entry of a stream snapshot (`vaultctl push ... -`).
    Stream {
        size: u64,
        chunks: Vec<ChunkRef>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, `/`-separated, as bytes (Unix names need not be UTF-8).
    pub path: Vec<u8>,
    /// Permission bits only (`& 0o7777`).
    pub mode: u32,
    /// Seconds since the epoch, as the pusher saw it: informational, never used for retention.
    pub mtime: i64,
    pub kind: EntryKind,
}

impl Entry {
    pub fn chunks(&self) -> &[ChunkRef] {
        match &self.kind {
            EntryKind::File { chunks, .. } | EntryKind::Stream { chunks, .. } => chunks,
            EntryKind::Dir | EntryKind::Symlink { .. } => &[],
        }
    }

    pub fn size(&self) -> u64 {
        match &self.kind {
            EntryKind::File { size, .. } | EntryKind::Stream { size, .. } => *size,
            EntryKind::Dir | EntryKind::Symlink { .. } => 0,
        }
    }

    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub entries: Vec<Entry>,
}

const KIND_FILE: u8 = 1;
const KIND_DIR: u8 = 2;
const KIND_SYMLINK: u8 = 3;
const KIND_STREAM: u8 = 4;

/// Checks one relative path. Used for manifest entries and for what restore writes.
pub fn check_path(path: &[u8]) -> Result<()> {
    let bad = |reason: &'static str| Err(Error::Push(PushError::BadName { name: String::from_utf8_lossy(path).escape_default().to_string(), reason }));
    if path.is_empty() {
        return bad("empty path");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("path longer than 4096 bytes");
    }
    if path.contains(&0) {
        return bad("NUL byte in path");
    }
    if path[0] == b'/' {
        return bad("absolute path");
    }
    for component in path.split(|b| *b == b'/') {
        match component {
            b"" => return bad("empty path component (`//` or trailing `/`)"),
            b"." => return bad("`.` component"),
            b".." => return bad("`..` component"),
            c if c.len() > MAX_COMPONENT_BYTES => return bad("path component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

impl Manifest {
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(Entry::size).sum()
    }

    pub fn file_count(&self) -> u64 {
        self.entries.iter().filter(|e| matches!(e.kind, EntryKind::File { .. } | EntryKind::Stream { .. })).count() as u64
    }

    pub fn chunk_refs(&self) -> impl Iterator<Item = (&Entry, &ChunkRef)> {
        self.entries.iter().flat_map(|e| e.chunks().iter().map(move |c| (e, c)))
    }

    /// The rules a manifest must follow, whoever made it: those of [`walk`], on its encoding.
    pub fn validate(&self) -> Result<()> {
        walk(&self.encode()?, |_| Ok(())).map(|_| ())
    }

    /// Encodes the manifest. Lengths that do not fit the format are refused, never cut.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::default();
        w.raw(MANIFEST_MAGIC).u8(MANIFEST_VERSION).len_u32(self.entries.len(), "manifest entries")?;
        for e in &self.entries {
            let kind = match e.kind {
                EntryKind::File { .. } => KIND_FILE,
                EntryKind::Dir => KIND_DIR,
                EntryKind::Symlink { .. } => KIND_SYMLINK,
                EntryKind::Stream { .. } => KIND_STREAM,
            };
            w.u8(kind).short_bytes(&e.path)?.u32(e.mode).i64(e.mtime);
            match &e.kind {
                EntryKind::File { size, chunks } | EntryKind::Stream { size, chunks } => {
                    w.u64(*size).len_u32(chunks.len(), "chunks of one file")?;
                    for c in chunks {
                        w.raw(&c.id.0).u32(c.len);
                    }
                }
                EntryKind::Symlink { target } => {
                    w.short_bytes(target)?;
                }
                EntryKind::Dir => {}
            }
        }
        Ok(w.bytes)
    }

    /// Strict decoding into owned entries: [`walk`], keeping what it checked.
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let mut entries = Vec::new();
        walk(bytes, |entry| {
            entries.push(entry.to_owned());
            Ok(())
        })?;
        Ok(Manifest { entries })
    }
}

/// One entry as it lies in the manifest's bytes: nothing is copied, so the vault can check a
/// manifest of any allowed size with no memory per entry beyond the parent-name set.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub path: &'a [u8],
    pub mode: u32,
    pub mtime: i64,
    pub kind: KindRef<'a>,
}

#[derive(Debug, Clone, Copy)]
pub enum KindRef<'a> {
    File { size: u64, chunks: ChunkRefs<'a> },
    Dir,
    Symlink { target: &'a [u8] },
    Stream { size: u64, chunks: ChunkRefs<'a> },
}

/// A file's chunk list, still encoded: 36 bytes each (id, then a big-endian u32 length).
#[derive(Debug, Clone, Copy)]
pub struct ChunkRefs<'a> {
    raw: &'a [u8],
}

const CHUNK_REF_BYTES: usize = 32 + 4;

impl<'a> ChunkRefs<'a> {
    pub fn len(&self) -> usize {
        self.raw.len() / CHUNK_REF_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = ChunkRef> + 'a {
        self.raw.chunks_exact(CHUNK_REF_BYTES).map(|r| {
            let (id, len) = r.split_at(32);
            ChunkRef { id: ChunkId(id.try_into().expect("32 bytes")), len: u32::from_be_bytes(len.try_into().expect("4 bytes")) }
        })
    }
}

impl EntryRef<'_> {
    pub fn chunks(&self) -> Option<ChunkRefs<'_>> {
        match self.kind {
            KindRef::File { chunks, .. } | KindRef::Stream { chunks, .. } => Some(chunks),
            KindRef::Dir | KindRef::Symlink { .. } => None,
        }
    }

    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(self.path).into_owned()
    }

    pub fn to_owned(&self) -> Entry {
        let chunks = |c: ChunkRefs<'_>| c.iter().collect();
        let kind = match self.kind {
            KindRef::File { size, chunks: c } => EntryKind::File { size, chunks: chunks(c) },
            KindRef::Stream { size, chunks: c } => EntryKind::Stream { size, chunks: chunks(c) },
            KindRef::Dir => EntryKind::Dir,
            KindRef::Symlink { target } => EntryKind::Symlink { target: target.to_vec() },
        };
        Entry { path: self.path.to_vec(), mode: self.mode, mtime: self.mtime, kind }
    }
}

/// What [`walk`] counted on its way through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    /// Files and streams.
    pub files: u64,
    pub total_size: u64,
    pub chunk_refs: u64,
}

/// The one manifest decoder: bounds the input, reads every entry in place, checks every rule
/// (names, order, parents, modes, chunk lengths, the smallest chunk, streams) and hands each
/// checked entry to `each`, in order. Both [`Manifest::decode`] and the vault's commit check
/// go through here.
pub fn walk<'a>(bytes: &'a [u8], mut each: impl FnMut(&EntryRef<'a>) -> Result<()>) -> Result<Summary> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Error::TooLarge { what: "manifest", size: bytes.len(), limit: MAX_MANIFEST_BYTES });
    }
    let mut r = Reader::new(bytes, "manifest");
    if r.take(4, "magic")? != MANIFEST_MAGIC {
        return Err(r.malformed("bad magic"));
    }
    let version = r.u8("version")?;
    if version != MANIFEST_VERSION {
        return Err(r.malformed(format!("manifest version {version}, expected {MANIFEST_VERSION}")));
    }
    let count = r.len_u32("entry count")?;
    // Every entry takes at least 15 bytes, so a count the input cannot hold is refused
    // before anything is done for it.
    if count > r.remaining() / 15 {
        return Err(r.malformed(format!("{count} entries cannot fit in {} bytes", r.remaining())));
    }
    let mut summary = Summary::default();
    let mut not_dirs: HashSet<&[u8]> = HashSet::new();
    let mut previous: Option<&[u8]> = None;
    for _ in 0..count {
        let kind = r.u8("entry kind")?;
        let path = r.short_bytes("path")?;
        let mode = r.u32("mode")?;
        let mtime = r.i64("mtime")?;
        let kind = match kind {
            KIND_FILE | KIND_STREAM => {
                let size = r.u64("size")?;
                let n = r.len_u32("chunk count")?;
                let raw_len = n.checked_mul(CHUNK_REF_BYTES).filter(|len| *len <= r.remaining());
                let Some(raw_len) = raw_len else {
                    return Err(r.malformed(format!("{n} chunk refs cannot fit in {} bytes", r.remaining())));
                };
                let chunks = ChunkRefs { raw: r.take(raw_len, "chunk refs")? };
                if kind == KIND_FILE {
                    KindRef::File { size, chunks }
                } else {
                    KindRef::Stream { size, chunks }
                }
            }
            KIND_DIR => KindRef::Dir,
            KIND_SYMLINK => KindRef::Symlink { target: r.short_bytes("symlink target")? },
            other => return Err(r.malformed(format!("unknown entry kind {other}"))),
        };
        let entry = EntryRef { path, mode, mtime, kind };
        check_entry(&entry, previous, &not_dirs, count)?;
        previous = Some(path);
        summary.entries += 1;
        if let Some(chunks) = entry.chunks() {
            summary.files += 1;
            summary.chunk_refs += chunks.len() as u64;
            summary.total_size = summary.total_size.saturating_add(entry_size(&entry));
        }
        if !matches!(entry.kind, KindRef::Dir) {
            not_dirs.insert(path);
        }
        each(&entry)?;
    }
    r.finish()?;
    Ok(summary)
}

fn entry_size(entry: &EntryRef<'_>) -> u64 {
    match entry.kind {
        KindRef::File { size, .. } | KindRef::Stream { size, .. } => size,
        KindRef::Dir | KindRef::Symlink { .. } => 0,
    }
}

/// The rules one entry must follow, given the entry before it and the names that are not
/// directories so far (`count`: how many entries the manifest holds).
fn check_entry(entry: &EntryRef<'_>, previous: Option<&[u8]>, not_dirs: &HashSet<&[u8]>, count: usize) -> Result<()> {
    check_path(entry.path)?;
    let name = || String::from_utf8_lossy(entry.path).escape_default().to_string();
    let bad = |reason: &'static str| Err(Error::Push(PushError::BadName { name: name(), reason }));
    if let Some(prev) = previous {
        if prev == entry.path {
            return bad("listed twice");
        }
        if prev > entry.path {
            return bad("entries out of order (must be sorted by path)");
        }
    }
    // No entry may live under a file or a symlink (a symlinked parent could point anywhere).
    let mut ancestor_end = 0;
    while let Some(pos) = entry.path[ancestor_end..].iter().position(|b| *b == b'/') {
        ancestor_end += pos;
        if not_dirs.contains(&entry.path[..ancestor_end]) {
            return bad("parent is a file or symlink");
        }
        ancestor_end += 1;
    }
    if entry.mode & !0o7777 != 0 {
        return bad("mode has bits beyond 0o7777");
    }
    match entry.kind {
        KindRef::Stream { .. } if count != 1 => {
            return Err(Error::Malformed { what: "manifest", reason: "a stream must be the only entry".into() });
        }
        KindRef::File { size, chunks } | KindRef::Stream { size, chunks } => {
            let mut sum = 0u64;
            let last = chunks.len().saturating_sub(1);
            for (i, c) in chunks.iter().enumerate() {
                if c.len == 0 || c.len as usize > MAX_CHUNK_BYTES {
                    return bad("chunk length out of range");
                }
                if i < last && (c.len as usize) < MIN_CHUNK_BYTES {
                    return Err(Error::Push(PushError::ShortChunk { path: name(), index: i, len: c.len, min: MIN_CHUNK_BYTES }));
                }
                sum += u64::from(c.len);
            }
            if sum != size {
                return bad("chunk lengths do not add up to the file size");
            }
        }
        KindRef::Symlink { target } => {
            if target.is_empty() || target.len() > MAX_PATH_BYTES || target.contains(&0) {
                return bad("symlink target empty, too long or with NUL");
            }
        }
        KindRef::Dir => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: &str, data: &[&[u8]]) -> Entry {
        let chunks: Vec<ChunkRef> = data.iter().map(|d| ChunkRef { id: ChunkId::of(d), len: u32::try_from(d.len()).unwrap() }).collect();
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        Entry { path: path.as_bytes().to_vec(), mode: 0o644, mtime: 1_700_000_000, kind: EntryKind::File { size, chunks } }
    }

    fn dir(path: &str) -> Entry {
        Entry { path: path.as_bytes().to_vec(), mode: 0o755, mtime: 0, kind: EntryKind::Dir }
    }

    fn example() -> Manifest {
        Manifest {
            entries: vec![
                dir("etc"),
                file("etc/hosts", &[b"127.0.0.1 localhost\n"]),
                Entry { path: b"etc/link".to_vec(), mode: 0o777, mtime: 0, kind: EntryKind::Symlink { target: b"hosts".to_vec() } },
                file("var.log", &[&[1u8; MIN_CHUNK_BYTES], b"two"]),
            ],
        }
    }

    #[test]
    fn round_trips() {
        let m = example();
        m.validate().unwrap();
        assert_eq!(Manifest::decode(&m.encode().unwrap()).unwrap(), m);
        assert_eq!(m.total_size(), 20 + MIN_CHUNK_BYTES as u64 + 3);
        assert_eq!(m.file_count(), 2);
    }

    fn refusal(m: Manifest) -> String {
        Manifest::decode(&m.encode().unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn hostile_names_are_refused() {
        for (path, reason) in [
            ("../etc/passwd", "`..` component"),
            ("a/../../b", "`..` component"),
            ("/etc/passwd", "absolute path"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("./a", "`.` component"),
            ("a\0b", "NUL byte"),
        ] {
            let err = refusal(Manifest { entries: vec![file(path, &[b"x"])] });
            assert!(err.contains(reason), "{path:?}: {err}");
        }
        let long = "a".repeat(256);
        assert!(refusal(Manifest { entries: vec![file(&long, &[b"x"])] }).contains("longer than 255"));
    }

    #[test]
    fn duplicates_disorder_and_children_of_files_are_refused() {
        let err = refusal(Manifest { entries: vec![file("a", &[b"x"]), file("a", &[b"y"])] });
        assert!(err.contains("listed twice"), "{err}");
        let err = refusal(Manifest { entries: vec![file("b", &[b"x"]), file("a", &[b"y"])] });
        assert!(err.contains("out of order"), "{err}");
        let err = refusal(Manifest { entries: vec![file("a", &[b"x"]), file("a-b", &[b"x"]), file("a/b", &[b"y"])] });
        assert!(err.contains("parent is a file or symlink"), "{err}");
        let mut m = example();
        m.entries.push(file("etc/link/x", &[b"x"]));
        m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        assert!(refusal(m).contains("parent is a file or symlink"));
    }

    #[test]
    fn inconsistent_sizes_and_streams_are_refused() {
        let mut m = example();
        if let EntryKind::File { size, .. } = &mut m.entries[1].kind {
            *size += 1;
        }
        assert!(refusal(m).contains("do not add up"));
        let stream = Entry { path: b"stream".to_vec(), mode: 0o600, mtime: 0, kind: EntryKind::Stream { size: 1, chunks: vec![ChunkRef { id: ChunkId::of(b"x"), len: 1 }] } };
        let err = refusal(Manifest { entries: vec![file("a", &[b"x"]), stream.clone()] });
        assert!(err.contains("only entry"), "{err}");
        Manifest::decode(&Manifest { entries: vec![stream] }.encode().unwrap()).unwrap();
    }

    #[test]
    fn truncation_trailing_bytes_and_huge_counts_are_refused() {
        let bytes = example().encode().unwrap();
        for cut in [0, 4, 5, 9, 20, bytes.len() - 1] {
            assert!(matches!(Manifest::decode(&bytes[..cut]), Err(Error::Malformed { .. })), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Manifest::decode(&extra).unwrap_err().to_string().contains("trailing"));
        let mut huge = bytes[..5].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Manifest::decode(&huge).unwrap_err().to_string().contains("cannot fit"));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::decode(&bytes);
        }

        #[test]
        fn check_path_accepts_exactly_safe_relative_paths(parts in prop::collection::vec("[a-z.]{1,4}", 1..5)) {
            let path = parts.join("/");
            let unsafe_part = parts.iter().any(|p| p == "." || p == "..");
            prop_assert_eq!(check_path(path.as_bytes()).is_ok(), !unsafe_part);
        }
    }
}
