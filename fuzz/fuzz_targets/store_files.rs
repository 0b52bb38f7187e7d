//! Arbitrary bytes as the store's own files (a pack index against a pack length taken from the
//! first 8 bytes, an `owned` list, a damaged-chunks list, a snapshot's signal profile): refuse
//! or accept, never panic or over-allocate; what decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (len, rest) = data.split_at(data.len().min(8));
    let mut pack_len = [0u8; 8];
    pack_len[..len.len()].copy_from_slice(len);
    let _ = vault_store::fuzzing::pack_index(rest, u64::from_be_bytes(pack_len));
    if let Ok((_, again)) = vault_store::fuzzing::owned_list(data) {
        assert_eq!(again, data);
    }
    if let Ok((_, again)) = vault_store::fuzzing::damaged_list(data) {
        assert_eq!(again, data);
    }
    if let Ok(profile) = vault_core::push::signals::Profile::from_bytes(data) {
        assert_eq!(profile.to_bytes(), data);
    }
});
