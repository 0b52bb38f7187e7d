//! A staging pack's bytes appended around the page cache (`O_DIRECT`).
//!
//! A push writes every new byte once and the vault reads it back only to scrub, restore or
//! export, days later. Written through the page cache, each byte was copied into a cache page
//! (on the appliance's VMs, often a page the host had taken back), later written back by a
//! kernel thread, and then evicted again: measured here, 1.0-1.6 s of the vault's CPU for
//! 2 GiB. Written straight from an aligned buffer, the device takes it by DMA: 0.11-0.17 s.
//! The data is on the disk as it arrives, so the fsync at sealing has little left to do.
//!
//! Direct I/O needs block-aligned buffers, offsets and lengths. The appender fills an aligned
//! buffer and writes it whole; a flush before it is full (the reserve check asks for one)
//! writes the last partial block padded with zeros and writes that block again once more
//! bytes follow; [`Appender::finish`] cuts the file to what was appended. A filesystem that
//! refuses `O_DIRECT` (when it is set, or at the first write: an alignment it needs beyond
//! [`ALIGN`]) gets the same bytes through the page cache, with writeback started every
//! [`WRITEBACK_EVERY`] bytes as before.
//!
//! A direct write returns once the device has the bytes, so full buffers are written by a
//! thread of the pack's own while the session fills the other buffer: the pack's order on disk
//! is the order of the appends (one write in flight at a time), and an error of that write is
//! returned by the next append, flush or finish.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The alignment direct I/O gets: a page, which is also every common disk's logical block.
pub const ALIGN: usize = 4096;
/// The buffer's size: one write per MiB.
pub const BUFFER_BYTES: usize = 1024 * 1024;
const _: () = assert!(BUFFER_BYTES % ALIGN == 0);
/// Through the page cache, writeback is started for each this many bytes as they arrive, so
/// the fsync at sealing finds little left to write instead of the whole push.
const WRITEBACK_EVERY: u64 = 32 * 1024 * 1024;
/// The writer thread's stack: it only calls `pwrite`.
const WRITER_STACK_BYTES: usize = 64 * 1024;

/// Appends to a new file, directly to the device where the filesystem allows.
///
/// A full buffer is written by a thread of the pack's own while the next one fills (a direct
/// write returns only once the device has the bytes: about 0.6 ms a MiB here, which the
/// session's ingest would otherwise wait out for every MiB). At most one write is in flight,
/// so the appender holds two buffers at most, the second only once the first has filled.
pub(crate) struct Appender {
    target: Arc<Target>,
    /// The buffer being filled.
    block: Block,
    /// Bytes in `block`, not all of them written yet.
    filled: usize,
    /// Where `block`'s first byte goes in the file: always a multiple of [`ALIGN`].
    at: u64,
    /// `None` if no thread could be started: full buffers are then written here.
    behind: Option<WriteBehind>,
}

/// `BUFFER_BYTES` aligned bytes inside a `Vec` that is never resized (so the alignment holds).
struct Block {
    bytes: Vec<u8>,
    start: usize,
}

impl Block {
    fn new() -> Block {
        let bytes = vec![0u8; BUFFER_BYTES + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        Block { bytes, start }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + BUFFER_BYTES]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + BUFFER_BYTES]
    }
}

/// The file, and whether its bytes still go around the page cache: shared with the writer
/// thread.
struct Target {
    file: File,
    direct: AtomicBool,
}

impl Target {
    /// Writes `bytes` (a multiple of [`ALIGN`] long) at `at` (a multiple of [`ALIGN`]). A
    /// direct write the device refuses for its alignment is made again through the page cache,
    /// for this file from then on.
    fn write_block(&self, bytes: &[u8], at: u64) -> io::Result<()> {
        match self.file.write_all_at(bytes, at) {
            Err(e) if self.direct.load(Ordering::Relaxed) && e.raw_os_error() == Some(libc::EINVAL) => {
                set_direct(&self.file, false)?;
                self.direct.store(false, Ordering::Relaxed);
                self.file.write_all_at(bytes, at)?;
            }
            result => result?,
        }
        self.start_writeback(at, bytes.len() as u64);
        Ok(())
    }

    /// Through the page cache, asks the kernel to start writing each [`WRITEBACK_EVERY`] bytes
    /// once a write reaches their end. Only a hint for speed: durability comes from the fsync
    /// at sealing, so a failure is ignored.
    fn start_writeback(&self, at: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let boundary = (at + len) / WRITEBACK_EVERY * WRITEBACK_EVERY;
        if self.direct.load(Ordering::Relaxed) || boundary <= at || boundary == 0 {
            return;
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(boundary - WRITEBACK_EVERY), i64::try_from(WRITEBACK_EVERY)) else { return };
        // SAFETY: the descriptor is valid for the call (borrowed from a live File), and
        // sync_file_range with SYNC_FILE_RANGE_WRITE only schedules I/O on that file's pages;
        // it touches no memory of ours.
        let _ = unsafe { libc::sync_file_range(self.file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    }
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    let flags = if on { flags | OFlag::O_DIRECT } else { flags - OFlag::O_DIRECT };
    fcntl(file, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// How much of a file's range is in the page cache, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedPages {
    /// Pages of the range in the cache.
    pub cached: u64,
    /// Pages the range spans (up to the file's end as it is now).
    pub of: u64,
}

/// `cachestat(2)` (Linux 6.5): its number is the same on every architecture, and libc names
/// it for a few only.
const SYS_CACHESTAT: libc::c_long = 451;

/// The kernel's `struct cachestat_range`.
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// The kernel's `struct cachestat`.
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// How much of `file`'s first `len` bytes is in the page cache; `None` where the kernel cannot
/// say. A hint only: the answer may change at once.
///
/// Counted exactly by `cachestat(2)` (Linux 6.5), which reads and maps nothing. Where that
/// cannot be asked, estimated from [`PROBED_PAGES`] pages spread over the range
/// ([`probed_cached_pages`]): before Linux 6.5, and under a seccomp filter (a hardened systemd
/// unit, such as the package's `vaultctl-push@.service` with `SystemCallFilter=@system-service`,
/// whose list predates the call and kills the process that makes it, SIGSYS, instead of failing
/// it).
pub fn cached_pages(file: &File, len: u64) -> Option<CachedPages> {
    let of = len.div_ceil(ALIGN as u64);
    // A zero length would ask cachestat about the whole file.
    if of == 0 {
        return Some(CachedPages { cached: 0, of });
    }
    counted_cached_pages(file, len, of).or_else(|| probed_cached_pages(file, of))
}

/// `cachestat(2)`'s count, or `None` under a seccomp filter or where the kernel lacks it.
fn counted_cached_pages(file: &File, len: u64, of: u64) -> Option<CachedPages> {
    use std::os::fd::AsRawFd;
    static FILTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *FILTERED.get_or_init(|| std::fs::read_to_string("/proc/self/status").map_or(true, |status| under_seccomp_filter(&status))) {
        return None;
    }
    let range = CachestatRange { off: 0, len };
    let mut stat = Cachestat::default();
    // SAFETY: the descriptor is valid for the call (borrowed from a live File); the kernel
    // only reads `range` and writes one `struct cachestat` into `stat`, both live locals laid
    // out as the kernel's structs (repr(C), u64 fields in its order) and not aliased; flags
    // must be 0.
    let result = unsafe { libc::syscall(SYS_CACHESTAT, file.as_raw_fd(), &range as *const CachestatRange, &mut stat as *mut Cachestat, 0 as libc::c_uint) };
    (result == 0).then_some(CachedPages { cached: stat.nr_cache.min(of), of })
}

/// How many pages of a range [`probed_cached_pages`] reads.
const PROBED_PAGES: u64 = 16;

/// An estimate of how many of a file's first `of` pages are in the page cache: one byte of each
/// of [`PROBED_PAGES`] pages spread evenly over them is read with `preadv2(RWF_NOWAIT)`, which
/// fails with `EAGAIN` instead of waiting for the device (Linux 4.14; `@basic-io` in systemd's
/// filters). `None` where the kernel or the filesystem cannot read without waiting.
///
/// A probe that misses starts the kernel reading that page (and, at the file's start, its
/// first read-ahead), without waiting for it: at most a few pages a file, of files that are
/// about to be read anyway. Each probe asks about a page no earlier probe asked about, so
/// what an earlier miss started reading is not found as cached.
fn probed_cached_pages(file: &File, of: u64) -> Option<CachedPages> {
    use std::os::fd::AsRawFd;
    let probes = of.min(PROBED_PAGES);
    let mut hits = 0u64;
    let mut byte = 0u8;
    // Last page first: probes going forward a page at a time would look like a file being read
    // in order, and the kernel would read ahead of them, finding pages that were not there.
    for probe in (0..probes).rev() {
        let page = probe * of / probes;
        let offset = libc::off_t::try_from(page.checked_mul(ALIGN as u64)?).ok()?;
        let iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
        // SAFETY: the descriptor is valid for the call (borrowed from a live File); `iov`
        // names one live, writable byte, the only memory the kernel writes, and is not kept.
        let read = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
        match read {
            1 => hits += 1,
            // Past the file's end (it shrank since its size was taken): not there.
            0 => {}
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => {}
            // EOPNOTSUPP (a filesystem that cannot), ENOSYS, EINVAL (flags unknown): no answer.
            _ => return None,
        }
    }
    Some(CachedPages { cached: hits * of / probes, of })
}

/// Whether `/proc/self/status` says a seccomp filter is on (`Seccomp: 2`; 1 is strict mode, in
/// which nothing but read, write and exit runs at all). A status without the field (a kernel
/// without seccomp) says no.
fn under_seccomp_filter(status: &str) -> bool {
    status.lines().find_map(|line| line.strip_prefix("Seccomp:")).is_some_and(|mode| mode.trim() != "0")
}

/// The pack's writer thread: takes full buffers (and where they go), writes each, and hands
/// it back with the outcome. Ended and joined on drop.
struct WriteBehind {
    jobs: Option<SyncSender<(Block, u64)>>,
    done: Receiver<(Block, io::Result<()>)>,
    thread: Option<JoinHandle<()>>,
    /// Whether a buffer is being written (and `done` will hand it back).
    in_flight: bool,
    /// The buffer not being filled, when it is not being written (allocated when first needed).
    spare: Option<Block>,
    /// A write failed: its bytes are not in the file, so nothing more is written and the pack
    /// can never be finished (whatever the caller does after the first error).
    failed: bool,
}

impl WriteBehind {
    fn start(target: &Arc<Target>) -> io::Result<WriteBehind> {
        let (jobs, incoming) = sync_channel::<(Block, u64)>(1);
        let (finished, done) = sync_channel(1);
        let target = Arc::clone(target);
        let thread = std::thread::Builder::new().name("pack-writer".into()).stack_size(WRITER_STACK_BYTES).spawn(move || {
            for (block, at) in incoming {
                let result = target.write_block(block.get(), at);
                if finished.send((block, result)).is_err() {
                    break;
                }
            }
        })?;
        Ok(WriteBehind { jobs: Some(jobs), done, thread: Some(thread), in_flight: false, spare: None, failed: false })
    }

    fn stopped() -> io::Error {
        io::Error::other("the staging pack's writer thread stopped")
    }

    fn send(&mut self, block: Block, at: u64) -> io::Result<()> {
        let sent = self.jobs.as_ref().ok_or_else(Self::stopped).and_then(|jobs| jobs.send((block, at)).map_err(|_| Self::stopped()));
        self.failed |= sent.is_err();
        self.in_flight = sent.is_ok();
        sent
    }

    /// Waits for the write in flight, if any, keeping its buffer as the spare: how it went.
    fn settle(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("an earlier write of this staging pack failed: its bytes are not all in the file"));
        }
        if !std::mem::take(&mut self.in_flight) {
            return Ok(());
        }
        let outcome = self.done.recv().map_err(|_| Self::stopped());
        let result = outcome.and_then(|(block, result)| {
            self.spare = Some(block);
            result
        });
        self.failed = result.is_err();
        result
    }

    /// A buffer to fill next, once the write in flight is done.
    fn take_spare(&mut self) -> io::Result<Block> {
        self.settle()?;
        Ok(self.spare.take().unwrap_or_else(Block::new))
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        // Closing the channel ends the thread once the write in flight is done.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Appender {
    /// Creates `path` (it must not exist) for appending, directly if `direct` and the
    /// filesystem allows it.
    pub fn create(path: &Path, direct: bool) -> io::Result<Appender> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Appender::over(file, direct))
    }

    /// Appends to `file`, which is empty.
    fn over(file: File, direct: bool) -> Appender {
        // Set after the file is made (an open with O_DIRECT on a filesystem without it can
        // fail after creating the file): a filesystem without direct I/O refuses the flag.
        let direct = direct && set_direct(&file, true).is_ok();
        let target = Arc::new(Target { file, direct: AtomicBool::new(direct) });
        // Without a thread (the process is at its limit), the same bytes are written here.
        let behind = WriteBehind::start(&target).ok();
        Appender { target, block: Block::new(), filled: 0, at: 0, behind }
    }

    /// Whether the bytes go around the page cache.
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.target.direct.load(Ordering::Relaxed)
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.at + self.filled as u64
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let take = data.len().min(BUFFER_BYTES - self.filled);
            self.block.get_mut()[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == BUFFER_BYTES {
                self.write_full_block()?;
            }
        }
        Ok(())
    }

    /// Hands the full buffer to the writer thread and goes on in the other one.
    fn write_full_block(&mut self) -> io::Result<()> {
        match self.behind.as_mut() {
            Some(behind) => {
                let full = std::mem::replace(&mut self.block, behind.take_spare()?);
                behind.send(full, self.at)?;
            }
            None => self.target.write_block(self.block.get(), self.at)?,
        }
        self.at += BUFFER_BYTES as u64;
        self.filled = 0;
        Ok(())
    }

    /// Puts every byte appended so far into the file (the last partial block padded with
    /// zeros, which the next write or [`Appender::finish`] replaces), so the filesystem counts
    /// them.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(behind) = self.behind.as_mut() {
            behind.settle()?;
        }
        if self.filled == 0 {
            return Ok(());
        }
        let padded = self.filled.next_multiple_of(ALIGN);
        let block = self.block.get_mut();
        block[self.filled..padded].fill(0);
        self.target.write_block(&block[..padded], self.at)?;
        // Whole blocks are done with; the partial one moves to the front, to be written again.
        let whole = self.filled - self.filled % ALIGN;
        block.copy_within(whole..self.filled, 0);
        self.at += whole as u64;
        self.filled -= whole;
        Ok(())
    }

    /// Flushes, cuts the file to exactly the bytes appended, and hands it back (not yet
    /// fsynced: the caller makes it durable).
    pub fn finish(mut self) -> io::Result<File> {
        self.flush()?;
        let len = self.len();
        // The thread holds the other reference to the target: ended, it lets go.
        drop(self.behind.take());
        let target = Arc::try_unwrap(self.target).map_err(|_| WriteBehind::stopped())?;
        target.file.set_len(len)?;
        Ok(target.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seccomp_filter_is_read_from_the_process_status() {
        assert!(under_seccomp_filter("Name:\tvaultctl\nSeccomp:\t2\nSeccomp_filters:\t1\n"));
        assert!(!under_seccomp_filter("Name:\tvaultctl\nSeccomp:\t0\nSeccomp_filters:\t0\n"));
        assert!(!under_seccomp_filter("Name:\tvaultctl\n"), "a kernel without seccomp");
    }

    #[test]
    fn the_page_cache_share_of_a_file_is_what_was_read_or_written_and_not_dropped() {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("source");
        let len = 4 * 1024 * 1024 + 100;
        std::fs::write(&path, pattern(len, 7)).unwrap();
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        let Some(written) = cached_pages(&file, len as u64) else {
            eprintln!("the kernel cannot say what is cached (no cachestat(2), no preadv2 RWF_NOWAIT here): nothing to check");
            return;
        };
        if nix::sys::statfs::statfs(dir.path()).unwrap().filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            eprintln!("the temporary directory is on tmpfs, whose pages are the files: nothing to drop");
            return;
        }
        let pages = (len as u64).div_ceil(ALIGN as u64);
        assert_eq!(written, CachedPages { cached: pages, of: pages }, "just written");
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        assert_eq!(cached_pages(&file, len as u64), Some(CachedPages { cached: 0, of: pages }), "dropped once clean");
        let mut half = vec![0u8; len / 2];
        std::io::Read::read_exact(&mut &file, &mut half).unwrap();
        let read = cached_pages(&file, len as u64).unwrap();
        assert!(read.cached >= pages / 2 && read.of == pages, "read half: {read:?}");
        assert_eq!(cached_pages(&file, 0), Some(CachedPages { cached: 0, of: 0 }), "an empty range");
        // A range past the file's end spans pages that are not there: none of them cached.
        assert_eq!(cached_pages(&file, 2 * len as u64).map(|c| c.of), Some((2 * len as u64).div_ceil(ALIGN as u64)));
    }

    #[test]
    fn the_probed_page_cache_share_of_a_file_is_what_was_written_and_not_dropped() {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("source");
        let len = 4 * 1024 * 1024 + 100;
        std::fs::write(&path, pattern(len, 9)).unwrap();
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        let pages = (len as u64).div_ceil(ALIGN as u64);
        assert_eq!(probed_cached_pages(&file, pages), Some(CachedPages { cached: pages, of: pages }), "just written");
        if nix::sys::statfs::statfs(dir.path()).unwrap().filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            eprintln!("the temporary directory is on tmpfs, whose pages are the files: nothing to drop");
            return;
        }
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        // The first probe starts the kernel reading the file's first pages: at most one of the
        // sixteen may be found by the time the next probes look.
        let dropped = probed_cached_pages(&file, pages).unwrap();
        assert!(dropped.cached <= pages / PROBED_PAGES && dropped.of == pages, "dropped once clean: {dropped:?}");
        // Read the second half back: the probes there find it, those in the first half do not.
        // Read whole first, so that no page the probes asked for is still being read (a page
        // under I/O is not dropped).
        std::io::Read::read_to_end(&mut &file, &mut Vec::new()).unwrap();
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        let mut half = vec![0u8; len / 2];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut half, (len / 2) as u64).unwrap();
        let read = probed_cached_pages(&file, pages).unwrap();
        assert!(read.cached >= pages / 2 && read.cached <= pages / 2 + pages / PROBED_PAGES, "second half read: {read:?}");
        // A dropped file of as many pages as probes: each page is probed, and none is found
        // cached because an earlier probe started the kernel reading ahead.
        let sixteen = dir.path().join("sixteen");
        std::fs::write(&sixteen, pattern(usize::try_from(PROBED_PAGES).unwrap() * ALIGN, 2)).unwrap();
        let sixteen = File::open(&sixteen).unwrap();
        sixteen.sync_all().unwrap();
        posix_fadvise(&sixteen, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        assert_eq!(probed_cached_pages(&sixteen, PROBED_PAGES), Some(CachedPages { cached: 0, of: PROBED_PAGES }), "a small file dropped");
        // Fewer pages than probes: each is probed once.
        let small = dir.path().join("small");
        std::fs::write(&small, pattern(3 * ALIGN, 1)).unwrap();
        assert_eq!(probed_cached_pages(&File::open(&small).unwrap(), 3), Some(CachedPages { cached: 3, of: 3 }));
        // A range past the file's end (the file shrank) counts those pages as not there.
        assert_eq!(probed_cached_pages(&File::open(&small).unwrap(), 6), Some(CachedPages { cached: 3, of: 6 }));
    }

    /// What the package's hardened unit does to a pusher (`SystemCallFilter=`, systemd 252):
    /// `cachestat(2)` kills the process. Under such a filter the share is still known, from
    /// the probes, and asking does not kill: this test runs the next one in a child process
    /// whose filter kills it on `cachestat`.
    #[test]
    fn under_a_filter_that_kills_cachestat_the_share_is_probed_instead() {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        let dir = tempfile::tempdir().unwrap();
        if nix::sys::statfs::statfs(dir.path()).unwrap().filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            eprintln!("the temporary directory is on tmpfs, whose pages are the files: nothing to drop");
            return;
        }
        let path = dir.path().join("source");
        std::fs::write(&path, pattern(1 << 20, 3)).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child.args(["--exact", "direct::tests::the_share_of_a_dropped_file_under_a_filter", "--ignored", "--nocapture", "--test-threads=1"]);
        child.env(FILTERED_CHILD_FILE, &path);
        let program = kill_on_cachestat();
        let len = u16::try_from(program.len()).unwrap();
        // SAFETY: between fork and exec the closure makes two system calls (prctl, seccomp)
        // on memory it owns (the filter program, built before the fork and moved in) and
        // allocates nothing, as a forked child of a multi-threaded process must.
        unsafe {
            child.pre_exec(move || {
                let fprog = libc::sock_fprog { len, filter: program.as_ptr() as *mut libc::sock_filter };
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = child.output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert_ne!(out.status.signal(), Some(libc::SIGSYS), "the filter killed the child: cachestat was called under it\n{said}");
        assert!(out.status.success(), "{}\n{said}", out.status);
        assert!(said.contains("1 passed"), "the child ran no test:\n{said}");
    }

    /// Where [`under_a_filter_that_kills_cachestat_the_share_is_probed_instead`] names the file.
    const FILTERED_CHILD_FILE: &str = "VAULT_STORE_TEST_FILTERED_FILE";

    /// Run only as that test's child, under its filter.
    #[test]
    #[ignore = "run by under_a_filter_that_kills_cachestat_the_share_is_probed_instead, under a seccomp filter"]
    fn the_share_of_a_dropped_file_under_a_filter() {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        let path = std::env::var_os(FILTERED_CHILD_FILE).expect("run by under_a_filter_that_kills_cachestat_the_share_is_probed_instead");
        assert!(under_seccomp_filter(&std::fs::read_to_string("/proc/self/status").unwrap()), "not under the filter");
        let file = File::open(path).unwrap();
        let pages = (1u64 << 20).div_ceil(ALIGN as u64);
        assert_eq!(cached_pages(&file, 1 << 20), Some(CachedPages { cached: pages, of: pages }), "just written");
        file.sync_all().unwrap();
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        let dropped = cached_pages(&file, 1 << 20).unwrap();
        assert!(dropped.cached <= pages / PROBED_PAGES, "dropped: {dropped:?}");
    }

    /// A seccomp program that kills the process on `cachestat` and allows everything else, as
    /// a filter whose list of allowed calls predates `cachestat` does to it.
    fn kill_on_cachestat() -> Vec<libc::sock_filter> {
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        let statement = |code: u32, k: u32| libc::sock_filter { code: u16::try_from(code).unwrap(), jt: 0, jf: 0, k };
        let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter { code: u16::try_from(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K).unwrap(), jt, jf, k };
        // struct seccomp_data: nr at offset 0, arch at 4.
        vec![
            statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
            jump(AUDIT_ARCH_X86_64, 1, 0),
            statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
            statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
            jump(u32::try_from(SYS_CACHESTAT).unwrap(), 0, 1),
            statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
            statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ]
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251).to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Appends pieces of these sizes (flushing after those marked), finishes, and checks the
    /// file holds exactly the pieces in order. With `behind` false, as when no writer thread
    /// could be started.
    fn appends_exactly(dir: &Path, direct: bool, behind: bool, pieces: &[(usize, bool)]) -> bool {
        let path = dir.join(format!("pack-{direct}-{}", pieces.len()));
        let mut appender = Appender::create(&path, direct).unwrap();
        assert!(appender.behind.is_some(), "a test process can start a thread");
        if !behind {
            appender.behind = None;
        }
        let mut expected = Vec::new();
        for (n, &(len, flush)) in pieces.iter().enumerate() {
            let piece = pattern(len, n.to_le_bytes()[0]);
            appender.write_all(&piece).unwrap();
            expected.extend_from_slice(&piece);
            if flush {
                appender.flush().unwrap();
                // Flushed bytes are in the file (the partial block padded).
                let on_disk = std::fs::read(&path).unwrap();
                assert!(on_disk.len() >= expected.len() && on_disk.len() < expected.len() + ALIGN);
                assert_eq!(&on_disk[..expected.len()], &expected[..]);
            }
            assert_eq!(appender.len(), expected.len() as u64);
        }
        let was_direct = appender.is_direct();
        drop(appender.finish().unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        std::fs::remove_file(&path).unwrap();
        was_direct
    }

    #[test]
    fn what_is_appended_is_what_the_file_holds_whatever_the_sizes_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        // Where the filesystem has direct I/O (the appliance's data disk is ext4), it is used.
        let ext4 = nix::sys::statfs::statfs(dir.path()).unwrap().filesystem_type() == nix::sys::statfs::EXT4_SUPER_MAGIC;
        let cases: Vec<Vec<(usize, bool)>> = vec![
            vec![],
            vec![(1, false)],
            vec![(1, true), (1, true), (4095, true), (1, false)],
            vec![(ALIGN, true), (ALIGN * 3 + 17, false), (BUFFER_BYTES, true), (5, false)],
            vec![(BUFFER_BYTES - 1, false), (2, true), (BUFFER_BYTES * 2 + 4096, false), (100, true), (70_000, false)],
            vec![(300_000, true); 9],
        ];
        for (direct, behind) in [(true, true), (false, true), (true, false), (false, false)] {
            for pieces in &cases {
                let was_direct = appends_exactly(dir.path(), direct, behind, pieces);
                assert!(direct || !was_direct, "direct I/O used unasked");
                assert!(was_direct || !(direct && ext4), "direct I/O asked for on ext4, and not used");
            }
        }
    }

    /// A full buffer's write that fails in the writer thread is returned by the next call that
    /// waits for it, and from then on every call fails: a pack missing a MiB is never finished.
    #[test]
    fn a_failed_write_behind_is_reported_and_the_pack_never_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        std::fs::write(&path, b"").unwrap();
        // Opened for reading only: every write fails (EBADF).
        let mut appender = Appender::over(File::open(&path).unwrap(), false);
        assert!(appender.behind.is_some());
        // The first full buffer is handed over; the call that next needs a buffer waits for it.
        appender.write_all(&pattern(BUFFER_BYTES, 1)).unwrap();
        let failed = appender.write_all(&pattern(BUFFER_BYTES, 2)).unwrap_err();
        assert_eq!(failed.raw_os_error(), Some(libc::EBADF), "{failed}");
        let again = appender.flush().unwrap_err();
        assert!(again.to_string().contains("an earlier write of this staging pack failed"), "{again}");
        assert!(appender.write_all(&pattern(BUFFER_BYTES, 3)).is_err());
        assert!(appender.finish().is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn a_file_cannot_be_appended_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        std::fs::write(&path, b"sealed").unwrap();
        for direct in [true, false] {
            assert_eq!(Appender::create(&path, direct).err().map(|e| e.kind()), Some(io::ErrorKind::AlreadyExists));
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"sealed");
    }
}
