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

/// Subscribes before returning, so nothing that happens after this call is missed.
pub fn start(to_daemon: mpsc::Sender<Seen>) -> Result<()> {
    let (mut connection, _handle, mut messages) =
        rtnetlink::new_connection().map_err(|source| GatekeeperError::Io { what: "netlink watchdog socket", source })?;
    let groups = SocketAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR);
    connection
        .socket_mut()
        .socket_mut()
        .bind(&groups)
        .map_err(|source| GatekeeperError::Io { what: "netlink watchdog subscription", source })?;
    tokio::spawn(connection);
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let seen = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) if shows_up(&link) => {
                    Seen { ifindex: link.header.index, sighting: Sighting::LinkUp }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(addr)) => match address_in(&addr) {
                    Some(ip) => Seen { ifindex: addr.header.index, sighting: Sighting::NewAddress(ip) },
                    None => continue,
                },
                _ => continue,
            };
            if to_daemon.send(seen).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}
