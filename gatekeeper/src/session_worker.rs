//! The session worker: the one process that touches what pushers send, with nothing to lose.
//!
//! The daemon starts it for each window (`gatekeeper session-worker`, the same binary) with
//! three descriptors: the relay to the daemon ([`RELAY_FD`]), the signing line ([`SIGN_FD`])
//! and the bound listener ([`LISTENER_FD`]). Before it reads a byte from anyone it confines
//! itself ([`confine`]): an empty root directory that is already deleted (nothing to open, and
//! nothing can be made in it), its own uid and gid, no supplementary groups, no capabilities,
//! no core dumps and no ptrace, no file writes. It then accepts connections, holds them to the
//! handshake pool ([`vault_core::push::admission`]), runs TLS (the vault key stays in the
//! daemon, which signs each handshake's CertificateVerify and nothing else), reads and decodes
//! every frame, and hands the daemon only what passed ([`vault_core::push::relay`]).
//!
//! A worker taken over by a parser bug holds what any pusher key holds (THREATS.md assumes the
//! attacker has those): it can send the daemon frames, which the daemon checks again. It cannot
//! open the data disk, the store or `/proc/sys`, load a module, change a link, or sign anything
//! but a TLS handshake.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use vault_core::keys::PublicKey;
use vault_core::push::admission::{Admission, Admit, ConnectionId, MAX_HANDSHAKES};
use vault_core::push::protocol::{Checked, ClientFrame, Filled, FrameReader, VaultFrame};
use vault_core::push::relay::{credit_cost, FromWorker, SessionNo, ToWorker, MAX_RELAY_FRAME, RELAY_CREDIT};

use crate::error::{GatekeeperError, Result};
use crate::read_ahead::{ReadAhead, SESSION_READ_AHEAD};
use crate::sessions_api::Refusal;

/// The worker's subcommand: `gatekeeper session-worker`, checked before anything else runs.
pub const SUBCOMMAND: &str = "session-worker";
/// The relay to the daemon (a Unix stream socket).
pub const RELAY_FD: RawFd = 3;
/// The signing line: one handshake message out, one signature back (a Unix stream socket).
pub const SIGN_FD: RawFd = 4;
/// The listener the daemon bound to the policy's address and port.
pub const LISTENER_FD: RawFd = 5;
/// The worker's own uid and gid: nothing on the vault belongs to them.
pub const SESSION_UID: u32 = 64_010;
pub const SESSION_GID: u32 = 64_010;
/// Where the worker makes (and at once deletes) its empty root: a tmpfs on the appliance.
pub const JAIL_PARENT: &str = "/run";
/// Descriptors the worker may hold: the handshake pool, the sessions, its own few.
const MAX_OPEN_FILES: u64 = 256;
/// Address space the worker may map: its sessions' buffers many times over, far below what it
/// would take to push the daemon out of memory.
const MAX_ADDRESS_SPACE: u64 = 2 << 30;
/// How long a signature may take the daemon.
const SIGN_DEADLINE: Duration = Duration::from_secs(5);
/// A last frame (a receipt, a refusal) is written within this, or the connection is dropped.
const LAST_FRAME_DEADLINE: Duration = Duration::from_secs(2);

/// What [`confine`] left the worker with, as the daemon will check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confinement {
    pub uid: u32,
    pub gid: u32,
    pub capabilities_permitted: u64,
    pub capabilities_effective: u64,
    pub no_new_privileges: bool,
    /// Whether anything of a filesystem is in sight (`/proc`, `/dev`, any entry in `/`).
    pub sees_files: bool,
}

impl Confinement {
    /// What the daemon requires of a worker before it lets it serve: why not, if it may not.
    pub fn refusal(&self) -> Option<String> {
        let problems: Vec<String> = [
            (self.uid == 0, format!("runs as uid {}", self.uid)),
            (self.gid == 0, format!("runs as gid {}", self.gid)),
            (
                self.capabilities_permitted != 0 || self.capabilities_effective != 0,
                format!("holds capabilities (permitted {:#x}, effective {:#x})", self.capabilities_permitted, self.capabilities_effective),
            ),
            (!self.no_new_privileges, "may gain privileges on exec (no_new_privs unset)".to_string()),
            (self.sees_files, "can see a filesystem".to_string()),
        ]
        .into_iter()
        .filter_map(|(bad, what)| bad.then_some(what))
        .collect();
        (!problems.is_empty()).then(|| format!("the session worker is not confined: it {}", problems.join(", ")))
    }
}

/// Confines the calling process, which must still be single-threaded (the uid change applies to
/// the calling thread only). Every step is required; the first that fails is named.
pub fn confine(jail_parent: &Path) -> Result<Confinement> {
    use nix::sys::resource::{setrlimit, Resource};
    use nix::unistd::{Gid, Uid};
    let step = |step: &'static str| move |e: nix::errno::Errno| GatekeeperError::Confine { step, reason: e.desc().to_string() };
    // No core file and no ptrace by anyone of the same uid; /proc/<pid> stays root's.
    nix::sys::prctl::set_dumpable(false).map_err(step("prctl(PR_SET_DUMPABLE, 0)"))?;
    // First to go if memory runs out, and never more than a bound of it.
    std::fs::write("/proc/self/oom_score_adj", "1000").map_err(|e| GatekeeperError::Confine { step: "oom_score_adj 1000", reason: e.to_string() })?;
    setrlimit(Resource::RLIMIT_AS, MAX_ADDRESS_SPACE, MAX_ADDRESS_SPACE).map_err(step("bounded memory (RLIMIT_AS)"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(step("no core dumps (RLIMIT_CORE 0)"))?;
    // Sockets are not files: a write to any file fails (SIGXFSZ is ignored below, so EFBIG).
    setrlimit(Resource::RLIMIT_FSIZE, 0, 0).map_err(step("no file writes (RLIMIT_FSIZE 0)"))?;
    setrlimit(Resource::RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES).map_err(step("bounded descriptors (RLIMIT_NOFILE)"))?;
    // SAFETY: setting a signal to SIG_IGN installs no handler code; nothing else runs yet.
    unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGXFSZ, nix::sys::signal::SigHandler::SigIgn) }.map_err(step("ignore SIGXFSZ"))?;
    enter_deleted_jail(jail_parent)?;
    nix::unistd::setgroups(&[]).map_err(step("setgroups([])"))?;
    let (gid, uid) = (Gid::from_raw(SESSION_GID), Uid::from_raw(SESSION_UID));
    nix::unistd::setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    // From uid 0 to another uid: the kernel clears the permitted and effective capabilities.
    nix::unistd::setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    nix::sys::prctl::set_no_new_privs().map_err(step("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    Ok(Confinement {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        capabilities_permitted: capability_bits(caps::CapSet::Permitted),
        capabilities_effective: capability_bits(caps::CapSet::Effective),
        no_new_privileges: nix::sys::prctl::get_no_new_privs().unwrap_or(false),
        sees_files: ["/proc", "/dev", "/sys", "/data", "/run"].iter().any(|p| Path::new(p).exists()) || std::fs::read_dir("/").map(|mut d| d.next().is_some()).unwrap_or(false),
    })
}

/// Makes a fresh directory, makes it the root and the working directory, then deletes it: the
/// process is left in a directory with no entries that can never get one.
fn enter_deleted_jail(parent: &Path) -> Result<()> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let step = |step: &'static str| move |e: nix::errno::Errno| GatekeeperError::Confine { step, reason: e.desc().to_string() };
    let dir = open(parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(step("open the jail's parent directory"))?;
    let name = format!("vault-session-jail.{}", std::process::id());
    // A leftover of a worker that died here (same pid, an earlier boot of the tmpfs cannot be).
    let _ = nix::unistd::unlinkat(&dir, name.as_str(), nix::unistd::UnlinkatFlags::RemoveDir);
    nix::sys::stat::mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(0o111)).map_err(step("make the jail directory"))?;
    let jail = parent.join(&name);
    let entered = nix::unistd::chdir(&jail).and_then(|()| nix::unistd::chroot(".")).and_then(|()| nix::unistd::chdir("/"));
    // Deleted whether or not it was entered: no directory is left behind.
    let removed = nix::unistd::unlinkat(&dir, name.as_str(), nix::unistd::UnlinkatFlags::RemoveDir);
    entered.map_err(step("chroot into the jail"))?;
    removed.map_err(step("delete the jail directory"))?;
    Ok(())
}

fn capability_bits(set: caps::CapSet) -> u64 {
    match caps::read(None, set) {
        Ok(held) => held.iter().fold(0u64, |bits, cap| bits | cap.bitmask()),
        // Unreadable counts as everything: the daemon refuses such a worker.
        Err(_) => u64::MAX,
    }
}

/// `gatekeeper session-worker`: confines itself, tells the daemon what it is, serves the window
/// until the daemon closes the relay. Never returns normally.
pub fn main() -> ! {
    // SAFETY: these descriptors were placed at these numbers by the daemon (dup2 before exec)
    // for this process alone; nothing else in it owns them.
    let (relay, sign, listener) = unsafe { (OwnedFd::from_raw_fd(RELAY_FD), OwnedFd::from_raw_fd(SIGN_FD), OwnedFd::from_raw_fd(LISTENER_FD)) };
    let mut relay = std::os::unix::net::UnixStream::from(relay);
    // The one argument: where to make the jail (tests point it elsewhere).
    let jail_parent = std::env::args_os().nth(2).map_or_else(|| std::path::PathBuf::from(JAIL_PARENT), std::path::PathBuf::from);
    let confinement = match confine(&jail_parent) {
        Ok(confinement) => confinement,
        Err(e) => {
            // Said to the daemon (the worker has no console), which keeps the window shut.
            if let Ok(said) = (FromWorker::Refused { peer: String::new(), reason: format!("it could not confine itself: {e}") }).encode() {
                let _ = relay.write_all(&said);
            }
            std::process::exit(2);
        }
    };
    crate::heap::keep_freed_heap();
    let hello = FromWorker::Confined {
        uid: confinement.uid,
        gid: confinement.gid,
        capabilities_permitted: confinement.capabilities_permitted,
        capabilities_effective: confinement.capabilities_effective,
        no_new_privileges: confinement.no_new_privileges,
        sees_files: confinement.sees_files,
    };
    // One thread: TLS for a window's sessions fits one core, and with the runtime made, the
    // process limit can say no more (no fork, no thread: nothing outlives a kill). Only then does
    // the worker say it is confined: the daemon's `session_worker_started` means all of it.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(runtime) = runtime else { std::process::exit(4) };
    if nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, 1, 1).is_err() {
        std::process::exit(4);
    }
    let start =
        hello.encode().map_err(GatekeeperError::from).and_then(|bytes| relay.write_all(&bytes).map_err(|source| GatekeeperError::Io { what: "relay", source })).and_then(|()| read_start(&mut relay));
    let Ok(start) = start else { std::process::exit(3) };
    runtime.block_on(serve(relay, std::os::unix::net::UnixStream::from(sign), std::net::TcpListener::from(listener), start));
    std::process::exit(0)
}

/// The window's settings, the daemon's first message.
struct Start {
    vault_key: PublicKey,
    pushers: Vec<PublicKey>,
    handshake: Duration,
    idle: Duration,
}

fn read_start(relay: &mut std::os::unix::net::UnixStream) -> Result<Start> {
    let mut reader = FrameReader::with_limit(MAX_RELAY_FRAME);
    loop {
        let n = relay.read(reader.unfilled()).map_err(|source| GatekeeperError::Io { what: "relay", source })?;
        if n == 0 {
            return Err(GatekeeperError::Worker { reason: "the daemon closed the relay before starting the window".into() });
        }
        if let Filled::Frame { body, .. } = reader.filled(n)? {
            return match ToWorker::decode(body)? {
                ToWorker::Start { vault_key, pushers, handshake_ms, idle_ms } => Ok(Start {
                    vault_key: PublicKey::from_bytes(vault_key),
                    pushers: pushers.into_iter().map(PublicKey::from_bytes).collect(),
                    handshake: Duration::from_millis(handshake_ms.into()),
                    idle: Duration::from_millis(idle_ms.into()),
                }),
                other => Err(GatekeeperError::Worker { reason: format!("the daemon's first message was not the window's settings: {other:?}") }),
            };
        }
    }
}

/// The daemon signs each handshake: one request at a time on the signing line (a short blocking
/// exchange with a local process; the runtime has another thread meanwhile).
fn remote_signer(line: std::os::unix::net::UnixStream) -> vault_tls::SignElsewhere {
    let _ = line.set_read_timeout(Some(SIGN_DEADLINE));
    let _ = line.set_write_timeout(Some(SIGN_DEADLINE));
    let line = Mutex::new(line);
    Arc::new(move |message: &[u8]| {
        let mut line = line.lock().map_err(|_| "the signing line is poisoned".to_string())?;
        let len = u16::try_from(message.len()).map_err(|_| format!("a {}-byte message is too long to sign", message.len()))?;
        line.write_all(&len.to_be_bytes()).and_then(|()| line.write_all(message)).map_err(|e| format!("asking the daemon to sign: {e}"))?;
        let mut signature = [0u8; 64];
        line.read_exact(&mut signature).map_err(|e| format!("the daemon did not sign: {e}"))?;
        Ok(signature.to_vec())
    })
}

/// One admitted-or-waiting connection, as the relay reader reaches it.
struct SessionHandle {
    admit: Option<oneshot::Sender<()>>,
    to_peer: mpsc::UnboundedSender<Outgoing>,
    credit: Arc<Semaphore>,
    task: tokio::task::AbortHandle,
}

enum Outgoing {
    Frame(Vec<u8>),
    Last(Option<Vec<u8>>),
}

type Sessions = Arc<Mutex<HashMap<SessionNo, SessionHandle>>>;

/// The buffer each end of the relay writes through (and the worker reads the daemon's messages
/// through): small messages go many to a syscall; a frame larger than this goes straight through.
pub const RELAY_WRITE_BUFFER: usize = 64 << 10;

/// The worker's queue of messages for the daemon.
const WORKER_OUTBOX: usize = 256;

/// One write of the relay (either end): `first`, then whatever else is already queued, at most
/// `max` messages in all (a steady stream is not one endless batch), then a flush. A message
/// `encode` turns to `None` is skipped.
pub async fn write_queued<W: AsyncWrite + Unpin, M>(
    out: &mut tokio::io::BufWriter<W>,
    first: M,
    queue: &mut mpsc::Receiver<M>,
    max: usize,
    encode: impl Fn(M) -> Option<Vec<u8>>,
) -> std::io::Result<()> {
    let mut next = Some(first);
    let mut left = max;
    while let Some(message) = next.take() {
        if let Some(bytes) = encode(message) {
            out.write_all(&bytes).await?;
        }
        left = left.saturating_sub(1);
        next = if left > 0 { queue.try_recv().ok() } else { None };
    }
    out.flush().await
}

async fn serve(relay: std::os::unix::net::UnixStream, sign: std::os::unix::net::UnixStream, listener: std::net::TcpListener, start: Start) {
    let (Ok(()), Ok(())) = (relay.set_nonblocking(true), listener.set_nonblocking(true)) else { return };
    let (Ok(relay), Ok(listener)) = (UnixStream::from_std(relay), TcpListener::from_std(listener)) else { return };
    let (relay_in, relay_out) = relay.into_split();
    // Messages for the daemon, already encoded (a pusher's frame straight from the bytes read).
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(WORKER_OUTBOX);
    // The relay writer: in order, messages queued together in one write (a frame larger than
    // the buffer goes straight through), flushed as soon as none is waiting.
    tokio::spawn(async move {
        let mut relay_out = tokio::io::BufWriter::with_capacity(RELAY_WRITE_BUFFER, relay_out);
        while let Some(bytes) = out_rx.recv().await {
            if write_queued(&mut relay_out, bytes, &mut out_rx, WORKER_OUTBOX, Some).await.is_err() {
                std::process::exit(0);
            }
        }
    });
    let tls = match vault_tls::server_config_signed_elsewhere(remote_signer(sign), &start.vault_key, start.pushers.clone()) {
        Ok(config) => TlsAcceptor::from(config),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "gatekeeper session-worker: TLS configuration: {e}");
            std::process::exit(5);
        }
    };
    let sessions: Sessions = Arc::default();
    let stop_accepting = Arc::new(Notify::new());
    tokio::spawn(read_relay(relay_in, sessions.clone(), stop_accepting.clone()));
    let admission = Arc::new(Mutex::new(Handshakes::default()));
    let limits = Arc::new(start);
    let mut next: SessionNo = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop_accepting.notified() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // Out of descriptors or memory for a moment: not a reason to spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        next += 1;
        let (evict_tx, evict_rx) = oneshot::channel();
        let admitted = admission.lock().expect("handshakes lock").admit(next, peer.ip(), evict_tx);
        if let Err(reason) = admitted {
            drop(stream);
            if let Ok(bytes) = (FromWorker::Refused { peer: peer.to_string(), reason }).encode() {
                let _ = out_tx.send(bytes).await;
            }
            continue;
        }
        let (admit_tx, admit_rx) = oneshot::channel();
        let (to_peer_tx, to_peer_rx) = mpsc::unbounded_channel();
        let credit = Arc::new(Semaphore::new(RELAY_CREDIT as usize));
        let connection = Connection { session: next, peer, out: out_tx.clone(), limits: limits.clone() };
        let pre_auth = PreAuth { handshakes: admission.clone(), evicted: evict_rx };
        let (tls, task_credit, task_sessions) = (tls.clone(), credit.clone(), sessions.clone());
        // Inserted before the task can end and remove it (it takes the same lock to do so).
        let mut held = sessions.lock().expect("sessions lock");
        let task = tokio::spawn(async move {
            connection.run(stream, tls, pre_auth, admit_rx, to_peer_rx, task_credit).await;
            task_sessions.lock().expect("sessions lock").remove(&next);
        });
        held.insert(next, SessionHandle { admit: Some(admit_tx), to_peer: to_peer_tx, credit, task: task.abort_handle() });
        drop(held);
    }
    drop(listener);
    // Sessions in flight go on until the daemon closes the relay (then the process exits).
    std::future::pending::<()>().await;
}

/// The daemon's messages, to the sessions they name. The relay closing (the window is over, or
/// the daemon is gone) or a message that does not decode ends the process.
async fn read_relay(relay: tokio::net::unix::OwnedReadHalf, sessions: Sessions, stop_accepting: Arc<Notify>) {
    // The daemon's messages are small and come many to a write: read many to a syscall.
    let mut relay = tokio::io::BufReader::with_capacity(RELAY_WRITE_BUFFER, relay);
    let mut reader = FrameReader::with_limit(MAX_RELAY_FRAME);
    loop {
        let n = match relay.read(reader.unfilled()).await {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(n) => n,
        };
        let body = match reader.filled(n) {
            Ok(Filled::Frame { body, .. }) => body,
            Ok(_) => continue,
            Err(_) => std::process::exit(6),
        };
        let Ok(message) = ToWorker::decode(body) else { std::process::exit(6) };
        let mut sessions = sessions.lock().expect("sessions lock");
        match message {
            ToWorker::Start { .. } => std::process::exit(6),
            ToWorker::StopAccepting => stop_accepting.notify_one(),
            ToWorker::Admit { session } => {
                if let Some(admit) = sessions.get_mut(&session).and_then(|s| s.admit.take()) {
                    let _ = admit.send(());
                }
            }
            ToWorker::Send { session, frame } => {
                if let Some(s) = sessions.get(&session) {
                    let _ = s.to_peer.send(Outgoing::Frame(frame));
                }
            }
            ToWorker::Consumed { session, credit } => {
                if let Some(s) = sessions.get(&session) {
                    // Never more than the credit the session started with.
                    let room = (RELAY_CREDIT as usize).saturating_sub(s.credit.available_permits());
                    s.credit.add_permits(room.min(credit as usize));
                }
            }
            ToWorker::Finish { session, frame } => {
                if let Some(s) = sessions.get(&session) {
                    let _ = s.to_peer.send(Outgoing::Last(frame));
                }
            }
            ToWorker::Drop { session } => {
                if let Some(s) = sessions.remove(&session) {
                    s.task.abort();
                }
            }
        }
    }
}

/// A connection's place in the handshake pool ([`vault_core::push::admission`]).
struct PreAuth {
    handshakes: Arc<Mutex<Handshakes>>,
    /// Fires when a newer connection took this place.
    evicted: oneshot::Receiver<()>,
}

/// The admission rule, and how to end each handshake it evicts.
#[derive(Default)]
struct Handshakes {
    rule: Admission,
    evict: HashMap<ConnectionId, oneshot::Sender<()>>,
}

impl Handshakes {
    /// Admits a connection or says why not; ends the handshake the rule evicts to make room.
    fn admit(&mut self, id: ConnectionId, source: std::net::IpAddr, evict: oneshot::Sender<()>) -> std::result::Result<(), String> {
        // Which handshake makes way when the pool is full is picked at random (rustls already
        // draws from the same source for every handshake).
        let mut pick = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut pick);
        match self.rule.admit(id, source, u64::from_le_bytes(pick)) {
            Admit::No(reason) => return Err(reason),
            Admit::YesEvicting(evicted) => {
                if let Some(end) = self.evict.remove(&evicted) {
                    let _ = end.send(());
                }
            }
            Admit::Yes => {}
        }
        self.evict.insert(id, evict);
        Ok(())
    }

    fn finished(&mut self, id: ConnectionId) {
        self.rule.finished(id);
        self.evict.remove(&id);
    }
}

struct Connection {
    session: SessionNo,
    peer: SocketAddr,
    out: mpsc::Sender<Vec<u8>>,
    limits: Arc<Start>,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: TlsAcceptor, pre_auth: PreAuth, admitted: oneshot::Receiver<()>, mut to_peer: mpsc::UnboundedReceiver<Outgoing>, credit: Arc<Semaphore>) {
        let refuse = |reason: String| FromWorker::Refused { peer: self.peer.to_string(), reason };
        let _ = stream.set_nodelay(true);
        let PreAuth { handshakes, evicted } = pre_auth;
        let handshake = self.limits.handshake;
        let outcome = tokio::select! {
            done = tokio::time::timeout(handshake, tls.accept(ReadAhead::new(stream))) => Some(done),
            _ = evicted => None,
        };
        handshakes.lock().expect("handshakes lock").finished(self.session);
        let mut stream = match outcome {
            Some(Ok(Ok(stream))) => stream,
            Some(Ok(Err(e))) => return self.tell(refuse(format!("TLS handshake failed: {}", vault_tls::explain(&e)))).await,
            Some(Err(_)) => return self.tell(refuse(format!("TLS handshake not finished within {handshake:?}"))).await,
            None => return self.tell(refuse(format!("TLS handshake unfinished when the handshake pool was full ({MAX_HANDSHAKES}): ended to make way for a newer connection"))).await,
        };
        let Some(key) = vault_tls::peer_key(stream.get_ref().1.peer_certificates()) else {
            return self.tell(refuse("the handshake proved no raw Ed25519 key".into())).await;
        };
        self.tell(FromWorker::Authenticated { session: self.session, peer: self.peer.to_string(), key: *key.as_bytes() }).await;
        // The daemon decides whether this key may push now (a Drop ends this task instead).
        if admitted.await.is_err() {
            return;
        }
        stream.get_mut().0.read_ahead(SESSION_READ_AHEAD);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let incoming = self.forward_frames(&mut reader, &credit);
        tokio::pin!(incoming);
        loop {
            tokio::select! {
                ending = &mut incoming => {
                    let Refusal { reason, tell_peer } = ending;
                    let told = tell_peer && last_frame(&mut writer, VaultFrame::Refused { reason: reason.clone() }.encode().ok()).await.is_ok();
                    return self.tell(FromWorker::Ended { session: self.session, reason, told_peer: told }).await;
                }
                outgoing = to_peer.recv() => match outgoing {
                    Some(Outgoing::Frame(frame)) => {
                        // A pusher that stops reading ends here, not holding the session open.
                        let idle = self.limits.idle;
                        let written = tokio::time::timeout(idle, write_frame(&mut writer, &frame)).await;
                        let failed = match written {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(format!("write failed: {e}")),
                            Err(_) => Some(format!("the pusher did not read a reply within {idle:?}")),
                        };
                        if let Some(reason) = failed {
                            return self.tell(FromWorker::Ended { session: self.session, reason, told_peer: false }).await;
                        }
                    }
                    Some(Outgoing::Last(frame)) => {
                        let error = last_frame(&mut writer, frame).await.err();
                        return self.tell(FromWorker::Finished { session: self.session, error }).await;
                    }
                    None => return,
                },
            }
        }
    }

    async fn tell(&self, message: FromWorker) {
        if let Ok(bytes) = message.encode() {
            let _ = self.out.send(bytes).await;
        }
    }

    /// Reads, checks and decodes frames, and forwards each to the daemon while the session has
    /// credit ([`credit_cost`] of it per frame). After a commit it reads no more (the pusher waits
    /// for its receipt). Returns why the connection ended.
    async fn forward_frames<R: AsyncRead + Unpin>(&self, reader: &mut R, credit: &Semaphore) -> Refusal {
        let mut frames = FrameReader::default();
        loop {
            // Checked as the daemon will decode it, then copied once, into the relay message.
            let relayed = read_frame(reader, &mut frames, self.limits.idle, |body, wire_bytes| {
                let checked = ClientFrame::check(body).map_err(|e| Refusal::told(e.to_string()))?;
                let message = FromWorker::encode_frame(self.session, u32::try_from(wire_bytes).unwrap_or(u32::MAX), body).map_err(|e| Refusal::told(e.to_string()))?;
                Ok((checked, credit_cost(wire_bytes), message))
            });
            let (checked, cost, message) = match relayed.await {
                Ok(relayed) => relayed,
                Err(ending) => return ending,
            };
            // Waiting for the daemon is not the pusher being idle: the next read's deadline
            // starts after. Meanwhile this one frame waits here, and the pusher's further
            // frames wait in TCP.
            match credit.acquire_many(cost).await {
                Ok(permit) => permit.forget(),
                Err(_) => return Refusal::gone("the session's credit was closed".into()),
            }
            let _ = self.out.send(message).await;
            if checked == Checked::Commit {
                return std::future::pending().await;
            }
        }
    }
}

/// Reads one frame through the protocol's frame reader: the length prefix is checked before
/// room is made for the body, and each part (prefix, body) must arrive within the idle
/// deadline, so a slow trickle ends there. Hands `take` the body and its size on the wire.
async fn read_frame<S: AsyncRead + Unpin, T>(
    stream: &mut S,
    frames: &mut FrameReader,
    idle: Duration,
    take: impl FnOnce(&[u8], usize) -> std::result::Result<T, Refusal>,
) -> std::result::Result<T, Refusal> {
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        let at_boundary = frames.at_frame_boundary();
        let n = match tokio::time::timeout_at(deadline, stream.read(frames.unfilled())).await {
            Err(_) if at_boundary => return Err(Refusal::told(format!("idle: no frame within {idle:?}"))),
            Err(_) => return Err(Refusal::told(format!("idle: frame not received within {idle:?}"))),
            Ok(Ok(0)) if at_boundary => return Err(Refusal::gone("connection closed before commit".into())),
            Ok(Ok(0)) => return Err(Refusal::gone("connection lost mid-frame".into())),
            Ok(Err(e)) => return Err(Refusal::gone(format!("read failed: {e}"))),
            Ok(Ok(n)) => n,
        };
        match frames.filled(n).map_err(|e| Refusal::told(e.to_string()))? {
            Filled::More => {}
            Filled::BodyNext { .. } => deadline = tokio::time::Instant::now() + idle,
            Filled::Frame { body, wire_bytes } => return take(body, wire_bytes),
        }
    }
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> std::io::Result<()> {
    stream.write_all(frame).await?;
    stream.flush().await
}

/// Writes a last frame (if any) and shuts the connection down, within [`LAST_FRAME_DEADLINE`].
async fn last_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: Option<Vec<u8>>) -> std::result::Result<(), String> {
    let written = tokio::time::timeout(LAST_FRAME_DEADLINE, async {
        if let Some(frame) = frame {
            write_frame(stream, &frame).await?;
        }
        stream.shutdown().await
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err(format!("not written within {LAST_FRAME_DEADLINE:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confined() -> Confinement {
        Confinement { uid: SESSION_UID, gid: SESSION_GID, capabilities_permitted: 0, capabilities_effective: 0, no_new_privileges: true, sees_files: false }
    }

    #[test]
    fn only_a_worker_without_root_capabilities_or_files_is_used() {
        assert_eq!(confined().refusal(), None);
        let root = Confinement { uid: 0, gid: 0, ..confined() };
        assert_eq!(root.refusal().unwrap(), "the session worker is not confined: it runs as uid 0, runs as gid 0");
        let capable = Confinement { capabilities_effective: 1 << 12, sees_files: true, no_new_privileges: false, ..confined() };
        let why = capable.refusal().unwrap();
        assert!(why.contains("holds capabilities (permitted 0x0, effective 0x1000)") && why.contains("no_new_privs unset") && why.contains("can see a filesystem"), "{why}");
    }
}
