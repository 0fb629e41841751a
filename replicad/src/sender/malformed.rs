//! Bad input for `replicad`: each kind sends one bad frame (after a valid handshake where
//! the kind needs one) and checks that the server drops the connection without
//! acknowledging it.

use anyhow::bail;
use arepl_core::crc32c::crc32c;
use arepl_core::verify::{ChunkCheck, VERIFY_PAYLOAD_LEN};
use arepl_core::wire::{FrameKind, Header, HEADER_LEN, MAX_WRITE_PAYLOAD, SECTOR_SIZE, VERSION};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::client::{BeginMode, Connection, Greeting, Peer};
use crate::codec::{CodecError, Frame};

/// The kinds of bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MalformedKind {
    /// Header magic is not "ARPL".
    BadMagic,
    /// Unsupported protocol version.
    BadVersion,
    /// Header checksum does not match.
    BadHeaderCrc,
    /// Frame kind 0x7f.
    UnknownKind,
    /// A write ending past the end of the volume.
    PastEnd,
    /// A write header claiming more than the largest payload.
    Oversized,
    /// Payload does not match its checksum.
    BadPayloadCrc,
    /// A write whose sequence skips ahead of the next one (an already applied sequence
    /// is skipped, not refused, so a gap must go forward).
    SequenceGap,
    /// A Hello for a different volume than the one the server replicates.
    WrongVolume,
    /// A write before any Hello.
    DataBeforeHello,
    /// A Ping before any Hello.
    PingBeforeHello,
    /// A Hello whose history block has an unknown flag.
    BadHistory,
    /// A write after the handshake but before any Begin.
    EntryBeforeBegin,
    /// A Verify entry whose chunk (4 KiB from the volume's last sector) ends past the
    /// end of the volume.
    BadVerify,
    /// A Verify entry whose payload has its reserved bytes set.
    BadVerifyPayload,
    /// A Mismatch frame, which only a receiver sends.
    MismatchFromSender,
}

impl MalformedKind {
    /// Every kind.
    pub const ALL: [MalformedKind; 16] = [
        Self::BadMagic,
        Self::BadVersion,
        Self::BadHeaderCrc,
        Self::UnknownKind,
        Self::PastEnd,
        Self::Oversized,
        Self::BadPayloadCrc,
        Self::SequenceGap,
        Self::WrongVolume,
        Self::DataBeforeHello,
        Self::PingBeforeHello,
        Self::BadHistory,
        Self::EntryBeforeBegin,
        Self::BadVerify,
        Self::BadVerifyPayload,
        Self::MismatchFromSender,
    ];
}

/// What the server did with the bad input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The server dropped the connection (or refused the session) without acknowledging
    /// the bad frame.
    pub dropped: bool,
    /// What happened, for people.
    pub detail: String,
}

const PAYLOAD_LEN: usize = 4096;

/// Sends `kind` of bad input to `peer` and reports what the server did.
pub async fn run(peer: &Peer, kind: MalformedKind) -> anyhow::Result<Outcome> {
    match kind {
        MalformedKind::DataBeforeHello => {
            let mut conn = peer.connect().await?;
            let (header, payload) = valid_write(1, 0);
            send_raw(&mut conn, &header.encode(), &payload).await?;
            observe(peer, conn, 1).await
        }
        MalformedKind::PingBeforeHello => {
            let mut conn = peer.connect().await?;
            send_raw(&mut conn, &Header::ping().encode(), &[]).await?;
            // Any Ack would be an answer to it.
            observe(peer, conn, 0).await
        }
        MalformedKind::WrongVolume => wrong_volume(peer).await,
        MalformedKind::BadHistory => {
            let mut conn = peer.connect().await?;
            let mut payload = peer.hello_as(&peer.volume).payload.to_vec();
            payload[24] |= 0x80; // the flags word of the history block
            let header = Header::hello(peer.oldest_seq, peer.volume_size, &payload);
            send_raw(&mut conn, &header.encode(), &payload).await?;
            // Any Welcome or Ack would be an answer to it.
            observe(peer, conn, 0).await
        }
        MalformedKind::EntryBeforeBegin => {
            let unbegun = Peer {
                begin: BeginMode::Skip,
                ..peer.clone()
            };
            let (mut conn, durable_seq) = unbegun.open_session().await?;
            let seq = durable_seq + 1;
            let (header, payload) = valid_write(seq, 0);
            send_raw(&mut conn, &header.encode(), &payload).await?;
            observe(peer, conn, seq).await
        }
        _ => {
            let (mut conn, durable_seq) = peer.open_session().await?;
            let seq = durable_seq + 1;
            let (header, payload) = bad_frame(peer, kind, seq);
            send_raw(&mut conn, &header, &payload).await?;
            observe(peer, conn, seq).await
        }
    }
}

/// Header bytes and payload of the bad frame for an established session.
fn bad_frame(peer: &Peer, kind: MalformedKind, seq: u64) -> ([u8; HEADER_LEN], Vec<u8>) {
    let (write, payload) = valid_write(seq, 0);
    let mut header = write.encode();
    // Header-level errors are sent without payload: the server must refuse on the header.
    let header_only = |bytes| (bytes, Vec::new());
    match kind {
        MalformedKind::BadMagic => header_only(recrc(header, |h| h[0..4].copy_from_slice(b"XRPL"))),
        MalformedKind::BadVersion => header_only(recrc(header, |h| h[4] = VERSION + 1)),
        MalformedKind::BadHeaderCrc => {
            header[39] ^= 0x01;
            header_only(header)
        }
        MalformedKind::UnknownKind => header_only(recrc(header, |h| h[5] = 0x7f)),
        MalformedKind::Oversized => header_only(
            Header::write_with_checksum(seq, 0, MAX_WRITE_PAYLOAD + SECTOR_SIZE, 0, false).encode(),
        ),
        MalformedKind::PastEnd => {
            let last_sector = (peer.volume_size / u64::from(SECTOR_SIZE)).saturating_sub(1);
            let (past_end, payload) = valid_write(seq, last_sector * u64::from(SECTOR_SIZE));
            (past_end.encode(), payload)
        }
        MalformedKind::BadPayloadCrc => {
            let mut payload = payload;
            payload[100] ^= 0x10;
            (header, payload)
        }
        MalformedKind::SequenceGap => {
            // `seq` is the next one; anything past it is a gap.
            let (gapped, payload) = valid_write(seq + 4, 0);
            (gapped.encode(), payload)
        }
        MalformedKind::BadVerify => {
            let last_sector = (peer.volume_size / u64::from(SECTOR_SIZE)).saturating_sub(1);
            let check = ChunkCheck::of(&[0; PAYLOAD_LEN]).encode();
            let past_end = Header::verify(seq, last_sector * u64::from(SECTOR_SIZE), &check);
            (past_end.encode(), check.to_vec())
        }
        MalformedKind::BadVerifyPayload => {
            let mut check = ChunkCheck::of(&[0; PAYLOAD_LEN]).encode();
            check[VERIFY_PAYLOAD_LEN - 1] = 1; // a reserved byte
            (Header::verify(seq, 0, &check).encode(), check.to_vec())
        }
        MalformedKind::MismatchFromSender => {
            header_only(Header::mismatch(seq, 0, PAYLOAD_LEN as u32).encode())
        }
        MalformedKind::WrongVolume
        | MalformedKind::DataBeforeHello
        | MalformedKind::PingBeforeHello
        | MalformedKind::BadHistory
        | MalformedKind::EntryBeforeBegin => {
            unreachable!("handled apart")
        }
    }
}

/// A valid 4 KiB write of a recognisable pattern.
fn valid_write(seq: u64, offset: u64) -> (Header, Vec<u8>) {
    let payload = vec![0xBD; PAYLOAD_LEN];
    (Header::write(seq, offset, &payload, false), payload)
}

/// Changes header bytes and fixes up the header checksum, so only the change is wrong.
fn recrc(
    mut header: [u8; HEADER_LEN],
    change: impl FnOnce(&mut [u8; HEADER_LEN]),
) -> [u8; HEADER_LEN] {
    change(&mut header);
    let crc = crc32c(&header[..36]);
    header[36..].copy_from_slice(&crc.to_be_bytes());
    header
}

async fn send_raw(conn: &mut Connection, header: &[u8], payload: &[u8]) -> anyhow::Result<()> {
    let stream = conn.get_mut();
    stream.write_all(header).await?;
    stream.write_all(payload).await?;
    stream.flush().await?;
    Ok(())
}

/// First establishes the volume with a valid handshake (so the test does not depend on
/// earlier sessions), then offers a different volume name.
async fn wrong_volume(peer: &Peer) -> anyhow::Result<Outcome> {
    drop(peer.open_session().await?);
    let wrong_name = format!("not-{}", peer.volume);
    let wrong_name = &wrong_name[..wrong_name.len().min(arepl_core::table::MAX_VOLUME_LEN)];
    let mut conn = peer.connect().await?;
    match peer.handshake_as(&mut conn, wrong_name).await {
        Ok(Greeting::Refused(reason)) => {
            let closed = observe(peer, conn, 1).await?;
            Ok(Outcome {
                dropped: closed.dropped,
                detail: format!(
                    "refused volume {wrong_name:?}: {reason}; then {}",
                    closed.detail
                ),
            })
        }
        Ok(Greeting::Welcome { durable_seq, .. }) => Ok(Outcome {
            dropped: false,
            detail: format!("server welcomed volume {wrong_name:?} at durable seq {durable_seq}"),
        }),
        Err(err) => Ok(Outcome {
            dropped: true,
            detail: format!("server closed without answering Hello for {wrong_name:?}: {err:#}"),
        }),
    }
}

/// Reads until the server closes, noting any acknowledgement of `bad_seq` or later.
async fn observe(peer: &Peer, mut conn: Connection, bad_seq: u64) -> anyhow::Result<Outcome> {
    let deadline = tokio::time::Instant::now() + peer.timeout;
    let mut seen = Vec::new();
    loop {
        let next = match tokio::time::timeout_at(deadline, conn.next()).await {
            Ok(next) => next,
            Err(_) => {
                return Ok(Outcome {
                    dropped: false,
                    detail: format!(
                        "server kept the connection open for {:?} after the bad frame{}",
                        peer.timeout,
                        describe(&seen)
                    ),
                })
            }
        };
        match next {
            None => break,
            Some(Err(CodecError::Io(err))) if is_reset(&err) => break,
            Some(Err(err)) => bail!("reading from the server: {err}"),
            Some(Ok(frame)) => {
                if frame.header.kind == FrameKind::Welcome {
                    return Ok(Outcome {
                        dropped: false,
                        detail: "server welcomed the session".to_string(),
                    });
                }
                if frame.header.kind == FrameKind::Ack && frame.header.seq >= bad_seq {
                    return Ok(Outcome {
                        dropped: false,
                        detail: format!(
                            "server acknowledged seq {} (bad frame was seq {bad_seq})",
                            frame.header.seq
                        ),
                    });
                }
                seen.push(frame);
            }
        }
    }
    Ok(Outcome {
        dropped: true,
        detail: format!(
            "server closed the connection without acknowledging seq {bad_seq}{}",
            describe(&seen)
        ),
    })
}

fn is_reset(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
    )
}

fn describe(frames: &[Frame]) -> String {
    if frames.is_empty() {
        return String::new();
    }
    let kinds: Vec<String> = frames
        .iter()
        .map(|frame| format!("{:?} {}", frame.header.kind, frame.header.seq))
        .collect();
    format!(" (received before: {})", kinds.join(", "))
}
