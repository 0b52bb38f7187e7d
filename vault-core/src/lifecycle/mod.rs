//! What happens to sealed snapshots over the years, as rules over values: [`retention`]
//! (which snapshots have expired, which must be kept, and when expiry may run at all).
//! The daemon carries the decisions out on the store while the vault is sealed.

pub mod retention;
