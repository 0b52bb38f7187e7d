//! What happens to sealed snapshots over the years, as rules over values: [`retention`]
//! (which snapshots have expired, which must be kept, and when expiry may run at all) and
//! [`capacity`] (how full the disk is, when it will be full, when to warn) and [`scrub`] (when
//! everything sealed is read back and re-hashed).
//! The daemon carries the decisions out on the store while the vault is sealed.

pub mod capacity;
pub mod retention;
pub mod scrub;
