//! Host I/O shared by the daemon and the CLI: the clock, and file operations. Two rules live here so they are
//! written once: never read more than a known bound, and make a write durable before it
//! becomes visible (temp file, fsync, rename, fsync of the directory).
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vault_core::push::protocol::{Filled, FrameReader};
use vault_core::units::Timestamp;

/// The host's clock as a vault timestamp (the core never reads a clock; callers pass this in).
/// A clock before 1970 reads as the epoch, which every time floor is above.
pub fn clock_now() -> Timestamp {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Timestamp::from_unix(secs).unwrap_or(Timestamp::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {size} bytes is over the limit of {limit} for this file")]
    TooLarge { path: PathBuf, size: u64, limit: usize },
    #[error("{path}: not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path}: already exists; refusing to overwrite")]
    Exists { path: PathBuf },
    /// A write given a directory (or a name ending in `/`) where a file name is wanted.
    #[error("{path}: is a directory, not a file name; give the name of the file to write, e.g. {example}")]
    IsDirectory { path: PathBuf, example: PathBuf },
    /// The temp file beside the destination could not be made: named as the file asked for.
    #[error("{path}: cannot write it: {source} (it is written to a temporary file in {dir} first and renamed; that directory must exist and be writable)")]
    CannotCreate { path: PathBuf, dir: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IoError + '_ {
    move |source| IoError::Io { path: path.to_path_buf(), source }
}

/// Reads a regular file of at most `limit` bytes, once. Symlinks are not followed, device
/// files and FIFOs are refused, and a file that grows while it is read is cut off and
/// refused rather than read without end.
pub fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, IoError> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.file_type().is_file() {
        return Err(IoError::NotRegular { path: path.to_path_buf() });
    }
    if meta.len() > limit as u64 {
        return Err(IoError::TooLarge { path: path.to_path_buf(), size: meta.len(), limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).expect("at most `limit`, a usize (checked above)"));
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(io_err(path))?;
    if bytes.len() > limit {
        return Err(IoError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64, limit });
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` so that after a crash the path holds either the old content or
/// the new, never a mix: temp file in the same directory, fsync, rename, fsync directory.
/// Errors name `path`, never the temp file, and no failure leaves the temp file behind.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IoError> {
    check_file_name(path)?;
    replace(path, bytes, mode)
}

/// [`write_atomic`] once `path` is known to name a file.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IoError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| IoError::NotRegular { path: path.to_path_buf() })?;
    let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(&tmp).map_err(|source| IoError::CannotCreate {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    })?;
    let written = (|| {
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(IoError::Io { path: path.to_path_buf(), source });
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Like [`write_atomic`] but refuses to replace an existing file (keys are never overwritten).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IoError> {
    check_file_name(path)?;
    if fs::symlink_metadata(path).is_ok() {
        return Err(IoError::Exists { path: path.to_path_buf() });
    }
    write_atomic(path, bytes, mode)
}

/// A path to write must name a file: not a directory that exists, nor a name ending in `/`
/// (which `Path::file_name` would quietly read as the directory's own name).
fn check_file_name(path: &Path) -> Result<(), IoError> {
    if path.as_os_str().as_bytes().ends_with(b"/") || fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(IoError::IsDirectory { path: path.to_path_buf(), example: path.components().as_path().join("NAME") });
    }
    Ok(())
}

/// Reads the next frame off a blocking stream through the protocol's one reader
/// ([`FrameReader`]: the prefix is checked before room is made for the body) and decodes it.
/// `Ok(None)`: the peer closed between frames. A close inside a frame is `UnexpectedEof`; a
/// prefix or body the protocol refuses is `InvalidData` carrying the protocol's reason.
pub fn read_frame<T>(source: &mut impl Read, reader: &mut FrameReader, decode: impl Fn(&[u8]) -> vault_core::error::Result<T>) -> io::Result<Option<T>> {
    loop {
        let n = match source.read(reader.unfilled()) {
            Ok(0) if reader.at_frame_boundary() => return Ok(None),
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-frame")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match reader.filled(n).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
            Filled::Frame { body, .. } => return decode(body).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Filled::More | Filled::BodyNext { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_read_refuses_big_files_links_and_devices() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        fs::write(&small, b"hello").unwrap();
        assert_eq!(read_bounded(&small, 5).unwrap(), b"hello");
        assert!(matches!(read_bounded(&small, 4), Err(IoError::TooLarge { size: 5, limit: 4, .. })));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&small, &link).unwrap();
        assert!(matches!(read_bounded(&link, 100), Err(IoError::Io { .. })), "symlinks are not followed");
        assert!(matches!(read_bounded(Path::new("/dev/zero"), 100), Err(IoError::NotRegular { .. })));
        assert!(matches!(read_bounded(dir.path(), 100), Err(IoError::NotRegular { .. })));
    }

    #[test]
    fn atomic_write_replaces_and_write_new_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(write_new(&path, b"three", 0o600), Err(IoError::Exists { .. })));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
    }

    #[test]
    fn a_failed_write_names_the_destination_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory, or a name ending in `/`, is refused before anything is written.
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let err = write_atomic(&sub, b"x", 0o644).unwrap_err();
        assert!(matches!(err, IoError::IsDirectory { .. }) && err.to_string().ends_with(&format!("e.g. {}", sub.join("NAME").display())), "{err}");
        let slash = PathBuf::from(format!("{}/new/", dir.path().display()));
        assert!(matches!(write_new(&slash, b"x", 0o644), Err(IoError::IsDirectory { .. })));
        // No directory to put the temp file in: said of the file asked for.
        let missing = dir.path().join("missing/x");
        let text = write_atomic(&missing, b"x", 0o644).unwrap_err().to_string();
        assert!(text.starts_with(&format!("{}: cannot write it: ", missing.display())) && !text.contains(".x.tmp"), "{text}");
        assert!(text.contains("must exist and be writable"), "{text}");
        // A rename that fails (a non-empty directory in the way, as if made after the check)
        // takes its temp file with it.
        let in_the_way = sub.join("f");
        fs::create_dir(&in_the_way).unwrap();
        fs::write(in_the_way.join("inside"), b"x").unwrap();
        let text = replace(&in_the_way, b"x", 0o644).unwrap_err().to_string();
        assert!(text.starts_with(&in_the_way.display().to_string()) && !text.contains(".f.tmp"), "{text}");
        let names: Vec<_> = fs::read_dir(&sub).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")], "no temp file left behind");
    }
}
