//! Arbitrary bytes as what a removable medium brings back: its label, the vault's seal beside
//! it, an export's signed manifest (under a fixed key: the signature check comes first, so the
//! manifest's own checks are reached through a manifest signed here), and an `age` recipient.
//! Refuse or accept, never panic or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::export::manifest::{ExportManifest, MAX_MANIFEST_BYTES};
use vault_core::export::medium::{adoption, MediumLabel};
use vault_core::keys::{SignedDoc, SigningKey};

/// PKCS#8 v1 of an Ed25519 key with a fixed seed (the fuzz target's own vault key).
fn key() -> SigningKey {
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&[7u8; 32]);
    SigningKey::from_pkcs8(&der).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    if let Ok(label) = MediumLabel::from_bytes(data) {
        assert_eq!(MediumLabel::from_bytes(&label.to_bytes()).unwrap(), label);
        let _ = adoption(&label, Some(data), "vault-01", &key.public_key());
    }
    if let Ok(signed) = SignedDoc::from_file_bytes(data, MAX_MANIFEST_BYTES, "export manifest") {
        let _ = ExportManifest::verify(&signed, &key.public_key());
    }
    // The body as a manifest the vault signed: every field check runs on it.
    if let Ok(manifest) = serde_json::from_slice::<ExportManifest>(data) {
        let _ = ExportManifest::verify(&manifest.sign(&key), &key.public_key());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vault_core::export::check_recipient("r", text);
    }
});
