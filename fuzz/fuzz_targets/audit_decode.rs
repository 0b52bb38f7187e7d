//! Arbitrary bytes as what the audit log reads back or a pusher is handed: a signed note, a
//! checkpoint, an entry bundle, and the hashes of a consistency proof. Each must be refused or
//! accepted, never panic or allocate without bound; what parses must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::audit::checkpoint::Checkpoint;
use vault_core::audit::merkle;
use vault_core::audit::note::Note;
use vault_core::audit::tiles;

fuzz_target!(|data: &[u8]| {
    if let Ok(note) = Note::parse(data) {
        let _ = Checkpoint::from_text(&note.text);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(checkpoint) = Checkpoint::from_text(text) {
            assert_eq!(checkpoint.to_text(), text);
        }
    }
    let width = u64::from(data.first().copied().unwrap_or(0)) + 1;
    if let Ok(entries) = tiles::decode_bundle(data, width) {
        assert_eq!(tiles::encode_bundle(&entries).unwrap(), data);
    }
    // The bytes as a proof between two sizes named by the first 16 bytes.
    if data.len() >= 16 {
        let old = u64::from_be_bytes(data[..8].try_into().unwrap());
        let new = u64::from_be_bytes(data[8..16].try_into().unwrap());
        let proof: Vec<merkle::Hash> = data[16..].chunks_exact(32).map(|c| c.try_into().unwrap()).collect();
        let _ = merkle::verify_consistency(old, &[0; 32], new, &[1; 32], &proof);
        let _ = merkle::verify_inclusion(old, new, &[0; 32], &[1; 32], &proof);
    }
});
