//! Exports onto a removable medium (the rules are `vault_core::export`'s; this is the I/O).
//!
//! [`write_export`] copies what an export order selects from the store onto a medium mounted
//! at a directory:
//!
//! ```text
//! <medium>/vault-medium.json                     the label (vaultctl media init)
//! <medium>/vault-medium.seal                     the vault's seal, written on first use
//! <medium>/vault-exports/<id>/store/packs/<p>.pack.age       each pack the snapshots need, age-encrypted
//! <medium>/vault-exports/<id>/store/packs/<p>.idx.age        its index, age-encrypted
//! <medium>/vault-exports/<id>/store/snapshots/<s>/manifest.age   age-encrypted
//! <medium>/vault-exports/<id>/store/snapshots/<s>/receipt.json   as sealed
//! <medium>/vault-exports/<id>/store/log/...                  the audit log at the export's checkpoint (tlog-tiles)
//! <medium>/vault-exports/<id>/drill-report.json              the last restore drill's signed report, if any
//! <medium>/vault-exports/<id>/export.json                    the signed export manifest, written last
//! ```
//!
//! Decrypted, `store/` is a store of format 1 (docs/STORE-FORMAT.md). Every chunk is re-hashed
//! on its way out, so an export never carries a copy the store holds damaged: a copy a scrub
//! listed bad goes out as dead bytes its pack's exported index does not name (the good copy a
//! push healed goes in its own pack). The export is
//! written under `vault-exports/.<id>.partial`, flushed, read back from the device (the page
//! cache dropped first) against the manifest, and only then renamed to `<id>`: a medium pulled
//! mid-write holds a `.partial` directory that is not an export, removed the next time.
//!
//! [`check_export`] checks an export against the pinned vault key without the recipients' keys:
//! the manifest's signature, every file's size and SHA-256 (all, or a rotating share), the
//! receipts, and the audit log against its checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use vault_core::audit::checkpoint::Checkpoint;
use vault_core::export::manifest::{
    check_path, ExportManifest, ExportedFile, ExportedSnapshot, ENCRYPTED_SUFFIX, EXPORTS_DIR, FORMAT, MANIFEST_FILE, MAX_EXPORTS_PER_MEDIUM, MAX_EXPORT_FILES, MAX_MANIFEST_BYTES, PARTIAL_SUFFIX,
};
use vault_core::export::medium::{adoption, Adoption, MediumLabel, MediumSeal, LABEL_FILE, MAX_MEDIUM_FILE_BYTES, SEAL_FILE};
use vault_core::export::selection::{select, Sealed};
use vault_core::keys::{hex, PublicKey, SignedDoc, SigningKey};
use vault_core::policy::orders::PendingExport;
use vault_core::push::chunk::{ChunkId, MAX_CHUNK_BYTES};
use vault_core::push::receipt::{SignedReceipt, MAX_RECEIPT_BYTES};
use vault_core::units::Timestamp;

use crate::reader::StoreReader;
use crate::{audit, index, io_error, Result, StoreError, MANIFEST_FILE as SNAPSHOT_MANIFEST, PACKS_DIR, RECEIPT_FILE, SNAPSHOTS_DIR};

/// The last restore drill's signed report, in an export's directory.
pub const DRILL_REPORT_FILE: &str = "drill-report.json";
/// Room left on the medium beyond what the export's files take (directories, FAT's slack).
const MEDIUM_SLACK_BYTES: u64 = 16 * 1024 * 1024;
const COPY_BUFFER: usize = 1024 * 1024;

/// Why an export was not written, or a medium or an export was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("medium: {0}")]
    Medium(String),
    #[error("medium {medium}: {free} bytes free, the export needs {need}: use a larger medium, or an order that selects less")]
    NoRoom { medium: String, free: u64, need: u64 },
    #[error("export: {0}")]
    Refused(String),
    #[error("export {export}: read back from the medium, {path} {reason}: the medium does not keep what is written to it; the export is abandoned")]
    ReadBack { export: String, path: String, reason: String },
}

impl From<ExportError> for StoreError {
    fn from(e: ExportError) -> Self {
        StoreError::Export(e)
    }
}

/// What to export, where, as whom.
pub struct ExportJob<'a> {
    pub store: &'a Path,
    /// Where the medium's filesystem is mounted.
    pub medium: &'a Path,
    pub order: &'a PendingExport,
    pub vault_id: &'a str,
    pub key: &'a SigningKey,
    pub now: Timestamp,
    /// Makes the export's id unique (4 random bytes).
    pub nonce: [u8; 4],
    /// Cleared when the export must stop (the vault is leaving Sealed): checked before every
    /// file, and the export is abandoned unfinished.
    pub go_on: &'a AtomicBool,
    /// Called with each file's path once it is durable (the daemon's test hook says it and
    /// pauses there, so a test can pull the medium mid-write).
    pub after_file: &'a dyn Fn(&str),
}

/// An export written and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub export_id: String,
    pub medium: MediumLabel,
    /// The vault sealed the medium with this export (its first use).
    pub adopted: bool,
    pub snapshots: Vec<String>,
    pub missing: Vec<String>,
    pub packs: usize,
    pub files: usize,
    pub bytes: u64,
    /// Unfinished exports found on the medium and removed first.
    pub removed_partial: Vec<String>,
}

/// The medium's label, read bounded and checked.
pub fn read_label(medium: &Path) -> Result<MediumLabel> {
    let path = medium.join(LABEL_FILE);
    let bytes = vault_io::read_bounded(&path, MAX_MEDIUM_FILE_BYTES).map_err(|e| ExportError::Medium(format!("{LABEL_FILE}: {e}; not a medium `vaultctl media init` made")))?;
    MediumLabel::from_bytes(&bytes).map_err(|e| ExportError::Medium(format!("{LABEL_FILE}: {e}")).into())
}

/// The medium's label and whose it is: refused unless it is unsealed or sealed by this vault.
pub fn identify(medium: &Path, vault_id: &str, vault_key: &PublicKey) -> Result<(MediumLabel, Adoption)> {
    let label = read_label(medium)?;
    let seal_path = medium.join(SEAL_FILE);
    let seal = match std::fs::symlink_metadata(&seal_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        _ => Some(vault_io::read_bounded(&seal_path, MAX_MEDIUM_FILE_BYTES).map_err(|e| ExportError::Medium(format!("{SEAL_FILE}: {e}")))?),
    };
    let adopted = adoption(&label, seal.as_deref(), vault_id, vault_key).map_err(|e| ExportError::Medium(format!("{} ({}): {e}; refused, nothing written", label.name, label.medium_id)))?;
    Ok((label, adopted))
}

/// Writes the export `job.order` asks for onto the medium at `job.medium`, reads it back, and
/// makes it visible. Reads the store only; a failure leaves at most a `.partial` directory.
pub fn write_export(job: &ExportJob<'_>) -> Result<Written> {
    let vault_key = job.key.public_key();
    let (label, adopted) = identify(job.medium, job.vault_id, &vault_key)?;
    if label.medium_id != job.order.export.medium {
        return Err(ExportError::Refused(format!("order {} names medium {}, this is {} ({})", job.order.id, job.order.export.medium, label.medium_id, label.name)).into());
    }
    let recipients =
        job.order.export.recipients.iter().map(|r| age::x25519::Recipient::from_str(r).map_err(|e| ExportError::Refused(format!("recipient {r}: {e}")))).collect::<std::result::Result<Vec<_>, _>>()?;

    // What to export: the order against the receipts, each verified under the vault key.
    let reader = StoreReader::open(job.store)?;
    let mut sealed = Vec::new();
    for id in reader.snapshot_ids()? {
        let receipt = reader.receipt(&id)?.verify(&vault_key)?;
        sealed.push(Sealed { id: id.clone(), pusher: receipt.pusher.clone(), dataset: receipt.dataset.clone(), received_at: receipt.received_at });
    }
    let selection = select(job.order, &sealed)?;
    if selection.snapshots.is_empty() {
        return Err(ExportError::Refused(format!("order {} selects no sealed snapshot (missing: {})", job.order.id, selection.missing.join(", "))).into());
    }
    let mut packs = BTreeSet::new();
    for id in &selection.snapshots {
        let receipt = reader.receipt(id)?.verify(&vault_key)?;
        let manifest = reader.manifest_checked(id, &receipt)?;
        packs.extend(reader.packs_holding(&manifest).map_err(|reason| ExportError::Refused(format!("snapshot {id}: {reason}; run the scrub and let a push heal it, or export without it")))?);
    }
    let checkpoint = audit::read_checkpoint(job.store)?.ok_or_else(|| ExportError::Refused("the audit log has no signed checkpoint yet".into()))?;
    let checkpoint_text = String::from_utf8(checkpoint.clone()).map_err(|_| ExportError::Refused("the audit log's checkpoint is not text".into()))?;
    let log_size = Checkpoint::open(&checkpoint, &vault_key)?.size;

    // Room on the medium, before anything is written.
    let need =
        packs.iter().map(|p| file_len(p) + file_len(&p.with_extension("idx"))).sum::<u64>() + selection.snapshots.len() as u64 * 2 * (MAX_RECEIPT_BYTES as u64) + log_size * 300 + MEDIUM_SLACK_BYTES;
    let free = crate::space::fs_space(job.medium)?.free_bytes;
    if free < need {
        return Err(ExportError::NoRoom { medium: format!("{} ({})", label.name, label.medium_id), free, need }.into());
    }

    let exports = job.medium.join(EXPORTS_DIR);
    std::fs::create_dir_all(&exports).map_err(|e| io_error(&exports, e))?;
    let removed_partial = remove_partial(&exports)?;
    if let Adoption::Unsealed = adopted {
        let seal = MediumSeal::sign(job.vault_id, &label, job.now, job.key);
        write_synced(&job.medium.join(SEAL_FILE), &seal.to_file_bytes())?;
    }
    let stamp = job.now.to_string().replace(['-', ':'], "");
    let export_id = format!("{stamp}-{}", hex(&job.nonce));
    let partial = exports.join(format!(".{export_id}{PARTIAL_SUFFIX}"));
    std::fs::create_dir(&partial).map_err(|e| io_error(&partial, e))?;
    let mut out = ExportWriter { root: partial.clone(), files: Vec::new(), recipients, go_on: job.go_on, after_file: job.after_file };

    // Copies a scrub listed bad (the store reads each such chunk from another copy, or from
    // none) go out as dead bytes their pack's exported index does not name.
    let listed_bad = crate::scrub::load(job.store).unwrap_or_default();
    for pack in &packs {
        let stem = pack.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let bad: BTreeSet<ChunkId> = listed_bad.iter().filter(|(in_pack, _)| *in_pack == stem).map(|(_, id)| *id).collect();
        let kept = out.put_pack(pack, &format!("store/{PACKS_DIR}/{stem}.pack{ENCRYPTED_SUFFIX}"), &bad)?;
        let idx_rel = format!("store/{PACKS_DIR}/{stem}.idx{ENCRYPTED_SUFFIX}");
        if bad.is_empty() {
            out.put(&idx_rel, &mut open_nofollow(&pack.with_extension("idx"))?, true)?;
        } else {
            out.put(&idx_rel, &mut &index::encode(&kept)?[..], true)?;
        }
    }
    let mut exported = Vec::new();
    for id in &selection.snapshots {
        let dir = job.store.join(SNAPSHOTS_DIR).join(id);
        out.put(&format!("store/{SNAPSHOTS_DIR}/{id}/{SNAPSHOT_MANIFEST}{ENCRYPTED_SUFFIX}"), &mut open_nofollow(&dir.join(SNAPSHOT_MANIFEST))?, true)?;
        out.put(&format!("store/{SNAPSHOTS_DIR}/{id}/{RECEIPT_FILE}"), &mut open_nofollow(&dir.join(RECEIPT_FILE))?, false)?;
        let s = sealed.iter().find(|s| &s.id == id).expect("a selected snapshot is sealed");
        exported.push(ExportedSnapshot { id: id.clone(), pusher: s.pusher.clone(), dataset: s.dataset.clone(), received_at: s.received_at.to_string() });
    }
    audit::copy_log(job.store, log_size, &mut |path, bytes| out.put(&format!("store/{}/{path}", audit::LOG_DIR), &mut &bytes[..], false))?;
    out.put(&format!("store/{}/{}", audit::LOG_DIR, audit::CHECKPOINT_FILE), &mut &checkpoint[..], false)?;
    if let Some(report) = audit::last_drill_report(job.store, log_size, &vault_key)? {
        out.put(DRILL_REPORT_FILE, &mut &report.to_file_bytes()[..], false)?;
    }

    let mut files = std::mem::take(&mut out.files);
    files.sort();
    let manifest = ExportManifest {
        format: FORMAT,
        vault_id: job.vault_id.to_string(),
        vault_key: vault_key.to_string(),
        export_id: export_id.clone(),
        medium_id: label.medium_id.clone(),
        order: job.order.id.clone(),
        created_at: job.now.to_string(),
        recipients: job.order.export.recipients.clone(),
        snapshots: exported,
        missing: selection.missing.clone(),
        checkpoint: checkpoint_text,
        files,
    };
    manifest.check()?;
    write_synced(&partial.join(MANIFEST_FILE), &manifest.sign(job.key).to_file_bytes())?;
    crate::writer::sync_dir(&partial)?;

    // Read back from the device, not the page cache, before the export counts.
    let checked = check_export(&partial, &vault_key, Share::All)?;
    if let Some(problem) = checked.problems.first() {
        return Err(ExportError::ReadBack { export: export_id, path: problem.path.clone(), reason: problem.reason.clone() }.into());
    }
    let done = exports.join(&export_id);
    std::fs::rename(&partial, &done).map_err(|e| io_error(&done, e))?;
    crate::writer::sync_dir(&exports)?;
    Ok(Written {
        export_id,
        medium: label,
        adopted: adopted == Adoption::Unsealed,
        snapshots: selection.snapshots,
        missing: selection.missing,
        packs: packs.len(),
        files: manifest.files.len() + 1,
        bytes: manifest.total_bytes(),
        removed_partial,
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn open_nofollow(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|e| io_error(path, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|e| io_error(path, e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| io_error(path, e))
}

/// Removes unfinished exports (`.<id>.partial`) a pulled medium or a stopped vault left.
fn remove_partial(exports: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(exports).map_err(|e| io_error(exports, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX) {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|e| io_error(&path, e))?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Counts and hashes what goes through it.
struct Hashing<W: Write> {
    inner: W,
    hash: ring::digest::Context,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes an export's files under its directory, each listed with its size and hash.
struct ExportWriter<'a> {
    root: PathBuf,
    files: Vec<ExportedFile>,
    recipients: Vec<age::x25519::Recipient>,
    go_on: &'a AtomicBool,
    after_file: &'a dyn Fn(&str),
}

impl ExportWriter<'_> {
    /// Creates `rel` (never over an existing file), hands `fill` a writer that encrypts when
    /// asked, and lists the file once it is durable.
    fn create(&mut self, rel: &str, encrypt: bool, fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<()> {
        check_path("export file", rel)?;
        if !self.go_on.load(Ordering::SeqCst) {
            return Err(
                ExportError::Refused("stopped before it was finished: the vault left Sealed (a window opened); the unfinished export is removed the next time the medium is inserted".into()).into()
            );
        }
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        let file = OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).open(&path).map_err(|e| io_error(&path, e))?;
        let io = |e: std::io::Error| io_error(&path, e);
        let mut hashing = Hashing { inner: BufWriter::with_capacity(COPY_BUFFER, file), hash: ring::digest::Context::new(&ring::digest::SHA256), bytes: 0 };
        if encrypt {
            // Said with Debug, never age's Display: that one is built by a localisation macro
            // whose arguments come out in a different order in each build, and the vault's
            // image must build byte for byte the same (`make reproducible`). Unused, LTO drops it.
            let encryptor =
                age::Encryptor::with_recipients(self.recipients.iter().map(|r| r as &dyn age::Recipient)).map_err(|e| ExportError::Refused(format!("age refused the recipients: {e:?}")))?;
            let mut stream = encryptor.wrap_output(&mut hashing).map_err(io)?;
            fill(&mut stream)?;
            stream.finish().map_err(io)?;
        } else {
            fill(&mut hashing)?;
        }
        let Hashing { inner, hash, bytes } = hashing;
        let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        self.files.push(ExportedFile { path: rel.to_string(), bytes, sha256: hex(hash.finish().as_ref()) });
        (self.after_file)(rel);
        Ok(())
    }

    fn put(&mut self, rel: &str, from: &mut dyn Read, encrypt: bool) -> Result<()> {
        let shown = rel.to_string();
        self.create(rel, encrypt, &mut |to| {
            std::io::copy(from, to).map_err(|e| io_error(Path::new(&shown), e))?;
            Ok(())
        })
    }

    /// A pack, every chunk its index names re-hashed on the way except the copies in `bad`
    /// (listed bad by a scrub), which are copied as they are like bytes no index names. Returns
    /// the index entries that went out checked, sorted by id: the exported pack's index.
    fn put_pack(&mut self, pack: &Path, rel: &str, bad: &BTreeSet<ChunkId>) -> Result<Vec<(ChunkId, u64, u32)>> {
        let all = index::entries_of_pack(pack).map_err(|reason| StoreError::Corrupt { path: pack.to_path_buf(), reason })?;
        let kept: Vec<(ChunkId, u64, u32)> = all.into_iter().filter(|(id, _, _)| !bad.contains(id)).collect();
        let mut entries = kept.clone();
        entries.sort_by_key(|(_, offset, _)| *offset);
        let file = open_nofollow(pack)?;
        let len = file.metadata().map_err(|e| io_error(pack, e))?.len();
        self.create(rel, true, &mut |to| {
            let io = |e: std::io::Error| io_error(pack, e);
            let mut buffer = vec![0u8; COPY_BUFFER];
            let mut at = 0u64;
            let mut copy_to = |to: &mut dyn Write, at: &mut u64, end: u64, check: Option<&ChunkId>| -> Result<()> {
                if let Some(id) = check {
                    let n = usize::try_from(end - *at)
                        .ok()
                        .filter(|n| *n <= MAX_CHUNK_BYTES)
                        .ok_or_else(|| StoreError::Corrupt { path: pack.to_path_buf(), reason: format!("chunk {id} is longer than a chunk can be") })?;
                    file.read_exact_at(&mut buffer[..n], *at).map_err(io)?;
                    let actual = ChunkId::of(&buffer[..n]);
                    if actual != *id {
                        return Err(StoreError::Corrupt {
                            path: pack.to_path_buf(),
                            reason: format!("chunk {id} reads back as {actual}: the export stops here; run the scrub, and let the next push heal the chunk"),
                        });
                    }
                    to.write_all(&buffer[..n]).map_err(io)?;
                    *at = end;
                }
                while *at < end {
                    let n = usize::try_from(end - *at).unwrap_or(usize::MAX).min(COPY_BUFFER);
                    file.read_exact_at(&mut buffer[..n], *at).map_err(io)?;
                    to.write_all(&buffer[..n]).map_err(io)?;
                    *at += n as u64;
                }
                Ok(())
            };
            for (id, offset, chunk_len) in &entries {
                if *offset < at {
                    // Two index entries over the same bytes: the index was checked, so this is a
                    // chunk listed twice; its bytes went out already.
                    continue;
                }
                copy_to(to, &mut at, *offset, None)?;
                copy_to(to, &mut at, offset + u64::from(*chunk_len), Some(id))?;
            }
            copy_to(to, &mut at, len, None)
        })?;
        Ok(kept)
    }
}

/// How much of an export [`check_export`] re-hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    All,
    /// Every file that is not a pack, and the packs whose position `i` in the manifest has
    /// `i % of == turn % of` (a returning medium: a different share each time it comes back).
    Rotating {
        turn: u64,
        of: u64,
    },
}

impl Share {
    /// Whether pack `i` of `packs` is in the share: one in `of`, and never none (with fewer
    /// packs than `of`, the one the turn points at).
    fn takes(self, i: u64, packs: u64) -> bool {
        match self {
            Share::All => true,
            Share::Rotating { of: 0 | 1, .. } => true,
            Share::Rotating { turn, of } if packs < of => i == turn % packs.max(1),
            Share::Rotating { turn, of } => i % of == turn % of,
        }
    }
}

/// One thing wrong with an export, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

/// What [`check_export`] found. `problems` empty: everything checked is as signed.
#[derive(Debug, Clone)]
pub struct ExportCheck {
    pub manifest: ExportManifest,
    pub files_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
}

/// Checks the export in `dir` against `vault_key`: the manifest's signature and fields, the
/// files it lists (size and SHA-256; all of them or a share), files it does not list, every
/// receipt, and the audit log against the checkpoint the manifest signs. An export whose
/// manifest does not verify is an error; anything else wrong is a [`Problem`].
pub fn check_export(dir: &Path, vault_key: &PublicKey, share: Share) -> Result<ExportCheck> {
    check_export_while(dir, vault_key, share, &AtomicBool::new(true))
}

/// [`check_export`], given up (an error) once `go_on` is cleared: the vault does not hold its
/// store for a medium while a window wants to open.
fn check_export_while(dir: &Path, vault_key: &PublicKey, share: Share, go_on: &AtomicBool) -> Result<ExportCheck> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = vault_io::read_bounded(&manifest_path, MAX_MANIFEST_BYTES)?;
    let signed = SignedDoc::from_file_bytes(&bytes, MAX_MANIFEST_BYTES, "export manifest")?;
    let manifest = ExportManifest::verify(&signed, vault_key)?;
    let mut problems = Vec::new();
    let mut problem = |path: &str, reason: String| problems.push(Problem { path: path.to_string(), reason });

    let listed: BTreeMap<&str, &ExportedFile> = manifest.files.iter().map(|f| (f.path.as_str(), f)).collect();
    for path in list_files(dir)? {
        if path != MANIFEST_FILE && !listed.contains_key(path.as_str()) {
            problem(&path, "is not in the signed manifest (added after the export was written)".into());
        }
    }
    let pack_suffix = format!(".pack{ENCRYPTED_SUFFIX}");
    let packs = manifest.files.iter().filter(|f| f.path.ends_with(&pack_suffix)).count() as u64;
    let (mut files_checked, mut bytes_checked, mut pack_number) = (0usize, 0u64, 0u64);
    for file in &manifest.files {
        if file.path.ends_with(&pack_suffix) {
            pack_number += 1;
            if !share.takes(pack_number - 1, packs) {
                continue;
            }
        }
        if !go_on.load(Ordering::SeqCst) {
            return Err(stopped_checking());
        }
        files_checked += 1;
        match hash_uncached(&dir.join(&file.path), file.bytes) {
            Ok((len, _)) if len != file.bytes => problem(&file.path, format!("is {len} bytes, the manifest signs {}", file.bytes)),
            Ok((_, sha256)) if sha256 != file.sha256 => problem(&file.path, format!("hashes to {sha256}, the manifest signs {}", file.sha256)),
            Ok((len, _)) => bytes_checked += len,
            Err(reason) => problem(&file.path, reason),
        }
    }
    for snapshot in &manifest.snapshots {
        let path = format!("store/{SNAPSHOTS_DIR}/{}/{RECEIPT_FILE}", snapshot.id);
        let receipt = vault_io::read_bounded(&dir.join(&path), 2 * MAX_RECEIPT_BYTES).map_err(StoreError::from).and_then(|b| Ok(SignedReceipt::from_file_bytes(&b)?.verify(vault_key)?));
        match receipt {
            Ok(r) if r.pusher != snapshot.pusher || r.dataset != snapshot.dataset || r.received_at.to_string() != snapshot.received_at => {
                problem(&path, "does not describe the snapshot the manifest lists".into())
            }
            Ok(_) => {}
            Err(e) => problem(&path, format!("does not verify: {e}")),
        }
    }
    let store = dir.join("store");
    match audit::verify(&store, vault_key) {
        Ok(verified) if verified.checkpoint.to_text() != Checkpoint::open(manifest.checkpoint.as_bytes(), vault_key).map(|c| c.to_text()).unwrap_or_default() => {
            problem(audit::LOG_DIR, "its checkpoint is not the one the manifest signs".into())
        }
        Ok(_) => {}
        Err(e) => problem(audit::LOG_DIR, format!("does not verify: {e}")),
    }
    Ok(ExportCheck { manifest, files_checked, bytes_checked, problems })
}

/// Every regular file under `dir`, relative, `/`-separated; anything else (a symlink, a
/// device) is named as such so it is a problem too. Bounded by [`MAX_EXPORT_FILES`].
fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let here = dir.join(&rel);
        for entry in std::fs::read_dir(&here).map_err(|e| io_error(&here, e))?.flatten() {
            let name = rel.join(entry.file_name());
            let shown = name.to_string_lossy().into_owned();
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(name),
                Ok(t) if t.is_file() => found.push(shown),
                _ => found.push(format!("{shown} (not a regular file)")),
            }
            if found.len() > MAX_EXPORT_FILES + 1 {
                return Err(ExportError::Refused(format!("{} holds more than {MAX_EXPORT_FILES} files; not an export this vault wrote", dir.display())).into());
            }
        }
    }
    Ok(found)
}

/// Size and SHA-256 of a file as the device holds it: the page cache is dropped first, so a
/// medium that lost what it was given is caught. Reads at most `expected + 1` bytes.
fn hash_uncached(path: &Path, expected: u64) -> std::result::Result<(u64, String), String> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let _ = nix::fcntl::posix_fadvise(&file, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut limited = (&file).take(expected.saturating_add(1));
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut len = 0u64;
    loop {
        let n = limited.read(&mut buffer).map_err(|e| format!("cannot be read: {e}"))?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        len += n as u64;
    }
    Ok((len, hex(hash.finish().as_ref())))
}

/// What a returning medium's export came to when it was checked (see [`verify_returning`]).
#[derive(Debug, Clone)]
pub struct Returned {
    pub export_id: String,
    pub files_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
}

/// The finished exports on a medium (`vault-exports/<id>`), by id; unfinished ones are not
/// listed. Bounded like an export's files.
pub fn exports_on(medium: &Path) -> Result<Vec<String>> {
    let dir = medium.join(EXPORTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(|e| io_error(&dir, e))?,
    };
    let mut ids = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            ids.push(name);
        }
        if ids.len() > MAX_EXPORTS_PER_MEDIUM {
            return Err(ExportError::Medium(format!("{} holds more than {MAX_EXPORTS_PER_MEDIUM} exports; not a medium this vault wrote, nothing read", dir.display())).into());
        }
    }
    ids.sort();
    Ok(ids)
}

/// Checks every finished export a medium brought back before anything on it is replaced: its
/// signed manifest, every file but the packs and a rotating share of the packs, its receipts
/// and log, its medium id, and its checkpoint against the vault's own log (a prefix of it).
pub fn verify_returning(medium: &Path, medium_id: &str, store: &Path, vault_key: &PublicKey, share: Share, go_on: &AtomicBool) -> Result<Vec<Returned>> {
    let mut returned = Vec::new();
    for id in exports_on(medium)? {
        let dir = medium.join(EXPORTS_DIR).join(&id);
        let checked = check_export_while(&dir, vault_key, share, go_on);
        if !go_on.load(Ordering::SeqCst) {
            return Err(stopped_checking());
        }
        let (files_checked, bytes_checked, mut problems) = match checked {
            Ok(checked) => {
                let mut problems = checked.problems;
                if checked.manifest.export_id != id {
                    problems.push(Problem { path: MANIFEST_FILE.into(), reason: format!("names export {}, it lies in {id}", checked.manifest.export_id) });
                }
                if checked.manifest.medium_id != medium_id {
                    problems.push(Problem { path: MANIFEST_FILE.into(), reason: format!("was written for medium {}, this is {medium_id}", checked.manifest.medium_id) });
                }
                if let Err(reason) = audit::is_prefix(store, checked.manifest.checkpoint.as_bytes(), vault_key) {
                    problems.push(Problem { path: format!("store/{}/{}", audit::LOG_DIR, audit::CHECKPOINT_FILE), reason });
                }
                (checked.files_checked, checked.bytes_checked, problems)
            }
            Err(e) => (0, 0, vec![Problem { path: MANIFEST_FILE.into(), reason: e.to_string() }]),
        };
        problems.truncate(16);
        returned.push(Returned { export_id: id, files_checked, bytes_checked, problems });
    }
    Ok(returned)
}

fn stopped_checking() -> StoreError {
    ExportError::Refused("the check of a returning medium stopped: the vault left Sealed (a window opened); insert it again later".into()).into()
}

/// Removes exports from a medium (a rotation's oldest, once a newer one is read back).
pub fn remove_exports(medium: &Path, ids: &[String]) -> Result<()> {
    let exports = medium.join(EXPORTS_DIR);
    for id in ids {
        vault_core::canonical::check_identifier("export id", id)?;
        let dir = exports.join(id);
        std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    }
    crate::writer::sync_dir(&exports)
}

/// Decrypts what `snapshots` need from the export in `dir` into a store at `scratch` (created,
/// must not exist): their manifests and receipts, every index, and only the packs their chunks
/// are in. Nothing is trusted for being there: the store is read like any other, every receipt
/// verified under the pinned key and every chunk re-hashed.
pub fn decrypt_export(dir: &Path, manifest: &ExportManifest, identities: &[Box<dyn age::Identity>], snapshots: &[String], scratch: &Path) -> Result<()> {
    let listed: BTreeMap<&str, u64> = manifest.files.iter().map(|f| (f.path.as_str(), f.bytes)).collect();
    let decrypt = |rel: &str, to: &Path| -> Result<()> {
        // No more plaintext than the signed ciphertext size: a file grown on the medium cannot
        // fill the restoring host's disk.
        let Some(&signed_bytes) = listed.get(rel) else {
            return Err(ExportError::Refused(format!("{rel} is not in the export's signed manifest")).into());
        };
        let from = dir.join(rel);
        let source = std::io::BufReader::with_capacity(COPY_BUFFER, open_nofollow(&from)?);
        let decryptor = age::Decryptor::new_buffered(source).map_err(|e| ExportError::Refused(format!("{rel}: {e}")))?;
        let mut plain = decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| ExportError::Refused(format!("{rel}: {e} (is this the identity the export was encrypted to?)")))?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        let out = OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).open(to).map_err(|e| io_error(to, e))?;
        let mut out = BufWriter::with_capacity(COPY_BUFFER, out);
        std::io::copy(&mut (&mut plain).take(signed_bytes), &mut out).map_err(|e| io_error(&from, e))?;
        out.flush().map_err(|e| io_error(to, e))?;
        Ok(())
    };
    std::fs::create_dir(scratch).map_err(|e| io_error(scratch, e))?;
    let mut needed: BTreeSet<ChunkId> = BTreeSet::new();
    for id in snapshots {
        if !manifest.snapshots.iter().any(|s| &s.id == id) {
            return Err(StoreError::NoSnapshot { id: id.clone() });
        }
        let to = scratch.join(SNAPSHOTS_DIR).join(id);
        decrypt(&format!("store/{SNAPSHOTS_DIR}/{id}/{SNAPSHOT_MANIFEST}{ENCRYPTED_SUFFIX}"), &to.join(SNAPSHOT_MANIFEST))?;
        let receipt = format!("store/{SNAPSHOTS_DIR}/{id}/{RECEIPT_FILE}");
        if !listed.contains_key(receipt.as_str()) {
            return Err(ExportError::Refused(format!("{receipt} is not in the export's signed manifest")).into());
        }
        let bytes = vault_io::read_bounded(&dir.join(&receipt), 2 * MAX_RECEIPT_BYTES)?;
        std::fs::write(to.join(RECEIPT_FILE), &bytes).map_err(|e| io_error(&to, e))?;
        let snapshot_manifest = vault_io::read_bounded(&to.join(SNAPSHOT_MANIFEST), vault_core::push::manifest::MAX_MANIFEST_BYTES)?;
        needed.extend(vault_core::push::manifest::Manifest::decode(&snapshot_manifest)?.chunk_refs().map(|(_, c)| c.id));
    }
    let packs = scratch.join(PACKS_DIR);
    let pack_suffix = format!(".pack{ENCRYPTED_SUFFIX}");
    for file in &manifest.files {
        let Some(stem) = file.path.strip_prefix(&format!("store/{PACKS_DIR}/")).and_then(|name| name.strip_suffix(&pack_suffix)) else { continue };
        let idx = packs.join(format!("{stem}.idx"));
        decrypt(&format!("store/{PACKS_DIR}/{stem}.idx{ENCRYPTED_SUFFIX}"), &idx)?;
        let names = index::chunk_ids(&vault_io::read_bounded(&idx, index::MAX_INDEX_BYTES)?).map_err(|reason| StoreError::Corrupt { path: idx.clone(), reason })?;
        if names.iter().any(|id| needed.contains(id)) {
            decrypt(&file.path, &packs.join(format!("{stem}.pack")))?;
            for id in names {
                needed.remove(&id);
            }
        }
    }
    std::fs::create_dir_all(&packs).map_err(|e| io_error(&packs, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Share;

    #[test]
    fn a_rotating_share_takes_one_pack_in_n_each_turn_every_pack_over_n_turns_and_never_none() {
        for packs in [1u64, 3, 4, 10] {
            let of = 4;
            let mut seen = vec![0; usize::try_from(packs).unwrap()];
            for turn in 0..of {
                let taken: Vec<u64> = (0..packs).filter(|i| Share::Rotating { turn, of }.takes(*i, packs)).collect();
                assert!(!taken.is_empty(), "{packs} packs, turn {turn}: none taken");
                assert!(taken.len() as u64 <= packs.div_ceil(of).max(1), "{packs} packs, turn {turn}: {taken:?}");
                for i in taken {
                    seen[usize::try_from(i).unwrap()] += 1;
                }
            }
            assert!(packs < of || seen.iter().all(|n| *n == 1), "{packs} packs: {seen:?}");
            assert!(seen.iter().all(|n| *n >= 1) || packs < of, "{packs}: {seen:?}");
        }
        assert!((0..5).all(|i| Share::All.takes(i, 5) && Share::Rotating { turn: 9, of: 1 }.takes(i, 5)));
    }
}
