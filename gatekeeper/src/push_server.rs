//! The push-session server, the daemon's side: what a window's sessions become once the session
//! worker ([`crate::session_worker`]) has handled the network.
//!
//! For each window the daemon starts a worker on the window's listener and talks to it over the
//! relay ([`vault_core::push::relay`]). The worker accepts, runs TLS and reads frames; the
//! daemon decides who may push (the policy's keys, the session places), feeds each frame to the
//! pure [`vault_core::push::ingest::IngestSession`], stages verified chunks, and on a commit
//! seals the snapshot in the store, signs the receipt and has the worker deliver it; only then
//! does it report the commit to the gate. Any refusal is sent with its reason, logged, and
//! closes the session; what it staged is removed. A worker that breaks the relay's rules is
//! stopped and the window closed with an alarm.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use vault_core::keys::PublicKey;
use vault_core::policy::{Policy, Pusher};
use vault_core::push::chunk::ChunkId;
use vault_core::push::ingest::{ChunkStep, HashedFrame, IngestEnv, IngestSession, SealRequest, Step};
use vault_core::push::limits::{places_per_pusher, Progress, WindowAccount};
use vault_core::push::protocol::{ClientFrame, Filled, FrameReader, VaultFrame};
use vault_core::push::receipt::{snapshot_id, Receipt, SignedReceipt};
use vault_core::push::relay::{credit_cost, FromWorker, InPlace, SessionNo, ToWorker, MAX_FRAMES_IN_CREDIT, MAX_RELAY_FRAME, RELAY_CREDIT};
use vault_core::units::TimeProvider;
use vault_store::{SealInput, Sealed, StagedTable, StagingPack, Store};

use crate::error::{GatekeeperError, Result as GkResult};
use crate::events::{Event, EventLog};
use crate::identity::VaultIdentity;
use crate::session_worker::{write_queued, Confinement, LISTENER_FD, RELAY_FD, RELAY_WRITE_BUFFER, SIGN_FD};
use crate::sessions_api::{Refusal, SessionContext, SessionReport, SessionServer, Stop};

/// Deadlines and caps, checked before anything is allocated for a peer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From TCP accept to a finished TLS handshake.
    pub handshake: Duration,
    /// Longest wait for (any part of) the next frame: slowloris ends here.
    pub idle: Duration,
    /// Concurrent sessions (after TLS proved a pusher key); one more is refused.
    pub max_connections: usize,
    /// A pause after each seal step (zero but in power-cut tests; see
    /// [`crate::init::SEAL_STEP_PAUSE_PARAM`]).
    pub seal_step_pause: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { handshake: Duration::from_secs(5), idle: Duration::from_secs(30), max_connections: 16, seal_step_pause: Duration::ZERO }
    }
}

pub struct PushService {
    /// Where each session worker makes its jail ([`crate::session_worker::JAIL_PARENT`]).
    pub jail_parent: std::path::PathBuf,
    pub store: Arc<Store>,
    pub identity: Arc<VaultIdentity>,
    pub limits: Limits,
    /// One commit is checked and sealed at a time (see [`PushService::ingest`]).
    pub commits: Semaphore,
    /// Held shared from a commit's chunk check to the end of its seal; the lifecycle (expiry,
    /// collection, scrub) holds it exclusively ([`crate::lifecycle::Maintenance`]).
    pub maintenance: crate::lifecycle::Maintenance,
    /// Whether a session's next frame is hashed on another thread while it stores the one
    /// before ([`Conn::next_frame`]): only where the daemon may run on more than one CPU.
    pub hash_ahead: bool,
}

impl PushService {
    pub fn new(store: Arc<Store>, identity: Arc<VaultIdentity>, limits: Limits) -> PushService {
        let hash_ahead = std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() > 1);
        PushService { jail_parent: crate::session_worker::JAIL_PARENT.into(), store, identity, limits, commits: Semaphore::new(1), maintenance: Arc::default(), hash_ahead }
    }
}

/// The production server for [`crate::sessions_api`].
pub fn server(service: Arc<PushService>) -> SessionServer {
    Arc::new(move |ctx| Box::pin(service.clone().serve_window(ctx)))
}

/// What each pusher spent in this window (shared by that pusher's concurrent sessions).
type WindowAccounts = Arc<Mutex<HashMap<String, WindowAccount>>>;

impl PushService {
    /// One window: starts the session worker on the window's listener, then turns what it
    /// relays into sessions, until the window closes (or the worker breaks the relay's rules,
    /// which ends the window with an alarm).
    async fn serve_window(self: Arc<Self>, mut ctx: SessionContext) {
        let reports = ctx.reports.clone();
        let mut worker = match Worker::start(ctx.listener, &self.jail_parent, &self.identity, &ctx.policy, &self.limits, reports.clone()).await {
            Ok(worker) => worker,
            Err(e) => {
                let _ = reports.send(SessionReport::ServerFailed { reason: e.to_string() }).await;
                return;
            }
        };
        let c = worker.confinement;
        let _ = reports.send(SessionReport::Note(Box::new(Event::SessionWorkerStarted { pid: worker.pid, uid: c.uid, gid: c.gid }))).await;
        let mut window = WindowSessions {
            service: self.clone(),
            window: Arc::new(Window { policy: ctx.policy.clone(), accounts: Arc::default(), clock: ctx.clock.clone(), suspects: ctx.suspects.clone() }),
            slots: Arc::new(Semaphore::new(self.limits.max_connections)),
            routes: HashMap::new(),
            peers: HashMap::new(),
            holding: HashMap::new(),
            refusals: Default::default(),
            tasks: JoinSet::new(),
            reports: reports.clone(),
            relay: worker.to.clone(),
        };
        let mut accepting = true;
        let mut worker_alive = true;
        loop {
            tokio::select! {
                changed = ctx.stop.changed() => {
                    let stop = if changed.is_err() { Stop::AbortAll } else { *ctx.stop.borrow() };
                    match stop {
                        Stop::Running => {}
                        Stop::StopAccepting => {
                            accepting = false;
                            // Never waits: a worker that stopped reading is stopped with the window.
                            let _ = worker.to.try_send(ToWorker::StopAccepting);
                        }
                        Stop::AbortAll => {
                            accepting = false;
                            worker_alive = false;
                            worker.stop();
                            window.tasks.abort_all();
                        }
                    }
                }
                message = worker.recv(), if worker_alive => {
                    let breach = match message {
                        Ok(Relayed::Message(message)) => window.on_message(message).await.err(),
                        Ok(Relayed::Frame { session, input }) => window.route(session, input).err(),
                        Err(e) => Some(format!("the relay ended: {e}")),
                    };
                    if let Some(reason) = breach {
                        // Whatever the worker did, it serves no more in this window.
                        worker_alive = false;
                        accepting = false;
                        worker.stop();
                        window.tasks.abort_all();
                        let _ = reports.send(SessionReport::ServerFailed { reason: format!("the session worker (pid {}) was stopped: {reason}", worker.pid) }).await;
                    }
                }
                Some(done) = window.tasks.join_next_with_id(), if !window.tasks.is_empty() => {
                    let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                    if let Err(reason) = window.ended(id).await {
                        worker_alive = false;
                        accepting = false;
                        worker.stop();
                        window.tasks.abort_all();
                        let _ = reports.send(SessionReport::ServerFailed { reason: format!("the session worker (pid {}) was stopped: {reason}", worker.pid) }).await;
                    }
                }
            }
            if !accepting && window.tasks.is_empty() {
                worker.stop();
                let counted = window.refusals.unrecorded();
                if !counted.is_empty() {
                    let total = counted.iter().map(|(_, n)| n).sum();
                    window.note(Event::RefusalsCounted { sources: counted.into_iter().map(|(source, n)| format!("{source}: {n}")).collect(), total }).await;
                }
                return;
            }
        }
    }
}

/// The sessions of one window, as the daemon holds them.
struct WindowSessions {
    service: Arc<PushService>,
    window: Arc<Window>,
    slots: Arc<Semaphore>,
    /// Where each admitted session's relayed input goes.
    routes: HashMap<SessionNo, Route>,
    peers: HashMap<tokio::task::Id, (SessionNo, SocketAddr, String)>,
    /// Session places each pusher holds now.
    holding: HashMap<String, usize>,
    refusals: vault_core::push::admission::RefusalBudget,
    tasks: JoinSet<()>,
    reports: mpsc::Sender<SessionReport>,
    relay: mpsc::Sender<ToWorker>,
}

/// A relay message that breaks the relay's rules: the worker is stopped.
type Breach = String;

impl WindowSessions {
    async fn note(&self, event: Event) {
        let _ = self.reports.send(SessionReport::Note(Box::new(event))).await;
    }

    async fn on_message(&mut self, message: FromWorker) -> Result<(), Breach> {
        match message {
            FromWorker::Confined { .. } => return Err("it said it was confined a second time".into()),
            FromWorker::Refused { peer, reason } => {
                // Strangers' refusals are recorded up to a budget per source, then counted.
                if self.refusals.record(peer.parse::<SocketAddr>().ok().map(|p| p.ip())) {
                    self.note(Event::SessionRefused { peer, pusher: None, reason }).await;
                }
            }
            FromWorker::Authenticated { session, peer, key } => {
                let peer: SocketAddr = peer.parse().map_err(|_| format!("session {session}: `{peer}` is not a peer address"))?;
                if self.routes.contains_key(&session) {
                    return Err(format!("session {session} was authenticated twice"));
                }
                self.admit(session, peer, PublicKey::from_bytes(key)).await?;
            }
            // Never made by Worker::recv, which decodes frames in place (Relayed::Frame).
            FromWorker::Frame { session, .. } => return Err(format!("session {session}: a frame that was not decoded in place")),
            FromWorker::Ended { session, reason, .. } => self.route(session, Inbound::Ended { reason })?,
            FromWorker::Finished { session, error } => self.route(session, Inbound::Finished(error))?,
        }
        Ok(())
    }

    /// A message for the worker, never waited for: a relay that is full means the worker
    /// stopped reading, which is a breach (the window loop must never block on it).
    fn tell(&self, message: ToWorker) -> Result<(), Breach> {
        match self.relay.try_send(message) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err("it stopped reading the relay (the daemon's queue to it is full)".into()),
        }
    }

    /// A key the TLS handshake proved: a session if the policy lists it and a place is free.
    async fn admit(&mut self, session: SessionNo, peer: SocketAddr, key: PublicKey) -> Result<(), Breach> {
        let refuse = |pusher: Option<String>, reason: String| Event::SessionRefused { peer: peer.to_string(), pusher, reason };
        // The worker's TLS already refused unlisted keys; the daemon does not take its word.
        let Some(pusher) = self.window.policy.pusher_by_key(&key).cloned() else {
            self.tell(ToWorker::Drop { session })?;
            self.note(refuse(None, format!("authenticated key {key} is not a pusher of this policy"))).await;
            return Ok(());
        };
        // A pusher: now it takes a session's place, and the gate counts it. One pusher holds
        // at most its share of the places, so one key cannot keep the others out.
        let (places, pushers) = (self.service.limits.max_connections, self.window.policy.pushers.len());
        let share = places_per_pusher(places, pushers);
        let holding = self.holding.get(&pusher.name).copied().unwrap_or(0);
        if holding >= share {
            self.tell(ToWorker::Drop { session })?;
            let reason = format!(
                "too many sessions of pusher `{}`: {holding} already in progress, at most {share} (the vault's {places} session places shared by the policy's {pushers} pushers); push again when one has ended",
                pusher.name
            );
            self.note(refuse(Some(pusher.name.clone()), reason)).await;
            return Ok(());
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.tell(ToWorker::Drop { session })?;
            self.note(refuse(Some(pusher.name.clone()), format!("too many sessions: {places} already in progress"))).await;
            return Ok(());
        };
        *self.holding.entry(pusher.name.clone()).or_default() += 1;
        self.tell(ToWorker::Admit { session })?;
        let (tx, inbox) = mpsc::channel(INBOX_CAPACITY);
        let credit = Arc::new(CreditInUse::default());
        self.routes.insert(session, Route { inbox: tx, credit: credit.clone() });
        let _ = self.reports.send(SessionReport::Started { peer }).await;
        self.note(Event::SessionAccepted { peer: peer.to_string(), pusher: pusher.name.clone() }).await;
        let conn = Conn { session, inbox, relay: self.relay.clone(), credit, hash_ahead: self.service.hash_ahead, ahead: None };
        let (service, window, reports) = (self.service.clone(), self.window.clone(), self.reports.clone());
        let name = pusher.name.clone();
        let task = self.tasks.spawn(async move {
            let _slot = slot;
            service.run_session(conn, peer, &pusher, &window, reports).await;
        });
        self.peers.insert(task.id(), (session, peer, name));
        Ok(())
    }

    /// Hands relayed input to its session. Input for a session that has ended is dropped (the
    /// worker sent it before it heard); more than the credit allows is a breach.
    fn route(&mut self, session: SessionNo, input: Inbound) -> Result<(), Breach> {
        let Some(route) = self.routes.get(&session) else { return Ok(()) };
        if let Inbound::Frame { wire_bytes, .. } = &input {
            route
                .credit
                .charge(credit_cost(*wire_bytes))
                .map_err(|in_use| format!("session {session}: {in_use} bytes of frames relayed before the daemon took them, over the credit of {RELAY_CREDIT}"))?;
        }
        match route.inbox.try_send(input) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(format!("session {session}: more than {MAX_FRAMES_IN_CREDIT} frames relayed before the daemon took them")),
        }
    }

    /// A session task ended: the gate hears the session end, and the worker drops the connection.
    async fn ended(&mut self, task: tokio::task::Id) -> Result<(), Breach> {
        let Some((session, peer, pusher)) = self.peers.remove(&task) else { return Ok(()) };
        self.routes.remove(&session);
        if let Some(holding) = self.holding.get_mut(&pusher) {
            *holding = holding.saturating_sub(1);
        }
        let _ = self.reports.send(SessionReport::Ended { peer }).await;
        self.tell(ToWorker::Drop { session })
    }
}

/// A worker's message as the daemon reads it: a pusher's frame decoded for its session, or
/// anything else.
enum Relayed {
    Frame { session: SessionNo, input: Inbound },
    Message(FromWorker),
}

/// Room for a session's relayed frames (the most its credit lets wait) and the two messages
/// that may end it.
const INBOX_CAPACITY: usize = MAX_FRAMES_IN_CREDIT + 2;

/// One admitted session, as the window's loop reaches it.
struct Route {
    inbox: mpsc::Sender<Inbound>,
    credit: Arc<CreditInUse>,
}

/// The daemon's own count of a session's credit in use: the cost of the frames the worker
/// relayed that the session has not taken. The worker is not trusted to keep to its credit;
/// this is what holds it to it, so a session's queued frames never pass [`RELAY_CREDIT`] bytes.
#[derive(Debug, Default)]
struct CreditInUse(std::sync::atomic::AtomicU32);

impl CreditInUse {
    /// A relayed frame of this cost: `Err` with the credit it would put in use if that is more
    /// than [`RELAY_CREDIT`].
    fn charge(&self, cost: u32) -> Result<(), u64> {
        use std::sync::atomic::Ordering;
        let within = |in_use: u32| in_use.checked_add(cost).filter(|after| *after <= RELAY_CREDIT);
        match self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, within) {
            Ok(_) => Ok(()),
            Err(in_use) => Err(u64::from(in_use) + u64::from(cost)),
        }
    }

    /// The session took a frame of this cost (released before the worker hears of it).
    fn release(&self, cost: u32) {
        let _ = self.0.fetch_update(std::sync::atomic::Ordering::AcqRel, std::sync::atomic::Ordering::Acquire, |in_use| Some(in_use.saturating_sub(cost)));
    }
}

/// What the worker relays for one session.
enum Inbound {
    /// A pusher's frame, decoded by the daemon (or why it does not decode), and at least how
    /// many bytes it took on the wire.
    Frame {
        frame: std::result::Result<ClientFrame, vault_core::Error>,
        wire_bytes: usize,
    },
    Ended {
        reason: String,
    },
    Finished(Option<String>),
}

/// One session as the daemon sees it: frames in, frames out, through the worker.
struct Conn {
    session: SessionNo,
    inbox: mpsc::Receiver<Inbound>,
    relay: mpsc::Sender<ToWorker>,
    credit: Arc<CreditInUse>,
    /// [`PushService::hash_ahead`].
    hash_ahead: bool,
    /// What the inbox held after the frame the session has now, taken out so that a frame's
    /// chunks are hashed while the session stores the one before.
    ahead: Option<Ahead>,
}

/// What was taken from a session's inbox before the session asked for it.
enum Ahead {
    /// A frame whose chunks a blocking thread is hashing ([`HashedFrame::of`]), and its size
    /// on the wire. Its credit is still in use: it is given back when the session takes it,
    /// so a session's frames in the inbox and ahead together stay within [`RELAY_CREDIT`].
    Hashing { hashed: tokio::task::JoinHandle<HashedFrame>, wire_bytes: usize },
    /// Anything else (a frame that did not decode, the end of the session), as received;
    /// `None` once the worker stopped.
    Received(Option<Inbound>),
}

/// Only a frame of at least this many chunk bytes, in at most this many chunks, is hashed
/// ahead; the session hashes any other itself. Handing a frame to another thread costs some
/// microseconds, more than hashing a few KiB; and a decoded frame of thousands of tiny chunks
/// (a flood of them is how a hostile pusher spends the vault's memory) takes more memory
/// than its bytes on the wire, so a second one held ahead would add to the session's.
const HASH_AHEAD_MIN_BYTES: usize = 32 * 1024;
const HASH_AHEAD_MAX_CHUNKS: usize = 256;

impl Ahead {
    /// A frame with chunks to hash starts hashing on a blocking thread if `on_another_thread`;
    /// anything else is kept as received.
    fn start(inbound: Option<Inbound>, on_another_thread: bool) -> Ahead {
        match inbound {
            Some(Inbound::Frame { frame: Ok(frame), wire_bytes }) if on_another_thread && worth_hashing_ahead(&frame) => {
                Ahead::Hashing { hashed: tokio::task::spawn_blocking(move || HashedFrame::of(frame)), wire_bytes }
            }
            other => Ahead::Received(other),
        }
    }
}

fn worth_hashing_ahead(frame: &ClientFrame) -> bool {
    let bytes = match frame {
        ClientFrame::Chunk { data, .. } => data.len(),
        ClientFrame::Chunks { chunks } if chunks.len() <= HASH_AHEAD_MAX_CHUNKS => chunks.iter().map(|(_, data)| data.len()).sum(),
        _ => return false,
    };
    bytes >= HASH_AHEAD_MIN_BYTES
}

impl Conn {
    /// The next frame, decoded here again (the worker decoded it too, but is not trusted) and
    /// its chunks hashed; the frame after it, if the worker relayed it already, starts
    /// hashing on another thread meanwhile. Taking a frame gives the worker its cost of
    /// credit back. Returns the frame and its size on the wire.
    async fn next_frame(&mut self) -> Result<(HashedFrame, usize), Refusal> {
        let next = match self.ahead.take() {
            Some(ahead) => ahead,
            None => Ahead::start(self.inbox.recv().await, self.hash_ahead),
        };
        if matches!(next, Ahead::Hashing { .. }) {
            if let Ok(after) = self.inbox.try_recv() {
                self.ahead = Some(Ahead::start(Some(after), true));
            }
        }
        let (frame, wire_bytes) = match next {
            Ahead::Hashing { hashed, wire_bytes } => (hashed.await.map_err(|e| Refusal::gone(format!("hashing a frame's chunks failed: {e}"))), wire_bytes),
            Ahead::Received(Some(Inbound::Frame { frame, wire_bytes })) => (frame.map(HashedFrame::of).map_err(Refusal::from), wire_bytes),
            // The worker told the pusher already, if it was to be told.
            Ahead::Received(Some(Inbound::Ended { reason, .. })) => return Err(Refusal::gone(reason)),
            Ahead::Received(Some(Inbound::Finished(_))) => return Err(Refusal::gone("the session worker finished a session the daemon had not finished".into())),
            Ahead::Received(None) => return Err(Refusal::gone("the session worker stopped".into())),
        };
        let cost = credit_cost(wire_bytes);
        self.credit.release(cost);
        self.relay_send(ToWorker::Consumed { session: self.session, credit: cost }).await.map_err(Refusal::gone)?;
        Ok((frame?, wire_bytes))
    }

    /// A message for the worker, waited for at most [`RELAY_DEADLINE`].
    async fn relay_send(&self, message: ToWorker) -> Result<(), String> {
        match self.relay.send_timeout(message, RELAY_DEADLINE).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(format!("the session worker did not take a message within {RELAY_DEADLINE:?}")),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err("the session worker stopped".into()),
        }
    }

    async fn send(&mut self, frame: Vec<u8>) -> Result<(), Refusal> {
        self.relay_send(ToWorker::Send { session: self.session, frame }).await.map_err(Refusal::gone)
    }

    /// Sends a last frame (if any) and waits until the worker has written it and shut the
    /// connection down: `Ok` only then, and within [`RELAY_DEADLINE`].
    async fn finish(&mut self, frame: Option<Vec<u8>>) -> Result<(), String> {
        self.relay_send(ToWorker::Finish { session: self.session, frame }).await?;
        // What was taken ahead is read first: the session's end may be in it.
        let mut taken = match self.ahead.take() {
            Some(Ahead::Received(inbound)) => Some(inbound),
            Some(Ahead::Hashing { .. }) | None => None,
        };
        let answer = tokio::time::timeout(RELAY_DEADLINE, async {
            loop {
                let inbound = match taken.take() {
                    Some(inbound) => inbound,
                    None => self.inbox.recv().await,
                };
                match inbound {
                    Some(Inbound::Finished(None)) => return Ok(()),
                    Some(Inbound::Finished(Some(error))) => return Err(error),
                    Some(Inbound::Ended { reason, .. }) => return Err(reason),
                    Some(Inbound::Frame { .. }) => {}
                    None => return Err("the session worker stopped".to_string()),
                }
            }
        });
        answer.await.unwrap_or_else(|_| Err(format!("the session worker did not say within {RELAY_DEADLINE:?} whether the last frame was written")))
    }
}

impl PushService {
    async fn run_session(&self, mut conn: Conn, peer: SocketAddr, pusher: &Pusher, window: &Window, reports: mpsc::Sender<SessionReport>) {
        match self.ingest(&mut conn, window, pusher).await {
            Ok(Ingested { receipt, sealed, seal_ms, receipt_sent, notes }) => {
                for event in sealed_notes(sealed).into_iter().chain(notes) {
                    let _ = reports.send(SessionReport::Note(Box::new(event))).await;
                }
                let _ = reports
                    .send(SessionReport::Note(Box::new(Event::SnapshotSealed {
                        snapshot: receipt.snapshot_id.clone(),
                        pusher: receipt.pusher.clone(),
                        dataset: receipt.dataset.clone(),
                        files: receipt.files,
                        logical_bytes: receipt.logical_bytes,
                        bytes_new: receipt.bytes_new,
                        retain_until: receipt.retain_until.to_string(),
                        seal_ms,
                    })))
                    .await;
                let signals: Vec<String> = receipt.signals.iter().map(ToString::to_string).collect();
                if receipt.suspect {
                    let suspect = SessionReport::Suspect { pusher: receipt.pusher.clone(), dataset: receipt.dataset.clone(), snapshot: receipt.snapshot_id.clone(), signals };
                    let _ = reports.send(suspect).await;
                } else if !signals.is_empty() {
                    let _ = reports.send(SessionReport::Note(Box::new(Event::SignalsObserved { snapshot: receipt.snapshot_id.clone(), signals }))).await;
                }
                if receipt_sent {
                    let _ = reports.send(SessionReport::Committed { pusher: pusher.name.clone(), dataset: receipt.dataset.clone() }).await;
                }
            }
            Err(Refusal { reason, tell_peer }) => {
                if tell_peer {
                    let _ = conn.finish(VaultFrame::Refused { reason: reason.clone() }.encode().ok()).await;
                }
                let event = Event::SessionRefused { peer: peer.to_string(), pusher: Some(pusher.name.clone()), reason };
                let _ = reports.send(SessionReport::Note(Box::new(event))).await;
            }
        }
    }

    /// One push, from `begin` to the receipt. Every `Err` is a refusal; the staging pack
    /// is dropped with it, so nothing of the session remains. `Ok` is a sealed snapshot, the
    /// milliseconds sealing took, and whether its receipt reached the pusher.
    async fn ingest(&self, conn: &mut Conn, window: &Window, pusher: &Pusher) -> Result<Ingested, Refusal> {
        // Refused as a session (not at the handshake), so the pusher is told why.
        if window.policy.signals.close_windows && window.suspects.borrow().contains(&pusher.name) {
            return Err(Refusal::told(format!(
                "pusher `{}` is refused in every window: one of its snapshots was judged suspect by the ransomware signals (see the `snapshot_suspect` event and its receipt); the admins must check it and sign a release order naming its dataset",
                pusher.name
            )));
        }
        let mut env = Env { store: &self.store, accounts: &window.accounts, pusher: &pusher.name };
        let mut session = IngestSession::start(&pusher.name, pusher.quota.bytes(), &mut env).map_err(Refusal::from)?;
        let mut staging: Option<StagingPack> = None;
        let (started, mut progress) = (tokio::time::Instant::now(), Progress::default());
        loop {
            let (frame, wire_bytes) = conn.next_frame().await?;
            progress.on_frame(&pusher.name, started.elapsed(), u64::try_from(wire_bytes).unwrap_or(u64::MAX)).map_err(Refusal::from)?;
            let step = session.on_hashed(frame, wire_bytes, &mut env).map_err(Refusal::from)?;
            match step {
                Step::Reply(reply) => conn.send(reply.encode().map_err(Refusal::from)?).await?,
                Step::Chunks(chunks) => {
                    for chunk in chunks {
                        match chunk {
                            ChunkStep::Store { id, data, probe } => self.staging(&mut staging)?.append_probed(id, &data, probe).map_err(Refusal::from)?,
                            ChunkStep::Proven { id, data, probe } => self.staging(&mut staging)?.prove_sent(id, &data, probe).map_err(Refusal::from)?,
                            ChunkStep::AlreadyOwned => {}
                        }
                    }
                }
                Step::StoreManifest { bytes } => self.staging(&mut staging)?.append_manifest(&bytes).map_err(Refusal::from)?,
                Step::CheckManifest => {
                    let mut pack = match staging.take() {
                        Some(pack) => pack,
                        None => self.store.begin().map_err(Refusal::from)?,
                    };
                    // One commit at a time: reading back a session's manifest and chunk table
                    // is the only place a session's memory grows with what it sent.
                    let commit = self.commits.acquire().await.map_err(|e| Refusal::told(format!("commit slot: {e}")))?;
                    // From the check that every chunk is there to the end of the seal, no expiry
                    // or collection can take one away (the seal holds this even if the session
                    // is aborted meanwhile).
                    let maintenance = self.maintenance.clone().read_owned().await;
                    let (manifest, table) = pack.read_back().map_err(Refusal::from)?;
                    let request = session.check_manifest(&manifest, &table, &mut env).map_err(Refusal::from)?;
                    let seal_started = std::time::Instant::now();
                    let (receipt, signed, mut sealed, notes) = self.seal(window, pusher, pack, table, manifest, request, maintenance).await?;
                    session.sealed();
                    // The receipt's delivery waits on the pusher: other commits need not.
                    drop(commit);
                    // Sealed: nothing from here is a refusal. A receipt that cannot be sent is
                    // said as such, and the gate hears of no commit (the pusher may push again).
                    let sent = match (VaultFrame::Receipt { body: signed.body, signature: signed.signature, audit: signed.audit }.encode()) {
                        Ok(frame) => conn.finish(Some(frame)).await,
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(why) = &sent {
                        sealed.warnings.push(format!("snapshot `{}` is sealed, but its receipt was not delivered ({why}); the pusher may push it again", receipt.snapshot_id));
                    }
                    return Ok(Ingested { receipt, sealed, seal_ms: u64::try_from(seal_started.elapsed().as_millis()).unwrap_or(u64::MAX), receipt_sent: sent.is_ok(), notes });
                }
            }
        }
    }

    /// The session's staging files, made at its first chunk or manifest part.
    fn staging<'a>(&self, staging: &'a mut Option<StagingPack>) -> Result<&'a mut StagingPack, Refusal> {
        if staging.is_none() {
            *staging = Some(self.store.begin().map_err(Refusal::from)?);
        }
        Ok(staging.as_mut().expect("just made"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn seal(
        &self,
        window: &Window,
        pusher: &Pusher,
        pack: StagingPack,
        table: StagedTable,
        manifest: Vec<u8>,
        mut request: SealRequest,
        maintenance: tokio::sync::OwnedRwLockReadGuard<()>,
    ) -> Result<(Receipt, SignedReceipt, Sealed, Vec<Event>), Refusal> {
        // Judged against the dataset's history before the receipt is signed: the receipt says
        // what fired. Commits run one at a time, so the history is the newest sealed one.
        let (store, arrived, bytes_new) = (self.store.clone(), std::mem::take(&mut request.arrived), request.bytes_new);
        let (who, dataset) = (pusher.name.clone(), request.dataset.clone());
        let (assessment, unreadable, manifest) = tokio::task::spawn_blocking(move || {
            if !vault_core::push::signals::ENABLED {
                return (None, Vec::new(), manifest);
            }
            let read = store.signals_history(&who, &dataset);
            (Some(vault_core::push::signals::assess(&arrived, &manifest, bytes_new, &read.history)), read.unreadable, manifest)
        })
        .await
        .map_err(|e| Refusal::told(format!("judging the snapshot failed ({e}): nothing was sealed; push again")))?;
        let notes = unreadable.into_iter().map(|why| Event::Alarm { rule: "signals_history_unreadable".into(), detail: format!("{why}: the snapshot was judged without it") }).collect();
        let profile = assessment.as_ref().map(|a| a.profile.to_bytes());
        let (suspect, signals) = assessment.map_or((false, Vec::new()), |a| (a.suspect, a.signals));
        // Retention counts from the vault's time at sealing, never from the pusher's.
        let received_at = window.clock.now();
        let snapshot_id = snapshot_id(received_at, &request.dataset, random_suffix()).map_err(Refusal::from)?;
        let receipt = Receipt {
            vault_id: window.policy.vault_id.clone(),
            vault_key: self.identity.public,
            policy_version: window.policy.version,
            snapshot_id: snapshot_id.clone(),
            dataset: request.dataset.clone(),
            pusher: pusher.name.clone(),
            manifest_sha256: request.manifest_sha256.clone(),
            files: request.summary.files,
            logical_bytes: request.summary.total_size,
            chunks_total: request.summary.chunk_refs,
            chunks_new: request.chunks_new,
            bytes_new: request.bytes_new,
            received_at,
            retain_until: received_at.saturating_add(pusher.retain),
            client_time: request.client_time,
            suspect,
            signals,
        };
        let (body, signature) = receipt.sign(&self.identity.key);
        let mut signed = SignedReceipt { body, signature, audit: None };
        let (store, vault_key, audit_size) = (self.store.clone(), self.identity.public, request.audit_size);
        let (signed_for_store, referenced) = (signed.clone(), request.referenced);
        // fsyncs and renames: off the async threads. Each step is on the console as it
        // happens (always: seven short lines per push), so a power-cut test can cut after any.
        let (pause, clock) = (self.limits.seal_step_pause, window.clock.clone());
        let sealed = tokio::task::spawn_blocking(move || {
            let _maintenance = maintenance;
            let observe = |step| {
                EventLog::default().emit(clock.now(), &Event::SealStep { snapshot: snapshot_id.clone(), step });
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            };
            let sealed =
                store.seal_observed(pack, table, &referenced, SealInput { snapshot_id: &snapshot_id, manifest: &manifest, receipt: &signed_for_store, profile: profile.as_deref() }, &observe)?;
            Ok::<_, vault_store::StoreError>((sealed, crate::audit::evidence(store.root(), &vault_key, audit_size)))
        })
        .await
        // The seal stopped (a panic): it may or may not have made the snapshot visible.
        .map_err(|e| Refusal::told(format!("sealing task failed ({e}): no receipt, and the snapshot may or may not be visible; the next start re-checks the store")))?
        // A store error here is always from before the snapshot became visible.
        .map_err(Refusal::from)?;
        let (sealed, evidence) = sealed;
        signed.audit = evidence;
        Ok((receipt, signed, sealed, notes))
    }
}

/// The console's account of a sealed snapshot's problems: files made read-only instead of
/// immutable, and what failed after it became visible (an alarm: sealed, receipt owed, but
/// something needs a look). Never a refusal.
fn sealed_notes(sealed: Sealed) -> Vec<Event> {
    let snapshot = sealed.snapshot_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let healed = (!sealed.healed.is_empty()).then(|| Event::ChunksHealed { snapshot, chunks: sealed.healed.iter().map(|id| id.to_string()).collect() });
    let fallbacks = sealed.fallbacks.into_iter().map(|(path, reason)| Event::ImmutableFallback { path: path.display().to_string(), reason });
    let warnings = sealed.warnings.into_iter().map(|detail| Event::Alarm { rule: "seal_not_confirmed".into(), detail });
    healed.into_iter().chain(fallbacks).chain(warnings).collect()
}

/// A sealed push: its receipt, what sealing did and took, whether the receipt reached the
/// pusher, and what else the console should hear.
struct Ingested {
    receipt: Receipt,
    sealed: Sealed,
    seal_ms: u64,
    receipt_sent: bool,
    notes: Vec<Event>,
}

/// What every session of one window shares.
struct Window {
    policy: Arc<Policy>,
    accounts: WindowAccounts,
    clock: Arc<dyn TimeProvider>,
    suspects: tokio::sync::watch::Receiver<std::collections::BTreeSet<String>>,
}

fn random_suffix() -> [u8; 4] {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 4];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the OS gives randomness");
    bytes
}

impl From<vault_core::Error> for Refusal {
    fn from(e: vault_core::Error) -> Refusal {
        Refusal { reason: e.to_string(), tell_peer: true }
    }
}

impl From<vault_store::StoreError> for Refusal {
    fn from(e: vault_store::StoreError) -> Refusal {
        Refusal { reason: e.to_string(), tell_peer: true }
    }
}

struct Env<'a> {
    store: &'a Store,
    accounts: &'a WindowAccounts,
    pusher: &'a str,
}

impl IngestEnv for Env<'_> {
    fn sealed_len(&self, id: &ChunkId) -> Option<u32> {
        self.store.chunk_len(id)
    }

    fn owned_len(&self, id: &ChunkId) -> Option<u32> {
        self.store.owned_len(self.pusher, id)
    }

    fn account<R>(&mut self, charge: impl FnOnce(&mut WindowAccount) -> R) -> R {
        let mut accounts = self.accounts.lock().expect("window accounts lock");
        charge(accounts.entry(self.pusher.to_string()).or_default())
    }
}

/// The longest the daemon waits on the worker: to take a message, to write to the relay, to
/// answer a finish. An honest worker takes microseconds (its own writes to a pusher have the
/// idle deadline); one that takes longer is treated as gone.
const RELAY_DEADLINE: Duration = Duration::from_secs(30);

/// The daemon's queue of messages for one worker, for `places` sessions: room for a credit
/// message and a reply for every frame each may have in flight ([`MAX_FRAMES_IN_CREDIT`]), and
/// beside them for the window loop's own (an admit or a drop for each handshake the pool
/// holds, and for each place). The window loop never waits for room (a full queue is a breach
/// that stops the worker), so honest traffic must never fill it, however the frames fall.
fn relay_outbox(places: usize) -> usize {
    2 * places * MAX_FRAMES_IN_CREDIT + vault_core::push::admission::MAX_HANDSHAKES + places
}

/// How long a new worker may take to confine itself and say so.
const WORKER_START_DEADLINE: Duration = Duration::from_secs(10);
/// The longest message the signing line carries (a TLS 1.3 CertificateVerify is 130 or 146).
const MAX_SIGN_REQUEST: usize = 256;

/// The daemon's handle on one window's session worker.
struct Worker {
    child: Option<std::process::Child>,
    pid: u32,
    /// The daemon's end of the signing line, shut down when the worker is stopped so the
    /// signing thread ends even if something of the worker held on to the other end.
    sign: Option<std::os::unix::net::UnixStream>,
    confinement: Confinement,
    /// To the relay writer.
    to: mpsc::Sender<ToWorker>,
    /// The worker's messages, read through a small buffer: many small ones to a syscall.
    from: tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    frames: FrameReader,
}

/// The daemon reads the relay through this buffer. The worker writes small messages many to a
/// write (a flood of tiny chunk frames is about 55 bytes a message); read one part at a time,
/// each took a syscall of its own, two a frame, and they were most of the daemon's CPU in
/// such a flood. A body at least this large is read around the buffer, straight into the
/// frame reader, so a large frame has at most this much of it copied once more.
const RELAY_READ_BUFFER: usize = 8 << 10;

impl Worker {
    /// Starts `gatekeeper session-worker` on the window's listener, sends it the window's
    /// settings, and waits for it to say it is confined; a worker that is not is stopped.
    async fn start(
        listener: tokio::net::TcpListener,
        jail_parent: &std::path::Path,
        identity: &Arc<VaultIdentity>,
        policy: &Policy,
        limits: &Limits,
        reports: mpsc::Sender<SessionReport>,
    ) -> GkResult<Worker> {
        let io = |what: &'static str| move |source: std::io::Error| GatekeeperError::Io { what, source };
        let listener: OwnedFd = listener.into_std().map_err(io("session worker: the listener"))?.into();
        let (relay, relay_for_worker) = std::os::unix::net::UnixStream::pair().map_err(io("session worker: the relay"))?;
        let (sign, sign_for_worker) = std::os::unix::net::UnixStream::pair().map_err(io("session worker: the signing line"))?;
        let child = spawn_worker(jail_parent, [(RELAY_FD, relay_for_worker.into()), (SIGN_FD, sign_for_worker.into()), (LISTENER_FD, listener)]).map_err(io("session worker: start"))?;
        let pid = child.id();
        let key = identity.clone();
        let sign_handle = sign.try_clone().ok();
        std::thread::Builder::new().name("handshake-signer".into()).spawn(move || serve_signatures(sign, &key, &reports)).map_err(io("session worker: the signing thread"))?;
        relay.set_nonblocking(true).map_err(io("session worker: the relay"))?;
        let (from, relay_out) = tokio::net::UnixStream::from_std(relay).map_err(io("session worker: the relay"))?.into_split();
        let outbox_room = relay_outbox(limits.max_connections);
        let (to, mut outbox) = mpsc::channel::<ToWorker>(outbox_room);
        tokio::spawn(async move {
            // Messages queued together go out in one write (most are a few bytes: credit given
            // back, replies), flushed as soon as none is waiting.
            let mut relay_out = tokio::io::BufWriter::with_capacity(RELAY_WRITE_BUFFER, relay_out);
            while let Some(message) = outbox.recv().await {
                let batch = write_queued(&mut relay_out, message, &mut outbox, outbox_room, |m: ToWorker| m.encode().ok());
                // A worker that stops reading loses its relay (and then exits).
                if !matches!(tokio::time::timeout(RELAY_DEADLINE, batch).await, Ok(Ok(()))) {
                    return;
                }
            }
        });
        let mut worker = Worker {
            child: Some(child),
            pid,
            sign: sign_handle,
            confinement: Confinement { uid: 0, gid: 0, capabilities_permitted: u64::MAX, capabilities_effective: u64::MAX, no_new_privileges: false, sees_files: true },
            to,
            from: tokio::io::BufReader::with_capacity(RELAY_READ_BUFFER, from),
            frames: FrameReader::with_limit(MAX_RELAY_FRAME),
        };
        let start = ToWorker::Start {
            vault_key: *identity.public.as_bytes(),
            pushers: policy.pushers.iter().map(|p| *p.key.as_bytes()).collect(),
            handshake_ms: u32::try_from(limits.handshake.as_millis()).unwrap_or(u32::MAX),
            idle_ms: u32::try_from(limits.idle.as_millis()).unwrap_or(u32::MAX),
        };
        let _ = worker.to.send(start).await;
        let hello = tokio::time::timeout(WORKER_START_DEADLINE, worker.recv()).await;
        let confinement = match hello {
            Ok(Ok(Relayed::Message(FromWorker::Confined { uid, gid, capabilities_permitted, capabilities_effective, no_new_privileges, sees_files }))) => {
                Confinement { uid, gid, capabilities_permitted, capabilities_effective, no_new_privileges, sees_files }
            }
            Ok(Ok(Relayed::Message(FromWorker::Refused { peer, reason }))) if peer.is_empty() => return Err(GatekeeperError::Worker { reason }),
            Ok(Ok(Relayed::Message(other))) => return Err(GatekeeperError::Worker { reason: format!("its first message was not its confinement: {other:?}") }),
            Ok(Ok(Relayed::Frame { session, .. })) => return Err(GatekeeperError::Worker { reason: format!("its first message was not its confinement: a frame of session {session}") }),
            Ok(Err(e)) => return Err(GatekeeperError::Worker { reason: format!("it stopped before it was confined ({e}); the console shows why") }),
            Err(_) => return Err(GatekeeperError::Worker { reason: format!("it did not say it was confined within {WORKER_START_DEADLINE:?}") }),
        };
        if let Some(refusal) = confinement.refusal() {
            return Err(GatekeeperError::Worker { reason: refusal });
        }
        worker.confinement = confinement;
        Ok(worker)
    }

    /// The worker's next message. Cancel-safe: a partial frame stays in the reader. A pusher's
    /// frame is decoded here again (the worker checked it too, but is not trusted), straight
    /// from the relay's buffer: its bytes are copied once.
    async fn recv(&mut self) -> GkResult<Relayed> {
        loop {
            let n = self.from.read(self.frames.unfilled()).await.map_err(|source| GatekeeperError::Io { what: "the relay", source })?;
            if n == 0 {
                return Err(GatekeeperError::Worker { reason: "it closed the relay".into() });
            }
            if let Filled::Frame { body, .. } = self.frames.filled(n)? {
                return Ok(match FromWorker::decode_in_place(body)? {
                    InPlace::Frame { session, wire_bytes, body } => {
                        // What the wire carried is at least the body and its prefix, whatever the worker says.
                        let least = body.len().saturating_add(vault_core::push::protocol::LENGTH_PREFIX);
                        let wire_bytes = usize::try_from(wire_bytes).unwrap_or(usize::MAX).max(least);
                        Relayed::Frame { session, input: Inbound::Frame { frame: ClientFrame::decode(body), wire_bytes } }
                    }
                    InPlace::Message(message) => Relayed::Message(message),
                });
            }
        }
    }

    /// Kills the worker: its connections close with it. Idempotent.
    fn stop(&mut self) {
        if let Some(line) = self.sign.take() {
            let _ = line.shutdown(std::net::Shutdown::Both);
        }
        if let Some(mut child) = self.child.take() {
            // Its whole process group (it leads one), should anything of it be left.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.kill();
            // Reaped off the async threads (as PID 1, init's reaper may get there first).
            std::thread::spawn(move || child.wait());
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs this binary as `session-worker` with exactly `fds` open (at their numbers, besides
/// stdin, stdout and stderr), dying with the thread that started it.
fn spawn_worker(jail_parent: &std::path::Path, fds: [(std::os::fd::RawFd, OwnedFd); 3]) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // Above every target number, so no move in the child overwrites a descriptor still to move.
    let mut high = Vec::new();
    for (target, fd) in &fds {
        let moved = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).map_err(std::io::Error::from)?;
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) just returned this new descriptor, owned by nobody else.
        high.push((*target, unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(moved) }));
    }
    let moves: Vec<(i32, i32)> = high.iter().map(|(target, fd)| (fd.as_raw_fd(), *target)).collect();
    let mut command = std::process::Command::new("/proc/self/exe");
    // No console: what a worker says goes through the relay, so it cannot write event lines.
    command.arg(crate::session_worker::SUBCOMMAND).arg(jail_parent).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).env_clear();
    // SAFETY: between fork and exec the closure calls only dup2, close_range, setpgid and prctl,
    // which are async-signal-safe, and allocates nothing (`moves` was built before the fork).
    unsafe {
        command.pre_exec(move || {
            use nix::libc;
            for (from, to) in &moves {
                // dup2 clears close-on-exec on the new number: these three stay open.
                if libc::dup2(*from, *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Nothing else of the daemon's reaches the worker (a root netlink socket would let it
            // change links): every descriptor above the three is closed at exec (marked, not
            // closed now: std's own pipe that reports a failed exec must stay until then).
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(libc::SYS_close_range, LISTENER_FD + 1, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Its own process group, so the daemon can kill all of it at once.
            if libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn();
    drop(high);
    drop(fds);
    child
}

/// The signing line's far end: signs each TLS 1.3 server CertificateVerify message the worker
/// sends with the vault key, and nothing else. Anything else is a breach: the line is closed
/// (the worker's handshakes fail from then on) and the window is closed with an alarm.
fn serve_signatures(mut line: std::os::unix::net::UnixStream, identity: &VaultIdentity, reports: &mpsc::Sender<SessionReport>) {
    loop {
        let mut len = [0u8; 2];
        if line.read_exact(&mut len).is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        let refused = if len > MAX_SIGN_REQUEST {
            Some(format!("it asked for a {len}-byte message to be signed (at most {MAX_SIGN_REQUEST})"))
        } else {
            let mut message = vec![0u8; len];
            if line.read_exact(&mut message).is_err() {
                return;
            }
            match vault_tls::check_server_verify_message(&message) {
                Ok(()) => {
                    if line.write_all(&identity.key.sign(&message)).is_err() {
                        return;
                    }
                    None
                }
                Err(e) => Some(format!("it asked for something other than a handshake to be signed: {e}")),
            }
        };
        if let Some(reason) = refused {
            let _ = reports.blocking_send(SessionReport::ServerFailed { reason: format!("the session worker was refused a signature: {reason}") });
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Arc<VaultIdentity> {
        let dir = tempfile::tempdir().unwrap();
        Arc::new(VaultIdentity::load_or_create(dir.path()).unwrap())
    }

    /// Sends one request on the signing line; returns the signature, or `None` if the line closed.
    fn ask(line: &mut std::os::unix::net::UnixStream, message: &[u8]) -> Option<[u8; 64]> {
        line.write_all(&u16::try_from(message.len()).unwrap().to_be_bytes()).ok()?;
        line.write_all(message).ok()?;
        let mut signature = [0u8; 64];
        line.read_exact(&mut signature).ok().map(|()| signature)
    }

    #[test]
    fn a_worker_relaying_past_its_credit_is_caught_in_bytes_and_in_frames() {
        let credit = CreditInUse::default();
        let largest = credit_cost(vault_core::push::protocol::MAX_FRAME_BYTES + vault_core::push::protocol::LENGTH_PREFIX);
        for _ in 0..4 {
            credit.charge(largest).unwrap();
        }
        // A fifth chunk at the maximum before the daemon took one: over, and by how much.
        let over = credit.charge(largest).unwrap_err();
        assert_eq!(over, 5 * u64::from(largest));
        // Taken frames give their cost back; small frames cost the minimum, so the credit also
        // bounds how many wait (the inbox has room for exactly that many and the two endings).
        let small = CreditInUse::default();
        for _ in 0..MAX_FRAMES_IN_CREDIT {
            small.charge(credit_cost(100)).unwrap();
        }
        assert!(small.charge(credit_cost(100)).is_err());
        small.release(credit_cost(100));
        small.release(credit_cost(100));
        small.charge(credit_cost(100)).unwrap();
        assert_eq!(INBOX_CAPACITY, MAX_FRAMES_IN_CREDIT + 2);
        // Releasing more than is in use cannot wrap around into fresh credit.
        let empty = CreditInUse::default();
        empty.release(RELAY_CREDIT);
        empty.charge(RELAY_CREDIT).unwrap();
        assert!(empty.charge(1).is_err());
    }

    /// A session's frames come out in order, each giving its credit back (and the worker told)
    /// only when the session takes it, whether the next is hashed ahead on another thread or
    /// not; an end that was taken ahead is still seen, by the next read and by `finish`.
    #[tokio::test]
    async fn frames_come_out_in_order_and_their_credit_comes_back_as_the_session_takes_each() {
        for hash_ahead in [false, true] {
            let (to_session, inbox) = mpsc::channel(INBOX_CAPACITY);
            let (relay, mut to_worker) = mpsc::channel(16);
            let credit = Arc::new(CreditInUse::default());
            let mut conn = Conn { session: 7, inbox, relay, credit: credit.clone(), hash_ahead, ahead: None };
            // Large enough to be worth hashing ahead.
            let frames: Vec<(Vec<u8>, usize)> = (0..3u8).map(|i| (vec![i; HASH_AHEAD_MIN_BYTES + usize::from(i)], HASH_AHEAD_MIN_BYTES + 100 + usize::from(i))).collect();
            for (data, wire_bytes) in &frames {
                credit.charge(credit_cost(*wire_bytes)).unwrap();
                to_session.send(Inbound::Frame { frame: Ok(ClientFrame::Chunk { id: ChunkId::of(data), data: data.clone() }), wire_bytes: *wire_bytes }).await.unwrap();
            }
            to_session.send(Inbound::Ended { reason: "the pusher hung up".into() }).await.unwrap();
            let in_use = |credit: &CreditInUse| credit.0.load(std::sync::atomic::Ordering::Acquire);
            for (taken, (_, wire_bytes)) in frames.iter().enumerate() {
                let (_, wire) = conn.next_frame().await.unwrap();
                assert_eq!(wire, *wire_bytes, "frame {taken} out of order (hash ahead: {hash_ahead})");
                let Ok(ToWorker::Consumed { session: 7, credit: given }) = to_worker.try_recv() else { panic!("the worker was not told frame {taken} was taken") };
                assert_eq!(given, credit_cost(*wire_bytes));
                // Frames taken ahead still hold their credit.
                let still: u32 = frames[taken + 1..].iter().map(|(_, w)| credit_cost(*w)).sum();
                assert_eq!(in_use(&credit), still, "after frame {taken} (hash ahead: {hash_ahead})");
            }
            let ended = conn.next_frame().await.map(drop).unwrap_err();
            assert_eq!(ended.reason, "the pusher hung up");
            // The same end taken ahead of the session's last frame: `finish` answers with it at once.
            let (to_session, inbox) = mpsc::channel(INBOX_CAPACITY);
            let (relay, _to_worker) = mpsc::channel(16);
            let mut conn = Conn { session: 8, inbox, relay, credit: Arc::default(), hash_ahead, ahead: None };
            let (data, wire_bytes) = frames[0].clone();
            to_session.send(Inbound::Frame { frame: Ok(ClientFrame::Chunk { id: ChunkId::of(&data), data }), wire_bytes }).await.unwrap();
            to_session.send(Inbound::Ended { reason: "the pusher hung up".into() }).await.unwrap();
            conn.next_frame().await.unwrap();
            assert_eq!(matches!(conn.ahead, Some(Ahead::Received(Some(Inbound::Ended { .. })))), hash_ahead, "the end was taken ahead only when hashing ahead");
            let finished = tokio::time::timeout(Duration::from_secs(5), conn.finish(None)).await.expect("finish waited for an end it had taken already");
            assert_eq!(finished, Err("the pusher hung up".to_string()));
        }
    }

    #[test]
    fn the_signing_line_signs_handshakes_and_closes_at_anything_else() {
        let identity = identity();
        let (mut worker, daemon) = std::os::unix::net::UnixStream::pair().unwrap();
        let (reports, mut failed) = mpsc::channel(4);
        let key = identity.clone();
        let signer = std::thread::spawn(move || serve_signatures(daemon, &key, &reports));
        let mut handshake = vec![b' '; 64];
        handshake.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
        handshake.extend_from_slice(&[7u8; 32]);
        let signature = ask(&mut worker, &handshake).expect("a handshake is signed");
        assert!(identity.public.verify(&handshake, &signature));
        // A receipt's signed hash (32 bytes) is not a handshake: refused, the line closed.
        assert_eq!(ask(&mut worker, &[0x42; 32]), None);
        signer.join().unwrap();
        let Ok(SessionReport::ServerFailed { reason }) = failed.try_recv() else { panic!("no report") };
        assert!(reason.contains("the session worker was refused a signature: it asked for something other than a handshake to be signed: 32 bytes"), "{reason}");
        // And an oversized request is refused before it is read.
        let (mut worker, daemon) = std::os::unix::net::UnixStream::pair().unwrap();
        let (reports, mut failed) = mpsc::channel(4);
        let signer = std::thread::spawn(move || serve_signatures(daemon, &identity, &reports));
        assert_eq!(ask(&mut worker, &[b' '; 300]), None);
        signer.join().unwrap();
        let Ok(SessionReport::ServerFailed { reason }) = failed.try_recv() else { panic!("no report") };
        assert!(reason.contains("a 300-byte message to be signed (at most 256)"), "{reason}");
    }

    #[test]
    fn a_problem_after_the_snapshot_became_visible_is_an_alarm_never_a_refusal() {
        let sealed = Sealed {
            snapshot_dir: "/data/store/snapshots/s1".into(),
            fallbacks: vec![("/data/store/snapshots/s1/manifest".into(), "FS_IOC_SETFLAGS refused".into())],
            warnings: vec!["snapshot `s1` is sealed, but its directory could not be marked immutable (EROFS)".into()],
            healed: vec![],
        };
        let notes = sealed_notes(sealed);
        assert_eq!(
            notes,
            [
                Event::ImmutableFallback { path: "/data/store/snapshots/s1/manifest".into(), reason: "FS_IOC_SETFLAGS refused".into() },
                Event::Alarm { rule: "seal_not_confirmed".into(), detail: "snapshot `s1` is sealed, but its directory could not be marked immutable (EROFS)".into() },
            ]
        );
        assert!(!notes.iter().any(|e| matches!(e, Event::SessionRefused { .. })));
    }
}
