//! Authenticating a link with a pre-shared key, and the keys that then encrypt it.
//!
//! A sender that holds a key opens the connection with `Greeting` instead of `Hello`
//! (see [`crate::wire`]): the key's id, a fresh nonce and the volume. The receiver
//! answers `Challenge`: its own fresh nonce and its proof. The sender checks that proof
//! and answers `Proof`, its own. Each proof is HMAC-SHA256 under the key over a label
//! naming the side, the protocol version, whether the stream is encrypted, the key id,
//! the volume's name and size and both nonces ([`Transcript`]). So a recorded session
//! cannot be replayed (the other side's nonce is new each time), a proof cannot be
//! reflected (the labels differ), and neither side can pretend to know the key.
//!
//! When the stream is encrypted, both sides then hand the socket to the kernel's TLS
//! record layer (AES-128-GCM, TLS 1.3 records) with one key per direction, derived by
//! HKDF-SHA256 (RFC 5869) from the key and both nonces ([`session_keys`]); the first
//! protected byte is the sender's `Hello`.
//!
//! The key is 32 random bytes, written as 64 hex digits: the same text is replicad's
//! key file and the kernel keyring's `logon` key ([`Psk::parse`]).
use crate::wire::VERSION;

/// Bytes of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof (an HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 8;
/// Bytes of a pre-shared key.
pub const PSK_LEN: usize = 32;

/// Computes HMAC-SHA256; the kernel module and userspace each bring their own.
pub trait HmacSha256 {
    /// Why it could not (the kernel's crypto API may fail to allocate).
    type Error;
    /// HMAC-SHA256 under `key` of the concatenation of `parts`.
    fn hmac(&self, key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], Self::Error>;
}

/// A pre-shared key.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk([u8; PSK_LEN]);

impl core::fmt::Debug for Psk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the key itself: it must not reach a log.
        f.write_str("Psk(..)")
    }
}

/// Why bytes are not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PskError {
    /// Not 64 hex digits (after trimming one trailing newline).
    Length(usize),
    /// A byte that is not a hex digit, at this index.
    NotHex(usize),
}

impl core::fmt::Display for PskError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Length(len) => write!(
                f,
                "a key is {} hex digits (32 random bytes), not {len} characters",
                2 * PSK_LEN
            ),
            Self::NotHex(at) => write!(f, "character {at} of the key is not a hex digit"),
        }
    }
}

impl Psk {
    /// Parses a key written as 64 hex digits, optionally followed by one newline.
    pub fn parse(text: &[u8]) -> Result<Self, PskError> {
        let text = match text {
            [head @ .., b'\n'] => head,
            _ => text,
        };
        if text.len() != 2 * PSK_LEN {
            return Err(PskError::Length(text.len()));
        }
        let digit = |at: usize| match text[at] {
            c @ b'0'..=b'9' => Ok(c - b'0'),
            c @ b'a'..=b'f' => Ok(c - b'a' + 10),
            c @ b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(PskError::NotHex(at)),
        };
        let mut key = [0u8; PSK_LEN];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = (digit(2 * i)? << 4) | digit(2 * i + 1)?;
        }
        Ok(Self(key))
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8; PSK_LEN] {
        &self.0
    }

    /// The key's public id: names it in `Greeting` and in logs, reveals nothing of it.
    pub fn id<H: HmacSha256>(&self, hmac: &H) -> Result<[u8; KEY_ID_LEN], H::Error> {
        let mac = hmac.hmac(&self.0, &[b"arepl key id"])?;
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&mac[..KEY_ID_LEN]);
        Ok(id)
    }
}

impl Drop for Psk {
    fn drop(&mut self) {
        // Leave no copy of the key in freed memory: `black_box` makes the zeroes look
        // read, so the stores are not dropped as dead.
        self.0.fill(0);
        core::hint::black_box(&self.0);
    }
}

/// Which side a proof comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The kernel module, which connects.
    Sender,
    /// replicad, which accepts.
    Receiver,
}

impl Role {
    fn proof_label(self) -> &'static [u8] {
        match self {
            Self::Sender => b"arepl sender proof",
            Self::Receiver => b"arepl receiver proof",
        }
    }
}

/// Everything both proofs cover.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// The stream is to be encrypted.
    pub encrypt: bool,
    /// Id of the key in use.
    pub key_id: [u8; KEY_ID_LEN],
    /// The volume's name, as in `Hello`.
    pub volume_name: &'a [u8],
    /// The volume's size in bytes.
    pub volume_size: u64,
    /// The sender's nonce.
    pub sender_nonce: [u8; NONCE_LEN],
    /// The receiver's nonce.
    pub receiver_nonce: [u8; NONCE_LEN],
}

impl Transcript<'_> {
    /// The proof `role` sends: HMAC-SHA256 under `psk` over its label and the transcript.
    pub fn proof<H: HmacSha256>(
        &self,
        hmac: &H,
        psk: &Psk,
        role: Role,
    ) -> Result<[u8; PROOF_LEN], H::Error> {
        // The name is at most 64 bytes, so its length fits the one byte that keeps the
        // fields that follow it from being read as part of it.
        let name_len = [self.volume_name.len() as u8];
        hmac.hmac(
            &psk.0,
            &[
                role.proof_label(),
                &[VERSION, u8::from(self.encrypt)],
                &self.key_id,
                &self.volume_size.to_be_bytes(),
                &name_len,
                self.volume_name,
                &self.sender_nonce,
                &self.receiver_nonce,
            ],
        )
    }

    /// Whether `proof` is the one `role` must send; compares in constant time.
    pub fn check<H: HmacSha256>(
        &self,
        hmac: &H,
        psk: &Psk,
        role: Role,
        proof: &[u8],
    ) -> Result<bool, H::Error> {
        let expected = self.proof(hmac, psk, role)?;
        Ok(proof.len() == PROOF_LEN && same_bytes(&expected, proof))
    }
}

/// Equality that takes as long whatever the bytes, so timing tells nothing of a proof.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let differ = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    core::hint::black_box(differ) == 0 && a.len() == b.len()
}

/// The key material of one direction: what the kernel's TLS layer takes for
/// AES-128-GCM (`struct tls12_crypto_info_aes_gcm_128`), records counted from 0.
#[derive(Clone, PartialEq, Eq)]
pub struct TrafficKey {
    /// The AES-128 key.
    pub key: [u8; 16],
    /// The first 4 bytes of the 12-byte nonce base.
    pub salt: [u8; 4],
    /// The last 8 bytes of the 12-byte nonce base.
    pub iv: [u8; 8],
}

impl core::fmt::Debug for TrafficKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TrafficKey(..)")
    }
}

/// The keys of both directions of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Protects what the sender sends.
    pub sender_to_receiver: TrafficKey,
    /// Protects what the receiver sends.
    pub receiver_to_sender: TrafficKey,
}

/// Derives the session's keys: HKDF-SHA256 with both nonces as salt and the key as
/// input, one expansion per direction.
pub fn session_keys<H: HmacSha256>(
    hmac: &H,
    psk: &Psk,
    sender_nonce: &[u8; NONCE_LEN],
    receiver_nonce: &[u8; NONCE_LEN],
) -> Result<SessionKeys, H::Error> {
    let mut salt = [0u8; 2 * NONCE_LEN];
    salt[..NONCE_LEN].copy_from_slice(sender_nonce);
    salt[NONCE_LEN..].copy_from_slice(receiver_nonce);
    let prk = hmac.hmac(&salt, &[&psk.0])?;
    let direction = |info: &[u8]| -> Result<TrafficKey, H::Error> {
        // One HKDF-Expand block (32 bytes) covers the 28 needed.
        let okm = hkdf_expand_block(hmac, &prk, info)?;
        let mut key = TrafficKey {
            key: [0; 16],
            salt: [0; 4],
            iv: [0; 8],
        };
        key.key.copy_from_slice(&okm[..16]);
        key.salt.copy_from_slice(&okm[16..20]);
        key.iv.copy_from_slice(&okm[20..28]);
        Ok(key)
    };
    Ok(SessionKeys {
        sender_to_receiver: direction(b"arepl v6 sender to receiver")?,
        receiver_to_sender: direction(b"arepl v6 receiver to sender")?,
    })
}

/// The first block of HKDF-Expand: T(1) = HMAC(PRK, info || 0x01).
fn hkdf_expand_block<H: HmacSha256>(
    hmac: &H,
    prk: &[u8; 32],
    info: &[u8],
) -> Result<[u8; 32], H::Error> {
    hmac.hmac(prk, &[info, &[1]])
}

/// The payload of a `Greeting`: key id, the sender's nonce, then the volume name.
#[derive(Debug, Clone, Copy)]
pub struct GreetingPayload {
    bytes: [u8; KEY_ID_LEN + NONCE_LEN + crate::table::MAX_VOLUME_LEN],
    len: usize,
}

/// Bytes of a `Greeting` payload before the volume name.
pub const GREETING_FIXED_LEN: usize = KEY_ID_LEN + NONCE_LEN;
/// Bytes of a `Challenge` payload: the receiver's nonce and proof.
pub const CHALLENGE_LEN: usize = NONCE_LEN + PROOF_LEN;

impl GreetingPayload {
    /// The payload for a key id, a nonce and a valid volume name.
    pub fn new(
        key_id: &[u8; KEY_ID_LEN],
        nonce: &[u8; NONCE_LEN],
        name: &crate::table::VolumeName,
    ) -> Self {
        let name = name.as_str().as_bytes();
        let mut bytes = [0u8; KEY_ID_LEN + NONCE_LEN + crate::table::MAX_VOLUME_LEN];
        bytes[..KEY_ID_LEN].copy_from_slice(key_id);
        bytes[KEY_ID_LEN..GREETING_FIXED_LEN].copy_from_slice(nonce);
        bytes[GREETING_FIXED_LEN..GREETING_FIXED_LEN + name.len()].copy_from_slice(name);
        Self {
            bytes,
            len: GREETING_FIXED_LEN + name.len(),
        }
    }

    /// The encoded payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Splits a received payload (of a length the header check allowed) into key id,
    /// nonce and volume name bytes; `None` if it is too short.
    pub fn split(payload: &[u8]) -> Option<([u8; KEY_ID_LEN], [u8; NONCE_LEN], &[u8])> {
        if payload.len() <= GREETING_FIXED_LEN {
            return None;
        }
        let mut key_id = [0u8; KEY_ID_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        key_id.copy_from_slice(&payload[..KEY_ID_LEN]);
        nonce.copy_from_slice(&payload[KEY_ID_LEN..GREETING_FIXED_LEN]);
        Some((key_id, nonce, &payload[GREETING_FIXED_LEN..]))
    }
}

/// Encodes a `Challenge` payload.
pub fn challenge_payload(nonce: &[u8; NONCE_LEN], proof: &[u8; PROOF_LEN]) -> [u8; CHALLENGE_LEN] {
    let mut bytes = [0u8; CHALLENGE_LEN];
    bytes[..NONCE_LEN].copy_from_slice(nonce);
    bytes[NONCE_LEN..].copy_from_slice(proof);
    bytes
}

/// Splits a `Challenge` payload into nonce and proof.
pub fn split_challenge(payload: &[u8; CHALLENGE_LEN]) -> ([u8; NONCE_LEN], [u8; PROOF_LEN]) {
    let mut nonce = [0u8; NONCE_LEN];
    let mut proof = [0u8; PROOF_LEN];
    nonce.copy_from_slice(&payload[..NONCE_LEN]);
    proof.copy_from_slice(&payload[NONCE_LEN..]);
    (nonce, proof)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use hmac::{Hmac, Mac};
    use std::format;

    struct Soft;

    impl HmacSha256 for Soft {
        type Error = core::convert::Infallible;
        fn hmac(&self, key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], Self::Error> {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            for part in parts {
                mac.update(part);
            }
            Ok(mac.finalize().into_bytes().into())
        }
    }

    fn hex(text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    const KEY_TEXT: &[u8] = b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

    #[test]
    fn keys_parse_from_64_hex_digits_only() {
        let key = Psk::parse(KEY_TEXT).unwrap();
        assert_eq!(key.bytes()[31], 0x1f);
        assert_eq!(Psk::parse(&KEY_TEXT[..64]), Ok(key.clone()));
        assert_eq!(Psk::parse(b"00"), Err(PskError::Length(2)));
        let mut bad = KEY_TEXT.to_vec();
        bad[5] = b'g';
        assert_eq!(Psk::parse(&bad), Err(PskError::NotHex(5)));
        // Two newlines, or a space, are not the one allowed trailing newline.
        assert_eq!(
            Psk::parse(b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n\n"),
            Err(PskError::Length(65))
        );
        assert_eq!(format!("{key:?}"), "Psk(..)");
    }

    /// RFC 5869 test case 1 (HKDF-SHA256), through the same HMAC calls the session
    /// keys use.
    #[test]
    fn hkdf_matches_rfc_5869() {
        let ikm = [0x0bu8; 22];
        let salt: [u8; 13] = core::array::from_fn(|i| i as u8);
        let info: [u8; 10] = core::array::from_fn(|i| 0xf0 + i as u8);
        let prk = Soft.hmac(&salt, &[&ikm]).unwrap();
        assert_eq!(
            prk,
            hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let okm = hkdf_expand_block(&Soft, &prk, &info).unwrap();
        assert_eq!(
            okm,
            hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
        );
    }

    fn transcript(encrypt: bool) -> Transcript<'static> {
        Transcript {
            encrypt,
            key_id: [1; KEY_ID_LEN],
            volume_name: b"vol0",
            volume_size: 1 << 30,
            sender_nonce: [2; NONCE_LEN],
            receiver_nonce: [3; NONCE_LEN],
        }
    }

    #[test]
    fn proofs_bind_role_key_nonces_and_volume() {
        let key = Psk::parse(KEY_TEXT).unwrap();
        let other = Psk::parse(&[b'7'; 64]).unwrap();
        let base = transcript(true);
        let proof = base.proof(&Soft, &key, Role::Sender).unwrap();
        assert!(base.check(&Soft, &key, Role::Sender, &proof).unwrap());
        // The receiver's proof is not the sender's: a reflected proof fails.
        assert!(!base.check(&Soft, &key, Role::Receiver, &proof).unwrap());
        assert!(!base.check(&Soft, &other, Role::Sender, &proof).unwrap());
        assert!(!base.check(&Soft, &key, Role::Sender, &proof[..31]).unwrap());
        let changed = [
            Transcript {
                receiver_nonce: [4; NONCE_LEN],
                ..base
            },
            Transcript {
                sender_nonce: [4; NONCE_LEN],
                ..base
            },
            Transcript {
                volume_name: b"vol1",
                ..base
            },
            Transcript {
                volume_size: 1 << 31,
                ..base
            },
            transcript(false),
        ];
        for transcript in changed {
            assert!(!transcript.check(&Soft, &key, Role::Sender, &proof).unwrap());
        }
    }

    /// Golden values: a change here changes the protocol.
    #[test]
    fn golden_key_id_proof_and_session_keys() {
        let key = Psk::parse(KEY_TEXT).unwrap();
        let id = key.id(&Soft).unwrap();
        let proof = transcript(true).proof(&Soft, &key, Role::Receiver).unwrap();
        let keys = session_keys(&Soft, &key, &[2; NONCE_LEN], &[3; NONCE_LEN]).unwrap();
        assert_eq!(id, GOLDEN_KEY_ID);
        assert_eq!(proof, GOLDEN_RECEIVER_PROOF);
        assert_eq!(keys.sender_to_receiver.key, GOLDEN_SENDER_KEY);
        assert_ne!(keys.sender_to_receiver, keys.receiver_to_sender);
    }

    // Computed from the description above with Python's hmac and hashlib.
    const GOLDEN_KEY_ID: [u8; KEY_ID_LEN] = [0xD3, 0x39, 0x21, 0xFF, 0xA0, 0x94, 0x0B, 0x2D];
    const GOLDEN_RECEIVER_PROOF: [u8; PROOF_LEN] = [
        0x5F, 0x13, 0x01, 0x4B, 0x5C, 0x93, 0x9C, 0x80, 0x25, 0x8E, 0xF8, 0x64, 0xAE, 0x6D, 0x42,
        0xD1, 0x3A, 0x95, 0x4B, 0x9E, 0x16, 0x36, 0x7C, 0x6C, 0x2A, 0x51, 0x7D, 0x58, 0xD4, 0xBE,
        0xBB, 0x2B,
    ];
    const GOLDEN_SENDER_KEY: [u8; 16] = [
        0x57, 0xCC, 0x93, 0xB4, 0x4C, 0x88, 0xC3, 0x8C, 0xB4, 0x32, 0xAE, 0xC9, 0x7B, 0xD3, 0xF3,
        0xFE,
    ];

    #[test]
    fn greeting_and_challenge_payloads_round_trip() {
        let name = crate::table::VolumeName::new("vol0").unwrap();
        let greeting = GreetingPayload::new(&[9; KEY_ID_LEN], &[8; NONCE_LEN], &name);
        assert_eq!(greeting.as_bytes().len(), GREETING_FIXED_LEN + 4);
        let (id, nonce, got_name) = GreetingPayload::split(greeting.as_bytes()).unwrap();
        assert_eq!((id, nonce, got_name), ([9; 8], [8; 32], &b"vol0"[..]));
        assert!(GreetingPayload::split(&[0; GREETING_FIXED_LEN]).is_none());
        let challenge = challenge_payload(&[5; NONCE_LEN], &[6; PROOF_LEN]);
        assert_eq!(split_challenge(&challenge), ([5; 32], [6; 32]));
    }
}
