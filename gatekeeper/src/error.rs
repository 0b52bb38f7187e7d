//! The daemon's one error type.

#[derive(Debug, thiserror::Error)]
pub enum GatekeeperError {
    #[error(transparent)]
    Core(#[from] vault_core::Error),
    #[error(transparent)]
    File(#[from] vault_io::IoError),
    #[error("trust root {path}: not UTF-8 text")]
    RootNotText { path: String },
}

pub type Result<T> = std::result::Result<T, GatekeeperError>;
