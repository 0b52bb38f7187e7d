//! The gatekeeper binary: `run` (the daemon), `apply-bundle`, `status`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use gatekeeper::events::{listed_paths, Event, EventLog};
use gatekeeper::push_server::{Limits, PushService};
use gatekeeper::{error, policy_store};
use vault_core::policy::schedule::{self, WindowState};
use vault_core::units::ByteSize;
use vault_store::Reserve;

#[derive(Parser)]
#[command(name = "gatekeeper", version, about = "The air-gap vault's gatekeeper")]
struct Cli {
    /// The trust root baked into the image.
    #[arg(long, default_value = "/etc/vault/root.toml")]
    root: PathBuf,
    /// Where the vault keeps its floors, its accepted policy and its identity key.
    #[arg(long, default_value = "/data/state")]
    state: PathBuf,
    /// The write-once store of sealed snapshots.
    #[arg(long, default_value = "/data/store")]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verifies a policy bundle and, if it passes, makes it the vault's policy.
    ApplyBundle { bundle: PathBuf },
    /// Verifies an order (hold, release, purge, veto) and, if it passes, records it.
    ApplyOrder { order: PathBuf },
    /// Carries out the export orders waiting for the medium whose filesystem is mounted at
    /// DIR (what the daemon does when such a disk is inserted while sealed).
    Export {
        #[arg(long)]
        medium: PathBuf,
    },
    /// Prints the policy in force and what the schedule says now.
    Status,
    /// Prints the vault's public key, for pushers to pin. Refuses when --state holds none (the
    /// daemon makes it on first start), unless --create.
    Identity {
        /// Make the vault key if --state holds none yet (a new vault, before its first start).
        #[arg(long)]
        create: bool,
    },
    /// The daemon: seals every NIC, then opens the vault NIC only inside the policy's windows.
    Run {
        /// How long to wait for carrier when a window opens before giving up on it.
        #[arg(long, default_value_t = 5000)]
        carrier_timeout_ms: u64,
        /// From TCP accept to a finished TLS handshake.
        #[arg(long, default_value_t = 5_000)]
        handshake_timeout_ms: u64,
        /// Longest wait for the next frame of a session.
        #[arg(long, default_value_t = 30_000)]
        idle_timeout_ms: u64,
        /// Concurrent push sessions (connections that proved a pusher key); more are refused.
        #[arg(long, default_value_t = 16)]
        max_connections: usize,
        /// Watch for USB policy sticks and mount them here (the appliance does; off on a host).
        #[arg(long)]
        usb_mount: Option<PathBuf>,
        /// Free space on the store's filesystem that pushes never take, so the state directory
        /// (on the same filesystem on the appliance) can always be written. 0 turns it off.
        #[arg(long, value_parser = ByteSize::parse, default_value_t = ByteSize::from_bytes(Reserve::DEFAULT.bytes))]
        store_reserve: ByteSize,
        /// Free inodes pushes never take, for the same reason.
        #[arg(long, default_value_t = Reserve::DEFAULT.inodes)]
        store_reserve_inodes: u64,
        /// Test hook: where session workers make their jail (a test points it at nothing).
        #[arg(long, default_value = gatekeeper::session_worker::JAIL_PARENT, hide = true)]
        session_jail_parent: PathBuf,
        /// Test hook: pause this long after each seal step (power-cut tests cut inside it).
        #[arg(long, default_value_t = 0, hide = true)]
        seal_step_pause_ms: u64,
    },
}

fn main() -> ExitCode {
    // The session worker confines itself before it does anything else (no argument parsing).
    if std::env::args_os().nth(1).is_some_and(|arg| arg == gatekeeper::session_worker::SUBCOMMAND) {
        gatekeeper::session_worker::main();
    }
    // Before any thread: the daemon's frames are freed on other threads than made them.
    gatekeeper::heap::keep_freed_heap();
    // On the appliance the kernel starts us as /init, with its own idea of arguments.
    if gatekeeper::init::is_pid1() {
        boot_as_init();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ApplyBundle { bundle } => policy_store::load_root(&cli.root).and_then(|root| {
            std::fs::create_dir_all(&cli.state).map_err(|source| vault_io::IoError::Io { path: cli.state.clone(), source })?;
            // The policy in force presented again is nothing to do, not a failure.
            match policy_store::apply_bundle(&root, &cli.state, &bundle, vault_core::policy::bundle::JudgedAt::trusted(vault_io::clock_now()), &mut EventLog::default()) {
                Ok(_) | Err(gatekeeper::error::GatekeeperError::AlreadyInForce { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }),
        Command::ApplyOrder { order } => policy_store::load_root(&cli.root).and_then(|root| {
            std::fs::create_dir_all(&cli.state).map_err(|source| vault_io::IoError::Io { path: cli.state.clone(), source })?;
            let bytes = vault_io::read_bounded(&order, vault_core::policy::bundle::MAX_BUNDLE_BYTES)?;
            let at = vault_core::policy::bundle::JudgedAt::trusted(vault_io::clock_now());
            policy_store::apply_order(&root, (&cli.state, Some(&cli.store)), &order.display().to_string(), &bytes, at, &mut EventLog::default()).map(|_| ())
        }),
        Command::Export { medium } => policy_store::load_root(&cli.root).and_then(|root| {
            let identity = gatekeeper::identity::VaultIdentity::load(&cli.state)?;
            let now = vault_io::clock_now();
            let mut events = EventLog::default();
            policy_store::carry_out_exports(&root, &cli.state, &cli.store, &medium, &identity, now, &mut events)
        }),
        Command::Status => status(&cli.root, &cli.state),
        // Only on request: a mistyped --state must not give the vault a new identity.
        Command::Identity { create: true } => gatekeeper::identity::VaultIdentity::load_or_create(&cli.state).map(|id| println!("{}", id.public)),
        Command::Identity { create: false } => gatekeeper::identity::VaultIdentity::load(&cli.state).map(|id| println!("{}", id.public)),
        Command::Run { carrier_timeout_ms, handshake_timeout_ms, idle_timeout_ms, max_connections, usb_mount, store_reserve, store_reserve_inodes, session_jail_parent, seal_step_pause_ms } => {
            let limits = Limits {
                handshake: Duration::from_millis(handshake_timeout_ms),
                idle: Duration::from_millis(idle_timeout_ms),
                max_connections,
                seal_step_pause: Duration::from_millis(seal_step_pause_ms).min(gatekeeper::init::MAX_SEAL_STEP_PAUSE),
            };
            let paths = Paths { root: cli.root, state: cli.state, store: cli.store, usb_mount, session_jail_parent };
            let reserve = Reserve { bytes: store_reserve.bytes(), inodes: store_reserve_inodes };
            gatekeeper::audit::keep_from_now();
            run(&paths, carrier_timeout_ms, limits, reserve, EventLog::default())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatekeeper: {err}");
            ExitCode::FAILURE
        }
    }
}

/// PID 1: mount, load the boot drivers, mount the data partition, load the USB drivers in the
/// background, seal the root filesystem, drop capabilities, then the daemon, for ever.
fn boot_as_init() -> ! {
    use gatekeeper::init;
    // Every line from here on is also an entry of the audit log, once the data disk is open.
    gatekeeper::audit::keep_from_now();
    if let Err(e) = init::mount_pseudo_filesystems() {
        init::halt(&e.to_string());
    }
    let console_blocks = init::console_never_blocks().err();
    let mut events = EventLog::default();
    events.mirror_to_screen();
    let now = vault_io::clock_now();
    events.emit(now, &Event::Boot { uptime_ms: init::uptime_ms() });
    if let Some(e) = console_blocks {
        events.emit(now, &Event::Alarm { rule: "console_may_block".into(), detail: e.to_string() });
    }
    let hardened = init::harden_kernel();
    events.emit(now, &Event::KernelHardened { set: hardened.set, absent: hardened.absent });
    if !hardened.failed.is_empty() {
        let detail = format!("kernel settings that would not take their value: {}; the vault runs, with less of the kernel fenced off from the session worker", hardened.failed.join("; "));
        events.emit(now, &Event::Alarm { rule: "kernel_not_hardened".into(), detail });
    }
    // Ctrl-Alt-Del from any keyboard (a stick can pose as one) becomes a SIGINT that PID 1
    // ignores, not a restart without a sync.
    if let Err(e) = init::ignore_ctrl_alt_del() {
        init::halt(&e.to_string());
    }
    // Before any driver can make a NIC appear: NICs start quiet (the daemon downs them all).
    if let Err(e) = gatekeeper::link::quiet_defaults() {
        init::halt(&e.to_string());
    }
    let plan = init::read_module_plan(std::path::Path::new(init::MODULES_LIST)).unwrap_or_else(|e| init::halt(&e.to_string()));
    let boot = init::coldplug_boot(&plan);
    init::report_coldplug(&mut events, "boot", &boot);
    match init::mount_data(boot.data) {
        Ok(device) => events.emit(vault_io::clock_now(), &Event::DataMounted { device: device.display().to_string(), at: init::DATA_MOUNT.into(), uptime_ms: init::uptime_ms() }),
        Err(e) => init::halt(&e.to_string()),
    };
    // Before the capabilities go: the loader thread keeps CAP_SYS_MODULE until it ends.
    init::start_usb_coldplug(plan, boot.tried);
    if let Err(e) = init::seal_root_filesystem() {
        init::halt(&e.to_string());
    }
    events.emit(vault_io::clock_now(), &Event::RootReadOnly);
    match init::drop_capabilities() {
        Ok(kept) => events.emit(vault_io::clock_now(), &Event::CapabilitiesDropped { kept }),
        Err(e) => init::halt(&e.to_string()),
    };
    // Only now: capabilities belong to threads, and a thread started before the drop keeps them.
    init::start_reaper();
    let data = std::path::Path::new(init::DATA_MOUNT);
    let paths = Paths {
        root: init::ROOT_TOML.into(),
        state: data.join("state"),
        store: data.join("store"),
        usb_mount: Some(init::USB_MOUNT.into()),
        session_jail_parent: gatekeeper::session_worker::JAIL_PARENT.into(),
    };
    let mut limits = Limits::default();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if init::panic_once_open(&cmdline) {
        let detail = format!("kernel command line {}=1: the daemon panics once when a window opens (a test hook; no production image sets it)", init::PANIC_ONCE_OPEN_PARAM);
        events.emit(vault_io::clock_now(), &Event::Alarm { rule: "test_hook_enabled".into(), detail });
        gatekeeper::daemon::PANIC_ONCE_OPEN.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    if let Some(pause) = init::seal_step_pause(&cmdline) {
        let detail = format!("kernel command line {}: each seal and collection step pauses {} ms (a power-cut test hook; no production image sets it)", init::SEAL_STEP_PAUSE_PARAM, pause.as_millis());
        events.emit(vault_io::clock_now(), &Event::Alarm { rule: "test_hook_enabled".into(), detail });
        limits.seal_step_pause = pause;
    }
    // A panic anywhere in the daemon unwinds to here: the daemon starts again, and the first
    // thing it does is take every NIC down. A thread of its own that panics (the egress guard,
    // the state writer) ends alone and the daemon says so.
    init::report_panics();
    let mut events = Some(events);
    let mut restarts: Vec<std::time::Instant> = Vec::new();
    loop {
        let log = events.take().unwrap_or_else(|| {
            let mut log = EventLog::default();
            log.mirror_to_screen();
            log
        });
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&paths, 5000, limits, Reserve::DEFAULT, log)));
        if let Ok(stopped) = outcome {
            init::halt(&match stopped {
                Ok(()) => "the daemon stopped".to_string(),
                Err(e) => format!("the daemon stopped: {e}"),
            });
        }
        restarts.retain(|at| at.elapsed() < Duration::from_secs(3600));
        restarts.push(std::time::Instant::now());
        // Saturates: past u32::MAX it halts all the same.
        let restarts_this_hour = u32::try_from(restarts.len()).unwrap_or(u32::MAX);
        if restarts_this_hour > init::MAX_RESTARTS_PER_HOUR {
            init::halt(&format!("the daemon panicked {restarts_this_hour} times within an hour; the vault stays sealed until it is restarted"));
        }
        let mut log = EventLog::default();
        log.mirror_to_screen();
        log.emit(vault_io::clock_now(), &Event::DaemonRestarted { restarts_this_hour });
        events = Some(log);
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Where the daemon finds its inputs and keeps its data.
struct Paths {
    root: PathBuf,
    state: PathBuf,
    store: PathBuf,
    usb_mount: Option<PathBuf>,
    /// Where each window's session worker makes its (at once deleted) root directory.
    session_jail_parent: PathBuf,
}

fn run(paths: &Paths, carrier_timeout_ms: u64, limits: Limits, reserve: Reserve, events: EventLog) -> error::Result<()> {
    // Two workers: sessions decrypt and re-hash on them while the gate's timers stay
    // responsive. The egress guard and the USB watcher read on their own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|source| error::GatekeeperError::Io { what: "tokio runtime", source })?;
    let options = gatekeeper::run::RunOptions {
        carrier_within: Duration::from_millis(carrier_timeout_ms),
        server: push_server_factory(paths, limits, reserve),
        shutdown: if std::process::id() == 1 { gatekeeper::run::on_terminate().boxed() } else { gatekeeper::run::on_signal().boxed() },
        events,
        usb_mount: paths.usb_mount.clone(),
        store_dir: Some(paths.store.clone()),
    };
    let outcome = runtime.block_on(gatekeeper::run::run(&paths.root, &paths.state, options)).map(|_| ());
    gatekeeper::audit::flush(Duration::from_secs(5));
    outcome
}

/// Opens the store (cleaning what a crash left, re-marking sealed files immutable) and loads
/// the vault key, after the daemon has taken the NICs down.
fn push_server_factory(paths: &Paths, limits: Limits, reserve: Reserve) -> gatekeeper::sessions_api::ServerFactory {
    let (state, store_dir, jail_parent) = (paths.state.clone(), paths.store.clone(), paths.session_jail_parent.clone());
    Box::new(move |events| {
        let now = vault_io::clock_now();
        let identity = gatekeeper::identity::VaultIdentity::load_or_create(&state)?;
        events.emit(now, &Event::VaultIdentity { key: identity.public.to_string() });
        let (store, recovery) = vault_store::Store::open_with(&store_dir, reserve)?;
        report_recovery(events, now, &store_dir, &recovery);
        let identity = Arc::new(identity);
        gatekeeper::audit::start(&store_dir, identity.clone(), events.sibling());
        let store = Arc::new(store);
        let service = PushService { jail_parent, ..PushService::new(store.clone(), identity.clone(), limits) };
        let maintenance = service.maintenance.clone();
        Ok(gatekeeper::sessions_api::Services {
            server: gatekeeper::push_server::server(Arc::new(service)),
            store: Some(store),
            maintenance,
            step_pause: limits.seal_step_pause,
            identity: Some(identity),
        })
    })
}

/// What opening the store found and fixed, on the console: one `store_opened` line, and an
/// alarm for what it could not fix.
fn report_recovery(events: &mut EventLog, now: vault_core::units::Timestamp, store_dir: &std::path::Path, recovery: &vault_store::Recovery) {
    let shown = |path: &std::path::Path| path.strip_prefix(store_dir).unwrap_or(path).display().to_string();
    let fixed = recovery.immutable_fixed.iter().map(|(path, sealing)| match sealing {
        vault_store::Sealing::Immutable => shown(path),
        vault_store::Sealing::ReadOnlyFallback { reason } => format!("{} ({reason})", shown(path)),
    });
    events.emit(
        now,
        &Event::StoreOpened {
            snapshots: recovery.snapshots,
            chunks: recovery.chunks,
            staging_removed: recovery.staging_removed,
            orphan_packs_removed: recovery.orphan_packs_removed,
            immutable_fixed: listed_paths(fixed),
            owned_chunks: recovery.owned_chunks,
            expiries_finished: recovery.expiries_finished,
        },
    );
    let alarm = |events: &mut EventLog, rule: &str, count: usize, listed: Vec<String>, says: &dyn Fn(usize, String) -> String| {
        if count > 0 {
            events.emit(now, &Event::Alarm { rule: rule.into(), detail: says(count, listed.join("; ")) });
        }
    };
    let with_why = |items: &[(std::path::PathBuf, String)]| listed_paths(items.iter().map(|(path, why)| format!("{}: {why}", shown(path))));
    alarm(events, "immutable_not_restored", recovery.immutable_failed.len(), with_why(&recovery.immutable_failed), &|n, listed| {
        format!("{n} sealed path(s) lack the immutable flag and could not get it back ({listed}); they stay writable until a start succeeds: check the data disk")
    });
    let kept = listed_paths(recovery.sealed_orphans_kept.iter().map(|path| shown(path)));
    alarm(events, "pack_index_lost", recovery.sealed_orphans_kept.len(), kept, &|n, listed| {
        format!("{n} sealed pack(s) lost their index and were kept ({listed}); the snapshots that need their chunks cannot be restored until the index is restored from a copy")
    });
    alarm(events, "pack_damaged", recovery.damaged_packs.len(), with_why(&recovery.damaged_packs), &|n, listed| {
        format!(
            "{n} pack(s) set aside as damaged ({listed}); every other snapshot stays restorable. `vaultctl snapshots` on the disk names the snapshots that need their chunks: \
             restore those from another copy, and keep the disk for inspection"
        )
    });
    alarm(events, "snapshot_unreadable", recovery.ownership_unreadable.len(), with_why(&recovery.ownership_unreadable), &|n, listed| {
        format!("{n} snapshot(s) have a receipt or chunk list that cannot be read ({listed}); their pushers re-send what only those snapshots held. Check them with `vaultctl snapshots`")
    });
}

fn status(root_path: &std::path::Path, state_dir: &std::path::Path) -> error::Result<()> {
    let baked = policy_store::load_root(root_path)?;
    let state = policy_store::load_state(state_dir)?;
    let root = state.current_root(&baked)?;
    let now = vault_io::clock_now();
    println!("vault {} trust root v{}; time floor {}", root.vault_id, root.version, state.time_floor);
    let Some(policy) = policy_store::load_accepted(&baked, state_dir)? else {
        println!("no policy accepted: sealed");
        return Ok(());
    };
    match schedule::state_at(&policy, now.max(state.time_floor)) {
        WindowState::Open { until } => println!("policy v{}: window open until {until}", policy.version),
        WindowState::Closed { next_open } => println!("policy v{}: sealed; next opening {}", policy.version, next_open.map_or_else(|| "none before expiry".to_string(), |t| t.to_string())),
    }
    Ok(())
}
