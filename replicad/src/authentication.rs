//! The opening of a connection, before `Hello`: with keys configured, the sender must
//! prove one ([`arepl_core::auth`]), and the link is encrypted when it asks for it.
//!
//! The opening frames are read byte-exact from the socket, not through the codec's
//! buffer: the sender follows its `Proof` with TLS records at once, and kTLS can only
//! open records still in the socket. Only `Hello` and `Greeting` may open a connection,
//! so a peer that has proven nothing never gets more than a few hundred bytes read.

use arepl_core::auth::{self, challenge_payload, GreetingPayload, Role, Transcript};
use arepl_core::wire::{FrameKind, Header, HEADER_LEN};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{CodecError, Frame};
use crate::keys::{self, KeyFiles, KeyId, SoftHmac};
use crate::ktls;
use crate::sequencer::ProtocolError;
use crate::state::VolumeIdentity;

/// How a connection opened.
#[derive(Debug)]
pub enum Opening {
    /// The peer closed before its first frame.
    Closed,
    /// Without authentication: its first frame, a `Hello`.
    Plain(Frame),
    /// The peer proved a key; the `Hello` follows, encrypted if `encrypted`.
    Authenticated {
        /// The stream is now kTLS.
        encrypted: bool,
        /// The volume the proofs covered.
        volume: ProvenVolume,
    },
}

/// The volume an authentication covered: the `Hello` that follows must name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenVolume {
    name: Vec<u8>,
    size: u64,
}

impl ProvenVolume {
    /// Whether `identity` is this volume.
    pub fn is(&self, identity: &VolumeIdentity) -> bool {
        identity.name.as_str().as_bytes() == self.name.as_slice() && identity.size == self.size
    }
}

/// Why a peer was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A `Hello` where a key is required.
    #[error("sender offered no key, and this receiver requires one (--key-file)")]
    KeyRequired,
    /// A `Greeting` where no key is configured.
    #[error("sender offered key {0}, and this receiver has none configured (--key-file)")]
    NoKeyHere(KeyId),
    /// A key this receiver does not hold.
    #[error("sender offered key {offered}, this receiver holds {held}")]
    UnknownKey {
        /// The sender's key id.
        offered: KeyId,
        /// This receiver's key ids.
        held: String,
    },
    /// The sender's proof does not match: it does not hold the key.
    #[error(
        "sender's proof for key {0} is wrong: it does not hold the key, or replays an old session"
    )]
    BadProof(KeyId),
    /// This receiver's key files cannot be read.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
}

/// Why the opening failed.
#[derive(Debug, thiserror::Error)]
pub enum OpeningError {
    /// The peer is not allowed in (a `Refuse` told it why, unless its proof was wrong).
    #[error("{0}")]
    Denied(AuthError),
    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A frame was malformed, or the socket failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Reads the first frame and, with `keys`, runs the authentication.
pub async fn open(
    stream: &mut TcpStream,
    keys: Option<&KeyFiles>,
) -> Result<Opening, OpeningError> {
    let Some(first) = read_opening_frame(stream).await? else {
        return Ok(Opening::Closed);
    };
    match (first.header.kind, keys) {
        (FrameKind::Hello, None) => Ok(Opening::Plain(first)),
        (FrameKind::Hello, Some(_)) => deny(stream, AuthError::KeyRequired).await,
        (FrameKind::Greeting, keys) => {
            // The header check required a name after the fixed part.
            let (key_id, sender_nonce, name) = GreetingPayload::split(&first.payload)
                .expect("a decoded Greeting holds a volume name");
            let Some(keys) = keys else {
                return deny(stream, AuthError::NoKeyHere(KeyId(key_id))).await;
            };
            let held = match keys.load() {
                Ok(held) => held,
                Err(err) => return deny(stream, err.into()).await,
            };
            let Some(key) = held.iter().find(|key| key.id.0 == key_id) else {
                let held = held
                    .iter()
                    .map(|key| format!("{} ({})", key.id, key.role))
                    .collect::<Vec<_>>()
                    .join(" and ");
                let offered = KeyId(key_id);
                return deny(stream, AuthError::UnknownKey { offered, held }).await;
            };
            let transcript = Transcript {
                encrypt: first.header.wants_encryption(),
                key_id,
                volume_name: name,
                volume_size: first.header.offset,
                sender_nonce,
                receiver_nonce: keys::nonce().map_err(CodecError::Io)?,
            };
            let own = transcript
                .proof(&SoftHmac, &key.psk, Role::Receiver)
                .unwrap_or_else(|never| match never {});
            let challenge = challenge_payload(&transcript.receiver_nonce, &own);
            write_frame(stream, &Header::challenge(&challenge).encode(), &challenge).await?;

            let Some(answer) = read_opening_frame(stream).await? else {
                return Err(CodecError::Truncated { buffered: 0 }.into());
            };
            if answer.header.kind != FrameKind::Proof {
                return Err(ProtocolError::ExpectedProof(answer.header.kind).into());
            }
            let proven = transcript
                .check(&SoftHmac, &key.psk, Role::Sender, &answer.payload)
                .unwrap_or_else(|never| match never {});
            if !proven {
                // No word to an impostor: a sender that checked this side's proof holds
                // the key and never gets here.
                return Err(OpeningError::Denied(AuthError::BadProof(key.id)));
            }
            if transcript.encrypt {
                let keys = auth::session_keys(
                    &SoftHmac,
                    &key.psk,
                    &transcript.sender_nonce,
                    &transcript.receiver_nonce,
                )
                .unwrap_or_else(|never| match never {});
                ktls::install(stream, &keys.receiver_to_sender, &keys.sender_to_receiver)
                    .map_err(CodecError::Io)?;
            }
            tracing::info!(
                "sender proved key {} ({}){}",
                key.id,
                key.role,
                if transcript.encrypt {
                    "; the link is encrypted"
                } else {
                    "; the link is NOT encrypted (the sender asked for encrypt:off)"
                }
            );
            Ok(Opening::Authenticated {
                encrypted: transcript.encrypt,
                volume: ProvenVolume {
                    name: name.to_vec(),
                    size: transcript.volume_size,
                },
            })
        }
        (kind, _) => Err(ProtocolError::ExpectedHello(kind).into()),
    }
}

/// Refuses the peer, saying why, and fails with the reason.
async fn deny(stream: &mut TcpStream, reason: AuthError) -> Result<Opening, OpeningError> {
    let text = reason.to_string();
    let text = &text.as_bytes()[..text.len().min(arepl_core::wire::MAX_REASON_LEN as usize)];
    // The peer may be gone already; the refusal is a courtesy.
    let _ = write_frame(stream, &Header::refuse(text).encode(), text).await;
    Err(OpeningError::Denied(reason))
}

/// Writes one frame straight to the socket.
pub async fn write_frame(
    stream: &mut TcpStream,
    header: &[u8],
    payload: &[u8],
) -> Result<(), CodecError> {
    let mut bytes = Vec::with_capacity(header.len() + payload.len());
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(payload);
    stream.write_all(&bytes).await?;
    Ok(())
}

/// Reads exactly one frame that may open a connection or finish its authentication;
/// `None` if the peer closed before its first byte.
async fn read_opening_frame(stream: &mut TcpStream) -> Result<Option<Frame>, OpeningError> {
    read_handshake_frame(
        stream,
        &[FrameKind::Hello, FrameKind::Greeting, FrameKind::Proof],
    )
    .await
}

/// Reads exactly one frame of the `allowed` kinds, not a byte more (what follows may be
/// for kTLS to open); `None` if the peer closed before its first byte. The payload is
/// read only once the header names an allowed kind, all of them small.
pub async fn read_handshake_frame(
    stream: &mut TcpStream,
    allowed: &[FrameKind],
) -> Result<Option<Frame>, OpeningError> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match stream
            .read(&mut head[got..])
            .await
            .map_err(CodecError::Io)?
        {
            0 if got == 0 => return Ok(None),
            0 => return Err(CodecError::Truncated { buffered: got }.into()),
            n => got += n,
        }
    }
    let header = Header::decode(&head).map_err(CodecError::Wire)?;
    if !allowed.contains(&header.kind) {
        return Err(ProtocolError::ExpectedHello(header.kind).into());
    }
    // A handshake frame: the header check bounded it to a few hundred bytes.
    let mut payload = vec![0u8; header.payload_len() as usize];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::UnexpectedEof => CodecError::Truncated {
                buffered: HEADER_LEN,
            },
            _ => CodecError::Io(err),
        })?;
    header.check_payload(&payload).map_err(CodecError::Wire)?;
    Ok(Some(Frame::with_payload(header, Bytes::from(payload))))
}
