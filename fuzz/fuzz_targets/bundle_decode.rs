//! Arbitrary bytes as a bundle on the stick: decoding and verification must refuse or
//! accept, never panic, hang or allocate without bound. Also decodes the bytes as a bare
//! payload, so the strict payload parser is reached without valid signatures.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vault_core::policy::bundle::{self, Payload};
use vault_core::policy::root::TrustRoot;
use vault_core::policy::state::VaultState;
use vault_core::units::Timestamp;

const ROOT: &str = r#"
vault_id = "vault-01"
version = 1
threshold = 1
[[admin]]
name = "alice"
key = "ed25519:8mOd0vtyWZ6aK8/QRHYzDCH2HyUxby+AYnD1A/k3xWY="
[caps]
max_window = "4h"
max_open_per_day = "8h"
max_validity = "90d"
max_grace = "15m"
"#;

fn root() -> &'static TrustRoot {
    static ROOT_CELL: OnceLock<TrustRoot> = OnceLock::new();
    ROOT_CELL.get_or_init(|| TrustRoot::from_toml(ROOT).expect("fuzz root parses"))
}

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::from_unix(1_790_000_000).unwrap();
    // Both ways a vault judges a stick: with its clock, and with a clock fault latched.
    let _ = bundle::verify(data, root(), &VaultState::default(), bundle::JudgedAt::trusted(now));
    let _ = bundle::verify(data, root(), &VaultState::default(), bundle::JudgedAt { now, clock_trusted: false });
    if let Ok(payload) = Payload::from_bytes(data) {
        // Whatever decodes must re-encode to exactly the same bytes (canonical form).
        assert_eq!(payload.canonical_bytes(), data);
    }
    let _ = VaultState::from_bytes(data);
});
