//! Admin signatures made with OpenSSH: `ssh-keygen -Y sign` over a bundle's or an order's
//! payload, by a plain `ssh-ed25519` key or a FIDO2 security key (`sk-ssh-ed25519@openssh.com`).
//!
//! The formats are OpenSSH's own: the signature is PROTOCOL.sshsig (armored, `SSHSIG` blob), the
//! security key's signature is PROTOCOL.u2f (an Ed25519 signature over the SHA-256 of the key's
//! application, the authenticator's flags byte and counter, and the SHA-256 of the signed
//! data). Everything is checked here, not by a library: `ssh-key` and OpenSSH 9.2's own
//! `ssh-keygen -Y verify` both accept a FIDO signature without the user-presence flag, and a
//! quorum signature made by malware with the token merely plugged in is what that flag refuses.
//!
//! Checked, in order, each a [`SshsigError`]: size, armor and base64; the blob's layout (magic,
//! version 1, every length within what is left, nothing after the last field); the signing key
//! is the admin's, byte for byte (type, key and, for a security key, its application); the
//! namespace is the one for this kind of object; the hash is `sha256` or `sha512`; the reserved
//! field is empty; the signature's type matches the key's; for a security key, user presence,
//! and user verification where the root asks for it; then the Ed25519 signature (ring).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::keys::{PublicKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};

/// A plain OpenSSH Ed25519 key.
pub const SSH_ED25519: &str = "ssh-ed25519";
/// An Ed25519 key on a FIDO2 security key (PROTOCOL.u2f).
pub const SK_SSH_ED25519: &str = "sk-ssh-ed25519@openssh.com";
/// The largest armored signature read: an Ed25519 SSHSIG is about 300 characters, a security
/// key's with a long application about 500.
pub const MAX_ARMORED_BYTES: usize = 4096;
/// The longest application string a security key may have (OpenSSH uses `ssh:` and a name).
pub const MAX_APPLICATION_BYTES: usize = 256;
/// The authenticator saw a touch (FIDO2 "UP").
pub const FLAG_USER_PRESENT: u8 = 0x01;
/// The authenticator checked a PIN or biometric (FIDO2 "UV").
pub const FLAG_USER_VERIFIED: u8 = 0x04;

const MAGIC: &[u8; 6] = b"SSHSIG";
const VERSION: u32 = 1;
const ARMOR_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const ARMOR_END: &str = "-----END SSH SIGNATURE-----";

/// Why an OpenSSH signature or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshsigError {
    #[error("not an OpenSSH signature: {0} (expected the `{ARMOR_BEGIN}` block `ssh-keygen -Y sign` writes)")]
    Armor(&'static str),
    #[error("the OpenSSH signature is {size} bytes, over the limit of {MAX_ARMORED_BYTES}")]
    TooLarge { size: usize },
    #[error("the OpenSSH signature is not valid base64 ({0})")]
    Base64(String),
    #[error("the OpenSSH signature is cut short in its {0}")]
    Truncated(&'static str),
    #[error("the OpenSSH signature has {0} byte(s) after its last field")]
    TrailingBytes(usize),
    #[error("not an SSHSIG blob (no `SSHSIG` magic)")]
    Magic,
    #[error("SSHSIG version {0}; version 1 is the only one defined")]
    Version(u32),
    #[error("`{0}` keys are not accepted: an admin's OpenSSH key is `{SSH_ED25519}` or `{SK_SSH_ED25519}`")]
    KeyType(String),
    #[error("{field} is {len} bytes, an Ed25519 {field} is {expected}")]
    Length { field: &'static str, len: usize, expected: usize },
    #[error("the security key's application is {0} bytes, longer than {MAX_APPLICATION_BYTES}")]
    Application(usize),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("signed by another key ({found}), not this admin's ({expected})")]
    OtherKey { found: String, expected: String },
    #[error("signed in namespace `{found}`, this object is signed in `{expected}`: sign again with `ssh-keygen -Y sign -n {expected}`")]
    Namespace { found: String, expected: String },
    #[error("the reserved field is not empty")]
    Reserved,
    #[error("hash algorithm `{0}`: sha256 or sha512 only")]
    HashAlgorithm(String),
    #[error("a `{found}` signature from a `{key}` key")]
    SignatureType { found: String, key: &'static str },
    #[error("the security key signed without user presence (flags 0x{flags:02x}): sign again and touch the key when it blinks")]
    NoUserPresence { flags: u8 },
    #[error("the security key signed without user verification (flags 0x{flags:02x}), which the trust root requires of this admin: sign again with a key that has a PIN set (`ssh-keygen -t ed25519-sk -O verify-required`)")]
    NoUserVerification { flags: u8 },
    #[error("the signature does not verify over this payload (signed something else, or was altered)")]
    BadSignature,
}

/// What kind of OpenSSH key an admin holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SshKeyKind {
    /// `ssh-ed25519`: a key file on the admin's machine.
    Plain,
    /// `sk-ssh-ed25519@openssh.com`: the key lives on a FIDO2 token; `application` is the
    /// relying party it was made for (`ssh:` by default).
    SecurityKey { application: String },
}

/// An admin's OpenSSH public key: the Ed25519 key (what quorums count) and its kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SshPublicKey {
    pub key: PublicKey,
    pub kind: SshKeyKind,
}

impl SshPublicKey {
    /// Parses an OpenSSH public key line, `<type> <base64 blob> [comment]` (a `.pub` file or an
    /// `authorized_keys` line without options). The type named before the blob must be the one
    /// inside it.
    pub fn parse_line(line: &str) -> Result<SshPublicKey, SshsigError> {
        let mut fields = line.split_ascii_whitespace();
        let named = fields.next().ok_or(SshsigError::Truncated("public key line"))?;
        if named != SSH_ED25519 && named != SK_SSH_ED25519 {
            return Err(SshsigError::KeyType(named.chars().take(64).collect()));
        }
        let encoded = fields.next().ok_or(SshsigError::Truncated("public key line"))?;
        if encoded.len() > MAX_ARMORED_BYTES {
            return Err(SshsigError::TooLarge { size: encoded.len() });
        }
        let blob = BASE64.decode(encoded).map_err(|e| SshsigError::Base64(e.to_string()))?;
        let key = SshPublicKey::from_blob(&blob)?;
        if key.type_name() != named {
            return Err(SshsigError::KeyType(format!("{named} (the blob holds a {} key)", key.type_name())));
        }
        Ok(key)
    }

    /// Parses the wire form (RFC 4253 section 6.6; PROTOCOL.u2f for the security key).
    pub fn from_blob(blob: &[u8]) -> Result<SshPublicKey, SshsigError> {
        let mut reader = Reader::new(blob);
        let key = reader.public_key()?;
        reader.finish()?;
        Ok(key)
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            SshKeyKind::Plain => SSH_ED25519,
            SshKeyKind::SecurityKey { .. } => SK_SSH_ED25519,
        }
    }

    /// The wire form, as it appears in a `.pub` file's base64 and inside a signature.
    pub fn to_blob(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        put_string(&mut out, self.type_name().as_bytes());
        put_string(&mut out, self.key.as_bytes());
        if let SshKeyKind::SecurityKey { application } = &self.kind {
            put_string(&mut out, application.as_bytes());
        }
        out
    }

    /// `<type> <base64 blob>`: the line without a comment, as a trust root writes it.
    pub fn to_line(&self) -> String {
        format!("{} {}", self.type_name(), BASE64.encode(self.to_blob()))
    }

    /// OpenSSH's fingerprint (`SHA256:<unpadded base64>`), as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.to_blob());
        format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref()))
    }
}

/// A decoded SSHSIG blob: what was signed and by whom, before any check of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSignature {
    pub public_key: SshPublicKey,
    pub namespace: String,
    reserved: Vec<u8>,
    pub hash_algorithm: String,
    signature_type: String,
    signature: Vec<u8>,
    /// A security key's authenticator data (flags, counter); none for a plain key.
    authenticator: Option<(u8, u32)>,
}

impl SshSignature {
    /// Decodes the armored text `ssh-keygen -Y sign` writes. Bounded before it is decoded.
    pub fn from_armored(text: &[u8]) -> Result<SshSignature, SshsigError> {
        if text.len() > MAX_ARMORED_BYTES {
            return Err(SshsigError::TooLarge { size: text.len() });
        }
        let text = std::str::from_utf8(text).map_err(|_| SshsigError::NotUtf8("the armored signature"))?;
        let body = text.trim().strip_prefix(ARMOR_BEGIN).ok_or(SshsigError::Armor("no BEGIN line"))?;
        let body = body.trim_end().strip_suffix(ARMOR_END).ok_or(SshsigError::Armor("no END line"))?;
        let joined: String = body.split_ascii_whitespace().collect();
        let blob = BASE64.decode(joined).map_err(|e| SshsigError::Base64(e.to_string()))?;
        SshSignature::from_blob(&blob)
    }

    /// Decodes a bundle's `sshsig` member: the blob in base64, bounded before it is decoded.
    pub fn from_base64(text: &str) -> Result<SshSignature, SshsigError> {
        if text.len() > MAX_ARMORED_BYTES {
            return Err(SshsigError::TooLarge { size: text.len() });
        }
        SshSignature::from_blob(&BASE64.decode(text).map_err(|e| SshsigError::Base64(e.to_string()))?)
    }

    /// Decodes the binary blob (what a bundle's `sshsig` member holds, base64).
    pub fn from_blob(blob: &[u8]) -> Result<SshSignature, SshsigError> {
        if blob.len() > MAX_ARMORED_BYTES {
            return Err(SshsigError::TooLarge { size: blob.len() });
        }
        let mut reader = Reader::new(blob);
        if reader.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(SshsigError::Magic);
        }
        let version = reader.u32("version")?;
        if version != VERSION {
            return Err(SshsigError::Version(version));
        }
        let public_key = SshPublicKey::from_blob(reader.string("public key")?)?;
        let namespace = reader.utf8("namespace")?;
        let reserved = reader.string("reserved field")?.to_vec();
        let hash_algorithm = reader.utf8("hash algorithm")?;
        let mut inner = Reader::new(reader.string("signature")?);
        reader.finish()?;
        let signature_type = inner.utf8("signature type")?;
        let signature = inner.string("signature")?.to_vec();
        let authenticator = match public_key.kind {
            SshKeyKind::Plain => None,
            SshKeyKind::SecurityKey { .. } => Some((inner.u8("flags")?, inner.u32("counter")?)),
        };
        inner.finish()?;
        Ok(SshSignature { public_key, namespace, reserved, hash_algorithm, signature_type, signature, authenticator })
    }

    /// The armored text, as `ssh-keygen -Y sign` writes it (base64 lines of 70 characters).
    pub fn to_armored(&self) -> String {
        let encoded = BASE64.encode(self.to_blob());
        let mut out = format!("{ARMOR_BEGIN}\n");
        for line in encoded.as_bytes().chunks(70) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str(ARMOR_END);
        out.push('\n');
        out
    }

    /// The binary blob, as `ssh-keygen` armors it.
    pub fn to_blob(&self) -> Vec<u8> {
        let mut inner = Vec::with_capacity(96);
        put_string(&mut inner, self.signature_type.as_bytes());
        put_string(&mut inner, &self.signature);
        if let Some((flags, counter)) = self.authenticator {
            inner.push(flags);
            inner.extend_from_slice(&counter.to_be_bytes());
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        put_string(&mut out, &self.public_key.to_blob());
        put_string(&mut out, self.namespace.as_bytes());
        put_string(&mut out, &self.reserved);
        put_string(&mut out, self.hash_algorithm.as_bytes());
        put_string(&mut out, &inner);
        out
    }

    /// Checks that `expected` (an admin's key) signed `message` in `namespace`, demanding user
    /// verification from a security key when `require_user_verification`.
    pub fn verify(&self, expected: &SshPublicKey, require_user_verification: bool, namespace: &str, message: &[u8]) -> Result<(), SshsigError> {
        if self.public_key != *expected {
            return Err(SshsigError::OtherKey { found: self.public_key.fingerprint(), expected: expected.fingerprint() });
        }
        if self.namespace != namespace {
            return Err(SshsigError::Namespace { found: self.namespace.chars().take(128).collect(), expected: namespace.to_string() });
        }
        if !self.reserved.is_empty() {
            return Err(SshsigError::Reserved);
        }
        let algorithm = match self.hash_algorithm.as_str() {
            "sha256" => &ring::digest::SHA256,
            "sha512" => &ring::digest::SHA512,
            other => return Err(SshsigError::HashAlgorithm(other.chars().take(64).collect())),
        };
        if self.signature_type != expected.type_name() {
            return Err(SshsigError::SignatureType { found: self.signature_type.chars().take(64).collect(), key: expected.type_name() });
        }
        if self.signature.len() != SIGNATURE_LEN {
            return Err(SshsigError::Length { field: "signature", len: self.signature.len(), expected: SIGNATURE_LEN });
        }
        let signed = signed_data(namespace, &self.hash_algorithm, ring::digest::digest(algorithm, message).as_ref());
        let ok = match (&expected.kind, self.authenticator) {
            (SshKeyKind::Plain, None) => expected.key.verify(&signed, &self.signature),
            (SshKeyKind::SecurityKey { application }, Some((flags, counter))) => {
                if flags & FLAG_USER_PRESENT == 0 {
                    return Err(SshsigError::NoUserPresence { flags });
                }
                if require_user_verification && flags & FLAG_USER_VERIFIED == 0 {
                    return Err(SshsigError::NoUserVerification { flags });
                }
                expected.key.verify(&security_key_signed_bytes(application, flags, counter, &signed), &self.signature)
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(SshsigError::BadSignature)
        }
    }
}

/// What an SSHSIG signature covers (PROTOCOL.sshsig, "Signed Data"): the magic, the namespace,
/// an empty reserved field, the hash algorithm's name and the message's hash.
pub fn signed_data(namespace: &str, hash_algorithm: &str, message_hash: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 16 + namespace.len() + hash_algorithm.len() + message_hash.len());
    out.extend_from_slice(MAGIC);
    put_string(&mut out, namespace.as_bytes());
    put_string(&mut out, b"");
    put_string(&mut out, hash_algorithm.as_bytes());
    put_string(&mut out, message_hash);
    out
}

/// What a security key's Ed25519 signature covers (PROTOCOL.u2f, "Signature format" for
/// `sk-ssh-ed25519@openssh.com`): SHA-256 of the application, the flags, the counter (big
/// endian) and SHA-256 of the data being signed.
pub fn security_key_signed_bytes(application: &str, flags: u8, counter: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + 1 + 4 + 32);
    out.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, application.as_bytes()).as_ref());
    out.push(flags);
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

impl SshSignature {
    /// Assembles a signature from its parts: for tests that play a signer (a FIDO2 token's
    /// flags and counter included) and for tools that re-encode one.
    pub fn from_parts(public_key: SshPublicKey, namespace: &str, hash_algorithm: &str, signature: [u8; SIGNATURE_LEN], authenticator: Option<(u8, u32)>) -> SshSignature {
        SshSignature {
            signature_type: public_key.type_name().to_string(),
            public_key,
            namespace: namespace.to_string(),
            reserved: Vec::new(),
            hash_algorithm: hash_algorithm.to_string(),
            signature: signature.to_vec(),
            authenticator,
        }
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("SSH strings here are far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// RFC 4251 section 5 fields, each length checked against what is left before it is taken.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], SshsigError> {
        if self.rest.len() < len {
            return Err(SshsigError::Truncated(field));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, SshsigError> {
        Ok(self.take(1, field)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, SshsigError> {
        let bytes: [u8; 4] = self.take(4, field)?.try_into().expect("took 4 bytes");
        Ok(u32::from_be_bytes(bytes))
    }

    fn string(&mut self, field: &'static str) -> Result<&'a [u8], SshsigError> {
        let len = usize::try_from(self.u32(field)?).map_err(|_| SshsigError::Truncated(field))?;
        self.take(len, field)
    }

    fn utf8(&mut self, field: &'static str) -> Result<String, SshsigError> {
        let bytes = self.string(field)?;
        std::str::from_utf8(bytes).map(str::to_string).map_err(|_| SshsigError::NotUtf8(field))
    }

    fn public_key(&mut self) -> Result<SshPublicKey, SshsigError> {
        let type_name = self.utf8("key type")?;
        let kind_is_sk = match type_name.as_str() {
            SSH_ED25519 => false,
            SK_SSH_ED25519 => true,
            other => return Err(SshsigError::KeyType(other.chars().take(64).collect())),
        };
        let raw = self.string("public key")?;
        let bytes: [u8; PUBLIC_KEY_LEN] = raw.try_into().map_err(|_| SshsigError::Length { field: "public key", len: raw.len(), expected: PUBLIC_KEY_LEN })?;
        let kind = if kind_is_sk {
            let application = self.utf8("security key application")?;
            if application.len() > MAX_APPLICATION_BYTES {
                return Err(SshsigError::Application(application.len()));
            }
            SshKeyKind::SecurityKey { application }
        } else {
            SshKeyKind::Plain
        };
        Ok(SshPublicKey { key: PublicKey::from_bytes(bytes), kind })
    }

    fn finish(&self) -> Result<(), SshsigError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(SshsigError::TrailingBytes(self.rest.len()))
        }
    }
}

#[cfg(test)]
#[path = "sshsig_tests.rs"]
pub(crate) mod tests;
