//! The egress guard: a packet socket on the vault NIC that sees every frame the NIC sends
//! ([`OutgoingFrames`]), in order, judged by a [`vault_core::link::egress::EgressJudge`]. While the gate may
//! answer (opening, open, closing) ARP replies, listener TCP and unicast ARP probes for the
//! peers that TCP went to pass; at any other time every frame the NIC sends is unsolicited,
//! and the judge forgets its peers, so each window starts knowing no one. A violation is
//! reported to the daemon, which closes the window at once; so is a frame the guard could
//! not judge (dropped from its full queue) and a guard that stopped reading.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vault_core::link::egress::{EgressJudge, EgressRule, Verdict};

use crate::error::{GatekeeperError, Result};
use crate::outgoing_frames::{FrameCounts, OutgoingFrames};

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

/// What the guard reads: the frames a NIC sends ([`OutgoingFrames`] on the appliance). A
/// trait so the guard's own loop can be driven through each failure in the tests below.
trait FrameSource: Send + 'static {
    /// The next frame, waiting up to the read timeout.
    fn read_next(&mut self) -> std::io::Result<&[u8]>;
    /// The next frame already queued, without waiting.
    fn read_queued(&mut self) -> std::io::Result<&[u8]>;
    /// The interface the source is bound to (-1 once that NIC was unregistered).
    fn bound_ifindex(&self) -> std::io::Result<i32>;
    /// Frames sent and dropped unread since last asked.
    fn take_counts(&self) -> std::io::Result<FrameCounts>;
}

impl FrameSource for OutgoingFrames {
    fn read_next(&mut self) -> std::io::Result<&[u8]> {
        OutgoingFrames::read_next(self)
    }
    fn read_queued(&mut self) -> std::io::Result<&[u8]> {
        OutgoingFrames::read_queued(self)
    }
    fn bound_ifindex(&self) -> std::io::Result<i32> {
        OutgoingFrames::bound_ifindex(self)
    }
    fn take_counts(&self) -> std::io::Result<FrameCounts> {
        OutgoingFrames::take_counts(self)
    }
}

/// Starts the guard thread on `nic`. Frames are read with a short timeout so `stop` is seen.
pub fn start(nic_index: u32, rule: EgressRule, control: Arc<GuardControl>, to_daemon: mpsc::Sender<GuardReport>) -> Result<()> {
    let frames = OutgoingFrames::open(nic_index, QUEUE_BYTES, READ_TIMEOUT).map_err(|source| GatekeeperError::Io { what: "egress guard packet socket", source })?;
    spawn(frames, nic_index, rule, control, to_daemon, BLIND_AFTER).map(drop)
}

/// The guard thread over any frame source; the daemon keeps no handle (the guard reports and
/// [`GuardControl::ended`] say how it is), the tests join it.
fn spawn<S: FrameSource>(frames: S, nic_index: u32, rule: EgressRule, control: Arc<GuardControl>, to_daemon: mpsc::Sender<GuardReport>, blind_after: Duration) -> Result<std::thread::JoinHandle<()>> {
    let window = control.window.load(Ordering::SeqCst);
    let mut guard = Guard { frames, nic_index, blind_after, judging: Judging { judge: EgressJudge::new(rule), window, control: control.clone() } };
    std::thread::Builder::new()
        .name("egress-guard".into())
        .spawn(move || {
            let _ended = MarkEnded(control);
            guard.run(&to_daemon);
        })
        .map_err(|source| GatekeeperError::Io { what: "egress guard thread", source })
}

/// Sets [`GuardControl::ended`] when the guard thread ends, panics included.
struct MarkEnded(Arc<GuardControl>);

impl Drop for MarkEnded {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::SeqCst);
    }
}

struct Guard<S> {
    frames: S,
    nic_index: u32,
    /// [`BLIND_AFTER`], shorter in tests.
    blind_after: Duration,
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

impl<S: FrameSource> Guard<S> {
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
                    if since.elapsed() > self.blind_after {
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

/// The guard's own loop, driven through each way its socket can fail by a scripted source
/// (the socket itself is tested on a real kernel in `tests/outgoing_frames.rs`).
#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    use super::*;

    const VAULT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const NIC: u32 = 7;
    const BLIND: Duration = Duration::from_millis(50);

    fn rule() -> EgressRule {
        EgressRule { mac: VAULT_MAC, address: Ipv4Addr::new(192, 0, 2, 10), port: 7400 }
    }

    /// The vault's ARP reply to the peer: owed while the gate may reply.
    fn arp_reply() -> Vec<u8> {
        [&PEER_MAC[..], &VAULT_MAC, &[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2], &VAULT_MAC, &[192, 0, 2, 10], &PEER_MAC, &[192, 0, 2, 1]].concat()
    }

    /// An IPv6 packet (to the all-routers group) from `mac`: never owed.
    fn ipv6_from(mac: [u8; 6]) -> Vec<u8> {
        [&[0x33, 0x33, 0, 0, 0, 2][..], &mac, &[0x86, 0xdd], &[0x60; 40]].concat()
    }

    enum Read {
        Frame(Vec<u8>),
        Fails(i32),
    }

    /// Plays `reads`, then fails every read with `then` (or times out, as a quiet NIC does).
    struct Scripted {
        reads: VecDeque<Read>,
        then: Option<i32>,
        /// What `read_queued` finds once the guard is stopped.
        queued: VecDeque<Vec<u8>>,
        bound: i32,
        /// What each `take_counts` answers, in turn (errno for a failure); then no drops.
        counts: Mutex<VecDeque<std::result::Result<FrameCounts, i32>>>,
        frame: Vec<u8>,
    }

    impl Scripted {
        fn new(reads: Vec<Read>) -> Scripted {
            Scripted { reads: reads.into(), then: None, queued: VecDeque::new(), bound: NIC as i32, counts: Mutex::default(), frame: Vec::new() }
        }
    }

    impl FrameSource for Scripted {
        fn read_next(&mut self) -> std::io::Result<&[u8]> {
            match (self.reads.pop_front(), self.then) {
                (Some(Read::Frame(frame)), _) => {
                    self.frame = frame;
                    Ok(&self.frame)
                }
                (Some(Read::Fails(errno)), _) | (None, Some(errno)) => Err(std::io::Error::from_raw_os_error(errno)),
                (None, None) => {
                    std::thread::sleep(Duration::from_millis(1));
                    Err(std::io::ErrorKind::WouldBlock.into())
                }
            }
        }
        fn read_queued(&mut self) -> std::io::Result<&[u8]> {
            self.frame = self.queued.pop_front().ok_or(std::io::ErrorKind::WouldBlock)?;
            Ok(&self.frame)
        }
        fn bound_ifindex(&self) -> std::io::Result<i32> {
            Ok(self.bound)
        }
        fn take_counts(&self) -> std::io::Result<FrameCounts> {
            match self.counts.lock().unwrap().pop_front() {
                Some(Ok(counts)) => Ok(counts),
                Some(Err(errno)) => Err(std::io::Error::from_raw_os_error(errno)),
                None => Ok(FrameCounts { sent: 0, dropped: 0 }),
            }
        }
    }

    struct Running {
        control: Arc<GuardControl>,
        reports: mpsc::Receiver<GuardReport>,
        thread: std::thread::JoinHandle<()>,
    }

    fn run(source: Scripted, may_reply: bool) -> Running {
        let control = Arc::new(GuardControl::default());
        control.may_reply.store(may_reply, Ordering::SeqCst);
        let (to_daemon, reports) = mpsc::channel(16);
        let thread = spawn(source, NIC, rule(), control.clone(), to_daemon, BLIND).unwrap();
        Running { control, reports, thread }
    }

    impl Running {
        fn next_report(&mut self) -> Option<GuardReport> {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                match self.reports.try_recv() {
                    Ok(report) => return Some(report),
                    Err(mpsc::error::TryRecvError::Disconnected) => return None,
                    Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            panic!("the guard neither reported nor ended within 5 s");
        }

        /// Stops the guard; every report it still had, and that it ended.
        fn stop(mut self) -> Vec<GuardReport> {
            self.control.stop.store(true, Ordering::SeqCst);
            let rest = std::iter::from_fn(|| self.next_report()).collect();
            self.thread.join().unwrap();
            assert!(self.control.ended.load(Ordering::SeqCst));
            rest
        }

        /// The guard ended by itself after `report`, with nothing after it.
        fn ends_after(mut self, report: GuardReport) {
            assert_eq!(self.next_report(), Some(report));
            assert_eq!(self.next_report(), None, "a guard that stopped sent more");
            self.thread.join().unwrap();
            assert!(self.control.ended.load(Ordering::SeqCst), "the next bring-up must replace it");
        }
    }

    fn unsolicited(report: Option<GuardReport>) -> String {
        match report {
            Some(GuardReport::Unsolicited(what)) => what,
            other => panic!("expected an unsolicited frame, got {other:?}"),
        }
    }

    #[test]
    fn owed_frames_pass_and_every_other_frame_is_reported() {
        let mut guard = run(Scripted::new(vec![Read::Frame(arp_reply()), Read::Frame(ipv6_from(VAULT_MAC)), Read::Frame(ipv6_from(PEER_MAC))]), true);
        assert!(unsolicited(guard.next_report()).contains("IPv6"), "the vault's IPv6 packet");
        assert!(unsolicited(guard.next_report()).contains("source MAC"), "another NIC's frame");
        assert_eq!(guard.stop(), vec![], "the ARP reply was owed");

        let mut sealed = run(Scripted::new(vec![Read::Frame(arp_reply())]), false);
        assert_eq!(unsolicited(sealed.next_report()), "a reply while sealed");
        assert_eq!(sealed.stop(), vec![]);
    }

    #[test]
    fn a_guard_that_cannot_read_says_so_and_ends() {
        // A short failure is survived: the frame after it is still judged.
        let mut brief = run(Scripted::new(vec![Read::Fails(nix::libc::EIO), Read::Frame(ipv6_from(VAULT_MAC))]), true);
        assert!(unsolicited(brief.next_report()).contains("IPv6"));
        assert_eq!(brief.stop(), vec![]);

        let mut source = Scripted::new(vec![]);
        source.then = Some(nix::libc::EIO);
        let started = std::time::Instant::now();
        run(source, true).ends_after(GuardReport::Stopped("egress guard stopped: Input/output error (os error 5)".into()));
        assert!(started.elapsed() >= BLIND, "blind for less than {BLIND:?}");
    }

    #[test]
    fn a_nic_going_down_is_waited_out_and_a_nic_unregistered_ends_the_guard() {
        let mut down = run(Scripted::new(vec![Read::Fails(nix::libc::ENETDOWN), Read::Frame(ipv6_from(VAULT_MAC))]), true);
        assert!(unsolicited(down.next_report()).contains("IPv6"), "frames after the NIC came back are judged");
        assert_eq!(down.stop(), vec![]);

        let mut gone = Scripted::new(vec![Read::Fails(nix::libc::ENETDOWN)]);
        gone.bound = -1;
        run(gone, true).ends_after(GuardReport::Stopped("egress guard stopped: the vault NIC was unregistered under it".into()));
    }

    #[test]
    fn frames_dropped_unjudged_are_reported_and_a_guard_that_cannot_count_ends() {
        let source = Scripted::new(vec![Read::Frame(ipv6_from(VAULT_MAC))]);
        source.counts.lock().unwrap().push_back(Ok(FrameCounts { sent: 10, dropped: 3 }));
        let mut guard = run(source, true);
        // Counted when the guard goes idle, after the frame it read.
        assert!(unsolicited(guard.next_report()).contains("IPv6"));
        assert_eq!(guard.next_report(), Some(GuardReport::Unjudged("3 of 10 frame(s) the NIC sent were dropped from the guard's full queue before it judged them".into())));
        assert_eq!(guard.stop(), vec![], "a drop is reported once");

        let source = Scripted::new(vec![]);
        source.counts.lock().unwrap().push_back(Err(nix::libc::EBADF));
        run(source, true).ends_after(GuardReport::Stopped("egress guard stopped: Bad file descriptor (os error 9)".into()));
    }

    #[test]
    fn a_guard_being_replaced_judges_what_was_still_queued() {
        let mut source = Scripted::new(vec![]);
        source.queued = VecDeque::from([arp_reply(), ipv6_from(VAULT_MAC)]);
        let guard = run(source, false);
        let rest = guard.stop();
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert_eq!(unsolicited(rest.first().cloned()), "a reply while sealed");
        assert!(unsolicited(rest.get(1).cloned()).contains("IPv6"));
    }

    #[test]
    fn a_guard_that_panics_is_marked_ended() {
        struct Panics;
        impl FrameSource for Panics {
            fn read_next(&mut self) -> std::io::Result<&[u8]> {
                panic!("the source broke");
            }
            fn read_queued(&mut self) -> std::io::Result<&[u8]> {
                unreachable!()
            }
            fn bound_ifindex(&self) -> std::io::Result<i32> {
                unreachable!()
            }
            fn take_counts(&self) -> std::io::Result<FrameCounts> {
                unreachable!()
            }
        }
        let control = Arc::new(GuardControl::default());
        let (to_daemon, _reports) = mpsc::channel(1);
        let thread = spawn(Panics, NIC, rule(), control.clone(), to_daemon, BLIND).unwrap();
        assert!(thread.join().is_err());
        assert!(control.ended.load(Ordering::SeqCst), "the next bring-up must replace a guard that panicked");
    }
}
