//! TLS between pusher and vault: TLS 1.3 only, rustls on ring, both sides authenticated by
//! Ed25519 raw public keys (RFC 7250) instead of certificates. The vault accepts exactly the
//! pusher keys its policy lists; the pusher accepts exactly the vault key it pinned. No
//! certificate authorities, no names, no home-made handshake.
#![forbid(unsafe_code)]

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use rustls::crypto::{verify_tls13_signature_with_raw_key, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError, ServerConfig, SignatureScheme};
use vault_core::keys::PublicKey;

pub use rustls;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The server name the pusher asks for; identity comes from the pinned key, not from names.
pub const VAULT_SERVER_NAME: &str = "vault";

static ED25519_ONLY: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms { all: &[webpki::ring::ED25519], mapping: &[(SignatureScheme::ED25519, &[webpki::ring::ED25519])] };

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("peer key is not the one expected: {0}")]
    UnexpectedPeerKey(String),
}

/// A peer key the other side refused; its message names the key.
#[derive(Debug)]
struct KeyNotAllowed(String);

impl std::fmt::Display for KeyNotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyNotAllowed {}

pub fn spki_of(key: &PublicKey) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    der
}

/// The Ed25519 key inside a raw-public-key "certificate", if that is what it is.
pub fn key_of_spki(der: &[u8]) -> Option<PublicKey> {
    let rest = der.strip_prefix(&ED25519_SPKI_PREFIX)?;
    Some(PublicKey::from_bytes(rest.try_into().ok()?))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(pkcs8: &[u8], public: &PublicKey, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let signing = provider.key_provider.load_private_key(der)?;
    Ok(Arc::new(CertifiedKey::new(vec![CertificateDer::from(spki_of(public))], signing)))
}

/// Checks a presented raw public key against an allow list.
#[derive(Debug)]
struct KeyAllowList {
    allowed: Vec<PublicKey>,
    role: &'static str,
}

impl KeyAllowList {
    fn check(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
        let refuse = |why: String| rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(KeyNotAllowed(why)))));
        if !intermediates.is_empty() {
            return Err(refuse(format!("{} sent a certificate chain; only a raw public key is accepted", self.role)));
        }
        let Some(key) = key_of_spki(end_entity.as_ref()) else {
            return Err(refuse(format!("{} key is not an Ed25519 raw public key", self.role)));
        };
        if !self.allowed.contains(&key) {
            return Err(refuse(format!("unknown {} key {key}", self.role)));
        }
        Ok(())
    }

    fn verify_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature_with_raw_key(message, &SubjectPublicKeyInfoDer::from(cert.as_ref()), dss, &ED25519_ONLY)
    }
}

/// The signature side is the same for both verifier traits: TLS 1.3 only, Ed25519 only,
/// raw public keys only.
macro_rules! raw_key_signature_checks {
    () => {
        fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
        }

        fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.verify_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            ED25519_ONLY.supported_schemes()
        }

        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    };
}

impl ClientCertVerifier for KeyAllowList {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], _now: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates).map(|()| ClientCertVerified::assertion())
    }

    raw_key_signature_checks!();
}

impl ServerCertVerifier for KeyAllowList {
    fn verify_server_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates).map(|()| ServerCertVerified::assertion())
    }

    raw_key_signature_checks!();
}

/// The vault's side: its own key, and the pusher keys the policy lists.
pub fn server_config(vault_pkcs8: &[u8], vault_key: &PublicKey, pushers: Vec<PublicKey>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let key = certified_key(vault_pkcs8, vault_key, &provider)?;
    server_config_with(provider, key, pushers)
}

/// Signs a TLS 1.3 handshake message somewhere else (the daemon, for the session worker, which
/// never holds the vault key): the message in, the Ed25519 signature out, or why not.
pub type SignElsewhere = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// [`server_config`] for a process that does not hold the vault key: each handshake's
/// CertificateVerify is signed by `sign`.
pub fn server_config_signed_elsewhere(sign: SignElsewhere, vault_key: &PublicKey, pushers: Vec<PublicKey>) -> Result<Arc<ServerConfig>, TlsError> {
    let key = Arc::new(CertifiedKey::new(vec![CertificateDer::from(spki_of(vault_key))], Arc::new(RemoteKey(sign))));
    server_config_with(provider(), key, pushers)
}

/// The context string of a TLS 1.3 server's CertificateVerify (RFC 8446, section 4.4.3).
const SERVER_VERIFY_CONTEXT: &[u8] = b"TLS 1.3, server CertificateVerify";

/// Checks that `message` is exactly what a TLS 1.3 server signs in its CertificateVerify: 64
/// spaces, the server context string, a zero byte, and a SHA-256 or SHA-384 transcript hash.
/// The daemon signs nothing else for the session worker, so a worker that was taken over
/// cannot have the vault key sign a receipt (or anything but a handshake) for it.
pub fn check_server_verify_message(message: &[u8]) -> Result<(), String> {
    let head = 64 + SERVER_VERIFY_CONTEXT.len() + 1;
    let hash_len = message.len().checked_sub(head);
    if !matches!(hash_len, Some(32 | 48)) {
        return Err(format!("{} bytes is not a TLS 1.3 server CertificateVerify message ({} or {} bytes)", message.len(), head + 32, head + 48));
    }
    let (spaces, rest) = message.split_at(64);
    let well_formed = spaces.iter().all(|b| *b == b' ') && rest.starts_with(SERVER_VERIFY_CONTEXT) && rest[SERVER_VERIFY_CONTEXT.len()] == 0;
    if !well_formed {
        return Err("not a TLS 1.3 server CertificateVerify message: the 64 spaces, context string and zero byte are not there".into());
    }
    Ok(())
}

/// The vault key as rustls sees it in the session worker: Ed25519, signed by the daemon.
#[derive(Clone)]
struct RemoteKey(SignElsewhere);

impl std::fmt::Debug for RemoteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteKey(Ed25519, signed by the daemon)")
    }
}

impl rustls::sign::SigningKey for RemoteKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered.contains(&SignatureScheme::ED25519).then(|| Box::new(self.clone()) as Box<dyn rustls::sign::Signer>)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ED25519
    }
}

impl rustls::sign::Signer for RemoteKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        (self.0)(message).map_err(rustls::Error::General)
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

fn server_config_with(provider: Arc<CryptoProvider>, key: Arc<CertifiedKey>, pushers: Vec<PublicKey>) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = Arc::new(KeyAllowList { allowed: pushers, role: "pusher" });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(key)));
    // No resumption: every session proves its key afresh, and no ticket can be replayed.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The pusher's side: its own key, and the vault key it pinned.
pub fn client_config(pusher_pkcs8: &[u8], pusher_key: &PublicKey, pinned_vault_key: PublicKey) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let key = certified_key(pusher_pkcs8, pusher_key, &provider)?;
    let verifier = Arc::new(KeyAllowList { allowed: vec![pinned_vault_key], role: "vault" });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(key)));
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(VAULT_SERVER_NAME).expect("a valid DNS name")
}

/// A handshake failure in plain words: the reason our verifier gave (`unknown pusher key
/// ed25519:...`) rather than rustls' nested debug form, or the error as it is.
pub fn explain(err: &std::io::Error) -> String {
    let reason = err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).and_then(|tls| match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => Some(other.to_string()),
        _ => None,
    });
    reason.unwrap_or_else(|| err.to_string())
}

/// The authenticated peer key of a finished handshake.
pub fn peer_key(certificates: Option<&[CertificateDer<'_>]>) -> Option<PublicKey> {
    certificates?.first().and_then(|c| key_of_spki(c.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::Ed25519KeyPair;
    use rustls::{ClientConnection, ServerConnection};
    use vault_core::keys::SigningKey;

    struct Key {
        pkcs8: Vec<u8>,
        public: PublicKey,
    }

    fn key() -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref().to_vec();
        let public = SigningKey::from_pkcs8(&pkcs8).unwrap().public_key();
        Key { pkcs8, public }
    }

    /// Runs a handshake in memory; returns the server's view of the pusher key, or the
    /// first error either side raised.
    fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Result<Option<PublicKey>, String> {
        let mut s = ServerConnection::new(server).unwrap();
        let mut c = ClientConnection::new(client, server_name()).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().map_err(|e| format!("server: {e}"))?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().map_err(|e| format!("client: {e}"))?;
            if !s.is_handshaking() && !c.is_handshaking() {
                return Ok(peer_key(s.peer_certificates()));
            }
        }
        Err("handshake did not finish".into())
    }

    #[test]
    fn listed_pusher_and_pinned_vault_complete_the_handshake() {
        let (vault, pusher) = (key(), key());
        let server = server_config(&vault.pkcs8, &vault.public, vec![pusher.public]).unwrap();
        let client = client_config(&pusher.pkcs8, &pusher.public, vault.public).unwrap();
        assert_eq!(handshake(server, client).unwrap(), Some(pusher.public));
    }

    #[test]
    fn an_unknown_pusher_key_is_refused_by_name() {
        let (vault, listed, stranger) = (key(), key(), key());
        let server = server_config(&vault.pkcs8, &vault.public, vec![listed.public]).unwrap();
        let client = client_config(&stranger.pkcs8, &stranger.public, vault.public).unwrap();
        let err = handshake(server, client).unwrap_err();
        assert!(err.contains(&format!("unknown pusher key {}", stranger.public)), "{err}");
    }

    #[test]
    fn a_wrong_pinned_vault_key_is_refused() {
        let (vault, impostor, pusher) = (key(), key(), key());
        let server = server_config(&impostor.pkcs8, &impostor.public, vec![pusher.public]).unwrap();
        let client = client_config(&pusher.pkcs8, &pusher.public, vault.public).unwrap();
        let err = handshake(server, client).unwrap_err();
        assert!(err.contains(&format!("unknown vault key {}", impostor.public)), "{err}");
    }

    #[test]
    fn a_server_whose_handshake_is_signed_elsewhere_completes_and_signs_only_handshakes() {
        let (vault, pusher) = (key(), key());
        let signer = SigningKey::from_pkcs8(&vault.pkcs8).unwrap();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        let sign: SignElsewhere = Arc::new(move |message: &[u8]| {
            seen.lock().unwrap().push(message.to_vec());
            check_server_verify_message(message)?;
            Ok(signer.sign(message).to_vec())
        });
        let server = server_config_signed_elsewhere(sign, &vault.public, vec![pusher.public]).unwrap();
        let client = client_config(&pusher.pkcs8, &pusher.public, vault.public).unwrap();
        assert_eq!(handshake(server, client).unwrap(), Some(pusher.public));
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 1, "one CertificateVerify per handshake");
        assert!(check_server_verify_message(&asked[0]).is_ok());
        // What else a taken-over worker might ask for is refused by name.
        let mut client_context = asked[0].clone();
        client_context[64..64 + 6].copy_from_slice(b"TLS 1.");
        client_context[64 + 9..64 + 15].copy_from_slice(b"client");
        assert!(check_server_verify_message(&client_context).unwrap_err().contains("context string"));
        assert!(check_server_verify_message(&[b'{'; 32]).unwrap_err().contains("32 bytes is not a TLS 1.3 server CertificateVerify message"));
        assert!(check_server_verify_message(&asked[0][..asked[0].len() - 1]).is_err());
    }

    #[test]
    fn a_signer_that_refuses_fails_the_handshake() {
        let (vault, pusher) = (key(), key());
        let sign: SignElsewhere = Arc::new(|_: &[u8]| Err("the daemon is gone".to_string()));
        let server = server_config_signed_elsewhere(sign, &vault.public, vec![pusher.public]).unwrap();
        let client = client_config(&pusher.pkcs8, &pusher.public, vault.public).unwrap();
        assert!(handshake(server, client).unwrap_err().contains("the daemon is gone"));
    }

    #[test]
    fn spki_round_trips_and_refuses_other_shapes() {
        let k = key().public;
        assert_eq!(key_of_spki(&spki_of(&k)), Some(k));
        assert_eq!(key_of_spki(&spki_of(&k)[..40]), None);
        assert_eq!(key_of_spki(b"not a key"), None);
    }
}
