//! `vaultctl`: the operator's side of the air-gap vault. Keys, the trust root, signing and
//! checking policy bundles, and the schedule they give. A thin shell: every rule it applies
//! is vault-core's; this file reads and writes files and prints.
#![forbid(unsafe_code)]

mod audit;
mod error;
mod exclude;
mod export;
mod keyfile;
mod media;
mod order;
mod output;
mod profile;
mod push;
mod push_cmd;
mod receipts;
mod report;
mod restore;
mod sshsig;
mod systemd;
mod usb;
mod window;
mod witness;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use vault_core::policy::bundle::{self, Envelope, JudgedAt, Payload, MAX_BUNDLE_BYTES};
use vault_core::policy::root::{Caps, TrustRoot, MAX_ROOT_BYTES};
use vault_core::policy::schedule::{self, WindowState};
use vault_core::policy::state::{VaultState, MAX_STATE_BYTES, STATE_FILE};
use vault_core::policy::{Policy, MAX_POLICY_TOML_BYTES};
use vault_core::units::{Duration, Timestamp};

use crate::error::{CliError, Result};
use vault_core::error::PolicyError;

#[derive(Parser)]
#[command(name = "vaultctl", version, about = "Keys, trust root and signed policy for the air-gap vault")]
struct Cli {
    /// Print the result as JSON on stdout, and an error as one line of JSON on stderr,
    /// `{"error": {"class", "exit_code", "message"}}` (any command, before or after its name).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ed25519 keys for admins and pushers.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The trust root baked into the vault image.
    #[command(subcommand)]
    Root(RootCommand),
    /// Signed policy bundles.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Signed orders beside the policy: hold, release, purge, veto.
    #[command(subcommand)]
    Order(order::OrderCommand),
    /// USB stick images that carry a policy bundle to the vault.
    #[command(subcommand)]
    Usb(UsbCommand),
    /// Removable disks for exports: prepare one.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Exports the vault wrote onto removable disks: verify them (restore with `restore --export`).
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Pushes a directory tree, a file or stdin (`-`) into the vault as one snapshot.
    Push(push_cmd::PushCli),
    /// Writes the man pages and shell completions (bash, zsh, fish) into DIR: for packaging.
    #[command(hide = true)]
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// The vault's audit log, read from its store offline: verify it, show it.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Writes one self-contained HTML page (inline SVG, no scripts) from a store's audit log,
    /// verified first: the link's windows, pushes per dataset, refusals, alarms, scrubs and
    /// drills, capacity over time.
    Report {
        #[arg(long)]
        store: PathBuf,
        /// The vault's public key (`ed25519:...` or a file holding it).
        #[arg(long)]
        vault_key: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Rebuilds a sealed snapshot from the vault's store (offline), re-hashing every chunk.
    /// Exit 0 restored whole, 6 incomplete (`--keep-going` left files out, listed), 1 error.
    Restore {
        /// The vault's store directory (its data disk, or a copy).
        #[arg(long, required_unless_present = "export", conflicts_with = "export")]
        store: Option<PathBuf>,
        /// Restore from an export on a removable medium instead (`vault-exports/<id>`);
        /// needs --identity and --vault-key.
        #[arg(long, requires = "identity")]
        export: Option<PathBuf>,
        /// The `age` identity file (`age-keygen`) the export was encrypted to.
        #[arg(long, requires = "export")]
        identity: Option<PathBuf>,
        /// A snapshot id, or `latest` (the newest verified one; with --dataset, of that dataset).
        #[arg(long)]
        snapshot: String,
        /// With `--snapshot latest`: whose latest.
        #[arg(long)]
        dataset: Option<String>,
        /// Restore only this path of the snapshot (a file, or a directory with all under it);
        /// repeat for more.
        #[arg(long = "include", value_name = "PATH")]
        include: Vec<String>,
        /// A new or empty directory, or one holding an unfinished restore of this snapshot
        /// (resumed: files already there that verify are kept).
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        /// Go on past a bad or missing chunk: every file that cannot be restored whole is left
        /// out (never partial) and listed at the end.
        #[arg(long)]
        keep_going: bool,
    },
    /// The receipts this pusher kept: list, show, and verify them against the pinned vault key
    /// and the vault's store.
    #[command(subcommand)]
    Receipts(receipts::ReceiptsCommand),
    /// Lists the sealed snapshots in a vault store (offline), each verified and checked
    /// restorable. Exit 6 if any is NOT VERIFIED or UNRESTORABLE.
    Snapshots {
        #[arg(long)]
        store: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// The openings a policy gives, in UTC.
    Schedule {
        /// A bundle or a policy.toml.
        #[arg(long)]
        policy: PathBuf,
        /// The trust root: the bundle is verified against it (as of --from) before its schedule
        /// is shown. Without it the schedule is shown NOT VERIFIED.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Start of the listing (RFC 3339); default now.
        #[arg(long)]
        from: Option<String>,
        /// How many days to list, 1 to 3660.
        #[arg(long, default_value_t = 7, value_parser = schedule_days)]
        days: u32,
        /// Print the windows as a systemd timer drop-in (`OnCalendar=` lines) for
        /// vaultctl-push@.timer, instead of the listing.
        #[arg(long)]
        systemd: bool,
    },
}

/// Whose receipts `restore` and `snapshots` believe: one of the two is required.
#[derive(Args)]
struct TrustArgs {
    /// The vault's public key (`ed25519:...` or a file holding it): receipts signed by any
    /// other key are refused.
    #[arg(long)]
    vault_key: Option<String>,
    /// Believe receipts whatever key signed them: a store re-signed by someone else would be
    /// trusted. Prints a warning.
    #[arg(long, conflicts_with = "vault_key")]
    insecure_any_vault_key: bool,
}

#[derive(Subcommand)]
enum MediaCommand {
    /// Prepares a removable disk for exports (GPT, one FAT32 partition, a new medium id) and
    /// prints its id, which export orders name.
    Init {
        /// A new image file, or a disk (`/dev/sdX`, with --erase).
        #[arg(long)]
        out: PathBuf,
        /// What people call it (printed on the cartridge): letters, digits, `-`, `_`, `.`.
        #[arg(long)]
        label: String,
        /// Size of a new image file (`1G`, `512M`); a disk keeps its own.
        #[arg(long)]
        size: Option<String>,
        /// Erase the disk given as --out.
        #[arg(long)]
        erase: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Writes NAME.key (secret, mode 0600) and NAME.pub, and prints the public key.
    Gen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the public key and key id of a NAME.pub or NAME.key file (never the secret).
    Show { path: PathBuf },
}

#[derive(Subcommand)]
enum UsbCommand {
    /// Writes a FAT image holding the bundle as vault-policy.bundle and any orders in
    /// vault-orders/ (attach it, or dd it to a stick).
    Write {
        /// The policy bundle; a stick may carry only orders.
        bundle: Option<PathBuf>,
        /// A signed order to carry (repeat); written as vault-orders/<file stem>.order.
        #[arg(long = "order")]
        orders: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// The trust root in force: the bundle and every order are verified against it as the
        /// vault would (its state aside) before anything is written.
        #[arg(long, required_unless_present = "unchecked", conflicts_with = "unchecked")]
        root: Option<PathBuf>,
        /// Skip every check (size, shape, signatures): for testing the vault's refusals.
        #[arg(long, hide = true)]
        unchecked: bool,
    },
}

#[derive(Subcommand)]
enum RootCommand {
    /// Writes a new trust root (root.toml).
    Init(RootInit),
}

#[derive(Args)]
struct RootInit {
    #[arg(long)]
    vault_id: String,
    /// How many distinct admins must sign a bundle.
    #[arg(long)]
    threshold: u32,
    /// How many distinct admins must sign an export order (it copies data out, encrypted, and
    /// deletes nothing); default: --threshold.
    #[arg(long)]
    export_threshold: Option<u32>,
    /// An admin's public key file (NAME.pub); the admin is named NAME. Repeat for each admin.
    /// Either `vaultctl key gen`'s `ed25519:` key or an OpenSSH public key (`ssh-ed25519`, or
    /// `sk-ssh-ed25519@openssh.com` for a FIDO2 security key), who then signs with `ssh-keygen`.
    #[arg(long = "admin", required = true)]
    admins: Vec<PathBuf>,
    /// An admin (by NAME) whose security key must verify its user (a PIN) on every signature,
    /// not only see a touch. Repeat for each.
    #[arg(long = "user-verification", value_name = "NAME")]
    user_verification: Vec<String>,
    /// Root version: 1 for a new vault, N+1 for a rotation.
    #[arg(long, default_value_t = 1)]
    version: u64,
    #[arg(long, default_value = "4h")]
    max_window: String,
    #[arg(long, default_value = "8h")]
    max_open_per_day: String,
    #[arg(long, default_value = "90d")]
    max_validity: String,
    #[arg(long, default_value = "15m")]
    max_grace: String,
    /// No policy under this root may keep a pusher's snapshots for less (e.g. `30d`); `0s`: no floor.
    #[arg(long, default_value = "0s")]
    min_retain: String,
    /// How long a purge order waits after the vault accepts it (at least 72h); one admin's veto cancels it meanwhile.
    #[arg(long, default_value = "72h")]
    purge_delay: String,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Starts a bundle from a policy.toml, or adds one more signature to a bundle.
    Sign(PolicySign),
    /// Verifies a bundle as the vault would; exit 0 and a summary, or non-zero and the reason.
    Verify {
        #[arg(long)]
        root: PathBuf,
        /// The vault's state directory (version and time floors, rotated root).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Check as of this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
        bundle: PathBuf,
    },
    /// Shows what a bundle says, without verifying it.
    Show { bundle: PathBuf },
    /// Writes the bytes an admin with an OpenSSH key signs (`ssh-keygen -Y sign`) for a bundle
    /// or an order, and prints the command with the namespace to use.
    Payload {
        /// The bundle or order to sign.
        signed: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Adds an `ssh-keygen -Y sign` signature (an OpenSSH key, or a FIDO2 security key) to a
    /// bundle or an order, once it verifies as the vault will verify it.
    AddSshsig {
        /// The trust root in force: it lists the admin's OpenSSH key.
        #[arg(long)]
        root: PathBuf,
        /// The signature `ssh-keygen -Y sign` wrote (PAYLOAD.sig).
        #[arg(long)]
        sig: PathBuf,
        /// The bundle or order the payload came from.
        signed: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct PolicySign {
    /// The signing admin's secret key (NAME.key).
    #[arg(long)]
    key: PathBuf,
    /// The trust root in force; needed to start a bundle, checked against when adding.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Rotate to this trust root (version N+1); both admin sets must then sign.
    #[arg(long)]
    new_root: Option<PathBuf>,
    /// The bundle's issue time (RFC 3339); default now. Only when starting a bundle.
    #[arg(long)]
    issued: Option<String>,
    /// policy.toml to start a bundle, or a bundle to add a signature to.
    input: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    // Known before parsing, so that a usage error clap finds is printed as JSON too.
    let json = std::env::args_os().skip(1).any(|arg| arg == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if json && e.use_stderr() => {
            let message = e.to_string();
            eprintln!("{}", error::error_json("usage", 2, message.trim_start_matches("error: ").trim_end()));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // On stderr, so stdout holds only the command's own JSON (a partial restore's report).
        Err(err) if json => {
            eprintln!("{}", err.to_json());
            ExitCode::from(err.exit_code())
        }
        Err(err) => {
            eprintln!("vaultctl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Key(KeyCommand::Gen { out }) => {
            // `--out dir/` would write the hidden dir/.key and dir/.pub.
            if out.as_os_str().as_bytes().ends_with(b"/") || out.is_dir() {
                let dir = out.components().as_path();
                return Err(CliError::Usage(format!(
                    "--out {}: is a directory; --out takes a name, e.g. {}, which writes {} and {}",
                    out.display(),
                    dir.join("alice").display(),
                    dir.join("alice.key").display(),
                    dir.join("alice.pub").display()
                )));
            }
            let public = keyfile::generate(&out)?;
            let (secret_path, public_path) = keyfile::key_paths(&out);
            eprintln!("wrote {} (secret, mode 0600) and {}", secret_path.display(), public_path.display());
            output::emit(json, serde_json::json!({ "public_key": public.to_string(), "key_id": public.key_id(), "secret_key_file": secret_path, "public_key_file": public_path }), || {
                println!("{public}")
            });
            Ok(())
        }
        Command::Key(KeyCommand::Show { path }) => {
            let (public, what) = keyfile::load_any_public(&path)?;
            eprintln!("{}: {what}", path.display());
            output::emit(json, serde_json::json!({ "file": path, "public_key": public.to_string(), "key_id": public.key_id() }), || {
                println!("public key: {public}");
                println!("key id: {}", public.key_id());
            });
            Ok(())
        }
        Command::Root(RootCommand::Init(args)) => root_init(args, json),
        Command::Policy(PolicyCommand::Sign(args)) => policy_sign(args, json),
        Command::Policy(PolicyCommand::Verify { root, state, at, bundle }) => policy_verify(&root, state.as_deref(), at.as_deref(), &bundle, json),
        Command::Policy(PolicyCommand::Show { bundle }) => policy_show(&bundle, json),
        Command::Policy(PolicyCommand::Payload { signed, out }) => sshsig::payload(&signed, &out, json),
        Command::Policy(PolicyCommand::AddSshsig { root, sig, signed, out }) => sshsig::add(&load_root(&root)?, &signed, &sig, &out, json),
        Command::Order(command) => order::run(command, json),
        Command::Export(command) => export::run(command, json),
        Command::Media(MediaCommand::Init { out, label, size, erase }) => {
            let size = size.map(|s| vault_core::units::ByteSize::parse(&s).map(|b| b.bytes()).map_err(|e| CliError::Usage(format!("--size: {e}")))).transpose()?;
            let made = media::init(&out, &label, size, erase)?;
            eprintln!("{}: medium `{}`, {} bytes, one FAT32 partition; export orders name it by its id:", out.display(), made.label.name, made.bytes);
            output::emit(json, serde_json::json!({ "out": out, "medium_id": made.label.medium_id.to_string(), "label": made.label.name, "bytes": made.bytes }), || {
                println!("{}", made.label.medium_id)
            });
            Ok(())
        }
        Command::Schedule { policy, root, from, days, systemd } => show_schedule(&policy, root.as_deref(), from.as_deref(), days, systemd, json),
        Command::Push(args) => push_cmd::run(args, json),
        Command::Receipts(command) => receipts::run(command, json),
        Command::Generate { out } => generate(&out, json),
        Command::Audit(command) => audit::run(command, json),
        Command::Report { store, vault_key, out } => report::write(&store, &vault_key, &out, json),
        Command::Restore { store, export, identity, snapshot, dataset, include, to, trust, keep_going } => {
            let trust = restore::Trust::from_args(trust.vault_key.as_deref(), trust.insecure_any_vault_key, "restore")?;
            let selection = restore::Selection::new(&include)?;
            if dataset.is_some() && snapshot != "latest" {
                return Err(CliError::Usage(format!("--dataset picks whose `latest` to restore; --snapshot {snapshot} names one already: leave --dataset out")));
            }
            let report = match (store, export, identity, &trust) {
                (Some(store), _, _, _) => {
                    let snapshot = if snapshot == "latest" { restore::latest(&vault_store::StoreReader::open(&store)?, &trust, dataset.as_deref())? } else { snapshot.clone() };
                    restore::restore(&store, &snapshot, &to, &trust, keep_going, &selection)?
                }
                (None, Some(_), _, _) if snapshot == "latest" => return Err(CliError::Usage("`latest` reads a store; from an export, name the snapshot (`vaultctl export verify` lists them)".into())),
                (None, Some(export), Some(identity), restore::Trust::Pinned(key)) => export::restore_from_export(&export, &identity, &snapshot, &to, key, keep_going, &selection)?,
                _ => return Err(CliError::Usage("restore --export needs --identity and --vault-key (an export is only ever read under the pinned vault key)".into())),
            };
            print_restore_report(&report, json);
            if report.complete() {
                return Ok(());
            }
            Err(CliError::Incomplete(format!(
                "{} file(s) of snapshot {} could not be restored (listed); none of them is in {} even in part, and {}/ \
                 stays there so the same command resumes once the store is repaired",
                report.not_restored.len(),
                report.snapshot,
                to.display(),
                to.join(restore::MARKER_DIR).display()
            )))
        }
        Command::Snapshots { store, trust } => {
            let trust = restore::Trust::from_args(trust.vault_key.as_deref(), trust.insecure_any_vault_key, "snapshots")?;
            restore::list_snapshots(&store, &trust, json)
        }
        Command::Usb(UsbCommand::Write { bundle, orders, out, root, unchecked }) => {
            out_file(&out, "stick.img")?;
            // Unchecked contents may be oversized on purpose, but never without bound.
            let limit = if unchecked { 256 << 20 } else { MAX_BUNDLE_BYTES };
            let bytes = bundle.as_deref().map(|b| vault_io::read_bounded(b, limit)).transpose()?;
            let contents = bytes.as_deref().map(|bytes| if unchecked { usb::Contents::Unchecked(bytes) } else { usb::Contents::Bundle(bytes) });
            let order_files = orders
                .iter()
                .map(|path| {
                    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                    Ok((name, vault_io::read_bounded(path, MAX_BUNDLE_BYTES)?))
                })
                .collect::<Result<Vec<_>>>()?;
            if contents.is_none() && order_files.is_empty() {
                return Err(CliError::Usage("nothing to write: give a bundle, --order, or both".into()));
            }
            // A stick the vault would refuse is refused here, where it can still be fixed.
            if let Some(root_path) = &root {
                let signed: Vec<(&Path, &[u8])> = orders.iter().map(PathBuf::as_path).zip(order_files.iter().map(|(_, b)| b.as_slice())).collect();
                check_stick(root_path, bundle.as_deref().zip(bytes.as_deref()), &signed)?;
            }
            let size = usb::write_stick(contents, &order_files, &out)?;
            let checked = if root.is_some() { "verified against --root" } else { "NOT verified (--unchecked)" };
            let value = serde_json::json!({ "out": out, "bytes": size, "bundle": bundle, "orders": orders, "verified": root.is_some() });
            output::emit(json, value, || println!("wrote {} ({size} bytes, FAT): {} bundle, {} order(s), {checked}", out.display(), if bundle.is_some() { "a" } else { "no" }, order_files.len()));
            Ok(())
        }
    }
}

fn print_restore_report(report: &restore::RestoreReport, json: bool) {
    if json {
        let mut value = serde_json::to_value(report).expect("reports serialize");
        value["complete"] = report.complete().into();
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON values serialize"));
        return;
    }
    println!(
        "restored {} to {}: {} files written, {} kept (already there, re-hashed), {} dirs, {} symlinks, {} bytes; {} chunks re-hashed and verified",
        report.snapshot,
        report.to.display(),
        report.files,
        report.files_kept,
        report.dirs,
        report.symlinks,
        report.bytes,
        report.chunks_verified
    );
    if !report.complete() {
        println!("NOT RESTORED: {} file(s), left out whole:", report.not_restored.len());
        for missing in &report.not_restored {
            println!("  {}: {}", missing.path, missing.reason);
        }
    }
}

fn time_arg(text: Option<&str>, flag: &str) -> Result<Timestamp> {
    match text {
        None => Ok(vault_io::clock_now()),
        Some(t) => Timestamp::parse(t).map_err(|e| CliError::Usage(format!("{flag}: {e}"))),
    }
}

/// Man pages (`man/vaultctl.1`, `man/vaultctl-push.1`, ...) and completions
/// (`completions/vaultctl.bash`, `_vaultctl`, `vaultctl.fish`), generated from the clap
/// definitions so they never drift from the commands.
fn generate(out: &Path, json: bool) -> Result<()> {
    use clap::CommandFactory as _;
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
        move |e| CliError::Failed(format!("{}: {e}", path.display()))
    }
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut command = Cli::command();
    command.build();
    write_man_pages(&command, &man)?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, "vaultctl", &completions).map_err(io(&completions))?;
    }
    eprintln!("wrote man pages to {} and completions to {}", man.display(), completions.display());
    output::emit(json, serde_json::json!({ "man": man, "completions": completions }), || {});
    Ok(())
}

/// One page per command and subcommand (`vaultctl-policy-sign.1`), leaving out clap's own
/// `help` subcommand and hidden ones.
fn write_man_pages(command: &clap::Command, dir: &Path) -> Result<()> {
    let name = command.get_display_name().unwrap_or_else(|| command.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    std::fs::write(&path, page).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    for sub in command.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help") {
        write_man_pages(sub, dir)?;
    }
    Ok(())
}

fn read_text(path: &Path, limit: usize) -> Result<String> {
    let bytes = vault_io::read_bounded(path, limit)?;
    String::from_utf8(bytes).map_err(|_| CliError::Failed(format!("{}: not UTF-8 text", path.display())))
}

pub(crate) fn load_root(path: &Path) -> Result<TrustRoot> {
    Ok(TrustRoot::from_toml(&read_text(path, MAX_ROOT_BYTES)?)?)
}

/// An `--out` must name a file. Checked before anything is read or signed; vault-io refuses a
/// directory too, but without the flag's name.
fn out_file(path: &Path, example: &str) -> Result<()> {
    if path.as_os_str().as_bytes().ends_with(b"/") || path.is_dir() {
        return Err(CliError::Usage(format!("--out {}: is a directory; --out names the file to write, e.g. {}", path.display(), path.components().as_path().join(example).display())));
    }
    Ok(())
}

/// An admin as `policy sign` and `order sign` name one: by name when the root lists the key.
fn signer_name(roots: &[&TrustRoot], key: &vault_core::keys::PublicKey) -> String {
    match roots.iter().find_map(|root| root.admin_with_key(key)) {
        Some(admin) => format!("{} (key id {})", admin.name, key.key_id()),
        None => format!("key id {} (give --root to see the admin's name)", key.key_id()),
    }
}

/// `key is not an admin`, with who the admins are.
fn not_an_admin(key_path: &Path, key: &vault_core::keys::PublicKey, root: &TrustRoot, root_path: &Path) -> CliError {
    let admins: Vec<&str> = root.admins.iter().map(|a| a.name.as_str()).collect();
    CliError::Failed(format!(
        "--key {}: key {} is not an admin of root v{} ({}, admins {}): sign with one of their NAME.key files, or check --root",
        key_path.display(),
        key.key_id(),
        root.version,
        root_path.display(),
        admins.join(", ")
    ))
}

fn root_init(args: RootInit, json: bool) -> Result<()> {
    out_file(&args.out, "root.toml")?;
    let mut admins = Vec::new();
    for path in &args.admins {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).ok_or_else(|| CliError::Usage(format!("{}: cannot name an admin after this path", path.display())))?;
        let user_verification = args.user_verification.contains(&name);
        admins.push(keyfile::load_admin(&name, path, user_verification)?);
    }
    if let Some(unknown) = args.user_verification.iter().find(|name| !admins.iter().any(|a| &a.name == *name)) {
        return Err(CliError::Usage(format!("--user-verification {unknown}: no --admin file is named {unknown}.pub")));
    }
    let duration = |flag: &str, text: &str| Duration::parse(text).map_err(|e| CliError::Usage(format!("--{flag}: {e}")));
    let caps = Caps {
        max_window: duration("max-window", &args.max_window)?,
        max_open_per_day: duration("max-open-per-day", &args.max_open_per_day)?,
        max_validity: duration("max-validity", &args.max_validity)?,
        max_grace: duration("max-grace", &args.max_grace)?,
        min_retain: duration("min-retain", &args.min_retain)?,
        purge_delay: duration("purge-delay", &args.purge_delay)?,
    };
    let export_threshold = args.export_threshold.unwrap_or(args.threshold);
    let draft = TrustRoot { vault_id: args.vault_id, version: args.version, threshold: args.threshold, export_threshold, admins, caps };
    // Round-trip through the validating parser: the file written is one the vault accepts.
    let root = TrustRoot::from_doc(&draft.to_doc())?;
    vault_io::write_new(&args.out, root.to_toml().as_bytes(), 0o644)?;
    eprintln!("wrote {}: vault {} root v{}, {} of {} admins must sign", args.out.display(), root.vault_id, root.version, root.threshold, root.admins.len());
    let value = serde_json::json!({ "out": args.out, "vault_id": root.vault_id, "version": root.version, "threshold": root.threshold, "admins": root.admins.iter().map(|a| &a.name).collect::<Vec<_>>(), "digest": root.digest() });
    output::emit(json, value, || println!("root digest: {}", root.digest()));
    Ok(())
}

/// A bundle file starts with `{`; anything else is taken as policy TOML.
fn looks_like_bundle(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn policy_sign(args: PolicySign, json: bool) -> Result<()> {
    out_file(&args.out, "policy.bundle")?;
    let key = keyfile::load_secret(&args.key)?;
    let input = vault_io::read_bounded(&args.input, MAX_BUNDLE_BYTES.max(MAX_POLICY_TOML_BYTES))?;
    let root = args.root.as_deref().map(load_root).transpose()?;
    let now = vault_io::clock_now();
    let mut envelope = if looks_like_bundle(&input) {
        if args.new_root.is_some() || args.issued.is_some() {
            return Err(CliError::Usage("--new-root and --issued only apply when starting a bundle from policy.toml".into()));
        }
        Envelope::from_bytes(&input)?
    } else {
        let root = root.as_ref().ok_or_else(|| CliError::Usage("--root is needed to start a bundle: the bundle names the trust root it is signed for".into()))?;
        let text = String::from_utf8(input).map_err(|_| CliError::Failed(format!("{}: not UTF-8 text", args.input.display())))?;
        let mut policy = Policy::from_toml(&text)?;
        if policy.vault_id != root.vault_id {
            return Err(vault_core::Error::Policy(PolicyError::WrongVault { bundle: policy.vault_id, vault: root.vault_id.clone() }).into());
        }
        if args.issued.is_some() || policy.issued.is_none() {
            policy.issued = Some(time_arg(args.issued.as_deref(), "--issued")?);
        }
        let new_root = args.new_root.as_deref().map(load_root).transpose()?;
        let in_force = new_root.as_ref().unwrap_or(root);
        // Expired when issued (or now): no vault would take it, so nobody signs it.
        let (at, at_is) = match policy.issued {
            Some(issued) if args.issued.is_some() => (issued, "the --issued time"),
            _ => (now, "now"),
        };
        if policy.expires <= at {
            return Err(CliError::PolicyExpired { path: args.input.display().to_string(), expires: policy.expires, at, at_is, max_validity: in_force.caps.max_validity.to_string() });
        }
        policy.check_against_root(in_force)?;
        Envelope::new(&Payload { signed_for_root: root.digest(), policy, new_root })
    };
    let payload = envelope.unverified_payload()?;
    let signer = key.public_key();
    let roots: Vec<&TrustRoot> = root.iter().chain(payload.new_root.iter()).collect();
    if let (Some(root), Some(root_path)) = (&root, &args.root) {
        if !roots.iter().any(|r| r.admin_with_key(&signer).is_some()) {
            return Err(not_an_admin(&args.key, &signer, root, root_path));
        }
    }
    // A bundle being signed on after it expired, or one issued in the past with --issued: signed,
    // as asked, and said.
    if payload.policy.expires <= now {
        let what = if args.issued.is_some() { "signed as of --issued, but" } else { "signed on, but" };
        eprintln!(
            "vaultctl: WARNING: {}: expired at {} (now {now}); {what} the vault will refuse it whatever its signatures: start a new bundle from policy.toml with a later `expires`",
            args.input.display(),
            payload.policy.expires
        );
    }
    envelope.sign(&key)?;
    vault_io::write_atomic(&args.out, &envelope.to_bytes(), 0o644)?;
    eprintln!(
        "signed vault {} policy v{} as {}; the bundle now has {} signature(s): {}",
        payload.policy.vault_id,
        payload.policy.version,
        signer_name(&roots, &signer),
        envelope.signatures.len(),
        args.out.display()
    );
    let value =
        serde_json::json!({ "out": args.out, "vault_id": payload.policy.vault_id, "version": payload.policy.version, "signer": signer_name(&roots, &signer), "signatures": envelope.signatures.len() });
    output::emit(json, value, || {});
    Ok(())
}

fn load_state(dir: Option<&Path>) -> Result<VaultState> {
    let Some(dir) = dir else { return Ok(VaultState::default()) };
    // A mistyped --state must not check as a new vault; an existing one without a state file is one.
    let found = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some("not a directory"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such directory"),
        Err(e) => return Err(vault_io::IoError::Io { path: dir.to_path_buf(), source: e }.into()),
    };
    if let Some(found) = found {
        return Err(CliError::Usage(format!(
            "--state {}: {found}; give the vault's state directory (the gatekeeper's --state, /data/state on the appliance, holding {STATE_FILE}), or leave --state out to check as a new vault would",
            dir.display()
        )));
    }
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(VaultState::default());
    }
    Ok(VaultState::from_bytes(&vault_io::read_bounded(&path, MAX_STATE_BYTES)?)?)
}

fn policy_verify(root_path: &Path, state_dir: Option<&Path>, at: Option<&str>, bundle_path: &Path, json: bool) -> Result<()> {
    let root = load_root(root_path)?;
    let state = load_state(state_dir)?;
    let at = time_arg(at, "--at")?;
    let bytes = vault_io::read_bounded(bundle_path, MAX_BUNDLE_BYTES)?;
    let verified = bundle::verify(&bytes, &root, &state, bundle::JudgedAt::trusted(at))?;
    if json {
        let value = serde_json::json!({
            "verified": true,
            "at": at.to_string(),
            "root_version": state.current_root(&root)?.version,
            "signers": verified.signers,
            "payload_sha256": verified.payload_sha256,
            "rotates_to_root": verified.rotated.then_some(verified.root.version),
            "policy": verified.policy.to_doc(),
        });
        output::emit(true, value, || {});
        return Ok(());
    }
    println!("OK: {} verifies against root v{} at {at}", bundle_path.display(), state.current_root(&root)?.version);
    println!("signed by {} (threshold {}); payload sha256 {}", verified.signers.join(", "), state.current_root(&root)?.threshold, verified.payload_sha256);
    if verified.rotated {
        println!("rotates the trust root to v{} ({} of {} admins)", verified.root.version, verified.root.threshold, verified.root.admins.len());
    }
    for line in verified.policy.describe() {
        println!("  {line}");
    }
    Ok(())
}

fn policy_show(path: &Path, json: bool) -> Result<()> {
    let envelope = Envelope::from_bytes(&vault_io::read_bounded(path, MAX_BUNDLE_BYTES)?)?;
    let payload = envelope.unverified_payload()?;
    let key_ids: Vec<&str> = envelope.key_ids().collect();
    if json {
        let value = serde_json::json!({
            "verified": false,
            "payload_sha256": vault_core::keys::hex(ring::digest::digest(&ring::digest::SHA256, &envelope.payload_bytes()?).as_ref()),
            "signed_for_root": payload.signed_for_root,
            "signature_key_ids": key_ids,
            "policy": payload.policy.to_doc(),
            "new_root": payload.new_root.as_ref().map(TrustRoot::to_doc),
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON values serialize"));
        return Ok(());
    }
    println!("NOT VERIFIED (use `vaultctl policy verify` for that)");
    for line in payload.policy.describe() {
        println!("{line}");
    }
    println!("signed for trust root {}", payload.signed_for_root);
    if let Some(new_root) = &payload.new_root {
        println!("rotates to trust root v{} ({} of {} admins)", new_root.version, new_root.threshold, new_root.admins.len());
    }
    println!("{} signature(s), key ids:", key_ids.len());
    for id in key_ids {
        println!("  {id}");
    }
    Ok(())
}

/// The policy a bundle (unverified) or a policy.toml holds.
fn policy_of(path: &Path, bytes: Vec<u8>) -> Result<Policy> {
    if looks_like_bundle(&bytes) {
        return Ok(Envelope::from_bytes(&bytes)?.unverified_payload()?.policy);
    }
    let text = String::from_utf8(bytes).map_err(|_| CliError::Failed(format!("{}: not UTF-8 text", path.display())))?;
    Ok(Policy::from_toml(&text)?)
}

/// `--days`: a listing of up to ten years.
fn schedule_days(text: &str) -> std::result::Result<u32, String> {
    match text.parse::<u32>() {
        Ok(days) if (1..=MAX_SCHEDULE_DAYS).contains(&days) => Ok(days),
        _ => Err(format!("a whole number of days from 1 to {MAX_SCHEDULE_DAYS} (ten years) is listed at most; list a longer span in parts with --from")),
    }
}

const MAX_SCHEDULE_DAYS: u32 = 3660;

fn show_schedule(path: &Path, root: Option<&Path>, from: Option<&str>, days: u32, systemd: bool, json: bool) -> Result<()> {
    // With --systemd or --json, stdout is the drop-in or the JSON itself; what was checked goes to stderr.
    let say = |line: String| if systemd || json { eprintln!("{line}") } else { println!("{line}") };
    let from = time_arg(from, "--from")?;
    let bytes = vault_io::read_bounded(path, MAX_BUNDLE_BYTES.max(MAX_POLICY_TOML_BYTES))?;
    let policy = match root {
        Some(root_path) => {
            if !looks_like_bundle(&bytes) {
                return Err(CliError::Usage(format!("--root verifies a signed bundle, and {} is a policy.toml (nothing signed yet): leave --root out to see what it says", path.display())));
            }
            let root = load_root(root_path)?;
            let verified = bundle::verify(&bytes, &root, &VaultState::default(), JudgedAt::trusted(from)).map_err(|source| CliError::NotVerified {
                path: path.display().to_string(),
                root: root_path.display().to_string(),
                source: Box::new(source),
                after: " (it is judged as of --from, so a --from before its issue time or at or after its expiry is refused too)",
            })?;
            say(format!("verified against {} (root v{}) as of {from}: signed by {}", root_path.display(), root.version, verified.signers.join(", ")));
            verified.policy
        }
        None => {
            match looks_like_bundle(&bytes) {
                true => say(format!("NOT VERIFIED: what {} says, its signatures unchecked (give --root to verify it first)", path.display())),
                false => say(format!("NOT SIGNED: what the policy.toml {} says", path.display())),
            }
            policy_of(path, bytes)?
        }
    };
    if systemd {
        print!("{}", systemd::timer_drop_in(&policy, root.is_some(), from));
        return Ok(());
    }
    if json {
        let (open_until, next_open) = match schedule::state_at(&policy, from) {
            WindowState::Open { until } => (Some(until.to_string()), None),
            WindowState::Closed { next_open } => (None, next_open.map(|t| t.to_string())),
        };
        let openings: Vec<_> = schedule::openings(&policy, from, days).into_iter().map(|iv| serde_json::json!({ "start": iv.start.to_string(), "end": iv.end.to_string() })).collect();
        let value = serde_json::json!({ "verified": root.is_some(), "vault_id": policy.vault_id, "version": policy.version, "from": from.to_string(), "days": days, "open_until": open_until, "next_open": next_open, "openings": openings });
        output::emit(true, value, || {});
        return Ok(());
    }
    match schedule::state_at(&policy, from) {
        WindowState::Open { until } => println!("at {from}: OPEN until {until}"),
        WindowState::Closed { next_open: Some(next) } => println!("at {from}: closed, next opening {next}"),
        WindowState::Closed { next_open: None } => println!("at {from}: closed, no opening before expiry {}", policy.expires),
    }
    let openings = schedule::openings(&policy, from, days);
    println!("{} opening(s) in the {days} day(s) from {from} (UTC):", openings.len());
    for iv in openings {
        let length = Duration::from_secs(iv.length_secs()).unwrap_or_default();
        println!("  {} .. {}  ({length})", iv.start, iv.end);
    }
    Ok(())
}

/// `usb write --root`: the bundle and each order verified as the vault would. Offline there
/// is no vault state: version and serial floors, and whether a vetoed purge still waits, are
/// the vault's to judge; everything else (signatures, threshold, vault id, root digest,
/// rotation, caps, expiry) is judged here, now.
fn check_stick(root_path: &Path, bundle: Option<(&Path, &[u8])>, orders: &[(&Path, &[u8])]) -> Result<()> {
    let root = load_root(root_path)?;
    let now = JudgedAt::trusted(vault_io::clock_now());
    let not_verified = |path: &Path| {
        let (path, root) = (path.display().to_string(), root_path.display().to_string());
        move |source| CliError::NotVerified { path, root, source: Box::new(source), after: "; no stick image was written" }
    };
    // Orders on the same stick are judged under the root the bundle leaves in force.
    let in_force = match bundle {
        Some((path, bytes)) => bundle::verify(bytes, &root, &VaultState::default(), now).map_err(not_verified(path))?.root,
        None => root,
    };
    for (path, bytes) in orders {
        order::verify_offline(bytes, &in_force, now).map_err(not_verified(path))?;
    }
    Ok(())
}
