//! The trust root: which admin keys exist, how many must sign, and the hard caps that no
//! policy may exceed. It is baked into the image and replaced only by a rotation bundle
//! signed by the threshold of both the old and the new admin sets (see [`crate::policy::bundle`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::canonical::{self, check_identifier, decode_toml};
use crate::error::PolicyError;
use crate::error::{invalid, Error, Result};
use crate::keys::{domain_hash, hex, PublicKey};
use crate::policy::sshsig::{SshKeyKind, SshPublicKey};
use crate::units::{Duration, SECS_PER_DAY};

pub const MAX_ROOT_BYTES: usize = 64 * 1024;
pub const MAX_ADMINS: usize = 32;
const ROOT_DIGEST_CONTEXT: &str = "airgap-vault/root/v1";

/// Limits that every policy signed under this root must respect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    /// Longest single window (recurring or one-shot).
    pub max_window: Duration,
    /// Most open time in any one UTC day, all windows together.
    pub max_open_per_day: Duration,
    /// Longest time between a bundle's `issued` and its `expires`.
    pub max_validity: Duration,
    /// Longest time an in-flight push may run past its window's end.
    pub max_grace: Duration,
    /// No policy may give a pusher a shorter `retain`: a coerced quorum still cannot make the
    /// vault forget quickly. Zero (absent from the root): no floor.
    pub min_retain: Duration,
    /// How long a quorum-signed purge order waits, counted on the vault's clock from its
    /// acceptance, before it deletes anything; one admin's veto cancels it meanwhile. At least
    /// [`MIN_PURGE_DELAY_SECS`] (absent from the root: that).
    pub purge_delay: Duration,
}

/// The shortest cooling-off a root may give purge orders: three days.
pub const MIN_PURGE_DELAY_SECS: i64 = 72 * 3600;

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_window: Duration::from_secs(4 * 3600).unwrap(),
            max_open_per_day: Duration::from_secs(8 * 3600).unwrap(),
            max_validity: Duration::from_secs(90 * SECS_PER_DAY).unwrap(),
            max_grace: Duration::from_secs(15 * 60).unwrap(),
            min_retain: Duration::ZERO,
            purge_delay: Duration::from_secs(MIN_PURGE_DELAY_SECS).unwrap(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub name: String,
    /// The Ed25519 key: what quorums count, whichever way the admin signs.
    pub key: PublicKey,
    /// Set when the root lists the admin's OpenSSH key: the admin then signs with `ssh-keygen
    /// -Y sign` (SSHSIG), and only that way.
    pub ssh: Option<SshAdmin>,
}

/// An admin who signs with OpenSSH: a key file, or a FIDO2 security key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAdmin {
    pub kind: SshKeyKind,
    /// A security key's signature must carry FIDO2's user-verified flag (a PIN or biometric
    /// checked by the token), not only user presence (a touch), which is always required.
    pub user_verification: bool,
}

impl Admin {
    /// An admin who signs with a raw Ed25519 key (`vaultctl policy sign`).
    pub fn raw(name: impl Into<String>, key: PublicKey) -> Admin {
        Admin { name: name.into(), key, ssh: None }
    }

    /// An admin who signs with OpenSSH.
    pub fn ssh(name: impl Into<String>, key: SshPublicKey, user_verification: bool) -> Admin {
        Admin { name: name.into(), key: key.key, ssh: Some(SshAdmin { kind: key.kind, user_verification }) }
    }

    /// The admin's OpenSSH key, when it signs with one.
    pub fn ssh_key(&self) -> Option<SshPublicKey> {
        self.ssh.as_ref().map(|ssh| SshPublicKey { key: self.key, kind: ssh.kind.clone() })
    }

    /// An admin's key as the root spells it: `ed25519:<base64>` or an OpenSSH public key line
    /// (its comment dropped: the root writes the line without one).
    pub fn parse(name: &str, text: &str, user_verification: bool, place: &str) -> Result<Admin> {
        let admin = if text.trim_start().starts_with("ed25519:") {
            Admin::raw(name, PublicKey::parse(text, &format!("{place}.key"))?)
        } else {
            let ssh = SshPublicKey::parse_line(text)
                .map_err(|e| invalid(format!("{place}.key"), format!("{e}; an admin key is `ed25519:<base64>` or an OpenSSH `ssh-ed25519`/`sk-ssh-ed25519@openssh.com` public key")))?;
            Admin::ssh(name, ssh, user_verification)
        };
        let security_key = admin.ssh.as_ref().is_some_and(|ssh| matches!(ssh.kind, SshKeyKind::SecurityKey { .. }));
        if user_verification && !security_key {
            return Err(invalid(format!("{place}.user_verification"), "only a security key (`sk-ssh-ed25519@openssh.com`) can verify its user: remove it, or list the admin's security key"));
        }
        Ok(admin)
    }

    /// The key as the root writes it: `ed25519:<base64>`, or an OpenSSH line without comment.
    pub fn key_text(&self) -> String {
        match self.ssh_key() {
            None => self.key.to_string(),
            Some(ssh) => ssh.to_line(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRoot {
    pub vault_id: String,
    pub version: u64,
    pub threshold: u32,
    /// Signatures an export order needs (it copies data out, encrypted, and deletes nothing, so
    /// a root may ask for fewer than `threshold`). Absent from the root: `threshold`.
    pub export_threshold: u32,
    pub admins: Vec<Admin>,
    pub caps: Caps,
}

/// The written form, shared by `root.toml` and the canonical JSON inside rotation bundles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootDoc {
    pub vault_id: String,
    pub version: u64,
    pub threshold: u32,
    /// Absent: `threshold`. Written only when it differs, so roots made before it keep their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_threshold: Option<u32>,
    #[serde(rename = "admin")]
    pub admins: Vec<AdminDoc>,
    pub caps: CapsDoc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminDoc {
    pub name: String,
    /// `ed25519:<base64>`, or an OpenSSH public key (`ssh-ed25519 AAAA…`,
    /// `sk-ssh-ed25519@openssh.com AAAA…`) for an admin who signs with `ssh-keygen -Y sign`.
    pub key: String,
    /// Security keys only: require FIDO2's user-verified flag. Written only when true, so
    /// roots made before it keep their digest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_verification: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsDoc {
    pub max_window: String,
    pub max_open_per_day: String,
    pub max_validity: String,
    pub max_grace: String,
    /// Absent: no floor. Written only when set, so roots made before it keep their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retain: Option<String>,
    /// Absent: [`MIN_PURGE_DELAY_SECS`]. Written only when longer, like `min_retain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_delay: Option<String>,
}

impl TrustRoot {
    pub fn from_toml(text: &str) -> Result<TrustRoot> {
        TrustRoot::from_doc(&decode_toml(text, MAX_ROOT_BYTES, "trust root TOML")?)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(&self.to_doc()).expect("root documents serialize to TOML")
    }

    pub fn from_doc(doc: &RootDoc) -> Result<TrustRoot> {
        check_identifier("vault_id", &doc.vault_id)?;
        if doc.version == 0 {
            return Err(invalid("version", "root versions start at 1"));
        }
        if doc.admins.is_empty() || doc.admins.len() > MAX_ADMINS {
            return Err(invalid("admin", format!("{} admin keys; a root has 1 to {MAX_ADMINS}", doc.admins.len())));
        }
        let mut admins = Vec::with_capacity(doc.admins.len());
        let mut seen_keys: BTreeMap<PublicKey, String> = BTreeMap::new();
        for (i, admin) in doc.admins.iter().enumerate() {
            check_identifier(&format!("admin[{i}].name"), &admin.name)?;
            if admins.iter().any(|a: &Admin| a.name == admin.name) {
                return Err(invalid(format!("admin[{i}].name"), format!("`{}` is listed twice", admin.name)));
            }
            let parsed = Admin::parse(&admin.name, &admin.key, admin.user_verification, &format!("admin[{i}]"))?;
            // One key is one admin, whether listed raw or as an OpenSSH key.
            if let Some(first) = seen_keys.insert(parsed.key, admin.name.clone()) {
                return Err(Error::Policy(PolicyError::DuplicateAdminKey { key_id: parsed.key.key_id(), first, second: admin.name.clone() }));
            }
            admins.push(parsed);
        }
        if doc.threshold == 0 || doc.threshold as usize > admins.len() {
            return Err(Error::Policy(PolicyError::BadThreshold { threshold: doc.threshold, admins: admins.len() }));
        }
        let export_threshold = doc.export_threshold.unwrap_or(doc.threshold);
        if export_threshold == 0 || export_threshold as usize > admins.len() {
            return Err(invalid("export_threshold", format!("{export_threshold} signatures for an export order; it must be 1 to the {} admin keys", admins.len())));
        }
        let caps = Caps {
            max_window: cap_field("caps.max_window", &doc.caps.max_window, SECS_PER_DAY)?,
            max_open_per_day: cap_field("caps.max_open_per_day", &doc.caps.max_open_per_day, SECS_PER_DAY)?,
            max_validity: cap_field("caps.max_validity", &doc.caps.max_validity, 3660 * SECS_PER_DAY)?,
            max_grace: cap_field("caps.max_grace", &doc.caps.max_grace, SECS_PER_DAY)?,
            min_retain: match &doc.caps.min_retain {
                None => Duration::ZERO,
                Some(text) => cap_field("caps.min_retain", text, 3660 * SECS_PER_DAY)?,
            },
            purge_delay: match &doc.caps.purge_delay {
                None => Duration::from_secs(MIN_PURGE_DELAY_SECS).expect("3 days is a duration"),
                Some(text) => {
                    let delay = cap_field("caps.purge_delay", text, 90 * SECS_PER_DAY)?;
                    if delay.secs() < MIN_PURGE_DELAY_SECS {
                        return Err(invalid("caps.purge_delay", format!("{delay} is shorter than the least cooling-off, {}", Duration::from_secs(MIN_PURGE_DELAY_SECS).expect("3 days"))));
                    }
                    delay
                }
            },
        };
        Ok(TrustRoot { vault_id: doc.vault_id.clone(), version: doc.version, threshold: doc.threshold, export_threshold, admins, caps })
    }

    pub fn to_doc(&self) -> RootDoc {
        RootDoc {
            vault_id: self.vault_id.clone(),
            version: self.version,
            threshold: self.threshold,
            export_threshold: (self.export_threshold != self.threshold).then_some(self.export_threshold),
            admins: self.admins.iter().map(|a| AdminDoc { name: a.name.clone(), key: a.key_text(), user_verification: a.ssh.as_ref().is_some_and(|ssh| ssh.user_verification) }).collect(),
            caps: CapsDoc {
                max_window: self.caps.max_window.to_string(),
                max_open_per_day: self.caps.max_open_per_day.to_string(),
                max_validity: self.caps.max_validity.to_string(),
                max_grace: self.caps.max_grace.to_string(),
                min_retain: (self.caps.min_retain != Duration::ZERO).then(|| self.caps.min_retain.to_string()),
                purge_delay: (self.caps.purge_delay.secs() != MIN_PURGE_DELAY_SECS).then(|| self.caps.purge_delay.to_string()),
            },
        }
    }

    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical::encode(&self.to_doc())
    }

    /// Names this exact root (keys, threshold, caps, version): bundles say which root they
    /// were signed for, so a bundle made for another trust root is refused by name.
    pub fn digest(&self) -> String {
        hex(&domain_hash(ROOT_DIGEST_CONTEXT, &self.canonical_bytes()))
    }

    pub fn admin_by_key_id(&self, key_id: &str) -> Option<&Admin> {
        self.admins.iter().find(|a| a.key.key_id() == key_id)
    }

    pub fn admin_with_key(&self, key: &PublicKey) -> Option<&Admin> {
        self.admins.iter().find(|a| a.key == *key)
    }
}

fn cap_field(field: &str, text: &str, max_secs: i64) -> Result<Duration> {
    let value = Duration::parse(text).map_err(|reason| invalid(field, reason))?;
    if value.secs() == 0 && field != "caps.max_grace" && field != "caps.min_retain" {
        return Err(invalid(field, "must be longer than 0s"));
    }
    if value.secs() > max_secs {
        return Err(invalid(field, format!("{value} is more than {}", Duration::from_secs(max_secs).unwrap())));
    }
    Ok(value)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::test_keys::key;

    pub fn root_with(vault_id: &str, version: u64, threshold: u32, seeds: &[u8]) -> TrustRoot {
        TrustRoot {
            vault_id: vault_id.to_string(),
            version,
            threshold,
            export_threshold: threshold,
            admins: seeds.iter().map(|s| Admin::raw(format!("admin{s}"), key(*s).public_key())).collect(),
            caps: Caps::default(),
        }
    }

    #[test]
    fn an_export_threshold_is_written_only_when_it_differs_and_bounded_by_the_admins() {
        let mut root = root_with("vault-01", 1, 2, &[1, 2, 3]);
        let same = root.digest();
        assert!(!root.to_toml().contains("export_threshold"), "a root made before export orders keeps its bytes");
        root.export_threshold = 1;
        assert_ne!(root.digest(), same);
        assert_eq!(TrustRoot::from_toml(&root.to_toml()).unwrap(), root);
        for bad in [0, 4] {
            root.export_threshold = bad;
            let err = TrustRoot::from_toml(&root.to_toml()).unwrap_err().to_string();
            assert!(err.contains("export_threshold") && err.contains("1 to the 3 admin keys"), "{err}");
        }
    }

    #[test]
    fn toml_round_trip() {
        let root = root_with("vault-01", 1, 2, &[1, 2, 3]);
        assert_eq!(TrustRoot::from_toml(&root.to_toml()).unwrap(), root);
    }

    #[test]
    fn min_retain_is_optional_and_a_root_without_it_keeps_its_digest() {
        let root = root_with("vault-01", 1, 2, &[1, 2, 3]);
        let toml = root.to_toml();
        assert!(!toml.contains("min_retain"), "{toml}");
        let with = TrustRoot::from_toml(&toml.replace("[caps]\n", "[caps]\nmin_retain = \"30d\"\n")).unwrap();
        assert_eq!(with.caps.min_retain, Duration::from_secs(30 * SECS_PER_DAY).unwrap());
        assert_ne!(with.digest(), root.digest());
        assert_eq!(TrustRoot::from_toml(&with.to_toml()).unwrap(), with);
        let err = TrustRoot::from_toml(&toml.replace("[caps]\n", "[caps]\nmin_retain = \"20y\"\n")).unwrap_err().to_string();
        assert!(err.contains("caps.min_retain"), "{err}");
    }

    #[test]
    fn purge_delay_is_at_least_three_days_and_written_only_when_longer() {
        let root = root_with("vault-01", 1, 2, &[1, 2, 3]);
        assert_eq!(root.caps.purge_delay.secs(), MIN_PURGE_DELAY_SECS);
        assert!(!root.to_toml().contains("purge_delay"));
        let week = TrustRoot::from_toml(&root.to_toml().replace("[caps]\n", "[caps]\npurge_delay = \"7d\"\n")).unwrap();
        assert_eq!(week.caps.purge_delay.secs(), 7 * SECS_PER_DAY);
        assert_eq!(TrustRoot::from_toml(&week.to_toml()).unwrap(), week);
        let err = TrustRoot::from_toml(&root.to_toml().replace("[caps]\n", "[caps]\npurge_delay = \"1d\"\n")).unwrap_err().to_string();
        assert!(err.contains("caps.purge_delay") && err.contains("shorter than the least cooling-off, 3d"), "{err}");
    }

    #[test]
    fn digest_changes_with_any_field() {
        let root = root_with("vault-01", 1, 2, &[1, 2, 3]);
        let mut other = root.clone();
        other.caps.max_window = Duration::from_secs(60).unwrap();
        assert_ne!(root.digest(), other.digest());
        assert_ne!(root.digest(), root_with("vault-01", 1, 1, &[1, 2, 3]).digest());
    }

    #[test]
    fn same_key_under_two_names_is_refused() {
        let mut doc = root_with("vault-01", 1, 2, &[1, 2, 3]).to_doc();
        doc.admins[2].key = doc.admins[0].key.clone();
        let err = TrustRoot::from_doc(&doc).unwrap_err();
        assert!(matches!(err, Error::Policy(PolicyError::DuplicateAdminKey { ref first, ref second, .. }) if first == "admin1" && second == "admin3"), "{err}");
    }

    #[test]
    fn threshold_out_of_range_is_refused() {
        let mut doc = root_with("vault-01", 1, 2, &[1, 2]).to_doc();
        doc.threshold = 3;
        assert_eq!(TrustRoot::from_doc(&doc).unwrap_err(), Error::Policy(PolicyError::BadThreshold { threshold: 3, admins: 2 }));
        doc.threshold = 0;
        assert_eq!(TrustRoot::from_doc(&doc).unwrap_err(), Error::Policy(PolicyError::BadThreshold { threshold: 0, admins: 2 }));
    }

    #[test]
    fn unknown_fields_and_bad_caps_are_refused() {
        let text = root_with("vault-01", 1, 1, &[1]).to_toml();
        let err = TrustRoot::from_toml(&format!("colour = \"red\"\n{text}")).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let err = TrustRoot::from_toml(&text.replace("max_window = \"4h\"", "max_window = \"2d\"")).unwrap_err();
        assert!(err.to_string().contains("caps.max_window"), "{err}");
    }
}
