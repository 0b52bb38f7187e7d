//! `vaultctl restore` and `vaultctl snapshots`: offline, from the vault's data disk or a
//! copy of its store. Receipts are believed only under the vault key the operator pinned,
//! every chunk is re-hashed on the way out, the manifest is checked against its signed
//! receipt, and nothing is written outside the target directory: manifest paths are relative
//! without `..`, no write passes through a symlink found in the target, and symlinks are
//! created last.
//!
//! A file is written under a temporary name and renamed into place only once whole, so a
//! file that could not be restored is absent, never truncated. The target holds a marker,
//! `.vault-restore/`, naming the snapshot while a restore is unfinished; a restore into a
//! directory holding the marker of the same snapshot resumes it, keeping every file already
//! there whose content re-hashes to the manifest's chunks.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use vault_core::keys::PublicKey;
use vault_core::push::chunk::ChunkId;
use vault_core::push::manifest::{check_path, ChunkRef, Entry, EntryKind};
use vault_core::push::receipt::Receipt;
use vault_store::StoreReader;

use crate::error::{CliError, Result};
use crate::keyfile;

/// The marker directory at the top of an unfinished restore: `snapshot` inside names the
/// snapshot, and files being written wait there until they are whole.
pub const MARKER_DIR: &str = ".vault-restore";
const MARKER_SNAPSHOT_FILE: &str = "snapshot";
const MAX_MARKER_BYTES: usize = 1024;

/// Whose receipts to believe.
pub enum Trust {
    /// Only receipts signed by this key (`--vault-key`).
    Pinned(PublicKey),
    /// Whatever key a receipt names (`--insecure-any-vault-key`).
    AnyKeyInsecure,
}

impl Trust {
    /// From `--vault-key` and `--insecure-any-vault-key` (clap refuses both at once).
    pub fn from_args(vault_key: Option<&str>, insecure_any_key: bool, command: &str) -> Result<Trust> {
        match (vault_key, insecure_any_key) {
            (Some(key), _) => Ok(Trust::Pinned(keyfile::public_key_arg(key)?)),
            (None, true) => {
                eprintln!(
                    "vaultctl {command}: WARNING: --insecure-any-vault-key: receipts are believed whatever key signed them, \
                     so a store re-signed by someone else would be trusted; pass --vault-key to check it is your vault's"
                );
                Ok(Trust::AnyKeyInsecure)
            }
            (None, false) => Err(CliError::Usage(format!(
                "vaultctl {command} needs --vault-key: the vault's public key (`ed25519:...`, or a file holding it; \
                 `gatekeeper --state <dir> identity` prints it, and it is the key you pin for push), so that a store \
                 signed by any other key is refused. To read a store without checking whose it is, pass \
                 --insecure-any-vault-key instead"
            ))),
        }
    }

    /// The snapshot's receipt, verified under the pinned key (or, insecure, the key it names),
    /// and checked to be this snapshot's.
    pub fn verify(&self, reader: &StoreReader, snapshot: &str) -> Result<Receipt> {
        let signed = reader.receipt(snapshot)?;
        let receipt = match self {
            Trust::Pinned(pinned) => signed.verify(pinned).map_err(|_| {
                let expected = pinned.key_id();
                let untrusted = match Receipt::from_bytes(&signed.body) {
                    Ok(claimed) if claimed.vault_key == *pinned => {
                        format!("its receipt names the pinned vault key (key id {expected}) but its signature does not verify under it: the receipt was altered")
                    }
                    Ok(claimed) => format!(
                        "its receipt is signed by vault key id {}, not the pinned vault key id {expected}: this store was not sealed by the vault you pinned, or was re-signed",
                        claimed.vault_key.key_id()
                    ),
                    Err(e) => format!("its receipt cannot be read ({e}), so it is not signed by the pinned vault key id {expected}"),
                };
                CliError::Untrusted(format!("snapshot {snapshot}: {untrusted}; check --vault-key, and do not trust this snapshot"))
            })?,
            Trust::AnyKeyInsecure => signed.verify_self_consistent()?,
        };
        // A valid receipt moved into another snapshot's directory vouches for nothing there.
        if receipt.snapshot_id != snapshot {
            return Err(CliError::Untrusted(format!(
                "snapshot {snapshot}: its receipt is for snapshot {}: the store's snapshot directories were moved or swapped; do not trust this snapshot",
                receipt.snapshot_id
            )));
        }
        Ok(receipt)
    }

    fn describe(&self) -> String {
        match self {
            Trust::Pinned(key) => format!("receipts checked against the pinned vault key id {}", key.key_id()),
            Trust::AnyKeyInsecure => "receipts NOT checked against a pinned key (--insecure-any-vault-key)".into(),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub to: PathBuf,
    /// Files (and streams) written by this run.
    pub files: u64,
    /// Files an earlier run had restored, re-hashed and kept.
    pub files_kept: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub chunks_verified: u64,
    /// Files left out (`--keep-going`): none of them is in the target, not even in part.
    pub not_restored: Vec<NotRestored>,
}

#[derive(Debug, Serialize)]
pub struct NotRestored {
    pub path: String,
    pub reason: String,
}

impl RestoreReport {
    pub fn complete(&self) -> bool {
        self.not_restored.is_empty()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |e| CliError::Failed(format!("{}: {e}", path.display()))
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).expect("a usize fits a u64 on every target vaultctl builds for")
}

fn mtime(secs: i64) -> std::time::SystemTime {
    let since_epoch = std::time::Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        std::time::UNIX_EPOCH + since_epoch
    } else {
        std::time::UNIX_EPOCH - since_epoch
    }
}

/// `--include PATH` (repeat): the part of a snapshot to restore, each path a file or a
/// directory (with everything under it) as the snapshot names it, from its top. None: all.
#[derive(Debug, Default)]
pub struct Selection {
    paths: Vec<Vec<u8>>,
}

impl Selection {
    pub fn new(includes: &[String]) -> Result<Selection> {
        let mut paths = Vec::with_capacity(includes.len());
        for include in includes {
            let trimmed = include.trim_start_matches("./").trim_matches('/');
            if trimmed.is_empty() || trimmed.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
                return Err(CliError::Usage(format!(
                    "--include `{include}`: give a path inside the snapshot, as `snapshots` and the manifest name it (e.g. `etc/nginx` or `db.dump`), without `..` or empty parts"
                )));
            }
            paths.push(trimmed.as_bytes().to_vec());
        }
        Ok(Selection { paths })
    }

    /// An entry is restored when it is an included path or under one; a directory also when
    /// an included path is under it (so its mode and time are restored too).
    fn wants(&self, path: &[u8], is_dir: bool) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|inc| path == inc.as_slice() || under(path, inc) || (is_dir && under(inc, path)))
    }

    /// Every include names something in the manifest: a typo is said, not restored as nothing.
    fn check(&self, manifest: &vault_core::push::manifest::Manifest, snapshot: &str) -> Result<()> {
        for inc in &self.paths {
            if !manifest.entries.iter().any(|e| e.path == *inc || under(&e.path, inc)) {
                return Err(CliError::Usage(format!("--include `{}` matches nothing in snapshot {snapshot}; nothing was written", String::from_utf8_lossy(inc))));
            }
        }
        Ok(())
    }
}

/// `inner` is a path below the directory `outer` (both as a manifest names them).
fn under(inner: &[u8], outer: &[u8]) -> bool {
    inner.len() > outer.len() && inner.starts_with(outer) && inner[outer.len()] == b'/'
}

/// `latest`: the newest snapshot (by the vault's receive time) whose receipt verifies, of
/// `dataset`, or of the only dataset the store holds.
pub fn latest(reader: &StoreReader, trust: &Trust, dataset: Option<&str>) -> Result<String> {
    let mut newest: Option<(vault_core::units::Timestamp, String)> = None;
    let mut datasets = std::collections::BTreeSet::new();
    for id in reader.snapshot_ids()? {
        let Ok(receipt) = trust.verify(reader, &id) else { continue };
        datasets.insert(receipt.dataset.clone());
        if dataset.is_none_or(|d| d == receipt.dataset) && newest.as_ref().is_none_or(|(at, _)| receipt.received_at > *at) {
            newest = Some((receipt.received_at, id));
        }
    }
    if dataset.is_none() && datasets.len() > 1 {
        return Err(CliError::Usage(format!("`latest` of which dataset? The store holds {}: give --dataset", datasets.into_iter().collect::<Vec<_>>().join(", "))));
    }
    newest.map(|(_, id)| id).ok_or_else(|| match dataset {
        Some(d) => CliError::Usage(format!("`latest`: no verified snapshot of dataset `{d}` in the store (the store holds: {})", datasets.into_iter().collect::<Vec<_>>().join(", "))),
        None => CliError::Usage("`latest`: the store holds no verified snapshot".into()),
    })
}

pub fn restore(store: &Path, snapshot: &str, to: &Path, trust: &Trust, keep_going: bool, selection: &Selection) -> Result<RestoreReport> {
    let reader = StoreReader::open(store)?;
    let receipt = trust.verify(&reader, snapshot)?;
    let manifest = reader.manifest_checked(snapshot, &receipt)?;
    selection.check(&manifest, snapshot)?;
    if manifest.entries.iter().any(|e| e.path == MARKER_DIR.as_bytes()) {
        return Err(CliError::Failed(format!("snapshot {snapshot} holds a top-level entry named `{MARKER_DIR}`, the name restore keeps its resume marker under; this restore cannot place it")));
    }
    // Known-missing chunks stop a plain restore before anything is written.
    let health = reader.health(&manifest);
    if !health.is_restorable() && !keep_going {
        return Err(CliError::Failed(format!(
            "snapshot {snapshot} cannot be restored whole: {health}; nothing was written. Pass --keep-going to restore every file whose chunks are there and get a list of the others"
        )));
    }
    let marker = prepare_target(to, snapshot)?;

    let mut report = RestoreReport { snapshot: snapshot.to_string(), to: to.to_path_buf(), ..RestoreReport::default() };
    let mut symlinks = Vec::new();
    let mut dirs = Vec::new();
    for (number, entry) in manifest.entries.iter().enumerate() {
        check_path(&entry.path)?;
        if !selection.wants(&entry.path, matches!(entry.kind, EntryKind::Dir)) {
            continue;
        }
        let relative = Path::new(OsStr::from_bytes(&entry.path));
        let target = to.join(relative);
        match &entry.kind {
            EntryKind::Dir => {
                ensure_dirs(to, relative)?;
                dirs.push((target, entry.mode, entry.mtime));
                report.dirs += 1;
            }
            EntryKind::File { chunks, .. } | EntryKind::Stream { chunks, .. } => {
                ensure_dirs(to, relative.parent().unwrap_or(Path::new("")))?;
                let temp = marker.join(format!("{number}.partial"));
                match restore_file(&reader, entry, chunks, &target, &temp, &mut report)? {
                    Ok(()) => {}
                    Err(reason) if keep_going => report.not_restored.push(NotRestored { path: entry.display_path(), reason }),
                    Err(reason) => {
                        make_durable(to)?;
                        return Err(CliError::Failed(format!(
                            "restore of snapshot {snapshot} stopped at `{}`: {reason}. Nothing partial was left: that file was not \
                             written, and the {} file(s) restored before it are whole. Pass --keep-going to restore every other \
                             file and get a list of what could not be; the same command resumes into {}",
                            entry.display_path(),
                            report.files + report.files_kept,
                            to.display()
                        )));
                    }
                }
            }
            EntryKind::Symlink { target: link } => {
                ensure_dirs(to, relative.parent().unwrap_or(Path::new("")))?;
                symlinks.push((target, link.clone()));
            }
        }
    }
    for (path, link) in symlinks {
        place_symlink(&path, &link)?;
        report.symlinks += 1;
    }
    // Deepest first, so setting a directory read-only cannot block its children.
    for (path, mode, secs) in dirs.into_iter().rev() {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o777)).map_err(io(&path))?;
        if let Ok(dir) = File::open(&path) {
            let _ = dir.set_modified(mtime(secs));
        }
    }
    let target_dir = make_durable(to)?;
    // The marker stays while anything is missing, so the same command resumes.
    if report.complete() {
        fs::remove_dir_all(&marker).map_err(io(&marker))?;
        target_dir.sync_all().map_err(io(to))?;
    }
    Ok(report)
}

/// Puts everything restored so far on the disk: one `syncfs` of the target's filesystem, not
/// an fsync per file (the bench's 2 GiB in 16 008 files restored in 9.4 s that way, 3.9 s
/// so). Until this, a power cut may leave a renamed file short or empty; the marker is still
/// there then, and the run that resumes re-hashes every file it finds, so none is kept short.
/// Returns `to`, open.
fn make_durable(to: &Path) -> Result<File> {
    let dir = File::open(to).map_err(io(to))?;
    nix::unistd::syncfs(&dir).map_err(|e| io(to)(std::io::Error::from(e)))?;
    Ok(dir)
}

/// Makes `to` ready and returns its marker directory: `to` must be new, empty, or hold the
/// marker of an earlier restore of this same snapshot (then the files of that run are kept
/// where they verify, and its unfinished temporary files are removed).
fn prepare_target(to: &Path, snapshot: &str) -> Result<PathBuf> {
    let marker = to.join(MARKER_DIR);
    match fs::symlink_metadata(to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir_all(to).map_err(io(to))?,
        Err(e) => return Err(io(to)(e)),
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(CliError::Failed(format!("{}: --to must be a directory (a symlink is not followed); choose another --to", to.display()))),
    }
    match read_marker(&marker)? {
        Some(id) if id == snapshot => {
            for leftover in fs::read_dir(&marker).map_err(io(&marker))? {
                let path = leftover.map_err(io(&marker))?.path();
                if path.file_name() != Some(OsStr::new(MARKER_SNAPSHOT_FILE)) {
                    fs::remove_file(&path).map_err(io(&path))?;
                }
            }
            eprintln!("vaultctl restore: resuming the earlier restore of {snapshot} in {}: files already there are re-hashed and kept where whole", to.display());
        }
        Some(other) => {
            return Err(CliError::Failed(format!("{}: holds an unfinished restore of snapshot {other}, not {snapshot}: resume that one with --snapshot {other}, or choose another --to", to.display())))
        }
        None => {
            if fs::read_dir(to).map_err(io(to))?.next().is_some() {
                return Err(CliError::Failed(format!(
                    "{}: must be a new or empty directory, or one holding an unfinished restore of snapshot {snapshot} \
                     (marked by {MARKER_DIR}/); it holds other files: choose another --to",
                    to.display()
                )));
            }
            fs::create_dir(&marker).map_err(io(&marker))?;
            let file = marker.join(MARKER_SNAPSHOT_FILE);
            vault_io::write_new(&file, format!("{snapshot}\n").as_bytes(), 0o644)?;
        }
    }
    Ok(marker)
}

/// The snapshot id an unfinished restore's marker names, if there is a marker.
fn read_marker(marker: &Path) -> Result<Option<String>> {
    match fs::symlink_metadata(marker) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(marker)(e)),
        Ok(meta) if meta.is_dir() => {
            let bytes = vault_io::read_bounded(&marker.join(MARKER_SNAPSHOT_FILE), MAX_MARKER_BYTES).map_err(|e| {
                CliError::Failed(format!(
                    "{}: an unfinished restore's marker that does not say which snapshot it is of ({e}); choose another --to, or remove the directory if nothing in it is needed",
                    marker.display()
                ))
            })?;
            let text = String::from_utf8(bytes).map_err(|_| CliError::Failed(format!("{}: not a restore marker (not UTF-8); choose another --to", marker.display())))?;
            Ok(Some(text.trim().to_string()))
        }
        Ok(_) => Err(CliError::Failed(format!("{}: not a restore marker (not a directory); choose another --to", marker.display()))),
    }
}

/// Makes each directory of `relative` under `to`, never passing through a symlink or a file.
/// A directory an earlier run left read-only is opened up again (its mode is set last).
fn ensure_dirs(to: &Path, relative: &Path) -> Result<()> {
    let mut path = to.to_path_buf();
    for component in relative.components() {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let mode = meta.permissions().mode();
                if mode & 0o700 != 0o700 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o700)).map_err(io(&path))?;
                }
            }
            Ok(_) => {
                return Err(CliError::Failed(format!(
                    "{}: is a file or symlink where the snapshot has a directory; refusing to write through it: remove it, or restore into a new directory",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir(&path).map_err(io(&path))?,
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(())
}

/// Removes a temporary file unless it was renamed into place.
struct TempFile<'a> {
    path: &'a Path,
    placed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(self.path);
        }
    }
}

/// Restores one file. `Ok(Err(reason))`: a chunk could not be read, and nothing of the file
/// is left at `target`; `Err`: writing the target failed, which stops the restore.
fn restore_file(reader: &StoreReader, entry: &Entry, chunks: &[ChunkRef], target: &Path, temp: &Path, report: &mut RestoreReport) -> Result<std::result::Result<(), String>> {
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_file() => {
            if meta.len() == entry.size() && holds_chunks(target, chunks) {
                let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(target).map_err(io(target))?;
                finish_file(&file, entry, target)?;
                report.files_kept += 1;
                return Ok(Ok(()));
            }
        }
        // A symlink is replaced by the rename below, never followed.
        Ok(meta) if meta.is_symlink() => {}
        Ok(_) => return Err(CliError::Failed(format!("{}: is a directory or special file where the snapshot has a file: remove it, or restore into a new directory", target.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(target)(e)),
    }
    let mut guard = TempFile { path: temp, placed: false };
    let mut file = OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(0o600).open(temp).map_err(io(temp))?;
    let (mut bytes, mut verified) = (0u64, 0u64);
    for chunk in chunks {
        // The id's hash proves the bytes; the length the manifest gives must match them too,
        // so a file is never restored at another size than the manifest says.
        let read = reader.read_chunk(&chunk.id).and_then(|data| match u32::try_from(data.len()) {
            Ok(len) if len == chunk.len => Ok(data),
            _ => Err(vault_store::StoreError::Corrupt { path: target.to_path_buf(), reason: format!("chunk {} is {} bytes, the manifest says {}", chunk.id, data.len(), chunk.len) }),
        });
        let data = match read {
            Ok(data) => data,
            Err(e) => {
                drop(file);
                // Whatever an earlier run left there did not verify: it must not look restored.
                match fs::remove_file(target) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(target)(e)),
                    _ => {}
                }
                return Ok(Err(e.to_string()));
            }
        };
        file.write_all(&data).map_err(io(target))?;
        bytes += len_u64(data.len());
        verified += 1;
    }
    finish_file(&file, entry, target)?;
    drop(file);
    fs::rename(temp, target).map_err(io(target))?;
    guard.placed = true;
    report.files += 1;
    report.bytes += bytes;
    report.chunks_verified += verified;
    Ok(Ok(()))
}

/// Mode (never setuid, setgid or sticky) and mtime, set through the open file.
fn finish_file(file: &File, entry: &Entry, path: &Path) -> Result<()> {
    file.set_permissions(fs::Permissions::from_mode(entry.mode & 0o777)).map_err(io(path))?;
    file.set_modified(mtime(entry.mtime)).map_err(io(path))
}

/// Does the file at `path` hold exactly these chunks (re-hashed)? Any read problem is a no.
fn holds_chunks(path: &Path, chunks: &[ChunkRef]) -> bool {
    let Ok(mut file) = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) else { return false };
    let mut buf = Vec::new();
    for chunk in chunks {
        let Ok(len) = usize::try_from(chunk.len) else { return false };
        buf.resize(len, 0);
        if file.read_exact(&mut buf).is_err() || ChunkId::of(&buf) != chunk.id {
            return false;
        }
    }
    matches!(file.read(&mut [0u8; 1]), Ok(0))
}

/// Makes the symlink, keeping one an earlier run made; whatever else is there (a file, a
/// symlink elsewhere) is replaced, never followed.
fn place_symlink(path: &Path, link: &[u8]) -> Result<()> {
    let link = OsStr::from_bytes(link);
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_symlink() && fs::read_link(path).is_ok_and(|current| current.as_os_str() == link) => return Ok(()),
        Ok(meta) if meta.is_dir() => return Err(CliError::Failed(format!("{}: is a directory where the snapshot has a symlink: remove it, or restore into a new directory", path.display()))),
        Ok(_) => fs::remove_file(path).map_err(io(path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    std::os::unix::fs::symlink(link, path).map_err(io(path))
}

/// `vaultctl snapshots`: every snapshot with its receipt verified under `trust` and whether
/// all its chunks are in live packs. Snapshots that do not verify are marked, and nothing
/// they claim (dates, sizes) is shown. `Err(Incomplete)` when any is not verified or not
/// restorable, after the listing.
pub fn list_snapshots(store: &Path, trust: &Trust, json: bool) -> Result<()> {
    let reader = StoreReader::open(store)?;
    let ids = reader.snapshot_ids()?;
    let mut rows = Vec::new();
    let mut bad = 0usize;
    let drills = match &trust {
        Trust::Pinned(key) => drills_in_log(store, key),
        Trust::AnyKeyInsecure => Err("drill reports are read only under a pinned vault key".into()),
    };
    for id in &ids {
        let row = match trust.verify(&reader, id) {
            Err(e) => {
                bad += 1;
                let error = match e {
                    CliError::Untrusted(why) => why,
                    other => other.to_string(),
                };
                serde_json::json!({ "snapshot": id, "verified": false, "error": error })
            }
            Ok(r) => {
                let health = reader.manifest_checked(id, &r).map(|m| reader.health(&m));
                let (restorable, said, unavailable) = match &health {
                    Ok(h) => (h.is_restorable(), h.to_string(), h.unavailable_chunks()),
                    Err(e) => (false, format!("UNRESTORABLE: manifest: {e}"), 0),
                };
                if !restorable {
                    bad += 1;
                }
                serde_json::json!({
                    "snapshot": id,
                    "verified": true,
                    "pinned": matches!(trust, Trust::Pinned(_)),
                    "dataset": r.dataset,
                    "pusher": r.pusher,
                    "received_at": r.received_at.to_string(),
                    "retain_until": r.retain_until.to_string(),
                    "files": r.files,
                    "logical_bytes": r.logical_bytes,
                    "vault_key": r.vault_key.to_string(),
                    "restorable": restorable,
                    "health": said,
                    "unavailable_chunks": unavailable,
                    "suspect": r.suspect,
                    "signals": r.signals.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "last_drill": match &drills {
                        Ok(drills) => drills.get(id).map_or(serde_json::Value::Null, |d| serde_json::json!({ "started": d.started.to_string(), "clean": d.clean })),
                        Err(_) => serde_json::Value::Null,
                    },
                })
            }
        };
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON values serialize"));
    } else {
        println!("{} sealed snapshot(s); {}", ids.len(), trust.describe());
        for row in &rows {
            let id = row["snapshot"].as_str().unwrap_or_default();
            if row["verified"] == false {
                println!("  {id}  NOT VERIFIED: {} (its dates and sizes are not shown: nothing in it can be trusted)", row["error"].as_str().unwrap_or_default());
            } else {
                let drilled = match (&row["last_drill"], &drills) {
                    (serde_json::Value::Null, Ok(_)) => "never drilled".to_string(),
                    (serde_json::Value::Null, Err(_)) => String::new(),
                    (d, _) if d["clean"] == true => format!("drilled clean {}", d["started"].as_str().unwrap_or_default()),
                    (d, _) => format!("DRILL FOUND ERRORS {}", d["started"].as_str().unwrap_or_default()),
                };
                let suspect = if row["suspect"] == true { "  SUSPECT (ransomware signals: see --json)" } else { "" };
                println!(
                    "  {id}  {} by {}: {} files, {} bytes, retain until {}  {}{}{drilled}{suspect}",
                    row["dataset"].as_str().unwrap_or_default(),
                    row["pusher"].as_str().unwrap_or_default(),
                    row["files"],
                    row["logical_bytes"],
                    row["retain_until"].as_str().unwrap_or_default(),
                    row["health"].as_str().unwrap_or_default(),
                    if drilled.is_empty() { "" } else { "; " },
                );
            }
        }
        for damaged in reader.damaged_packs() {
            println!("  damaged pack {}: {}", damaged.pack.display(), damaged.reason);
        }
        if let Err(why) = &drills {
            println!("  restore drills not shown: {why}");
        }
    }
    if bad > 0 {
        return Err(CliError::Incomplete(format!("{bad} of {} snapshot(s) are NOT VERIFIED or UNRESTORABLE (marked in the listing)", ids.len())));
    }
    Ok(())
}

/// The last restore drill of each snapshot, from the signed drill reports in the store's audit
/// log (verified whole first). An `Err` says why none can be shown.
fn drills_in_log(store: &std::path::Path, key: &vault_core::keys::PublicKey) -> std::result::Result<std::collections::BTreeMap<String, vault_core::lifecycle::drill::LastDrill>, String> {
    use vault_core::lifecycle::drill::{last_drills, report_in_log_entry};
    if vault_store::audit::read_checkpoint(store).map_err(|e| e.to_string())?.is_none() {
        return Err("the store has no audit log".into());
    }
    let verified = vault_store::audit::verify(store, key).map_err(|e| format!("the audit log does not verify ({e})"))?;
    const PAGE: u64 = 4096;
    let (mut reports, mut from) = (Vec::new(), 0);
    while from < verified.entries {
        let to = (from + PAGE).min(verified.entries);
        for (offset, entry) in vault_store::audit::read_entries(store, from, to).map_err(|e| e.to_string())?.iter().enumerate() {
            match report_in_log_entry(entry, key) {
                Some(Ok(report)) => reports.push(report),
                Some(Err(e)) => return Err(format!("audit log entry {}: {e}", from + offset as u64)),
                None => {}
            }
        }
        from = to;
    }
    Ok(last_drills(&reports))
}
