//! The gatekeeper: the one service of the vault appliance. The pure rules live in
//! `vault-core`; this crate is the I/O shell: the policy store, link control over rtnetlink,
//! the netlink watchdog, the egress guard, the daemon loop and the session seam.

pub mod audit;
pub mod daemon;
pub mod egress_guard;
pub mod error;
pub mod events;
pub mod export;
pub mod heap;
pub mod identity;
pub mod ingress_filter;
pub mod init;
pub mod lifecycle;
pub mod link;
pub mod modules;
pub mod outgoing_frames;
pub mod policy_store;
pub mod push_server;
pub mod read_ahead;
pub mod run;
pub mod session_worker;
pub mod sessions_api;
pub mod usb;
pub mod watchdog;
