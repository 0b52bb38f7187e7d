//! The egress rule: which Ethernet frames the vault NIC may send while a window is open.
//!
//! The vault never speaks first. It may send exactly two kinds of frame:
//! - an ARP reply for its own address (`oper = 2`, sender = our MAC and our IPv4 address);
//! - IPv4 TCP from our address and the policy port that is not a bare SYN, i.e. a segment of a
//!   connection a client opened to the listener (SYN-ACK, data, ACK, FIN, RST).
//!
//! Everything else the NIC sends (ARP requests or gratuitous ARP, IPv6 of any kind, ICMP, UDP,
//! TCP from another port, VLAN tags, ...) is unsolicited. The guard tells frames the NIC sent
//! from frames it received by the source MAC, so a peer that forges our MAC as its source only
//! gets the window closed: fail closed.

use std::net::Ipv4Addr;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// What the vault NIC is allowed to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressRule {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not sent by the vault NIC (another source MAC).
    NotOurs,
    /// A frame the vault owes.
    Allowed,
    /// A frame the vault must never send; the text says what it was.
    Unsolicited(String),
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}

fn ipv4_at(frame: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b = frame.get(at..at + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// Judges one Ethernet frame seen on the vault NIC.
pub fn classify(frame: &[u8], rule: &EgressRule) -> Verdict {
    if frame.get(6..12) != Some(&rule.mac[..]) {
        return Verdict::NotOurs;
    }
    let Some(ethertype) = be16(frame, 12) else {
        return Verdict::Unsolicited(format!("runt frame of {} bytes", frame.len()));
    };
    match ethertype {
        ETHERTYPE_ARP => classify_arp(&frame[14..], rule),
        ETHERTYPE_IPV4 => classify_ipv4(&frame[14..], rule),
        ETHERTYPE_IPV6 => Verdict::Unsolicited(describe_ipv6(&frame[14..])),
        ETHERTYPE_VLAN => Verdict::Unsolicited("802.1Q-tagged frame".into()),
        other => Verdict::Unsolicited(format!("ethertype {other:#06x}")),
    }
}

fn classify_arp(arp: &[u8], rule: &EgressRule) -> Verdict {
    // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, then oper, sha, spa, tha, tpa.
    if arp.len() < 28 || be16(arp, 0) != Some(1) || be16(arp, 2) != Some(ETHERTYPE_IPV4) || arp[4] != 6 || arp[5] != 4 {
        return Verdict::Unsolicited("malformed ARP".into());
    }
    let oper = be16(arp, 6).unwrap_or(0);
    let sender_ip = ipv4_at(arp, 14).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let target_ip = ipv4_at(arp, 24).unwrap_or(Ipv4Addr::UNSPECIFIED);
    if oper != 2 {
        let kind = if sender_ip == target_ip { "gratuitous ARP" } else { "ARP request" };
        return Verdict::Unsolicited(format!("{kind} (oper {oper}) who-has {target_ip} tell {sender_ip}"));
    }
    if arp[8..14] != rule.mac || sender_ip != rule.address {
        return Verdict::Unsolicited(format!("ARP reply claiming {sender_ip}, not our {}", rule.address));
    }
    if sender_ip == target_ip {
        return Verdict::Unsolicited(format!("gratuitous ARP reply for {sender_ip}"));
    }
    Verdict::Allowed
}

fn classify_ipv4(ip: &[u8], rule: &EgressRule) -> Verdict {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Verdict::Unsolicited("malformed IPv4".into());
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let protocol = ip[9];
    let src = ipv4_at(ip, 12).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let dst = ipv4_at(ip, 16).unwrap_or(Ipv4Addr::UNSPECIFIED);
    if protocol != IPPROTO_TCP {
        let name = match protocol {
            1 => "ICMP".to_string(),
            2 => "IGMP".to_string(),
            17 => "UDP".to_string(),
            other => format!("IP protocol {other}"),
        };
        return Verdict::Unsolicited(format!("{name} {src} -> {dst}"));
    }
    let Some(tcp) = ip.get(header_len..).filter(|t| t.len() >= 14 && header_len >= 20) else {
        return Verdict::Unsolicited(format!("truncated TCP {src} -> {dst}"));
    };
    let src_port = be16(tcp, 0).unwrap_or(0);
    let dst_port = be16(tcp, 2).unwrap_or(0);
    let flags = tcp[13];
    if src != rule.address || src_port != rule.port {
        return Verdict::Unsolicited(format!("TCP {src}:{src_port} -> {dst}:{dst_port}, not from the listener {}:{}", rule.address, rule.port));
    }
    if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
        return Verdict::Unsolicited(format!("TCP SYN {src}:{src_port} -> {dst}:{dst_port}: the vault opening a connection"));
    }
    Verdict::Allowed
}

fn describe_ipv6(ip: &[u8]) -> String {
    // Next header at 6; ICMPv6 type right after the 40-byte header (no extension headers) or
    // after one hop-by-hop header (MLD reports carry router alert).
    let next = ip.get(6).copied();
    let icmp_type = match next {
        Some(58) => ip.get(40).copied(),
        Some(0) => ip.get(40).and_then(|nh| (*nh == 58).then(|| ip.get(40 + 8 * (1 + usize::from(*ip.get(41)?)))).flatten().copied()),
        _ => None,
    };
    let what = match icmp_type {
        Some(133) => "router solicitation",
        Some(135) => "neighbour solicitation (DAD or lookup)",
        Some(136) => "neighbour advertisement",
        Some(131 | 143) => "MLD report",
        Some(_) => "ICMPv6",
        None => "packet",
    };
    format!("IPv6 {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUR_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 0x10];
    const PEER_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 0x01];
    const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn rule() -> EgressRule {
        EgressRule { mac: OUR_MAC, address: US, port: 7400 }
    }

    fn eth(src: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut f = PEER_MAC.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn arp(oper: u16, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&oper.to_be_bytes());
        a.extend_from_slice(&OUR_MAC);
        a.extend_from_slice(&sender.octets());
        a.extend_from_slice(&PEER_MAC);
        a.extend_from_slice(&target.octets());
        eth(OUR_MAC, ETHERTYPE_ARP, &a)
    }

    fn tcp(src_port: u16, flags: u8) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0];
        ip.extend_from_slice(&US.octets());
        ip.extend_from_slice(&PEER.octets());
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&src_port.to_be_bytes());
        t[2..4].copy_from_slice(&50_000u16.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        ip.extend_from_slice(&t);
        eth(OUR_MAC, ETHERTYPE_IPV4, &ip)
    }

    #[test]
    fn replies_and_listener_segments_are_allowed() {
        assert_eq!(classify(&arp(2, US, PEER), &rule()), Verdict::Allowed);
        for flags in [TCP_SYN | TCP_ACK, TCP_ACK, 0x18, 0x11, 0x04, 0x14] {
            assert_eq!(classify(&tcp(7400, flags), &rule()), Verdict::Allowed, "flags {flags:#x}");
        }
    }

    #[test]
    fn frames_from_other_macs_are_not_ours() {
        let mut frame = arp(1, PEER, US);
        frame[6..12].copy_from_slice(&PEER_MAC);
        assert_eq!(classify(&frame, &rule()), Verdict::NotOurs);
    }

    #[test]
    fn everything_else_is_unsolicited_and_named() {
        let unsolicited = |frame: Vec<u8>| match classify(&frame, &rule()) {
            Verdict::Unsolicited(what) => what,
            other => panic!("{other:?}"),
        };
        assert!(unsolicited(arp(1, US, PEER)).starts_with("ARP request"));
        assert!(unsolicited(arp(1, US, US)).starts_with("gratuitous ARP"));
        assert!(unsolicited(arp(2, US, US)).starts_with("gratuitous ARP reply"));
        assert!(unsolicited(arp(2, Ipv4Addr::new(192, 0, 2, 99), PEER)).contains("not our 192.0.2.10"));
        assert!(unsolicited(tcp(7400, TCP_SYN)).contains("the vault opening a connection"));
        assert!(unsolicited(tcp(22, TCP_ACK)).contains("not from the listener"));
        let mut rs = vec![0x60, 0, 0, 0, 0, 8, 58, 255];
        rs.extend_from_slice(&[0u8; 32]);
        rs.extend_from_slice(&[133, 0, 0, 0]);
        assert_eq!(unsolicited(eth(OUR_MAC, ETHERTYPE_IPV6, &rs)), "IPv6 router solicitation");
        let mut udp = tcp(7400, 0);
        udp[14 + 9] = 17;
        assert!(unsolicited(udp).starts_with("UDP 192.0.2.10 -> 192.0.2.1"));
        assert!(unsolicited(eth(OUR_MAC, 0x88cc, &[0; 30])).contains("0x88cc"));
        assert!(unsolicited(PEER_MAC.iter().chain(OUR_MAC.iter()).copied().collect()).starts_with("runt frame"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..120), ethertype in proptest::num::u16::ANY) {
            let _ = classify(&eth(OUR_MAC, ethertype, &body), &rule());
            let _ = classify(&body, &rule());
        }
    }
}
