//! The one thing the vault reads from a GPT itself: the type of the partition the kernel
//! numbered N on a disk (UEFI spec 2.10, section 5.3). The kernel exposes a partition's name and
//! number in sysfs but not its type, so the appliance reads the disk's primary header (LBA 1) and
//! that one entry, and the data partition must carry [`VAULT_DATA_TYPE`], the project's own
//! partition type GUID, as well as its name. A disk that any other tool made for another purpose
//! (or a stick an attacker formatted with a `vault-data` name) has another type.
//!
//! Bytes from a disk are input like any other: every offset and length is checked before use,
//! and sizes are bounded before anything is read beyond the header.

use crate::error::{Error, Result};

/// The data partition's type GUID (`5661756c-7444-4174-a000-000000000001`: "VaultDAta" in its
/// leading bytes), written by buildroot-overlay/board/vault/uki-disk.bash.
pub const VAULT_DATA_TYPE: Guid = Guid::from_text_form(0x5661_756c, 0x7444, 0x4174, [0xa0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);

/// An export medium's partition type GUID (`5661756c-7444-4174-a000-000000000002`), written
/// by `vaultctl media init`: the vault writes exports only to a partition of this type.
pub const VAULT_EXPORT_TYPE: Guid = Guid::from_text_form(0x5661_756c, 0x7444, 0x4174, [0xa0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02]);

/// The GPT header's signature, "EFI PART".
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Bytes of the header the reader needs (the header itself is 92 bytes).
pub const HEADER_LEN: usize = 92;
/// The largest partition entry the reader accepts (the spec allows any multiple of 128; every
/// tool writes 128).
pub const MAX_ENTRY_SIZE: u32 = 4096;
/// The most entries a table may claim (128 is what every tool writes).
pub const MAX_ENTRIES: u32 = 16_384;

/// A GUID as 16 bytes in the on-disk order (the first three fields little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid([u8; 16]);

impl Guid {
    /// From the text form's fields, `aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee`, as `(a, b, c, [d.., e..])`.
    pub const fn from_text_form(a: u32, b: u16, c: u16, rest: [u8; 8]) -> Guid {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], rest[0], rest[1], rest[2], rest[3], rest[4], rest[5], rest[6], rest[7]])
    }

    /// The 16 bytes in the on-disk order.
    pub fn disk_bytes(&self) -> [u8; 16] {
        self.0
    }

    pub fn from_disk_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }
}

/// Where partition entry `number` (1-based, as the kernel counts) lies on the disk, from the
/// primary header's bytes (LBA 1): the byte offset and the entry's size.
pub fn entry_location(header: &[u8], number: u32, logical_block_size: u32) -> Result<(u64, u32)> {
    let malformed = |reason: String| Error::Malformed { what: "GPT header", reason };
    if header.len() < HEADER_LEN {
        return Err(malformed(format!("{} bytes, a header has {HEADER_LEN}", header.len())));
    }
    if &header[..8] != SIGNATURE {
        return Err(malformed("no \"EFI PART\" signature at LBA 1".into()));
    }
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let entries_lba = u64::from_le_bytes(header[72..80].try_into().expect("8 bytes"));
    let (count, size) = (u32_at(80), u32_at(84));
    if !(128..=MAX_ENTRY_SIZE).contains(&size) || size % 128 != 0 {
        return Err(malformed(format!("partition entry size {size}: must be a multiple of 128 up to {MAX_ENTRY_SIZE}")));
    }
    if count > MAX_ENTRIES {
        return Err(malformed(format!("{count} partition entries, at most {MAX_ENTRIES}")));
    }
    if number == 0 || number > count {
        return Err(malformed(format!("partition {number} is not among the table's {count} entries")));
    }
    if !(512..=65_536).contains(&logical_block_size) {
        return Err(malformed(format!("logical block size {logical_block_size}")));
    }
    let offset = entries_lba
        .checked_mul(u64::from(logical_block_size))
        .and_then(|start| start.checked_add(u64::from(number - 1) * u64::from(size)))
        .ok_or_else(|| malformed(format!("partition entries at LBA {entries_lba} lie beyond any disk")))?;
    Ok((offset, size))
}

/// The type GUID of one partition entry's bytes; all zeros means an unused entry.
pub fn entry_type(entry: &[u8]) -> Result<Guid> {
    let type_bytes: [u8; 16] =
        entry.get(..16).and_then(|b| b.try_into().ok()).ok_or_else(|| Error::Malformed { what: "GPT partition entry", reason: format!("{} bytes, an entry has at least 128", entry.len()) })?;
    Ok(Guid(type_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(entries_lba: u64, count: u32, size: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..8].copy_from_slice(SIGNATURE);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&size.to_le_bytes());
        h
    }

    #[test]
    fn the_vault_data_type_reads_as_its_text_form() {
        assert_eq!(VAULT_DATA_TYPE.to_string(), "5661756c-7444-4174-a000-000000000001");
        // On disk the first three fields are little-endian, as sfdisk writes them.
        assert_eq!(VAULT_DATA_TYPE.0[..4], [0x6c, 0x75, 0x61, 0x56]);
    }

    #[test]
    fn entry_two_of_a_standard_table_is_where_every_tool_puts_it() {
        assert_eq!(entry_location(&header(2, 128, 128), 2, 512).unwrap(), (1024 + 128, 128));
        assert_eq!(entry_location(&header(2, 128, 128), 1, 4096).unwrap(), (8192, 128));
    }

    #[test]
    fn headers_that_are_not_gpt_or_claim_too_much_are_refused_by_name() {
        let err = |h: &[u8], n: u32| entry_location(h, n, 512).unwrap_err().to_string();
        assert!(err(&[0; 40], 1).contains("40 bytes"));
        assert!(err(&[0; HEADER_LEN], 1).contains("signature"));
        assert!(err(&header(2, 128, 100), 1).contains("entry size 100"));
        assert!(err(&header(2, 128, 1 << 20), 1).contains("entry size"));
        assert!(err(&header(2, 1 << 20, 128), 1).contains("1048576 partition entries"));
        assert!(err(&header(2, 4, 128), 5).contains("partition 5 is not among the table's 4 entries"));
        assert!(err(&header(2, 4, 128), 0).contains("partition 0"));
        assert!(err(&header(u64::MAX, 4, 128), 2).contains("beyond any disk"));
    }

    #[test]
    fn an_entry_shorter_than_a_type_is_refused() {
        assert!(entry_type(&[0; 15]).is_err());
        let mut entry = vec![0u8; 128];
        entry[..16].copy_from_slice(&VAULT_DATA_TYPE.0);
        assert_eq!(entry_type(&entry).unwrap(), VAULT_DATA_TYPE);
    }

    proptest! {
        #[test]
        fn any_header_bytes_give_an_answer_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), number in any::<u32>(), block in any::<u32>()) {
            let _ = entry_location(&bytes, number, block);
            let _ = entry_type(&bytes);
        }
    }
}
