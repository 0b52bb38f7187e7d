//! The daemon loop against a fake link and a clock on tokio's (paused) timeline: schedule
//! decisions in virtual time, no real waits.

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use tokio::sync::mpsc;
use vault_core::keys::SigningKey;
use vault_core::link::gate::Gate;
use vault_core::policy::{Close, Network, Pusher, Window};
use vault_core::units::{ByteSize, Duration};

use super::*;
use crate::sessions_api::{SessionServer, Stop};

const BASE: i64 = 1_800_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix(secs).unwrap()
}

/// Vault time = BASE + seconds elapsed on tokio's clock since the test started (plus `jump`'s
/// seconds once that much has elapsed: an RTC set ahead while the vault runs).
#[derive(Clone, Copy)]
struct TestClock {
    start: Instant,
    jump: Option<(StdDuration, i64)>,
}

impl TimeProvider for TestClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.start.elapsed();
        let jumped = self.jump.filter(|(from, _)| elapsed >= *from).map_or(0, |(_, by)| by);
        at(BASE + elapsed.as_secs() as i64 + jumped)
    }
}

impl VaultClock for TestClock {
    fn instant_of(&self, t: Timestamp) -> Instant {
        self.start + StdDuration::from_secs((t.unix() - BASE).max(0) as u64)
    }
}

#[derive(Clone, Default)]
struct FakeLink {
    calls: Arc<Mutex<Vec<(&'static str, Instant)>>>,
    /// What the next surveys find (from the given offset on tokio's clock since the start).
    raised_after: Arc<Mutex<Option<(Instant, Seen)>>>,
}

fn confirmation(up: bool) -> LinkConfirmation {
    LinkConfirmation {
        nic: "vault0".into(),
        ifindex: 2,
        admin_up: up,
        carrier: up,
        operstate: if up { "up" } else { "down" }.into(),
        addresses: if up { vec!["192.0.2.10".into()] } else { vec![] },
        took_ms: 0,
    }
}

impl LinkOps for FakeLink {
    async fn bring_up(&mut self, _: &NicSelector, _: IpAddr, _: u8) -> Result<LinkConfirmation> {
        self.calls.lock().unwrap().push(("up", Instant::now()));
        Ok(confirmation(true))
    }
    async fn take_down(&mut self) -> Result<LinkConfirmation> {
        self.calls.lock().unwrap().push(("down", Instant::now()));
        Ok(confirmation(false))
    }
    async fn recheck(&mut self, seen: &Seen) -> Recheck {
        Recheck::Vault(seen.sighting.clone())
    }
    async fn survey(&mut self) -> Result<Vec<Seen>> {
        let raised = self.raised_after.lock().unwrap().clone();
        Ok(raised.filter(|(from, _)| Instant::now() >= *from).map(|(_, seen)| seen).into_iter().collect())
    }
}

fn pusher_key() -> vault_core::keys::PublicKey {
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    SigningKey::from_pkcs8(der.as_ref()).unwrap().public_key()
}

fn policy(from: i64, until: i64, early: bool) -> Policy {
    Policy {
        vault_id: "vault-01".into(),
        version: 1,
        issued: Some(at(BASE - 60)),
        expires: at(BASE + 86_400),
        network: Network { nic: NicSelector::Name("vault0".into()), address: "192.0.2.10".parse().unwrap(), prefix_len: 24, port: 7400 },
        windows: vec![Window::Once { from: at(BASE + from), until: at(BASE + until) }],
        pushers: vec![Pusher { name: "db".into(), key: pusher_key(), quota: ByteSize::from_bytes(1 << 20), retain: Duration::from_secs(86_400).unwrap(), datasets: vec![] }],
        close: Close { early, grace: Duration::from_secs(2).unwrap() },
        retention: Default::default(),
        scrub: Default::default(),
        drill: Default::default(),
        rotation: None,
        signals: Default::default(),
    }
}

struct Harness {
    driver: Driver<FakeLink, TestClock>,
    calls: Arc<Mutex<Vec<(&'static str, Instant)>>>,
    reports: mpsc::Sender<SessionReport>,
    inputs: Inputs,
    start: Instant,
    _guard_tx: mpsc::Sender<crate::egress_guard::GuardReport>,
    seen_tx: mpsc::Sender<WatchReport>,
}

/// The tests play the sessions themselves (they send the reports); this server only holds
/// the listener until the driver says stop.
fn holding_server() -> SessionServer {
    Arc::new(|mut ctx| Box::pin(async move { while ctx.stop.changed().await.is_ok() && *ctx.stop.borrow() == Stop::Running {} }))
}

fn harness(floor: Timestamp) -> Harness {
    let link = FakeLink::default();
    let calls = link.calls.clone();
    let start = Instant::now();
    let (reports, sessions) = mpsc::channel(8);
    let (guard_tx, guard) = mpsc::channel(8);
    let (seen_tx, watchdog) = mpsc::channel(8);
    let mut driver = Driver::new(Gate::new(floor), link, TestClock { start, jump: None }, holding_server(), reports.clone());
    driver.bind_override = Some("127.0.0.1:0".parse().unwrap());
    driver.events.keep = true;
    Harness { driver, calls, reports, inputs: Inputs { sessions, watchdog, guard, usb: mpsc::channel(1).1, state: mpsc::channel(1).1 }, start, _guard_tx: guard_tx, seen_tx }
}

impl Harness {
    /// Runs the driver on its inputs for `duration` of tokio's (paused) time.
    async fn run_for(&mut self, duration: StdDuration) {
        let inputs = std::mem::replace(&mut self.inputs, Inputs::none());
        self.driver
            .run(inputs, async move {
                tokio::time::sleep(duration).await;
                "test over".to_string()
            })
            .await;
    }
}

fn calls_at(h: &Harness) -> Vec<(&'static str, u128)> {
    h.calls.lock().unwrap().iter().map(|(what, when)| (*what, (*when - h.start).as_millis())).collect()
}

fn kept(h: &Harness) -> Vec<serde_json::Value> {
    h.driver.events.kept.iter().map(|(_, l)| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn the_link_follows_the_window_to_the_millisecond_in_virtual_time() {
    let mut h = harness(at(BASE));
    h.driver.apply_policy(policy(3, 6, false)).await;
    h.run_for(StdDuration::from_secs(10)).await;
    let calls = calls_at(&h);
    // Up when the window opens, down when it ends (the loop wakes 1 ms after a deadline),
    // then down again at shutdown.
    assert_eq!(calls.iter().map(|c| c.0).collect::<Vec<_>>(), ["up", "down", "down"], "{calls:?}");
    assert!((3000..=3002).contains(&calls[0].1), "{calls:?}");
    assert!((6000..=6002).contains(&calls[1].1), "{calls:?}");
    let states: Vec<String> = kept(&h).iter().filter(|e| e["event"] == "state_changed").map(|e| format!("{}>{}", e["from"], e["to"]).replace('"', "")).collect();
    assert_eq!(states, ["sealed>opening", "opening>open", "open>closing", "closing>sealed"]);
}

#[tokio::test(start_paused = true)]
async fn early_close_downs_the_link_at_the_commit_instant() {
    let mut h = harness(at(BASE));
    h.driver.apply_policy(policy(1, 60, true)).await;
    let reports = h.reports.clone();
    tokio::spawn(async move {
        tokio::time::sleep(StdDuration::from_millis(4_500)).await;
        let peer = "192.0.2.1:50000".parse().unwrap();
        reports.send(SessionReport::Started { peer }).await.unwrap();
        reports.send(SessionReport::Committed { pusher: "db".into(), dataset: "pgdump".into() }).await.unwrap();
    });
    h.run_for(StdDuration::from_secs(8)).await;
    let calls = calls_at(&h);
    assert_eq!(calls[1].0, "down");
    assert_eq!(calls[1].1, 4_500, "link down at the commit instant, not at the window end: {calls:?}");
    let events = kept(&h);
    let reason = events.iter().find(|e| e["event"] == "state_changed" && e["to"] == "closing").unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("every expected commit arrived (db)"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_floor_ahead_of_the_clock_keeps_it_sealed_through_the_window() {
    let mut h = harness(at(BASE + 86_400));
    h.driver.apply_policy(policy(2, 5, false)).await;
    h.run_for(StdDuration::from_secs(10)).await;
    assert!(!calls_at(&h).iter().any(|c| c.0 == "up"));
    let alarm = kept(&h).into_iter().find(|e| e["event"] == "alarm").expect("an alarm");
    assert_eq!(alarm["rule"], "clock_behind_floor");
}

/// A session server that reads its window's clock when the window opens and again `later`,
/// then holds until stopped: what it read.
fn read_the_clock_twice(h: &mut Harness, later: StdDuration) -> Arc<Mutex<Vec<Timestamp>>> {
    let read: Arc<Mutex<Vec<Timestamp>>> = Arc::default();
    let seen = read.clone();
    h.driver.server = Arc::new(move |mut ctx| {
        let seen = seen.clone();
        Box::pin(async move {
            seen.lock().unwrap().push(ctx.clock.now());
            tokio::time::sleep(later).await;
            seen.lock().unwrap().push(ctx.clock.now());
            while ctx.stop.changed().await.is_ok() && *ctx.stop.borrow() == Stop::Running {}
        })
    });
    read
}

/// A window's sessions read the daemon's clock (judged as the gate judges it), not the host's:
/// receipts and seal steps carry the time the gate decides by.
#[tokio::test(start_paused = true)]
async fn sessions_read_the_daemons_clock() {
    let mut h = harness(at(BASE));
    let read = read_the_clock_twice(&mut h, StdDuration::from_secs(2));
    h.driver.apply_policy(policy(3, 60, false)).await;
    h.run_for(StdDuration::from_secs(10)).await;
    assert_eq!(*read.lock().unwrap(), [at(BASE + 3), at(BASE + 5)], "the test clock's time, on tokio's paused timeline");
}

/// An RTC set 10 000 s ahead between two ticks: the next tick judges it (an alarm, the window
/// closes). Until then a session reading the clock gets no more than the monotonic clock
/// vouches for, no line on the console carries the jumped time, and no line after the session's
/// reading goes back before it (the fault drops the gate to its floor, a second earlier).
#[tokio::test(start_paused = true)]
async fn a_clock_jump_between_ticks_is_written_down_nowhere() {
    let mut h = harness(at(BASE));
    h.driver.stamps.clock.jump = Some((StdDuration::from_millis(4_500), 10_000));
    // 4.6 s: past the jump, before the tick that judges it.
    let read = read_the_clock_twice(&mut h, StdDuration::from_millis(1_600));
    h.driver.apply_policy(policy(3, 60, false)).await;
    h.run_for(StdDuration::from_secs(8)).await;
    // Believed at the 4 s tick: at most a second past it.
    assert_eq!(*read.lock().unwrap(), [at(BASE + 3), at(BASE + 5)]);
    let lines = kept(&h);
    assert!(lines.iter().any(|l| l["event"] == "alarm" && l["rule"] == "clock_jumped"), "{lines:?}");
    let times: Vec<Timestamp> = lines.iter().map(|l| Timestamp::parse(l["time"].as_str().unwrap()).unwrap()).collect();
    assert!(times.iter().all(|t| *t <= at(BASE + 8)), "stamped with the jumped clock: {lines:?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "a line stamped before the one above it: {lines:?}");
    assert!(times.last() >= Some(&at(BASE + 5)), "the lines after the fault went back before the session's reading: {lines:?}");
}

/// Not a timed assertion: prints how long the loop takes from a commit report to asking the
/// link down, on the real clock (the link itself is measured by the host test).
#[tokio::test]
async fn measure_commit_to_link_down_dispatch() {
    let mut h = harness(at(BASE));
    h.driver.apply_policy(policy(0, 60, true)).await;
    assert_eq!(h.driver.gate.phase(), vault_core::link::gate::Phase::Open);
    let started = Instant::now();
    h.driver.feed(vault_core::link::gate::Input::SessionStarted).await;
    h.driver.feed(vault_core::link::gate::Input::Committed { pusher: "db".into(), dataset: "pgdump".into() }).await;
    let down = h.calls.lock().unwrap().iter().rev().find(|c| c.0 == "down").expect("link down").1;
    println!("MEASURE state machine: last commit -> link down requested: {:?}", down - started);
}

/// Issue 13, item 5: the state writer's fsyncs are off the loop. Here every state write takes
/// 3 s (a disk busy with a push): the floor is handed over at the first tick, and the link
/// still comes up and goes down on the window's edges, in real time.
#[tokio::test]
async fn a_slow_state_write_does_not_hold_up_the_link() {
    // A floor two minutes behind the clock: the first tick persists it.
    let mut h = harness(at(BASE - 120));
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<crate::daemon::StateJob>();
    let (done_tx, done_rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        for job in jobs_rx {
            std::thread::sleep(StdDuration::from_secs(3));
            if let crate::daemon::StateJob::Floor(floor) = job {
                let _ = done_tx.blocking_send(crate::daemon::StateDone::Floor { floor, result: Ok(()) });
            }
        }
    });
    h.driver.state = Some(jobs_tx);
    h.driver.apply_policy(policy(1, 2, false)).await;
    let mut inputs = std::mem::replace(&mut h.inputs, Inputs::none());
    inputs.state = done_rx;
    h.driver
        .run(inputs, async {
            tokio::time::sleep(StdDuration::from_millis(3_800)).await;
            "test over".to_string()
        })
        .await;
    let calls = calls_at(&h);
    assert_eq!(calls.iter().map(|c| c.0).take(2).collect::<Vec<_>>(), ["up", "down"], "{calls:?}");
    assert!((1000..1900).contains(&calls[0].1) && (2000..2900).contains(&calls[1].1), "the link waited for the state writer: {calls:?}");
    let persisted = kept(&h).into_iter().find(|e| e["event"] == "time_floor_persisted").expect("the writer's answer came back");
    assert_eq!(persisted["floor"], at(BASE).to_string());
}

/// Issue 14, item 6: a link raised without the watchdog hearing of it (its events lost) is
/// found by the next tick's survey: alarm, and down again within a second.
#[tokio::test(start_paused = true)]
async fn a_link_raised_unseen_is_found_by_the_next_ticks_survey() {
    let mut h = harness(at(BASE));
    h.driver.apply_policy(policy(100, 200, false)).await;
    *h.driver.link.raised_after.lock().unwrap() = Some((h.start + StdDuration::from_millis(2_500), Seen { ifindex: 2, sighting: Sighting::LinkUp }));
    h.run_for(StdDuration::from_millis(3_600)).await;
    let alarm = kept(&h).into_iter().find(|e| e["event"] == "alarm").expect("an alarm");
    assert_eq!(alarm["rule"], "watchdog_link_up");
    let downs: Vec<u128> = calls_at(&h).into_iter().filter(|c| c.0 == "down").map(|c| c.1).collect();
    assert!(downs.first().is_some_and(|at| (2_500..=3_500).contains(at)), "taken down within a tick of being raised: {downs:?}");
}

/// Issue 14, item 6: an overrun (lost events) is an alarm and an immediate survey; a stopped
/// watchdog is an alarm that seals the vault: the window that was due never opens.
#[tokio::test(start_paused = true)]
async fn an_overrun_resyncs_and_a_stopped_watchdog_seals() {
    let mut h = harness(at(BASE));
    h.driver.apply_policy(policy(3, 6, false)).await;
    let seen_tx = h.seen_tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(StdDuration::from_millis(1_200)).await;
        seen_tx.send(WatchReport::Overrun).await.unwrap();
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        seen_tx.send(WatchReport::Stopped("the netlink event stream ended".into())).await.unwrap();
    });
    h.run_for(StdDuration::from_secs(8)).await;
    let rules: Vec<String> = kept(&h).into_iter().filter(|e| e["event"] == "alarm").map(|e| e["rule"].as_str().unwrap().to_string()).collect();
    assert_eq!(rules, ["watchdog_overrun", "watchdog_stopped"]);
    assert!(!calls_at(&h).iter().any(|c| c.0 == "up"), "the window opened without a watchdog: {:?}", calls_at(&h));
}

const DAY: i64 = 86_400;

/// A store in a temporary directory (flags lifted before it is removed), holding a nightly
/// snapshot for each of `days` (relative to BASE) kept `retain_days`.
struct NightlyStore {
    dir: tempfile::TempDir,
    store: Arc<vault_store::Store>,
    /// The key the nights' receipts are signed with: the vault's, for drills.
    pkcs8: Vec<u8>,
}

impl NightlyStore {
    fn new(days: std::ops::Range<i64>, retain_days: i64) -> NightlyStore {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = vault_store::Store::open(&dir.path().join("store")).unwrap();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref().to_vec();
        let key = SigningKey::from_pkcs8(&pkcs8).unwrap();
        for day in days {
            test_net::seal_nightly(&store, &key, ("db", "pg"), BASE + day * DAY, BASE + (day + retain_days) * DAY);
        }
        // Packs written a month before the test clock's BASE (the real date may be anything), so
        // garbage collection's day of grace is past for them.
        let packs = dir.path().join("store/packs");
        let run = |args: &[&str]| assert!(std::process::Command::new(args[0]).args(&args[1..]).arg(&packs).status().unwrap().success(), "{args:?}");
        run(&["chattr", "-R", "-i"]);
        let month_before = format!("@{}", BASE - 30 * DAY);
        for entry in std::fs::read_dir(&packs).unwrap().flatten() {
            assert!(std::process::Command::new("touch").args(["-m", "-d", &month_before]).arg(entry.path()).status().unwrap().success());
        }
        run(&["chattr", "-R", "+i"]);
        std::process::Command::new("chattr").arg("-i").arg(&packs).status().unwrap();
        NightlyStore { dir, store: Arc::new(store), pkcs8 }
    }

    /// The vault identity the nights were sealed under.
    fn identity(&self) -> Arc<crate::identity::VaultIdentity> {
        let key = SigningKey::from_pkcs8(&self.pkcs8).unwrap();
        Arc::new(crate::identity::VaultIdentity { public: key.public_key(), key, pkcs8: self.pkcs8.clone() })
    }

    fn left(&self) -> usize {
        self.store.sealed_snapshots().unwrap().0.len()
    }
}

impl Drop for NightlyStore {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").args(["-R", "-i"]).arg(self.dir.path()).output();
    }
}

fn event_index(events: &[serde_json::Value], matches: impl Fn(&serde_json::Value) -> bool) -> Option<usize> {
    events.iter().position(matches)
}

#[tokio::test(start_paused = true)]
async fn snapshots_past_their_retention_expire_while_sealed_and_the_newest_stay() {
    // 20 nights before BASE, each kept 5 days: at BASE + a moment, nights -20..=-5 are past.
    let nightly = NightlyStore::new(-20..0, 5);
    let mut h = harness(at(BASE));
    h.driver.store = Some(nightly.store.clone());
    h.driver.identity = Some(nightly.identity());
    h.driver.apply_policy(policy(600, 660, false)).await;
    h.run_for(StdDuration::from_secs(5)).await;
    let events = kept(&h);
    let expired: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "snapshot_expired").collect();
    assert_eq!(expired.len(), 16, "{events:#?}");
    assert_eq!(expired[0]["snapshot"], format!("pg-night-{}", BASE - 20 * DAY), "oldest first");
    // The first run, at BASE: nights -20..=-6. Night -5 is due at exactly BASE, so the next run
    // is then, and it goes a second later; after that nothing is due for a day.
    let runs: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "expiry_ran").collect();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!((runs[0]["expired"].as_u64(), runs[0]["next_due"].as_str()), (Some(15), Some(at(BASE).to_string().as_str())));
    assert_eq!((runs[1]["expired"].as_u64(), runs[1]["next_due"].as_str()), (Some(1), Some(at(BASE + DAY).to_string().as_str())));
    assert_eq!(runs[1]["kept_as_newest"].as_u64(), Some(0));
    assert_eq!(nightly.left(), 4);
    // Each run then collects: the packs only expired nights needed go (night -20's also holds
    // the chunk every night shares, so it stays).
    let removed: u64 = events.iter().filter(|e| e["event"] == "garbage_collected").map(|e| e["packs_removed"].as_u64().unwrap()).sum();
    assert_eq!(removed, 15, "{events:#?}");
    // No scrub had ever finished: the first run scrubs, the second (the same day) does not.
    let scrubs: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "scrub_finished").collect();
    assert_eq!(scrubs.len(), 1, "{scrubs:#?}");
    assert_eq!((scrubs[0]["packs"].as_u64(), scrubs[0]["found"].as_array().map(Vec::len)), (Some(6), Some(0)), "{}", scrubs[0]);
    let status = events.iter().rev().find(|e| e["event"] == "status").unwrap();
    assert_eq!(status["last_scrub"], at(BASE).to_string(), "{status}");
    assert_eq!(status["next_scrub"], at(BASE + 30 * DAY).to_string(), "{status}");
    assert!(status["last_scrub_result"].as_str().unwrap().contains("read back whole"), "{status}");
    // Likewise the first restore drill: the newest night and two older ones of what expiry left,
    // rebuilt whole; the status line says when and what, and when the next is due.
    let drills: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "drill_finished").collect();
    assert_eq!(drills.len(), 1, "{drills:#?}");
    assert_eq!((drills[0]["snapshots"].as_array().map(Vec::len), drills[0]["errors"].as_u64()), (Some(3), Some(0)), "{}", drills[0]);
    assert!(drills[0]["snapshots"].as_array().unwrap().contains(&serde_json::json!(format!("pg-night-{}", BASE - DAY))), "the newest: {}", drills[0]);
    assert_eq!(status["last_drill"], at(BASE).to_string(), "{status}");
    assert_eq!(status["next_drill"], at(BASE + 90 * DAY).to_string(), "{status}");
    assert!(status["last_drill_result"].as_str().unwrap().contains("no errors"), "{status}");
    // Any alarm but the capacity ones: this store sits on the host's disk, whose fill they report.
    let alarmed = |e: &&serde_json::Value| e["event"] == "alarm" && !e["rule"].as_str().is_some_and(is_capacity_alarm);
    assert!(!events.iter().any(|e| alarmed(&e)), "{events:#?}");
}

#[tokio::test(start_paused = true)]
async fn nothing_expires_while_the_window_is_open_only_once_the_link_is_confirmed_down() {
    let nightly = NightlyStore::new(-10..0, 1);
    let mut h = harness(at(BASE));
    h.driver.store = Some(nightly.store.clone());
    // The window is open from the first tick to 4 s.
    h.driver.apply_policy(policy(0, 4, false)).await;
    h.run_for(StdDuration::from_secs(8)).await;
    let events = kept(&h);
    let sealed_again = event_index(&events, |e| e["event"] == "state_changed" && e["to"] == "sealed").expect("the window closed");
    let first_expiry = event_index(&events, |e| e["event"] == "snapshot_expired").expect("expiry ran once sealed");
    assert!(first_expiry > sealed_again, "a snapshot expired before the link was confirmed down: {events:#?}");
    assert_eq!(nightly.left(), 3, "keep_last 3");
    let ran = events.iter().find(|e| e["event"] == "expiry_ran").unwrap();
    assert_eq!((ran["expired"].as_u64(), ran["kept_as_newest"].as_u64()), (Some(7), Some(3)), "{ran}");
}

#[tokio::test(start_paused = true)]
async fn nothing_expires_while_a_clock_fault_is_latched_or_without_a_policy() {
    // The floor is ten days ahead of the clock: a clock fault, latched.
    let nightly = NightlyStore::new(-30..0, 1);
    let mut h = harness(at(BASE + 10 * DAY));
    h.driver.store = Some(nightly.store.clone());
    h.driver.apply_policy(policy(600, 660, false)).await;
    h.run_for(StdDuration::from_secs(5)).await;
    assert!(kept(&h).iter().any(|e| e["event"] == "alarm"), "the clock fault is raised");
    assert!(!kept(&h).iter().any(|e| e["event"] == "snapshot_expired" || e["event"] == "expiry_ran"));
    assert_eq!(nightly.left(), 30);
    // No policy: nothing decided, nothing deleted.
    let mut h = harness(at(BASE));
    h.driver.store = Some(nightly.store.clone());
    h.driver.tick().await;
    h.run_for(StdDuration::from_secs(5)).await;
    assert!(!kept(&h).iter().any(|e| e["event"] == "expiry_ran"));
    assert_eq!(nightly.left(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_drill_a_week_overdue_is_an_alarm_said_once_until_a_drill_finishes() {
    let mut h = harness(at(BASE));
    h.driver.apply_policy(policy(600, 660, false)).await;
    let overdue = |h: &Harness| kept(h).iter().filter(|e| e["rule"] == "drill_overdue").count();
    h.driver.set_last_checks(None, Some((at(BASE - 96 * DAY), "3 snapshots: no errors".into())), None);
    h.driver.on_lifecycle_done(crate::lifecycle::LifecycleReport::default());
    assert_eq!(overdue(&h), 0, "six days past due is not yet overdue");
    h.driver.set_last_checks(None, Some((at(BASE - 98 * DAY), "3 snapshots: no errors".into())), None);
    h.driver.on_lifecycle_done(crate::lifecycle::LifecycleReport::default());
    h.driver.on_lifecycle_done(crate::lifecycle::LifecycleReport::default());
    assert_eq!(overdue(&h), 1);
    let alarm = kept(&h).into_iter().find(|e| e["rule"] == "drill_overdue").unwrap();
    assert!(alarm["detail"].as_str().unwrap().contains(&at(BASE - 98 * DAY).to_string()), "{alarm}");
    // A drill finishes: the alarm may be said again the next time one is overdue.
    h.driver.on_lifecycle_done(crate::lifecycle::LifecycleReport { drilled: Some((at(BASE), "no errors".into())), ..Default::default() });
    h.driver.set_last_checks(None, Some((at(BASE - 100 * DAY), "old".into())), None);
    h.driver.on_lifecycle_done(crate::lifecycle::LifecycleReport::default());
    assert_eq!(overdue(&h), 2);
}

#[tokio::test(start_paused = true)]
async fn capacity_is_said_once_a_day_and_alarms_only_when_a_level_is_crossed() {
    use vault_core::lifecycle::capacity::Level;
    let mut h = harness(at(BASE));
    let report = |used_percent: u64, level: Level| crate::lifecycle::LifecycleReport {
        events: vec![],
        next_due: None,
        capacity: Some(Event::Capacity { used_bytes: used_percent, free_bytes: 100 - used_percent, reserve_bytes: 0, used_percent, ingest_30d_bytes: 30, days_until_full: Some(3), snapshots: 1 }),
        level: Some(level),
        ..Default::default()
    };
    let said = |h: &Harness, what: &str| kept(h).iter().filter(|e| e["event"] == what || e["rule"] == what).count();
    h.driver.on_lifecycle_done(report(50, Level::Fine));
    assert_eq!((said(&h, "capacity"), said(&h, "capacity_warning")), (1, 0));
    h.driver.on_lifecycle_done(report(85, Level::Warn));
    assert_eq!((said(&h, "capacity"), said(&h, "capacity_warning")), (1, 1), "said once a day; the warning when 80 % is crossed");
    let warning = kept(&h).into_iter().find(|e| e["rule"] == "capacity_warning").unwrap();
    assert!(warning["detail"].as_str().unwrap().contains("85 % used (at least 80 %), 15 bytes free, full in about 3 days"), "{warning}");
    h.driver.on_lifecycle_done(report(86, Level::Warn));
    assert_eq!(said(&h, "capacity_warning"), 1, "no second alarm at the same level");
    h.driver.on_lifecycle_done(report(95, Level::Critical));
    assert_eq!(said(&h, "capacity_critical"), 1);
    h.driver.on_lifecycle_done(report(40, Level::Fine));
    h.driver.on_lifecycle_done(report(85, Level::Warn));
    assert_eq!(said(&h, "capacity_warning"), 2, "crossed again after it fell back");
}

/// A policy lowered `keep_last` (3 now, 10 before): until the cooling-off ends the vault keeps
/// to 10, so a coerced quorum's lower value takes nothing at once; then 3 counts.
#[tokio::test(start_paused = true)]
async fn a_lowered_keep_last_waits_out_its_cooling_off() {
    let nightly = NightlyStore::new(-20..0, 5);
    let mut h = harness(at(BASE));
    h.driver.store = Some(nightly.store.clone());
    h.driver.keep_last_floor = Some((10, at(BASE + 2 * DAY)));
    h.driver.apply_policy(policy(600, 660, false)).await;
    h.run_for(StdDuration::from_secs(5)).await;
    let expired = kept(&h).iter().filter(|e| e["event"] == "snapshot_expired").count();
    assert_eq!((expired, nightly.left()), (10, 10), "the newest 10 stay while the floor holds");
    h.driver.keep_last_floor = Some((10, at(BASE + 1)));
    h.run_for(StdDuration::from_secs(2 * 3600)).await;
    assert_eq!(nightly.left(), 4, "then the policy's 3, and night -4 whose retention runs a day longer");
}

#[tokio::test(start_paused = true)]
async fn a_hold_keeps_what_expiry_would_take_and_a_purge_deletes_what_it_names_once_its_cooling_off_is_over() {
    use vault_core::policy::orders::{OrderState, PendingPurge};
    let nightly = NightlyStore::new(-10..0, 1);
    let night = |d: i64| format!("pg-night-{}", BASE + d * DAY);
    let mut h = harness(at(BASE));
    h.driver.store = Some(nightly.store.clone());
    h.driver.orders = OrderState {
        held_snapshots: [night(-9)].into(),
        pending_purges: vec![PendingPurge {
            id: "a".repeat(64),
            // -1 is younger than min_retain, -9 held: only -2 goes.
            snapshots: vec![night(-1), night(-2), night(-9)],
            datasets: vec![],
            reason: "ticket 4711".into(),
            signers: vec!["alice".into(), "bob".into()],
            accepted_at: at(BASE - DAY / 2).to_string(),
            executes_at: at(BASE + 3).to_string(),
            expires: at(BASE + DAY).to_string(),
            min_retain: Some("36h".into()),
        }],
        ..OrderState::default()
    };
    h.driver.apply_policy(policy(600, 660, false)).await;
    h.run_for(StdDuration::from_secs(6)).await;
    let events = kept(&h);
    let expired: Vec<String> = events.iter().filter(|e| e["event"] == "snapshot_expired").map(|e| e["snapshot"].as_str().unwrap().to_string()).collect();
    assert_eq!(expired, [-10, -8, -7, -6, -5, -4].map(night).to_vec(), "the held night and the newest three stay");
    let purged = events.iter().find(|e| e["event"] == "purge_executed").expect("the purge ran once its cooling-off was over");
    assert!(purged["time"].as_str().unwrap() >= at(BASE + 3).to_string().as_str(), "{purged}");
    assert_eq!(purged["expired"], serde_json::json!([night(-2)]), "{purged}");
    assert_eq!(purged["kept_held"], serde_json::json!([night(-9)]), "a hold stops a purge too: {purged}");
    let kept: Vec<&str> = purged["kept"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(kept.len(), 2, "{purged}");
    assert_eq!(kept[0], format!("{}: held", night(-9)), "{purged}");
    assert!(kept[1].starts_with(&format!("{}: younger than the root's min_retain", night(-1))), "{purged}");
    assert_eq!(events.iter().filter(|e| e["event"] == "purge_executed").count(), 1);
    assert!(h.driver.orders.pending_purges.is_empty());
    assert_eq!(nightly.left(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_purge_that_lapsed_is_said_once_and_deletes_nothing() {
    use vault_core::policy::orders::{OrderState, PendingPurge};
    let nightly = NightlyStore::new(-2..0, 30);
    let mut h = harness(at(BASE));
    h.driver.store = Some(nightly.store.clone());
    h.driver.orders = OrderState {
        pending_purges: vec![PendingPurge {
            id: "b".repeat(64),
            snapshots: vec![format!("pg-night-{}", BASE - DAY)],
            datasets: vec![],
            reason: "too late".into(),
            signers: vec!["alice".into(), "bob".into()],
            accepted_at: at(BASE - 10 * DAY).to_string(),
            executes_at: at(BASE - 7 * DAY).to_string(),
            expires: at(BASE - DAY).to_string(),
            min_retain: None,
        }],
        ..OrderState::default()
    };
    h.driver.apply_policy(policy(600, 660, false)).await;
    h.run_for(StdDuration::from_secs(5)).await;
    let events = kept(&h);
    assert_eq!(events.iter().filter(|e| e["event"] == "purge_lapsed").count(), 1, "{events:#?}");
    assert!(!events.iter().any(|e| e["event"] == "purge_executed"));
    assert_eq!(nightly.left(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_rotation_not_written_for_longer_than_its_cadence_and_a_day_is_an_alarm_said_once() {
    let mut h = harness(at(BASE));
    let doc = vault_core::export::rotation::RotationDoc {
        media: vec!["0123456789abcdef0123456789abcdef".into()],
        every: "1d".into(),
        recipients: vec!["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into()],
        datasets: vec!["db/pg".into()],
        newest: None,
        keep: None,
        verify_share: None,
    };
    let rotation = vault_core::export::rotation::Rotation::from_doc(&doc, Duration::from_secs(DAY).unwrap()).unwrap();
    h.driver.apply_policy(Policy { rotation: Some(rotation), ..policy(600, 660, false) }).await;
    let overdue = |h: &Harness| kept(h).iter().filter(|e| e["rule"] == "rotation_overdue").count();
    h.driver.set_last_checks(None, Some((at(BASE), "fine".into())), Some(at(BASE - DAY - DAY / 2)));
    h.driver.on_lifecycle_done(crate::lifecycle::LifecycleReport::default());
    assert_eq!(overdue(&h), 0, "a day and a half since the last: within the day's grace");
    h.driver.set_last_checks(None, Some((at(BASE), "fine".into())), Some(at(BASE - 2 * DAY - 60)));
    h.driver.on_lifecycle_done(crate::lifecycle::LifecycleReport::default());
    h.driver.on_lifecycle_done(crate::lifecycle::LifecycleReport::default());
    assert_eq!(overdue(&h), 1, "said once");
    let alarm = kept(&h).into_iter().find(|e| e["rule"] == "rotation_overdue").unwrap();
    assert!(alarm["detail"].as_str().unwrap().contains("insert the next medium of the set"), "{alarm}");

    // A medium of the set inserted without a store to export from: said, nothing done.
    let label = vault_core::export::medium::MediumLabel::new("0123456789abcdef0123456789abcdef", "weekly-a").unwrap().to_bytes();
    h.driver.on_stick(crate::usb::UsbReport::Medium { device: "/dev/sdb1".into(), label: label.clone() }).await;
    let ignored = kept(&h).into_iter().find(|e| e["event"] == "medium_ignored").unwrap();
    assert!(ignored["reason"].as_str().unwrap().contains("no store, key or policy to export from"), "{ignored}");
    // One nobody asked for, and one that is not a medium at all.
    let other = vault_core::export::medium::MediumLabel::new("ffffffffffffffffffffffffffffffff", "spare").unwrap().to_bytes();
    h.driver.on_stick(crate::usb::UsbReport::Medium { device: "/dev/sdc1".into(), label: other }).await;
    h.driver.on_stick(crate::usb::UsbReport::Medium { device: "/dev/sdd1".into(), label: b"{\"format\":\"x\"}".to_vec() }).await;
    let reasons: Vec<String> = kept(&h).into_iter().filter(|e| e["event"] == "medium_ignored").map(|e| e["reason"].as_str().unwrap().to_string()).collect();
    assert!(reasons[1].contains("no export order names it, and it is not in the policy's rotation"), "{reasons:?}");
    assert!(reasons[2].contains("medium: malformed medium label: missing field `medium_id`"), "{reasons:?}");
}
