use proptest::prelude::*;

use super::*;
use crate::keys::test_keys::key;

const NAMESPACE: &str = "airgap-vault/policy-bundle/v1";

/// Made by stock OpenSSH 9.2 (`ssh-keygen -q -t ed25519 -N '' -f alice -C alice@desk`, then
/// `ssh-keygen -Y sign -f alice -n airgap-vault/policy-bundle/v1 [-O hashalg=sha256] p` over a
/// file holding `payload bytes\n`).
const STOCK_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEYx+F0aEV0T6JIEftPR/ZCnlWS30XGewttdKLLgKsiF alice@desk";
const STOCK_MESSAGE: &[u8] = b"payload bytes\n";
const STOCK_SHA512: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgRjH4XRoRXRPokgR+09H9kKeVZL
fRcZ7C210osuAqyIUAAAAdYWlyZ2FwLXZhdWx0L3BvbGljeS1idW5kbGUvdjEAAAAAAAAA
BnNoYTUxMgAAAFMAAAALc3NoLWVkMjU1MTkAAABAQfljJE+LC/Ry9XMBMEwWpB5Dvcixho
WH0eraPEIReZqf7qtPDBgFKTv5camNY3M8rrBqCVN1M6i7/0/a2SoECQ==
-----END SSH SIGNATURE-----
";
const STOCK_SHA256: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgRjH4XRoRXRPokgR+09H9kKeVZL
fRcZ7C210osuAqyIUAAAAdYWlyZ2FwLXZhdWx0L3BvbGljeS1idW5kbGUvdjEAAAAAAAAA
BnNoYTI1NgAAAFMAAAALc3NoLWVkMjU1MTkAAABA0GxHU/hf+S929+w6ZbqgKUIxSjcCKA
NJWJOfiLVnyfnlDu7AxtlYKuxU8lj+S15qTytDRwxsNmXa3Cd+gHLrCQ==
-----END SSH SIGNATURE-----
";

/// Plays a signer: a plain OpenSSH key, or a FIDO2 token answering with `flags`.
pub(crate) fn ssh_sign(seed: u8, public_key: &SshPublicKey, namespace: &str, hash_algorithm: &str, message: &[u8], flags: u8) -> SshSignature {
    let algorithm = if hash_algorithm == "sha256" { &ring::digest::SHA256 } else { &ring::digest::SHA512 };
    let signed = signed_data(namespace, hash_algorithm, ring::digest::digest(algorithm, message).as_ref());
    let counter = 42;
    let (to_sign, authenticator) = match &public_key.kind {
        SshKeyKind::Plain => (signed, None),
        SshKeyKind::SecurityKey { application } => (security_key_signed_bytes(application, flags, counter, &signed), Some((flags, counter))),
    };
    SshSignature::from_parts(public_key.clone(), namespace, hash_algorithm, key(seed).sign(&to_sign), authenticator)
}

pub(crate) fn plain_key(seed: u8) -> SshPublicKey {
    SshPublicKey { key: key(seed).public_key(), kind: SshKeyKind::Plain }
}

pub(crate) fn security_key(seed: u8) -> SshPublicKey {
    SshPublicKey { key: key(seed).public_key(), kind: SshKeyKind::SecurityKey { application: "ssh:".into() } }
}

#[test]
fn signatures_made_by_stock_ssh_keygen_verify_with_either_hash() {
    let key = SshPublicKey::parse_line(STOCK_KEY).unwrap();
    assert_eq!(key.kind, SshKeyKind::Plain);
    assert_eq!(key.fingerprint(), "SHA256:BoQ2W9URc0+hd6qN83nJqDYVAqRDdo3MMSwFukMJ168", "ssh-keygen -l's fingerprint");
    for armored in [STOCK_SHA512, STOCK_SHA256] {
        let signature = SshSignature::from_armored(armored.as_bytes()).unwrap();
        signature.verify(&key, false, NAMESPACE, STOCK_MESSAGE).unwrap();
        assert_eq!(signature.verify(&key, false, NAMESPACE, b"payload bytes!\n"), Err(SshsigError::BadSignature));
        let err = signature.verify(&key, false, "airgap-vault/order/v1", STOCK_MESSAGE).unwrap_err();
        assert!(matches!(err, SshsigError::Namespace { .. }) && err.to_string().contains("ssh-keygen -Y sign -n airgap-vault/order/v1"), "{err}");
        assert!(matches!(signature.verify(&plain_key(1), false, NAMESPACE, STOCK_MESSAGE), Err(SshsigError::OtherKey { .. })));
        assert_eq!(SshSignature::from_blob(&signature.to_blob()).unwrap(), signature, "the blob round-trips");
        assert_eq!(signature.to_armored(), armored, "armored as ssh-keygen armors it");
    }
}

#[test]
fn a_security_key_signature_counts_only_with_user_presence() {
    let token = security_key(3);
    let touched = ssh_sign(3, &token, NAMESPACE, "sha512", b"payload", FLAG_USER_PRESENT);
    touched.verify(&token, false, NAMESPACE, b"payload").unwrap();
    // What malware gets from a plugged-in token without a touch (OpenSSH's own verifier and
    // the ssh-key crate both accept it).
    let untouched = ssh_sign(3, &token, NAMESPACE, "sha512", b"payload", 0);
    let err = untouched.verify(&token, false, NAMESPACE, b"payload").unwrap_err();
    assert_eq!(err, SshsigError::NoUserPresence { flags: 0 });
    assert!(err.to_string().contains("touch the key"), "{err}");
    // A flag added afterwards breaks the signature: the flags are signed.
    let mut forged = SshSignature::from_blob(&untouched.to_blob()).unwrap();
    forged.authenticator = Some((FLAG_USER_PRESENT | FLAG_USER_VERIFIED, 42));
    assert_eq!(forged.verify(&token, true, NAMESPACE, b"payload"), Err(SshsigError::BadSignature));
}

#[test]
fn user_verification_is_required_only_where_the_root_asks() {
    let token = security_key(4);
    let presence_only = ssh_sign(4, &token, NAMESPACE, "sha256", b"payload", FLAG_USER_PRESENT);
    presence_only.verify(&token, false, NAMESPACE, b"payload").unwrap();
    let err = presence_only.verify(&token, true, NAMESPACE, b"payload").unwrap_err();
    assert_eq!(err, SshsigError::NoUserVerification { flags: FLAG_USER_PRESENT });
    assert!(err.to_string().contains("verify-required"), "{err}");
    let verified = ssh_sign(4, &token, NAMESPACE, "sha256", b"payload", FLAG_USER_PRESENT | FLAG_USER_VERIFIED);
    verified.verify(&token, true, NAMESPACE, b"payload").unwrap();
    assert_eq!(verified.verify(&token, true, NAMESPACE, b"other payload"), Err(SshsigError::BadSignature));
}

#[test]
fn a_token_for_another_application_or_a_plain_key_is_another_key() {
    let token = security_key(5);
    let signature = ssh_sign(5, &token, NAMESPACE, "sha512", b"payload", FLAG_USER_PRESENT);
    let other_app = SshPublicKey { key: token.key, kind: SshKeyKind::SecurityKey { application: "ssh:vault".into() } };
    assert!(matches!(signature.verify(&other_app, false, NAMESPACE, b"payload"), Err(SshsigError::OtherKey { .. })));
    assert!(matches!(signature.verify(&plain_key(5), false, NAMESPACE, b"payload"), Err(SshsigError::OtherKey { .. })));
}

#[test]
fn only_sha256_and_sha512_and_an_empty_reserved_field() {
    let signer = plain_key(6);
    let mut signature = ssh_sign(6, &signer, NAMESPACE, "sha512", b"payload", 0);
    signature.hash_algorithm = "md5".into();
    assert_eq!(signature.verify(&signer, false, NAMESPACE, b"payload"), Err(SshsigError::HashAlgorithm("md5".into())));
    let mut signature = ssh_sign(6, &signer, NAMESPACE, "sha512", b"payload", 0);
    signature.reserved = b"x".to_vec();
    assert_eq!(signature.verify(&signer, false, NAMESPACE, b"payload"), Err(SshsigError::Reserved));
    let mut signature = ssh_sign(6, &signer, NAMESPACE, "sha512", b"payload", 0);
    signature.signature_type = "rsa-sha2-512".into();
    assert!(matches!(signature.verify(&signer, false, NAMESPACE, b"payload"), Err(SshsigError::SignatureType { .. })));
}

#[test]
fn malformed_blobs_and_keys_are_refused_by_name() {
    let blob = SshSignature::from_armored(STOCK_SHA512.as_bytes()).unwrap().to_blob();
    let mut trailing = blob.clone();
    trailing.push(0);
    assert_eq!(SshSignature::from_blob(&trailing), Err(SshsigError::TrailingBytes(1)));
    assert!(matches!(SshSignature::from_blob(&blob[..blob.len() - 1]), Err(SshsigError::Truncated(_))));
    let mut magic = blob.clone();
    magic[0] = b'X';
    assert_eq!(SshSignature::from_blob(&magic), Err(SshsigError::Magic));
    let mut version = blob.clone();
    version[9] = 2;
    assert_eq!(SshSignature::from_blob(&version), Err(SshsigError::Version(2)));
    let mut huge_length = blob;
    huge_length[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(SshSignature::from_blob(&huge_length), Err(SshsigError::Truncated(_))));
    assert!(matches!(SshSignature::from_armored(b"hello"), Err(SshsigError::Armor(_))));
    assert!(matches!(SshSignature::from_armored(&vec![b'A'; MAX_ARMORED_BYTES + 1]), Err(SshsigError::TooLarge { .. })));
    assert!(matches!(SshPublicKey::parse_line("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x"), Err(SshsigError::KeyType(_))));
    let plain_as_sk = STOCK_KEY.replacen("ssh-ed25519", SK_SSH_ED25519, 1);
    assert!(matches!(SshPublicKey::parse_line(&plain_as_sk), Err(SshsigError::KeyType(_))), "the named type must be the blob's");
    let line = security_key(7).to_line();
    assert_eq!(SshPublicKey::parse_line(&format!("{line} alice@desk")).unwrap(), security_key(7));
}

proptest! {
    #[test]
    fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = SshSignature::from_blob(&bytes);
        let _ = SshPublicKey::from_blob(&bytes);
    }

    /// Every byte of a security key's signature blob is bound by it: change any one and it
    /// no longer decodes or no longer verifies.
    #[test]
    fn any_changed_byte_of_a_signature_is_refused(position in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let token = security_key(8);
        let mut blob = ssh_sign(8, &token, NAMESPACE, "sha512", b"payload", FLAG_USER_PRESENT).to_blob();
        let i = position.index(blob.len());
        blob[i] ^= xor;
        let verdict = SshSignature::from_blob(&blob).and_then(|s| s.verify(&token, false, NAMESPACE, b"payload"));
        prop_assert!(verdict.is_err(), "byte {i} changed and the signature still verified");
    }
}
