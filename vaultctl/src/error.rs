//! The CLI's one error type. Its messages go straight to the operator's terminal.

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Core(#[from] vault_core::Error),
    #[error(transparent)]
    File(#[from] vault_io::IoError),
    #[error("{path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, CliError>;
