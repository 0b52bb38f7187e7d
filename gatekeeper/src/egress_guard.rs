//! The egress guard: a packet socket (pnet datalink) on the vault NIC that sees every frame
//! the NIC sends, in order, judged by a [`vault_core::egress::EgressJudge`]. While the gate may
//! answer (opening, open, closing) ARP replies, listener TCP and unicast ARP probes for the
//! peers that TCP went to pass; at any other time every frame the NIC sends is unsolicited,
//! and the judge forgets its peers, so each window starts knowing no one. A violation is
//! reported to the daemon, which closes the window at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pnet_datalink::{Channel, Config};
use tokio::sync::mpsc;
use vault_core::egress::{EgressJudge, EgressRule, Verdict};

use crate::error::{GatekeeperError, Result};

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

fn open(interface: &pnet_datalink::NetworkInterface) -> Result<Box<dyn pnet_datalink::DataLinkReceiver>> {
    // Not promiscuous: the guard only needs what this host sends, and promiscuous mode is a
    // change to the NIC the vault has no reason to make.
    let config = Config { read_timeout: Some(Duration::from_millis(20)), promiscuous: false, ..Config::default() };
    match pnet_datalink::channel(interface, config) {
        Ok(Channel::Ethernet(_tx, rx)) => Ok(rx),
        Ok(_) => Err(GatekeeperError::Guard { reason: "packet channel of an unknown kind".into() }),
        Err(source) => Err(GatekeeperError::Io { what: "egress guard packet socket", source }),
    }
}

/// How long the guard may be unable to read before it counts as blind.
const BLIND_AFTER: Duration = Duration::from_secs(1);

/// At most this many frames are read from a socket being replaced (see `start`).
const DRAIN_AT_MOST: usize = 65_536;

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted)
}

/// Starts the guard thread on `nic`. Frames are read with a short timeout so `stop` is seen.
pub fn start(nic_index: u32, rule: EgressRule, control: Arc<GuardControl>, to_daemon: mpsc::Sender<String>) -> Result<()> {
    let interface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.index == nic_index)
        .ok_or(GatekeeperError::NicVanished { index: nic_index })?;
    let mut rx = open(&interface)?;
    std::thread::Builder::new()
        .name("egress-guard".into())
        .spawn(move || {
            let mut judge = EgressJudge::new(rule);
            let mut window = control.window.load(Ordering::SeqCst);
            // One frame, in the order the NIC sent it: Some(summary) when it is an alarm.
            let mut alarm_for = |frame: &[u8]| -> Option<String> {
                // Read once the frame is in hand: the peers of a window are forgotten before
                // any frame is judged once its replies are no longer owed, or once a new
                // window has started.
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
            };
            let mut failing_since: Option<std::time::Instant> = None;
            while !control.stop.load(Ordering::Relaxed) {
                let summary = match rx.next() {
                    Ok(frame) => {
                        failing_since = None;
                        match alarm_for(frame) {
                            Some(summary) => summary,
                            None => continue,
                        }
                    }
                    Err(e) if is_timeout(&e) => continue,
                    Err(e) => {
                        // The kernel flags a packet socket with an error when its NIC goes
                        // down, or when it is bound while the NIC is down (every socket opened
                        // while sealed), and pnet's poll then fails for good: open a fresh
                        // socket. The old one may still hold frames the NIC sent (the first of
                        // a window, once the link came up): the fresh socket is opened first,
                        // then the old one drained and judged, so no frame goes unjudged in
                        // between. Frames sent meanwhile reach both sockets; those are judged
                        // twice, which changes no verdict.
                        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                        std::thread::sleep(Duration::from_millis(5));
                        match open(&interface) {
                            Ok(fresh) => {
                                let mut old = std::mem::replace(&mut rx, fresh);
                                for _ in 0..DRAIN_AT_MOST {
                                    match old.next() {
                                        Ok(frame) => {
                                            if let Some(summary) = alarm_for(frame) {
                                                if to_daemon.blocking_send(summary).is_err() {
                                                    return;
                                                }
                                            }
                                        }
                                        // The pending error, read at last: the queued frames follow.
                                        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENETDOWN as i32) => continue,
                                        // Empty (or the error again, with nothing queued).
                                        Err(_) => break,
                                    }
                                }
                                continue;
                            }
                            // A blind guard is a failed guard: report it so the window closes.
                            Err(_) if since.elapsed() > BLIND_AFTER => format!("egress guard stopped: {e}"),
                            Err(_) => continue,
                        }
                    }
                };
                let fatal = summary.starts_with("egress guard stopped");
                if to_daemon.blocking_send(summary).is_err() || fatal {
                    return;
                }
            }
        })
        .map_err(|source| GatekeeperError::Io { what: "egress guard thread", source })?;
    Ok(())
}
