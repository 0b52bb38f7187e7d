//! The daemon loop: drives the pure [`Gate`] with tokio timers and the I/O inputs (session
//! reports, watchdog sightings, egress-guard alarms), carries out its actions through a
//! [`LinkOps`], and emits every transition, confirmation and alarm as an event.
//!
//! The loop wakes at the gate's next deadline (a window start or end, a grace deadline, a
//! retry), measured on the vault clock, and at least once a second to check the clock.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use vault_core::link::gate::{Action, Gate, Input, JudgedTime, Sighting};
use vault_core::policy::bundle::JudgedAt;
use vault_core::policy::schedule::{self, WindowState};
use vault_core::policy::{NicSelector, Policy};
use vault_core::units::{TimeProvider, Timestamp};

use crate::egress_guard::GuardReport;
use crate::error::Result;
use crate::events::{Event, EventLog};
use crate::link::LinkConfirmation;
use crate::sessions_api::{SessionContext, SessionReport, SessionServer, Stop};
use crate::usb::UsbReport;
use crate::watchdog::{Seen, WatchReport};

/// The longest the loop sleeps between clock checks.
pub const CLOCK_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The vault's clock ([`TimeProvider::now`]), and where on tokio's timeline a vault instant
/// falls. The daemon hands a copy to each window's sessions, so receipts and seal steps read
/// the clock the gate reads.
pub trait VaultClock: TimeProvider + Clone + 'static {
    /// The tokio instant at which `now()` reaches `at` (now if already past).
    fn instant_of(&self, at: Timestamp) -> Instant;
}

/// The time everything the daemon and its sessions write down is stamped with (events, seal
/// steps, receipts, holds, the verdict on a stick): the daemon's clock as the gate judged it at
/// its last input ([`JudgedTime::at`]), and never before a stamp already given, by the daemon or
/// any session (a clock set back, or doubted after a reading was believed, holds the stamps
/// where they were rather than writing an earlier time after a later one). One per daemon; each
/// window's sessions get a clone.
#[derive(Clone)]
struct JudgedClock<C> {
    clock: C,
    judged: watch::Receiver<JudgedTime>,
    /// The daemon's origin of monotonic time, which its ticks hand to the gate.
    started: Instant,
    /// The latest stamp given (Unix seconds). Only judged stamps get here, so no implausible
    /// reading can pin it.
    latest: Arc<AtomicI64>,
}

impl<C: VaultClock> TimeProvider for JudgedClock<C> {
    fn now(&self) -> Timestamp {
        let judged = self.judged.borrow().at(self.clock.now(), self.started.elapsed());
        let latest = self.latest.fetch_max(judged.unix(), Ordering::SeqCst);
        Timestamp::from_unix(latest).map_or(judged, |latest| latest.max(judged))
    }
}

/// The alarms the store's fill raises: it is the filesystem's, so a store sharing a disk (a
/// test's on the host) reports the whole disk.
pub const CAPACITY_WARNING: &str = "capacity_warning";
pub const CAPACITY_CRITICAL: &str = "capacity_critical";

/// Whether an alarm's rule is one of the capacity alarms.
pub fn is_capacity_alarm(rule: &str) -> bool {
    [CAPACITY_WARNING, CAPACITY_CRITICAL].contains(&rule)
}

/// The host clock.
#[derive(Clone, Copy)]
pub struct SystemClock;

impl TimeProvider for SystemClock {
    fn now(&self) -> Timestamp {
        vault_io::clock_now()
    }
}

impl VaultClock for SystemClock {
    fn instant_of(&self, at: Timestamp) -> Instant {
        let target = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.unix().max(0) as u64);
        let ahead = target.duration_since(std::time::SystemTime::now()).unwrap_or_default();
        Instant::now() + ahead
    }
}

/// What a watchdog sighting turned out to be once checked against netlink.
pub enum Recheck {
    /// On the vault NIC and still true: the gate decides.
    Vault(Sighting),
    /// On another NIC: it was taken down (the vault has one link to the world).
    Foreign { nic: String, taken_down: Result<LinkConfirmation> },
    /// No longer true (an old event): nothing to do.
    Stale,
}

/// Link operations on the vault NIC. Generic (not `dyn`): the daemon owns exactly one.
#[allow(async_fn_in_trait)]
pub trait LinkOps {
    async fn bring_up(&mut self, nic: &NicSelector, address: IpAddr, prefix: u8) -> Result<LinkConfirmation>;
    async fn take_down(&mut self) -> Result<LinkConfirmation>;
    async fn recheck(&mut self, seen: &Seen) -> Recheck;
    /// What netlink shows right now, as sightings: every NIC but loopback that is up or has an
    /// address. Listed on every tick, so nothing the watchdog's events missed goes unseen for
    /// more than a tick.
    async fn survey(&mut self) -> Result<Vec<Seen>> {
        Ok(Vec::new())
    }
    /// A policy is about to be handed to the gate: resolve its NIC and watch it (the egress
    /// guard) before the gate can ask for the link.
    async fn adopt_policy(&mut self, _policy: &Policy) -> Result<()> {
        Ok(())
    }
}

/// Where the driver's inputs come from.
pub struct Inputs {
    pub sessions: mpsc::Receiver<SessionReport>,
    pub watchdog: mpsc::Receiver<WatchReport>,
    pub guard: mpsc::Receiver<GuardReport>,
    /// Policy sticks (the USB watcher); a closed channel when there is no watcher.
    pub usb: mpsc::Receiver<UsbReport>,
    /// What the state writer finished ([`StateDone`]).
    pub state: mpsc::Receiver<StateDone>,
}

impl Inputs {
    /// Inputs that never deliver anything.
    pub fn none() -> Inputs {
        Inputs { sessions: mpsc::channel(1).1, watchdog: mpsc::channel(1).1, guard: mpsc::channel(1).1, usb: mpsc::channel(1).1, state: mpsc::channel(1).1 }
    }
}

/// Work for the state directory's one writer, which runs on its own thread: the loop hands
/// it over and goes on. Every write there ends in an fsync, which a busy disk can stretch to
/// seconds, and the loop is what takes the link down.
#[derive(Debug)]
pub enum StateJob {
    /// Write this time floor to the state file.
    Floor(Timestamp),
    /// Verify bundle bytes read from a stick and, if they pass, persist them (the writer says
    /// the outcome on the console).
    Bundle { source: String, bytes: Vec<u8>, at: JudgedAt },
    /// Record when the last whole scrub started.
    LastScrub(Timestamp),
    /// Record when the last finished restore drill started, and its summary.
    LastDrill(Timestamp, String),
    /// Verify an order read from a stick and, if it passes, record it (holds, a purge waiting,
    /// a veto, the kind's serial).
    Order { source: String, bytes: Vec<u8>, at: JudgedAt },
    /// Purges carried out, and purges that lapsed: no longer waiting (by their ids).
    PurgesDone { executed: Vec<String>, lapsed: Vec<String> },
    /// Export orders carried out (by their ids): they do not run again.
    ExportsDone(Vec<String>),
    /// Record when a medium of the rotation set was last written.
    LastRotation(Timestamp),
    /// Hold a dataset whose snapshot the ransomware signals judged suspect.
    Suspect { pusher: String, dataset: String, snapshot: String, at: Timestamp },
}

/// What the state writer did, back to the loop.
#[derive(Debug)]
pub enum StateDone {
    Floor {
        floor: Timestamp,
        result: std::result::Result<(), String>,
    },
    LastScrub {
        result: std::result::Result<(), String>,
    },
    LastDrill {
        result: std::result::Result<(), String>,
    },
    LastRotation {
        result: std::result::Result<(), String>,
    },
    /// The orders as recorded now, if they changed.
    Orders(Option<vault_core::policy::orders::OrderState>),
    /// The policy of a bundle that was accepted and is durable; `None` if it was refused.
    /// An accepted policy, and the `keep_last` floor its acceptance left.
    Bundle(Option<(Policy, Option<vault_core::lifecycle::retention::KeepLastFloor>)>),
}

/// How often the console shows the state even when nothing changes.
pub const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Driver<L, C> {
    pub gate: Gate,
    pub link: L,
    pub events: EventLog,
    pub server: SessionServer,
    /// Where session reports go (a clone is handed to each window's server).
    pub session_reports: mpsc::Sender<SessionReport>,
    /// The state directory's writer ([`StateJob`]); none in tests that persist nothing.
    pub state: Option<std::sync::mpsc::Sender<StateJob>>,
    /// Tests bind the listener here instead of the policy address.
    pub bind_override: Option<SocketAddr>,
    /// The store, whose filesystem's used and free bytes the status line shows.
    pub store_dir: Option<std::path::PathBuf>,
    /// The store the lifecycle rules are carried out on (expiry); none in tests without one.
    pub store: Option<Arc<vault_store::Store>>,
    /// Taken exclusively by each lifecycle run (seals share it).
    pub maintenance: crate::lifecycle::Maintenance,
    /// The power-cut test hook's pause after each collection step (zero unless asked).
    pub step_pause: std::time::Duration,
    /// The vault key, which signs drill reports; none in tests without a store (no drills).
    pub identity: Option<Arc<crate::identity::VaultIdentity>>,
    /// Holds and purges in force (from the state file at start, then as orders are accepted).
    pub orders: vault_core::policy::orders::OrderState,
    /// A higher `keep_last` expiry still keeps to after a policy lowered it (from the state
    /// file at start, then with each accepted bundle).
    pub keep_last_floor: Option<vault_core::lifecycle::retention::KeepLastFloor>,
    /// Where export media are mounted read-write, one directory each; none: no exports (tests
    /// without USB).
    pub export_mount: Option<std::path::PathBuf>,
    lifecycle: LifecycleRuns,
    exports: ExportRuns,
    /// Pushers with a suspect hold, as the window's session server sees them.
    suspects: watch::Sender<std::collections::BTreeSet<String>>,
    suspects_said: bool,
    stop: Option<watch::Sender<Stop>>,
    last_commit: Option<(String, Timestamp)>,
    status_due: Instant,
    /// What the gate judged at its last input, for [`JudgedClock`]s.
    judged: watch::Sender<JudgedTime>,
    /// The vault's clock (read only through this), what the daemon stamps with, and what each
    /// window's sessions get a clone of; its `started` is the origin of the monotonic time
    /// handed to the gate with each clock reading.
    stamps: JudgedClock<C>,
    /// The vault's time at the first lifecycle run: a vault that never drilled is overdue a
    /// week after it.
    started_at: Option<Timestamp>,
}

/// How often the lifecycle looks again when nothing falls due sooner (a snapshot kept as one of
/// its dataset's newest falls due only when a newer one arrives).
pub const LIFECYCLE_RECHECK: std::time::Duration = std::time::Duration::from_secs(3600);

/// The lifecycle in the loop: a run (expiry, collection, a scrub when one is due) is carried
/// out on a blocking thread ([`crate::lifecycle::run`]) and reports back here; `sealed` is what
/// that run checks before each snapshot or pack.
struct LifecycleRuns {
    /// When the last whole scrub started (from the state file at start), and what it found.
    pub last_scrub: Option<Timestamp>,
    last_scrub_result: Option<String>,
    /// When the last finished restore drill started (from the state file at start), its summary.
    last_drill: Option<(Timestamp, String)>,
    /// Whether the overdue drill was alarmed (once until a drill finishes).
    drill_overdue_said: bool,
    /// When the capacity event is next said (once a day), and the level last alarmed.
    capacity_due: Option<Timestamp>,
    level: vault_core::lifecycle::capacity::Level,
    running: bool,
    due: Option<Timestamp>,
    sealed: Arc<std::sync::atomic::AtomicBool>,
    done_tx: mpsc::Sender<crate::lifecycle::LifecycleReport>,
    done_rx: mpsc::Receiver<crate::lifecycle::LifecycleReport>,
}

impl Default for LifecycleRuns {
    fn default() -> Self {
        let (done_tx, done_rx) = mpsc::channel(1);
        LifecycleRuns {
            last_scrub: None,
            last_scrub_result: None,
            last_drill: None,
            drill_overdue_said: false,
            capacity_due: None,
            level: vault_core::lifecycle::capacity::Level::Fine,
            running: false,
            due: None,
            sealed: Arc::default(),
            done_tx,
            done_rx,
        }
    }
}

/// Exports in the loop: one medium at a time, written on a blocking thread that holds the store
/// to itself (no collection or expiry meanwhile), and stopped when the vault leaves Sealed (the
/// lifecycle's `sealed` flag).
struct ExportRuns {
    running: bool,
    /// When a medium of the rotation set was last written (from the state file at start).
    last_rotation: Option<Timestamp>,
    /// Whether the overdue rotation was alarmed (once until a medium is written).
    rotation_overdue_said: bool,
    /// Media mounted so far: each gets its own mount point.
    mounts: u64,
    done_tx: mpsc::Sender<ExportsDone>,
    done_rx: mpsc::Receiver<ExportsDone>,
}

/// What one medium's exports came to.
struct ExportsDone {
    events: Vec<Event>,
    /// Export orders carried out (struck off the pending ones).
    done: Vec<String>,
    /// When a rotation export was written, if one was.
    rotated: Option<Timestamp>,
}

impl Default for ExportRuns {
    fn default() -> Self {
        let (done_tx, done_rx) = mpsc::channel(1);
        ExportRuns { running: false, last_rotation: None, rotation_overdue_said: false, mounts: 0, done_tx, done_rx }
    }
}

/// Set from the kernel command line ([`crate::init::PANIC_ONCE_OPEN_PARAM`]): the daemon
/// panics the first time a window opens, to prove PID 1 survives it. Never set otherwise.
pub static PANIC_ONCE_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// When this binary was built, a time the vault's clock cannot be earlier than. The image build
/// passes `SOURCE_DATE_EPOCH` (the commit's time, so the image stays reproducible); any other
/// build uses the last time this line was changed.
pub fn build_time() -> Timestamp {
    const CHANGED: i64 = 1_793_491_200; // 2026-11-01T00:00:00Z
    let secs = option_env!("SOURCE_DATE_EPOCH").and_then(|s| s.parse::<i64>().ok()).unwrap_or(CHANGED);
    Timestamp::from_unix(secs).unwrap_or_else(|| Timestamp::from_unix(CHANGED).expect("a valid time"))
}

impl<L: LinkOps, C: VaultClock> Driver<L, C> {
    pub fn new(gate: Gate, link: L, clock: C, server: SessionServer, session_reports: mpsc::Sender<SessionReport>) -> Self {
        let judged = watch::Sender::new(gate.judged());
        let stamps = JudgedClock { clock, judged: judged.subscribe(), started: Instant::now(), latest: Arc::default() };
        Driver {
            gate,
            link,
            events: EventLog::default(),
            server,
            session_reports,
            state: None,
            bind_override: None,
            store_dir: None,
            store: None,
            maintenance: Arc::default(),
            step_pause: std::time::Duration::ZERO,
            identity: None,
            orders: Default::default(),
            keep_last_floor: None,
            export_mount: None,
            lifecycle: LifecycleRuns::default(),
            exports: ExportRuns::default(),
            suspects: watch::Sender::new(Default::default()),
            suspects_said: false,
            stop: None,
            last_commit: None,
            status_due: Instant::now(),
            judged,
            stamps,
            started_at: None,
        }
    }

    /// Reads the clock and hands the reading to the gate, with the monotonic time since the
    /// driver started (tokio's clock, paused in tests), so the gate can tell a jump of the wall
    /// clock from time passing.
    pub async fn tick(&mut self) {
        // Orders read at start are said before the first tick can open a window.
        self.sync_suspects().await;
        let clock = self.stamps.clock.now();
        let monotonic = self.stamps.started.elapsed();
        self.feed(Input::Tick { clock, monotonic }).await;
        self.survey().await;
        self.maybe_run_lifecycle();
    }

    /// The state file's record of the last whole scrub and the last drill (at start).
    pub fn set_last_checks(&mut self, scrub: Option<Timestamp>, drill: Option<(Timestamp, String)>, rotation: Option<Timestamp>) {
        self.lifecycle.last_scrub = scrub;
        self.lifecycle.last_drill = drill;
        self.exports.last_rotation = rotation;
    }

    /// Starts a lifecycle run if one is due and the rules let it run now (sealed, a trusted
    /// clock, a policy in force: [`vault_core::lifecycle::retention::may_expire`]).
    fn maybe_run_lifecycle(&mut self) {
        let Some(store) = self.store.clone() else { return };
        let now = self.gate.now();
        if self.lifecycle.running || self.lifecycle.due.is_some_and(|due| now < due) {
            return;
        }
        let sealed = self.gate.phase() == vault_core::link::gate::Phase::Sealed;
        if vault_core::lifecycle::retention::may_expire(sealed, self.gate.clock_fault(), self.gate.policy().is_some()).is_err() {
            return;
        }
        let policy = self.gate.policy();
        let mut retention = policy.map(|p| p.retention).unwrap_or_default();
        retention.keep_last = vault_core::lifecycle::retention::effective_keep_last(retention.keep_last, self.keep_last_floor, now);
        let now = policy.map_or(now, |p| vault_core::lifecycle::retention::expiry_time(now, p.expires));
        // No pack younger than a day, or than the longest window, is collected.
        let longest_window = policy.and_then(|p| p.windows.iter().map(|w| w.length()).max());
        let gc_grace = std::time::Duration::from_secs(u64::try_from(vault_core::lifecycle::collection::grace(longest_window).secs()).unwrap_or(0));
        let scrub = vault_core::lifecycle::scrub::is_due(self.lifecycle.last_scrub, policy.map(|p| p.scrub).unwrap_or_default(), now);
        let drill_rules = policy.map(|p| p.drill).unwrap_or_default();
        let drill = match &self.identity {
            Some(identity) if vault_core::lifecycle::drill::is_due(self.lifecycle.last_drill.as_ref().map(|(at, _)| *at), drill_rules, now) => {
                let mut seed = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).expect("the kernel's random source");
                Some(crate::lifecycle::DrillJob { seed, sample: drill_rules.sample, identity: identity.clone() })
            }
            _ => None,
        };
        // Purges whose cooling-off is over go in this run; those that lapsed are said and dropped.
        let (purges, lapsed, _) = vault_core::policy::orders::purges_due(&self.orders, now);
        if !lapsed.is_empty() {
            for purge in &lapsed {
                self.emit(Event::PurgeLapsed { order: purge.id.clone(), reason: purge.reason.clone(), expired_at: purge.expires.clone() });
            }
            let ids: Vec<String> = lapsed.iter().map(|p| p.id.clone()).collect();
            // Said once: no longer waiting here, and recorded so by the state writer.
            self.orders.pending_purges.retain(|p| !ids.contains(&p.id));
            self.hand_to_state_writer(StateJob::PurgesDone { executed: Vec::new(), lapsed: ids });
        }
        let job = crate::lifecycle::Job { now, retention, holds: self.orders.holds(), gc_grace, scrub, drill, purges, step_pause: self.step_pause };
        let (flag, done, maintenance) = (self.lifecycle.sealed.clone(), self.lifecycle.done_tx.clone(), self.maintenance.clone());
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        self.lifecycle.running = true;
        // A blocking thread: unlinks, fsyncs and reads (and tokio's paused test clock waits for it).
        tokio::task::spawn_blocking(move || {
            // After every seal still under way (a session aborted at the close may still be
            // sealing); `run` checks again that the vault is sealed.
            let _exclusive = maintenance.blocking_write();
            let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::lifecycle::with_idle_io(|| crate::lifecycle::run(&store, &job, &flag)))).unwrap_or_else(|panic| {
                let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                let alarm = Event::Alarm { rule: "lifecycle_failed".into(), detail: format!("the lifecycle run stopped ({why}); tried again in an hour") };
                crate::lifecycle::LifecycleReport { events: vec![alarm], ..Default::default() }
            });
            let _ = done.blocking_send(report);
        });
    }

    fn on_lifecycle_done(&mut self, report: crate::lifecycle::LifecycleReport) {
        self.lifecycle.running = false;
        let now = self.gate.now();
        let recheck = now.saturating_add(vault_core::units::Duration::from_secs(LIFECYCLE_RECHECK.as_secs() as i64).expect("an hour is a duration"));
        // A snapshot due at `next_due` goes once the time is past it: look a second later.
        let one_second = vault_core::units::Duration::from_secs(1).expect("a second is a duration");
        let mut due = report.next_due.map_or(recheck, |due| due.saturating_add(one_second).min(recheck));
        // Carried out: no longer waiting (the state writer records it too).
        self.orders.pending_purges.retain(|p| !report.purged.contains(&p.id));
        // A purge whose cooling-off ends sooner is looked at then.
        if let Some(next_purge) = self.orders.pending_purges.iter().filter_map(|p| Timestamp::parse(&p.executes_at).ok()).min() {
            due = due.min(next_purge.max(now));
        }
        self.lifecycle.due = Some(due);
        for event in report.events {
            self.emit(event);
        }
        if !report.purged.is_empty() {
            self.hand_to_state_writer(StateJob::PurgesDone { executed: report.purged.clone(), lapsed: Vec::new() });
        }
        if let Some((started, result)) = report.scrubbed {
            self.lifecycle.last_scrub = Some(started);
            self.lifecycle.last_scrub_result = Some(result);
            self.hand_to_state_writer(StateJob::LastScrub(started));
            // News for the status line.
            self.emit_status();
        }
        if let Some((started, summary)) = report.drilled {
            self.lifecycle.last_drill = Some((started, summary.clone()));
            self.lifecycle.drill_overdue_said = false;
            self.hand_to_state_writer(StateJob::LastDrill(started, summary));
            self.emit_status();
        }
        let since = *self.started_at.get_or_insert(now);
        if let Some(rotation) = self.gate.policy().and_then(|p| p.rotation.as_ref()) {
            if !self.exports.rotation_overdue_said && rotation.is_overdue(self.exports.last_rotation, since, now) {
                self.exports.rotation_overdue_said = true;
                let last = self.exports.last_rotation.map_or("never since this vault started".to_string(), |t| format!("last at {t}"));
                let detail = format!("no medium of the rotation set has been written for more than {} ({last}): insert the next medium of the set while the vault is sealed", rotation.every);
                self.emit(Event::Alarm { rule: "rotation_overdue".into(), detail });
            }
        }
        let drill_rules = self.gate.policy().map(|p| p.drill).unwrap_or_default();
        let last_drill = self.lifecycle.last_drill.as_ref().map(|(at, _)| *at);
        if !self.lifecycle.drill_overdue_said && vault_core::lifecycle::drill::is_overdue(last_drill, drill_rules, since, now) {
            self.lifecycle.drill_overdue_said = true;
            let since = last_drill.map_or_else(|| "no drill has finished since the daemon started".to_string(), |at| format!("the last finished at {at}"));
            let detail = format!(
                "restore drill overdue: {since}, and one is due every {}. Drills run while the vault is sealed: leave it sealed long enough (a drill reads the drilled snapshots at up to 256 MiB/s)",
                drill_rules.every
            );
            self.emit(Event::Alarm { rule: "drill_overdue".into(), detail });
        }
        use vault_core::lifecycle::capacity::{Level, CRITICAL_PERCENT, WARN_PERCENT};
        if let (Some(event), Some(level)) = (report.capacity, report.level) {
            if self.lifecycle.capacity_due.is_none_or(|due| now >= due) {
                self.lifecycle.capacity_due = Some(now.saturating_add(vault_core::units::Duration::from_secs(86_400).expect("a day is a duration")));
                self.emit(event.clone());
            }
            if level > self.lifecycle.level {
                let (rule, percent) = if level == Level::Critical { (CAPACITY_CRITICAL, CRITICAL_PERCENT) } else { (CAPACITY_WARNING, WARN_PERCENT) };
                let (used, free, days) = match &event {
                    Event::Capacity { used_percent, free_bytes, days_until_full, .. } => (*used_percent, *free_bytes, *days_until_full),
                    _ => (0, 0, None),
                };
                let forecast = match days {
                    None => "no ingest in 30 days".to_string(),
                    Some(d) if d > 36_500 => "not full within a century at the last 30 days' rate".to_string(),
                    Some(d) => format!("full in about {d} days at the last 30 days' rate"),
                };
                let detail = format!(
                    "the store's filesystem is {used} % used (at least {percent} %), {free} bytes free, {forecast}: shorten retention in the next policy, or give the vault a larger data disk"
                );
                self.emit(Event::Alarm { rule: rule.into(), detail });
            }
            self.lifecycle.level = level;
        }
    }

    /// Emits an event stamped by the one rule the sessions' lines follow too ([`JudgedClock`]),
    /// so the console's times follow its order.
    fn emit(&mut self, event: Event) {
        self.events.emit(self.stamps.now(), &event);
    }

    /// Applies a policy, then ticks at once so the gate decides without waiting.
    pub async fn apply_policy(&mut self, policy: Policy) {
        if let Err(e) = self.link.adopt_policy(&policy).await {
            // The gate still gets the policy: bring-up will fail and be retried, link down.
            self.emit(Event::Alarm { rule: "nic_not_ready".into(), detail: e.to_string() });
        }
        self.feed(Input::PolicyApplied(Box::new(policy))).await;
        // A new policy is news on the console even when the gate stays sealed: the status
        // line is due at the end of the next feed.
        self.status_due = Instant::now();
        self.tick().await;
    }

    /// Runs until `shutdown` completes, then closes everything and takes the link down.
    pub async fn run(&mut self, mut inputs: Inputs, shutdown: impl Future<Output = String>) {
        tokio::pin!(shutdown);
        loop {
            let check_by = Instant::now() + CLOCK_CHECK_EVERY;
            let wake = match self.gate.next_deadline() {
                // A millisecond late rather than early: the clock then reads the deadline.
                Some(at) => self.stamps.clock.instant_of(at).max(Instant::now()).min(check_by) + std::time::Duration::from_millis(1),
                None => check_by,
            };
            tokio::select! {
                biased;
                reason = &mut shutdown => {
                    self.shut_down(reason).await;
                    return;
                }
                Some(report) = inputs.guard.recv() => self.feed(match report {
                    GuardReport::Unsolicited(summary) => Input::UnsolicitedFrame { summary },
                    GuardReport::Unjudged(reason) | GuardReport::Stopped(reason) => Input::EgressUnwatched { reason },
                }).await,
                Some(report) = inputs.watchdog.recv() => self.on_watch(report).await,
                Some(report) = inputs.sessions.recv() => self.on_report(report).await,
                Some(stick) = inputs.usb.recv() => self.on_stick(stick).await,
                Some(done) = inputs.state.recv() => self.on_state_written(done).await,
                Some(report) = self.lifecycle.done_rx.recv() => self.on_lifecycle_done(report),
                Some(done) = self.exports.done_rx.recv() => self.on_exports_done(done),
                _ = tokio::time::sleep_until(wake.min(self.status_due)) => self.tick().await,
            }
        }
    }

    async fn on_report(&mut self, report: SessionReport) {
        let input = match report {
            SessionReport::Started { peer } => {
                self.emit(Event::SessionStarted { peer: peer.to_string() });
                Input::SessionStarted
            }
            SessionReport::Ended { peer } => {
                self.emit(Event::SessionEnded { peer: peer.to_string() });
                Input::SessionEnded
            }
            SessionReport::Committed { pusher, dataset } => {
                self.emit(Event::Committed { pusher: pusher.clone(), dataset: dataset.clone() });
                self.last_commit = Some((pusher.clone(), self.stamps.now()));
                Input::Committed { pusher, dataset }
            }
            SessionReport::ServerFailed { reason } => Input::LinkUpFailed { reason: format!("session server: {reason}") },
            SessionReport::Note(event) => return self.emit(*event),
            SessionReport::Suspect { pusher, dataset, snapshot, signals } => return self.on_suspect(pusher, dataset, snapshot, signals).await,
        };
        self.feed(input).await;
    }

    /// A suspect snapshot: its dataset is held at once (in memory, so the next session of its
    /// pusher already meets it) and then in the state file; the console raises the alarm.
    async fn on_suspect(&mut self, pusher: String, dataset: String, snapshot: String, signals: Vec<String>) {
        let closed = self.gate.policy().is_some_and(|p| p.signals.close_windows);
        let at = self.stamps.now();
        self.orders.hold_suspect(&pusher, &dataset, &snapshot, at);
        let what = if closed { format!("and pusher `{pusher}` is refused in every window") } else { "while the pusher may go on pushing".to_string() };
        let detail = format!(
            "snapshot `{snapshot}` of `{pusher}`/`{dataset}` looks like encrypted or destroyed data ({}): it is sealed, every snapshot of the dataset is held {what}; check the source, restore an earlier snapshot if it is hit, then sign a release order naming the dataset",
            signals.join("; ")
        );
        self.emit(Event::SnapshotSuspect { snapshot: snapshot.clone(), pusher: pusher.clone(), dataset: dataset.clone(), signals, closed });
        self.emit(Event::Alarm { rule: "anomaly".into(), detail });
        self.hand_to_state_writer(StateJob::Suspect { pusher, dataset, snapshot, at });
        self.sync_suspects().await;
    }

    /// Tells the session server and the gate which pushers have a suspect hold, when that
    /// changed (or was never said): the one place both learn it.
    async fn sync_suspects(&mut self) {
        let now = self.orders.suspect_pushers();
        if self.suspects_said && *self.suspects.borrow() == now {
            return;
        }
        self.suspects_said = true;
        self.suspects.send_replace(now.clone());
        self.feed(Input::SuspectPushers(now)).await;
    }

    pub(crate) async fn on_stick(&mut self, report: UsbReport) {
        match report {
            UsbReport::Inserted { device } => self.emit(Event::UsbInserted { device }),
            UsbReport::Removed { device } => self.emit(Event::UsbRemoved { device }),
            UsbReport::Unreadable { device, reason } => self.emit(Event::PolicyRefused { source: device, reason }),
            UsbReport::Order { device, name, bytes } => {
                let at = JudgedAt { now: self.stamps.now(), clock_trusted: !self.gate.clock_fault() };
                self.hand_to_state_writer(StateJob::Order { source: format!("{device}:{}/{name}", crate::usb::ORDERS_DIR), bytes, at });
            }
            UsbReport::Bundle { device, bytes } => {
                // While a clock fault is latched, the stick's signed issue time is trusted over the clock.
                let at = JudgedAt { now: self.stamps.now(), clock_trusted: !self.gate.clock_fault() };
                self.hand_to_state_writer(StateJob::Bundle { source: device, bytes, at });
            }
            UsbReport::Medium { device, label } => self.on_medium(device, &label),
        }
    }

    /// A medium was inserted: its pending exports are written if the vault may write them now
    /// (sealed, a trusted clock, a policy in force, no other medium being written), else it is
    /// said why nothing was.
    fn on_medium(&mut self, device: String, label: &[u8]) {
        let now = self.gate.now();
        let label = match vault_core::export::medium::MediumLabel::from_bytes(label) {
            Ok(label) => label,
            Err(e) => return self.emit(Event::MediumIgnored { source: device, reason: format!("medium: {e}; nothing written") }),
        };
        let sealed = self.gate.phase() == vault_core::link::gate::Phase::Sealed;
        let rotation = self.gate.policy().and_then(|p| p.rotation.clone());
        let wanted = crate::export::wanted(&label.medium_id, &self.orders, rotation.as_ref(), now);
        let refusal = match (&self.store_dir, &self.identity, &self.export_mount, self.gate.policy()) {
            _ if wanted.is_err() => wanted.err(),
            _ if !sealed || self.gate.clock_fault() => Some("exports are written only while the vault is sealed and trusts its clock; insert it again outside the windows".to_string()),
            _ if self.exports.running => Some("another medium is being written; insert this one again when that one is done".to_string()),
            (Some(store), Some(identity), Some(mount), Some(policy)) => {
                self.exports.running = true;
                self.exports.mounts += 1;
                let mount_point = mount.join(self.exports.mounts.to_string());
                let (source, store, identity, vault_id, orders) = (device.clone(), store.clone(), identity.clone(), policy.vault_id.clone(), self.orders.clone());
                let (done, go_on, maintenance, step_pause) = (self.exports.done_tx.clone(), self.lifecycle.sealed.clone(), self.maintenance.clone(), self.step_pause);
                go_on.store(true, std::sync::atomic::Ordering::SeqCst);
                tokio::task::spawn_blocking(move || {
                    let _exclusive = maintenance.blocking_write();
                    let report = match crate::usb::mount_medium(std::path::Path::new(&source), &mount_point) {
                        Err(reason) => ExportsDone { events: vec![Event::MediumIgnored { source, reason }], done: Vec::new(), rotated: None },
                        Ok(()) => {
                            let job = crate::export::MediumJob {
                                store: &store,
                                medium: &mount_point,
                                source: &source,
                                vault_id: &vault_id,
                                identity: &identity,
                                rotation: rotation.as_ref(),
                                go_on: &go_on,
                                step_pause,
                            };
                            let carried = crate::export::carry_out(&job, &orders, now);
                            crate::usb::unmount_medium(&mount_point);
                            let done = orders.pending_exports.iter().filter(|e| !carried.orders.pending_exports.iter().any(|left| left.id == e.id)).map(|e| e.id.clone()).collect();
                            ExportsDone { events: carried.events, done, rotated: carried.rotated.then_some(now) }
                        }
                    };
                    let _ = done.blocking_send(report);
                });
                None
            }
            _ => Some("this vault has no store, key or policy to export from".to_string()),
        };
        if let Some(reason) = refusal {
            self.emit(Event::MediumIgnored { source: device, reason: format!("medium {} ({}): {reason}; nothing written", label.name, label.medium_id) });
        }
    }

    fn on_exports_done(&mut self, report: ExportsDone) {
        self.exports.running = false;
        for event in report.events {
            self.emit(event);
        }
        if !report.done.is_empty() {
            self.orders.pending_exports.retain(|e| !report.done.contains(&e.id));
            self.hand_to_state_writer(StateJob::ExportsDone(report.done));
        }
        if let Some(at) = report.rotated {
            self.exports.last_rotation = Some(at);
            self.exports.rotation_overdue_said = false;
            self.hand_to_state_writer(StateJob::LastRotation(at));
        }
    }

    /// Hands a job to the state writer; a writer that is gone is an alarm (the state
    /// directory cannot change any more until a restart).
    fn hand_to_state_writer(&mut self, job: StateJob) {
        let Some(writer) = &self.state else { return };
        if let Err(std::sync::mpsc::SendError(job)) = writer.send(job) {
            self.emit(Event::Alarm { rule: "state_writer_stopped".into(), detail: format!("the state writer has stopped; not done: {job:?}. Restart the vault") });
        }
    }

    async fn on_state_written(&mut self, done: StateDone) {
        match done {
            StateDone::Floor { floor, result: Ok(()) } => self.emit(Event::TimeFloorPersisted { floor: floor.to_string() }),
            StateDone::Floor { floor, result: Err(e) } => self.emit(Event::Alarm { rule: "time_floor_not_persisted".into(), detail: format!("floor {floor}: {e}") }),
            StateDone::Orders(Some(orders)) => {
                self.orders = orders;
                self.sync_suspects().await;
                // New holds or purges: planned for at the next tick.
                self.lifecycle.due = None;
            }
            StateDone::Orders(None) => {}
            StateDone::LastScrub { result: Ok(()) } => {}
            StateDone::LastScrub { result: Err(e) } => self.emit(Event::Alarm { rule: "scrub_time_not_persisted".into(), detail: format!("{e}; the next start scrubs again") }),
            StateDone::LastRotation { result: Ok(()) } => {}
            StateDone::LastRotation { result: Err(e) } => {
                self.emit(Event::Alarm { rule: "rotation_time_not_persisted".into(), detail: format!("{e}; the next start may say the rotation is overdue early") })
            }
            StateDone::LastDrill { result: Ok(()) } => {}
            StateDone::LastDrill { result: Err(e) } => self.emit(Event::Alarm { rule: "drill_time_not_persisted".into(), detail: format!("{e}; the next start drills again") }),
            StateDone::Bundle(Some((policy, floor))) => {
                self.keep_last_floor = floor;
                self.apply_policy(policy).await;
            }
            StateDone::Bundle(None) => {}
        }
    }

    /// The console's view of the vault: state, policy version, window, last commit.
    fn emit_status(&mut self) {
        let space = self.store_dir.as_deref().and_then(|dir| vault_store::fs_space(dir).ok());
        let policy = self.gate.policy();
        let window = policy.map(|p| schedule::state_at(p, self.gate.now()));
        let (open_until, next_open) = match window {
            Some(WindowState::Open { until }) => (Some(until.to_string()), None),
            Some(WindowState::Closed { next_open }) => (None, next_open.map(|t| t.to_string())),
            None => (None, None),
        };
        let event = Event::Status {
            state: self.gate.phase().to_string(),
            policy_version: policy.map(|p| p.version),
            open_until,
            next_open,
            last_commit: self.last_commit.as_ref().map(|(pusher, at)| format!("{pusher} at {at}")),
            alarms_latched: self.gate.latched(),
            last_scrub: self.lifecycle.last_scrub.map(|t| t.to_string()),
            last_scrub_result: self.lifecycle.last_scrub_result.clone(),
            next_scrub: vault_core::lifecycle::scrub::next_due(self.lifecycle.last_scrub, policy.map(|p| p.scrub).unwrap_or_default()).map(|t| t.to_string()),
            last_drill: self.lifecycle.last_drill.as_ref().map(|(at, _)| at.to_string()),
            last_drill_result: self.lifecycle.last_drill.as_ref().map(|(_, result)| result.clone()),
            next_drill: vault_core::lifecycle::drill::next_due(self.lifecycle.last_drill.as_ref().map(|(at, _)| *at), policy.map(|p| p.drill).unwrap_or_default()).map(|t| t.to_string()),
            store_used_bytes: space.map(|s| s.used_bytes),
            store_free_bytes: space.map(|s| s.free_bytes),
            suspect_holds: self.orders.suspects.iter().map(|h| format!("{}/{} since {}", h.pusher, h.dataset.as_deref().unwrap_or("*"), h.snapshot)).collect(),
        };
        self.emit(event);
        self.status_due = Instant::now() + STATUS_EVERY;
    }

    async fn on_watch(&mut self, report: WatchReport) {
        match report {
            WatchReport::Seen(seen) => self.on_seen(seen).await,
            WatchReport::Overrun => {
                let detail = "netlink link events were lost (the watchdog's socket buffer overflowed); every link listed again".to_string();
                self.emit(Event::Alarm { rule: "watchdog_overrun".into(), detail });
                self.survey().await;
            }
            WatchReport::Stopped(reason) => self.feed(Input::WatchdogStopped { reason }).await,
        }
    }

    /// Every NIC netlink shows up or addressed, judged as if the watchdog had just seen it.
    async fn survey(&mut self) {
        match self.link.survey().await {
            Ok(sightings) => {
                for seen in sightings {
                    self.on_seen(seen).await;
                }
            }
            Err(e) => self.emit(Event::Alarm { rule: "watchdog_survey_failed".into(), detail: format!("listing the links: {e}") }),
        }
    }

    async fn on_seen(&mut self, seen: Seen) {
        match self.link.recheck(&seen).await {
            Recheck::Vault(sighting) => self.feed(Input::Watchdog(sighting)).await,
            Recheck::Stale => {}
            Recheck::Foreign { nic, taken_down } => {
                let detail = format!("watchdog: {:?} on {nic}, which is not the vault NIC; taken down", seen.sighting);
                self.emit(Event::Alarm { rule: "watchdog_foreign_nic".into(), detail });
                match taken_down {
                    Ok(confirmation) => self.emit(Event::LinkDown { why: "watchdog".into(), confirmation }),
                    Err(e) => self.emit(Event::Alarm { rule: "link_down_failed".into(), detail: format!("{nic}: {e}") }),
                }
            }
        }
    }

    /// Hands one input to the gate and carries out what it asks, feeding results back.
    pub async fn feed(&mut self, first: Input) {
        let mut queue = VecDeque::from([first]);
        let mut changed = false;
        while let Some(input) = queue.pop_front() {
            let out = self.gate.handle(input);
            // Read, never awaited: no receiver needs telling.
            self.judged.send_replace(self.gate.judged());
            for t in &out.transitions {
                let event = Event::StateChanged { from: t.from.to_string(), to: t.to.to_string(), reason: t.reason.to_string() };
                self.emit(event);
                if t.to == vault_core::link::gate::Phase::Open && PANIC_ONCE_OPEN.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    panic!("test hook {}: the daemon panics once, with the link up", crate::init::PANIC_ONCE_OPEN_PARAM);
                }
                // Sealed again after a window: what it sealed is planned for at once.
                if t.to == vault_core::link::gate::Phase::Sealed {
                    self.lifecycle.due = None;
                }
            }
            changed |= !out.transitions.is_empty();
            // A running expiry stops before its next snapshot once the gate leaves Sealed or
            // doubts its clock.
            if self.gate.phase() != vault_core::link::gate::Phase::Sealed || self.gate.clock_fault() {
                self.lifecycle.sealed.store(false, std::sync::atomic::Ordering::SeqCst);
            }
            for action in out.actions {
                if let Some(next) = self.perform(action).await {
                    queue.push_back(next);
                }
            }
        }
        if changed || Instant::now() >= self.status_due {
            self.emit_status();
        }
    }

    async fn perform(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::BringLinkUp { nic, address, prefix } => match self.link.bring_up(&nic, address, prefix).await {
                Ok(confirmation) => {
                    self.emit(Event::LinkUp { why: "window opening".into(), confirmation });
                    Some(Input::LinkConfirmedUp)
                }
                Err(e) => Some(Input::LinkUpFailed { reason: e.to_string() }),
            },
            Action::StartListening { address, port } => match self.start_listening(address, port).await {
                Ok(bound) => {
                    self.emit(Event::Listening { address: bound.to_string() });
                    None
                }
                Err(e) => Some(Input::LinkUpFailed { reason: format!("listen on {address}:{port}: {e}") }),
            },
            Action::StopAccepting => {
                if let Some(stop) = &self.stop {
                    let _ = stop.send(Stop::StopAccepting);
                }
                self.emit(Event::StopAccepting);
                None
            }
            Action::CloseSessions => {
                if let Some(stop) = &self.stop {
                    let _ = stop.send(Stop::AbortAll);
                }
                self.emit(Event::SessionsAborted);
                None
            }
            Action::TakeLinkDown => {
                // Nothing of a window outlives its link.
                if let Some(stop) = self.stop.take() {
                    let _ = stop.send(Stop::AbortAll);
                }
                match self.link.take_down().await {
                    Ok(confirmation) => {
                        self.emit(Event::LinkDown { why: "gate".into(), confirmation });
                        Some(Input::LinkConfirmedDown)
                    }
                    Err(e) => Some(Input::LinkDownFailed { reason: e.to_string() }),
                }
            }
            Action::RaiseAlarm(alarm) => {
                self.emit(Event::Alarm { rule: alarm.rule().into(), detail: alarm.to_string() });
                None
            }
            Action::PersistTimeFloor(floor) => {
                self.hand_to_state_writer(StateJob::Floor(floor));
                None
            }
        }
    }

    async fn start_listening(&mut self, address: IpAddr, port: u16) -> std::io::Result<SocketAddr> {
        let at = self.bind_override.unwrap_or(SocketAddr::new(address, port));
        let listener = tokio::net::TcpListener::bind(at).await?;
        let bound = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(Stop::Running);
        let policy = Arc::new(self.gate.policy().cloned().expect("listening implies a policy"));
        let clock = Arc::new(self.stamps.clone());
        let ctx = SessionContext { listener, policy, stop: stop_rx, reports: self.session_reports.clone(), clock, suspects: self.suspects.subscribe() };
        tokio::spawn((self.server)(ctx));
        self.stop = Some(stop_tx);
        Ok(bound)
    }

    async fn shut_down(&mut self, reason: String) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::AbortAll);
        }
        match self.link.take_down().await {
            Ok(confirmation) => self.emit(Event::LinkDown { why: "shutdown".into(), confirmation }),
            Err(e) => self.emit(Event::Alarm { rule: "link_down_failed".into(), detail: format!("at shutdown: {e}") }),
        }
        self.emit(Event::Stopped { reason });
    }
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
