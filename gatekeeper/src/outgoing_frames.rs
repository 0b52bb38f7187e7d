//! A packet socket that receives only the frames this host sends on one NIC, and counts the
//! ones it had no room for. The egress guard reads from it: a frame the kernel dropped from a
//! full queue was never judged, so the guard must know it happened (see [`OutgoingFrames::take_counts`]).
//!
//! The kernel does the filtering (a classic BPF program on the frame's direction): a flood of
//! frames *to* the vault never reaches this queue, so it cannot push the vault's own frames out
//! of it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::libc;

/// The largest frame the guard reads whole (GSO frames reach 64 KiB; the judge needs headers).
const FRAME_MAX: usize = 65_536;

// Not in the libc crate for every target; values from linux/filter.h and linux/if_packet.h.
const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
const SKF_AD_PKTTYPE: u32 = 4;
const PACKET_OUTGOING: u32 = 4;
const PACKET_STATISTICS: libc::c_int = 6;
const SO_ATTACH_FILTER: libc::c_int = 26;
const SO_RCVBUFFORCE: libc::c_int = 33;

#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    packets: u32,
    drops: u32,
}

/// `A = pkttype; if A == PACKET_OUTGOING return whole frame else return 0 (drop)`.
fn outgoing_only_program() -> [libc::sock_filter; 4] {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: u16::try_from(code).expect("classic BPF opcodes are 16 bits"), jt, jf, k };
    [
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, PACKET_OUTGOING),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::try_from(FRAME_MAX).expect("64 KiB")),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ]
}

fn check(what: &'static str, result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(result)
}

/// The size of a `T` passed to the kernel (a socket option or address: a few bytes).
fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("a socket option or address is far below 4 GiB")
}

fn set_option<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T, what: &'static str) -> io::Result<()> {
    let len = socklen_of::<T>();
    // SAFETY: `value` is a live, initialised T and the length passed is its size; the kernel
    // copies that many bytes and keeps no pointer.
    let result = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) };
    check(what, result).map(drop)
}

/// The frames one NIC sends, in order.
pub struct OutgoingFrames {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl OutgoingFrames {
    /// Opens the socket on `ifindex` with a queue of `queue_bytes`; reads wait at most
    /// `read_timeout`. Works while the NIC is down: the kernel starts delivering once it is up.
    pub fn open(ifindex: u32, queue_bytes: usize, read_timeout: Duration) -> io::Result<OutgoingFrames> {
        // Protocol 0: the socket receives nothing until bound, which is after its filter is
        // in place, so no frame of another NIC or direction is ever queued.
        // SAFETY: plain socket(2); the result is checked before it is used as a descriptor.
        let raw = check("packet socket", unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let program = outgoing_only_program();
        let fprog = libc::sock_fprog { len: u16::try_from(program.len()).expect("four instructions"), filter: program.as_ptr() as *mut libc::sock_filter };
        set_option(&fd, libc::SOL_SOCKET, SO_ATTACH_FILTER, &fprog, "attach the outgoing-only filter")?;
        let queue = libc::c_int::try_from(queue_bytes).unwrap_or(libc::c_int::MAX);
        // FORCE passes the system's rmem_max (CAP_NET_ADMIN, which the daemon holds); without
        // it the kernel caps the queue, which only makes drops likelier, and they are counted.
        if set_option(&fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, &queue, "queue size").is_err() {
            set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &queue, "queue size")?;
        }
        let timeout = libc::timeval { tv_sec: read_timeout.as_secs() as libc::time_t, tv_usec: read_timeout.subsec_micros() as libc::suseconds_t };
        set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout, "read timeout")?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value, the fields that matter
        // are set below.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = u16::try_from(libc::AF_PACKET).expect("AF_PACKET is 17");
        address.sll_protocol = u16::try_from(libc::ETH_P_ALL).expect("ETH_P_ALL is 3").to_be();
        address.sll_ifindex = ifindex as libc::c_int;
        let len = socklen_of::<libc::sockaddr_ll>();
        // SAFETY: `address` is a live sockaddr_ll and the length passed is its size.
        let bound = unsafe { libc::bind(fd.as_raw_fd(), (&address as *const libc::sockaddr_ll).cast(), len) };
        check("bind to the NIC", bound)?;
        Ok(OutgoingFrames { fd, buf: vec![0; FRAME_MAX] })
    }

    /// The next frame. `TimedOut`/`WouldBlock` after the read timeout; `ENETDOWN` once when
    /// the NIC went down (or the socket was bound while it was down): the socket stays usable
    /// while the NIC exists (see [`OutgoingFrames::bound_ifindex`]).
    pub fn read_next(&mut self) -> io::Result<&[u8]> {
        self.receive(0)
    }

    /// The next frame already queued, without waiting (`WouldBlock` when there is none).
    pub fn read_queued(&mut self) -> io::Result<&[u8]> {
        self.receive(libc::MSG_DONTWAIT)
    }

    fn receive(&mut self, flags: libc::c_int) -> io::Result<&[u8]> {
        // SAFETY: `buf` is a live, writable buffer of the length passed.
        let got = unsafe { libc::recv(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), flags) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(&self.buf[..got as usize])
    }

    /// The NIC the socket is bound to now: the one it was opened on until that NIC is
    /// unregistered (deleted, or moved to another namespace), then -1, for good; the socket
    /// then receives nothing and reports no error.
    pub fn bound_ifindex(&self) -> io::Result<i32> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to be overwritten.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = socklen_of::<libc::sockaddr_ll>();
        // SAFETY: `address` and `len` are live locals; the kernel writes at most `len` bytes.
        let result = unsafe { libc::getsockname(self.fd.as_raw_fd(), (&mut address as *mut libc::sockaddr_ll).cast(), &mut len) };
        check("the socket's NIC", result)?;
        Ok(address.sll_ifindex)
    }

    /// Frames that passed the filter and those of them the kernel dropped because this queue
    /// was full, since the last call (the kernel resets both as it reports them).
    pub fn take_counts(&self) -> io::Result<FrameCounts> {
        let mut stats = TpacketStats::default();
        let mut len = socklen_of::<TpacketStats>();
        // SAFETY: `stats` and `len` are live locals; the kernel writes at most `len` bytes.
        let result = unsafe { libc::getsockopt(self.fd.as_raw_fd(), libc::SOL_PACKET, PACKET_STATISTICS, (&mut stats as *mut TpacketStats).cast(), &mut len) };
        check("packet statistics", result)?;
        Ok(FrameCounts { sent: stats.packets, dropped: stats.drops })
    }
}

/// From [`OutgoingFrames::take_counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounts {
    /// Frames the NIC sent (queued or dropped).
    pub sent: u32,
    /// Of those, the ones dropped unread.
    pub dropped: u32,
}
