//! The policy people author in TOML: when the vault may open, on which address, and who
//! may push. [`Policy::from_toml`] refuses anything unclear with the field named; the typed
//! [`Policy`] is what the schedule and the daemon use, and [`Policy::to_doc`] gives its one
//! canonical written form (what admins sign).

pub mod bundle;
pub mod orders;
pub mod root;
pub mod schedule;
pub mod sshsig;
pub mod state;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::canonical::{check_identifier, decode_toml};
use crate::error::PolicyError;
use crate::error::{invalid, Error, Result};
use crate::keys::PublicKey;
use crate::lifecycle::drill::{Drill, MAX_SAMPLE};
use crate::lifecycle::retention::{Retention, MAX_KEEP_LAST};
use crate::lifecycle::scrub::{Scrub, MAX_EVERY_DAYS, MIN_EVERY_DAYS};
use crate::policy::root::TrustRoot;
use crate::units::{ByteSize, Duration, Timestamp, SECS_PER_DAY, SECS_PER_HOUR, SECS_PER_MINUTE};
use schedule::Interval;

pub const MAX_POLICY_TOML_BYTES: usize = 1024 * 1024;
pub const MAX_WINDOWS: usize = 64;
pub const MAX_PUSHERS: usize = 64;
pub const MAX_DATASETS_PER_PUSHER: usize = 32;

// ---------------------------------------------------------------------------------------
// The written form: the TOML people write and the canonical JSON admins sign share it.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub vault_id: String,
    pub version: u64,
    /// Set by `vaultctl policy sign` when absent; required in a signed bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<String>,
    pub expires: String,
    pub network: NetworkDoc,
    #[serde(rename = "window", default)]
    pub windows: Vec<WindowDoc>,
    #[serde(rename = "pusher", default)]
    pub pushers: Vec<PusherDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close: Option<CloseDoc>,
    /// Absent: the defaults ([`crate::lifecycle::retention::Retention::default`]); written only
    /// when it differs, so policies signed before it existed stay canonical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionDoc>,
    /// Absent: every 30 days. Written only when it differs, like `retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<ScrubDoc>,
    /// Absent: a restore drill every 90 days, the newest and 2 older snapshots of each dataset.
    /// Written only when it differs, like `retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillDoc>,
    /// Absent: no rotation of export media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<crate::export::rotation::RotationDoc>,
    /// Absent: a suspect snapshot holds its dataset, and the pusher may go on pushing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<SignalsDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsDoc {
    /// Refuse the pusher of a suspect snapshot in every window until a quorum-signed release
    /// names its dataset (its earlier snapshots are held either way).
    pub close_windows: bool,
}

/// What a suspect snapshot does beyond holding its dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalsRule {
    pub close_windows: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillDoc {
    /// How often a restore drill runs.
    pub every: String,
    /// Older snapshots per dataset restored besides the newest.
    pub sample: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubDoc {
    /// How often everything sealed is read back and re-hashed.
    pub every: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDoc {
    /// The newest this-many snapshots of each (pusher, dataset) never expire.
    pub keep_last: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub address: String,
    pub port: u16,
}

/// Either recurring (`days`, `start`, `duration`) or one-shot (`from`, `until`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherDoc {
    pub name: String,
    pub key: String,
    pub quota: String,
    pub retain: String,
    /// The datasets this pusher is expected to commit in each window; an early close waits
    /// for all of them. Absent: any one commit of this pusher counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseDoc {
    #[serde(default)]
    pub early: bool,
    #[serde(default = "zero_duration_text")]
    pub grace: String,
}

fn zero_duration_text() -> String {
    Duration::ZERO.to_string()
}

// ---------------------------------------------------------------------------------------
// The typed form.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub vault_id: String,
    pub version: u64,
    pub issued: Option<Timestamp>,
    pub expires: Timestamp,
    pub network: Network,
    pub windows: Vec<Window>,
    pub pushers: Vec<Pusher>,
    pub close: Close,
    pub retention: Retention,
    pub scrub: Scrub,
    pub drill: Drill,
    /// A set of export media written in turn (see [`crate::export::rotation`]).
    pub rotation: Option<crate::export::rotation::Rotation>,
    pub signals: SignalsRule,
}

/// How the daemon finds the vault NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicSelector {
    Name(String),
    Mac([u8; 6]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub nic: NicSelector,
    pub address: IpAddr,
    pub prefix_len: u8,
    pub port: u16,
}

/// Days of the week as a bit set, bit 0 = Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeekDays(u8);

pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl WeekDays {
    pub fn from_indices(days: impl IntoIterator<Item = usize>) -> WeekDays {
        WeekDays(days.into_iter().filter(|d| *d < 7).fold(0, |set, d| set | (1 << d)))
    }

    /// `weekday`: 0 = Monday .. 6 = Sunday.
    pub fn contains(self, weekday: usize) -> bool {
        weekday < 7 && self.0 & (1 << weekday) != 0
    }

    pub fn indices(self) -> impl Iterator<Item = usize> {
        (0..7).filter(move |d| self.contains(*d))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// Opens on each listed UTC weekday at `start` (seconds after midnight) for `duration`.
    Weekly { days: WeekDays, start_secs: i64, duration: Duration },
    /// Opens once, from `from` until `until` (exclusive).
    Once { from: Timestamp, until: Timestamp },
}

impl Window {
    pub fn length(&self) -> Duration {
        match self {
            Window::Weekly { duration, .. } => *duration,
            Window::Once { from, until } => Duration::from_secs(until.secs_since(*from)).unwrap_or(Duration::ZERO),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pusher {
    pub name: String,
    pub key: PublicKey,
    /// Most bytes this pusher may send in one window.
    pub quota: ByteSize,
    /// Minimum retention, counted from the vault's clock when a snapshot is sealed.
    pub retain: Duration,
    /// Datasets expected in each window (for early close); empty: any one commit counts.
    pub datasets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Down the link as soon as every pusher has committed.
    pub early: bool,
    /// How long an in-flight push may run past the window's end.
    pub grace: Duration,
}

impl Policy {
    /// Parses and validates an authored policy. Size-capped before the parser sees it.
    pub fn from_toml(text: &str) -> Result<Policy> {
        Policy::from_doc(&decode_toml(text, MAX_POLICY_TOML_BYTES, "policy TOML")?)
    }

    pub fn from_doc(doc: &PolicyDoc) -> Result<Policy> {
        check_identifier("vault_id", &doc.vault_id)?;
        if doc.version == 0 {
            return Err(invalid("version", "policy versions start at 1"));
        }
        let issued = doc.issued.as_deref().map(|t| parse_time("issued", t)).transpose()?;
        let expires = parse_time("expires", &doc.expires)?;
        if let Some(issued) = issued {
            if expires <= issued {
                return Err(invalid("expires", format!("{expires} is not after issued {issued}")));
            }
        }
        let network = parse_network(&doc.network)?;
        if doc.windows.len() > MAX_WINDOWS {
            return Err(invalid("window", format!("{} windows, at most {MAX_WINDOWS}", doc.windows.len())));
        }
        let windows = doc.windows.iter().enumerate().map(|(i, w)| parse_window(&format!("window[{i}]"), w)).collect::<Result<Vec<_>>>()?;
        check_no_overlap(&windows)?;
        if doc.pushers.len() > MAX_PUSHERS {
            return Err(invalid("pusher", format!("{} pushers, at most {MAX_PUSHERS}", doc.pushers.len())));
        }
        let mut pushers: Vec<Pusher> = Vec::with_capacity(doc.pushers.len());
        for (i, p) in doc.pushers.iter().enumerate() {
            let pusher = parse_pusher(&format!("pusher[{i}]"), p)?;
            if let Some(other) = pushers.iter().find(|o| o.name == pusher.name) {
                return Err(invalid(format!("pusher[{i}].name"), format!("`{}` is listed twice", other.name)));
            }
            if let Some(other) = pushers.iter().find(|o| o.key == pusher.key) {
                return Err(invalid(format!("pusher[{i}].key"), format!("same key as pusher `{}`", other.name)));
            }
            pushers.push(pusher);
        }
        let close = match &doc.close {
            None => Close { early: false, grace: Duration::ZERO },
            Some(c) => Close { early: c.early, grace: parse_duration("close.grace", &c.grace)? },
        };
        let retention = match &doc.retention {
            None => Retention::default(),
            Some(r) if r.keep_last == 0 || r.keep_last > MAX_KEEP_LAST => {
                return Err(invalid("retention.keep_last", format!("{} is not between 1 and {MAX_KEEP_LAST}: every dataset keeps at least its newest snapshot", r.keep_last)));
            }
            Some(r) => Retention { keep_last: r.keep_last },
        };
        let scrub = match &doc.scrub {
            None => Scrub::default(),
            Some(s) => Scrub { every: whole_days("scrub.every", &s.every)? },
        };
        let drill = match &doc.drill {
            None => Drill::default(),
            Some(d) if d.sample > MAX_SAMPLE => return Err(invalid("drill.sample", format!("{} older snapshots per dataset, at most {MAX_SAMPLE}", d.sample))),
            Some(d) => Drill { every: whole_days("drill.every", &d.every)?, sample: d.sample },
        };
        let rotation = match &doc.rotation {
            None => None,
            Some(r) => Some(crate::export::rotation::Rotation::from_doc(r, whole_days("rotation.every", &r.every)?)?),
        };
        let signals = SignalsRule { close_windows: doc.signals.as_ref().is_some_and(|s| s.close_windows) };
        Ok(Policy { vault_id: doc.vault_id.clone(), version: doc.version, issued, expires, network, windows, pushers, close, retention, scrub, drill, rotation, signals })
    }

    /// The canonical written form: every field present, every value in its one spelling.
    pub fn to_doc(&self) -> PolicyDoc {
        let (interface, mac) = match &self.network.nic {
            NicSelector::Name(name) => (Some(name.clone()), None),
            NicSelector::Mac(mac) => (None, Some(format_mac(mac))),
        };
        PolicyDoc {
            vault_id: self.vault_id.clone(),
            version: self.version,
            issued: self.issued.map(|t| t.to_string()),
            expires: self.expires.to_string(),
            network: NetworkDoc { interface, mac, address: format!("{}/{}", self.network.address, self.network.prefix_len), port: self.network.port },
            windows: self.windows.iter().map(window_doc).collect(),
            pushers: self
                .pushers
                .iter()
                .map(|p| PusherDoc { name: p.name.clone(), key: p.key.to_string(), quota: p.quota.to_string(), retain: p.retain.to_string(), datasets: p.datasets.clone() })
                .collect(),
            close: Some(CloseDoc { early: self.close.early, grace: self.close.grace.to_string() }),
            retention: (self.retention != Retention::default()).then_some(RetentionDoc { keep_last: self.retention.keep_last }),
            scrub: (self.scrub != Scrub::default()).then(|| ScrubDoc { every: self.scrub.every.to_string() }),
            drill: (self.drill != Drill::default()).then(|| DrillDoc { every: self.drill.every.to_string(), sample: self.drill.sample }),
            rotation: self.rotation.as_ref().map(crate::export::rotation::Rotation::to_doc),
            signals: (self.signals != SignalsRule::default()).then_some(SignalsDoc { close_windows: self.signals.close_windows }),
        }
    }

    pub fn pusher_by_key(&self, key: &PublicKey) -> Option<&Pusher> {
        self.pushers.iter().find(|p| p.key == *key)
    }

    /// The rules that depend on the trust root: no admin key may push, and every cap holds.
    /// Needs `issued` (a signed policy always has it).
    pub fn check_against_root(&self, root: &TrustRoot) -> Result<()> {
        for pusher in &self.pushers {
            if let Some(admin) = root.admin_with_key(&pusher.key) {
                return Err(Error::Policy(PolicyError::PusherIsAdmin { pusher: pusher.name.clone(), admin: admin.name.clone() }));
            }
        }
        let caps = &root.caps;
        for pusher in &self.pushers {
            if pusher.retain < caps.min_retain {
                return Err(Error::Policy(PolicyError::RetainBelowMinimum { pusher: pusher.name.clone(), retain: pusher.retain.to_string(), min_retain: caps.min_retain.to_string() }));
            }
        }
        for (i, window) in self.windows.iter().enumerate() {
            exceeds(format!("window[{i}] length"), window.length(), caps.max_window)?;
        }
        exceeds("close.grace".to_string(), self.close.grace, caps.max_grace)?;
        let issued = self.issued.ok_or_else(|| invalid("issued", "a signed policy must say when it was issued"))?;
        let validity_secs = self.expires.secs_since(issued);
        if validity_secs > caps.max_validity.secs() {
            return Err(Error::Policy(PolicyError::CapExceeded {
                what: format!("validity (issued {issued} to expires {})", self.expires),
                value: Duration::from_secs(validity_secs).map_or_else(|| "over 100 years".to_string(), |d| d.to_string()),
                cap: caps.max_validity.to_string(),
            }));
        }
        // The caps hold for what the link will do, so for windows as merged (two touching
        // windows are one run): no run longer than `max_window`, and no 24 hours, wherever
        // they start, with more than `max_open_per_day` open. Validity is capped, so the runs
        // are bounded (64 weekly windows over the longest validity the caps allow).
        let runs = schedule::merged_intervals(self, issued, self.expires);
        for run in &runs {
            let length = Duration::from_secs(run.length_secs()).unwrap_or_default();
            exceeds(format!("open run from {} to {} (touching windows merged)", run.start, run.end), length, caps.max_window)?;
        }
        // The busiest 24 hours start where some run starts.
        let day = Duration::from_secs(SECS_PER_DAY).expect("a day is a duration");
        for (i, run) in runs.iter().enumerate() {
            let day_end = run.start.saturating_add(day);
            let open: i64 = runs[i..].iter().take_while(|r| r.start < day_end).map(|r| r.clip(run.start, day_end).length_secs()).sum();
            if open > caps.max_open_per_day.secs() {
                return Err(Error::Policy(PolicyError::CapExceeded {
                    what: format!("open time in the 24 hours from {}", run.start),
                    value: Duration::from_secs(open).unwrap_or_default().to_string(),
                    cap: caps.max_open_per_day.to_string(),
                }));
            }
        }
        Ok(())
    }
}

impl Policy {
    /// Plain lines for terminals and the console: what this policy lets happen.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            format!("vault {} policy v{}", self.vault_id, self.version),
            format!("valid {} until {}", self.issued.map_or_else(|| "(not yet issued)".to_string(), |t| t.to_string()), self.expires),
            format!(
                "network: {} address {}/{} port {}",
                match &self.network.nic {
                    NicSelector::Name(name) => format!("interface {name}"),
                    NicSelector::Mac(mac) => format!("NIC with MAC {}", format_mac(mac)),
                },
                self.network.address,
                self.network.prefix_len,
                self.network.port
            ),
        ];
        for (i, window) in self.windows.iter().enumerate() {
            lines.push(match window {
                Window::Weekly { days, start_secs, duration } => format!(
                    "window[{i}]: every {} at {:02}:{:02} UTC for {duration}",
                    days.indices().map(|d| DAY_NAMES[d]).collect::<Vec<_>>().join(","),
                    start_secs / SECS_PER_HOUR,
                    (start_secs % SECS_PER_HOUR) / SECS_PER_MINUTE
                ),
                Window::Once { from, until } => format!("window[{i}]: once, {from} until {until}"),
            });
        }
        for p in &self.pushers {
            lines.push(format!("pusher {}: key {} quota {} per window, retain {}", p.name, p.key, p.quota, p.retain));
        }
        lines.push(format!("close: {}, grace {}", if self.close.early { "early once every pusher has committed" } else { "at window end" }, self.close.grace));
        lines.push(format!("retention: each snapshot kept until its retain_until, and the newest {} of each dataset always", self.retention.keep_last));
        lines.push(format!("scrub: everything sealed read back and re-hashed every {}", self.scrub.every));
        lines.push(format!("restore drill: every {}, each dataset's newest snapshot and {} older ones", self.drill.every, self.drill.sample));
        lines.push(format!(
            "ransomware signals: a suspect snapshot holds its dataset's snapshots until a release order{}",
            if self.signals.close_windows { ", and its pusher is refused in every window until then" } else { "" }
        ));
        if let Some(r) = &self.rotation {
            let datasets: Vec<String> = r.datasets.iter().map(|d| format!("{}/{}", d.pusher, d.dataset)).collect();
            lines.push(format!("rotation: {} media, one written every {} with the newest {} of {}, {} export(s) kept on each", r.media.len(), r.every, r.newest, datasets.join(", "), r.keep));
        }
        lines
    }
}

fn exceeds(what: String, value: Duration, cap: Duration) -> Result<()> {
    if value > cap {
        return Err(Error::Policy(PolicyError::CapExceeded { what, value: value.to_string(), cap: cap.to_string() }));
    }
    Ok(())
}

fn parse_time(field: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse(text).map_err(|reason| invalid(field, reason))
}

fn parse_duration(field: &str, text: &str) -> Result<Duration> {
    Duration::parse(text).map_err(|reason| invalid(field, reason))
}

fn parse_network(doc: &NetworkDoc) -> Result<Network> {
    let nic = match (&doc.interface, &doc.mac) {
        (Some(name), None) => {
            let ok = !name.is_empty() && name.len() <= 15 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(invalid("network.interface", format!("`{}` is not an interface name (1-15 of a-z, 0-9, -, _, .)", name.escape_default())));
            }
            NicSelector::Name(name.clone())
        }
        (None, Some(mac)) => NicSelector::Mac(parse_mac(mac)?),
        _ => return Err(invalid("network", "give exactly one of `interface` or `mac`")),
    };
    let (addr_text, prefix_text) = doc.address.split_once('/').ok_or_else(|| invalid("network.address", format!("`{}` needs a prefix length, e.g. 192.0.2.10/24", doc.address)))?;
    let address: IpAddr = addr_text.parse().map_err(|_| invalid("network.address", format!("`{addr_text}` is not an IP address")))?;
    let max_prefix = if address.is_ipv4() { 32 } else { 128 };
    let prefix_len: u8 = prefix_text.parse().ok().filter(|p| (1..=max_prefix).contains(p)).ok_or_else(|| invalid("network.address", format!("prefix `/{prefix_text}` must be 1..={max_prefix}")))?;
    let unusable = address.is_unspecified() || address.is_loopback() || address.is_multicast() || matches!(address, IpAddr::V4(v4) if v4.is_broadcast());
    if unusable {
        return Err(invalid("network.address", format!("{address} cannot be a host address")));
    }
    if doc.port == 0 {
        return Err(invalid("network.port", "port 0 is not a port"));
    }
    Ok(Network { nic, address, prefix_len, port: doc.port })
}

/// A unicast MAC address written `52:54:00:12:34:56`.
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bad = || invalid("network.mac", format!("`{}` is not a MAC address like 52:54:00:12:34:56", text.escape_default()));
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = crate::keys::hex_byte(part).ok_or_else(bad)?;
    }
    if mac[0] & 1 == 1 {
        return Err(invalid("network.mac", format!("{text} is a multicast address")));
    }
    Ok(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn parse_window(field: &str, doc: &WindowDoc) -> Result<Window> {
    let recurring = doc.days.is_some() || doc.start.is_some() || doc.duration.is_some();
    let once = doc.from.is_some() || doc.until.is_some();
    match (recurring, once) {
        (true, true) => Err(invalid(field, "mixes recurring (days/start/duration) and one-shot (from/until) fields")),
        (false, false) => Err(invalid(field, "needs either days/start/duration or from/until")),
        (true, false) => {
            let need = |name: &str, v: &Option<String>| v.clone().ok_or_else(|| invalid(format!("{field}.{name}"), "missing in a recurring window"));
            let day_names = doc.days.clone().ok_or_else(|| invalid(format!("{field}.days"), "missing in a recurring window"))?;
            let start_text = need("start", &doc.start)?;
            let duration_text = need("duration", &doc.duration)?;
            if day_names.is_empty() {
                return Err(invalid(format!("{field}.days"), "is empty"));
            }
            let mut indices = Vec::new();
            for (j, name) in day_names.iter().enumerate() {
                let day_field = format!("{field}.days[{j}]");
                let index = DAY_NAMES.iter().position(|d| *d == name.as_str()).ok_or_else(|| invalid(&day_field, format!("`{}` is not one of {}", name.escape_default(), DAY_NAMES.join(", "))))?;
                if indices.contains(&index) {
                    return Err(invalid(&day_field, format!("`{name}` is listed twice")));
                }
                indices.push(index);
            }
            let start_secs = parse_clock(&format!("{field}.start"), &start_text)?;
            let duration = parse_duration(&format!("{field}.duration"), &duration_text)?;
            if duration == Duration::ZERO || duration.secs() > SECS_PER_DAY {
                return Err(invalid(format!("{field}.duration"), format!("{duration} must be more than 0s and at most 24h (use more days for longer)")));
            }
            Ok(Window::Weekly { days: WeekDays::from_indices(indices), start_secs, duration })
        }
        (false, true) => {
            let from_text = doc.from.as_deref().ok_or_else(|| invalid(format!("{field}.from"), "missing in a one-shot window"))?;
            let until_text = doc.until.as_deref().ok_or_else(|| invalid(format!("{field}.until"), "missing in a one-shot window"))?;
            let from = parse_time(&format!("{field}.from"), from_text)?;
            let until = parse_time(&format!("{field}.until"), until_text)?;
            if until <= from {
                return Err(invalid(format!("{field}.until"), format!("{until} is not after from {from} (inverted window)")));
            }
            Ok(Window::Once { from, until })
        }
    }
}

/// `HH:MM` in UTC, 00:00 to 23:59.
fn parse_clock(field: &str, text: &str) -> Result<i64> {
    let bad = || invalid(field, format!("`{}` is not a UTC time of day like 01:00", text.escape_default()));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let hours: i64 = h.parse().map_err(|_| bad())?;
    let minutes: i64 = m.parse().map_err(|_| bad())?;
    if !(0..24).contains(&hours) || !(0..60).contains(&minutes) {
        return Err(bad());
    }
    Ok(hours * SECS_PER_HOUR + minutes * SECS_PER_MINUTE)
}

fn window_doc(window: &Window) -> WindowDoc {
    match window {
        Window::Weekly { days, start_secs, duration } => WindowDoc {
            days: Some(days.indices().map(|d| DAY_NAMES[d].to_string()).collect()),
            start: Some(format!("{:02}:{:02}", start_secs / SECS_PER_HOUR, (start_secs % SECS_PER_HOUR) / SECS_PER_MINUTE)),
            duration: Some(duration.to_string()),
            ..WindowDoc::default()
        },
        Window::Once { from, until } => WindowDoc { from: Some(from.to_string()), until: Some(until.to_string()), ..WindowDoc::default() },
    }
}

fn parse_pusher(field: &str, doc: &PusherDoc) -> Result<Pusher> {
    check_identifier(&format!("{field}.name"), &doc.name)?;
    let key = PublicKey::parse(&doc.key, &format!("{field}.key"))?;
    let quota = ByteSize::parse(&doc.quota).map_err(|reason| invalid(format!("{field}.quota"), reason))?;
    if quota.bytes() == 0 {
        return Err(invalid(format!("{field}.quota"), "0 bytes would refuse every push"));
    }
    let retain = parse_duration(&format!("{field}.retain"), &doc.retain)?;
    if retain == Duration::ZERO {
        return Err(invalid(format!("{field}.retain"), "retention must be longer than 0s"));
    }
    if doc.datasets.len() > MAX_DATASETS_PER_PUSHER {
        return Err(invalid(format!("{field}.datasets"), format!("{} datasets, at most {MAX_DATASETS_PER_PUSHER}", doc.datasets.len())));
    }
    for (i, dataset) in doc.datasets.iter().enumerate() {
        crate::push::ingest::check_dataset(dataset).map_err(|e| invalid(format!("{field}.datasets[{i}]"), e.to_string()))?;
        if doc.datasets[..i].contains(dataset) {
            return Err(invalid(format!("{field}.datasets[{i}]"), format!("`{dataset}` is listed twice")));
        }
    }
    Ok(Pusher { name: doc.name.clone(), key, quota, retain, datasets: doc.datasets.clone() })
}

/// Windows may touch (they are merged) but not overlap: an overlap is almost always a typo,
/// and refusing it keeps "total open time" what the author thinks it is.
fn check_no_overlap(windows: &[Window]) -> Result<()> {
    // Weekly windows last at most a day, so two weeks of occurrences show every overlap among
    // them, including a Sunday-night window running into Monday.
    let monday = Timestamp::from_unix(4 * SECS_PER_DAY).expect("1970-01-05 is in range");
    let two_weeks_later = monday.saturating_add(Duration::from_secs(14 * SECS_PER_DAY).expect("in range"));
    let mut weekly: Vec<(usize, Interval)> = Vec::new();
    for (i, window) in windows.iter().enumerate() {
        if let Window::Weekly { .. } = window {
            let occurrences = schedule::window_occurrences(window, monday, two_weeks_later);
            weekly.extend(occurrences.into_iter().map(|iv| (i, iv)));
        }
    }
    weekly.sort_by_key(|(_, iv)| iv.start);
    let mut latest_end: Option<(usize, Timestamp)> = None;
    for (i, iv) in &weekly {
        if let Some((j, end)) = latest_end {
            if iv.start < end && *i != j {
                // The reference fortnight is in 1970: only its weekday and time mean anything.
                let secs = iv.start.unix();
                let (day, time) = (secs.div_euclid(SECS_PER_DAY), secs.rem_euclid(SECS_PER_DAY));
                let when = format!("every {} at {:02}:{:02} UTC", DAY_NAMES[schedule::weekday_of_day(day)], time / SECS_PER_HOUR, (time % SECS_PER_HOUR) / SECS_PER_MINUTE);
                return Err(overlap_error(*i, j, when));
            }
        }
        if latest_end.is_none_or(|(_, end)| iv.end > end) {
            latest_end = Some((*i, iv.end));
        }
    }
    // A one-shot window is checked against every occurrence of every other window in its span.
    for (i, window) in windows.iter().enumerate() {
        if let Window::Once { from, until } = window {
            for (j, other) in windows.iter().enumerate().filter(|(j, _)| *j != i) {
                if let Some(hit) = schedule::window_occurrences(other, *from, *until).first() {
                    return Err(overlap_error(i, j, format!("at {}", hit.start.max(*from))));
                }
            }
        }
    }
    Ok(())
}

/// `when`: `every mon at 01:30 UTC` for weekly windows, `at <time>` with a one-shot one.
fn overlap_error(a: usize, b: usize, when: String) -> Error {
    let (first, second) = (a.min(b), a.max(b));
    invalid(format!("window[{second}]"), format!("overlaps window[{first}] (both open {when}): move or shorten one of them; windows may touch (one ending as the next starts) but not overlap"))
}

/// A cadence in whole days within the bounds scrubs and drills share.
fn whole_days(field: &str, text: &str) -> Result<Duration> {
    let every = parse_duration(field, text)?;
    let days = every.secs() / 86_400;
    if every.secs() % 86_400 != 0 || !(MIN_EVERY_DAYS..=MAX_EVERY_DAYS).contains(&days) {
        return Err(invalid(field, format!("{every} is not a whole number of days from {MIN_EVERY_DAYS}d to {MAX_EVERY_DAYS}d")));
    }
    Ok(every)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::test_keys::key;

    pub fn example_toml() -> String {
        format!(
            r#"
vault_id = "vault-01"
version = 7
issued = "2026-11-20T00:00:00Z"
expires = "2027-01-31T00:00:00Z"
[network]
interface = "eth0"
address = "192.0.2.10/24"
port = 7400
[[window]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "01:00"
duration = "45m"
[[window]]
from = "2026-12-01T02:00:00Z"
until = "2026-12-01T02:30:00Z"
[[pusher]]
name = "db-backup"
key = "{}"
quota = "200GiB"
retain = "35d"
[close]
early = true
grace = "2m"
"#,
            key(50).public_key()
        )
    }

    fn refusal(toml: &str) -> String {
        Policy::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn example_parses_to_expected_values() {
        let policy = Policy::from_toml(&example_toml()).unwrap();
        assert_eq!(policy.version, 7);
        assert_eq!(policy.windows.len(), 2);
        assert_eq!(policy.pushers[0].quota.bytes(), 200 << 30);
        assert_eq!(policy.close.grace.secs(), 120);
        assert!(policy.close.early);
        assert_eq!(policy.network.nic, NicSelector::Name("eth0".into()));
    }

    #[test]
    fn keep_last_defaults_to_three_is_bounded_and_only_written_when_set() {
        let policy = Policy::from_toml(&example_toml()).unwrap();
        assert_eq!(policy.retention.keep_last, 3);
        assert_eq!(policy.to_doc().retention, None, "a policy without it signs the same bytes as before it existed");
        let five = Policy::from_toml(&(example_toml() + "[retention]\nkeep_last = 5\n")).unwrap();
        assert_eq!(five.retention.keep_last, 5);
        assert_eq!(Policy::from_doc(&five.to_doc()).unwrap(), five);
        for bad in ["0", "10001"] {
            let why = refusal(&(example_toml() + &format!("[retention]\nkeep_last = {bad}\n")));
            assert!(why.contains("retention.keep_last") && why.contains("every dataset keeps at least its newest snapshot"), "{why}");
        }
    }

    #[test]
    fn drills_default_to_every_90_days_with_two_older_snapshots_and_are_bounded() {
        assert_eq!(Policy::from_toml(&example_toml()).unwrap().drill, Drill::default());
        assert_eq!(Policy::from_toml(&example_toml()).unwrap().to_doc().drill, None);
        let monthly = Policy::from_toml(&(example_toml() + "[drill]\nevery = \"30d\"\nsample = 5\n")).unwrap();
        assert_eq!((monthly.drill.every.secs(), monthly.drill.sample), (30 * 86_400, 5));
        assert_eq!(Policy::from_doc(&monthly.to_doc()).unwrap(), monthly);
        assert!(refusal(&(example_toml() + "[drill]\nevery = \"12h\"\nsample = 1\n")).contains("drill.every"));
        assert!(refusal(&(example_toml() + "[drill]\nevery = \"30d\"\nsample = 65\n")).contains("drill.sample"));
    }

    #[test]
    fn scrub_every_defaults_to_30_days_in_whole_days_within_bounds() {
        assert_eq!(Policy::from_toml(&example_toml()).unwrap().scrub, Scrub::default());
        let weekly = Policy::from_toml(&(example_toml() + "[scrub]\nevery = \"7d\"\n")).unwrap();
        assert_eq!(weekly.scrub.every.secs(), 7 * 86_400);
        assert_eq!(Policy::from_doc(&weekly.to_doc()).unwrap(), weekly);
        assert_eq!(Policy::from_toml(&example_toml()).unwrap().to_doc().scrub, None);
        for bad in ["12h", "400d", "1d6h"] {
            let why = refusal(&(example_toml() + &format!("[scrub]\nevery = \"{bad}\"\n")));
            assert!(why.contains("scrub.every"), "{bad}: {why}");
        }
    }

    #[test]
    fn a_root_with_min_retain_refuses_a_shorter_retain_by_name() {
        let mut root = crate::policy::root::tests::root_with("vault-01", 1, 2, &[1, 2, 3]);
        let policy = Policy::from_toml(&example_toml()).unwrap();
        root.caps.min_retain = Duration::parse("35d").unwrap();
        assert_eq!(policy.check_against_root(&root), Ok(()), "35d is not shorter than 35d");
        root.caps.min_retain = Duration::parse("90d").unwrap();
        let why = policy.check_against_root(&root).unwrap_err().to_string();
        assert_eq!(why, "pusher `db-backup` keeps snapshots for 35d, shorter than the trust root's min_retain 90d: raise its `retain` (the root's floor can only be lowered by rotating the root)");
    }

    #[test]
    fn canonical_doc_round_trips() {
        let policy = Policy::from_toml(&example_toml()).unwrap();
        assert_eq!(Policy::from_doc(&policy.to_doc()).unwrap(), policy);
    }

    #[test]
    fn a_pusher_may_name_its_datasets_each_checked_once() {
        let with = |list: &str| example_toml().replace("retain = \"35d\"", &format!("retain = \"35d\"\ndatasets = {list}"));
        let policy = Policy::from_toml(&with(r#"["pgdump", "etc"]"#)).unwrap();
        assert_eq!(policy.pushers[0].datasets, ["pgdump", "etc"]);
        assert_eq!(Policy::from_doc(&policy.to_doc()).unwrap(), policy);
        // Without the list, the signed form has no `datasets` at all: older bundles verify.
        let plain = Policy::from_toml(&example_toml()).unwrap();
        assert!(!serde_json::to_string(&plain.to_doc()).unwrap().contains("datasets"));
        assert!(refusal(&with(r#"["etc", "etc"]"#)).contains("invalid field `pusher[0].datasets[1]`: `etc` is listed twice"));
        assert!(refusal(&with(r#"["../x"]"#)).contains("pusher[0].datasets[0]"));
        assert!(refusal(&with(&format!(r#"["{}"]"#, "d".repeat(39)))).contains("at most 38"));
        let many: Vec<String> = (0..=MAX_DATASETS_PER_PUSHER).map(|i| format!("\"d{i}\"")).collect();
        assert!(refusal(&with(&format!("[{}]", many.join(", ")))).contains("33 datasets, at most 32"));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = refusal(&example_toml().replace("[close]", "[close]\nlinger = true"));
        assert!(err.contains("unknown field `linger`"), "{err}");
        let err = refusal(&format!("colour = 1\n{}", example_toml()));
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (r#"duration = "45m""#, r#"duration = "45 minutes""#, "window[0].duration"),
            (r#"start = "01:00""#, r#"start = "25:00""#, "window[0].start"),
            (r#""fri"]"#, r#""fri", "mon"]"#, "window[0].days[5]"),
            (r#""fri"]"#, r#""fri", "funday"]"#, "window[0].days[5]"),
            (r#"until = "2026-12-01T02:30:00Z""#, r#"until = "2026-12-01T01:30:00Z""#, "window[1].until"),
            (r#"quota = "200GiB""#, r#"quota = "lots""#, "pusher[0].quota"),
            (r#"retain = "35d""#, r#"retain = "0s""#, "pusher[0].retain"),
            (r#"grace = "2m""#, r#"grace = "soon""#, "close.grace"),
            (r#"address = "192.0.2.10/24""#, r#"address = "192.0.2.10""#, "network.address"),
            (r#"address = "192.0.2.10/24""#, r#"address = "127.0.0.1/8""#, "network.address"),
            (r#"port = 7400"#, r#"port = 0"#, "network.port"),
            (r#"interface = "eth0""#, r#"interface = "eth0/../x""#, "network.interface"),
            (r#"expires = "2027-01-31T00:00:00Z""#, r#"expires = "2026-01-31T00:00:00Z""#, "expires"),
            (r#"vault_id = "vault-01""#, r#"vault_id = "../etc""#, "vault_id"),
        ];
        for (from, to, field) in cases {
            let toml = example_toml().replace(from, to);
            assert_ne!(toml, example_toml(), "case {to} did not apply");
            let err = refusal(&toml);
            assert!(err.contains(&format!("`{field}`")), "{to}: expected field {field} in: {err}");
        }
    }

    #[test]
    fn interface_and_mac_are_exclusive() {
        let err = refusal(&example_toml().replace(r#"interface = "eth0""#, "interface = \"eth0\"\nmac = \"52:54:00:12:34:56\""));
        assert!(err.contains("exactly one of"), "{err}");
        let policy = Policy::from_toml(&example_toml().replace(r#"interface = "eth0""#, r#"mac = "52:54:00:AB:34:56""#)).unwrap();
        assert_eq!(policy.to_doc().network.mac.as_deref(), Some("52:54:00:ab:34:56"));
        // Two hex digits a byte, no signs.
        for bad in ["+2:54:00:12:34:56", "52:54:00:12:34:5", "52:54:00:12:34:567"] {
            assert!(parse_mac(bad).unwrap_err().to_string().contains("is not a MAC address"), "{bad}");
        }
        let err = refusal(&example_toml().replace(r#"interface = "eth0""#, r#"mac = "01:54:00:ab:34:56""#));
        assert!(err.contains("multicast"), "{err}");
    }

    #[test]
    fn key_listed_twice_is_refused() {
        let toml = example_toml() + &format!("[[pusher]]\nname = \"other\"\nkey = \"{}\"\nquota = \"1GiB\"\nretain = \"1d\"\n", key(50).public_key());
        let err = refusal(&toml);
        assert!(err.contains("`pusher[1].key`") && err.contains("db-backup"), "{err}");
        let toml = example_toml() + &format!("[[pusher]]\nname = \"db-backup\"\nkey = \"{}\"\nquota = \"1GiB\"\nretain = \"1d\"\n", key(51).public_key());
        assert!(refusal(&toml).contains("`pusher[1].name`"));
    }

    #[test]
    fn overlapping_windows_are_refused_touching_ones_are_not() {
        // Recurring vs recurring: Mon 01:00+45m against Mon 01:30.
        let overlap = example_toml() + "[[window]]\ndays = [\"mon\"]\nstart = \"01:30\"\nduration = \"1h\"\n";
        let err = refusal(&overlap);
        assert!(err.contains("`window[2]`") && err.contains("overlaps window[0] (both open every mon at 01:30 UTC)"), "{err}");
        // One-shot inside a recurring window (2026-12-01 is a Tuesday).
        let overlap = example_toml() + "[[window]]\nfrom = \"2026-12-01T01:10:00Z\"\nuntil = \"2026-12-01T01:20:00Z\"\n";
        assert!(refusal(&overlap).contains("overlaps window[0] (both open at 2026-12-01T01:10:00Z)"));
        // Sunday night wrapping into Monday's window: said as the weekday, never a 1970 date.
        let overlap = example_toml() + "[[window]]\ndays = [\"sun\"]\nstart = \"23:00\"\nduration = \"2h30m\"\n";
        let err = refusal(&overlap);
        assert!(err.contains("overlaps window[0] (both open every mon at 01:00 UTC)") && !err.contains("1970"), "{err}");
        // Touching is fine.
        let touching = example_toml() + "[[window]]\ndays = [\"mon\"]\nstart = \"01:45\"\nduration = \"1h\"\n";
        Policy::from_toml(&touching).unwrap();
    }

    #[test]
    fn mixed_or_empty_windows_are_refused() {
        let err = refusal(&(example_toml() + "[[window]]\ndays = [\"sat\"]\nstart = \"01:00\"\nduration = \"1h\"\nfrom = \"2026-12-05T00:00:00Z\"\n"));
        assert!(err.contains("`window[2]`") && err.contains("mixes"), "{err}");
        let err = refusal(&(example_toml() + "[[window]]\ndays = [\"sat\"]\nstart = \"01:00\"\n"));
        assert!(err.contains("`window[2].duration`"), "{err}");
    }

    #[test]
    fn deep_nesting_and_huge_input_are_refused_without_a_crash() {
        let deep = format!("x = {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(Policy::from_toml(&deep), Err(Error::Malformed { .. })));
        let deep_tables = format!("x = {}1{}", "{a = ".repeat(50_000), "}".repeat(50_000));
        assert!(matches!(Policy::from_toml(&deep_tables), Err(Error::Malformed { .. })));
        let huge = " ".repeat(MAX_POLICY_TOML_BYTES + 1);
        assert!(matches!(Policy::from_toml(&huge), Err(Error::TooLarge { .. })));
    }
}
