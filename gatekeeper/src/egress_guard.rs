//! The egress guard: a packet socket (pnet datalink) on the vault NIC that sees every frame
//! the NIC sends, judged by [`vault_core::egress::classify`]. While the gate may answer
//! (opening, open, closing) ARP replies and listener TCP pass; at any other time every frame
//! the NIC sends is unsolicited. A violation is reported to the daemon, which closes the
//! window at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pnet_datalink::{Channel, Config};
use tokio::sync::mpsc;
use vault_core::egress::{classify, EgressRule, Verdict};

use crate::error::{GatekeeperError, Result};

/// Shared switches between the daemon and the guard thread.
#[derive(Debug, Default)]
pub struct GuardControl {
    /// The gate is in a phase where replies are owed.
    pub may_reply: AtomicBool,
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
            let mut failing_since: Option<std::time::Instant> = None;
            while !control.stop.load(Ordering::Relaxed) {
                let summary = match rx.next() {
                    Ok(frame) => {
                        failing_since = None;
                        match classify(frame, &rule) {
                            Verdict::NotOurs => continue,
                            Verdict::Allowed if control.may_reply.load(Ordering::Relaxed) => continue,
                            Verdict::Allowed => "a reply while sealed".to_string(),
                            Verdict::Unsolicited(what) => what,
                        }
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => continue,
                    Err(e) => {
                        // The kernel flags a packet socket with an error when its NIC goes
                        // down, and pnet's poll then fails for good: open a fresh socket.
                        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                        std::thread::sleep(Duration::from_millis(5));
                        match open(&interface) {
                            Ok(fresh) => {
                                rx = fresh;
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
