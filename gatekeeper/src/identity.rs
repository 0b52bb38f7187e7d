//! The vault's own Ed25519 key: made on first start from the OS's randomness, kept in the
//! state directory (mode 0600), never sent anywhere. It is the vault's TLS identity, which
//! pushers pin, and it signs receipts.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::keys::{PublicKey, SigningKey};

use crate::error::{GatekeeperError, Result};

pub const IDENTITY_FILE: &str = "vault-identity.key";
const MAX_IDENTITY_BYTES: usize = 4096;

pub struct VaultIdentity {
    pub pkcs8: Vec<u8>,
    pub key: SigningKey,
    pub public: PublicKey,
}

impl VaultIdentity {
    /// Loads the key, or makes it if this is the vault's first start.
    pub fn load_or_create(state_dir: &Path) -> Result<VaultIdentity> {
        let path = state_dir.join(IDENTITY_FILE);
        let bad = |reason: String| GatekeeperError::Identity { path: path.display().to_string(), reason };
        if !path.exists() {
            std::fs::create_dir_all(state_dir).map_err(|e| bad(e.to_string()))?;
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| bad("the OS gave no randomness".into()))?;
            vault_io::write_new(&path, pkcs8.as_ref(), 0o600)?;
        }
        VaultIdentity::load(state_dir)
    }

    /// Loads the key that is there; never makes one (a mistyped state directory must not give
    /// the vault a new identity).
    pub fn load(state_dir: &Path) -> Result<VaultIdentity> {
        let path = state_dir.join(IDENTITY_FILE);
        let bad = |reason: String| GatekeeperError::Identity { path: path.display().to_string(), reason };
        if !path.exists() {
            let found = if state_dir.is_dir() { "not there" } else { "not there (no such --state directory)" };
            return Err(bad(format!(
                "{found}: is --state the vault's state directory (/data/state on the appliance, where the daemon makes the key on first start)? \
                 For a new vault that has not started yet, `gatekeeper --state {} identity --create` makes its key",
                state_dir.display()
            )));
        }
        let pkcs8 = vault_io::read_bounded(&path, MAX_IDENTITY_BYTES)?;
        let key = SigningKey::from_pkcs8(&pkcs8).map_err(|e| bad(e.to_string()))?;
        let public = key.public_key();
        Ok(VaultIdentity { pkcs8, key, public })
    }
}
