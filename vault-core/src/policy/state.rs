//! What the vault remembers between bundles: the highest policy version it accepted (the
//! rollback floor), the time floor (the vault has no NTP; signed `issued` times and the
//! highest clock reading it has seen are lower bounds on the real time), and the trust root
//! it rotated to, if any. The daemon persists this; the core only encodes and decides.

use serde::{Deserialize, Serialize};

use crate::canonical::{self, check_size};
use crate::error::PolicyError;
use crate::error::{invalid, Error, Result};
use crate::lifecycle::retention::KeepLastFloor;
use crate::policy::orders::OrderState;
use crate::policy::root::{RootDoc, TrustRoot};
use crate::units::Timestamp;

pub const MAX_STATE_BYTES: usize = 256 * 1024;
/// The state's file name inside the vault's state directory.
pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultState {
    /// Highest accepted policy version; 0 before the first bundle.
    pub accepted_version: u64,
    /// No instant before this can be "now".
    pub time_floor: Timestamp,
    /// The trust root a rotation bundle installed; `None` means the baked root is in force.
    pub rotated_root: Option<TrustRoot>,
    /// When the last scrub that read the whole store started (vault time).
    pub last_scrub: Option<Timestamp>,
    /// When the last restore drill that finished started (vault time), and its summary.
    pub last_drill: Option<(Timestamp, String)>,
    /// Holds in force, purges waiting, the serial floor of each kind of order.
    pub orders: OrderState,
    /// When a medium of the policy's rotation set was last written (vault time).
    pub last_rotation: Option<Timestamp>,
    /// The accepted policy's `keep_last` (`None` before the first policy, or in a state written
    /// before it was recorded), and a higher one still kept to after a policy lowered it
    /// ([`crate::lifecycle::retention::keep_last_floor`]).
    pub accepted_keep_last: Option<u32>,
    pub keep_last_floor: Option<KeepLastFloor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDoc {
    pub accepted_version: u64,
    pub time_floor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_root: Option<RootDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scrub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill_result: Option<String>,
    #[serde(default, skip_serializing_if = "OrderState::is_empty")]
    pub orders: OrderState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last_floor: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last_floor_until: Option<String>,
}

impl Default for VaultState {
    fn default() -> Self {
        VaultState {
            accepted_version: 0,
            time_floor: Timestamp::EPOCH,
            rotated_root: None,
            last_scrub: None,
            last_drill: None,
            orders: OrderState::default(),
            last_rotation: None,
            accepted_keep_last: None,
            keep_last_floor: None,
        }
    }
}

impl VaultState {
    pub fn from_bytes(bytes: &[u8]) -> Result<VaultState> {
        check_size(bytes.len(), MAX_STATE_BYTES, "vault state")?;
        let doc: StateDoc = canonical::decode(bytes, "vault state")?;
        Ok(VaultState {
            accepted_version: doc.accepted_version,
            time_floor: Timestamp::parse(&doc.time_floor).map_err(|reason| invalid("time_floor", reason))?,
            rotated_root: doc.rotated_root.as_ref().map(TrustRoot::from_doc).transpose()?,
            last_scrub: doc.last_scrub.as_deref().map(|t| Timestamp::parse(t).map_err(|reason| invalid("last_scrub", reason))).transpose()?,
            last_drill: match (&doc.last_drill, &doc.last_drill_result) {
                (Some(at), Some(result)) => Some((Timestamp::parse(at).map_err(|reason| invalid("last_drill", reason))?, result.clone())),
                (None, None) => None,
                _ => return Err(invalid("last_drill", "a drill's time and result go together")),
            },
            orders: doc.orders.clone(),
            last_rotation: doc.last_rotation.as_deref().map(|t| Timestamp::parse(t).map_err(|reason| invalid("last_rotation", reason))).transpose()?,
            accepted_keep_last: doc.accepted_keep_last,
            keep_last_floor: match (doc.keep_last_floor, &doc.keep_last_floor_until) {
                (Some(kept), Some(until)) => Some((kept, Timestamp::parse(until).map_err(|reason| invalid("keep_last_floor_until", reason))?)),
                (None, None) => None,
                _ => return Err(invalid("keep_last_floor", "a kept keep_last and its end go together")),
            },
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        canonical::encode(&StateDoc {
            accepted_version: self.accepted_version,
            time_floor: self.time_floor.to_string(),
            rotated_root: self.rotated_root.as_ref().map(TrustRoot::to_doc),
            last_scrub: self.last_scrub.map(|t| t.to_string()),
            last_drill: self.last_drill.as_ref().map(|(at, _)| at.to_string()),
            last_drill_result: self.last_drill.as_ref().map(|(_, result)| result.clone()),
            orders: self.orders.clone(),
            last_rotation: self.last_rotation.map(|t| t.to_string()),
            accepted_keep_last: self.accepted_keep_last,
            keep_last_floor: self.keep_last_floor.map(|(kept, _)| kept),
            keep_last_floor_until: self.keep_last_floor.map(|(_, until)| until.to_string()),
        })
    }

    /// [`VaultState::to_bytes`], refused if the daemon could not read it back
    /// ([`MAX_STATE_BYTES`]): a state that grew too large is never written, so the state
    /// on disk stays the last one that can be read.
    pub fn to_bytes_bounded(&self) -> Result<Vec<u8>> {
        let bytes = self.to_bytes();
        check_size(bytes.len(), MAX_STATE_BYTES, "vault state")?;
        Ok(bytes)
    }

    /// The root in force: the newer of the baked one and the rotated one. Two different
    /// roots claiming the same version, or a root for another vault, is a hard error.
    pub fn current_root(&self, baked: &TrustRoot) -> Result<TrustRoot> {
        let Some(rotated) = &self.rotated_root else { return Ok(baked.clone()) };
        if rotated.vault_id != baked.vault_id {
            return Err(Error::Policy(PolicyError::WrongVault { bundle: rotated.vault_id.clone(), vault: baked.vault_id.clone() }));
        }
        match rotated.version.cmp(&baked.version) {
            std::cmp::Ordering::Greater => Ok(rotated.clone()),
            std::cmp::Ordering::Less => Ok(baked.clone()),
            std::cmp::Ordering::Equal if rotated == baked => Ok(baked.clone()),
            std::cmp::Ordering::Equal => Err(Error::Policy(PolicyError::RootConflict { stored: rotated.version, baked: baked.version })),
        }
    }

    /// Raises the time floor to `seen` if it is later.
    pub fn observe_time(&mut self, seen: Timestamp) {
        self.time_floor = self.time_floor.max(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::root::tests::root_with;

    #[test]
    fn round_trips_and_refuses_unknown_fields() {
        let state = VaultState {
            accepted_version: 5,
            time_floor: Timestamp::parse("2026-11-25T00:00:00Z").unwrap(),
            rotated_root: Some(root_with("vault-01", 2, 1, &[9])),
            last_scrub: Some(Timestamp::parse("2026-11-20T00:00:00Z").unwrap()),
            last_drill: Some((Timestamp::parse("2026-11-21T00:00:00Z").unwrap(), "3 snapshots: no errors".into())),
            orders: OrderState::default(),
            last_rotation: Some(Timestamp::parse("2026-11-22T00:00:00Z").unwrap()),
            accepted_keep_last: Some(3),
            keep_last_floor: Some((30, Timestamp::parse("2026-11-28T00:00:00Z").unwrap())),
        };
        assert_eq!(VaultState::from_bytes(&state.to_bytes()).unwrap(), state);
        let err = VaultState::from_bytes(br#"{"accepted_version":1,"time_floor":"2026-11-25T00:00:00Z","x":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
        let huge = vec![b' '; MAX_STATE_BYTES + 1];
        assert!(matches!(VaultState::from_bytes(&huge), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn a_state_too_large_to_read_back_is_never_encoded_for_writing() {
        let mut state = VaultState::default();
        state.orders.held_snapshots = (0..6000).map(|i| format!("20261120T010000Z-some-long-dataset-name-{i:08x}")).collect();
        let err = state.to_bytes_bounded().unwrap_err();
        assert!(matches!(err, Error::TooLarge { what: "vault state", limit: MAX_STATE_BYTES, .. }), "{err}");
        state.orders.held_snapshots.clear();
        assert_eq!(VaultState::from_bytes(&state.to_bytes_bounded().unwrap()).unwrap(), state);
    }

    #[test]
    fn newer_root_wins_and_conflicts_are_refused() {
        let baked = root_with("vault-01", 1, 1, &[1]);
        let rotated = root_with("vault-01", 2, 1, &[2]);
        let mut state = VaultState { rotated_root: Some(rotated.clone()), ..VaultState::default() };
        assert_eq!(state.current_root(&baked).unwrap(), rotated);
        assert_eq!(state.current_root(&root_with("vault-01", 3, 1, &[3])).unwrap().version, 3);
        state.rotated_root = Some(root_with("vault-01", 1, 1, &[4]));
        assert_eq!(state.current_root(&baked).unwrap_err(), Error::Policy(PolicyError::RootConflict { stored: 1, baked: 1 }));
        state.rotated_root = Some(root_with("vault-02", 2, 1, &[4]));
        assert!(matches!(state.current_root(&baked), Err(Error::Policy(PolicyError::WrongVault { .. }))));
    }
}
