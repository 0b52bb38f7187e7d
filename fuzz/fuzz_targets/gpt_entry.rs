//! Arbitrary bytes as a disk's GPT header and partition entry (what the appliance reads before
//! it mounts its data partition): an answer or a refusal, never a panic, and a location that
//! only ever lies where the header says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::gpt::{entry_location, entry_type, MAX_ENTRY_SIZE};

fuzz_target!(|data: &[u8]| {
    let Some((selector, header)) = data.split_first_chunk::<8>() else { return };
    let number = u32::from_le_bytes(selector[..4].try_into().unwrap());
    let block = u32::from_le_bytes(selector[4..].try_into().unwrap());
    if let Ok((_, size)) = entry_location(header, number, block) {
        assert!((128..=MAX_ENTRY_SIZE).contains(&size));
    }
    let _ = entry_type(header);
});
