//! Admins who sign with OpenSSH (a key file, or a FIDO2 security key on their desk): `policy
//! payload` writes the exact bytes to sign and says how, stock `ssh-keygen -Y sign` signs them,
//! and `policy add-sshsig` checks the signature as the vault will before adding it.

use std::path::Path;

use vault_core::policy::bundle::{self, Envelope, MAX_BUNDLE_BYTES, PAYLOAD_TYPE};
use vault_core::policy::orders::{ORDER_PAYLOAD_TYPE, ORDER_SIGNING_CONTEXT};
use vault_core::policy::root::TrustRoot;
use vault_core::policy::sshsig::{SshSignature, MAX_ARMORED_BYTES};

use crate::error::{CliError, Result};
use vault_core::error::PolicyError;

/// A signed object on disk: a policy bundle or an order, and the namespace its SSHSIG is in.
struct Signed {
    envelope: Envelope,
    namespace: &'static str,
    what: &'static str,
}

fn read_signed(path: &Path) -> Result<Signed> {
    let bytes = vault_io::read_bounded(path, MAX_BUNDLE_BYTES)?;
    match Envelope::from_bytes_of(&bytes, PAYLOAD_TYPE) {
        Ok(envelope) => Ok(Signed { envelope, namespace: bundle::SSH_NAMESPACE, what: "policy bundle" }),
        Err(vault_core::Error::Policy(PolicyError::WrongPayloadType { .. })) => {
            Ok(Signed { envelope: Envelope::from_bytes_of(&bytes, ORDER_PAYLOAD_TYPE)?, namespace: ORDER_SIGNING_CONTEXT, what: "order" })
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the payload an admin signs with `ssh-keygen -Y sign`, and prints how.
pub fn payload(signed_path: &Path, out: &Path, json: bool) -> Result<()> {
    let signed = read_signed(signed_path)?;
    vault_io::write_new(out, &signed.envelope.payload_bytes()?, 0o644)?;
    eprintln!("wrote the {}'s payload to {}; sign it with your OpenSSH key or security key:", signed.what, out.display());
    eprintln!("  ssh-keygen -Y sign -f ~/.ssh/id_ed25519_sk -n {} {}", signed.namespace, out.display());
    eprintln!("then add the signature:");
    eprintln!("  vaultctl policy add-sshsig --root root.toml --sig {}.sig {} --out {}", out.display(), signed_path.display(), signed_path.display());
    crate::output::emit(json, serde_json::json!({ "out": out, "what": signed.what, "namespace": signed.namespace }), || {});
    Ok(())
}

/// Adds `ssh-keygen`'s signature to a bundle or an order once it verifies as the vault will
/// verify it: the root lists the key, the namespace is this object's, a security key saw a
/// touch (and a PIN where the root asks for one), and the signature covers these bytes.
pub fn add(root: &TrustRoot, signed_path: &Path, sig_path: &Path, out: &Path, json: bool) -> Result<()> {
    let mut signed = read_signed(signed_path)?;
    let armored = vault_io::read_bounded(sig_path, MAX_ARMORED_BYTES)?;
    let refuse = |reason: String| CliError::Refused(format!("{}: {reason}", sig_path.display()));
    let signature = SshSignature::from_armored(&armored).map_err(|e| refuse(e.to_string()))?;
    // A rotation bundle is signed by the admins of both roots.
    let new_root = match signed.namespace {
        bundle::SSH_NAMESPACE => signed.envelope.unverified_payload()?.new_root,
        _ => None,
    };
    let admin = [Some(root), new_root.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|r| r.admin_with_key(&signature.public_key.key))
        .ok_or_else(|| refuse(format!("signed by {} ({}), which is no admin of root v{}", signature.public_key.fingerprint(), signature.public_key.type_name(), root.version)))?;
    let Some(admin_key) = admin.ssh_key() else {
        return Err(refuse(format!("the root lists admin `{}` by its raw `ed25519:` key: that admin signs with `vaultctl policy sign`", admin.name)));
    };
    let require_uv = admin.ssh.as_ref().is_some_and(|ssh| ssh.user_verification);
    let payload = signed.envelope.payload_bytes()?;
    signature.verify(&admin_key, require_uv, signed.namespace, &payload).map_err(|e| refuse(format!("admin `{}`: {e}", admin.name)))?;
    signed.envelope.add_sshsig(&signature)?;
    vault_io::write_atomic(out, &signed.envelope.to_bytes(), 0o644)?;
    eprintln!(
        "added admin `{}`'s OpenSSH signature ({}) to the {}; it now has {} signature(s): {}",
        admin.name,
        signature.public_key.fingerprint(),
        signed.what,
        signed.envelope.signatures.len(),
        out.display()
    );
    let value = serde_json::json!({ "out": out, "admin": admin.name, "fingerprint": signature.public_key.fingerprint(), "signatures": signed.envelope.signatures.len() });
    crate::output::emit(json, value, || {});
    Ok(())
}
