//! A pusher that speaks the wire protocol frame by frame, for the tests that must say what
//! `vaultctl` never would: bad hashes, bad names, unknown verbs, odd timestamps, stalls.
//! It uses the real TLS configuration (`vault_tls::client_config`), so the vault sees an
//! authenticated pusher and everything after the handshake is the test's choice.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use vault_core::keys::{PublicKey, SigningKey};
use vault_core::push::chunk::{ChunkId, MAX_CHUNK_BYTES};
use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use vault_core::push::protocol::{ClientFrame, FrameReader, VaultFrame};
use vault_core::push::receipt::Receipt;
use vault_tls::rustls::{ClientConnection, StreamOwned};

/// A pusher's secret key file (PEM PKCS#8, as `vaultctl key gen` writes it): the PKCS#8
/// document and its public key.
pub fn load_pusher_key(path: &Path) -> (Vec<u8>, PublicKey) {
    let parsed = pem::parse(std::fs::read(path).unwrap()).unwrap();
    assert_eq!(parsed.tag(), "PRIVATE KEY");
    let public = SigningKey::from_pkcs8(parsed.contents()).unwrap().public_key();
    (parsed.contents().to_vec(), public)
}

pub struct RawClient<S: Read + Write> {
    tls: StreamOwned<ClientConnection, S>,
    frames: FrameReader,
}

impl<S: Read + Write> RawClient<S> {
    /// Completes the TLS handshake over `sock` as the holder of `key_file`, pinning `vault_key`.
    pub fn handshake(sock: S, key_file: &Path, vault_key: &str) -> Result<RawClient<S>, String> {
        let (pkcs8, public) = load_pusher_key(key_file);
        let vault_key = PublicKey::parse(vault_key, "vault key").unwrap();
        let config = vault_tls::client_config(&pkcs8, &public, vault_key).unwrap();
        let conn = ClientConnection::new(config, vault_tls::server_name()).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).map_err(|e| e.to_string())?;
        }
        Ok(RawClient { tls, frames: FrameReader::default() })
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    pub fn send(&mut self, frame: &ClientFrame) {
        self.send_bytes(&frame.encode().unwrap()).unwrap();
    }

    pub fn recv(&mut self) -> std::io::Result<VaultFrame> {
        vault_io::read_frame(&mut self.tls, &mut self.frames, VaultFrame::decode)?.ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
    }

    /// The reason of the `Refused` frame that must come next; then the vault closes.
    pub fn refusal(&mut self) -> String {
        match self.recv() {
            Ok(VaultFrame::Refused { reason }) => {
                let mut rest = Vec::new();
                let closed = self.tls.read_to_end(&mut rest);
                assert!(closed.is_ok_and(|n| n == 0), "the vault kept talking after refusing: {rest:?}");
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// `begin`; returns the quota left in this window.
    pub fn begin(&mut self, dataset: &str, client_time: i64) -> u64 {
        self.send(&ClientFrame::Begin { dataset: dataset.into(), client_time, audit_size: 0 });
        match self.recv().unwrap() {
            VaultFrame::Ready { quota_left } => quota_left,
            other => panic!("expected ready, got {other:?}"),
        }
    }

    /// Sends every chunk of `files` (each file is one or more chunks of at most
    /// `MAX_CHUNK_BYTES`), then the manifest naming them, then the commit.
    pub fn send_tree(&mut self, files: &[(&[u8], &[u8])]) {
        for (_, data) in files {
            for piece in data.chunks(MAX_CHUNK_BYTES) {
                self.send(&ClientFrame::Chunk { id: ChunkId::of(piece), data: piece.to_vec() });
            }
        }
        self.send_manifest_and_commit(&manifest_of(files));
    }

    pub fn send_manifest_and_commit(&mut self, manifest: &[u8]) {
        self.send(&ClientFrame::ManifestPart { bytes: manifest.to_vec() });
        let digest = ring::digest::digest(&ring::digest::SHA256, manifest);
        self.send(&ClientFrame::Commit { manifest_sha256: digest.as_ref().try_into().unwrap(), manifest_len: manifest.len() as u64 });
    }

    /// The receipt that must come next, verified against `vault_key`.
    pub fn receipt(&mut self, vault_key: &str) -> Receipt {
        match self.recv().unwrap() {
            VaultFrame::Receipt { body, signature, .. } => Receipt::verify(&body, &signature, &PublicKey::parse(vault_key, "vault key").unwrap()).unwrap(),
            other => panic!("expected a receipt, got {other:?}"),
        }
    }

    /// A whole valid push of `files`; returns the verified receipt.
    pub fn push(&mut self, dataset: &str, client_time: i64, files: &[(&[u8], &[u8])], vault_key: &str) -> Receipt {
        self.begin(dataset, client_time);
        self.send_tree(files);
        self.receipt(vault_key)
    }

    pub fn into_sock(self) -> S {
        self.tls.sock
    }
}

/// A manifest of plain files (path, content), sorted as the vault requires, without any
/// name checks of its own: the vault is the one that must check.
pub fn manifest_of(files: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut entries: Vec<Entry> = files
        .iter()
        .map(|(path, data)| Entry {
            path: path.to_vec(),
            mode: 0o644,
            mtime: 0,
            kind: EntryKind::File {
                size: data.len() as u64,
                chunks: data.chunks(MAX_CHUNK_BYTES).map(|piece| ChunkRef { id: ChunkId::of(piece), len: u32::try_from(piece.len()).unwrap() }).collect(),
            },
        })
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Manifest { entries }.encode().unwrap()
}

/// Wraps a socket and keeps a copy of every byte written to it (to replay it later).
pub struct Recorder<S> {
    inner: S,
    pub written: Arc<Mutex<Vec<u8>>>,
}

impl<S> Recorder<S> {
    pub fn new(inner: S) -> Recorder<S> {
        Recorder { inner, written: Arc::default() }
    }
}

impl<S: Read> Read for Recorder<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Recorder<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
