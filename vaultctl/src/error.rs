//! The CLI's one error type. Its messages go straight to the operator's terminal.

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Core(#[from] vault_core::Error),
    #[error(transparent)]
    File(#[from] vault_io::IoError),
    #[error("{path}: {reason}")]
    KeyFile { path: String, reason: String },
    /// What was typed is wrong: a flag missing or out of place, a value that does not parse
    /// or names the wrong kind of thing. Exit 2, as clap's own usage errors.
    #[error("{0}")]
    Usage(String),
    /// The command could not be carried out: a file, a directory or a device said no.
    #[error("{0}")]
    Failed(String),
    /// `policy sign` of a policy already expired when it is issued: the vault would refuse it.
    #[error("{path}: expires {expires}, which is not after {at} ({at_is}): the vault refuses an expired bundle. Set `expires` in {path} to a later time (at most {max_validity} after the issue time, the trust root's max_validity), then sign again")]
    PolicyExpired { path: String, expires: vault_core::units::Timestamp, at: vault_core::units::Timestamp, at_is: &'static str, max_validity: String },
    /// A bundle or order that does not verify against the trust root given (`usb write`, `schedule --root`).
    #[error("{path}: does not verify against the trust root {root}: {source}. The vault would refuse it: fix what that names (collect signatures with `vaultctl policy sign` or `vaultctl order sign`, or make a new bundle or order), or check --root{after}")]
    NotVerified { path: String, root: String, source: Box<vault_core::Error>, after: &'static str },
    #[error("refused: {0}")]
    Refused(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer: {0}")]
    NoAnswer(String),
    #[error(transparent)]
    Store(#[from] vault_store::StoreError),
    /// A receipt that does not verify under the pinned vault key.
    #[error("not trusted: {0}")]
    Untrusted(String),
    /// The vault's audit log failed this pusher's witness check (see `witness`).
    #[error("{0}")]
    AuditInconsistent(String),
    /// The push was sealed, and the vault's ransomware signals judged it suspect.
    #[error("suspect: {0}")]
    Suspect(String),
    /// Done as far as it could go, with what is missing already reported.
    #[error("incomplete: {0}")]
    Incomplete(String),
}

impl CliError {
    /// Exit codes scripts can tell apart: 3 the vault refused, 4 unreachable (no route, or
    /// something answered "connection refused"), 5 no answer at all (what a closed window
    /// looks like: the vault's link is down), 6 incomplete (`restore --keep-going` left files
    /// out, `snapshots` found snapshots not verified or not restorable; each is listed), 7 the
    /// push was sealed but the vault's audit log is not consistent with what this pusher saw, 8
    /// the push was sealed and judged suspect by the vault's ransomware signals, 2 a usage
    /// error (clap's, or [`CliError::Usage`]), 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Refused(_) => 3,
            CliError::Unreachable(_) => 4,
            CliError::NoAnswer(_) => 5,
            CliError::Incomplete(_) => 6,
            CliError::AuditInconsistent(_) => 7,
            CliError::Suspect(_) => 8,
            _ => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, CliError>;
