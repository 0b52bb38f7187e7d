//! Key files. The secret key is a PKCS#8 document (as ring generates it) in PEM, mode 0600;
//! the public key is one line, `ed25519:<base64>`, the same spelling policies and roots use.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::keys::{PublicKey, SigningKey};
use vault_core::policy::root::Admin;

use crate::error::{CliError, Result};

const PEM_TAG: &str = "PRIVATE KEY";
const MAX_KEY_FILE_BYTES: usize = 16 * 1024;

/// `NAME` -> (`NAME.key`, `NAME.pub`); a name already ending in `.key` is taken as is.
pub fn key_paths(name: &Path) -> (PathBuf, PathBuf) {
    let base = if name.extension().is_some_and(|e| e == "key") { name.with_extension("") } else { name.to_path_buf() };
    let with_suffix = |suffix: &str| {
        let mut s = base.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    (with_suffix(".key"), with_suffix(".pub"))
}

/// Generates a key pair from the OS's randomness and writes both files; refuses to overwrite.
pub fn generate(name: &Path) -> Result<PublicKey> {
    let (secret_path, public_path) = key_paths(name);
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| CliError::KeyFile { path: secret_path.display().to_string(), reason: "the OS gave no randomness".into() })?;
    let public = SigningKey::from_pkcs8(pkcs8.as_ref())?.public_key();
    let pem_text = pem::encode(&pem::Pem::new(PEM_TAG, pkcs8.as_ref().to_vec()));
    vault_io::write_new(&secret_path, pem_text.as_bytes(), 0o600)?;
    vault_io::write_new(&public_path, format!("{public}\n").as_bytes(), 0o644)?;
    Ok(public)
}

pub fn load_secret(path: &Path) -> Result<SigningKey> {
    let (der, _) = load_secret_der(path)?;
    Ok(SigningKey::from_pkcs8(&der)?)
}

/// The PKCS#8 document (for TLS) and its public key.
pub fn load_secret_der(path: &Path) -> Result<(Vec<u8>, PublicKey)> {
    let bad = |reason: String| CliError::KeyFile { path: path.display().to_string(), reason };
    let bytes = vault_io::read_bounded(path, MAX_KEY_FILE_BYTES)?;
    // Said before the mode check: chmod advice for a public key file would send people astray.
    match public_key_kind(&bytes) {
        Some(PublicKind::Ours) => {
            return Err(bad("this is a public key (`ed25519:...`, as NAME.pub holds it), not a secret key: --key wants the secret key, NAME.key as \
                 `vaultctl key gen --out NAME` writes it (NAME.pub beside it is the public half, for the trust root or the policy)"
                .into()))
        }
        Some(PublicKind::OpenSsh) => {
            return Err(bad("this is an OpenSSH public key line (`ssh-ed25519 AAAA...`), not a secret key, and vaultctl keys are not SSH keys: \
                 --key wants the secret key, NAME.key as `vaultctl key gen --out NAME` writes it"
                .into()))
        }
        None => {}
    }
    let mode = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(bad(format!("secret key is readable by others (mode {:04o}); run chmod 600", mode & 0o7777)));
    }
    let parsed = pem::parse(&bytes).map_err(|e| bad(format!("not a PEM secret key ({e})")))?;
    if parsed.tag() == "OPENSSH PRIVATE KEY" {
        return Err(bad("this is an OpenSSH secret key; vaultctl keys are not SSH keys: --key wants NAME.key as `vaultctl key gen --out NAME` writes it".into()));
    }
    if parsed.tag() != PEM_TAG {
        return Err(bad(format!("PEM block is `{}`, expected `{PEM_TAG}`: --key wants NAME.key as `vaultctl key gen --out NAME` writes it", parsed.tag())));
    }
    let public = SigningKey::from_pkcs8(parsed.contents())?.public_key();
    Ok((parsed.contents().to_vec(), public))
}

/// A public key given on the command line: `ed25519:...` itself, or a file holding it.
pub fn public_key_arg(text: &str) -> Result<PublicKey> {
    if text.starts_with("ed25519:") {
        return Ok(PublicKey::parse(text, "--vault-key")?);
    }
    load_public(Path::new(text))
}

pub fn load_public(path: &Path) -> Result<PublicKey> {
    let bad = |reason: String| CliError::KeyFile { path: path.display().to_string(), reason };
    let bytes = read_public_file(path)?;
    if public_key_kind(&bytes) == Some(PublicKind::OpenSsh) {
        return Err(bad("this is an OpenSSH public key line; vaultctl keys are not SSH keys: give NAME.pub as `vaultctl key gen --out NAME` writes it (`ed25519:...`)".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    Ok(PublicKey::parse(&text, &path.display().to_string())?)
}

/// An admin's public key file: `ed25519:<base64>` from `vaultctl key gen`, or an OpenSSH public
/// key (`ssh-keygen`'s `.pub`, a security key's included), checked as the root checks it.
pub fn load_admin(name: &str, path: &Path, user_verification: bool) -> Result<Admin> {
    let bytes = read_public_file(path)?;
    let text = String::from_utf8(bytes).map_err(|_| CliError::KeyFile { path: path.display().to_string(), reason: "not UTF-8 text".into() })?;
    Ok(Admin::parse(name, &text, user_verification, &path.display().to_string())?)
}

/// A file that should hold a public key; a secret key given by mistake is named as one.
fn read_public_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = vault_io::read_bounded(path, MAX_KEY_FILE_BYTES)?;
    if is_pem(&bytes) {
        return Err(CliError::KeyFile {
            path: path.display().to_string(),
            reason: "this is a secret key (PEM), where a public key is wanted: give NAME.pub, the public half `vaultctl key gen` wrote beside NAME.key (the secret key never leaves its owner)".into(),
        });
    }
    Ok(bytes)
}

/// `vaultctl key show`: the public key of a NAME.pub or a NAME.key file, and which it was.
pub fn load_any_public(path: &Path) -> Result<(PublicKey, &'static str)> {
    if is_pem(&vault_io::read_bounded(path, MAX_KEY_FILE_BYTES)?) {
        let (_, public) = load_secret_der(path)?;
        return Ok((public, "secret key file; its public key (the secret is not shown):"));
    }
    Ok((load_public(path)?, "public key file:"))
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(b"-----BEGIN ")
}

/// The public key files people mix up with a secret key: our own NAME.pub, and an OpenSSH
/// `.pub` line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PublicKind {
    Ours,
    OpenSsh,
}

fn public_key_kind(bytes: &[u8]) -> Option<PublicKind> {
    let text = bytes.trim_ascii_start();
    if text.starts_with(b"ed25519:") {
        return Some(PublicKind::Ours);
    }
    let openssh = [&b"ssh-"[..], b"ecdsa-sha2-", b"sk-ssh-", b"sk-ecdsa-"];
    openssh.iter().any(|prefix| text.starts_with(prefix)).then_some(PublicKind::OpenSsh)
}
