//! Marking sealed files immutable with FS_IOC_SETFLAGS / FS_IMMUTABLE_FL (what `chattr +i`
//! does). Where the filesystem cannot (tmpfs in a unit test, some FUSE mounts), fall back to
//! removing write permission, and say so: the caller logs it.

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

pub fn make_immutable(path: &Path) -> Result<Sealing> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let fd = file.as_raw_fd();
    let mut flags: libc::c_long = 0;
    // SAFETY: `fd` is a valid open descriptor owned by `file` for this whole call, and
    // `flags` is a live, writable c_long; the kernel writes at most an int into it.
    let got = unsafe { fs_ioc_getflags(fd, &mut flags) };
    let outcome = got.and_then(|_| {
        let wanted = flags | FS_IMMUTABLE_FL;
        // SAFETY: as above; the kernel only reads an int from `wanted`, which outlives the call.
        unsafe { fs_ioc_setflags(fd, &wanted) }
    });
    match outcome {
        Ok(_) => Ok(Sealing::Immutable),
        Err(errno) => {
            let meta = file.metadata().map_err(|e| io_error(path, e))?;
            let mode = meta.permissions().mode() & !0o222;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io_error(path, e))?;
            Ok(Sealing::ReadOnlyFallback { reason: format!("FS_IOC_SETFLAGS refused ({errno}); made read-only instead") })
        }
    }
}

/// Is the immutable attribute set? (For tests and recovery checks.)
pub fn is_immutable(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut flags: libc::c_long = 0;
    // SAFETY: valid descriptor held by `file`; `flags` is writable for the call.
    let got = unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut flags) };
    Ok(got.is_ok() && flags & FS_IMMUTABLE_FL != 0)
}
