//! The ingress filter: what the vault NIC lets into the kernel's stack while a window is open.
//!
//! The egress guard closes the window on any frame the vault owes no one. Left to itself the
//! kernel owes a lot to strangers: a RST for every SYN to a closed port, an ICMP "port
//! unreachable" for every datagram, "time exceeded" for a fragment that never completes. Any of
//! those would let a host without a key close the night's window (a port scan is enough). So
//! before the stack sees a frame, an nftables chain on the NIC's netdev ingress hook drops
//! everything but
//! - ARP (the kernel answers requests for the vault's own address only: `arp_ignore=1`), and
//! - unfragmented IPv4 TCP to the vault's address and the listener port.
//!
//! What remains can only draw the replies the egress rule allows: an ARP reply, or a segment from
//! the listener port (SYN-ACK, ACK, RST), one per segment received and bounded by the SYN
//! backlog and `tcp_synack_retries` (set in [`crate::link::quiet_sysctls`]).
//!
//! The chain is installed (replaced whole, in one nftables transaction) before every bring-up,
//! for the address and port of the policy in force; if the kernel does not confirm it, the link
//! stays down. Its policy is drop, so a frame no rule names never reaches the stack. Both
//! appliance kernels carry nf_tables with the netdev family (the minimal kernel built in, the
//! Debian kernel as the `nf_tables` module in image/modules.txt).
//!
//! The messages are nftables' netlink API (linux/netfilter/nf_tables.h, nfnetlink.h): a batch
//! of NEWTABLE, DELTABLE, NEWTABLE, NEWCHAIN and NEWRULE, what `nft -f` sends for
//! `table netdev vault_ingress; delete table netdev vault_ingress; table netdev vault_ingress { chain ... }`.

use std::net::Ipv4Addr;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::error::{GatekeeperError, Result};

/// The nftables table (netdev family) that holds the chain.
pub const TABLE: &str = "vault_ingress";
const CHAIN: &str = "from_segment";
/// Ahead of any other ingress hook.
const PRIORITY: i32 = -500;
/// How long the kernel has to confirm the transaction before the bring-up fails.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

// linux/netlink.h
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
// linux/netfilter/nfnetlink.h, nf_tables.h, netfilter.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_NETDEV: u8 = 5;
const NF_NETDEV_INGRESS: u32 = 0;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEV: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_PROTOCOL: u32 = 1;
const NFT_META_L4PROTO: u32 = 16;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_TCP: u8 = 6;

/// Netlink attributes, appended in place; nests are closed by patching their length.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + value.len()).expect("an nftables attribute is far below 64 KiB");
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
    }

    fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.put(kind, &bytes)
    }

    /// nftables' integers are big-endian.
    fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.put(kind, &value.to_be_bytes())
    }

    fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Attrs)) -> &mut Self {
        let mut inner = Attrs::default();
        fill(&mut inner);
        self.put(kind | NLA_F_NESTED, &inner.0)
    }

    /// One expression of a rule: `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { .. } }`.
    fn expression(&mut self, name: &str, data: impl FnOnce(&mut Attrs)) -> &mut Self {
        self.nest(NFTA_LIST_ELEM, |elem| {
            elem.string(NFTA_EXPR_NAME, name).nest(NFTA_EXPR_DATA, data);
        })
    }

    fn meta(&mut self, key: u32) -> &mut Self {
        self.expression("meta", |e| {
            e.be32(NFTA_META_DREG, NFT_REG_1).be32(NFTA_META_KEY, key);
        })
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) -> &mut Self {
        self.expression("payload", |e| {
            e.be32(NFTA_PAYLOAD_DREG, NFT_REG_1).be32(NFTA_PAYLOAD_BASE, base).be32(NFTA_PAYLOAD_OFFSET, offset).be32(NFTA_PAYLOAD_LEN, len);
        })
    }

    /// `reg1 = reg1 & mask` (xor zero), over `mask.len()` bytes.
    fn and(&mut self, mask: &[u8]) -> &mut Self {
        let zero = vec![0; mask.len()];
        self.expression("bitwise", |e| {
            e.be32(NFTA_BITWISE_SREG, NFT_REG_1).be32(NFTA_BITWISE_DREG, NFT_REG_1).be32(NFTA_BITWISE_LEN, u32::try_from(mask.len()).expect("a mask of a few header bytes"));
            e.nest(NFTA_BITWISE_MASK, |d| {
                d.put(NFTA_DATA_VALUE, mask);
            });
            e.nest(NFTA_BITWISE_XOR, |d| {
                d.put(NFTA_DATA_VALUE, &zero);
            });
        })
    }

    /// Ends the rule (no match) unless reg1 equals `value`.
    fn equals(&mut self, value: &[u8]) -> &mut Self {
        self.expression("cmp", |e| {
            e.be32(NFTA_CMP_SREG, NFT_REG_1).be32(NFTA_CMP_OP, NFT_CMP_EQ).nest(NFTA_CMP_DATA, |d| {
                d.put(NFTA_DATA_VALUE, value);
            });
        })
    }

    fn accept(&mut self) -> &mut Self {
        self.expression("immediate", |e| {
            e.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT).nest(NFTA_IMMEDIATE_DATA, |d| {
                d.nest(NFTA_DATA_VERDICT, |v| {
                    v.be32(NFTA_VERDICT_CODE, NF_ACCEPT);
                });
            });
        })
    }
}

/// One nfnetlink batch: netlink messages with an `nfgenmsg` header each.
struct Batch {
    bytes: Vec<u8>,
    next_seq: u32,
    /// Sequence numbers the kernel must acknowledge.
    acked: Vec<u32>,
}

impl Batch {
    fn new() -> Batch {
        Batch { bytes: Vec::new(), next_seq: 1, acked: Vec::new() }
    }

    fn message(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, attrs: &Attrs) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = u32::try_from(16 + 4 + attrs.0.len()).expect("an nftables message is far below 4 GiB");
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.bytes.extend_from_slice(&seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, resource id (big-endian)
        self.bytes.extend_from_slice(&[family, 0]);
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
        self.bytes.extend_from_slice(&attrs.0);
        if flags & NLM_F_ACK != 0 {
            self.acked.push(seq);
        }
    }

    fn nftables(&mut self, message: u16, flags: u16, attrs: &Attrs) {
        self.message((NFNL_SUBSYS_NFTABLES << 8) | message, flags | NLM_F_ACK, NFPROTO_NETDEV, 0, attrs);
    }

    fn delimit(&mut self, kind: u16) {
        self.message(kind, 0, 0, NFNL_SUBSYS_NFTABLES, &Attrs::default());
    }
}

/// The transaction that replaces the table with the filter for `nic`, `address` and `port`.
fn replace_transaction(nic: &str, address: Ipv4Addr, port: u16) -> Batch {
    let mut batch = Batch::new();
    batch.delimit(NFNL_MSG_BATCH_BEGIN);
    let mut table = Attrs::default();
    table.string(NFTA_TABLE_NAME, TABLE);
    // Create if missing, then delete: the delete cannot fail, and the new table starts empty.
    batch.nftables(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table);
    batch.nftables(NFT_MSG_DELTABLE, 0, &table);
    batch.nftables(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table);

    let mut chain = Attrs::default();
    chain.string(NFTA_CHAIN_TABLE, TABLE).string(NFTA_CHAIN_NAME, CHAIN).string(NFTA_CHAIN_TYPE, "filter");
    chain.nest(NFTA_CHAIN_HOOK, |hook| {
        hook.be32(NFTA_HOOK_HOOKNUM, NF_NETDEV_INGRESS).be32(NFTA_HOOK_PRIORITY, PRIORITY as u32).string(NFTA_HOOK_DEV, nic);
    });
    chain.be32(NFTA_CHAIN_POLICY, NF_DROP);
    batch.nftables(NFT_MSG_NEWCHAIN, NLM_F_CREATE, &chain);

    let rule = |batch: &mut Batch, expressions: &dyn Fn(&mut Attrs)| {
        let mut attrs = Attrs::default();
        attrs.string(NFTA_RULE_TABLE, TABLE).string(NFTA_RULE_CHAIN, CHAIN);
        attrs.nest(NFTA_RULE_EXPRESSIONS, |list| expressions(list));
        batch.nftables(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &attrs);
    };
    // meta protocol arp accept
    rule(&mut batch, &|e| {
        e.meta(NFT_META_PROTOCOL).equals(&ETH_P_ARP.to_be_bytes()).accept();
    });
    // meta protocol ip, ip frag-off & 0x3fff == 0 (no fragment, first or later: a first fragment
    // that never completes would draw "time exceeded"), ip daddr <address>, meta l4proto tcp,
    // tcp dport <port>: accept. The transport header is where the IPv4 header says it is.
    rule(&mut batch, &|e| {
        e.meta(NFT_META_PROTOCOL).equals(&ETH_P_IP.to_be_bytes());
        e.payload(NFT_PAYLOAD_NETWORK_HEADER, 6, 2).and(&0x3fffu16.to_be_bytes()).equals(&[0, 0]);
        e.payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4).equals(&address.octets());
        e.meta(NFT_META_L4PROTO).equals(&[IPPROTO_TCP]);
        e.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).equals(&port.to_be_bytes());
        e.accept();
    });
    batch.delimit(NFNL_MSG_BATCH_END);
    batch
}

fn filter_error(nic: &str, reason: String) -> GatekeeperError {
    GatekeeperError::IngressFilter { nic: nic.to_string(), reason }
}

/// Replaces the vault NIC's ingress filter so that only ARP and TCP to `address`:`port` reach
/// the stack, and returns once the kernel has committed it. An error means the filter may not
/// be in place: the caller must not bring the link up.
pub fn install(nic: &str, address: Ipv4Addr, port: u16) -> Result<()> {
    let batch = replace_transaction(nic, address, port);
    let io = |what: &str, e: std::io::Error| filter_error(nic, format!("{what}: {e}"));
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| io("nfnetlink socket", e))?;
    socket.bind_auto().map_err(|e| io("bind", e))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(|e| io("connect", e))?;
    set_receive_timeout(&socket, ANSWER_WITHIN).map_err(|e| io("receive timeout", e))?;
    socket.send(&batch.bytes, 0).map_err(|e| io("send", e))?;

    let mut waiting = batch.acked.clone();
    let mut refused: Vec<String> = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    while !waiting.is_empty() {
        let n = match socket.recv(&mut &mut buffer[..], 0) {
            Ok(n) => n.min(buffer.len()),
            Err(e) if refused.is_empty() => return Err(io("no answer from nf_tables (is it in the kernel?)", e)),
            // An aborted transaction need not acknowledge the messages it never got to.
            Err(_) => break,
        };
        for (seq, errno) in acknowledgements(&buffer[..n]) {
            waiting.retain(|s| *s != seq);
            if errno != 0 {
                refused.push(format!("message {seq}: {}", std::io::Error::from_raw_os_error(-errno)));
            }
        }
    }
    if !refused.is_empty() {
        return Err(filter_error(nic, format!("nf_tables refused the transaction ({})", refused.join("; "))));
    }
    Ok(())
}

/// (sequence number, error) of every NLMSG_ERROR in one datagram; 0 is an acknowledgement.
fn acknowledgements(mut datagram: &[u8]) -> Vec<(u32, i32)> {
    let mut found = Vec::new();
    while datagram.len() >= 16 {
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if len < 16 || len > datagram.len() {
            break;
        }
        // nlmsgerr: error (i32), then the request's header, whose sequence number is at +8.
        if kind == NLMSG_ERROR && len >= 16 + 4 + 16 {
            let body = &datagram[16..len];
            let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            let seq = u32::from_ne_bytes([body[12], body[13], body[14], body[15]]);
            found.push((seq, errno));
        }
        let aligned = len.div_ceil(4) * 4;
        datagram = &datagram[aligned.min(datagram.len())..];
    }
    found
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> std::io::Result<()> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let value = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: timeout.subsec_micros() as libc::suseconds_t };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>()).expect("a timeval is 16 bytes");
    // SAFETY: `value` is a live timeval and the length passed is its size; the kernel copies it
    // and keeps no pointer.
    let result = unsafe { libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&value as *const libc::timeval).cast(), len) };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the batch as the kernel would: every message's length lands on the next one, and
    /// only the real requests ask for an acknowledgement.
    #[test]
    fn the_transaction_is_well_framed_and_asks_for_every_acknowledgement() {
        let batch = replace_transaction("eth1", Ipv4Addr::new(192, 0, 2, 10), 7400);
        let mut rest = &batch.bytes[..];
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(len >= 20 && len % 4 == 0 && len <= rest.len(), "message length {len}");
            kinds.push(u16::from_ne_bytes(rest[4..6].try_into().unwrap()));
            rest = &rest[len..];
        }
        let nft = |m: u16| (NFNL_SUBSYS_NFTABLES << 8) | m;
        assert_eq!(
            kinds,
            [NFNL_MSG_BATCH_BEGIN, nft(NFT_MSG_NEWTABLE), nft(NFT_MSG_DELTABLE), nft(NFT_MSG_NEWTABLE), nft(NFT_MSG_NEWCHAIN), nft(NFT_MSG_NEWRULE), nft(NFT_MSG_NEWRULE), NFNL_MSG_BATCH_END]
        );
        assert_eq!(batch.acked, [2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn acknowledgements_are_read_by_sequence_number() {
        let mut datagram = Vec::new();
        for (seq, errno) in [(3u32, 0i32), (4, -2)] {
            datagram.extend_from_slice(&36u32.to_ne_bytes());
            datagram.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            datagram.extend_from_slice(&[0; 10]);
            datagram.extend_from_slice(&errno.to_ne_bytes());
            datagram.extend_from_slice(&[0; 8]);
            datagram.extend_from_slice(&seq.to_ne_bytes());
            datagram.extend_from_slice(&[0; 4]);
        }
        assert_eq!(acknowledgements(&datagram), [(3, 0), (4, -2)]);
        assert_eq!(acknowledgements(&datagram[..20]), []);
    }
}
