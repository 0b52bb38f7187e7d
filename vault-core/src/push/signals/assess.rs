//! Judging one snapshot against its dataset's history. Absolute entropy cannot tell a
//! compressed file from an encrypted one, so every signal is a *change*: of a path from
//! compressible to incompressible, of files replaced by incompressible look-alikes, of the
//! rates at which files change, vanish and get new extensions, against what this (pusher,
//! dataset) usually does. A dataset that is always incompressible (a restic repository pushed
//! as files) is judged by its rates alone.
//!
//! Strong signals (files encrypted in place or replaced, a ransom note) make a snapshot
//! suspect on their own; weak ones (surges against the baseline, never-seen extensions, mass
//! deletion, mass renames) only when two of them fire together.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::push::signals::probe::NOTE_MAX_BYTES;
use crate::push::signals::profile::{extension_of, per_mille, ChangeStats, FileFacts, FileMark, PathAt, Previous, Profile, MAX_EXTENSIONS};

/// A file was compressible if at most this percent of it was not.
pub const COMPRESSIBLE_AT_MOST_PERCENT: u8 = 50;
/// A file is incompressible (encrypted or compressed) from this percent.
pub const INCOMPRESSIBLE_FROM_PERCENT: u8 = 90;
/// Intermittent encryption (1 MiB of every 16) leaves most of a file readable: a file that
/// was all but fully compressible (this percent or less) and gained this many points of
/// incompressible content has been touched the same way.
pub const WAS_PLAIN_AT_MOST_PERCENT: u8 = 2;
pub const PARTIAL_RISE_PERCENT: u8 = 4;
/// Earlier snapshots a rate is judged against; rates are not judged with fewer than
/// [`MIN_BASELINE`].
pub const BASELINE_SNAPSHOTS: usize = 14;
pub const MIN_BASELINE: usize = 3;
/// Snapshots (each compared with one before it) that rewrote no file at its path before a
/// dataset counts as write-once, for [`SignalKind::RewrittenInPlace`].
pub const WRITE_ONCE_AFTER: usize = 7;
/// NetApp ARP's starting point: more than 20 extensions never seen in the dataset.
pub const NEW_EXTENSIONS_ABOVE: u64 = 20;
/// Veeam's: 100 or more deletes of one extension that are over half of its files.
pub const DELETES_OF_ONE_EXTENSION: u64 = 100;
/// Veeam's: 200 or more renames in one folder. A rename changes a file's name; a file that
/// keeps its name in another folder was moved (a directory renamed, a package upgraded into
/// a new versioned folder), which is ordinary and not counted here (it still counts as churn).
pub const RENAMES_IN_ONE_FOLDER: u64 = 200;
/// Candidates looked at per replaced file, so hostile names cannot make matching quadratic.
const MAX_REPLACEMENT_CANDIDATES: usize = 64;
const EXAMPLE_CHARS: usize = 120;

/// A file of the snapshot being sealed, as its session measured it: only chunks that
/// arrived in this session were probed; the rest are known from earlier snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrived {
    /// Where its path lies in the snapshot's manifest (paths are not copied: a manifest may
    /// name hundreds of thousands of files).
    pub path: PathAt,
    pub size: u64,
    pub content: [u8; 16],
    /// Bytes of chunks probed in this session, and how many of those were incompressible.
    pub measured_bytes: u64,
    pub incompressible_bytes: u64,
    /// One of its chunks read like a ransom note.
    pub note: bool,
}

/// What the dataset's earlier snapshots say: the newest one's files, the extensions seen,
/// and the change counts of up to [`BASELINE_SNAPSHOTS`] before it (oldest first).
#[derive(Debug, Clone, Default)]
pub struct History {
    pub previous: Option<Previous>,
    pub extensions: BTreeSet<String>,
    pub baseline: Vec<ChangeStats>,
}

impl History {
    /// From the sealed profiles of the dataset (oldest first) and the newest one's files.
    pub fn from_profiles(profiles: &[Profile], previous: Option<Previous>) -> History {
        let extensions = profiles.last().map(|p| p.extensions.clone()).unwrap_or_default();
        let skip = profiles.len().saturating_sub(BASELINE_SNAPSHOTS);
        History { previous, extensions, baseline: profiles[skip..].iter().map(|p| p.stats).collect() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// Files at the same path that went from compressible to incompressible.
    TurnedIncompressible,
    /// Files deleted and replaced in their folder by an incompressible file of their size
    /// (or of their name plus a never-seen extension).
    ReplacedByIncompressible,
    /// A small new file reads like a ransom note.
    RansomNote,
    /// Files rewritten at their path in a dataset that never rewrote one (a restic or borg
    /// repository, an archive: content-addressed or write-once files only come and go).
    RewrittenInPlace,
    /// Share of files changed, added, deleted or renamed, against the baseline.
    ChurnSurge,
    /// Share of bytes new to the vault, against the baseline.
    NewBytesSurge,
    /// Total size against the baseline's median.
    SizeTrend,
    /// Distinct extensions never seen in this dataset.
    NewExtensions,
    /// Deletes of one extension.
    MassDeletion,
    /// Renames (the file's name changed, not only its folder) out of one folder.
    RenamesInFolder,
}

impl SignalKind {
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::TurnedIncompressible => "turned_incompressible",
            SignalKind::ReplacedByIncompressible => "replaced_by_incompressible",
            SignalKind::RansomNote => "ransom_note",
            SignalKind::RewrittenInPlace => "rewritten_in_place",
            SignalKind::ChurnSurge => "churn_surge",
            SignalKind::NewBytesSurge => "new_bytes_surge",
            SignalKind::SizeTrend => "size_trend",
            SignalKind::NewExtensions => "new_extensions",
            SignalKind::MassDeletion => "mass_deletion",
            SignalKind::RenamesInFolder => "renames_in_folder",
        }
    }

    /// Strong signals make a snapshot suspect alone.
    pub fn is_strong(self) -> bool {
        matches!(self, SignalKind::TurnedIncompressible | SignalKind::ReplacedByIncompressible | SignalKind::RansomNote | SignalKind::RewrittenInPlace)
    }

    /// What `value` and `limit` count.
    pub fn unit(self) -> &'static str {
        match self {
            SignalKind::TurnedIncompressible
            | SignalKind::ReplacedByIncompressible
            | SignalKind::RansomNote
            | SignalKind::RewrittenInPlace
            | SignalKind::MassDeletion
            | SignalKind::RenamesInFolder => "files",
            SignalKind::ChurnSurge | SignalKind::NewBytesSurge => "per mille",
            SignalKind::SizeTrend => "percent of the median",
            SignalKind::NewExtensions => "extensions",
        }
    }
}

/// A signal that fired: how much (`value`) against what it may be (`limit`), and one path
/// it fired on where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    pub signal: SignalKind,
    pub value: u64,
    pub limit: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.signal;
        write!(f, "{}: {} {} (limit {})", kind.name(), self.value, kind.unit(), self.limit)?;
        if let Some(example) = &self.example {
            write!(f, ", e.g. `{example}`")?;
        }
        Ok(())
    }
}

/// The verdict on one snapshot, and the profile to seal beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub profile: Profile,
    pub signals: Vec<Signal>,
    pub suspect: bool,
}

/// Judges the arrived snapshot (its files in `manifest` order) against its history.
pub fn assess(arrived: &[Arrived], manifest: &[u8], bytes_new: u64, history: &History) -> Assessment {
    let (previous, previous_manifest): (&[FileFacts], &[u8]) = history.previous.as_ref().map_or((&[], &[]), |p| (&p.files, &p.manifest));
    let path = |i: usize| arrived[i].path.get(manifest);
    let previous_path = |j: usize| previous[j].path.get(previous_manifest);
    let by_path = match_paths(arrived, manifest, previous, previous_manifest);
    let by_content: HashMap<[u8; 16], usize> = previous.iter().enumerate().map(|(j, f)| (f.content, j)).collect();
    let marks: Vec<FileMark> =
        arrived.iter().zip(&by_path).map(|(file, same)| complete_mark(file, same.map(|j| &previous[j as usize]), by_content.get(&file.content).map(|j| &previous[*j]))).collect();

    let mut stats = ChangeStats { files: len_u64(arrived.len()), logical_bytes: arrived.iter().map(|f| f.size).sum(), bytes_new, ..ChangeStats::default() };
    let mut kept = vec![false; previous.len()];
    let mut added = Vec::new();
    let mut turned = Tally::default();
    let mut rewritten = Tally::default();
    for (i, file) in arrived.iter().enumerate() {
        match by_path[i].map(|j| j as usize) {
            Some(j) => {
                kept[j] = true;
                if previous[j].content != file.content {
                    stats.changed += 1;
                    rewritten.add(path(i));
                    if turned_incompressible(previous[j].mark, marks[i]) {
                        turned.add(path(i));
                    }
                }
            }
            None => added.push(i),
        }
    }
    let mut deleted: Vec<usize> = (0..previous.len()).filter(|j| !kept[*j]).collect();

    // Renames: content that left one path and arrived at another.
    let deleted_content: HashMap<[u8; 16], usize> = deleted.iter().map(|j| (previous[*j].content, *j)).collect();
    let mut renamed_from = HashSet::new();
    let mut renames_by_folder: HashMap<&[u8], u64> = HashMap::new();
    added.retain(|i| match deleted_content.get(&arrived[*i].content) {
        Some(j) if renamed_from.insert(*j) => {
            if file_name(previous_path(*j)) != file_name(path(*i)) {
                *renames_by_folder.entry(parent(previous_path(*j))).or_default() += 1;
            }
            false
        }
        _ => true,
    });
    deleted.retain(|j| !renamed_from.contains(j));
    stats.renamed = len_u64(renamed_from.len());
    stats.added = len_u64(added.len());
    stats.deleted = len_u64(deleted.len());

    let seen = &history.extensions;
    let replaced =
        replaced_by_incompressible(Side { files: arrived, manifest, marks: &marks, picked: &added }, Side { files: previous, manifest: previous_manifest, marks: &[], picked: &deleted }, seen);
    let mut notes = Tally::default();
    // Only chunks probed in this session carry the note mark: an old note does not fire twice.
    for (i, _) in arrived.iter().zip(&marks).enumerate().filter(|(_, (f, m))| m.is_note() && f.size <= len_u64(NOTE_MAX_BYTES)) {
        notes.add(path(i));
    }

    let files_before = len_u64(previous.len());
    // Two files, or one in a thousand in a large dataset; one in a dataset of one (a stream).
    let strong_limit = (files_before / 1000).max(2).min(files_before.max(1));
    let mut signals = Vec::new();
    let mut fire = |signal: SignalKind, value: u64, limit: u64, fired: bool, example: Option<String>| {
        if fired {
            signals.push(Signal { signal, value, limit, example });
        }
    };
    let judged = history.previous.is_some();
    fire(SignalKind::TurnedIncompressible, turned.count, strong_limit, judged && turned.count >= strong_limit, turned.example);
    fire(SignalKind::ReplacedByIncompressible, replaced.count, strong_limit, judged && replaced.count >= strong_limit, replaced.example);
    fire(SignalKind::RansomNote, notes.count, 1, notes.count >= 1, notes.example);

    let new_extensions: BTreeSet<String> = added.iter().filter_map(|i| extension_of(path(*i))).filter(|e| !seen.contains(e)).collect();
    fire(
        SignalKind::NewExtensions,
        len_u64(new_extensions.len()),
        NEW_EXTENSIONS_ABOVE,
        judged && len_u64(new_extensions.len()) > NEW_EXTENSIONS_ABOVE,
        new_extensions.iter().next().map(|e| format!(".{e}")),
    );
    // Content the probe cannot see (already encrypted) is judged by how its files behave: a
    // dataset that rewrote no file in a week of snapshots does not rewrite one in 200.
    let compared = history.baseline.iter().filter(|s| s.files > s.added);
    let write_once = compared.clone().count() >= WRITE_ONCE_AFTER && compared.clone().all(|s| s.changed == 0);
    let rewritten_limit = strong_limit.max(files_before / 200);
    fire(SignalKind::RewrittenInPlace, rewritten.count, rewritten_limit, judged && write_once && rewritten.count >= rewritten_limit, rewritten.example);
    let (ext_deletes, ext) = deletes_of_one_extension(previous.len(), &previous_path, &deleted);
    fire(SignalKind::MassDeletion, ext_deletes, DELETES_OF_ONE_EXTENSION, ext_deletes >= DELETES_OF_ONE_EXTENSION, ext.map(|e| format!(".{e}")));
    let (folder_renames, folder) = renames_by_folder.iter().max_by_key(|(folder, n)| (**n, std::cmp::Reverse(*folder))).map_or((0, None), |(f, n)| (*n, Some(display(f))));
    fire(SignalKind::RenamesInFolder, folder_renames, RENAMES_IN_ONE_FOLDER, folder_renames >= RENAMES_IN_ONE_FOLDER, folder);

    if history.baseline.len() >= MIN_BASELINE && judged {
        let churn = stats.churn_per_mille(files_before);
        let churn_limit = surge_limit(history.baseline.iter().map(|s| s.churn_per_mille(s.files.saturating_sub(s.added).saturating_add(s.deleted))), 3, 50);
        fire(SignalKind::ChurnSurge, churn, churn_limit, churn > churn_limit && stats.changed + stats.added + stats.deleted >= 10, None);
        let new_bytes = stats.new_bytes_per_mille();
        let new_bytes_limit = surge_limit(history.baseline.iter().map(ChangeStats::new_bytes_per_mille), 2, 100);
        fire(SignalKind::NewBytesSurge, new_bytes, new_bytes_limit, new_bytes > new_bytes_limit, None);
        let size_median = median(history.baseline.iter().map(|s| s.logical_bytes));
        let size_percent = per_mille(stats.logical_bytes, size_median) / 10;
        let off_trend = !(50..=200).contains(&size_percent);
        fire(SignalKind::SizeTrend, size_percent, if size_percent < 50 { 50 } else { 200 }, off_trend && size_median > 0, None);
    }
    let strong = signals.iter().any(|s| s.signal.is_strong());
    let weak = signals.iter().filter(|s| !s.signal.is_strong()).count();

    let mut extensions = seen.clone();
    for ext in (0..arrived.len()).filter_map(|i| extension_of(path(i))) {
        if extensions.len() >= MAX_EXTENSIONS {
            break;
        }
        extensions.insert(ext);
    }
    let profile = Profile { stats, files_before, extensions, marks };
    Assessment { profile, signals, suspect: strong || weak >= 2 }
}

/// For each arrived file, the previous file at the same path. Both lists are sorted by
/// path (manifests are), so one merge pass finds them all.
fn match_paths(arrived: &[Arrived], manifest: &[u8], previous: &[FileFacts], previous_manifest: &[u8]) -> Vec<Option<u32>> {
    let mut j = 0;
    arrived
        .iter()
        .map(|file| {
            let path = file.path.get(manifest);
            while j < previous.len() && previous[j].path.get(previous_manifest) < path {
                j += 1;
            }
            (j < previous.len() && previous[j].path.get(previous_manifest) == path).then(|| u32::try_from(j).expect("a manifest names fewer than 2^32 files"))
        })
        .collect()
}

/// The incompressible share of a file: what this session probed, and for the chunks it did
/// not need to send, what the same path (or the same content elsewhere) measured before.
fn complete_mark(file: &Arrived, same_path: Option<&FileFacts>, same_content: Option<&FileFacts>) -> FileMark {
    let unmeasured = file.size.saturating_sub(file.measured_bytes);
    let earlier = same_path.filter(|p| p.content == file.content).or(same_content).or(same_path).and_then(|p| p.mark.incompressible_percent());
    let percent = match (file.measured_bytes, earlier) {
        (0, earlier) if unmeasured > 0 => earlier,
        (0, _) => None,
        (_, Some(p)) => Some(percent(file.incompressible_bytes + unmeasured * u64::from(p) / 100, file.size)),
        (measured, None) => Some(percent(file.incompressible_bytes, measured)),
    };
    FileMark::new(percent, file.note)
}

fn turned_incompressible(before: FileMark, now: FileMark) -> bool {
    match (before.incompressible_percent(), now.incompressible_percent()) {
        (Some(b), Some(n)) => (b <= COMPRESSIBLE_AT_MOST_PERCENT && n >= INCOMPRESSIBLE_FROM_PERCENT) || (b <= WAS_PLAIN_AT_MOST_PERCENT && n >= b + PARTIAL_RISE_PERCENT),
        _ => false,
    }
}

/// One side of a comparison: files, the manifest their paths are in, their marks (the new
/// side's; the old side's are in its files) and which of them take part.
struct Side<'a, F> {
    files: &'a [F],
    manifest: &'a [u8],
    marks: &'a [FileMark],
    picked: &'a [usize],
}

/// Deleted files replaced in their own folder by an incompressible file no smaller than
/// they were (encryption does not shrink) and not much larger: either the original was
/// compressible, or the new name is the old one plus an extension never seen before.
fn replaced_by_incompressible(added: Side<'_, Arrived>, deleted: Side<'_, FileFacts>, seen: &BTreeSet<String>) -> Tally {
    let mut by_folder: HashMap<&[u8], BTreeMap<u64, Vec<usize>>> = HashMap::new();
    for &j in deleted.picked {
        by_folder.entry(parent(deleted.files[j].path.get(deleted.manifest))).or_default().entry(deleted.files[j].size).or_default().push(j);
    }
    let mut used = HashSet::new();
    let mut tally = Tally::default();
    for &i in added.picked {
        let (file, path) = (&added.files[i], added.files[i].path.get(added.manifest));
        if added.marks[i].incompressible_percent().is_none_or(|p| p < INCOMPRESSIBLE_FROM_PERCENT) {
            continue;
        }
        let Some(sizes) = by_folder.get(parent(path)) else { continue };
        let slack = (file.size / 16).max(64 * 1024);
        let new_extension = extension_of(path).is_some_and(|e| !seen.contains(&e));
        let fits = |j: usize| {
            let (original, original_path) = (&deleted.files[j], deleted.files[j].path.get(deleted.manifest));
            let named_after = path.len() > original_path.len() + 1 && path.starts_with(original_path) && path[original_path.len()] == b'.';
            let was_compressible = original.mark.incompressible_percent().is_some_and(|p| p <= COMPRESSIBLE_AT_MOST_PERCENT);
            was_compressible || (named_after && new_extension)
        };
        let found =
            sizes.range(file.size.saturating_sub(slack)..=file.size).rev().flat_map(|(_, js)| js.iter().copied()).filter(|j| !used.contains(j)).take(MAX_REPLACEMENT_CANDIDATES).find(|j| fits(*j));
        if let Some(j) = found {
            used.insert(j);
            tally.add(path);
        }
    }
    tally
}

/// The most deletes of one extension, when they are more than half of its files
/// (`path_of` gives each of the `count` earlier files' paths).
fn deletes_of_one_extension<'m>(count: usize, path_of: &dyn Fn(usize) -> &'m [u8], deleted: &[usize]) -> (u64, Option<String>) {
    let mut gone: HashMap<String, u64> = HashMap::new();
    for &j in deleted {
        if let Some(ext) = extension_of(path_of(j)) {
            *gone.entry(ext).or_default() += 1;
        }
    }
    let mut had: HashMap<&str, u64> = HashMap::new();
    for ext in (0..count).filter_map(|j| extension_of(path_of(j))) {
        if let Some((key, _)) = gone.get_key_value(&ext) {
            *had.entry(key.as_str()).or_default() += 1;
        }
    }
    gone.iter()
        .filter(|(ext, n)| **n * 2 > had.get(ext.as_str()).copied().unwrap_or(0))
        .max_by_key(|(ext, n)| (**n, std::cmp::Reverse((*ext).clone())))
        .map_or((0, None), |(e, n)| (*n, Some(e.clone())))
}

/// Above `factor` times the baseline's median and at least `margin` above it.
fn surge_limit(values: impl Iterator<Item = u64>, factor: u64, margin: u64) -> u64 {
    let m = median(values);
    m.saturating_mul(factor).max(m.saturating_add(margin))
}

fn median(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn percent(part: u64, whole: u64) -> u8 {
    u8::try_from((u128::from(part) * 100 + u128::from(whole) / 2) / u128::from(whole.max(1))).unwrap_or(100).min(100)
}

fn parent(path: &[u8]) -> &[u8] {
    path.iter().rposition(|b| *b == b'/').map_or(&[][..], |p| &path[..p])
}

fn file_name(path: &[u8]) -> &[u8] {
    path.iter().rposition(|b| *b == b'/').map_or(path, |p| &path[p + 1..])
}

fn display(path: &[u8]) -> String {
    let text = String::from_utf8_lossy(path);
    let text = if text.is_empty() { ".".into() } else { text };
    text.chars().take(EXAMPLE_CHARS).flat_map(char::escape_default).collect()
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Files a rule matched, and the first of them.
#[derive(Default)]
struct Tally {
    count: u64,
    example: Option<String>,
}

impl Tally {
    fn add(&mut self, path: &[u8]) {
        self.count += 1;
        if self.example.is_none() {
            self.example = Some(display(path));
        }
    }
}

/// One manifest entry as its session measured it (`None` for directories and symlinks):
/// `probe_of` gives the probe of each chunk that arrived in this session, `None` for one
/// the pusher already owned. The vault's commit check and the evaluation suite both use it.
pub fn arrived_file(
    entry: &crate::push::manifest::EntryRef<'_>,
    manifest: &[u8],
    mut probe_of: impl FnMut(&crate::push::manifest::ChunkRef) -> Option<crate::push::signals::ChunkProbe>,
) -> Option<Arrived> {
    let chunks = entry.chunks()?;
    let mut file = Arrived {
        path: PathAt::of(entry.path, manifest),
        size: 0,
        content: crate::push::signals::profile::content_key(chunks.iter().map(|c| c.id)),
        measured_bytes: 0,
        incompressible_bytes: 0,
        note: false,
    };
    for chunk in chunks.iter() {
        let len = u64::from(chunk.len);
        file.size += len;
        let Some(probe) = probe_of(&chunk) else { continue };
        file.note |= probe.is_note();
        if let Some(eighths) = probe.incompressible_eighths() {
            file.measured_bytes += len;
            file.incompressible_bytes += len * u64::from(eighths) / 8;
        }
    }
    Some(file)
}
