//! A push, in the order its data flows: a connection is [`admission`]-checked until it has
//! proved a pusher key; the pusher cuts [`chunk`]s and describes them in a
//! [`manifest`]; both travel as [`protocol`] frames; every frame is held to the bounds in
//! [`limits`] before anything is spent on it; [`ingest`] is the vault's side of one session;
//! a sealed snapshot is answered with a signed [`receipt`]. On the vault, the network side of all
//! this runs in an unprivileged worker that hands the daemon checked frames over the [`relay`].

pub mod admission;
pub mod chunk;
pub mod ingest;
pub mod limits;
pub mod manifest;
pub mod protocol;
pub mod receipt;
pub mod relay;
pub mod signals;
