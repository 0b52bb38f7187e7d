//! The seam between link control (issue 5) and the push-session server (issue 4).
//!
//! When a window opens and netlink has confirmed the link up, the daemon binds one
//! [`TcpListener`] to the policy's static address and port (never a wildcard address) and
//! calls the session server once with a [`SessionContext`]. The server:
//! - accepts connections from `listener` until `stop` says [`Stop::StopAccepting`] (then it
//!   drops the listener and lets in-flight sessions finish) or [`Stop::AbortAll`] (then it
//!   closes every session at once and returns);
//! - reports through `reports`, in order: [`SessionReport::Started`] when it accepts a
//!   connection, [`SessionReport::Committed`] once a pusher's snapshot is durable **and** the
//!   acknowledgement was written to the client, [`SessionReport::Ended`] when the connection
//!   is gone (every `Started` is matched by exactly one `Ended`);
//! - returns when the listener is dropped and no session is left.
//!
//! The gate counts sessions from these reports (grace: the link goes down when the last one
//! ends or `close.grace` runs out) and closes early once every pusher listed in the policy has
//! committed. A server must never report a commit it did not make durable.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use vault_core::policy::Policy;

/// What the daemon asks of the running session server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep accepting.
    Running,
    /// The window is closing: accept nothing more; in-flight sessions may finish.
    StopAccepting,
    /// Grace ran out or an alarm fired: close every session now.
    AbortAll,
}

/// What a session server tells the gatekeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionReport {
    Started {
        peer: SocketAddr,
    },
    Ended {
        peer: SocketAddr,
    },
    /// `pusher` is the policy's name for the authenticated key; `dataset` what it sealed.
    Committed {
        pusher: String,
        dataset: String,
    },
    /// The session server cannot serve this window (its worker would not start confined, or
    /// broke the relay's rules): the gate closes the window with an alarm and retries later.
    ServerFailed {
        reason: String,
    },
    /// An event for the console (session accepted or refused, snapshot sealed); it does not
    /// change the gate.
    Note(Box<crate::events::Event>),
    /// A sealed snapshot the ransomware signals judged suspect: the daemon holds its dataset
    /// (and, if the policy says so, refuses its pusher) until a release order.
    Suspect {
        pusher: String,
        dataset: String,
        snapshot: String,
        signals: Vec<String>,
    },
}

/// Everything a session server gets for one window.
pub struct SessionContext {
    /// Bound to exactly the policy's address and port.
    pub listener: TcpListener,
    /// The policy in force for this window (pusher keys, quotas, retention).
    pub policy: Arc<Policy>,
    pub stop: watch::Receiver<Stop>,
    pub reports: mpsc::Sender<SessionReport>,
    /// The vault's time for this window (receipts' `received_at`, the retention base): the
    /// daemon's clock as the gate judged it at its last input (never before the gate's time nor
    /// a stamp already given, never a jump the next tick has not judged yet).
    pub clock: Arc<dyn vault_core::units::TimeProvider>,
    /// Pushers with a suspect hold, kept current by the daemon: refused while the policy's
    /// `signals.close_windows` is set.
    pub suspects: watch::Receiver<std::collections::BTreeSet<String>>,
}

/// A session server: called once per window, runs until its sessions are done. The
/// production one is [`crate::push_server::server`].
pub type SessionServer = Arc<dyn Fn(SessionContext) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Why a session ended early (the worker's reading or the daemon's checks), and whether the
/// pusher is told (a `refused` frame with the reason) or is gone already.
#[derive(Debug)]
pub struct Refusal {
    pub reason: String,
    pub tell_peer: bool,
}

impl Refusal {
    pub fn told(reason: String) -> Refusal {
        Refusal { reason, tell_peer: true }
    }
    pub fn gone(reason: String) -> Refusal {
        Refusal { reason, tell_peer: false }
    }
}

/// What the daemon serves with: the session server, and the store it seals into (which the
/// lifecycle rules, expiry first, are carried out on).
pub struct Services {
    pub server: SessionServer,
    pub store: Option<Arc<vault_store::Store>>,
    /// Shared by seals, exclusive for the lifecycle ([`crate::lifecycle::Maintenance`]).
    pub maintenance: crate::lifecycle::Maintenance,
    /// The power-cut test hook's pause after each lifecycle step (zero unless the kernel command
    /// line asks: [`crate::init::SEAL_STEP_PAUSE_PARAM`]).
    pub step_pause: std::time::Duration,
    /// The vault key, for what the lifecycle signs (drill reports).
    pub identity: Option<Arc<crate::identity::VaultIdentity>>,
}

/// Makes the session server once the NICs are down (opening the store, loading the vault
/// key), reporting what it found on the event log. An error keeps the vault sealed.
pub type ServerFactory = Box<dyn FnOnce(&mut crate::events::EventLog) -> crate::error::Result<Services> + Send>;
