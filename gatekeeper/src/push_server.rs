//! The push-session server: what runs on the vault's listener while a window is open.
//!
//! Per connection: a connection slot (or refusal), a TLS 1.3 handshake within a deadline
//! (only keys the policy lists get through), then frames, each read within the idle
//! deadline and size-checked before its body is read, fed to the pure
//! [`vault_core::push::ingest::IngestSession`]. Verified chunks go to a staging pack; a commit
//! seals the snapshot in the store, signs the receipt, sends it, and only then reports the
//! commit to the gate. Any refusal is sent with its reason, logged, and closes the session;
//! what it staged is removed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use vault_core::push::admission::{Admission, Admit, ConnectionId, MAX_HANDSHAKES};
use vault_core::push::chunk::ChunkId;
use vault_core::policy::Policy;
use vault_core::push::ingest::{IngestEnv, IngestSession, SealRequest, Step};
use vault_core::push::limits::WindowAccount;
use vault_core::push::protocol::{ClientFrame, Filled, FrameReader, VaultFrame};
use vault_core::push::receipt::{snapshot_id, Receipt, SignedReceipt};
use vault_core::units::TimeProvider;
use vault_store::{SealInput, Sealed, StagedTable, StagingPack, Store};

use crate::events::{Event, EventLog};
use crate::identity::VaultIdentity;
use crate::sessions_api::{SessionContext, SessionReport, SessionServer, Stop};

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
    pub store: Arc<Store>,
    pub identity: Arc<VaultIdentity>,
    pub limits: Limits,
    /// One commit is checked and sealed at a time (see [`PushService::ingest`]).
    pub commits: Semaphore,
}

impl PushService {
    pub fn new(store: Arc<Store>, identity: Arc<VaultIdentity>, limits: Limits) -> PushService {
        PushService { store, identity, limits, commits: Semaphore::new(1) }
    }
}

/// The production server for [`crate::sessions_api`].
pub fn server(service: Arc<PushService>) -> SessionServer {
    Arc::new(move |ctx| Box::pin(service.clone().serve_window(ctx)))
}

/// What each pusher spent in this window (shared by that pusher's concurrent sessions).
type WindowAccounts = Arc<Mutex<HashMap<String, WindowAccount>>>;

impl PushService {
    async fn serve_window(self: Arc<Self>, mut ctx: SessionContext) {
        let reports = ctx.reports.clone();
        let note = |event: Event| {
            let reports = reports.clone();
            async move {
                let _ = reports.send(SessionReport::Note(event)).await;
            }
        };
        let pushers = ctx.policy.pushers.iter().map(|p| p.key).collect();
        let tls = match vault_tls::server_config(&self.identity.pkcs8, &self.identity.public, pushers) {
            Ok(config) => TlsAcceptor::from(config),
            Err(e) => {
                note(Event::Alarm { rule: "tls_config".into(), detail: e.to_string() }).await;
                return;
            }
        };
        let quotas: WindowAccounts = Arc::default();
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let admission = Arc::new(Mutex::new(Handshakes::default()));
        let mut next_id: ConnectionId = 0;
        let mut sessions: JoinSet<()> = JoinSet::new();
        // Each task's peer, and whether it became a session (then the gate heard it start).
        let mut peers: HashMap<tokio::task::Id, (SocketAddr, Arc<std::sync::atomic::AtomicBool>)> = HashMap::new();
        let mut listener = Some(ctx.listener);
        loop {
            tokio::select! {
                changed = ctx.stop.changed() => {
                    let stop = if changed.is_err() { Stop::AbortAll } else { *ctx.stop.borrow() };
                    match stop {
                        Stop::Running => {}
                        Stop::StopAccepting => listener = None,
                        Stop::AbortAll => {
                            sessions.abort_all();
                            listener = None;
                        }
                    }
                }
                accepted = async { listener.as_ref().expect("guarded by the if").accept().await }, if listener.is_some() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    // Until TLS proves a pusher key, a connection holds only a handshake place.
                    next_id += 1;
                    let (evict_tx, evict_rx) = tokio::sync::oneshot::channel();
                    let admitted = admission.lock().expect("handshakes lock").admit(next_id, peer.ip(), evict_tx);
                    if let Err(reason) = admitted {
                        drop(stream);
                        note(Event::SessionRefused { peer: peer.to_string(), pusher: None, reason }).await;
                        continue;
                    }
                    let service = self.clone();
                    let became_session = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let handshake = PreAuth { id: next_id, handshakes: admission.clone(), evicted: evict_rx };
                    let session = SessionPlace { slots: slots.clone(), max: self.limits.max_connections, started: became_session.clone() };
                    let (tls, policy, quotas, reports, clock) = (tls.clone(), ctx.policy.clone(), quotas.clone(), ctx.reports.clone(), ctx.clock.clone());
                    let handle = sessions.spawn(async move {
                        service.run_session(stream, peer, tls, handshake, session, Window { policy, accounts: quotas, clock }, reports).await;
                    });
                    peers.insert(handle.id(), (peer, became_session));
                }
                Some(done) = sessions.join_next_with_id(), if !sessions.is_empty() => {
                    let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                    if let Some((peer, started)) = peers.remove(&id) {
                        if started.load(std::sync::atomic::Ordering::SeqCst) {
                            let _ = ctx.reports.send(SessionReport::Ended { peer }).await;
                        }
                    }
                }
            }
            if listener.is_none() && sessions.is_empty() {
                return;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_session(&self, stream: TcpStream, peer: SocketAddr, tls: TlsAcceptor, handshake: PreAuth, place: SessionPlace, window: Window, reports: mpsc::Sender<SessionReport>) {
        let refuse = |pusher: Option<String>, reason: String| {
            let reports = reports.clone();
            async move {
                let _ = reports.send(SessionReport::Note(Event::SessionRefused { peer: peer.to_string(), pusher, reason })).await;
            }
        };
        let _ = stream.set_nodelay(true);
        let PreAuth { id, handshakes, evicted } = handshake;
        let outcome = tokio::select! {
            done = tokio::time::timeout(self.limits.handshake, tls.accept(stream)) => Some(done),
            _ = evicted => None,
        };
        handshakes.lock().expect("handshakes lock").finished(id);
        let mut stream = match outcome {
            Some(Ok(Ok(stream))) => stream,
            Some(Ok(Err(e))) => return refuse(None, format!("TLS handshake failed: {}", vault_tls::explain(&e))).await,
            Some(Err(_)) => return refuse(None, format!("TLS handshake not finished within {:?}", self.limits.handshake)).await,
            None => return refuse(None, format!("TLS handshake unfinished when the handshake pool was full ({MAX_HANDSHAKES}): ended to make way for a newer connection")).await,
        };
        let pusher = vault_tls::peer_key(stream.get_ref().1.peer_certificates()).and_then(|key| window.policy.pusher_by_key(&key));
        let Some(pusher) = pusher else {
            return refuse(None, "authenticated key is not a pusher of this policy".into()).await;
        };
        // A pusher: now it takes a session's place, and the gate counts it.
        let Ok(_slot) = place.slots.clone().try_acquire_owned() else {
            return refuse(Some(pusher.name.clone()), format!("too many sessions: {} already in progress", place.max)).await;
        };
        place.started.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = reports.send(SessionReport::Started { peer }).await;
        let _ = reports.send(SessionReport::Note(Event::SessionAccepted { peer: peer.to_string(), pusher: pusher.name.clone() })).await;
        match self.ingest(&mut stream, &window, pusher).await {
            Ok((receipt, sealed, seal_ms, receipt_sent)) => {
                let _ = stream.shutdown().await;
                for event in sealed_notes(sealed) {
                    let _ = reports.send(SessionReport::Note(event)).await;
                }
                let _ = reports
                    .send(SessionReport::Note(Event::SnapshotSealed {
                        snapshot: receipt.snapshot_id.clone(),
                        pusher: receipt.pusher.clone(),
                        dataset: receipt.dataset.clone(),
                        files: receipt.files,
                        logical_bytes: receipt.logical_bytes,
                        bytes_new: receipt.bytes_new,
                        retain_until: receipt.retain_until.to_string(),
                        seal_ms,
                    }))
                    .await;
                if receipt_sent {
                    let _ = reports.send(SessionReport::Committed { pusher: pusher.name.clone(), dataset: receipt.dataset.clone() }).await;
                }
            }
            Err(Refusal { reason, tell_peer }) => {
                if tell_peer {
                    let frame = VaultFrame::Refused { reason: reason.clone() }.encode().unwrap_or_default();
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        let _ = stream.write_all(&frame).await;
                        let _ = stream.shutdown().await;
                    })
                    .await;
                }
                refuse(Some(pusher.name.clone()), reason).await;
            }
        }
    }

    /// One push, from `begin` to the receipt. Every `Err` is a refusal; the staging pack
    /// is dropped with it, so nothing of the session remains. `Ok` is a sealed snapshot, the
    /// milliseconds sealing took, and whether its receipt reached the pusher.
    async fn ingest<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S, window: &Window, pusher: &vault_core::policy::Pusher) -> Result<(Receipt, Sealed, u64, bool), Refusal> {
        let mut env = Env { store: &self.store, accounts: &window.accounts, pusher: &pusher.name };
        let mut session = IngestSession::start(&pusher.name, pusher.quota.bytes(), &mut env).map_err(Refusal::from)?;
        let mut staging: Option<StagingPack> = None;
        let mut frames = FrameReader::default();
        loop {
            let (frame, wire_bytes) = read_frame(stream, &mut frames, self.limits.idle).await?;
            let step = session.on_frame(frame, wire_bytes, &mut env).map_err(Refusal::from)?;
            match step {
                Step::Reply(reply) => write_frame(stream, &reply.encode().map_err(Refusal::from)?).await?,
                Step::Store { id, data } => self.staging(&mut staging)?.append(id, &data).map_err(Refusal::from)?,
                Step::Proven { id, len } => self.staging(&mut staging)?.prove(id, len).map_err(Refusal::from)?,
                Step::StoreManifest { bytes } => self.staging(&mut staging)?.append_manifest(&bytes).map_err(Refusal::from)?,
                Step::Nothing => {}
                Step::CheckManifest => {
                    let mut pack = match staging.take() {
                        Some(pack) => pack,
                        None => self.store.begin().map_err(Refusal::from)?,
                    };
                    // One commit at a time: reading back a session's manifest and chunk table
                    // is the only place a session's memory grows with what it sent.
                    let _commit = self.commits.acquire().await.map_err(|e| Refusal::internal(format!("commit slot: {e}")))?;
                    let (manifest, table) = pack.read_back().map_err(Refusal::from)?;
                    let request = session.check_manifest(&manifest, &table, &mut env).map_err(Refusal::from)?;
                    let seal_started = std::time::Instant::now();
                    let (receipt, signed, mut sealed) = self.seal(window, pusher, pack, table, manifest, request).await?;
                    session.sealed();
                    // Sealed: nothing from here is a refusal. A receipt that cannot be sent is
                    // said as such, and the gate hears of no commit (the pusher may push again).
                    let sent = match (VaultFrame::Receipt { body: signed.body, signature: signed.signature }.encode()) {
                        Ok(frame) => write_frame(stream, &frame).await.map_err(|refusal| refusal.reason),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(why) = &sent {
                        sealed.warnings.push(format!("snapshot `{}` is sealed, but its receipt was not delivered ({why}); the pusher may push it again", receipt.snapshot_id));
                    }
                    return Ok((receipt, sealed, u64::try_from(seal_started.elapsed().as_millis()).unwrap_or(u64::MAX), sent.is_ok()));
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

    async fn seal(
        &self,
        window: &Window,
        pusher: &vault_core::policy::Pusher,
        pack: StagingPack,
        table: StagedTable,
        manifest: Vec<u8>,
        request: SealRequest,
    ) -> Result<(Receipt, SignedReceipt, Sealed), Refusal> {
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
        };
        let (body, signature) = receipt.sign(&self.identity.key);
        let signed = SignedReceipt { body, signature };
        let store = self.store.clone();
        let (signed_for_store, referenced) = (signed.clone(), request.referenced);
        // fsyncs and renames: off the async threads. Each step is on the console as it
        // happens (always: seven short lines per push), so a power-cut test can cut after any.
        let pause = self.limits.seal_step_pause;
        let sealed = tokio::task::spawn_blocking(move || {
            let observe = |step| {
                EventLog::default().emit(vault_io::clock_now(), &Event::SealStep { snapshot: snapshot_id.clone(), step });
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            };
            store.seal_observed(pack, table, &referenced, SealInput { snapshot_id: &snapshot_id, manifest: &manifest, receipt: &signed_for_store }, &observe)
        })
        .await
        // The seal stopped (a panic): it may or may not have made the snapshot visible.
        .map_err(|e| Refusal::internal(format!("sealing task failed ({e}): no receipt, and the snapshot may or may not be visible; the next start re-checks the store")))?
        // A store error here is always from before the snapshot became visible.
        .map_err(Refusal::from)?;
        Ok((receipt, signed, sealed))
    }
}

/// The console's account of a sealed snapshot's problems: files made read-only instead of
/// immutable, and what failed after it became visible (an alarm: sealed, receipt owed, but
/// something needs a look). Never a refusal.
fn sealed_notes(sealed: Sealed) -> Vec<Event> {
    let fallbacks = sealed.fallbacks.into_iter().map(|(path, reason)| Event::ImmutableFallback { path: path.display().to_string(), reason });
    let warnings = sealed.warnings.into_iter().map(|detail| Event::Alarm { rule: "seal_not_confirmed".into(), detail });
    fallbacks.chain(warnings).collect()
}

/// A connection's place in the handshake pool ([`vault_core::push::admission`]).
struct PreAuth {
    id: ConnectionId,
    handshakes: Arc<Mutex<Handshakes>>,
    /// Fires when a newer connection took this place.
    evicted: tokio::sync::oneshot::Receiver<()>,
}

/// What a connection takes once it has proved a pusher key.
struct SessionPlace {
    slots: Arc<Semaphore>,
    max: usize,
    /// Set when it became a session (the gate was told it started).
    started: Arc<std::sync::atomic::AtomicBool>,
}

/// The admission rule, and how to end each handshake it evicts.
#[derive(Default)]
struct Handshakes {
    rule: Admission,
    evict: HashMap<ConnectionId, tokio::sync::oneshot::Sender<()>>,
}

impl Handshakes {
    /// Admits a connection or says why not; ends the handshake the rule evicts to make room.
    fn admit(&mut self, id: ConnectionId, source: std::net::IpAddr, evict: tokio::sync::oneshot::Sender<()>) -> Result<(), String> {
        match self.rule.admit(id, source) {
            Admit::No(reason) => return Err(reason),
            Admit::YesEvicting(oldest) => {
                if let Some(end) = self.evict.remove(&oldest) {
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

/// What every session of one window shares.
struct Window {
    policy: Arc<Policy>,
    accounts: WindowAccounts,
    clock: Arc<dyn TimeProvider>,
}

fn random_suffix() -> [u8; 4] {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 4];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the OS gives randomness");
    bytes
}

/// Why a session ended early, and whether the peer should be told.
#[derive(Debug)]
struct Refusal {
    reason: String,
    tell_peer: bool,
}

impl Refusal {
    fn internal(reason: String) -> Refusal {
        Refusal { reason, tell_peer: true }
    }
    fn gone(reason: String) -> Refusal {
        Refusal { reason, tell_peer: false }
    }
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

/// Reads one frame through the protocol's frame reader: the length prefix is checked before
/// room is made for the body, and each part (prefix, body) must arrive within the idle
/// deadline, so a slow trickle ends there. Returns the frame and its size on the wire.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, frames: &mut FrameReader, idle: Duration) -> Result<(ClientFrame, usize), Refusal> {
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        let at_boundary = frames.at_frame_boundary();
        let n = match tokio::time::timeout_at(deadline, stream.read(frames.unfilled())).await {
            Err(_) if at_boundary => return Err(Refusal::internal(format!("idle: no frame within {idle:?}"))),
            Err(_) => return Err(Refusal::internal(format!("idle: frame not received within {idle:?}"))),
            Ok(Ok(0)) if at_boundary => return Err(Refusal::gone("connection closed before commit".into())),
            Ok(Ok(0)) => return Err(Refusal::gone("connection lost mid-frame".into())),
            Ok(Err(e)) => return Err(Refusal::gone(format!("read failed: {e}"))),
            Ok(Ok(n)) => n,
        };
        match frames.filled(n).map_err(Refusal::from)? {
            Filled::More => {}
            Filled::BodyNext { .. } => deadline = tokio::time::Instant::now() + idle,
            Filled::Frame { body, wire_bytes } => return Ok((ClientFrame::decode(body).map_err(Refusal::from)?, wire_bytes)),
        }
    }
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> Result<(), Refusal> {
    stream.write_all(frame).await.map_err(|e| Refusal::gone(format!("write failed: {e}")))?;
    stream.flush().await.map_err(|e| Refusal::gone(format!("write failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_after_the_snapshot_became_visible_is_an_alarm_never_a_refusal() {
        let sealed = Sealed {
            snapshot_dir: "/data/store/snapshots/s1".into(),
            fallbacks: vec![("/data/store/snapshots/s1/manifest".into(), "FS_IOC_SETFLAGS refused".into())],
            warnings: vec!["snapshot `s1` is sealed, but its directory could not be marked immutable (EROFS)".into()],
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
