//! Link control over rtnetlink: find the vault NIC, keep it quiet, bring it up for a window
//! and down again, and confirm every state from the kernel rather than trusting a request.
//!
//! "Quiet" means the NIC sends nothing by itself: IPv6 is switched off on it (no link-local
//! address, so no router solicitation, no MLD, no DAD), and IPv4 ARP only answers for an
//! address configured on that NIC and never announces (arp_ignore=1, arp_announce=2,
//! arp_notify=0). The sysctls are written before the link goes up, every time.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::stream::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};
use serde::Serialize;
use vault_core::policy::{format_mac, NicSelector};

use crate::error::{GatekeeperError, Result};

/// How often link state is polled while waiting for carrier or for a confirmation.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// How long "down" may take to show in netlink before it counts as a failure.
const CONFIRM_DOWN_WITHIN: Duration = Duration::from_secs(2);

/// A NIC as netlink names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
}

/// What netlink said about the link after an operation: the confirmation events carry this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkConfirmation {
    pub nic: String,
    pub ifindex: u32,
    /// IFF_UP.
    pub admin_up: bool,
    /// IFF_LOWER_UP (carrier).
    pub carrier: bool,
    pub operstate: String,
    pub addresses: Vec<String>,
    /// From the request to the kernel's confirmation.
    pub took_ms: u64,
}

impl LinkConfirmation {
    pub fn is_down(&self) -> bool {
        !self.admin_up && self.addresses.is_empty()
    }
}

/// Writes one sysctl of `nic` (`family` is `ipv4` or `ipv6`).
fn write_sysctl(family: &str, nic: &str, key: &str, value: &str) -> Result<()> {
    write_sysctl_in(family, "conf", nic, key, value)
}

/// `/proc/sys/net/<family>/<table>/<nic>/<key>` (`conf`, or `neigh` for the ARP cache).
fn write_sysctl_in(family: &str, table: &str, nic: &str, key: &str, value: &str) -> Result<()> {
    write_proc_sys(format!("/proc/sys/net/{family}/{table}/{nic}/{key}"), value)
}

fn write_proc_sys(path: String, value: &str) -> Result<()> {
    std::fs::write(&path, value).map_err(|source| GatekeeperError::Sysctl { path, value: value.to_string(), source })
}

/// Makes the NIC say nothing by itself once it is up: no IPv6 at all, ARP replies only.
pub fn quiet_sysctls(nic: &str) -> Result<()> {
    quiet_conf(nic)?;
    quiet_neighbours(nic)?;
    quiet_globals()
}

/// The same settings for every NIC to come (`default`) and for all at once (`all`, which the
/// kernel combines with each NIC's own), written before any NIC can appear: a NIC that shows up
/// later (a driver loaded, a USB NIC plugged in) starts quiet, and the watchdog takes it down.
pub fn quiet_defaults() -> Result<()> {
    quiet_conf("default")?;
    quiet_conf("all")?;
    // The neighbour tables have no `all`, and only the first network namespace has `default`
    // (the appliance runs there; tests in their own namespaces do not).
    if Path::new("/proc/sys/net/ipv4/neigh/default").exists() {
        quiet_neighbours("default")?;
    }
    quiet_globals()
}

/// `conf/<name>`: ARP only for our own address, never announced; no IPv6 address at all.
fn quiet_conf(name: &str) -> Result<()> {
    for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2"), ("arp_notify", "0"), ("arp_accept", "0")] {
        write_sysctl("ipv4", name, key, value)?;
    }
    if Path::new("/proc/sys/net/ipv6").exists() {
        // Each of these alone stops some of the chatter; together with disable_ipv6 there is
        // no IPv6 address on the NIC and nothing to solicit, join or defend.
        for (key, value) in [("accept_ra", "0"), ("autoconf", "0"), ("router_solicitations", "0"), ("dad_transmits", "0"), ("addr_gen_mode", "1"), ("disable_ipv6", "1")] {
            write_sysctl("ipv6", name, key, value)?;
        }
    }
    Ok(())
}

/// Never a broadcast `who-has`: the vault learns a peer's address only from the peer's own ARP
/// request for the vault (a pusher sends one before it connects) and may then re-check it by
/// unicast. A SYN from an address that never asked (a spoofed or fresh source) gets no answer
/// at all, rather than making the vault ask the whole segment, which the egress guard would
/// rightly call unsolicited and close the window for.
fn quiet_neighbours(name: &str) -> Result<()> {
    write_sysctl_in("ipv4", "neigh", name, "mcast_solicit", "0")?;
    write_sysctl_in("ipv4", "neigh", name, "mcast_resolicit", "0")
}

fn quiet_globals() -> Result<()> {
    // The vault owes no one a ping reply; the egress guard would count one as unsolicited
    // (the ingress filter drops pings anyway; this holds if it were ever missing).
    write_global_sysctl("icmp_echo_ignore_all", "1")?;
    // A SYN to the listener from an address that asked for the vault's MAC gets a SYN-ACK
    // before anyone is authenticated; bound how often it is repeated (3 in all, not 6).
    write_global_sysctl("tcp_synack_retries", "2")
}

/// `/proc/sys/net/ipv4/<key>` (per network namespace, so tests set their own).
fn write_global_sysctl(key: &str, value: &str) -> Result<()> {
    write_proc_sys(format!("/proc/sys/net/ipv4/{key}"), value)
}

fn nl(what: &'static str) -> impl FnOnce(rtnetlink::Error) -> GatekeeperError {
    move |source| GatekeeperError::Netlink { what, source }
}

fn nic_of(msg: &LinkMessage) -> Nic {
    let mut nic = Nic { index: msg.header.index, name: String::new(), mac: None };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => nic.name = name.clone(),
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(bytes);
                nic.mac = Some(mac);
            }
            _ => {}
        }
    }
    nic
}

fn operstate_of(msg: &LinkMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::OperState(state) => Some(format!("{state:?}").to_lowercase()),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn address_in(msg: &AddressMessage) -> Option<IpAddr> {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
}

/// rtnetlink operations on the vault's NICs.
#[derive(Clone)]
pub struct RtLink {
    handle: Handle,
}

impl RtLink {
    /// Opens a netlink socket; the connection task runs on the current tokio runtime.
    pub fn connect() -> Result<RtLink> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| GatekeeperError::Io { what: "netlink socket", source })?;
        tokio::spawn(connection);
        Ok(RtLink { handle })
    }

    pub async fn all_links(&self) -> Result<Vec<LinkMessage>> {
        self.handle.link().get().execute().try_collect().await.map_err(nl("list links"))
    }

    /// Every NIC except loopback.
    pub async fn non_loopback(&self) -> Result<Vec<Nic>> {
        Ok(self.all_links().await?.iter().filter(|m| m.header.link_layer_type != LinkLayerType::Loopback).map(nic_of).collect())
    }

    /// The NIC the policy names, by name or MAC.
    pub async fn find(&self, selector: &NicSelector) -> Result<Nic> {
        let links = self.all_links().await?;
        let found = links.iter().map(nic_of).find(|nic| match selector {
            NicSelector::Name(name) => nic.name == *name,
            NicSelector::Mac(mac) => nic.mac == Some(*mac),
        });
        found.ok_or_else(|| GatekeeperError::NicNotFound {
            selector: match selector {
                NicSelector::Name(name) => format!("interface `{name}`"),
                NicSelector::Mac(mac) => format!("MAC {}", format_mac(mac)),
            },
            present: links.iter().map(|m| nic_of(m).name).collect::<Vec<_>>().join(", "),
        })
    }

    /// The NIC with this index, by its real name.
    pub async fn nic(&self, index: u32) -> Result<Nic> {
        Ok(nic_of(&self.link_message(index).await?))
    }

    async fn link_message(&self, index: u32) -> Result<LinkMessage> {
        let mut links = self.handle.link().get().match_index(index).execute();
        links.try_next().await.map_err(nl("get link"))?.ok_or(GatekeeperError::NicVanished { index })
    }

    /// Every address on every NIC.
    pub async fn all_addresses(&self) -> Result<Vec<AddressMessage>> {
        self.handle.address().get().execute().try_collect().await.map_err(nl("list addresses"))
    }

    async fn addresses(&self, index: u32) -> Result<Vec<AddressMessage>> {
        let all: Vec<AddressMessage> = self.handle.address().get().set_link_index_filter(index).execute().try_collect().await.map_err(nl("list addresses"))?;
        // The filter is applied in user space by some kernels' dumps; check again.
        Ok(all.into_iter().filter(|a| a.header.index == index).collect())
    }

    /// What netlink says about the NIC right now.
    pub async fn confirm(&self, nic: &Nic, since: Instant) -> Result<LinkConfirmation> {
        let msg = self.link_message(nic.index).await?;
        let addresses = self.addresses(nic.index).await?;
        Ok(LinkConfirmation {
            nic: nic.name.clone(),
            ifindex: nic.index,
            admin_up: msg.header.flags.contains(LinkFlags::Up),
            carrier: msg.header.flags.contains(LinkFlags::LowerUp),
            operstate: operstate_of(&msg),
            addresses: addresses.iter().filter_map(address_in).map(|a| a.to_string()).collect(),
            took_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    async fn flush_addresses(&self, index: u32) -> Result<()> {
        for address in self.addresses(index).await? {
            self.handle.address().del(address).execute().await.map_err(nl("delete address"))?;
        }
        Ok(())
    }

    async fn set_up(&self, index: u32, up: bool) -> Result<()> {
        let builder = LinkUnspec::new_with_index(index);
        let message = if up { builder.up().build() } else { builder.down().build() };
        self.handle.link().set(message).execute().await.map_err(nl(if up { "set link up" } else { "set link down" }))
    }

    /// Sets the NIC down, then flushes its addresses, and waits until netlink shows it down
    /// with no address. Down first: the link is what lets frames out, so a flush that fails
    /// (the gate retries) never leaves it up. The quiet sysctls are written too, so a later
    /// `ip link set up` by someone else does not make it chatter before the watchdog downs it.
    pub async fn take_down(&self, nic: &Nic) -> Result<LinkConfirmation> {
        let started = Instant::now();
        let down = self.set_up(nic.index, false).await;
        let flushed = self.flush_addresses(nic.index).await;
        down?;
        flushed?;
        let quiet = quiet_sysctls(&nic.name);
        loop {
            let seen = self.confirm(nic, started).await?;
            if seen.is_down() {
                quiet?;
                return Ok(seen);
            }
            if started.elapsed() > CONFIRM_DOWN_WITHIN {
                return Err(GatekeeperError::NotConfirmed { what: "down", seen: format!("{seen:?}") });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Quiet sysctls, static address, up, carrier within `carrier_within`, then confirms the
    /// NIC is up with carrier and exactly that address.
    pub async fn bring_up(&self, nic: &Nic, address: IpAddr, prefix: u8, carrier_within: Duration) -> Result<LinkConfirmation> {
        let started = Instant::now();
        quiet_sysctls(&nic.name)?;
        self.flush_addresses(nic.index).await?;
        self.handle.address().add(nic.index, address, prefix).execute().await.map_err(nl("add address"))?;
        self.set_up(nic.index, true).await?;
        loop {
            let seen = self.confirm(nic, started).await?;
            let operstate_ok = matches!(seen.operstate.as_str(), "up" | "unknown");
            if seen.admin_up && seen.carrier && operstate_ok {
                if seen.addresses != [address.to_string()] {
                    return Err(GatekeeperError::NotConfirmed { what: "up with only the policy address", seen: format!("{seen:?}") });
                }
                return Ok(seen);
            }
            if started.elapsed() > carrier_within {
                return Err(GatekeeperError::NoCarrier { nic: nic.name.clone(), within_ms: u64::try_from(carrier_within.as_millis()).unwrap_or(u64::MAX), operstate: seen.operstate });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// True if the message shows the link administratively up.
pub fn shows_up(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Up)
}
