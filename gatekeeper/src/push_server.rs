//! The push-session server: what runs on the vault's listener while a window is open.
//!
//! Per connection: a connection slot (or refusal), a TLS 1.3 handshake within a deadline
//! (only keys the policy lists get through), then frames, each read within the idle
//! deadline and size-checked before its body is read, fed to the pure
//! [`vault_core::ingest::IngestSession`]. Verified chunks go to a staging pack; a commit
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
use vault_core::chunk::ChunkId;
use vault_core::ingest::{IngestEnv, IngestSession, SealRequest, Step};
use vault_core::policy::Policy;
use vault_core::protocol::{frame_len, ClientFrame, VaultFrame, LENGTH_PREFIX};
use vault_core::receipt::{Receipt, SignedReceipt};
use vault_core::units::Timestamp;
use vault_store::{SealInput, Sealed, StagingPack, Store};

use crate::events::Event;
use crate::identity::VaultIdentity;
use crate::sessions_api::{SessionContext, SessionReport, SessionServer, Stop};

/// Deadlines and caps, checked before anything is allocated for a peer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From TCP accept to a finished TLS handshake.
    pub handshake: Duration,
    /// Longest wait for (any part of) the next frame: slowloris ends here.
    pub idle: Duration,
    /// Concurrent sessions; one more is closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { handshake: Duration::from_secs(10), idle: Duration::from_secs(30), max_connections: 16 }
    }
}

pub struct PushService {
    pub store: Arc<Store>,
    pub identity: Arc<VaultIdentity>,
    pub limits: Limits,
}

/// The production server for [`crate::sessions_api`].
pub fn server(service: Arc<PushService>) -> SessionServer {
    Arc::new(move |ctx| Box::pin(service.clone().serve_window(ctx)))
}

/// Bytes each pusher sent in this window (shared by that pusher's concurrent sessions).
type WindowQuotas = Arc<Mutex<HashMap<String, u64>>>;

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
        let quotas: WindowQuotas = Arc::default();
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut sessions: JoinSet<()> = JoinSet::new();
        let mut peers: HashMap<tokio::task::Id, SocketAddr> = HashMap::new();
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
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        drop(stream);
                        note(Event::SessionRefused {
                            peer: peer.to_string(),
                            pusher: None,
                            reason: format!("too many connections: {} already open", self.limits.max_connections),
                        }).await;
                        continue;
                    };
                    let _ = ctx.reports.send(SessionReport::Started { peer }).await;
                    let service = self.clone();
                    let (tls, policy, quotas, reports) = (tls.clone(), ctx.policy.clone(), quotas.clone(), ctx.reports.clone());
                    let handle = sessions.spawn(async move {
                        service.run_session(stream, peer, tls, policy, quotas, reports).await;
                        drop(slot);
                    });
                    peers.insert(handle.id(), peer);
                }
                Some(done) = sessions.join_next_with_id(), if !sessions.is_empty() => {
                    let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                    if let Some(peer) = peers.remove(&id) {
                        let _ = ctx.reports.send(SessionReport::Ended { peer }).await;
                    }
                }
            }
            if listener.is_none() && sessions.is_empty() {
                return;
            }
        }
    }

    async fn run_session(&self, stream: TcpStream, peer: SocketAddr, tls: TlsAcceptor, policy: Arc<Policy>, quotas: WindowQuotas, reports: mpsc::Sender<SessionReport>) {
        let refuse = |pusher: Option<String>, reason: String| {
            let reports = reports.clone();
            async move {
                let _ = reports.send(SessionReport::Note(Event::SessionRefused { peer: peer.to_string(), pusher, reason })).await;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = match tokio::time::timeout(self.limits.handshake, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return refuse(None, format!("TLS handshake failed: {}", vault_tls::explain(&e))).await,
            Err(_) => return refuse(None, format!("TLS handshake not finished within {:?}", self.limits.handshake)).await,
        };
        let pusher = vault_tls::peer_key(stream.get_ref().1.peer_certificates()).and_then(|key| policy.pusher_by_key(&key));
        let Some(pusher) = pusher else {
            return refuse(None, "authenticated key is not a pusher of this policy".into()).await;
        };
        let _ = reports.send(SessionReport::Note(Event::SessionAccepted { peer: peer.to_string(), pusher: pusher.name.clone() })).await;
        match self.ingest(&mut stream, &policy, pusher, &quotas).await {
            Ok((receipt, sealed, seal_ms)) => {
                let _ = stream.shutdown().await;
                for (path, reason) in sealed.fallbacks {
                    let _ = reports.send(SessionReport::Note(Event::ImmutableFallback { path: path.display().to_string(), reason })).await;
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
                let _ = reports.send(SessionReport::Committed { pusher: pusher.name.clone() }).await;
            }
            Err(Refusal { reason, tell_peer }) => {
                if tell_peer {
                    let frame = VaultFrame::Refused { reason: reason.clone() }.encode();
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
    /// is dropped with it, so nothing of the session remains.
    async fn ingest<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        policy: &Policy,
        pusher: &vault_core::policy::Pusher,
        quotas: &WindowQuotas,
    ) -> Result<(Receipt, Sealed, u64), Refusal> {
        let mut session = IngestSession::new(&pusher.name);
        let mut env = Env { store: &self.store, quotas, pusher: &pusher.name, quota: pusher.quota.bytes() };
        let mut pack: Option<StagingPack> = None;
        let mut buf = Vec::new();
        loop {
            let frame = read_frame(stream, &mut buf, self.limits.idle).await?;
            let step = session.on_frame(frame, &mut env).map_err(Refusal::from)?;
            match step {
                Step::Reply(reply) => write_frame(stream, &reply.encode()).await?,
                Step::Store { id, data } => {
                    if pack.is_none() {
                        pack = Some(self.store.begin().map_err(Refusal::from)?);
                    }
                    pack.as_mut().expect("just made").append(id, &data).map_err(Refusal::from)?;
                }
                Step::Nothing => {}
                Step::Seal(request) => {
                    let pack = match pack.take() {
                        Some(pack) => pack,
                        None => self.store.begin().map_err(Refusal::from)?,
                    };
                    let seal_started = std::time::Instant::now();
                    let (receipt, signed, sealed) = self.seal(policy, pusher, pack, request).await?;
                    session.sealed();
                    write_frame(stream, &VaultFrame::Receipt { body: signed.body, signature: signed.signature }.encode()).await?;
                    return Ok((receipt, sealed, seal_started.elapsed().as_millis() as u64));
                }
            }
        }
    }

    async fn seal(&self, policy: &Policy, pusher: &vault_core::policy::Pusher, pack: StagingPack, request: SealRequest) -> Result<(Receipt, SignedReceipt, Sealed), Refusal> {
        // Retention counts from the vault's clock at sealing, never from the pusher's.
        let received_at = vault_io::clock_now();
        let snapshot_id = format!("{}-{}-{}", compact(received_at), request.dataset, &random_suffix());
        let receipt = Receipt {
            vault_id: policy.vault_id.clone(),
            vault_key: self.identity.public,
            policy_version: policy.version,
            snapshot_id: snapshot_id.clone(),
            dataset: request.dataset.clone(),
            pusher: pusher.name.clone(),
            manifest_sha256: request.manifest_sha256.clone(),
            files: request.manifest.file_count(),
            logical_bytes: request.manifest.total_size(),
            chunks_total: request.manifest.chunk_refs().count() as u64,
            chunks_new: request.chunks_new,
            bytes_new: request.bytes_new,
            received_at,
            retain_until: received_at.saturating_add(pusher.retain),
            client_time: request.client_time,
        };
        let (body, signature) = receipt.sign(&self.identity.key);
        let signed = SignedReceipt { body, signature };
        let store = self.store.clone();
        let (manifest, signed_for_store) = (request.manifest_bytes, signed.clone());
        // fsyncs and renames: off the async threads.
        let sealed = tokio::task::spawn_blocking(move || store.seal(pack, SealInput { snapshot_id: &snapshot_id, manifest: &manifest, receipt: &signed_for_store }))
            .await
            .map_err(|e| Refusal::internal(format!("sealing task failed: {e}")))?
            .map_err(Refusal::from)?;
        Ok((receipt, signed, sealed))
    }
}

/// `2026-11-25T10:15:00Z` -> `20261125T101500Z`: sortable, safe in a file name.
fn compact(t: Timestamp) -> String {
    t.to_string().chars().filter(|c| *c != '-' && *c != ':').collect()
}

fn random_suffix() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 4];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the OS gives randomness");
    vault_core::keys::hex(&bytes)
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
    quotas: &'a WindowQuotas,
    pusher: &'a str,
    quota: u64,
}

impl IngestEnv for Env<'_> {
    fn has_chunk(&self, id: &ChunkId) -> bool {
        self.store.has_chunk(id)
    }

    fn take_quota(&mut self, bytes: u64) -> Result<u64, (u64, u64)> {
        let mut used = self.quotas.lock().expect("quota lock");
        let used = used.entry(self.pusher.to_string()).or_insert(0);
        let would_be = used.saturating_add(bytes);
        if would_be > self.quota {
            return Err((self.quota, would_be));
        }
        *used = would_be;
        Ok(self.quota - would_be)
    }
}

/// Reads one frame: the length first (refused if over the cap, before the body is read),
/// then the body; each within the idle deadline.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>, idle: Duration) -> Result<ClientFrame, Refusal> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    match tokio::time::timeout(idle, stream.read_exact(&mut prefix)).await {
        Err(_) => return Err(Refusal::internal(format!("idle: no frame within {idle:?}"))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Refusal::gone("connection closed before commit".into()))
        }
        Ok(Err(e)) => return Err(Refusal::gone(format!("read failed: {e}"))),
        Ok(Ok(_)) => {}
    }
    let len = frame_len(prefix).map_err(Refusal::from)?;
    buf.resize(len, 0);
    match tokio::time::timeout(idle, stream.read_exact(buf)).await {
        Err(_) => return Err(Refusal::internal(format!("idle: frame body of {len} bytes not received within {idle:?}"))),
        Ok(Err(e)) => return Err(Refusal::gone(format!("connection lost mid-frame: {e}"))),
        Ok(Ok(_)) => {}
    }
    ClientFrame::decode(buf).map_err(Refusal::from)
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> Result<(), Refusal> {
    stream.write_all(frame).await.map_err(|e| Refusal::gone(format!("write failed: {e}")))?;
    stream.flush().await.map_err(|e| Refusal::gone(format!("write failed: {e}")))
}
