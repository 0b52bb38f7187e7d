//! `vaultctl usb write`: a FAT image holding `vault-policy.bundle` and any orders in
//! `vault-orders/`, to attach to the vault (QEMU's usb-storage) or `dd` onto a real stick. No partition table (a "superfloppy"):
//! the vault reads the whole device. The image is the same bytes for the same bundle (fixed
//! volume id, 1980 timestamps), so a stick can be checked against its SHA-256.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use vault_core::policy::bundle::{Envelope, MAX_BUNDLE_BYTES};

use crate::error::{CliError, Result};

/// The file the vault looks for at the top level of a stick.
pub const BUNDLE_FILE: &str = "vault-policy.bundle";
const MIB: u64 = 1024 * 1024;
/// Small enough to write in a blink, big enough for FAT16 and for the test harness's
/// deliberately oversized files.
const MIN_IMAGE: u64 = 8 * MIB;

/// What is going onto the stick.
pub enum Contents<'a> {
    /// A bundle, checked for size and shape first.
    Bundle(&'a [u8]),
    /// Anything at all, for testing the vault's refusals (huge, garbage, tampered).
    Unchecked(&'a [u8]),
}

/// Where orders go on the stick, each as `<name>.order`.
pub const ORDERS_DIR: &str = "vault-orders";

/// Writes the image to `out` (which must not exist): the bundle, and orders beside it (or
/// instead of it), each `(name, bytes)` checked as an order envelope and written as
/// `vault-orders/<name>.order`. Returns its size in bytes.
pub fn write_stick(contents: Option<Contents<'_>>, orders: &[(String, Vec<u8>)], out: &Path) -> Result<u64> {
    for (name, bytes) in orders {
        if bytes.len() > MAX_BUNDLE_BYTES || name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(CliError::Failed(format!("order `{name}`: a name of letters, digits, - and _, and at most {MAX_BUNDLE_BYTES} bytes")));
        }
        Envelope::from_bytes_of(bytes, vault_core::policy::orders::ORDER_PAYLOAD_TYPE)?;
    }
    let Some(contents) = contents else {
        return write_fat(None, orders, out);
    };
    let bytes = match contents {
        Contents::Bundle(bytes) => {
            if bytes.len() > MAX_BUNDLE_BYTES {
                return Err(CliError::Failed(format!("bundle is {} bytes; the vault reads at most {MAX_BUNDLE_BYTES}", bytes.len())));
            }
            Envelope::from_bytes(bytes)?;
            bytes
        }
        Contents::Unchecked(bytes) => bytes,
    };
    write_fat(Some(bytes), orders, out)
}

fn write_fat(bundle_bytes: Option<&[u8]>, orders: &[(String, Vec<u8>)], out: &Path) -> Result<u64> {
    let total = bundle_bytes.map_or(0, <[u8]>::len) + orders.iter().map(|(_, b)| b.len()).sum::<usize>();
    let size = (total as u64 + 4 * MIB).div_ceil(MIB).max(MIN_IMAGE / MIB) * MIB;
    let fat_err = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| CliError::Failed(format!("{}: {what}: {e}", out.display()))
    };
    let mut file = OpenOptions::new().read(true).write(true).create_new(true).open(out).map_err(fat_err("create"))?;
    file.set_len(size).map_err(fat_err("size"))?;
    let options = fatfs::FormatVolumeOptions::new().volume_id(0x5661_756c).volume_label(*b"VAULTPOLICY");
    fatfs::format_volume(&mut file, options).map_err(fat_err("format FAT"))?;
    {
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).map_err(fat_err("open FAT"))?;
        if let Some(bytes) = bundle_bytes {
            let mut bundle = fs.root_dir().create_file(BUNDLE_FILE).map_err(fat_err("create the bundle file"))?;
            bundle.write_all(bytes).map_err(fat_err("write the bundle"))?;
            bundle.flush().map_err(fat_err("write the bundle"))?;
        }
        if !orders.is_empty() {
            let dir = fs.root_dir().create_dir(ORDERS_DIR).map_err(fat_err("create the orders directory"))?;
            for (name, bytes) in orders {
                let mut file = dir.create_file(&format!("{name}.order")).map_err(fat_err("create an order file"))?;
                file.write_all(bytes).map_err(fat_err("write an order"))?;
                file.flush().map_err(fat_err("write an order"))?;
            }
        }
        fs.unmount().map_err(fat_err("close FAT"))?;
    }
    file.sync_all().map_err(fat_err("sync"))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_back(image: &Path) -> Vec<u8> {
        let file = std::fs::File::open(image).unwrap();
        let fs = fatfs::FileSystem::new(file, fatfs::FsOptions::new()).unwrap();
        let mut bytes = Vec::new();
        fs.root_dir().open_file(BUNDLE_FILE).unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_image_holds_exactly_the_bytes_and_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        write_stick(Some(Contents::Unchecked(&payload)), &[], &a).unwrap();
        write_stick(Some(Contents::Unchecked(&payload)), &[], &b).unwrap();
        assert_eq!(read_back(&a), payload);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same bundle, same image");
    }

    #[test]
    fn refuses_what_is_not_a_bundle_and_what_is_too_big() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_stick(Some(Contents::Bundle(b"not json")), &[], &dir.path().join("x.img")).unwrap_err();
        assert!(matches!(err, CliError::Core(_)), "{err}");
        let huge = vec![b' '; MAX_BUNDLE_BYTES + 1];
        let err = write_stick(Some(Contents::Bundle(&huge)), &[], &dir.path().join("y.img")).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        assert!(!dir.path().join("x.img").exists() && !dir.path().join("y.img").exists(), "nothing written on refusal");
    }

    #[test]
    fn never_overwrites_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stick.img");
        std::fs::write(&out, b"precious").unwrap();
        assert!(write_stick(Some(Contents::Unchecked(b"x")), &[], &out).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    }
}
