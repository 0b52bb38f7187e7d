//! Arbitrary bytes as an admin's OpenSSH signature (armored, or the blob a bundle carries) and
//! as an OpenSSH public key line: decoding and verification must refuse or accept, never panic
//! or allocate without bound. Whatever decodes must re-encode to the same blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::policy::sshsig::{SshKeyKind, SshPublicKey, SshSignature};

/// The key of scripts/fuzz-seeds/policy.sshsig, made by stock ssh-keygen.
const ADMIN: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEYx+F0aEV0T6JIEftPR/ZCnlWS30XGewttdKLLgKsiF alice@desk";

fuzz_target!(|data: &[u8]| {
    let plain = SshPublicKey::parse_line(ADMIN).expect("the fuzz admin key parses");
    let token = SshPublicKey { key: plain.key, kind: SshKeyKind::SecurityKey { application: "ssh:".into() } };
    for decoded in [SshSignature::from_armored(data), SshSignature::from_blob(data)] {
        if let Ok(signature) = decoded {
            assert_eq!(SshSignature::from_blob(&signature.to_blob()).as_ref(), Ok(&signature));
            for key in [&plain, &token] {
                let _ = signature.verify(key, true, "airgap-vault/policy-bundle/v1", b"payload bytes\n");
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = SshPublicKey::parse_line(text) {
            assert_eq!(SshPublicKey::parse_line(&key.to_line()), Ok(key));
        }
    }
});
