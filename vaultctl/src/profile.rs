//! Push settings from three places, in this order of precedence: the command line, the
//! environment (`VAULTCTL_*`, read by clap), and a profile of the config file. A cron or
//! systemd line then reads `vaultctl push --profile db`, not 200 characters of base64.
//!
//! The config file is the first of: `--config` / `$VAULTCTL_CONFIG`,
//! `$XDG_CONFIG_HOME/vaultctl/vaultctl.toml` (default `~/.config/vaultctl/vaultctl.toml`),
//! `/etc/vaultctl/vaultctl.toml`. It holds `[profile.NAME]` tables with the fields of
//! [`Profile`]; unknown fields are refused, so a typo does not silently fall back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{CliError, Result};

/// The system-wide config file (the Debian package's units read it).
pub const SYSTEM_CONFIG: &str = "/etc/vaultctl/vaultctl.toml";
const MAX_CONFIG_BYTES: usize = 256 * 1024;
const MAX_PROFILES: usize = 256;

/// One push's settings. Every field is optional here; [`Profile::require`] names what is missing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// HOST:PORT of the vault inside its window.
    pub vault: Option<String>,
    /// `ed25519:...` or a file holding it.
    pub vault_key: Option<String>,
    /// This pusher's secret key file.
    pub key: Option<PathBuf>,
    pub dataset: Option<String>,
    /// A directory, a file, or `-` for stdin.
    pub source: Option<PathBuf>,
    pub receipts: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    pub connect_timeout_secs: Option<u64>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub exclude_file: Vec<PathBuf>,
    pub one_file_system: Option<bool>,
    /// A copy of the vault's signed policy bundle, for `--wait-for-window` and `--dry-run`.
    pub policy: Option<PathBuf>,
    /// The trust root that policy copy is verified against.
    pub root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    profile: BTreeMap<String, Profile>,
}

/// Where a setting came from, for the message when one is missing.
pub struct Sources {
    pub profile: Option<(String, PathBuf)>,
}

impl Profile {
    /// `self` (command line and environment) over `base` (the profile): a field set here wins;
    /// exclude patterns add up.
    pub fn over(self, base: Profile) -> Profile {
        Profile {
            vault: self.vault.or(base.vault),
            vault_key: self.vault_key.or(base.vault_key),
            key: self.key.or(base.key),
            dataset: self.dataset.or(base.dataset),
            source: self.source.or(base.source),
            receipts: self.receipts.or(base.receipts),
            cache: self.cache.or(base.cache),
            connect_timeout_secs: self.connect_timeout_secs.or(base.connect_timeout_secs),
            exclude: base.exclude.into_iter().chain(self.exclude).collect(),
            exclude_file: base.exclude_file.into_iter().chain(self.exclude_file).collect(),
            one_file_system: self.one_file_system.or(base.one_file_system),
            policy: self.policy.or(base.policy),
            root: self.root.or(base.root),
        }
    }

    /// A setting that must be there: the error says the three ways to give it.
    pub fn require<'a, T>(value: &'a Option<T>, flag: &str, field: &str, sources: &Sources) -> Result<&'a T> {
        value.as_ref().ok_or_else(|| {
            let env = format!("VAULTCTL_{}", field.to_ascii_uppercase());
            let file = match &sources.profile {
                Some((name, path)) => format!("`{field} = ...` in [profile.{name}] of {}", path.display()),
                None => format!("a profile (--profile NAME) with `{field} = ...` in {}", default_config_paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")),
            };
            CliError::Usage(format!("no {field}: give {flag}, set {env}, or put {file}"))
        })
    }
}

/// The config files looked for, in order, when none is named.
pub fn default_config_paths() -> Vec<PathBuf> {
    vec![xdg_dir("XDG_CONFIG_HOME", ".config").join("vaultctl/vaultctl.toml"), PathBuf::from(SYSTEM_CONFIG)]
}

/// `$VAR` if set to an absolute path (the XDG base directory rule), else `~/<fallback>`.
pub fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from).join(fallback),
    }
}

/// Where receipts and the chunk cache live by default: systemd's StateDirectory= and
/// CacheDirectory= when run from the packaged unit, else the XDG directories.
pub fn default_receipts() -> PathBuf {
    systemd_dir("STATE_DIRECTORY").unwrap_or_else(|| xdg_dir("XDG_DATA_HOME", ".local/share").join("vaultctl")).join("receipts")
}

pub fn default_cache_dir() -> PathBuf {
    systemd_dir("CACHE_DIRECTORY").unwrap_or_else(|| xdg_dir("XDG_CACHE_HOME", ".cache").join("vaultctl"))
}

/// systemd sets `$STATE_DIRECTORY` (colon-separated when several); the first is ours.
fn systemd_dir(var: &str) -> Option<PathBuf> {
    let value = std::env::var(var).ok()?;
    value.split(':').next().filter(|d| d.starts_with('/')).map(PathBuf::from)
}

/// Loads profile `name` (none: no profile, unless the file has one called `default`) from the
/// config file named or found. A named config or profile that is missing is an error; a
/// config file nobody named and nobody has written is not.
pub fn load(config: Option<&Path>, name: Option<&str>) -> Result<(Profile, Sources)> {
    let path = match config {
        Some(path) => Some(path.to_path_buf()),
        None => default_config_paths().into_iter().find(|p| p.exists()),
    };
    let Some(path) = path else {
        return match name {
            Some(name) => Err(CliError::Usage(format!(
                "profile `{name}`: no config file; write one at {} (or give --config FILE)",
                default_config_paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
            ))),
            None => Ok((Profile::default(), Sources { profile: None })),
        };
    };
    let bytes = vault_io::read_bounded(&path, MAX_CONFIG_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| CliError::Usage(format!("{}: not UTF-8 text", path.display())))?;
    let mut file: ConfigFile = toml::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {}", path.display(), e.message())))?;
    if file.profile.len() > MAX_PROFILES {
        return Err(CliError::Usage(format!("{}: {} profiles, at most {MAX_PROFILES}", path.display(), file.profile.len())));
    }
    let chosen = name.unwrap_or("default");
    match file.profile.remove(chosen) {
        Some(profile) => Ok((profile, Sources { profile: Some((chosen.to_string(), path)) })),
        None if name.is_none() => Ok((Profile::default(), Sources { profile: None })),
        None => Err(CliError::Usage(format!(
            "profile `{chosen}` is not in {}; it has: {}",
            path.display(),
            if file.profile.is_empty() { "no profiles".to_string() } else { file.profile.keys().cloned().collect::<Vec<_>>().join(", ") }
        ))),
    }
}
