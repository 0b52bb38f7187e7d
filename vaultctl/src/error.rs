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
    /// What kind of failure it is: what scripts branch on, each with its exit code.
    ///
    /// | class | exit | |
    /// |---|---|---|
    /// | `failed` | 1 | the command could not be carried out: a file, a directory, a device or the store said no |
    /// | `usage` | 2 | what was typed is wrong: a flag, a value, a key file of the wrong kind (also clap's own) |
    /// | `refused` | 3 | a rule refused it: the vault, or the same rule checked here (a threshold, a cap, an expiry, a signature, a pinned key) |
    /// | `unreachable` | 4 | no route to the vault, or "connection refused" |
    /// | `no_answer` | 5 | no answer at all, what a closed window looks like; or the window is closed by the policy |
    /// | `incomplete` | 6 | done as far as it could go, what is missing listed (`restore --keep-going`, `snapshots`, `receipts`) |
    /// | `audit_inconsistent` | 7 | sealed, but the vault's audit log is not consistent with what this pusher saw |
    /// | `suspect` | 8 | sealed, and judged suspect by the vault's ransomware signals |
    pub fn class(&self) -> &'static str {
        match self {
            CliError::File(_) | CliError::Failed(_) | CliError::Store(_) => "failed",
            CliError::Usage(_) | CliError::KeyFile { .. } => "usage",
            CliError::Core(_) | CliError::PolicyExpired { .. } | CliError::NotVerified { .. } | CliError::Refused(_) | CliError::Untrusted(_) => "refused",
            CliError::Unreachable(_) => "unreachable",
            CliError::NoAnswer(_) => "no_answer",
            CliError::Incomplete(_) => "incomplete",
            CliError::AuditInconsistent(_) => "audit_inconsistent",
            CliError::Suspect(_) => "suspect",
        }
    }

    /// The exit code of [`CliError::class`].
    pub fn exit_code(&self) -> u8 {
        match self.class() {
            "usage" => 2,
            "refused" => 3,
            "unreachable" => 4,
            "no_answer" => 5,
            "incomplete" => 6,
            "audit_inconsistent" => 7,
            "suspect" => 8,
            _ => 1,
        }
    }

    /// `{"error": {"class", "exit_code", "message"}}`, what `--json` prints for a failure.
    pub fn to_json(&self) -> serde_json::Value {
        error_json(self.class(), self.exit_code(), &self.to_string())
    }
}

pub fn error_json(class: &str, exit_code: u8, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "class": class, "exit_code": exit_code, "message": message } })
}

pub type Result<T> = std::result::Result<T, CliError>;
