//! Marking sealed files immutable with FS_IOC_SETFLAGS / FS_IMMUTABLE_FL (what `chattr +i`
//! does), durably: the inode is fsynced after the flag changes (ext4 journals the flag as
//! inode metadata; the fsync commits it). Where the filesystem cannot (ramfs, some FUSE
//! mounts), fall back to removing write permission, and say so: the caller logs it.
//!
//! Linux refuses to rename or unlink an immutable inode (even a directory's own rename by
//! its parent), so a file or directory is flagged only once it has its final name.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::{io_error, Result};

/// From linux/fs.h.
const FS_IMMUTABLE_FL: libc::c_long = 0x0000_0010;

// The kernel reads and writes an `int` through these ioctls, although their numbers are
// defined with `long`; the numbers must match the kernel's, so the type here is c_long.
nix::ioctl_read!(fs_ioc_getflags, b'f', 1, libc::c_long);
nix::ioctl_write_ptr!(fs_ioc_setflags, b'f', 2, libc::c_long);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealing {
    /// The immutable attribute is set.
    Immutable,
    /// The filesystem refused the attribute; write permission was removed instead.
    ReadOnlyFallback { reason: String },
}

fn get_flags(file: &File) -> nix::Result<libc::c_long> {
    let mut flags: libc::c_long = 0;
    // SAFETY: the descriptor is valid for the call (borrowed from a live File), and `flags`
    // is a live, writable c_long; the kernel writes at most an int into it.
    unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut flags) }?;
    Ok(flags)
}

fn set_flags(file: &File, flags: libc::c_long) -> nix::Result<()> {
    // SAFETY: as in get_flags; the kernel only reads an int from `flags`, which outlives the call.
    unsafe { fs_ioc_setflags(file.as_raw_fd(), &flags) }.map(|_| ())
}

/// Sets the immutable flag on `path` (a file or a directory) and fsyncs it, so the flag
/// survives a power cut; where the filesystem has no such flag, removes the write bits.
pub fn make_immutable(path: &Path) -> Result<Sealing> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    seal_open(&file, path)
}

fn seal_open(file: &File, path: &Path) -> Result<Sealing> {
    let outcome = match get_flags(file).and_then(|flags| set_flags(file, flags | FS_IMMUTABLE_FL)) {
        Ok(()) => Sealing::Immutable,
        Err(errno) => {
            let meta = file.metadata().map_err(|e| io_error(path, e))?;
            let mode = meta.permissions().mode() & !0o222;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io_error(path, e))?;
            Sealing::ReadOnlyFallback { reason: format!("FS_IOC_SETFLAGS refused ({errno}); made read-only instead") }
        }
    };
    file.sync_all().map_err(|e| io_error(path, e))?;
    Ok(outcome)
}

/// Seals `path` if it is not sealed yet; `None` when it already was. (Every start re-checks.)
pub fn ensure_immutable(path: &Path) -> Result<Option<Sealing>> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    if sealed(&file, path)? {
        return Ok(None);
    }
    seal_open(&file, path).map(Some)
}

/// Was `path` sealed: the flag set or, where the filesystem has no flags, no write bit left?
pub(crate) fn is_sealed(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    sealed(&file, path)
}

fn sealed(file: &File, path: &Path) -> Result<bool> {
    match get_flags(file) {
        Ok(flags) => Ok(flags & FS_IMMUTABLE_FL != 0),
        Err(_) => Ok(file.metadata().map_err(|e| io_error(path, e))?.permissions().mode() & 0o222 == 0),
    }
}

/// Is the immutable attribute set? (For tests and recovery checks.)
pub fn is_immutable(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    Ok(get_flags(&file).is_ok_and(|flags| flags & FS_IMMUTABLE_FL != 0))
}

/// Clears the flag so a staging leftover can be removed. Only for `staging/`: a seal that
/// died after flagging its files but before its snapshot became visible leaves them there,
/// and nothing references them. A filesystem without flags has nothing to clear.
pub(crate) fn lift_immutable(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    match get_flags(&file) {
        Ok(flags) if flags & FS_IMMUTABLE_FL != 0 => set_flags(&file, flags & !FS_IMMUTABLE_FL).map_err(|errno| io_error(path, errno.into())),
        _ => Ok(()),
    }
}

/// Runs `change` (the rename or unlink of a sealed entry) with the flags of `paths` lifted.
/// If a lift or the change fails, every path still there gets its flag back before the error
/// is returned: a step that did not happen never leaves a sealed entry writable until the next
/// start (the reason is said if a flag cannot be set again).
pub(crate) fn with_flags_lifted<T>(paths: &[&Path], change: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut lifted = Vec::new();
    let outcome = paths.iter().try_for_each(|path| lift_immutable(path).map(|()| lifted.push(*path))).and_then(|()| change());
    let Err(failed) = outcome else { return outcome };
    let not_again: Vec<String> =
        lifted.into_iter().filter(|path| std::fs::symlink_metadata(path).is_ok()).filter_map(|path| make_immutable(path).err().map(|e| format!("{}: {e}", path.display()))).collect();
    if not_again.is_empty() {
        return Err(failed);
    }
    let why = format!("{failed}; and the immutable flag could not be set again on {} (the next start sets it)", not_again.join(", "));
    Err(crate::StoreError::Io { path: paths[0].to_path_buf(), source: std::io::Error::other(why) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed file whose change fails is sealed again at once; one whose change happened is not.
    #[test]
    fn a_change_that_fails_leaves_its_entries_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = dir.path().join("sealed");
        std::fs::write(&sealed, b"x").unwrap();
        if make_immutable(&sealed).unwrap() != Sealing::Immutable {
            return; // no flags on this filesystem: nothing to lift
        }
        let err = with_flags_lifted(&[&sealed], || -> Result<()> { Err(io_error(&sealed, std::io::Error::other("rename refused"))) }).unwrap_err();
        assert!(err.to_string().contains("rename refused"), "{err}");
        assert!(is_immutable(&sealed).unwrap(), "flagged again after the failed change");
        with_flags_lifted(&[&sealed], || std::fs::remove_file(&sealed).map_err(|e| io_error(&sealed, e))).unwrap();
        assert!(!sealed.exists());
    }
}
