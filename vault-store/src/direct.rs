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

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The alignment direct I/O gets: a page, which is also every common disk's logical block.
pub const ALIGN: usize = 4096;
/// The buffer's size: one write per MiB.
pub const BUFFER_BYTES: usize = 1024 * 1024;
const _: () = assert!(BUFFER_BYTES % ALIGN == 0);
/// Through the page cache, writeback is started for each this many bytes as they arrive, so
/// the fsync at sealing finds little left to write instead of the whole push.
const WRITEBACK_EVERY: u64 = 32 * 1024 * 1024;

/// Appends to a new file, directly to the device where the filesystem allows.
pub(crate) struct Appender {
    file: File,
    direct: bool,
    /// `BUFFER_BYTES` aligned bytes at `buf[start..]`, allocated once (never resized, so the
    /// alignment holds).
    buf: Vec<u8>,
    start: usize,
    /// Bytes in the buffer, not all of them written yet.
    filled: usize,
    /// Where the buffer's first byte goes in the file: always a multiple of [`ALIGN`].
    at: u64,
    /// Through the page cache: bytes up to here are handed to writeback.
    written_back: u64,
}

impl Appender {
    /// Creates `path` (it must not exist) for appending, directly if `direct` and the
    /// filesystem allows it.
    pub fn create(path: &Path, direct: bool) -> io::Result<Appender> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        let mut appender = Appender { file, direct: false, buf: vec![0u8; BUFFER_BYTES + ALIGN], start: 0, filled: 0, at: 0, written_back: 0 };
        appender.start = appender.buf.as_ptr().align_offset(ALIGN);
        // Set after the file is made (an open with O_DIRECT on a filesystem without it can
        // fail after creating the file): a filesystem without direct I/O refuses the flag.
        if direct {
            appender.direct = appender.set_direct(true).is_ok();
        }
        Ok(appender)
    }

    /// Whether the bytes go around the page cache.
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.at + self.filled as u64
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let take = data.len().min(BUFFER_BYTES - self.filled);
            let from = self.start + self.filled;
            self.buf[from..from + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == BUFFER_BYTES {
                self.write_buffer(BUFFER_BYTES)?;
                self.at += BUFFER_BYTES as u64;
                self.filled = 0;
                self.start_writeback();
            }
        }
        Ok(())
    }

    /// Puts every byte appended so far into the file (the last partial block padded with
    /// zeros, which the next write or [`Appender::finish`] replaces), so the filesystem counts
    /// them.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let padded = self.filled.next_multiple_of(ALIGN);
        self.buf[self.start + self.filled..self.start + padded].fill(0);
        self.write_buffer(padded)?;
        // Whole blocks are done with; the partial one moves to the front, to be written again.
        let whole = self.filled - self.filled % ALIGN;
        self.buf.copy_within(self.start + whole..self.start + self.filled, self.start);
        self.at += whole as u64;
        self.filled -= whole;
        Ok(())
    }

    /// Flushes, cuts the file to exactly the bytes appended, and hands it back (not yet
    /// fsynced: the caller makes it durable).
    pub fn finish(mut self) -> io::Result<File> {
        self.flush()?;
        self.file.set_len(self.len())?;
        Ok(self.file)
    }

    /// Writes the buffer's first `len` bytes (a multiple of [`ALIGN`], or the whole buffer) at
    /// `at`. A direct write the device refuses for its alignment is made again through the
    /// page cache, for this file from then on.
    fn write_buffer(&mut self, len: usize) -> io::Result<()> {
        let bytes = &self.buf[self.start..self.start + len];
        match self.file.write_all_at(bytes, self.at) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.set_direct(false)?;
                self.direct = false;
                self.file.write_all_at(bytes, self.at)
            }
            result => result,
        }
    }

    fn set_direct(&self, on: bool) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(&self.file, FcntlArg::F_GETFL).map_err(io::Error::from)?);
        let flags = if on { flags | OFlag::O_DIRECT } else { flags - OFlag::O_DIRECT };
        fcntl(&self.file, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        Ok(())
    }

    /// Through the page cache, asks the kernel to start writing what arrived since the last
    /// time, every [`WRITEBACK_EVERY`] bytes. Only a hint for speed: durability comes from the
    /// fsync at sealing, so a failure is ignored.
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        if self.direct || self.at - self.written_back < WRITEBACK_EVERY {
            return;
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(self.written_back), i64::try_from(self.at - self.written_back)) else { return };
        // SAFETY: the descriptor is valid for the call (borrowed from a live File), and
        // sync_file_range with SYNC_FILE_RANGE_WRITE only schedules I/O on that file's pages;
        // it touches no memory of ours.
        let _ = unsafe { libc::sync_file_range(self.file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        self.written_back = self.at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251).to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Appends pieces of these sizes (flushing after those marked), finishes, and checks the
    /// file holds exactly the pieces in order.
    fn appends_exactly(dir: &Path, direct: bool, pieces: &[(usize, bool)]) -> bool {
        let path = dir.join(format!("pack-{direct}-{}", pieces.len()));
        let mut appender = Appender::create(&path, direct).unwrap();
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
        for direct in [true, false] {
            for pieces in &cases {
                let was_direct = appends_exactly(dir.path(), direct, pieces);
                assert!(direct || !was_direct, "direct I/O used unasked");
                assert!(was_direct || !(direct && ext4), "direct I/O asked for on ext4, and not used");
            }
        }
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
