//! Arbitrary bytes as a manifest: refuse or decode, never panic or over-allocate; what
//! decodes is valid and re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::push::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::decode(data) {
        manifest.validate().expect("decode validates");
        assert_eq!(manifest.encode().unwrap(), data);
    }
});
