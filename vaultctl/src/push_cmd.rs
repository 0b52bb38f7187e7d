//! `vaultctl push`: its settings (flags, `VAULTCTL_*` variables, a profile), the checks a
//! `--dry-run` makes offline, waiting for the policy's window and retrying inside it, and the
//! report of what was sealed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::{CliError, Result};
use crate::exclude::Excludes;
use crate::profile::{self, Profile, Sources};
use crate::{keyfile, push, window, witness};

#[derive(Args)]
pub struct PushCli {
    /// A profile of the config file to take the settings below from (`default` when the file
    /// has one and none is named). Flags and `VAULTCTL_*` variables override it.
    #[arg(long, env = "VAULTCTL_PROFILE")]
    profile: Option<String>,
    /// The config file (default: $XDG_CONFIG_HOME/vaultctl/vaultctl.toml, then /etc/vaultctl/vaultctl.toml).
    #[arg(long, env = "VAULTCTL_CONFIG")]
    config: Option<PathBuf>,
    /// The vault's address inside the window, HOST:PORT.
    #[arg(long, env = "VAULTCTL_VAULT")]
    vault: Option<String>,
    /// The vault's public key (`ed25519:...` or a file): the only key this push will talk to.
    #[arg(long, env = "VAULTCTL_VAULT_KEY")]
    vault_key: Option<String>,
    /// This pusher's secret key.
    #[arg(long, env = "VAULTCTL_KEY")]
    key: Option<PathBuf>,
    #[arg(long, env = "VAULTCTL_DATASET")]
    dataset: Option<String>,
    /// Where receipts are kept (default $XDG_DATA_HOME/vaultctl/receipts, or the unit's StateDirectory).
    #[arg(long, env = "VAULTCTL_RECEIPTS")]
    receipts: Option<PathBuf>,
    /// The chunk cache file (default $XDG_CACHE_HOME/vaultctl/<vault>-<dataset>.json).
    #[arg(long, env = "VAULTCTL_CACHE")]
    cache: Option<PathBuf>,
    /// Read every file again, ignoring the cache.
    #[arg(long)]
    no_cache: bool,
    /// Seconds to wait for the vault to answer a connection (default 10).
    #[arg(long)]
    connect_timeout_secs: Option<u64>,
    /// Leave out what matches (repeat): `*.tmp` at any depth, `var/cache/*` from the top,
    /// `cache/` directories only.
    #[arg(long = "exclude", value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Patterns to leave out, one per line (`#` comments).
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Do not cross into other file systems (a mount point is kept, empty).
    #[arg(long)]
    one_file_system: bool,
    /// A copy of the vault's signed policy bundle: with --root, says when the window opens.
    #[arg(long, env = "VAULTCTL_POLICY")]
    policy: Option<PathBuf>,
    /// The trust root the policy copy is verified against.
    #[arg(long, env = "VAULTCTL_ROOT")]
    root: Option<PathBuf>,
    /// Wait for the policy's next window, then push, retrying with backoff while the window
    /// is open and the vault does not answer. Needs --policy and --root.
    #[arg(long)]
    wait_for_window: bool,
    /// Check everything that can be checked offline (source, dataset name, keys, the policy
    /// copy and this pusher's place in it) and say what a push would do; sends nothing.
    #[arg(long)]
    dry_run: bool,
    /// A directory, a file, or `-` for stdin.
    source: Option<PathBuf>,
}

/// The settings of one push, resolved and checked.
struct Resolved {
    args: push::PushArgs,
    policy: Option<vault_core::policy::Policy>,
}

fn resolve(cli: &PushCli, json: bool) -> Result<Resolved> {
    let (base, sources) = profile::load(cli.config.as_deref(), cli.profile.as_deref())?;
    let given = Profile {
        vault: cli.vault.clone(),
        vault_key: cli.vault_key.clone(),
        key: cli.key.clone(),
        dataset: cli.dataset.clone(),
        source: cli.source.clone(),
        receipts: cli.receipts.clone(),
        cache: cli.cache.clone(),
        connect_timeout_secs: cli.connect_timeout_secs,
        exclude: cli.exclude.clone(),
        exclude_file: cli.exclude_file.clone(),
        one_file_system: cli.one_file_system.then_some(true),
        policy: cli.policy.clone(),
        root: cli.root.clone(),
    };
    let settings = given.over(base);
    let need = |value: &Option<String>, flag: &str, field: &str, sources: &Sources| Profile::require(value, flag, field, sources).cloned();
    let vault = need(&settings.vault, "--vault", "vault", &sources)?;
    let vault_key = keyfile::public_key_arg(&need(&settings.vault_key, "--vault-key", "vault_key", &sources)?)?;
    let key_file = Profile::require(&settings.key, "--key", "key", &sources)?.clone();
    let dataset = need(&settings.dataset, "--dataset", "dataset", &sources)?;
    vault_core::push::ingest::check_dataset(&dataset)?;
    let source = Profile::require(&settings.source, "SOURCE (the last argument)", "source", &sources)?.clone();
    let stream = source.as_os_str() == "-";
    if stream && (!settings.exclude.is_empty() || !settings.exclude_file.is_empty() || settings.one_file_system == Some(true)) {
        return Err(CliError::Usage("--exclude, --exclude-file and --one-file-system apply to a directory; the source is a stream (`-`)".into()));
    }
    let excludes = Excludes::new(&settings.exclude, &settings.exclude_file, settings.one_file_system.unwrap_or(false))?;
    let cache = if cli.no_cache || stream {
        None
    } else {
        let name = format!("{}-{dataset}.json", &vault_key.key_id()[..16]);
        Some(settings.cache.clone().unwrap_or_else(|| profile::default_cache_dir().join(name)))
    };
    let policy = match (&settings.policy, &settings.root) {
        (Some(policy), Some(root)) => Some(window::load_policy(policy, root, vault_io::clock_now())?),
        (Some(_), None) | (None, Some(_)) => return Err(CliError::Usage("--policy and --root go together: a policy copy is only believed once verified against the trust root".into())),
        (None, None) => None,
    };
    Ok(Resolved {
        args: push::PushArgs {
            vault,
            vault_key,
            key_file,
            dataset,
            source,
            cache,
            receipts: settings.receipts.clone().unwrap_or_else(profile::default_receipts),
            connect_timeout: Duration::from_secs(settings.connect_timeout_secs.unwrap_or(10)),
            progress: !json,
            excludes,
        },
        policy,
    })
}

pub fn run(cli: PushCli, json: bool) -> Result<()> {
    let Resolved { args, policy } = resolve(&cli, json)?;
    let pusher = keyfile::load_secret(&args.key_file)?.public_key();
    if let Some(policy) = &policy {
        window::check_pusher(policy, &pusher)?;
    }
    if cli.dry_run {
        return dry_run(&args, policy.as_ref(), json);
    }
    if cli.wait_for_window && policy.is_none() {
        return Err(CliError::Usage("--wait-for-window needs the vault's policy: give --policy BUNDLE and --root root.toml (or `policy`/`root` in the profile)".into()));
    }
    let stream = args.source.as_os_str() == "-";
    let open_until = match &policy {
        Some(policy) if cli.wait_for_window => Some(window::wait_for_window(policy, vault_io::clock_now, std::thread::sleep)?),
        Some(policy) => match window::open_until(policy, vault_io::clock_now()) {
            Ok(until) => Some(until),
            // Nothing of a stream may be read while no one can take it.
            Err(closed) if stream => return Err(closed),
            Err(_) => None,
        },
        None => None,
    };
    let retry_until = if cli.wait_for_window && !stream { open_until } else { None };
    let outcome = window::retry_while_open(retry_until, vault_io::clock_now, std::thread::sleep, || push::push(&args))?;
    let r = &outcome.receipt;
    let secs = outcome.elapsed.as_secs_f64();
    if json {
        let value = serde_json::json!({
            "snapshot": r.snapshot_id,
            "receipt": outcome.receipt_path,
            "received_at": r.received_at.to_string(),
            "retain_until": r.retain_until.to_string(),
            "files": r.files,
            "logical_bytes": r.logical_bytes,
            "chunks_total": r.chunks_total,
            "chunks_new": r.chunks_new,
            "bytes_new": r.bytes_new,
            "stats": outcome.stats,
            "elapsed_s": secs,
            "suspect": r.suspect,
            "signals": r.signals,
            "audit_log": match &outcome.witnessed {
                Ok(witness::Witnessed::Consistent { entries, from }) => serde_json::json!({ "consistent": true, "entries": entries, "from": from }),
                Ok(witness::Witnessed::NothingYet) => serde_json::json!({ "consistent": null }),
                Err(e) => serde_json::json!({ "consistent": false, "error": e.to_string() }),
            },
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON values serialize"));
    } else {
        println!("sealed {} in vault {} at {} (vault time)", r.snapshot_id, r.vault_id, r.received_at);
        println!("  {} files, {} bytes; {} of {} chunks new ({} bytes sent) in {secs:.1}s", r.files, r.logical_bytes, r.chunks_new, r.chunks_total, outcome.stats.bytes_sent);
        println!("  retained until {}; receipt verified and kept at {}", r.retain_until, outcome.receipt_path.display());
        match &outcome.witnessed {
            Ok(witness::Witnessed::Consistent { entries, from: 0 }) => println!("  vault audit log: {entries} entries; its checkpoint is kept to check the next one against"),
            Ok(witness::Witnessed::Consistent { entries, from }) => println!("  vault audit log: {entries} entries, proven to extend the {from} this pusher saw before"),
            Ok(witness::Witnessed::NothingYet) => println!("  vault audit log: the vault sent no checkpoint yet"),
            Err(_) => {}
        }
        for signal in &r.signals {
            println!("  ransomware signal: {signal}");
        }
    }
    outcome.witnessed?;
    if r.suspect {
        let signals: Vec<String> = r.signals.iter().map(ToString::to_string).collect();
        return Err(CliError::Suspect(format!(
            "snapshot {} is sealed but the vault judged it suspect ({}): it looks like encrypted or destroyed data. Check the source host for ransomware before the next push; the vault holds every earlier snapshot of `{}` until the admins sign a release order",
            r.snapshot_id,
            signals.join("; "),
            r.dataset
        )));
    }
    Ok(())
}

/// What a push would do, checked offline: the settings, the keys, the source (walked with the
/// excludes, nothing read), and the window.
fn dry_run(args: &push::PushArgs, policy: Option<&vault_core::policy::Policy>, json: bool) -> Result<()> {
    let now = vault_io::clock_now();
    let walk = push::survey(&args.source, &args.excludes)?;
    let window = policy.map(|p| window::describe(p, now));
    if json {
        let value = serde_json::json!({
            "dry_run": true,
            "vault": args.vault,
            "vault_key": args.vault_key.to_string(),
            "dataset": args.dataset,
            "source": args.source,
            "files": walk.files,
            "bytes": walk.bytes,
            "excluded": walk.excluded,
            "other_file_systems": walk.other_file_systems,
            "receipts": args.receipts,
            "window": window,
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON values serialize"));
    } else {
        println!("dry run: nothing sent");
        println!("  vault {} (key {}), dataset `{}`", args.vault, args.vault_key, args.dataset);
        if args.source.as_os_str() == "-" {
            println!("  source: standard input (a stream)");
        } else {
            println!(
                "  source {}: {} files, {} bytes; {} entries excluded by {} pattern(s), {} directories on other file systems",
                args.source.display(),
                walk.files,
                walk.bytes,
                walk.excluded,
                args.excludes.count,
                walk.other_file_systems
            );
        }
        println!("  receipts kept in {}", args.receipts.display());
        match window {
            Some(line) => println!("  {line}"),
            None => println!("  window: unknown (give --policy and --root to check it)"),
        }
    }
    Ok(())
}
