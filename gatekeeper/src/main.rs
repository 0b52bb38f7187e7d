//! The gatekeeper: the one service of the vault appliance. This is its skeleton: the policy
//! path (verify a bundle, persist the floors) and the status the console shows. Link
//! control, sessions and the store arrive with their issues.

mod error;
mod events;
mod policy_store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vault_core::schedule::{self, WindowState};

use crate::events::EventLog;

#[derive(Parser)]
#[command(name = "gatekeeper", version, about = "The air-gap vault's gatekeeper")]
struct Cli {
    /// The trust root baked into the image.
    #[arg(long, default_value = "/etc/vault/root.toml")]
    root: PathBuf,
    /// Where the vault keeps its floors and its accepted policy.
    #[arg(long, default_value = "/data/state")]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verifies a policy bundle and, if it passes, makes it the vault's policy.
    ApplyBundle { bundle: PathBuf },
    /// Prints the policy in force and what the schedule says now.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ApplyBundle { bundle } => policy_store::load_root(&cli.root).and_then(|root| {
            std::fs::create_dir_all(&cli.state).map_err(|source| vault_io::IoError::Io { path: cli.state.clone(), source })?;
            policy_store::apply_bundle(&root, &cli.state, &bundle, vault_io::clock_now(), &mut EventLog::default()).map(|_| ())
        }),
        Command::Status => status(&cli.root, &cli.state),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatekeeper: {err}");
            ExitCode::FAILURE
        }
    }
}

fn status(root_path: &std::path::Path, state_dir: &std::path::Path) -> error::Result<()> {
    let baked = policy_store::load_root(root_path)?;
    let state = policy_store::load_state(state_dir)?;
    let root = state.current_root(&baked)?;
    let now = vault_io::clock_now();
    println!("vault {} trust root v{}; time floor {}", root.vault_id, root.version, state.time_floor);
    let bundle_path = state_dir.join(policy_store::ACCEPTED_BUNDLE_FILE);
    if state.accepted_version == 0 || !bundle_path.exists() {
        println!("no policy accepted: sealed");
        return Ok(());
    }
    let bytes = vault_io::read_bounded(&bundle_path, vault_core::bundle::MAX_BUNDLE_BYTES)?;
    let policy = vault_core::bundle::Envelope::from_bytes(&bytes)?.unverified_payload()?.policy;
    match schedule::state_at(&policy, now.max(state.time_floor)) {
        WindowState::Open { until } => println!("policy v{}: window open until {until}", policy.version),
        WindowState::Closed { next_open } => println!(
            "policy v{}: sealed; next opening {}",
            policy.version,
            next_open.map_or_else(|| "none before expiry".to_string(), |t| t.to_string())
        ),
    }
    Ok(())
}
