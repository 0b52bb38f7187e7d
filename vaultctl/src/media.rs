//! `vaultctl media init`: prepares a removable disk (or an image of one) for exports: a GPT with
//! one partition of the vault's export type (`vault_core::gpt::VAULT_EXPORT_TYPE`, named
//! `vault-export`), one FAT32 filesystem on it (readable anywhere a restore may happen), and at
//! its top `vault-medium.json`: a fresh medium id and the name people call it. Export orders name
//! the medium by that id; the vault adds its seal the first time it writes there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use vault_core::export::medium::{MediumLabel, LABEL_FILE};

use crate::error::{CliError, Result};

const MIB: u64 = 1024 * 1024;
/// The partition starts 1 MiB in and ends 1 MiB before the end (room for the backup GPT).
const PARTITION_START: u64 = MIB;
/// Smallest medium: FAT32 needs about 33 MiB; this leaves room for a small export.
pub const MIN_MEDIUM_BYTES: u64 = 64 * MIB;
pub const PARTITION_NAME: &str = "vault-export";

/// What was made.
#[derive(Debug)]
pub struct Initialised {
    pub label: MediumLabel,
    pub bytes: u64,
}

/// Makes `out` a medium called `name`. `out` is a new image file of `size` bytes, or a block
/// device, which is erased only with `erase` (everything on it is lost).
pub fn init(out: &Path, name: &str, size: Option<u64>, erase: bool) -> Result<Initialised> {
    let medium_id = random_medium_id()?;
    let label = MediumLabel::new(&medium_id, name)?;
    let io = |what: &'static str| move |e: std::io::Error| CliError::Failed(format!("{}: {what}: {e}", out.display()));
    let is_device = std::fs::metadata(out).map(|m| m.file_type().is_block_device()).unwrap_or(false);
    let mut file = if is_device {
        if !erase {
            return Err(CliError::Usage(format!("{} is a disk: everything on it will be erased; run again with --erase if that is what you want", out.display())));
        }
        OpenOptions::new().read(true).write(true).open(out).map_err(io("open the disk"))?
    } else {
        let size = size.unwrap_or(1024 * MIB);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(out).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CliError::Failed(format!("{} exists; media init writes a new image (or a disk, with --erase)", out.display())),
            _ => io("create the image")(e),
        })?;
        file.set_len(size).map_err(io("size the image"))?;
        file
    };
    let bytes = file.seek(SeekFrom::End(0)).map_err(io("size"))?;
    if bytes < MIN_MEDIUM_BYTES {
        return Err(CliError::Failed(format!("{}: {bytes} bytes; a medium needs at least {MIN_MEDIUM_BYTES}", out.display())));
    }
    let partition_len = write_gpt(&mut file, bytes).map_err(|e| CliError::Failed(format!("{}: writing the partition table: {e}", out.display())))?;
    {
        let mut partition = Partition { file: &mut file, start: PARTITION_START, len: partition_len, pos: 0 };
        let volume_id = u32::from_str_radix(&medium_id[..8], 16).expect("a medium id is hex");
        let options = fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32).volume_id(volume_id).volume_label(*b"VAULTEXPORT");
        fatfs::format_volume(&mut partition, options).map_err(io("format FAT32"))?;
        let fs = fatfs::FileSystem::new(&mut partition, fatfs::FsOptions::new()).map_err(io("open FAT32"))?;
        let mut label_file = fs.root_dir().create_file(LABEL_FILE).map_err(io("create the label"))?;
        label_file.write_all(&label.to_bytes()).and_then(|()| label_file.flush()).map_err(io("write the label"))?;
        drop(label_file);
        fs.unmount().map_err(io("close FAT32"))?;
    }
    file.sync_all().map_err(io("sync"))?;
    Ok(Initialised { label, bytes })
}

fn random_medium_id() -> Result<String> {
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).map_err(|_| CliError::Failed("no randomness for a medium id".into()))?;
    Ok(vault_core::keys::hex(&id))
}

/// A protective MBR and a GPT (both copies) with the one export partition; its length.
fn write_gpt(file: &mut File, bytes: u64) -> std::result::Result<u64, Box<dyn std::error::Error>> {
    let sectors = bytes / 512;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(file)?;
    let mut disk = gpt::GptConfig::new().writable(true).logical_block_size(gpt::disk::LogicalBlockSize::Lb512).create_from_device(&mut *file, None)?;
    disk.update_partitions(std::collections::BTreeMap::new())?;
    let partition_len = (bytes - 2 * PARTITION_START) / MIB * MIB;
    let export_type = gpt::partition_types::Type { guid: uuid_of(vault_core::gpt::VAULT_EXPORT_TYPE), os: gpt::partition_types::OperatingSystem::Custom("airgap-vault".into()) };
    let id = disk.add_partition_at(PARTITION_NAME, 1, PARTITION_START / 512, partition_len / 512, export_type, 0)?;
    debug_assert_eq!(id, 1);
    disk.write()?;
    Ok(partition_len)
}

fn uuid_of(guid: vault_core::gpt::Guid) -> uuid::Uuid {
    uuid::Uuid::from_bytes_le(guid.disk_bytes())
}

/// The partition's byte range of the disk, as a file of its own (what the FAT formatter sees).
struct Partition<'a> {
    file: &'a mut File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Partition<'_> {
    /// How much of `want` fits before the partition's end.
    fn room(&self, want: usize) -> usize {
        usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX).min(want)
    }
}

impl Read for Partition<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.room(buf.len());
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.file.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Partition<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "past the partition's end"));
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.file.write(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Partition<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.filter(|t| *t <= self.len).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek outside the partition"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_medium_has_one_export_partition_with_fat32_and_its_label() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("medium.img");
        let made = init(&image, "weekly-a", Some(80 * MIB), false).unwrap();
        assert_eq!(made.bytes, 80 * MIB);
        let disk = gpt::GptConfig::new().writable(false).open(&image).unwrap();
        let parts: Vec<_> = disk.partitions().values().collect();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name, PARTITION_NAME);
        assert_eq!(parts[0].part_type_guid.guid, uuid_of(vault_core::gpt::VAULT_EXPORT_TYPE));
        assert_eq!(parts[0].first_lba, PARTITION_START / 512);
        // The label reads back through FAT, and the vault's own GPT reader names the type.
        let mut file = OpenOptions::new().read(true).write(true).open(&image).unwrap();
        let len = (parts[0].last_lba - parts[0].first_lba + 1) * 512;
        let mut partition = Partition { file: &mut file, start: PARTITION_START, len, pos: 0 };
        let fs = fatfs::FileSystem::new(&mut partition, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        let mut bytes = Vec::new();
        fs.root_dir().open_file(LABEL_FILE).unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(MediumLabel::from_bytes(&bytes).unwrap(), made.label);
        drop(fs);
        let raw = std::fs::read(&image).unwrap();
        let header: [u8; vault_core::gpt::HEADER_LEN] = raw[512..512 + vault_core::gpt::HEADER_LEN].try_into().unwrap();
        let (offset, entry_size) = vault_core::gpt::entry_location(&header, 1, 512).unwrap();
        let offset = usize::try_from(offset).unwrap();
        assert_eq!(vault_core::gpt::entry_type(&raw[offset..offset + entry_size as usize]).unwrap(), vault_core::gpt::VAULT_EXPORT_TYPE);

        // Never over an existing image; too small is refused by size.
        assert!(init(&image, "weekly-a", Some(80 * MIB), false).unwrap_err().to_string().contains("exists"));
        let err = init(&dir.path().join("tiny.img"), "weekly-b", Some(8 * MIB), false).unwrap_err().to_string();
        assert!(err.contains("a medium needs at least"), "{err}");
        assert!(init(&dir.path().join("bad.img"), "../x", Some(80 * MIB), false).is_err());
    }

    #[test]
    fn a_disk_is_erased_only_when_asked() {
        if !test_net::is_root() {
            eprintln!("skipped: needs root for a loop device");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, vec![0xa5u8; 70 << 20]).unwrap();
        let out = std::process::Command::new("losetup").args(["-f", "--show"]).arg(&image).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        let device = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let refused = init(&device, "weekly-b", None, false).map(|_| ());
        let untouched = std::fs::read(&image).unwrap().iter().all(|b| *b == 0xa5);
        let made = init(&device, "weekly-b", None, true);
        let _ = std::process::Command::new("losetup").arg("-d").arg(&device).status();
        let refused = refused.unwrap_err().to_string();
        assert!(refused.contains("is a disk: everything on it will be erased; run again with --erase"), "{refused}");
        assert!(untouched, "nothing is written to a disk without --erase");
        assert_eq!(made.unwrap().bytes, 70 << 20, "a disk keeps its own size");
        let disk = gpt::GptConfig::new().writable(false).open(&image).unwrap();
        assert_eq!(disk.partitions().values().next().unwrap().name, PARTITION_NAME);
    }
}
