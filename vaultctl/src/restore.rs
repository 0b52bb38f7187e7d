//! `vaultctl restore` and `vaultctl snapshots`: offline, from the vault's data disk or a
//! copy of its store. Every chunk is re-hashed on the way out, the manifest is checked
//! against its signed receipt, and nothing is written outside the target directory:
//! manifest paths are relative without `..`, the target must be new or empty, and symlinks
//! are created last, so no write can pass through one.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;
use vault_core::keys::PublicKey;
use vault_core::manifest::{check_path, EntryKind};
use vault_store::StoreReader;

use crate::error::{CliError, Result};

#[derive(Debug, Default, Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub chunks_verified: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |e| CliError::Usage(format!("{}: {e}", path.display()))
}

fn mtime(secs: i64) -> std::time::SystemTime {
    let since_epoch = std::time::Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        std::time::UNIX_EPOCH + since_epoch
    } else {
        std::time::UNIX_EPOCH - since_epoch
    }
}

pub fn restore(store: &Path, snapshot: &str, to: &Path, pinned: Option<&PublicKey>) -> Result<RestoreStats> {
    let reader = StoreReader::open(store)?;
    if let Some(key) = pinned {
        reader.receipt(snapshot)?.verify(key)?;
    }
    let manifest = reader.manifest(snapshot)?;
    match fs::symlink_metadata(to) {
        Err(_) => fs::create_dir_all(to).map_err(io(to))?,
        Ok(meta) if meta.is_dir() && fs::read_dir(to).map_err(io(to))?.next().is_none() => {}
        Ok(_) => return Err(CliError::Usage(format!("{}: must be a new or empty directory", to.display()))),
    }
    let mut stats = RestoreStats::default();
    let mut symlinks = Vec::new();
    let mut dirs = Vec::new();
    for entry in &manifest.entries {
        check_path(&entry.path)?;
        let target = to.join(std::ffi::OsStr::from_bytes(&entry.path));
        let parent = target.parent().expect("joined paths have a parent");
        fs::create_dir_all(parent).map_err(io(parent))?;
        match &entry.kind {
            EntryKind::Dir => {
                fs::create_dir_all(&target).map_err(io(&target))?;
                dirs.push((target, entry.mode, entry.mtime));
                stats.dirs += 1;
            }
            EntryKind::File { chunks, .. } | EntryKind::Stream { chunks, .. } => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&target)
                    .map_err(io(&target))?;
                for chunk in chunks {
                    let data = reader.read_chunk(&chunk.id)?;
                    file.write_all(&data).map_err(io(&target))?;
                    stats.bytes += data.len() as u64;
                    stats.chunks_verified += 1;
                }
                // Restored files never come back setuid, setgid or sticky.
                file.set_permissions(fs::Permissions::from_mode(entry.mode & 0o777)).map_err(io(&target))?;
                file.set_modified(mtime(entry.mtime)).map_err(io(&target))?;
                file.sync_all().map_err(io(&target))?;
                stats.files += 1;
            }
            EntryKind::Symlink { target: link } => symlinks.push((target, link.clone())),
        }
    }
    for (path, link) in symlinks {
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&link), &path).map_err(io(&path))?;
        stats.symlinks += 1;
    }
    // Deepest first, so setting a directory read-only cannot block its children.
    for (path, mode, secs) in dirs.into_iter().rev() {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o777)).map_err(io(&path))?;
        if let Ok(dir) = fs::File::open(&path) {
            let _ = dir.set_modified(mtime(secs));
        }
    }
    Ok(stats)
}
