//! The gatekeeper's state machine, sans I/O: Sealed -> Opening -> Open -> Closing -> Sealed.
//!
//! The daemon feeds it [`Input`]s (clock ticks, netlink confirmations, session reports,
//! watchdog and egress-guard sightings) and carries out the [`Action`]s it returns, feeding
//! each action's outcome back in as another input. Every phase change comes out as a
//! [`Transition`] with a [`Reason`], so the console shows why the link moved.
//!
//! Rules, in the order they are checked on a clock tick:
//! 1. Clock: the box has no NTP, so a reading is believed only if it is plausible. It must not
//!    be before the image was built, nor more than [`CLOCK_TOLERANCE_SECS`] behind the time
//!    floor, nor more than [`CLOCK_PLAUSIBLE_AHEAD_SECS`] past the newest time the vault can
//!    vouch for (the build, or the newest policy's `issued`, which a quorum signed); it must not
//!    jump ahead of the monotonic clock by more than the tolerance while running; and the first
//!    reading after a start must not be past the policy's expiry. Any other reading seals the
//!    vault with an alarm that says what to do, and never raises the floor, so a wrong RTC
//!    cannot make anything expire. The fault is latched until a new policy is applied (or the
//!    daemon restarts, after the RTC is set right): nothing the box sees later can prove the
//!    clock good again. While it is latched, a stick's `issued` is trusted over the clock.
//! 2. Schedule: [`schedule::state_at`] at `max(clock, floor)` decides whether a window is open.
//! 3. A window that was closed early (every expected commit in) or by an alarm does not reopen
//!    before its scheduled end.
//!
//! Fail closed: anything unexpected (an alarm, a failed bring-up, a link seen up outside a
//! window) ends in `TakeLinkDown`; only `LinkConfirmedDown` lets the gate call itself Sealed.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::policy::bundle::CLOCK_TOLERANCE_SECS;
use crate::policy::schedule::{self, WindowState};
use crate::policy::{NicSelector, Policy};
use crate::units::{Duration, Timestamp};

/// The floor is persisted when it has risen this much since the last write: a power cut loses
/// at most this much of it, well inside the clock tolerance.
pub const FLOOR_PERSIST_STEP_SECS: i64 = 60;
/// After a failed bring-up, wait this long before trying again within the same window.
pub const OPEN_RETRY_SECS: i64 = 10;
/// How far past the newest time the vault can vouch for (its build, the newest policy's
/// `issued`) a clock reading may be. Policies live at most the root's `max_validity` (90 days
/// by default), so a vault whose clock is right is never this far past its newest policy while
/// a window can still open; an RTC that reads 2099 always is.
pub const CLOCK_PLAUSIBLE_AHEAD_SECS: i64 = 2 * 366 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Link down, addresses flushed, nothing listening.
    Sealed,
    /// The link is being brought up for a window.
    Opening,
    /// Link up, listening on the policy address and port.
    Open,
    /// No new sessions; in-flight ones may finish within `close.grace`, then the link goes down.
    Closing,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Sealed => "sealed",
            Phase::Opening => "opening",
            Phase::Open => "open",
            Phase::Closing => "closing",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the watchdog saw on the vault NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sighting {
    /// The NIC reported IFF_UP.
    LinkUp,
    /// An address appeared on the NIC.
    NewAddress(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A clock reading (the host clock, as vault time) and the monotonic clock at the same
    /// moment (time since any fixed origin, e.g. the daemon's start), which tells a jump of the
    /// wall clock from time passing. Ticks drive the schedule.
    Tick {
        clock: Timestamp,
        monotonic: std::time::Duration,
    },
    /// A verified policy is now in force (at start, or a new bundle).
    PolicyApplied(Box<Policy>),
    /// Netlink confirmed the NIC up with carrier and the static address on it.
    LinkConfirmedUp,
    /// Bring-up failed (no such NIC, no carrier in time, netlink error, the listener could
    /// not bind, ...).
    LinkUpFailed {
        reason: String,
    },
    /// Netlink confirmed the NIC down with no address.
    LinkConfirmedDown,
    /// Taking the link down failed; the gate asks again on the next tick.
    LinkDownFailed {
        reason: String,
    },
    SessionStarted,
    SessionEnded,
    /// A pusher's snapshot of `dataset` is durable and acknowledged.
    Committed {
        pusher: String,
        dataset: String,
    },
    /// The netlink watchdog saw something on the vault NIC.
    Watchdog(Sighting),
    /// The egress guard saw the vault NIC send a frame it does not owe.
    UnsolicitedFrame {
        summary: String,
    },
    /// The egress guard cannot vouch for what the NIC sent: frames went by unjudged, or it
    /// stopped reading. Handled like an unsolicited frame: nobody watches, nothing may pass.
    EgressUnwatched {
        reason: String,
    },
    /// The netlink watchdog stopped: nothing would report a link raised behind the gate's back.
    /// The vault seals and stays sealed until the daemon restarts.
    WatchdogStopped {
        reason: String,
    },
    /// The pushers with a suspect hold, whenever that set changes (see
    /// [`crate::policy::orders::OrderState::suspect_pushers`]).
    SuspectPushers(BTreeSet<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the NIC's sysctls so it sends nothing by itself, add the address, set it up, wait
    /// for carrier, confirm from netlink; answer with `LinkConfirmedUp` or `LinkUpFailed`.
    BringLinkUp {
        nic: NicSelector,
        address: IpAddr,
        prefix: u8,
    },
    /// Bind the listener to exactly this address and port and start the session server.
    StartListening {
        address: IpAddr,
        port: u16,
    },
    /// Close the listener; in-flight sessions continue.
    StopAccepting,
    /// Abort every in-flight session now.
    CloseSessions,
    /// Set the NIC down, flush its addresses, confirm; answer with `LinkConfirmedDown` or
    /// `LinkDownFailed`.
    TakeLinkDown,
    RaiseAlarm(Alarm),
    /// Write this time floor to the state file.
    PersistTimeFloor(Timestamp),
}

/// Something the admins must hear about. Each names its rule and the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alarm {
    ClockBehindFloor {
        clock: Timestamp,
        floor: Timestamp,
        tolerance_secs: i64,
    },
    /// The first reading since the start is past the policy's expiry.
    ClockPastExpiry {
        clock: Timestamp,
        expires: Timestamp,
    },
    /// Before the image was built, or too far past anything the vault can vouch for.
    ClockImplausible {
        clock: Timestamp,
        doubt: ClockDoubt,
    },
    /// The wall clock moved ahead of the monotonic clock while running.
    ClockJumped {
        from: Timestamp,
        to: Timestamp,
        elapsed_secs: i64,
    },
    WatchdogLinkUp {
        phase: Phase,
    },
    WatchdogNewAddress {
        address: IpAddr,
        phase: Phase,
    },
    UnsolicitedFrame {
        summary: String,
        phase: Phase,
    },
    EgressUnwatched {
        reason: String,
        phase: Phase,
    },
    WatchdogStopped {
        reason: String,
        phase: Phase,
    },
    LinkUpFailed {
        reason: String,
    },
    LinkDownFailed {
        reason: String,
    },
    UnknownPusherCommitted {
        pusher: String,
    },
    UnsupportedAddress {
        address: IpAddr,
    },
}

impl Alarm {
    /// A stable name for the rule, for machines reading the console.
    pub fn rule(&self) -> &'static str {
        match self {
            Alarm::ClockBehindFloor { .. } => "clock_behind_floor",
            Alarm::ClockPastExpiry { .. } => "clock_past_expiry",
            Alarm::ClockImplausible { .. } => "clock_implausible",
            Alarm::ClockJumped { .. } => "clock_jumped",
            Alarm::WatchdogLinkUp { .. } => "watchdog_link_up",
            Alarm::WatchdogNewAddress { .. } => "watchdog_new_address",
            Alarm::UnsolicitedFrame { .. } => "unsolicited_frame",
            Alarm::EgressUnwatched { .. } => "egress_unwatched",
            Alarm::WatchdogStopped { .. } => "watchdog_stopped",
            Alarm::LinkUpFailed { .. } => "link_up_failed",
            Alarm::LinkDownFailed { .. } => "link_down_failed",
            Alarm::UnknownPusherCommitted { .. } => "unknown_pusher_committed",
            Alarm::UnsupportedAddress { .. } => "unsupported_address",
        }
    }
}

impl fmt::Display for Alarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alarm::ClockBehindFloor { clock, floor, tolerance_secs } => {
                write!(f, "clock behind floor: clock reads {clock}, time floor is {floor} (tolerance {tolerance_secs}s); sealed until a new policy is applied")
            }
            Alarm::ClockPastExpiry { clock, expires } => write!(
                f,
                "clock past expiry: the first reading since the start is {clock}, and the policy expired {expires}; the time floor stays put and the vault \
                 stays sealed. If the RTC is wrong, set it to UTC in the firmware setup and restart; if it is right, present a stick with a current policy"
            ),
            Alarm::ClockImplausible { clock, doubt: ClockDoubt::BeforeBuild { built } } => write!(
                f,
                "clock implausible: the RTC reads {clock}, before this image was built ({built}); the vault stays sealed and its time floor stays put. \
                 Set the RTC to UTC in the firmware setup (a dead RTC battery reads 1970 or 2000) and restart, or present a stick with a current policy"
            ),
            Alarm::ClockImplausible { clock, doubt: ClockDoubt::FarAhead { vouched, bound_secs } } => write!(
                f,
                "clock implausible: the RTC reads {clock}, more than {} days past the newest time the vault can vouch for ({vouched}: its build or \
                 its newest policy's issue time); the vault stays sealed and its time floor stays put, so nothing expires because of it. If the RTC is \
                 wrong, set it to UTC in the firmware setup and restart; if it is right, present a stick with a current policy",
                bound_secs / 86_400
            ),
            Alarm::ClockJumped { from, to, elapsed_secs } => write!(
                f,
                "clock jumped: it read {from}, then {to} only {elapsed_secs}s later by the monotonic clock; the time floor did not follow and the vault is \
                 sealed until a new policy is applied (or a restart with the RTC set right)"
            ),
            Alarm::WatchdogLinkUp { phase } => {
                write!(f, "watchdog: the vault NIC went up while {phase}; taken down again")
            }
            Alarm::WatchdogNewAddress { address, phase } => {
                write!(f, "watchdog: address {address} appeared on the vault NIC while {phase}; link taken down")
            }
            Alarm::UnsolicitedFrame { summary, phase } => {
                write!(f, "egress guard: the vault NIC sent an unsolicited frame while {phase} ({summary}); window closed")
            }
            Alarm::EgressUnwatched { reason, phase } => {
                write!(f, "egress guard: the vault NIC's frames went unjudged while {phase} ({reason}); window closed")
            }
            Alarm::WatchdogStopped { reason, phase } => {
                write!(f, "watchdog stopped while {phase} ({reason}); sealed until the vault restarts")
            }
            Alarm::LinkUpFailed { reason } => write!(f, "link up failed: {reason}; link taken down"),
            Alarm::LinkDownFailed { reason } => write!(f, "link down failed: {reason}; retrying"),
            Alarm::UnknownPusherCommitted { pusher } => {
                write!(f, "commit from `{pusher}`, which the policy does not list; not counted for early close")
            }
            Alarm::UnsupportedAddress { address } => {
                write!(f, "policy address {address}: only IPv4 vault addresses are supported by link control; staying sealed")
            }
        }
    }
}

/// Why a clock reading is not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockDoubt {
    /// The image cannot run before it was built.
    BeforeBuild { built: Timestamp },
    /// More than `bound_secs` past `vouched`, the newest of the build time and the newest
    /// accepted policy's `issued`.
    FarAhead { vouched: Timestamp, bound_secs: i64 },
}

/// Why the phase changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    WindowOpened {
        until: Timestamp,
    },
    LinkConfirmedUp,
    WindowEnded {
        until: Timestamp,
    },
    PolicyExpired {
        expires: Timestamp,
    },
    /// Every expected commit arrived: each listed pusher's, or each of its listed datasets
    /// (`pusher/dataset`).
    AllExpectedCommitted {
        expected: Vec<String>,
    },
    /// Every pusher of the policy is refused until a release order (the policy's
    /// `signals.close_windows`): the window stays shut, or closes.
    AllPushersSuspect {
        until: Timestamp,
    },
    PolicyReplaced {
        version: u64,
    },
    SessionsDrained,
    GraceExpired {
        deadline: Timestamp,
        sessions: u32,
    },
    LinkConfirmedDown,
    Alarm(Alarm),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::WindowOpened { until } => write!(f, "window open until {until}"),
            Reason::LinkConfirmedUp => f.write_str("netlink confirmed the link up"),
            Reason::WindowEnded { until } => write!(f, "window ended at {until}"),
            Reason::PolicyExpired { expires } => write!(f, "policy expired at {expires}"),
            Reason::AllExpectedCommitted { expected } => {
                write!(f, "early close: every expected commit arrived ({})", expected.join(", "))
            }
            Reason::AllPushersSuspect { until } => write!(f, "every pusher has a suspect snapshot and is refused until a release order: the window until {until} stays shut"),
            Reason::PolicyReplaced { version } => write!(f, "policy v{version} applied"),
            Reason::SessionsDrained => f.write_str("the last session ended"),
            Reason::GraceExpired { deadline, sessions } => {
                write!(f, "grace ran out at {deadline} with {sessions} session(s) in flight; closed")
            }
            Reason::LinkConfirmedDown => f.write_str("netlink confirmed the link down"),
            Reason::Alarm(alarm) => write!(f, "alarm {}: {alarm}", alarm.rule()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    pub reason: Reason,
}

/// What one input produced: actions to carry out in order, and the phase changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub actions: Vec<Action>,
    pub transitions: Vec<Transition>,
}

impl Output {
    pub fn alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.actions.iter().filter_map(|a| match a {
            Action::RaiseAlarm(alarm) => Some(alarm),
            _ => None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Gate {
    phase: Phase,
    policy: Option<Policy>,
    floor: Timestamp,
    persisted_floor: Timestamp,
    /// The last clock reading and the monotonic clock with it.
    last_clock: Option<(Timestamp, std::time::Duration)>,
    /// When the image was built, if known: the vault cannot run earlier.
    built: Option<Timestamp>,
    /// The newest time vouched for without a policy: the build time (the persisted floor when
    /// the build time is not known, as in tests).
    vouched_at_start: Timestamp,
    /// The newest accepted policy's `issued` (a quorum signed it: a lower bound on real time).
    newest_issued: Option<Timestamp>,
    /// The effective vault time: max(last plausible clock reading, floor).
    now: Timestamp,
    /// The last reading a tick believed, and the monotonic time it was taken at (none before
    /// the first plausible tick, and none once the clock is doubted).
    believed: Option<(Timestamp, std::time::Duration)>,
    clock_fault: bool,
    /// The watchdog stopped: sealed for the rest of this run.
    watch_lost: bool,
    /// End of the window being served (set on opening).
    window_until: Option<Timestamp>,
    /// A window closed early or by an alarm stays closed until this instant.
    done_until: Option<Timestamp>,
    retry_open_at: Option<Timestamp>,
    /// (pusher, dataset) committed in this window.
    committed: BTreeSet<(String, String)>,
    /// Pushers with a suspect hold: refused while the policy's `signals.close_windows` is set,
    /// so they count as done for an early close, and a window none of the rest may use stays shut.
    suspects: BTreeSet<String>,
    sessions: u32,
    grace_deadline: Option<Timestamp>,
    listening: bool,
    down_requested: bool,
    /// A TakeLinkDown failed; the next tick asks again.
    down_retry: bool,
}

/// What the gate believed at its last tick, for stamping what happens between ticks (events,
/// seal steps, receipts): the daemon hands a copy to each window's sessions, so one rule says
/// what time it is wherever a time is written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JudgedTime {
    now: Timestamp,
    believed: Option<(Timestamp, std::time::Duration)>,
}

impl JudgedTime {
    /// The time of something that happens when the clock reads `reading` and the monotonic
    /// clock `monotonic` (on the timeline the ticks use). The reading itself, within two bounds:
    /// - never before the gate's time (a clock set back cannot stamp into the past);
    /// - never further past the last believed reading than the monotonic clock has run since,
    ///   plus a second for readings in whole seconds. A clock that jumps between ticks is the
    ///   next tick's to judge; until then nothing is stamped with it.
    ///
    /// While the clock is doubted (or before its first tick), the gate's time.
    pub fn at(&self, reading: Timestamp, monotonic: std::time::Duration) -> Timestamp {
        let Some((believed, then)) = self.believed else { return self.now };
        let passed = i64::try_from(monotonic.saturating_sub(then).as_secs()).unwrap_or(i64::MAX).saturating_add(1);
        // A span past any duration (a century of monotonic time) bounds nothing.
        let latest = Duration::from_secs(passed).map_or(reading, |passed| believed.saturating_add(passed));
        reading.clamp(self.now, latest.max(self.now))
    }
}

impl Gate {
    /// A sealed gate with no policy. `time_floor` is the persisted floor (`VaultState::time_floor`).
    pub fn new(time_floor: Timestamp) -> Gate {
        Gate {
            phase: Phase::Sealed,
            policy: None,
            floor: time_floor,
            persisted_floor: time_floor,
            last_clock: None,
            built: None,
            vouched_at_start: time_floor,
            newest_issued: None,
            now: time_floor,
            believed: None,
            clock_fault: false,
            watch_lost: false,
            window_until: None,
            done_until: None,
            retry_open_at: None,
            committed: BTreeSet::new(),
            suspects: BTreeSet::new(),
            sessions: 0,
            grace_deadline: None,
            listening: false,
            down_requested: false,
            down_retry: false,
        }
    }

    /// The image's build time, below which no clock reading is believed; the floor starts
    /// there at least.
    pub fn built_at(mut self, built: Timestamp) -> Gate {
        self.built = Some(built);
        // Vouched for: the build, not the floor, which plausible readings raised and which a
        // clock set ahead a little at each restart could walk forward.
        self.vouched_at_start = built;
        self.floor = self.floor.max(built);
        self.now = self.now.max(self.floor);
        self
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn time_floor(&self) -> Timestamp {
        self.floor
    }

    /// The effective vault time the gate last decided on.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// What the last tick judged, for the times read between ticks ([`JudgedTime::at`]).
    pub fn judged(&self) -> JudgedTime {
        JudgedTime { now: self.now, believed: self.believed }
    }

    pub fn clock_fault(&self) -> bool {
        self.clock_fault
    }

    /// A fault that keeps the vault sealed is latched (a clock fault, a lost watchdog).
    pub fn latched(&self) -> bool {
        self.clock_fault || self.watch_lost
    }

    pub fn sessions(&self) -> u32 {
        self.sessions
    }

    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// The next instant at which a tick changes something (a window opens or ends, grace
    /// runs out, a retry is due). The daemon wakes then; it also ticks periodically to check
    /// the clock.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let policy = self.policy.as_ref()?;
        if self.latched() {
            return None;
        }
        match self.phase {
            Phase::Sealed => {
                let mut at = match schedule::state_at(policy, self.now) {
                    WindowState::Open { until } => {
                        if self.done_until.is_some_and(|d| self.now < d) {
                            self.done_until.map(|d| d.min(until))
                        } else {
                            Some(self.now)
                        }
                    }
                    WindowState::Closed { next_open } => next_open,
                };
                if let Some(retry) = self.retry_open_at.filter(|r| *r > self.now) {
                    at = at.map(|a| a.max(retry));
                }
                at
            }
            Phase::Opening | Phase::Open => self.window_until,
            Phase::Closing if self.down_requested => None,
            Phase::Closing => self.grace_deadline,
        }
    }

    pub fn handle(&mut self, input: Input) -> Output {
        let mut out = Output::default();
        match input {
            Input::Tick { clock, monotonic } => self.on_tick(clock, monotonic, &mut out),
            Input::PolicyApplied(policy) => self.on_policy(*policy, &mut out),
            Input::LinkConfirmedUp => {
                if self.phase == Phase::Opening {
                    let policy = self.policy.as_ref().expect("opening implies a policy");
                    let (address, port) = (policy.network.address, policy.network.port);
                    self.listening = true;
                    out.actions.push(Action::StartListening { address, port });
                    self.go(Phase::Open, Reason::LinkConfirmedUp, &mut out);
                }
                // In any other phase a close is already under way and TakeLinkDown follows.
            }
            Input::LinkUpFailed { reason } => {
                let alarm = Alarm::LinkUpFailed { reason };
                out.actions.push(Action::RaiseAlarm(alarm.clone()));
                if matches!(self.phase, Phase::Opening | Phase::Open) {
                    self.retry_open_at = Some(self.now.saturating_add(secs(OPEN_RETRY_SECS)));
                    self.close_now(Reason::Alarm(alarm), false, &mut out);
                }
            }
            Input::LinkConfirmedDown => {
                if self.phase == Phase::Closing && self.down_requested {
                    self.down_requested = false;
                    self.grace_deadline = None;
                    self.go(Phase::Sealed, Reason::LinkConfirmedDown, &mut out);
                }
            }
            Input::LinkDownFailed { reason } => {
                out.actions.push(Action::RaiseAlarm(Alarm::LinkDownFailed { reason }));
                // Not sealed until netlink says so; the next tick asks again.
                self.down_retry = true;
            }
            Input::SessionStarted => self.sessions = self.sessions.saturating_add(1),
            Input::SessionEnded => {
                self.sessions = self.sessions.saturating_sub(1);
                if self.phase == Phase::Closing && !self.down_requested && self.sessions == 0 {
                    self.down_requested = true;
                    out.actions.push(Action::TakeLinkDown);
                    // Phase stays Closing until the confirmation; note why it moves on.
                    out.transitions.push(Transition { from: Phase::Closing, to: Phase::Closing, reason: Reason::SessionsDrained });
                }
            }
            Input::Committed { pusher, dataset } => self.on_commit(pusher, dataset, &mut out),
            Input::Watchdog(sighting) => self.on_watchdog(sighting, &mut out),
            Input::UnsolicitedFrame { summary } => self.close_on_alarm(Alarm::UnsolicitedFrame { summary, phase: self.phase }, &mut out),
            Input::EgressUnwatched { reason } => self.close_on_alarm(Alarm::EgressUnwatched { reason, phase: self.phase }, &mut out),
            Input::WatchdogStopped { reason } => {
                self.watch_lost = true;
                self.close_on_alarm(Alarm::WatchdogStopped { reason, phase: self.phase }, &mut out);
            }
            Input::SuspectPushers(pushers) => {
                self.suspects = pushers;
                if self.phase == Phase::Open && self.all_pushers_refused() {
                    let until = self.window_until.unwrap_or(self.now);
                    self.done_until = Some(until);
                    let grace = self.policy.as_ref().map_or(Duration::ZERO, |p| p.close.grace);
                    self.begin_closing(Reason::AllPushersSuspect { until }, self.now.saturating_add(grace), &mut out);
                }
            }
        }
        out
    }

    /// The policy refuses suspect pushers, and every pusher it lists is one.
    fn all_pushers_refused(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.signals.close_windows && p.pushers.iter().all(|pusher| self.suspects.contains(&pusher.name)))
    }

    /// What the watchdog and the egress guard report: the alarm, then the window closed now, or
    /// a sealed link taken down again.
    fn close_on_alarm(&mut self, alarm: Alarm, out: &mut Output) {
        out.actions.push(Action::RaiseAlarm(alarm.clone()));
        if self.phase == Phase::Sealed {
            out.actions.push(Action::TakeLinkDown);
        } else {
            self.close_now(Reason::Alarm(alarm), true, out);
        }
    }

    fn go(&mut self, to: Phase, reason: Reason, out: &mut Output) {
        out.transitions.push(Transition { from: self.phase, to, reason });
        self.phase = to;
    }

    fn on_tick(&mut self, clock: Timestamp, monotonic: std::time::Duration, out: &mut Output) {
        let previous = self.last_clock.replace((clock, monotonic));
        if std::mem::take(&mut self.down_retry) {
            out.actions.push(Action::TakeLinkDown);
        }
        if self.clock_fault {
            // Already alarmed; keep the link down if anything is still up.
            return;
        }
        if let Some(alarm) = self.doubt(clock, monotonic, previous) {
            self.latch_clock_fault(alarm, out);
            return;
        }
        self.believed = Some((clock, monotonic));
        self.floor = self.floor.max(clock);
        self.now = self.floor;
        if self.floor.secs_since(self.persisted_floor) >= FLOOR_PERSIST_STEP_SECS {
            self.persisted_floor = self.floor;
            out.actions.push(Action::PersistTimeFloor(self.floor));
        }
        self.follow_schedule(out);
    }

    /// Why `clock` is not to be believed, if it is not (rule 1 of the module's list).
    fn doubt(&self, clock: Timestamp, monotonic: std::time::Duration, previous: Option<(Timestamp, std::time::Duration)>) -> Option<Alarm> {
        let tolerance = secs(CLOCK_TOLERANCE_SECS);
        if let Some(built) = self.built.filter(|built| clock < built.saturating_sub(tolerance)) {
            return Some(Alarm::ClockImplausible { clock, doubt: ClockDoubt::BeforeBuild { built } });
        }
        if clock < self.floor.saturating_sub(tolerance) {
            return Some(Alarm::ClockBehindFloor { clock, floor: self.floor, tolerance_secs: CLOCK_TOLERANCE_SECS });
        }
        let vouched = self.newest_issued.map_or(self.vouched_at_start, |issued| issued.max(self.vouched_at_start));
        if clock.secs_since(vouched) > CLOCK_PLAUSIBLE_AHEAD_SECS {
            return Some(Alarm::ClockImplausible { clock, doubt: ClockDoubt::FarAhead { vouched, bound_secs: CLOCK_PLAUSIBLE_AHEAD_SECS } });
        }
        match previous {
            Some((from, then)) => {
                let elapsed_secs = i64::try_from(monotonic.saturating_sub(then).as_secs()).unwrap_or(i64::MAX);
                if clock.secs_since(from).saturating_sub(elapsed_secs) > CLOCK_TOLERANCE_SECS {
                    return Some(Alarm::ClockJumped { from, to: clock, elapsed_secs });
                }
            }
            None => {
                let expires = self.policy.as_ref().map(|p| p.expires);
                if let Some(expires) = expires.filter(|e| clock >= *e && self.floor < *e) {
                    return Some(Alarm::ClockPastExpiry { clock, expires });
                }
            }
        }
        None
    }

    fn latch_clock_fault(&mut self, alarm: Alarm, out: &mut Output) {
        self.clock_fault = true;
        self.believed = None;
        out.actions.push(Action::RaiseAlarm(alarm.clone()));
        if self.phase != Phase::Sealed {
            self.close_now(Reason::Alarm(alarm), true, out);
        }
    }

    /// Moves the phase to what the schedule wants at `self.now`.
    fn follow_schedule(&mut self, out: &mut Output) {
        let Some(policy) = &self.policy else { return };
        let wanted = schedule::state_at(policy, self.now);
        let expires = policy.expires;
        match self.phase {
            Phase::Sealed => {
                let WindowState::Open { until } = wanted else { return };
                if self.watch_lost || self.done_until.is_some_and(|d| self.now < d) || self.retry_open_at.is_some_and(|r| self.now < r) {
                    return;
                }
                if self.all_pushers_refused() {
                    // Said once per window: the link stays down, as for a window closed early.
                    self.done_until = Some(until);
                    out.transitions.push(Transition { from: Phase::Sealed, to: Phase::Sealed, reason: Reason::AllPushersSuspect { until } });
                    return;
                }
                let network = policy.network.clone();
                if !network.address.is_ipv4() {
                    // Alarm once per window rather than every tick.
                    self.done_until = Some(until);
                    out.actions.push(Action::RaiseAlarm(Alarm::UnsupportedAddress { address: network.address }));
                    return;
                }
                self.window_until = Some(until);
                self.committed.clear();
                self.retry_open_at = None;
                out.actions.push(Action::BringLinkUp { nic: network.nic, address: network.address, prefix: network.prefix_len });
                self.go(Phase::Opening, Reason::WindowOpened { until }, out);
            }
            Phase::Opening | Phase::Open => {
                let until = self.window_until.unwrap_or(self.now);
                if self.now >= until || matches!(wanted, WindowState::Closed { .. }) {
                    let reason = if self.now >= expires { Reason::PolicyExpired { expires } } else { Reason::WindowEnded { until } };
                    let grace = policy.close.grace;
                    self.begin_closing(reason, until.saturating_add(grace), out);
                }
            }
            Phase::Closing => {
                if !self.down_requested {
                    if let Some(deadline) = self.grace_deadline.filter(|d| self.now >= *d) {
                        let sessions = self.sessions;
                        if sessions > 0 {
                            out.actions.push(Action::CloseSessions);
                        }
                        self.down_requested = true;
                        out.actions.push(Action::TakeLinkDown);
                        out.transitions.push(Transition { from: Phase::Closing, to: Phase::Closing, reason: Reason::GraceExpired { deadline, sessions } });
                    }
                }
            }
        }
    }

    /// Orderly close: stop accepting, let sessions finish until `deadline`.
    fn begin_closing(&mut self, reason: Reason, deadline: Timestamp, out: &mut Output) {
        if self.listening {
            self.listening = false;
            out.actions.push(Action::StopAccepting);
        }
        self.grace_deadline = Some(deadline);
        if self.sessions == 0 || self.phase == Phase::Opening {
            self.down_requested = true;
            if self.sessions > 0 {
                out.actions.push(Action::CloseSessions);
            }
            out.actions.push(Action::TakeLinkDown);
        }
        self.go(Phase::Closing, reason, out);
    }

    /// Immediate close: no grace. `window_done` keeps the window from reopening.
    fn close_now(&mut self, reason: Reason, window_done: bool, out: &mut Output) {
        if window_done {
            self.done_until = self.window_until;
        }
        if self.listening {
            self.listening = false;
            out.actions.push(Action::StopAccepting);
        }
        if self.sessions > 0 {
            out.actions.push(Action::CloseSessions);
        }
        self.down_requested = true;
        self.grace_deadline = Some(self.now);
        out.actions.push(Action::TakeLinkDown);
        if self.phase == Phase::Closing {
            out.transitions.push(Transition { from: Phase::Closing, to: Phase::Closing, reason });
        } else {
            self.go(Phase::Closing, reason, out);
        }
    }

    fn on_policy(&mut self, policy: Policy, out: &mut Output) {
        if let Some(issued) = policy.issued {
            // A verified policy's issue time is a lower bound on the real time.
            self.floor = self.floor.max(issued);
            self.newest_issued = Some(self.newest_issued.map_or(issued, |newest| newest.max(issued)));
            self.now = self.now.max(self.floor);
        }
        let version = policy.version;
        self.policy = Some(policy);
        self.clock_fault = false;
        self.done_until = None;
        self.retry_open_at = None;
        if matches!(self.phase, Phase::Opening | Phase::Open) {
            // Re-evaluated from Sealed under the new policy, which may use another address.
            let grace = self.policy.as_ref().map_or(Duration::ZERO, |p| p.close.grace);
            self.begin_closing(Reason::PolicyReplaced { version }, self.now.saturating_add(grace), out);
        }
        // Opening waits for the next clock reading: only a tick opens the link.
    }

    fn on_commit(&mut self, pusher: String, dataset: String, out: &mut Output) {
        let Some(policy) = &self.policy else { return };
        if !policy.pushers.iter().any(|p| p.name == pusher) {
            out.actions.push(Action::RaiseAlarm(Alarm::UnknownPusherCommitted { pusher }));
            return;
        }
        self.committed.insert((pusher, dataset));
        // A pusher that lists its datasets is done when each is committed; one that does not,
        // at its first commit.
        let refused = |p: &crate::policy::Pusher| policy.signals.close_windows && self.suspects.contains(&p.name);
        let done = |p: &crate::policy::Pusher| {
            refused(p)
                || match p.datasets.is_empty() {
                    true => self.committed.iter().any(|(name, _)| *name == p.name),
                    false => p.datasets.iter().all(|d| self.committed.contains(&(p.name.clone(), d.clone()))),
                }
        };
        if policy.close.early && policy.pushers.iter().all(done) && self.phase == Phase::Open {
            let expected = policy
                .pushers
                .iter()
                .flat_map(|p| match p.datasets.is_empty() {
                    true => vec![p.name.clone()],
                    false => p.datasets.iter().map(|d| format!("{}/{d}", p.name)).collect(),
                })
                .collect();
            // Everything expected is in, so nothing in flight is owed more time.
            self.close_now(Reason::AllExpectedCommitted { expected }, true, out);
        }
    }

    fn on_watchdog(&mut self, sighting: Sighting, out: &mut Output) {
        let ours = self.policy.as_ref().map(|p| p.network.address);
        let expected_up = matches!(self.phase, Phase::Opening | Phase::Open) || (self.phase == Phase::Closing && !self.down_requested);
        let alarm = match sighting {
            Sighting::LinkUp if expected_up => return,
            Sighting::NewAddress(address) if expected_up && Some(address) == ours => return,
            Sighting::LinkUp => Alarm::WatchdogLinkUp { phase: self.phase },
            Sighting::NewAddress(address) => Alarm::WatchdogNewAddress { address, phase: self.phase },
        };
        self.close_on_alarm(alarm, out);
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n).expect("small constant")
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
