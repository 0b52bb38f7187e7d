use super::*;
use crate::keys::test_keys::key;
use crate::policy::{Close, Network, Pusher, Window};
use crate::units::ByteSize;
use proptest::prelude::*;

const T0: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const OPEN_AT: i64 = T0 + 100;
const CLOSE_AT: i64 = T0 + 200;
const EXPIRES: i64 = T0 + 10_000;
const GRACE: i64 = 30;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix(secs).unwrap()
}

fn policy(pushers: &[&str], early: bool) -> Policy {
    Policy {
        vault_id: "vault-01".into(),
        version: 3,
        issued: Some(at(T0)),
        expires: at(EXPIRES),
        network: Network { nic: NicSelector::Name("vault0".into()), address: "192.0.2.10".parse().unwrap(), prefix_len: 24, port: 7400 },
        windows: vec![Window::Once { from: at(OPEN_AT), until: at(CLOSE_AT) }],
        pushers: pushers
            .iter()
            .enumerate()
            .map(|(i, name)| Pusher {
                name: name.to_string(),
                key: key(60 + u8::try_from(i).unwrap()).public_key(),
                quota: ByteSize::from_bytes(1 << 30),
                retain: Duration::from_secs(86_400).unwrap(),
                datasets: vec![],
            })
            .collect(),
        close: Close { early, grace: Duration::from_secs(GRACE).unwrap() },
        retention: Default::default(),
        scrub: Default::default(),
        drill: Default::default(),
        rotation: None,
        signals: Default::default(),
    }
}

fn gate_with(policy: Policy) -> Gate {
    let mut gate = Gate::new(at(T0));
    let out = gate.handle(Input::PolicyApplied(Box::new(policy)));
    assert!(out.actions.is_empty(), "{out:?}");
    gate
}

/// A clock reading `secs` with the monotonic clock in step (time passing, not a jump).
fn reading(secs: i64) -> Input {
    Input::Tick { clock: at(secs), monotonic: mono(secs) }
}

fn mono(secs: i64) -> std::time::Duration {
    std::time::Duration::from_secs(secs as u64)
}

/// A tick, with floor persistence left out (tested on its own).
fn tick(gate: &mut Gate, secs: i64) -> Output {
    let mut out = gate.handle(reading(secs));
    out.actions.retain(|a| !matches!(a, Action::PersistTimeFloor(_)));
    out
}

/// Drives a gate through opening into Open at OPEN_AT.
fn open_gate(policy: Policy) -> Gate {
    let mut gate = gate_with(policy);
    let out = tick(&mut gate, OPEN_AT);
    assert_eq!(out.actions, vec![Action::BringLinkUp { nic: NicSelector::Name("vault0".into()), address: "192.0.2.10".parse().unwrap(), prefix: 24 }]);
    let out = gate.handle(Input::LinkConfirmedUp);
    assert_eq!(out.actions, vec![Action::StartListening { address: "192.0.2.10".parse().unwrap(), port: 7400 }]);
    assert_eq!(gate.phase(), Phase::Open);
    gate
}

fn phases(out: &Output) -> Vec<(Phase, Phase)> {
    out.transitions.iter().map(|t| (t.from, t.to)).collect()
}

#[test]
fn stays_sealed_before_the_window_and_opens_at_its_start() {
    let mut gate = gate_with(policy(&["db"], false));
    for s in [T0, T0 + 50, OPEN_AT - 1] {
        assert!(tick(&mut gate, s).actions.is_empty());
        assert_eq!(gate.phase(), Phase::Sealed);
    }
    assert_eq!(gate.next_deadline(), Some(at(OPEN_AT)));
    let out = tick(&mut gate, OPEN_AT);
    assert_eq!(phases(&out), vec![(Phase::Sealed, Phase::Opening)]);
    assert_eq!(out.transitions[0].reason, Reason::WindowOpened { until: at(CLOSE_AT) });
    assert_eq!(gate.next_deadline(), Some(at(CLOSE_AT)));
}

#[test]
fn closes_at_window_end_without_sessions() {
    let mut gate = open_gate(policy(&["db"], false));
    assert!(tick(&mut gate, CLOSE_AT - 1).actions.is_empty());
    let out = tick(&mut gate, CLOSE_AT);
    assert_eq!(out.actions, vec![Action::StopAccepting, Action::TakeLinkDown]);
    assert_eq!(out.transitions[0].reason, Reason::WindowEnded { until: at(CLOSE_AT) });
    let out = gate.handle(Input::LinkConfirmedDown);
    assert_eq!(phases(&out), vec![(Phase::Closing, Phase::Sealed)]);
    // The one-shot window is over: nothing opens again.
    assert!(tick(&mut gate, CLOSE_AT + 500).actions.is_empty());
    assert_eq!(gate.phase(), Phase::Sealed);
}

#[test]
fn in_flight_sessions_get_grace_then_are_cut() {
    let mut gate = open_gate(policy(&["db"], false));
    gate.handle(Input::SessionStarted);
    let out = tick(&mut gate, CLOSE_AT);
    assert_eq!(out.actions, vec![Action::StopAccepting]);
    assert_eq!(gate.phase(), Phase::Closing);
    assert_eq!(gate.next_deadline(), Some(at(CLOSE_AT + GRACE)));
    assert!(tick(&mut gate, CLOSE_AT + GRACE - 1).actions.is_empty());
    let out = tick(&mut gate, CLOSE_AT + GRACE);
    assert_eq!(out.actions, vec![Action::CloseSessions, Action::TakeLinkDown]);
    assert_eq!(out.transitions[0].reason, Reason::GraceExpired { deadline: at(CLOSE_AT + GRACE), sessions: 1 });
}

#[test]
fn the_last_session_ending_within_grace_downs_the_link() {
    let mut gate = open_gate(policy(&["db"], false));
    gate.handle(Input::SessionStarted);
    gate.handle(Input::SessionStarted);
    tick(&mut gate, CLOSE_AT);
    assert!(gate.handle(Input::SessionEnded).actions.is_empty());
    let out = gate.handle(Input::SessionEnded);
    assert_eq!(out.actions, vec![Action::TakeLinkDown]);
    assert_eq!(out.transitions[0].reason, Reason::SessionsDrained);
    assert_eq!(phases(&gate.handle(Input::LinkConfirmedDown)), vec![(Phase::Closing, Phase::Sealed)]);
}

#[test]
fn early_close_right_after_the_last_listed_pusher_commits() {
    let mut gate = open_gate(policy(&["db", "files"], true));
    gate.handle(Input::SessionStarted);
    assert!(gate.handle(commit("db", "pgdump")).actions.is_empty());
    // A repeated commit from the same pusher is not the other pusher.
    assert!(gate.handle(commit("db", "etc")).actions.is_empty());
    let out = gate.handle(commit("files", "home"));
    assert_eq!(out.actions, vec![Action::StopAccepting, Action::CloseSessions, Action::TakeLinkDown]);
    assert_eq!(out.transitions[0].reason, Reason::AllExpectedCommitted { expected: vec!["db".into(), "files".into()] });
    gate.handle(Input::LinkConfirmedDown);
    // Still inside the scheduled window, but it was closed early: it stays sealed.
    assert!(tick(&mut gate, OPEN_AT + 10).actions.is_empty());
    assert_eq!(gate.phase(), Phase::Sealed);
}

#[test]
fn without_early_close_commits_do_not_close() {
    let mut gate = open_gate(policy(&["db"], false));
    assert!(gate.handle(commit("db", "pgdump")).actions.is_empty());
    assert_eq!(gate.phase(), Phase::Open);
}

fn commit(pusher: &str, dataset: &str) -> Input {
    Input::Committed { pusher: pusher.into(), dataset: dataset.into() }
}

#[test]
fn a_pusher_that_lists_its_datasets_closes_the_window_only_when_each_is_in() {
    // The README's pusher: a database dump and /etc, in two pushes every night.
    let mut listed = policy(&["db", "files"], true);
    listed.pushers[0].datasets = vec!["pgdump".into(), "etc".into()];
    let mut gate = open_gate(listed);
    assert!(gate.handle(commit("db", "pgdump")).actions.is_empty());
    assert!(gate.handle(commit("files", "home")).actions.is_empty(), "db's etc is still expected");
    // A dataset nobody expects counts for nothing.
    assert!(gate.handle(commit("db", "scratch")).actions.is_empty());
    assert_eq!(gate.phase(), Phase::Open);
    let out = gate.handle(commit("db", "etc"));
    assert_eq!(out.actions, vec![Action::StopAccepting, Action::TakeLinkDown]);
    assert_eq!(out.transitions[0].reason, Reason::AllExpectedCommitted { expected: vec!["db/pgdump".into(), "db/etc".into(), "files".into()] });
    assert_eq!(out.transitions[0].reason.to_string(), "early close: every expected commit arrived (db/pgdump, db/etc, files)");
}

fn closing_windows_to_suspects(pushers: &[&str]) -> Policy {
    let mut p = policy(pushers, true);
    p.signals.close_windows = true;
    p
}

fn suspects(names: &[&str]) -> Input {
    Input::SuspectPushers(names.iter().map(|n| n.to_string()).collect())
}

#[test]
fn a_window_no_unsuspected_pusher_may_use_stays_shut_when_the_policy_says_so() {
    let mut gate = gate_with(closing_windows_to_suspects(&["db"]));
    assert!(gate.handle(suspects(&["db"])).actions.is_empty());
    let out = tick(&mut gate, OPEN_AT);
    assert!(out.actions.is_empty(), "{out:?}");
    assert_eq!(out.transitions, vec![Transition { from: Phase::Sealed, to: Phase::Sealed, reason: Reason::AllPushersSuspect { until: at(CLOSE_AT) } }]);
    assert!(tick(&mut gate, OPEN_AT + 1).transitions.is_empty(), "said once per window");
    assert_eq!(gate.phase(), Phase::Sealed);

    // Without the policy's word, a suspect pusher's window opens as before (it is only held).
    let mut gate = gate_with(policy(&["db"], true));
    gate.handle(suspects(&["db"]));
    assert_eq!(phases(&tick(&mut gate, OPEN_AT)), vec![(Phase::Sealed, Phase::Opening)]);
}

#[test]
fn a_suspect_pusher_counts_as_done_for_an_early_close_and_the_last_one_closes_an_open_window() {
    let mut gate = open_gate(closing_windows_to_suspects(&["db", "files"]));
    gate.handle(suspects(&["files"]));
    let out = gate.handle(commit("db", "pgdump"));
    assert_eq!(out.actions, vec![Action::StopAccepting, Action::TakeLinkDown]);

    let mut gate = open_gate(closing_windows_to_suspects(&["db", "files"]));
    assert!(gate.handle(suspects(&["files"])).actions.is_empty(), "db may still push");
    let out = gate.handle(suspects(&["db", "files"]));
    assert_eq!(out.actions, vec![Action::StopAccepting, Action::TakeLinkDown]);
    assert_eq!(out.transitions[0].reason, Reason::AllPushersSuspect { until: at(CLOSE_AT) });
    gate.handle(Input::LinkConfirmedDown);
    // A release later in the same window does not reopen it: it was closed like an early close.
    gate.handle(suspects(&[]));
    assert!(tick(&mut gate, OPEN_AT + 20).actions.is_empty());
}

#[test]
fn an_unlisted_pusher_commit_is_an_alarm_and_not_counted() {
    let mut gate = open_gate(policy(&["db"], true));
    let out = gate.handle(commit("mallory", "x"));
    assert_eq!(out.alarms().next().unwrap().rule(), "unknown_pusher_committed");
    assert_eq!(gate.phase(), Phase::Open);
}

#[test]
fn a_clock_behind_the_floor_keeps_it_sealed_with_an_alarm() {
    // The floor says it is already after the window opened; the clock says long before.
    let mut gate = Gate::new(at(OPEN_AT + 10));
    gate.handle(Input::PolicyApplied(Box::new(policy(&["db"], false))));
    let out = tick(&mut gate, OPEN_AT + 10 - CLOCK_TOLERANCE_SECS - 1);
    let alarm = out.alarms().next().expect("alarm").to_string();
    assert!(alarm.contains("clock behind floor") && alarm.contains("tolerance 300s"), "{alarm}");
    assert!(!out.actions.iter().any(|a| matches!(a, Action::BringLinkUp { .. })));
    // Even once the clock reads a time inside the window again, the fault is latched.
    for s in [OPEN_AT + 20, OPEN_AT + 30] {
        assert!(tick(&mut gate, s).actions.is_empty());
    }
    assert_eq!(gate.phase(), Phase::Sealed);
    assert_eq!(gate.next_deadline(), None);
    // A newly applied policy is the admins' answer; the gate then follows the schedule.
    let out = gate.handle(Input::PolicyApplied(Box::new(policy(&["db"], false))));
    assert!(out.actions.is_empty());
    assert!(tick(&mut gate, OPEN_AT + 40).actions.iter().any(|a| matches!(a, Action::BringLinkUp { .. })));
}

#[test]
fn a_clock_slightly_behind_uses_the_floor() {
    let mut gate = Gate::new(at(OPEN_AT + 10));
    gate.handle(Input::PolicyApplied(Box::new(policy(&["db"], false))));
    // 200 s behind is inside the tolerance: the floor is "now", and that is inside the window.
    let out = tick(&mut gate, OPEN_AT + 10 - 200);
    assert_eq!(out.alarms().count(), 0);
    assert_eq!(gate.phase(), Phase::Opening);
    assert_eq!(gate.now(), at(OPEN_AT + 10));
}

#[test]
fn a_clock_jump_past_expiry_while_open_closes_and_alarms() {
    let mut gate = open_gate(policy(&["db"], false));
    gate.handle(Input::SessionStarted);
    let out = gate.handle(Input::Tick { clock: at(EXPIRES + 5), monotonic: mono(OPEN_AT + 1) });
    assert_eq!(out.alarms().next().unwrap().rule(), "clock_jumped");
    assert_eq!(out.actions[1..], [Action::StopAccepting, Action::CloseSessions, Action::TakeLinkDown]);
    // The bogus reading does not raise the floor.
    assert_eq!(gate.time_floor(), at(OPEN_AT));
}

/// Issue 14, item 2: a forward jump shorter than the policy's remaining validity used to be
/// absorbed (the floor rose with it, and retention would count from it). The monotonic clock
/// tells a jump from time passing: alarm, sealed, floor untouched.
#[test]
fn a_forward_jump_inside_the_validity_is_an_alarm_and_the_floor_stays() {
    let mut gate = gate_with(policy(&["db"], false));
    assert!(tick(&mut gate, T0 + 10).alarms().next().is_none());
    // An hour on the wall clock, two seconds on the monotonic one.
    let out = gate.handle(Input::Tick { clock: at(T0 + 3_610), monotonic: mono(T0 + 12) });
    let alarm = out.alarms().next().expect("a jump is an alarm");
    assert_eq!(alarm.rule(), "clock_jumped");
    assert!(alarm.to_string().contains(&format!("it read {}, then {} only 2s later", at(T0 + 10), at(T0 + 3_610))), "{alarm}");
    assert_eq!(gate.time_floor(), at(T0 + 10));
    assert!(!out.actions.iter().any(|a| matches!(a, Action::PersistTimeFloor(_))));
    assert!(gate.clock_fault(), "a stick's issue time is trusted over a clock that jumped");
    // A jump within the tolerance is time the monotonic clock did not see (a slow tick), not a fault.
    let mut gate = gate_with(policy(&["db"], false));
    tick(&mut gate, T0 + 10);
    assert!(gate.handle(Input::Tick { clock: at(T0 + 300), monotonic: mono(T0 + 11) }).alarms().next().is_none());
}

const BUILT: i64 = T0 - 30 * 86_400;

/// Issue 14, item 2: an RTC at 1970 on first boot (a dead battery) is named, with what to do,
/// and the floor stays at the build time. The vault is not bricked: a policy stick is judged by
/// its signed `issued`, and once applied (and the RTC set right) the vault follows its windows.
#[test]
fn a_1970_rtc_on_first_boot_says_what_to_do_and_a_stick_recovers() {
    let mut gate = Gate::new(at(0)).built_at(at(BUILT));
    assert_eq!(gate.time_floor(), at(BUILT));
    let out = tick(&mut gate, 0);
    let alarm = out.alarms().next().expect("alarm");
    assert_eq!(alarm.rule(), "clock_implausible");
    let text = alarm.to_string();
    assert!(text.contains("before this image was built") && text.contains("Set the RTC to UTC in the firmware setup"), "{text}");
    assert_eq!(gate.time_floor(), at(BUILT));
    assert!(gate.clock_fault());
    gate.handle(Input::PolicyApplied(Box::new(policy(&["db"], false))));
    assert_eq!(gate.time_floor(), at(T0), "the policy's issue time raised the floor");
    // The RTC still reads 1970: still sealed, still named.
    assert_eq!(tick(&mut gate, 5).alarms().next().map(Alarm::rule), Some("clock_implausible"));
    // Restarted with the RTC set right: the window opens.
    let mut gate = Gate::new(at(T0)).built_at(at(BUILT));
    gate.handle(Input::PolicyApplied(Box::new(policy(&["db"], false))));
    let out = tick(&mut gate, OPEN_AT);
    assert!(out.alarms().next().is_none());
    assert!(out.actions.iter().any(|a| matches!(a, Action::BringLinkUp { .. })));
}

/// Issue 14, item 2: an RTC that reads 2099, with no policy yet, used to raise the floor to
/// 2099 silently; every bundle was then expired and a corrected RTC "behind the floor". Now it
/// is an alarm, the floor stays, and the same vault restarted with a right RTC opens its window.
#[test]
fn a_2099_rtc_is_an_alarm_and_never_raises_the_floor() {
    let year_2099 = 4_070_908_800;
    let mut gate = Gate::new(at(BUILT)).built_at(at(BUILT));
    let out = gate.handle(reading(year_2099));
    let alarm = out.alarms().next().expect("alarm");
    assert_eq!(alarm.rule(), "clock_implausible");
    assert!(alarm.to_string().contains("more than 732 days past the newest time the vault can vouch for"), "{alarm}");
    assert_eq!(gate.time_floor(), at(BUILT));
    assert!(!out.actions.iter().any(|a| matches!(a, Action::PersistTimeFloor(_))));
    // Within the bound of the newest policy it is believed; a policy moves the bound.
    let mut gate = Gate::new(at(BUILT)).built_at(at(BUILT));
    gate.handle(Input::PolicyApplied(Box::new(policy(&["db"], false))));
    assert!(tick(&mut gate, T0 + CLOCK_PLAUSIBLE_AHEAD_SECS - 60).alarms().all(|a| a.rule() != "clock_implausible"));
    let mut gate = Gate::new(at(BUILT)).built_at(at(BUILT));
    gate.handle(Input::PolicyApplied(Box::new(policy(&["db"], false))));
    assert_eq!(tick(&mut gate, T0 + CLOCK_PLAUSIBLE_AHEAD_SECS + 60).alarms().next().map(Alarm::rule), Some("clock_implausible"));
    // Restarted from the floor it kept, with the RTC right: the window opens.
    let mut gate = Gate::new(at(BUILT)).built_at(at(BUILT));
    gate.handle(Input::PolicyApplied(Box::new(policy(&["db"], false))));
    assert!(tick(&mut gate, OPEN_AT).actions.iter().any(|a| matches!(a, Action::BringLinkUp { .. })));
}

#[test]
fn reaching_expiry_by_ticking_is_not_an_alarm() {
    let mut p = policy(&["db"], false);
    p.windows = vec![Window::Once { from: at(OPEN_AT), until: at(EXPIRES + 100) }];
    let mut gate = open_gate(p);
    for s in (OPEN_AT..EXPIRES).step_by(200) {
        assert_eq!(tick(&mut gate, s).alarms().count(), 0);
    }
    let out = tick(&mut gate, EXPIRES);
    assert_eq!(out.alarms().count(), 0);
    assert_eq!(out.transitions[0].reason, Reason::PolicyExpired { expires: at(EXPIRES) });
}

#[test]
fn the_floor_is_persisted_in_steps() {
    let mut gate = gate_with(policy(&["db"], false));
    let mut raw_tick = |s: i64| gate.handle(reading(s)).actions;
    assert!(raw_tick(T0 + 30).is_empty());
    assert_eq!(raw_tick(T0 + 60), vec![Action::PersistTimeFloor(at(T0 + 60))]);
    assert!(raw_tick(T0 + 90).is_empty());
}

#[test]
fn the_watchdog_downs_a_link_raised_while_sealed() {
    let mut gate = gate_with(policy(&["db"], false));
    let out = gate.handle(Input::Watchdog(Sighting::LinkUp));
    assert_eq!(out.actions, vec![Action::RaiseAlarm(Alarm::WatchdogLinkUp { phase: Phase::Sealed }), Action::TakeLinkDown]);
    let stranger: IpAddr = "198.51.100.7".parse().unwrap();
    let out = gate.handle(Input::Watchdog(Sighting::NewAddress(stranger)));
    assert_eq!(out.actions[1], Action::TakeLinkDown);
    assert!(out.alarms().next().unwrap().to_string().contains("198.51.100.7"));
}

#[test]
fn the_watchdog_accepts_our_own_bring_up_but_not_a_second_address() {
    let mut gate = open_gate(policy(&["db"], false));
    assert!(gate.handle(Input::Watchdog(Sighting::LinkUp)).actions.is_empty());
    assert!(gate.handle(Input::Watchdog(Sighting::NewAddress("192.0.2.10".parse().unwrap()))).actions.is_empty());
    let out = gate.handle(Input::Watchdog(Sighting::NewAddress("192.0.2.99".parse().unwrap())));
    assert_eq!(out.alarms().next().unwrap().rule(), "watchdog_new_address");
    assert!(out.actions.contains(&Action::TakeLinkDown));
    assert_eq!(gate.phase(), Phase::Closing);
}

#[test]
fn an_unsolicited_frame_closes_the_window_for_good() {
    let mut gate = open_gate(policy(&["db"], false));
    let out = gate.handle(Input::UnsolicitedFrame { summary: "IPv6 router solicitation".into() });
    assert_eq!(out.alarms().next().unwrap().rule(), "unsolicited_frame");
    assert_eq!(out.actions[1..], [Action::StopAccepting, Action::TakeLinkDown]);
    gate.handle(Input::LinkConfirmedDown);
    assert!(!tick(&mut gate, OPEN_AT + 5).actions.iter().any(|a| matches!(a, Action::BringLinkUp { .. })));
}

#[test]
fn frames_the_guard_could_not_judge_close_the_window_too() {
    let mut gate = open_gate(policy(&["db"], false));
    let out = gate.handle(Input::EgressUnwatched { reason: "3 frames dropped unjudged".into() });
    let alarm = out.alarms().next().unwrap();
    assert_eq!(alarm.rule(), "egress_unwatched");
    assert!(alarm.to_string().contains("3 frames dropped unjudged"), "{alarm}");
    assert_eq!(out.actions[1..], [Action::StopAccepting, Action::TakeLinkDown]);
    gate.handle(Input::LinkConfirmedDown);
    assert!(!tick(&mut gate, OPEN_AT + 5).actions.iter().any(|a| matches!(a, Action::BringLinkUp { .. })));
    // While sealed it only makes sure the link is down.
    let out = gate.handle(Input::EgressUnwatched { reason: "stopped reading".into() });
    assert_eq!(out.actions[1..], [Action::TakeLinkDown]);
    assert_eq!(gate.phase(), Phase::Sealed);
}

/// Issue 14, item 6: a watchdog that stopped can no longer report a link raised behind the
/// gate's back: the window closes at once and no later window opens in this run, whatever
/// policy arrives.
#[test]
fn a_stopped_watchdog_seals_for_the_rest_of_the_run() {
    let mut gate = open_gate(policy(&["db"], false));
    let out = gate.handle(Input::WatchdogStopped { reason: "netlink stream ended".into() });
    let alarm = out.alarms().next().unwrap();
    assert_eq!(alarm.rule(), "watchdog_stopped");
    assert!(alarm.to_string().contains("netlink stream ended") && alarm.to_string().contains("sealed until the vault restarts"), "{alarm}");
    assert!(out.actions.contains(&Action::TakeLinkDown));
    gate.handle(Input::LinkConfirmedDown);
    assert_eq!(gate.phase(), Phase::Sealed);
    let mut next = policy(&["db"], false);
    next.version = 4;
    next.windows = vec![Window::Once { from: at(CLOSE_AT + 100), until: at(CLOSE_AT + 200) }];
    gate.handle(Input::PolicyApplied(Box::new(next)));
    assert!(gate.latched());
    assert_eq!(gate.next_deadline(), None);
    assert!(!tick(&mut gate, CLOSE_AT + 150).actions.iter().any(|a| matches!(a, Action::BringLinkUp { .. })));
}

#[test]
fn a_failed_bring_up_goes_down_and_retries_later_in_the_window() {
    let mut gate = gate_with(policy(&["db"], false));
    tick(&mut gate, OPEN_AT);
    let out = gate.handle(Input::LinkUpFailed { reason: "no carrier within 3s".into() });
    assert_eq!(out.actions[1..], [Action::TakeLinkDown]);
    gate.handle(Input::LinkConfirmedDown);
    assert!(!tick(&mut gate, OPEN_AT + OPEN_RETRY_SECS - 1).actions.iter().any(|a| matches!(a, Action::BringLinkUp { .. })));
    assert!(tick(&mut gate, OPEN_AT + OPEN_RETRY_SECS).actions.iter().any(|a| matches!(a, Action::BringLinkUp { .. })));
}

#[test]
fn a_failed_take_down_is_retried_on_the_next_tick() {
    let mut gate = open_gate(policy(&["db"], false));
    tick(&mut gate, CLOSE_AT);
    let out = gate.handle(Input::LinkDownFailed { reason: "netlink: busy".into() });
    assert_eq!(out.alarms().next().unwrap().rule(), "link_down_failed");
    assert_eq!(gate.phase(), Phase::Closing);
    assert_eq!(tick(&mut gate, CLOSE_AT + 1).actions, vec![Action::TakeLinkDown]);
}

#[test]
fn no_policy_means_sealed_forever() {
    let mut gate = Gate::new(at(T0));
    assert!(tick(&mut gate, OPEN_AT).actions.is_empty());
    assert_eq!(gate.next_deadline(), None);
}

#[test]
fn ipv6_vault_addresses_are_refused_once_per_window() {
    let mut p = policy(&["db"], false);
    p.network.address = "fd00::10".parse().unwrap();
    let mut gate = gate_with(p);
    assert_eq!(tick(&mut gate, OPEN_AT).alarms().next().unwrap().rule(), "unsupported_address");
    assert_eq!(tick(&mut gate, OPEN_AT + 1).alarms().count(), 0);
    assert_eq!(gate.phase(), Phase::Sealed);
}

// ---- property test: random input sequences never break the air-gap rules ---------------

/// Clock readings mostly advance a little (so windows are reached), sometimes jump anywhere.
#[derive(Debug, Clone)]
enum Step {
    Advance(i64),
    JumpTo(i64),
    Other(Input),
}

fn arbitrary_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0i64..40).prop_map(Step::Advance),
        1 => (T0 - 1000..EXPIRES + 1000).prop_map(Step::JumpTo),
        10 => arbitrary_input().prop_map(Step::Other),
    ]
}

fn arbitrary_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        2 => Just(Input::LinkConfirmedUp),
        1 => Just(Input::LinkUpFailed { reason: "x".into() }),
        2 => Just(Input::LinkConfirmedDown),
        1 => Just(Input::LinkDownFailed { reason: "x".into() }),
        2 => Just(Input::SessionStarted),
        2 => Just(Input::SessionEnded),
        2 => (prop::sample::select(vec!["db", "files", "mallory"]), prop::sample::select(vec!["pgdump", "etc"])).prop_map(|(p, d)| commit(p, d)),
        1 => Just(Input::Watchdog(Sighting::LinkUp)),
        1 => Just(Input::UnsolicitedFrame { summary: "x".into() }),
        1 => Just(Input::EgressUnwatched { reason: "x".into() }),
        1 => Just(Input::WatchdogStopped { reason: "x".into() }),
        1 => prop::sample::subsequence(vec!["db", "files"], 0..=2).prop_map(|names| suspects(&names)),
    ]
}

static OPENED_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[test]
fn the_property_test_reaches_open_windows() {
    // Guards the generator: a property that never sees the link opened proves nothing.
    OPENED_RUNS.store(0, std::sync::atomic::Ordering::Relaxed);
    random_inputs_never_open_the_link_outside_a_valid_window();
    let opened = OPENED_RUNS.load(std::sync::atomic::Ordering::Relaxed);
    assert!(opened >= 50, "only {opened} of 500 runs opened the link");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn random_inputs_never_open_the_link_outside_a_valid_window(
        early in any::<bool>(),
        floor in T0 - 500..T0 + 500,
        steps in prop::collection::vec(arbitrary_step(), 1..120),
    ) {
        let mut gate = Gate::new(at(floor));
        // Half the runs also refuse suspect pushers (an input the generator sends).
        let mut p = policy(&["db", "files"], early);
        p.signals.close_windows = early;
        gate.handle(Input::PolicyApplied(Box::new(p)));
        let mut link_wanted_up = false;
        let mut opened = 0u32;
        let mut latched = false;
        let mut clock_secs = floor + 60;
        let mut monotonic = 0;
        for step in steps {
            let input = match step {
                Step::Advance(d) => { clock_secs += d; monotonic += d; Input::Tick { clock: at(clock_secs), monotonic: mono(monotonic) } }
                Step::JumpTo(s) => { clock_secs = s; monotonic += 1; Input::Tick { clock: at(s), monotonic: mono(monotonic) } }
                Step::Other(input) => input,
            };
            let before = gate.phase();
            let clock = match &input { Input::Tick { clock, .. } => Some(*clock), _ => None };
            let out = gate.handle(input);
            // Transitions chain from the phase before to the phase after.
            let mut phase = before;
            for t in &out.transitions {
                prop_assert_eq!(t.from, phase);
                phase = t.to;
            }
            prop_assert_eq!(phase, gate.phase());
            if out.alarms().any(|a| a.rule().starts_with("clock") || a.rule() == "watchdog_stopped") {
                latched = true;
            }
            for action in &out.actions {
                match action {
                    Action::BringLinkUp { .. } => {
                        opened += 1;
                        let clock = clock.expect("only a tick opens the link");
                        prop_assert!(!latched, "opened after a clock fault");
                        prop_assert!(clock >= gate.time_floor().saturating_sub(secs(CLOCK_TOLERANCE_SECS)));
                        prop_assert!(matches!(schedule::state_at(gate.policy().unwrap(), gate.now()), WindowState::Open { .. }), "link up outside a window at {}", gate.now());
                        prop_assert!(gate.now() < at(EXPIRES));
                        prop_assert_eq!(gate.phase(), Phase::Opening);
                        link_wanted_up = true;
                    }
                    Action::StartListening { .. } => prop_assert_eq!(gate.phase(), Phase::Open),
                    Action::TakeLinkDown => link_wanted_up = false,
                    _ => {}
                }
            }
            // Sealed means nobody asked for the link to be up since the last TakeLinkDown.
            if gate.phase() == Phase::Sealed {
                prop_assert!(!link_wanted_up, "sealed while the link was wanted up");
            }
            // Outside a window (by the gate's own time) the link is never left wanted up
            // without a pending close.
            if link_wanted_up && gate.phase() == Phase::Open {
                prop_assert!(matches!(schedule::state_at(gate.policy().unwrap(), gate.now()), WindowState::Open { .. }), "link up outside a window at {}", gate.now());
            }
            if latched {
                prop_assert!(matches!(gate.phase(), Phase::Sealed | Phase::Closing));
            }
        }
        OPENED_RUNS.fetch_add(u64::from(opened > 0), std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn between_ticks_a_reading_is_believed_as_far_as_time_has_passed() {
    let mut gate = gate_with(policy(&["db"], false));
    // Before the first tick nothing is believed: the floor.
    assert_eq!(gate.judged().at(at(T0 + 40), mono(T0 + 40)), at(T0));
    tick(&mut gate, T0 + 10);
    let judged = gate.judged();
    assert_eq!(judged.at(at(T0 + 10), mono(T0 + 10)), at(T0 + 10));
    // Time passing, a second of it still to be ticked: believed.
    assert_eq!(judged.at(at(T0 + 12), mono(T0 + 11)), at(T0 + 12));
    // A jump ahead between ticks stops at what the monotonic clock vouches for.
    assert_eq!(judged.at(at(T0 + 5_000), mono(T0 + 10)), at(T0 + 11));
    assert_eq!(judged.at(at(T0 + 5_000), mono(T0 + 13)), at(T0 + 14));
    // A clock set back never stamps before the gate's time.
    assert_eq!(judged.at(at(T0 - 3_000), mono(T0 + 12)), at(T0 + 10));
}

#[test]
fn a_doubted_clock_stamps_nothing_past_the_gates_time() {
    let mut gate = gate_with(policy(&["db"], false));
    tick(&mut gate, T0 + 10);
    // 10 000 s on the clock in one second of monotonic time: a jump.
    let out = gate.handle(Input::Tick { clock: at(T0 + 10_011), monotonic: mono(T0 + 11) });
    assert!(out.actions.iter().any(|a| matches!(a, Action::RaiseAlarm(Alarm::ClockJumped { .. }))), "{out:?}");
    let judged = gate.judged();
    assert_eq!(judged.at(at(T0 + 10_011), mono(T0 + 11)), at(T0 + 10));
    assert_eq!(judged.at(at(T0 + 10_500), mono(T0 + 500)), at(T0 + 10), "latched: time passing proves nothing");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_stamp_is_never_before_the_gate_nor_past_what_the_monotonic_clock_vouches_for(
        floor in T0 - 500..T0 + 500,
        steps in prop::collection::vec(arbitrary_step(), 1..60),
        // Per step: where the clock reads against the true time, how long after the last tick
        // it is read, the tick's sub-second offset, and now and then a policy re-applied (it
        // clears a latched fault, and its `issued` may raise the floor).
        readings in prop::collection::vec((-400i64..400, 0u64..5_000, 0u64..1_000, prop::option::weighted(0.1, T0 - 500..T0 + 2_000)), 60),
    ) {
        let mut gate = Gate::new(at(floor));
        gate.handle(Input::PolicyApplied(Box::new(policy(&["db"], false))));
        let mut clock_secs = floor + 60;
        let mut monotonic = 0;
        let mut tick_ms = 0u64;
        let mut believed: Option<(i64, u64)> = None;
        for (step, (off, after_ms, jitter_ms, reissued)) in steps.into_iter().zip(readings) {
            let ticked = match step {
                Step::Advance(d) => { clock_secs += d; monotonic += d; true }
                Step::JumpTo(s) => { clock_secs = s; monotonic += 1; true }
                Step::Other(input) => { gate.handle(input); false }
            };
            if ticked {
                tick_ms = tick_ms.max(u64::try_from(monotonic).unwrap() * 1_000 + jitter_ms);
                gate.handle(Input::Tick { clock: at(clock_secs), monotonic: std::time::Duration::from_millis(tick_ms) });
            }
            if gate.clock_fault() {
                believed = None;
            } else if ticked {
                believed = Some((clock_secs, tick_ms));
            }
            if let Some(issued) = reissued {
                let mut p = policy(&["db"], false);
                p.issued = Some(at(issued));
                gate.handle(Input::PolicyApplied(Box::new(p)));
            }
            // A reading `after_ms` after the last tick, `off` seconds from where the clock should be.
            let now_ms = tick_ms + after_ms;
            let reading = at(clock_secs + i64::try_from(after_ms / 1_000).unwrap() + off);
            let stamp = gate.judged().at(reading, std::time::Duration::from_millis(now_ms));
            prop_assert!(stamp >= gate.now(), "{stamp} before the gate's {}", gate.now());
            match believed {
                None => prop_assert_eq!(stamp, gate.now()),
                Some((clock, then_ms)) => {
                    let vouched = at(clock + i64::try_from((now_ms - then_ms) / 1_000).unwrap() + 1).max(gate.now());
                    prop_assert!(stamp <= vouched, "{stamp} past the vouched-for {vouched}");
                    // In bounds: the reading itself (a true clock is never changed); out of
                    // bounds: the bound it crossed.
                    prop_assert_eq!(stamp, reading.clamp(gate.now(), vouched));
                }
            }
        }
    }
}
