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
    /// Set when the guard thread has ended, however (a failure it reported, a panic): the
    /// next bring-up starts a fresh guard instead of trusting this one.
    pub ended: AtomicBool,
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

/// At most this many frames are judged from the queue of a guard being stopped.
const DRAIN_AT_MOST: usize = 65_536;

/// Starts the guard thread on `nic`. Frames are read with a short timeout so `stop` is seen.
pub fn start(nic_index: u32, rule: EgressRule, control: Arc<GuardControl>, to_daemon: mpsc::Sender<GuardReport>) -> Result<()> {
    let frames = OutgoingFrames::open(nic_index, QUEUE_BYTES, READ_TIMEOUT).map_err(|source| GatekeeperError::Io { what: "egress guard packet socket", source })?;
    let window = control.window.load(Ordering::SeqCst);
    let mut guard = Guard { frames, nic_index, judging: Judging { judge: EgressJudge::new(rule), window, control: control.clone() } };
    std::thread::Builder::new()
        .name("egress-guard".into())
        .spawn(move || {
            let _ended = MarkEnded(control);
            guard.run(&to_daemon);
        })
        .map_err(|source| GatekeeperError::Io { what: "egress guard thread", source })?;
    Ok(())
}

/// Sets [`GuardControl::ended`] when the guard thread ends, panics included.
struct MarkEnded(Arc<GuardControl>);

impl Drop for MarkEnded {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::SeqCst);
    }
}

struct Guard {
    frames: OutgoingFrames,
    nic_index: u32,
    judging: Judging,
}

/// The judge and what it needs to know about the gate's phase.
struct Judging {
    judge: EgressJudge,
    window: u64,
    control: Arc<GuardControl>,
}

impl Judging {
    /// What is wrong with a frame the NIC sent, if anything.
    fn verdict(&mut self, frame: &[u8]) -> Option<String> {
        // Read once the frame is in hand: the peers of a window are forgotten before any
        // frame is judged once its replies are no longer owed, or once a new window started.
        let may_reply = self.may_reply_now();
        match self.judge.judge(frame) {
            // The socket holds only what this NIC sends: another source MAC was sent too.
            Verdict::NotOurs => Some(format!("a frame from source MAC {:02x?}, not the vault NIC's", frame.get(6..12).unwrap_or_default())),
            Verdict::Allowed if may_reply => None,
            Verdict::Allowed => Some("a reply while sealed".to_string()),
            Verdict::Unsolicited(what) => Some(what),
        }
    }

    /// Whether replies are owed now; a new window or one whose replies are over forgets its peers.
    fn may_reply_now(&mut self) -> bool {
        let may_reply = self.control.may_reply.load(Ordering::SeqCst);
        let now = self.control.window.load(Ordering::SeqCst);
        if !may_reply || now != self.window {
            self.judge.forget_peers();
            self.window = now;
        }
        may_reply
    }
}

impl Guard {
    fn run(&mut self, to_daemon: &mpsc::Sender<GuardReport>) {
        let mut failing_since: Option<std::time::Instant> = None;
        let mut since_counted = 0u32;
        while !self.judging.control.stop.load(Ordering::Relaxed) {
            let mut reports = Vec::new();
            let idle = match self.frames.read_next() {
                Ok(frame) => {
                    failing_since = None;
                    reports.extend(self.judging.verdict(frame).map(GuardReport::Unsolicited));
                    false
                }
                Err(e) if is_timeout(&e) => true,
                // The NIC went down, or the socket was bound while it was down (every guard
                // started while sealed): the kernel delivers again once it is up, frames
                // queued before still in order behind the error. Unless the NIC is gone:
                // then nothing ever comes again, and silence would look like a quiet NIC.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENETDOWN) => {
                    match self.frames.bound_ifindex() {
                        Ok(index) if index == self.nic_index as i32 => {}
                        Ok(_) => reports.push(GuardReport::Stopped("egress guard stopped: the vault NIC was unregistered under it".into())),
                        Err(e) => reports.push(GuardReport::Stopped(format!("egress guard stopped: {e}"))),
                    }
                    true
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > BLIND_AFTER {
                        reports.push(GuardReport::Stopped(format!("egress guard stopped: {e}")));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    true
                }
            };
            since_counted += 1;
            if idle || since_counted >= DROPS_EVERY {
                since_counted = 0;
                reports.extend(self.dropped());
            }
            if !send_all(to_daemon, reports) {
                return;
            }
        }
        self.finish(to_daemon);
    }

    /// Stopped (a new NIC or rule): what is still queued was sent too, so it is judged, and
    /// the drops counted, before the thread ends.
    fn finish(&mut self, to_daemon: &mpsc::Sender<GuardReport>) {
        let mut reports = Vec::new();
        for _ in 0..DRAIN_AT_MOST {
            match self.frames.read_queued() {
                Ok(frame) => reports.extend(self.judging.verdict(frame).map(GuardReport::Unsolicited)),
                Err(e) if e.raw_os_error() == Some(nix::libc::ENETDOWN) => continue,
                Err(_) => break,
            }
        }
        reports.extend(self.dropped());
        send_all(to_daemon, reports);
    }

    /// Frames the kernel dropped from the full queue since last asked: they went unjudged.
    fn dropped(&self) -> Option<GuardReport> {
        match self.frames.take_counts() {
            Ok(counts) if counts.dropped == 0 => None,
            Ok(counts) => Some(GuardReport::Unjudged(format!("{} of {} frame(s) the NIC sent were dropped from the guard's full queue before it judged them", counts.dropped, counts.sent))),
            // Unable to tell from now on: a guard that cannot count is no guard.
            Err(e) => Some(GuardReport::Stopped(format!("egress guard stopped: {e}"))),
        }
    }
}

/// Sends the reports in order; false once the thread must end (the daemon is gone, or the
/// guard reported that it stopped).
fn send_all(to_daemon: &mpsc::Sender<GuardReport>, reports: Vec<GuardReport>) -> bool {
    for report in reports {
        let stopped = matches!(report, GuardReport::Stopped(_));
        if to_daemon.blocking_send(report).is_err() || stopped {
            return false;
        }
    }
    true
}
