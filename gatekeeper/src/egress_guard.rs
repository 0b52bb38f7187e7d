//! The egress guard: a packet socket on the vault NIC that sees every frame the NIC sends
//! ([`OutgoingFrames`]), in order, judged by a [`vault_core::egress::EgressJudge`]. While the gate may
//! answer (opening, open, closing) ARP replies, listener TCP and unicast ARP probes for the
//! peers that TCP went to pass; at any other time every frame the NIC sends is unsolicited,
//! and the judge forgets its peers, so each window starts knowing no one. A violation is
//! reported to the daemon, which closes the window at once; so is a frame the guard could
//! not judge (dropped from its full queue) and a guard that stopped reading.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vault_core::egress::{EgressJudge, EgressRule, Verdict};

use crate::error::{GatekeeperError, Result};
use crate::outgoing_frames::OutgoingFrames;

/// What the guard tells the daemon; each closes the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardReport {
    /// A frame the vault does not owe, described.
    Unsolicited(String),
    /// Frames went by unjudged (how many, why).
    Unjudged(String),
    /// The guard cannot read any more; it ends after saying so.
    Stopped(String),
}

/// Shared switches between the daemon and the guard thread.
#[derive(Debug, Default)]
pub struct GuardControl {
    /// The gate is in a phase where replies are owed.
    pub may_reply: AtomicBool,
    /// Bumped by every bring-up: a new window, whose judge starts with no peers even when
    /// `may_reply` never went false in between.
    pub window: AtomicU64,
    pub stop: AtomicBool,
}

/// How long the guard may be unable to read before it counts as blind.
const BLIND_AFTER: Duration = Duration::from_secs(1);

/// The guard's queue: room for thousands of the small frames a window's sessions send (ACKs,
/// receipts) while the guard thread waits for the CPU.
const QUEUE_BYTES: usize = 4 << 20;

/// How often the guard wakes with nothing to read, to see `stop` and count drops.
const READ_TIMEOUT: Duration = Duration::from_millis(20);

/// Drops are counted at least this often while frames keep coming.
const DROPS_EVERY: u32 = 64;

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted)
}

/// Starts the guard thread on `nic`. Frames are read with a short timeout so `stop` is seen.
pub fn start(nic_index: u32, rule: EgressRule, control: Arc<GuardControl>, to_daemon: mpsc::Sender<GuardReport>) -> Result<()> {
    let mut frames = OutgoingFrames::open(nic_index, QUEUE_BYTES, READ_TIMEOUT).map_err(|source| GatekeeperError::Io { what: "egress guard packet socket", source })?;
    std::thread::Builder::new()
        .name("egress-guard".into())
        .spawn(move || {
            let mut judge = EgressJudge::new(rule);
            let mut window = control.window.load(Ordering::SeqCst);
            let mut failing_since: Option<std::time::Instant> = None;
            let mut since_drops_counted = 0u32;
            while !control.stop.load(Ordering::Relaxed) {
                let mut reports = Vec::new();
                let read = frames.read_next().map(|frame| {
                    // Read once the frame is in hand: the peers of a window are forgotten
                    // before any frame is judged once its replies are no longer owed, or once
                    // a new window has started.
                    let may_reply = control.may_reply.load(Ordering::SeqCst);
                    let now = control.window.load(Ordering::SeqCst);
                    if !may_reply || now != window {
                        judge.forget_peers();
                        window = now;
                    }
                    match judge.judge(frame) {
                        Verdict::NotOurs => None,
                        Verdict::Allowed if may_reply => None,
                        Verdict::Allowed => Some("a reply while sealed".to_string()),
                        Verdict::Unsolicited(what) => Some(what),
                    }
                });
                let idle = match read {
                    Ok(verdict) => {
                        failing_since = None;
                        reports.extend(verdict.map(GuardReport::Unsolicited));
                        false
                    }
                    // ENETDOWN: the NIC went down, or the socket was bound while it was down
                    // (every guard started while sealed). The kernel delivers again once the
                    // NIC is up, frames queued before still in order behind the error.
                    Err(e) if is_timeout(&e) || e.raw_os_error() == Some(nix::libc::ENETDOWN) => true,
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() > BLIND_AFTER {
                            reports.push(GuardReport::Stopped(format!("egress guard stopped: {e}")));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        true
                    }
                };
                since_drops_counted += 1;
                if idle || since_drops_counted >= DROPS_EVERY {
                    since_drops_counted = 0;
                    match frames.take_drops() {
                        Ok(0) => {}
                        Ok(dropped) => reports.push(GuardReport::Unjudged(format!("{dropped} frame(s) the NIC sent were dropped from the guard's full queue before it judged them"))),
                        Err(e) => reports.push(GuardReport::Unjudged(format!("egress guard cannot count dropped frames: {e}"))),
                    }
                }
                for report in reports {
                    let stopped = matches!(report, GuardReport::Stopped(_));
                    if to_daemon.blocking_send(report).is_err() || stopped {
                        return;
                    }
                }
            }
        })
        .map_err(|source| GatekeeperError::Io { what: "egress guard thread", source })?;
    Ok(())
}
