//! What the vault does with one dataset's snapshots, in memory: the pusher's chunking
//! (FastCDC v2020 with the pusher's sizes), the manifest it sends, dedup against the chunks
//! the pusher already owns, the probe of each chunk sent, and at commit the assessment
//! against the dataset's history and the profile sealed for the next one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use fastcdc::v2020::FastCDC;
use rand::SeedableRng;
use vault_core::push::chunk::{ChunkId, FASTCDC_AVG_BYTES, FASTCDC_MAX_BYTES, FASTCDC_MIN_BYTES};
use vault_core::push::manifest::{self, ChunkRef, Entry, EntryKind, Manifest};
use vault_core::push::signals::{arrived_file, assess, Assessment, ChunkProbe, History, Previous, Profile};

use crate::content::{random_bytes, Rand};

#[derive(Debug, Clone, Copy)]
pub struct Chunk {
    pub id: ChunkId,
    pub len: u32,
    pub probe: ChunkProbe,
}

/// A file's bytes: held, or (for the large all-random files of a restic repository) made
/// again from their seed whenever they are needed.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Arc<Vec<u8>>),
    Random { seed: u64, len: usize },
}

impl Content {
    pub fn bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Content::Bytes(b) => std::borrow::Cow::Borrowed(b.as_slice()),
            Content::Random { seed, len } => std::borrow::Cow::Owned(random_bytes(&mut Rand::seed_from_u64(*seed), *len)),
        }
    }
}

/// What a file was made from, for the edits that regenerate it (an office file is saved
/// again from its text, not patched byte by byte).
#[derive(Debug, Clone, Default)]
pub enum Source {
    #[default]
    None,
    Docx {
        text: Arc<String>,
        picture: Option<Arc<Vec<u8>>>,
    },
    Xlsx {
        csv: Arc<String>,
    },
}

#[derive(Debug, Clone)]
pub struct File {
    pub content: Content,
    pub size: u64,
    pub chunks: Arc<Vec<Chunk>>,
    pub source: Source,
}

impl File {
    pub fn new(data: Vec<u8>) -> File {
        let chunks = Arc::new(chunk(&data));
        File { size: data.len() as u64, content: Content::Bytes(Arc::new(data)), chunks, source: Source::None }
    }

    pub fn with_source(data: Vec<u8>, source: Source) -> File {
        File { source, ..File::new(data) }
    }

    pub fn random(seed: u64, len: usize) -> File {
        let content = Content::Random { seed, len };
        let chunks = Arc::new(chunk(&content.bytes()));
        File { size: len as u64, content, chunks, source: Source::None }
    }
}

/// The pusher's cut: FastCDC v2020 with its sizes (a file shorter than the minimum is one
/// chunk), each chunk named by its SHA-256 and probed as the vault probes what arrives.
pub fn chunk(data: &[u8]) -> Vec<Chunk> {
    FastCDC::new(data, FASTCDC_MIN_BYTES, FASTCDC_AVG_BYTES, FASTCDC_MAX_BYTES)
        .map(|c| {
            let bytes = &data[c.offset..c.offset + c.length];
            Chunk { id: ChunkId::of(bytes), len: u32::try_from(c.length).expect("FastCDC cuts at most FASTCDC_MAX_BYTES"), probe: vault_core::push::signals::probe_chunk(bytes) }
        })
        .collect()
}

/// The percent of a file its chunks' probes found incompressible; `None` if none measured.
pub fn incompressible_percent(file: &File) -> Option<u64> {
    let (mut measured, mut incompressible) = (0u64, 0u64);
    for c in file.chunks.iter() {
        if let Some(eighths) = c.probe.incompressible_eighths() {
            measured += u64::from(c.len);
            incompressible += u64::from(c.len) * u64::from(eighths) / 8;
        }
    }
    (measured > 0).then(|| incompressible * 100 / measured)
}

/// A snapshot's tree: files by path (directories are implied by them).
pub type Tree = BTreeMap<String, File>;

/// The manifest the pusher would send for a tree: every file and its parent directories,
/// sorted by path.
pub fn manifest_of(tree: &Tree) -> Manifest {
    let mut dirs = BTreeSet::new();
    for path in tree.keys() {
        let mut end = 0;
        while let Some(p) = path[end..].find('/') {
            end += p;
            dirs.insert(&path[..end]);
            end += 1;
        }
    }
    let mut entries: Vec<Entry> = dirs.into_iter().map(|d| Entry { path: d.as_bytes().to_vec(), mode: 0o755, mtime: 1_704_067_200, kind: EntryKind::Dir }).collect();
    entries.extend(tree.iter().map(|(path, f)| Entry {
        path: path.as_bytes().to_vec(),
        mode: 0o644,
        mtime: 1_704_067_200,
        kind: EntryKind::File { size: f.size, chunks: f.chunks.iter().map(|c| ChunkRef { id: c.id, len: c.len }).collect() },
    }));
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Manifest { entries }
}

/// One dataset as the vault keeps it: the chunks it owns, the profiles sealed so far and the
/// newest snapshot's files.
#[derive(Default)]
pub struct Dataset {
    owned: HashSet<ChunkId>,
    profiles: Vec<Profile>,
    previous: Option<Previous>,
}

/// A snapshot judged, not yet sealed.
pub struct Judged {
    pub assessment: Assessment,
    pub bytes_new: u64,
    manifest: Vec<u8>,
    sent: HashMap<ChunkId, ChunkProbe>,
}

impl Dataset {
    /// The assessment of a push of `tree` now, as the vault's commit check makes it.
    pub fn judge(&self, tree: &Tree) -> Judged {
        let mut sent: HashMap<ChunkId, ChunkProbe> = HashMap::new();
        let mut bytes_new = 0u64;
        for c in tree.values().flat_map(|f| f.chunks.iter()) {
            if !self.owned.contains(&c.id) && sent.insert(c.id, c.probe).is_none() {
                bytes_new += u64::from(c.len);
            }
        }
        let manifest = manifest_of(tree).encode().expect("a generated manifest encodes");
        let mut arrived = Vec::with_capacity(tree.len());
        manifest::walk(&manifest, |entry| {
            if let Some(file) = arrived_file(entry, &manifest, |c| sent.get(&c.id).copied()) {
                arrived.push(file);
            }
            Ok(())
        })
        .expect("a generated manifest follows the rules");
        let history = History::from_profiles(&self.profiles, self.previous.clone());
        Judged { assessment: assess(&arrived, &manifest, bytes_new, &history), bytes_new, manifest, sent }
    }

    /// Seals a judged snapshot: its chunks are owned, its profile is history.
    pub fn seal(&mut self, judged: Judged) {
        self.owned.extend(judged.sent.keys());
        let profile = Profile::from_bytes(&judged.assessment.profile.to_bytes()).expect("a profile the vault wrote reads back");
        self.previous = Some(Previous::read(judged.manifest, &profile).expect("a sealed profile fits its manifest"));
        self.profiles.push(profile);
    }
}
