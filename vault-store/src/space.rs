//! The disk reserve: space on the store's filesystem that pushes never take.
//!
//! The vault's state (`state.json`, the accepted bundle, the vault key) lives on the same
//! filesystem as the store (`/data`). A store that filled it would stop the time floor and
//! new policies from being written, so every push asks before it writes: at `begin`, each
//! time its pack has used what it was last granted (at most [`GRANT_BYTES`] at a time, fewer
//! near the reserve), and before sealing. Grants still unwritten are counted against the
//! reserve too, so concurrent pushes cannot each spend the same free space.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Result, StoreError};

/// How much a pack may write between two looks at the filesystem, when far from the reserve.
pub(crate) const GRANT_BYTES: u64 = 8 * 1024 * 1024;

/// What a push keeps back for when the reserve is not checked at all.
const UNLIMITED: u64 = u64::MAX;

/// The part of the store's filesystem no push may use. Zero bytes and zero inodes turn the
/// checks off (a filesystem that fills is then refused by ENOSPC, as [`StoreError::DiskFull`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserve {
    pub bytes: u64,
    pub inodes: u64,
}

impl Reserve {
    /// 64 MiB and 1024 inodes: room for the state directory (a few KiB), its atomic rewrites
    /// and the ext4 journal's needs, many times over.
    pub const DEFAULT: Reserve = Reserve { bytes: 64 * 1024 * 1024, inodes: 1024 };
    /// No reserve: pushes may fill the filesystem.
    pub const NONE: Reserve = Reserve { bytes: 0, inodes: 0 };
}

impl Default for Reserve {
    fn default() -> Self {
        Reserve::DEFAULT
    }
}

/// A filesystem's size and what is left of it, from statvfs(3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    pub total_bytes: u64,
    /// Blocks in use, whoever uses them.
    pub used_bytes: u64,
    /// What an unprivileged writer may still use (`f_bavail`): ext4's root-reserved blocks are
    /// not counted, so the reserve comes on top of them.
    pub free_bytes: u64,
    /// 0 where the filesystem has no fixed inode count.
    pub inodes_total: u64,
    pub inodes_free: u64,
}

/// statvfs of the filesystem holding `path`.
pub fn fs_space(path: &Path) -> Result<FsSpace> {
    let io = |e: std::io::Error| StoreError::Io { path: path.to_path_buf(), source: e };
    let st = nix::sys::statvfs::statvfs(path).map_err(|errno| io(errno.into()))?;
    let unit = widen(st.fragment_size());
    let bytes = |blocks: u64| blocks.checked_mul(unit).ok_or_else(|| io(std::io::Error::other(format!("{blocks} blocks of {unit} bytes overflow a 64-bit count"))));
    let (blocks, blocks_free) = (widen(st.blocks()), widen(st.blocks_free()));
    Ok(FsSpace {
        total_bytes: bytes(blocks)?,
        used_bytes: bytes(blocks.saturating_sub(blocks_free))?,
        free_bytes: bytes(widen(st.blocks_available()))?,
        inodes_total: widen(st.files()),
        inodes_free: widen(st.files_available()),
    })
}

/// statvfs's counts are u64 on x86_64 and narrower on some other targets: widened, never cut.
fn widen(count: impl Into<u64>) -> u64 {
    count.into()
}

/// What one step of a push is about to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Need {
    pub bytes: u64,
    pub inodes: u64,
}

/// The reserve of one store, and the bytes granted to pushes that they have not written yet.
#[derive(Debug)]
pub(crate) struct Space {
    dir: PathBuf,
    reserve: Reserve,
    promised: Mutex<u64>,
}

impl Space {
    pub(crate) fn reserve(&self) -> Reserve {
        self.reserve
    }

    pub fn new(dir: &Path, reserve: Reserve) -> Space {
        Space { dir: dir.to_path_buf(), reserve, promised: Mutex::new(0) }
    }

    /// Grants `need` (and up to [`GRANT_BYTES`] more while far from the reserve) to a pack
    /// that held `previous`, which this replaces; or refuses by the reserve rule. On a
    /// refusal the ledger is unchanged: the pack still holds `previous` until it releases it.
    pub fn grant(&self, need: Need, previous: u64) -> Result<u64> {
        if self.reserve == Reserve::NONE {
            return Ok(UNLIMITED);
        }
        // Held across statvfs: two pushes must not both be granted the same free bytes.
        let mut promised = self.promised.lock().expect("space ledger lock");
        let others = promised.saturating_sub(previous);
        let grant = decide(&fs_space(&self.dir)?, self.reserve, others, need)?;
        *promised = others.saturating_add(grant);
        Ok(grant)
    }

    /// A pack is done (sealed or dropped): what it was granted and did not write is free again.
    pub fn release(&self, granted: u64) {
        if self.reserve == Reserve::NONE {
            return;
        }
        let mut promised = self.promised.lock().expect("space ledger lock");
        *promised = promised.saturating_sub(granted);
    }
}

/// The reserve rule, on numbers: `promised` is what other pushes were granted and may still
/// write. Returns the grant.
fn decide(fs: &FsSpace, reserve: Reserve, promised: u64, need: Need) -> Result<u64> {
    // A filesystem without a fixed inode count (or without a size, like ramfs) has nothing
    // to run out of by that measure.
    if need.inodes > 0 && reserve.inodes > 0 && fs.inodes_total > 0 && fs.inodes_free < reserve.inodes.saturating_add(need.inodes) {
        return Err(StoreError::InodeReserve { free: fs.inodes_free, need: need.inodes, reserve: reserve.inodes });
    }
    if reserve.bytes == 0 || fs.total_bytes == 0 {
        return Ok(UNLIMITED);
    }
    let headroom = fs.free_bytes.saturating_sub(reserve.bytes).saturating_sub(promised);
    if headroom < need.bytes {
        return Err(StoreError::DiskReserve { free: fs.free_bytes, promised, need: need.bytes, reserve: reserve.bytes });
    }
    Ok(headroom.min(GRANT_BYTES).max(need.bytes))
}

/// `52.3 MiB`, `12.0 KiB`, `512 bytes`: for messages people read. Rounded down.
pub(crate) fn human(bytes: &u64) -> String {
    let bytes = *bytes;
    let (unit, name) = if bytes >= 1 << 30 {
        (1u64 << 30, "GiB")
    } else if bytes >= 1 << 20 {
        (1 << 20, "MiB")
    } else if bytes >= 1 << 10 {
        (1 << 10, "KiB")
    } else {
        return format!("{bytes} bytes");
    };
    // Integer tenths: no float, no cast.
    let tenths = (bytes % unit).saturating_mul(10) / unit;
    format!("{}.{tenths} {name}", bytes / unit)
}

/// The refusal text of [`StoreError::DiskReserve`].
pub(crate) fn disk_reserve_message(free: &u64, promised: &u64, need: &u64, reserve: &u64) -> String {
    let promised = if *promised > 0 { format!(" ({} of it promised to pushes in flight)", human(promised)) } else { String::new() };
    format!(
        "disk reserve: {} free on the store's filesystem{promised}, this push needs {} more; pushes stop at {} free so the vault's state can still be written: expire or export snapshots, or give the vault a larger data disk",
        human(free),
        human(need),
        human(reserve)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn fs(free_bytes: u64, inodes_free: u64) -> FsSpace {
        FsSpace { total_bytes: 1024 * MIB, used_bytes: 0, free_bytes, inodes_total: 100_000, inodes_free }
    }

    #[test]
    fn far_from_the_reserve_a_pack_is_granted_a_stretch_near_it_exactly_what_fits() {
        let reserve = Reserve { bytes: 64 * MIB, inodes: 1024 };
        let chunk = Need { bytes: MIB, inodes: 0 };
        assert_eq!(decide(&fs(500 * MIB, 5000), reserve, 0, chunk).unwrap(), GRANT_BYTES);
        assert_eq!(decide(&fs(67 * MIB, 5000), reserve, 0, chunk).unwrap(), 3 * MIB);
        // A need larger than a stretch (a big manifest at sealing) is granted whole.
        assert_eq!(decide(&fs(500 * MIB, 5000), reserve, 0, Need { bytes: 16 * MIB, inodes: 4 }).unwrap(), 16 * MIB);
    }

    #[test]
    fn what_other_pushes_were_promised_counts_against_the_reserve() {
        let reserve = Reserve { bytes: 64 * MIB, inodes: 0 };
        let err = decide(&fs(70 * MIB, 0), reserve, 6 * MIB, Need { bytes: MIB, inodes: 0 }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "disk reserve: 70.0 MiB free on the store's filesystem (6.0 MiB of it promised to pushes in flight), this push needs 1.0 MiB more; \
             pushes stop at 64.0 MiB free so the vault's state can still be written: expire or export snapshots, or give the vault a larger data disk"
        );
        assert_eq!(decide(&fs(70 * MIB, 0), reserve, 5 * MIB, Need { bytes: MIB, inodes: 0 }).unwrap(), MIB);
    }

    #[test]
    fn below_the_reserve_nothing_starts_and_inodes_have_their_own_reserve() {
        let reserve = Reserve { bytes: 64 * MIB, inodes: 1024 };
        let begin = Need { bytes: 64 * 1024, inodes: 5 };
        let err = decide(&fs(52 * MIB, 5000), reserve, 0, begin).unwrap_err();
        assert!(err.to_string().starts_with("disk reserve: 52.0 MiB free on the store's filesystem, this push needs 64.0 KiB more; pushes stop at 64.0 MiB free"), "{err}");
        let err = decide(&fs(500 * MIB, 1028), reserve, 0, begin).unwrap_err();
        assert_eq!(
            err.to_string(),
            "inode reserve: 1028 inodes free on the store's filesystem, this push needs 5 more; pushes stop at 1024 free so the vault's state can still be written: \
             expire or export snapshots, or give the vault a larger data disk"
        );
        // Appending to a pack takes no inode.
        assert!(decide(&fs(500 * MIB, 1000), reserve, 0, Need { bytes: MIB, inodes: 0 }).is_ok());
    }

    #[test]
    fn no_reserve_or_no_size_means_no_check() {
        let chunk = Need { bytes: MIB, inodes: 1 };
        assert_eq!(decide(&fs(0, 0), Reserve { bytes: 0, inodes: 0 }, 0, chunk).unwrap(), UNLIMITED);
        let ramfs = FsSpace { total_bytes: 0, used_bytes: 0, free_bytes: 0, inodes_total: 0, inodes_free: 0 };
        assert_eq!(decide(&ramfs, Reserve::DEFAULT, 0, chunk).unwrap(), UNLIMITED);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(&512), "512 bytes");
        assert_eq!(human(&(52 * MIB + 320 * 1024)), "52.3 MiB");
        assert_eq!(human(&(64 * 1024)), "64.0 KiB");
        assert_eq!(human(&u64::MAX), "17179869183.9 GiB");
    }

    #[test]
    fn grants_are_released_and_replaced_in_the_ledger() {
        // A private tmpfs: nothing else writes to it, so statvfs holds still. Needs root.
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"]).arg(dir.path()).status().unwrap();
        assert!(mounted.success(), "mounting a tmpfs needs root");
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(dir.path());
        let free = fs_space(dir.path()).unwrap().free_bytes;
        // A reserve that leaves exactly 3 MiB above it.
        let space = Space::new(dir.path(), Reserve { bytes: free - 3 * MIB, inodes: 0 });
        let a = space.grant(Need { bytes: MIB, inodes: 0 }, 0).unwrap();
        assert_eq!(a, 3 * MIB);
        // Another push sees what the first was promised.
        assert!(matches!(space.grant(Need { bytes: MIB, inodes: 0 }, 0), Err(StoreError::DiskReserve { promised, .. }) if promised == 3 * MIB));
        space.release(a);
        let b = space.grant(Need { bytes: MIB, inodes: 0 }, 0).unwrap();
        assert_eq!(b, 3 * MIB);
        // Replacing its own grant, a push does not compete with itself.
        assert_eq!(space.grant(Need { bytes: 2 * MIB, inodes: 0 }, b).unwrap(), 3 * MIB);
        space.release(b);
        assert_eq!(*space.promised.lock().unwrap(), 0);
    }
}
