//! `gatekeeper run`: the daemon on a real host. Seals every NIC first, then starts the
//! watchdog, loads the accepted policy, starts the egress guard and hands over to the
//! [`Driver`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vault_core::link::egress::EgressRule;
use vault_core::link::gate::{Gate, Sighting};
use vault_core::policy::{Network, NicSelector, Policy};

use crate::daemon::{Driver, Inputs, LinkOps, Recheck, StateDone, StateJob, SystemClock};
use crate::egress_guard::{self, GuardControl};
use crate::error::{GatekeeperError, Result};
use crate::events::{Event, EventLog};
use crate::ingress_filter;
use crate::link::{LinkConfirmation, Nic, RtLink};
use crate::policy_store;
use crate::sessions_api::ServerFactory;
use crate::watchdog::{self, Seen};

/// The vault NIC under rtnetlink, with its egress guard.
pub struct RtVaultLink {
    rt: RtLink,
    /// The vault NIC of the policy in force.
    nic: Option<Nic>,
    /// The NIC a window brought up, until netlink confirms it down: what `take_down` downs,
    /// even if a new policy names another NIC meanwhile.
    up: Option<Nic>,
    /// A new policy's network, adopted once the link it replaces is down.
    pending: Option<Network>,
    port: u16,
    carrier_within: Duration,
    guard: Arc<GuardControl>,
    /// The NIC and rule the running guard judges by, if one runs.
    guard_on: Option<(u32, EgressRule)>,
    guard_tx: mpsc::Sender<egress_guard::GuardReport>,
    /// Bumped on every bring-up, so a delayed "stop replying" never lands in a newer window.
    generation: Arc<AtomicU64>,
    loopback: BTreeSet<u32>,
}

/// The egress rule and the ingress filter speak IPv4 only.
fn ipv4(address: IpAddr) -> Result<Ipv4Addr> {
    match address {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => Err(GatekeeperError::Guard { reason: format!("{address} is not IPv4") }),
    }
}

impl RtVaultLink {
    /// Starts the guard on `nic`, or restarts it when a new policy changed the NIC or the rule.
    fn start_guard(&mut self, nic: &Nic, address: Ipv4Addr) -> Result<()> {
        let mac = nic.mac.ok_or_else(|| GatekeeperError::NoMac { nic: nic.name.clone() })?;
        let wanted = (nic.index, EgressRule { mac, address, port: self.port });
        // A guard that ended (it could no longer vouch for the NIC, and said so) is replaced.
        if self.guard_on.as_ref() == Some(&wanted) && !self.guard.ended.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self.guard_on.take().is_some() {
            self.guard.stop.store(true, Ordering::SeqCst);
            self.guard = Arc::new(GuardControl::default());
        }
        egress_guard::start(wanted.0, wanted.1, self.guard.clone(), self.guard_tx.clone())?;
        self.guard_on = Some(wanted);
        Ok(())
    }
}

impl RtVaultLink {
    async fn adopt_network(&mut self, network: &Network) -> Result<()> {
        self.port = network.port;
        let nic = self.rt.find(&network.nic).await?;
        self.nic = Some(nic.clone());
        // Watch now, so a frame sent while sealed is caught too.
        self.start_guard(&nic, ipv4(network.address)?)
    }
}

impl LinkOps for RtVaultLink {
    async fn bring_up(&mut self, selector: &NicSelector, address: IpAddr, prefix: u8) -> Result<LinkConfirmation> {
        let nic = self.rt.find(selector).await?;
        // The guard watches before the first frame can leave.
        let v4 = ipv4(address)?;
        self.start_guard(&nic, v4)?;
        // Strangers' frames stop before the stack, so nothing they send draws an answer the
        // guard would have to call unsolicited. No filter confirmed, no link.
        // Off the loop's threads: the kernel's answer is waited for (up to its deadline).
        let (name, port) = (nic.name.clone(), self.port);
        tokio::task::spawn_blocking(move || ingress_filter::install(&name, v4, port))
            .await
            .map_err(|e| GatekeeperError::IngressFilter { nic: nic.name.clone(), reason: format!("the install task failed: {e}") })??;
        self.nic = Some(nic.clone());
        self.up = Some(nic.clone());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.guard.window.fetch_add(1, Ordering::SeqCst);
        self.guard.may_reply.store(true, Ordering::SeqCst);
        self.rt.bring_up(&nic, address, prefix, self.carrier_within).await
    }

    async fn take_down(&mut self) -> Result<LinkConfirmation> {
        let Some(nic) = self.up.clone().or_else(|| self.nic.clone()) else {
            return Err(GatekeeperError::Guard { reason: "no vault NIC resolved yet".into() });
        };
        let confirmation = self.rt.take_down(&nic).await?;
        self.up = None;
        if let Some(network) = self.pending.take() {
            // Failing to resolve the new NIC here is seen again, and raised, at the next bring-up.
            let _ = self.adopt_network(&network).await;
        }
        // Frames sent before the link went down may still be in the guard's queue: stop
        // counting replies as owed a moment later, unless a new window started meanwhile.
        let (guard, generation, at) = (self.guard.clone(), self.generation.clone(), self.generation.load(Ordering::SeqCst));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if generation.load(Ordering::SeqCst) == at {
                guard.may_reply.store(false, Ordering::SeqCst);
            }
        });
        Ok(confirmation)
    }

    async fn adopt_policy(&mut self, policy: &Policy) -> Result<()> {
        if self.up.is_some() {
            // The link of the policy being replaced is still up, guarded as it was; switch NIC
            // and guard only once it is confirmed down.
            self.pending = Some(policy.network.clone());
            return Ok(());
        }
        self.adopt_network(&policy.network).await
    }

    async fn survey(&mut self) -> Result<Vec<Seen>> {
        let mut seen = Vec::new();
        for link in self.rt.all_links().await? {
            if !self.loopback.contains(&link.header.index) && crate::link::shows_up(&link) {
                seen.push(Seen { ifindex: link.header.index, sighting: Sighting::LinkUp });
            }
        }
        for address in self.rt.all_addresses().await? {
            if let Some(ip) = crate::link::address_in(&address).filter(|_| !self.loopback.contains(&address.header.index)) {
                seen.push(Seen { ifindex: address.header.index, sighting: Sighting::NewAddress(ip) });
            }
        }
        Ok(seen)
    }

    async fn recheck(&mut self, seen: &Seen) -> Recheck {
        if self.loopback.contains(&seen.ifindex) {
            return Recheck::Stale;
        }
        let vault = self.nic.clone().filter(|n| n.index == seen.ifindex);
        // A foreign NIC by its real name: its sysctls are written by name when it is downed.
        let nic = match vault.clone() {
            Some(nic) => nic,
            None => match self.rt.nic(seen.ifindex).await {
                Ok(nic) => nic,
                Err(_) => return Recheck::Stale,
            },
        };
        let Ok(now) = self.rt.confirm(&nic, Instant::now()).await else { return Recheck::Stale };
        let still_true = match &seen.sighting {
            Sighting::LinkUp => now.admin_up,
            Sighting::NewAddress(ip) => now.addresses.contains(&ip.to_string()),
        };
        match (still_true, vault) {
            (false, _) => Recheck::Stale,
            (true, Some(_)) => Recheck::Vault(seen.sighting.clone()),
            (true, None) => Recheck::Foreign { nic: nic.name.clone(), taken_down: self.rt.take_down(&nic).await },
        }
    }
}

/// Starts the state directory's one writer ([`StateJob`]) on its own thread: time floors
/// (read, raise, write atomically) and bundles from sticks (verified against the baked root,
/// persisted, the outcome on the console), in the order they come. Its results come back to
/// the loop as [`StateDone`].
fn start_state_writer(root_path: PathBuf, state_dir: PathBuf, store_dir: Option<PathBuf>, mut events: EventLog) -> std::io::Result<(std::sync::mpsc::Sender<StateJob>, mpsc::Receiver<StateDone>)> {
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<StateJob>();
    let (done_tx, done_rx) = mpsc::channel(16);
    std::thread::Builder::new().name("state-writer".into()).spawn(move || {
        for job in jobs_rx {
            // Every change is read, changed, written atomically: the state file is this thread's alone.
            let update = |change: &mut dyn FnMut(&mut vault_core::policy::state::VaultState)| -> Result<vault_core::policy::state::VaultState> {
                let mut state = policy_store::load_state(&state_dir)?;
                change(&mut state);
                policy_store::save_state(&state_dir, &state)?;
                Ok(state)
            };
            let done = match job {
                StateJob::Floor(floor) => StateDone::Floor { floor, result: update(&mut |state| state.observe_time(floor)).map(|_| ()).map_err(|e| e.to_string()) },
                StateJob::Order { source, bytes, at } => {
                    let applied = policy_store::load_root(&root_path).and_then(|root| policy_store::apply_order(&root, (&state_dir, store_dir.as_deref()), &source, &bytes, at, &mut events));
                    StateDone::Orders(applied.ok().map(|accepted| accepted.state))
                }
                StateJob::PurgesDone { executed, lapsed } => {
                    StateDone::Orders(update(&mut |state| state.orders.pending_purges.retain(|p| !executed.contains(&p.id) && !lapsed.contains(&p.id))).ok().map(|state| state.orders))
                }
                StateJob::ExportsDone(done) => StateDone::Orders(update(&mut |state| state.orders.pending_exports.retain(|e| !done.contains(&e.id))).ok().map(|state| state.orders)),
                StateJob::Suspect { pusher, dataset, snapshot, at } => {
                    let held = update(&mut |state| state.orders.hold_suspect(&pusher, &dataset, &snapshot, at));
                    if let Err(e) = &held {
                        events.emit(at, &Event::Alarm { rule: "suspect_hold_not_persisted".into(), detail: format!("{e}: the hold on `{pusher}`/`{dataset}` lasts only until the next start") });
                    }
                    StateDone::Orders(held.ok().map(|state| state.orders))
                }
                StateJob::LastRotation(at) => StateDone::LastRotation { result: update(&mut |state| state.last_rotation = Some(at)).map(|_| ()).map_err(|e| e.to_string()) },
                StateJob::LastDrill(at, summary) => StateDone::LastDrill { result: update(&mut |state| state.last_drill = Some((at, summary.clone()))).map(|_| ()).map_err(|e| e.to_string()) },
                StateJob::LastScrub(at) => StateDone::LastScrub { result: update(&mut |state| state.last_scrub = Some(at)).map(|_| ()).map_err(|e| e.to_string()) },
                StateJob::Bundle { source, bytes, at } => {
                    let now = at.now;
                    let applied = policy_store::load_root(&root_path)
                        .inspect_err(|e| {
                            events.emit(now, &Event::PolicyRefused { source: source.clone(), reason: format!("trust root unreadable: {e}") });
                        })
                        .and_then(|root| policy_store::apply_bytes(&root, &state_dir, &source, bytes, at, &mut events));
                    StateDone::Bundle(applied.ok().map(|verified| (verified.policy, verified.new_state.keep_last_floor)))
                }
            };
            if done_tx.blocking_send(done).is_err() {
                return;
            }
        }
    })?;
    Ok((jobs_tx, done_rx))
}

async fn shutdown_signal() -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM".into(),
        _ = int.recv() => "SIGINT".into(),
    }
}

/// How the daemon is run: production passes the default server and the signal handler;
/// tests pass their own session server double and a shutdown trigger.
pub struct RunOptions<S> {
    pub carrier_within: Duration,
    pub server: ServerFactory,
    pub shutdown: S,
    pub events: EventLog,
    /// Watch for policy sticks and mount them here (the appliance); `None` on a host.
    pub usb_mount: Option<PathBuf>,
    /// The store, for the status line's used and free bytes.
    pub store_dir: Option<PathBuf>,
}

/// The production shutdown: SIGTERM or SIGINT.
pub async fn on_signal() -> String {
    shutdown_signal().await
}

/// SIGTERM only: as PID 1 the daemon ignores SIGINT, which is what the kernel sends init for
/// Ctrl-Alt-Del once it is switched off ([`crate::init::ignore_ctrl_alt_del`]).
pub async fn on_terminate() -> String {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
            "SIGTERM".into()
        }
        Err(_) => std::future::pending().await,
    }
}

/// The daemon. Returns on shutdown or a start-up failure (the link is down either way), with
/// the event log.
pub async fn run<S: std::future::Future<Output = String>>(root_path: &Path, state_dir: &Path, options: RunOptions<S>) -> Result<EventLog> {
    let RunOptions { carrier_within, server, shutdown, mut events, usb_mount, store_dir } = options;
    let rt = RtLink::connect()?;
    // 1. Before anything else: NICs to come start quiet; every NIC but loopback down,
    // addresses flushed, quiet.
    crate::link::quiet_defaults()?;
    let all = rt.all_links().await?;
    let loopback: BTreeSet<u32> = all.iter().filter(|m| m.header.link_layer_type == netlink_packet_route::link::LinkLayerType::Loopback).map(|m| m.header.index).collect();
    for nic in rt.non_loopback().await? {
        let confirmation = rt.take_down(&nic).await?;
        events.emit(vault_io::clock_now(), &Event::LinkDown { why: "start: sealed before anything else".into(), confirmation });
    }
    // 2. The watchdog, subscribed before the policy is even read.
    let (seen_tx, seen_rx) = mpsc::channel(64);
    watchdog::start(seen_tx)?;

    // 3. The store and the vault key; without them the vault stays sealed.
    let services = server(&mut events)?;

    // 4. The policy in force, if any. Without one the vault stays sealed. An apply cut between
    //    its two writes is completed first (verified again in full), or its events say why not.
    if let Ok(root) = policy_store::load_root(root_path) {
        let _ = policy_store::finish_interrupted_apply(&root, state_dir, vault_core::policy::bundle::JudgedAt::trusted(vault_io::clock_now()), &mut events);
    }
    let state = policy_store::load_state(state_dir)?;
    let policy: Option<Policy> = match policy_store::load_root(root_path).and_then(|root| policy_store::load_accepted(&root, state_dir)) {
        Ok(policy) => policy,
        Err(e @ crate::error::GatekeeperError::PolicyDropped { version, .. }) => {
            events.emit(vault_io::clock_now(), &Event::PolicyDropped { version, reason: e.to_string() });
            None
        }
        Err(e) => {
            events.emit(vault_io::clock_now(), &Event::PolicyRefused { source: state_dir.display().to_string(), reason: e.to_string() });
            None
        }
    };
    events.emit(vault_io::clock_now(), &Event::Started { policy_version: policy.as_ref().map(|p| p.version), time_floor: state.time_floor.to_string(), uptime_ms: crate::init::uptime_ms() });

    let (guard_tx, guard_rx) = mpsc::channel(16);
    let link = RtVaultLink {
        rt: rt.clone(),
        nic: None,
        up: None,
        pending: None,
        port: 0,
        carrier_within,
        guard: Arc::new(GuardControl::default()),
        guard_on: None,
        guard_tx,
        generation: Arc::new(AtomicU64::new(0)),
        loopback,
    };
    // 5. Policy sticks, on the appliance (a host running tests has its own USB devices).
    let (usb_tx, usb_rx) = mpsc::channel(8);
    let export_mount = usb_mount.as_ref().map(|m| m.join("export"));
    if let Some(mount_point) = usb_mount {
        if let Err(e) = crate::usb::start(mount_point, usb_tx) {
            events.emit(vault_io::clock_now(), &Event::Alarm { rule: "usb_watcher_not_started".into(), detail: e.to_string() });
        }
    }

    let (reports_tx, reports_rx) = mpsc::channel(64);
    let (state_jobs, state_rx) = start_state_writer(root_path.to_path_buf(), state_dir.to_path_buf(), store_dir.clone(), events.sibling())
        .map_err(|source| crate::error::GatekeeperError::Io { what: "state writer thread", source })?;
    let mut driver = Driver::new(Gate::new(state.time_floor).built_at(crate::daemon::build_time()), link, SystemClock, services.server, reports_tx);
    driver.store = services.store;
    driver.maintenance = services.maintenance;
    driver.step_pause = services.step_pause;
    driver.set_last_checks(state.last_scrub, state.last_drill.clone(), state.last_rotation);
    driver.keep_last_floor = state.keep_last_floor;
    driver.identity = services.identity;
    driver.orders = state.orders.clone();
    driver.events = events;
    driver.state = Some(state_jobs);
    driver.store_dir = store_dir;
    driver.export_mount = export_mount;
    if let Some(policy) = policy {
        driver.apply_policy(policy).await;
    } else {
        driver.tick().await;
    }
    driver.run(Inputs { sessions: reports_rx, watchdog: seen_rx, guard: guard_rx, usb: usb_rx, state: state_rx }, shutdown).await;
    Ok(driver.events)
}
