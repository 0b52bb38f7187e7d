//! The watchdog: a netlink socket subscribed to link and address events. It reports every
//! link-up and every new address on any NIC; the daemon decides (through the gate) whether
//! that was expected.

use futures_util::stream::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK};
use tokio::sync::mpsc;
use vault_core::link::gate::Sighting;

use crate::error::{GatekeeperError, Result};
use crate::link::{address_in, shows_up};

/// One thing the watchdog saw, on the NIC with this index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub ifindex: u32,
    pub sighting: Sighting,
}

/// What the watchdog tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchReport {
    Seen(Seen),
    /// The kernel dropped events (the socket's buffer was full: ENOBUFS): something may have
    /// happened unseen, so every link must be listed again.
    Overrun,
    /// The event stream ended: from now on nothing reports a link raised behind the gate.
    Stopped(String),
}

/// Subscribes before returning, so nothing that happens after this call is missed.
pub fn start(to_daemon: mpsc::Sender<WatchReport>) -> Result<()> {
    let (mut connection, _handle, mut messages) = rtnetlink::new_connection().map_err(|source| GatekeeperError::Io { what: "netlink watchdog socket", source })?;
    let groups = SocketAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR);
    connection.socket_mut().socket_mut().bind(&groups).map_err(|source| GatekeeperError::Io { what: "netlink watchdog subscription", source })?;
    tokio::spawn(connection);
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let Some(report) = report_of(message.payload) else { continue };
            if to_daemon.send(report).await.is_err() {
                return;
            }
        }
        let _ = to_daemon.send(WatchReport::Stopped("the netlink event stream ended".into())).await;
    });
    Ok(())
}

/// What one netlink message means to the daemon, if anything.
fn report_of(payload: NetlinkPayload<RouteNetlinkMessage>) -> Option<WatchReport> {
    match payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) if shows_up(&link) => Some(WatchReport::Seen(Seen { ifindex: link.header.index, sighting: Sighting::LinkUp })),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(addr)) => address_in(&addr).map(|ip| WatchReport::Seen(Seen { ifindex: addr.header.index, sighting: Sighting::NewAddress(ip) })),
        NetlinkPayload::Overrun(_) => Some(WatchReport::Overrun),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overrun_is_reported_not_skipped() {
        assert_eq!(report_of(NetlinkPayload::Overrun(Vec::new())), Some(WatchReport::Overrun));
        assert_eq!(report_of(NetlinkPayload::Noop), None);
    }
}
