//! The daemon's one error type.

#[derive(Debug, thiserror::Error)]
pub enum GatekeeperError {
    #[error(transparent)]
    Core(#[from] vault_core::Error),
    #[error(transparent)]
    File(#[from] vault_io::IoError),
    #[error("trust root {path}: not UTF-8 text")]
    RootNotText { path: String },
    #[error(
        "policy v{version} accepted earlier does not verify under the trust root in force ({source}); it is not obeyed and the vault stays sealed: \
         present a stick with a policy signed for this root, version above {version}"
    )]
    PolicyDropped { version: u64, source: vault_core::Error },
    #[error("already in force: this bundle is policy v{version}, the one the vault runs; nothing to do")]
    AlreadyInForce { version: u64 },
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error("netlink {what}: {source}")]
    Netlink { what: &'static str, source: rtnetlink::Error },
    #[error("sysctl {path} = {value}: {source}")]
    Sysctl { path: String, value: String, source: std::io::Error },
    #[error("no NIC matches {selector} (present: {present})")]
    NicNotFound { selector: String, present: String },
    #[error("NIC with index {index} vanished")]
    NicVanished { index: u32 },
    #[error("NIC {nic} has no Ethernet MAC address; the egress guard needs one")]
    NoMac { nic: String },
    #[error("link not confirmed {what} by netlink: saw {seen}")]
    NotConfirmed { what: &'static str, seen: String },
    #[error("no carrier on {nic} within {within_ms} ms (operstate {operstate})")]
    NoCarrier { nic: String, within_ms: u64, operstate: String },
    #[error("ingress filter on {nic}: {reason}; the link stays down (the kernel needs nf_tables with the netdev family: CONFIG_NF_TABLES_NETDEV, or the nf_tables module)")]
    IngressFilter { nic: String, reason: String },
    #[error("egress guard: {reason}")]
    Guard { reason: String },
    #[error(transparent)]
    Store(#[from] vault_store::StoreError),
    #[error(transparent)]
    Tls(#[from] vault_tls::TlsError),
    #[error("session worker confinement, {step}: {reason}; the worker does not serve and the window stays shut")]
    Confine { step: &'static str, reason: String },
    #[error("session worker: {reason}")]
    Worker { reason: String },
    #[error("vault identity key {path}: {reason}")]
    Identity { path: String, reason: String },
    /// An export order could not be carried out (its events name the order and the medium).
    #[error("export: {0}")]
    Export(String),
}

pub type Result<T> = std::result::Result<T, GatekeeperError>;
