//! What happens to sealed snapshots over the years, as rules over values: [`retention`]
//! (which snapshots have expired, which must be kept, and when expiry may run at all) and
//! [`capacity`] (how full the disk is, when it will be full, when to warn) and [`scrub`] (when
//! everything sealed is read back and re-hashed) and [`collection`] (which packs garbage
//! collection removes or rewrites, and when) and [`drill`] (which snapshots a restore drill
//! rebuilds, when, and what its signed report says).
//! The daemon carries the decisions out on the store while the vault is sealed.

pub mod capacity;
pub mod collection;
pub mod drill;
pub mod retention;
pub mod scrub;
