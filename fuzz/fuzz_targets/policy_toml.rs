//! Arbitrary text as policy.toml: refuse or accept, never panic; what is accepted
//! survives its canonical form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::from_toml(text) {
        assert_eq!(Policy::from_doc(&policy.to_doc()).expect("canonical form parses"), policy);
    }
});
