//! Talking to `replicad` as a sender: handshake, `Begin`, and streaming entries until
//! acknowledged.
//!
//! This sender keeps no history of its own: it continues the replica's (or starts a new
//! random one on a replica without), or resyncs under the replica's next generation.

use std::cell::Cell;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use arepl_core::auth::{
    session_keys, split_challenge, GreetingPayload, Psk, Role, Transcript, CHALLENGE_LEN,
};
use arepl_core::digest::{self, Digest};
use arepl_core::history::{History, HistoryBlock};
use arepl_core::table::VolumeName;
use arepl_core::wire::{FrameKind, Header};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedRead, FramedWrite};

use super::workload::{Op, SplitMix64};
use crate::authentication::{read_handshake_frame, write_frame};
use crate::codec::{Frame, FrameCodec};
use crate::keys::{self, SoftHmac};
use crate::ktls;
use crate::verify::ChunkMismatch;

/// What the sender's `Begin` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BeginMode {
    /// Continue the replica's history, or start a new random one if it has none.
    #[default]
    Auto,
    /// Begin a resync of the whole volume under the replica's next generation (a new
    /// random history if it has none); `ResyncDone` follows a stream's last entry.
    Resync,
    /// Continue this history, whatever the replica's (to test refusals).
    Continue(History),
    /// Send no `Begin` at all (to test entries before one).
    Skip,
}

/// Where to send and as which volume.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `replicad`'s address.
    pub addr: SocketAddr,
    /// Volume name sent in `Hello`.
    pub volume: String,
    /// Volume size sent in `Hello`.
    pub volume_size: u64,
    /// `Hello`'s oldest held sequence (0: never completed a handshake).
    pub oldest_seq: u64,
    /// Bound on every wait for the server.
    pub timeout: Duration,
    /// The history block sent in `Hello`.
    pub hello_history: HistoryBlock,
    /// What the `Begin` after the handshake says.
    pub begin: BeginMode,
    /// The key to prove before `Hello`; `None`: open with `Hello` at once.
    pub key: Option<Psk>,
    /// With a key: ask for an encrypted stream.
    pub encrypt: bool,
}

/// The frames a sender sent to prove its key, as a recording to replay.
#[derive(Debug, Clone)]
pub struct ProofRecording {
    /// The `Greeting`.
    pub greeting: Frame,
    /// The `Proof`.
    pub proof: Frame,
}

/// The server's answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// Accepted: stream from `durable_seq + 1`.
    Welcome {
        /// The receiver's durable sequence.
        durable_seq: u64,
        /// The receiver's view of the volume size.
        volume_size: u64,
        /// The receiver's replication digest through `durable_seq`, if it knows it.
        digest: Option<Digest>,
        /// The replica's history and consistency.
        history: HistoryBlock,
    },
    /// Refused, with the reason.
    Refused(String),
}

/// An open session.
#[derive(Debug)]
pub struct Session {
    /// The connection, past `Begin` (unless [`BeginMode::Skip`]).
    pub conn: Connection,
    /// The receiver's durable sequence.
    pub durable_seq: u64,
    /// The digest the stream starts from.
    pub digest: Digest,
    /// What the `Welcome` said of the replica's history.
    pub replica: HistoryBlock,
    /// The history the `Begin` named and whether it began a resync; `None` if none
    /// was sent.
    pub begun: Option<(History, bool)>,
}

/// How to number and interleave a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Sequence of the first entry; `None`: right after the receiver's durable sequence.
    /// An earlier one resends entries the receiver holds, as a sender does that resends
    /// its whole log after a reconnect: the receiver skips them.
    pub first_seq: Option<u64>,
    /// Send a `Ping` after every this many entries (0 or `None`: never).
    pub ping_every: Option<u64>,
    /// Send a `Digest` after every this many new entries (0 or `None`: never).
    pub digest_every: Option<u64>,
}

/// What a completed stream did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// The receiver's durable sequence at the handshake.
    pub welcome_seq: u64,
    /// Entries sent, resent ones included.
    pub sent: u64,
    /// Entries sent that the receiver already held (sequence up to `welcome_seq`).
    pub resent: u64,
    /// The highest sequence the stream reached (`welcome_seq` if it sent nothing newer).
    pub last_seq: u64,
    /// The highest `Ack` received.
    pub final_ack: u64,
    /// `Ack` frames received, ping answers included.
    pub acks: u64,
    /// `Ping` frames sent.
    pub pings: u64,
    /// The history the stream ran under, and whether it was a resync.
    pub begun: Option<(History, bool)>,
    /// `Verify` entries sent (resent ones included).
    pub verifies: u64,
    /// The chunks the receiver reported different (`Mismatch` frames), in order.
    pub mismatches: Vec<ChunkMismatch>,
}

/// A framed connection to the server.
pub type Connection = Framed<TcpStream, FrameCodec>;

impl Peer {
    /// A peer for `volume` of `volume_size` bytes at `addr`: no history in `Hello`, the
    /// replica's continued, a 30 s timeout, and a first handshake (oldest seq 0).
    pub fn new(addr: SocketAddr, volume: &str, volume_size: u64) -> Self {
        Self {
            addr,
            volume: volume.to_string(),
            volume_size,
            oldest_seq: 0,
            timeout: Duration::from_secs(30),
            hello_history: HistoryBlock::default(),
            begin: BeginMode::Auto,
            key: None,
            encrypt: false,
        }
    }

    /// Connects within the timeout and, with a key, proves it (encrypting the stream
    /// if asked).
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        Ok(self.connect_recorded().await?.0)
    }

    /// [`Self::connect`], also returning the authentication frames it sent.
    pub async fn connect_recorded(&self) -> anyhow::Result<(Connection, Option<ProofRecording>)> {
        let mut stream = self.connect_tcp().await?;
        let recording = match &self.key {
            Some(key) => Some(
                tokio::time::timeout(self.timeout, self.authenticate(&mut stream, key))
                    .await
                    .context("authentication timed out")??,
            ),
            None => None,
        };
        Ok((Framed::new(stream, FrameCodec::new()), recording))
    }

    async fn connect_tcp(&self) -> anyhow::Result<TcpStream> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
            .await
            .with_context(|| format!("connecting to {}: timed out", self.addr))?
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Greeting, the receiver's proof checked, then this side's.
    async fn authenticate(
        &self,
        stream: &mut TcpStream,
        key: &Psk,
    ) -> anyhow::Result<ProofRecording> {
        let key_id = key.id(&SoftHmac).unwrap_or_else(|never| match never {});
        let sender_nonce = keys::nonce()?;
        let name = VolumeName::new(&self.volume).context("a key needs a valid volume name")?;
        let payload = GreetingPayload::new(&key_id, &sender_nonce, &name);
        let greeting = Frame::with_payload(
            Header::greeting(self.volume_size, self.encrypt, payload.as_bytes()),
            Bytes::copy_from_slice(payload.as_bytes()),
        );
        write_frame(stream, &greeting.header.encode(), &greeting.payload).await?;
        let answer = read_handshake_frame(stream, &[FrameKind::Challenge, FrameKind::Refuse])
            .await?
            .context("server closed the connection instead of answering Greeting")?;
        if answer.header.kind == FrameKind::Refuse {
            bail!(
                "server refused: {}",
                String::from_utf8_lossy(&answer.payload)
            );
        }
        let challenge: &[u8; CHALLENGE_LEN] = answer.payload[..]
            .try_into()
            .expect("a decoded Challenge has its length");
        let (receiver_nonce, their_proof) = split_challenge(challenge);
        let transcript = Transcript {
            encrypt: self.encrypt,
            key_id,
            volume_name: name.as_str().as_bytes(),
            volume_size: self.volume_size,
            sender_nonce,
            receiver_nonce,
        };
        let genuine = transcript
            .check(&SoftHmac, key, Role::Receiver, &their_proof)
            .unwrap_or_else(|never| match never {});
        if !genuine {
            bail!("server's proof is wrong: it does not hold this key");
        }
        let own = transcript
            .proof(&SoftHmac, key, Role::Sender)
            .unwrap_or_else(|never| match never {});
        let proof = Frame::with_payload(Header::proof(&own), Bytes::copy_from_slice(&own));
        write_frame(stream, &proof.header.encode(), &own).await?;
        if self.encrypt {
            let keys = session_keys(&SoftHmac, key, &sender_nonce, &receiver_nonce)
                .unwrap_or_else(|never| match never {});
            ktls::install(stream, &keys.sender_to_receiver, &keys.receiver_to_sender)?;
        }
        Ok(ProofRecording { greeting, proof })
    }

    /// Replays a recorded authentication on a new connection, answering whatever
    /// challenge comes with the recorded proof. Returns how the server reacted: it must
    /// close the connection (an `Err` from reading) and never welcome the `Hello`.
    pub async fn replay(&self, recording: &ProofRecording) -> anyhow::Result<Option<Frame>> {
        let mut stream = self.connect_tcp().await?;
        let greeting = &recording.greeting;
        write_frame(&mut stream, &greeting.header.encode(), &greeting.payload).await?;
        let answer = read_handshake_frame(&mut stream, &[FrameKind::Challenge])
            .await?
            .context("server closed the connection instead of answering Greeting")?;
        drop(answer);
        let proof = &recording.proof;
        write_frame(&mut stream, &proof.header.encode(), &proof.payload).await?;
        let mut conn = Framed::new(stream, FrameCodec::new());
        conn.send(self.hello_as(&self.volume)).await.ok();
        match tokio::time::timeout(self.timeout, conn.next()).await {
            Err(_) => bail!(
                "server neither answered nor closed within {:?}",
                self.timeout
            ),
            Ok(None) | Ok(Some(Err(_))) => Ok(None),
            Ok(Some(Ok(frame))) => Ok(Some(frame)),
        }
    }

    /// The `Hello` frame for this peer with the given name (not checked, so that a
    /// test can send a bad one).
    pub fn hello_as(&self, name: &str) -> Frame {
        let mut payload = self.hello_history.encode().to_vec();
        payload.extend_from_slice(name.as_bytes());
        Frame::with_payload(
            Header::hello(self.oldest_seq, self.volume_size, &payload),
            payload,
        )
    }

    /// Sends `Hello` for `name` and reads the answer.
    pub async fn handshake_as(
        &self,
        conn: &mut Connection,
        name: &str,
    ) -> anyhow::Result<Greeting> {
        conn.send(self.hello_as(name)).await?;
        let frame = tokio::time::timeout(self.timeout, conn.next())
            .await
            .context("no answer to Hello: timed out")?
            .context("server closed the connection instead of answering Hello")??;
        Ok(match frame.header.kind {
            FrameKind::Welcome => {
                let digest = tokio::time::timeout(self.timeout, conn.next())
                    .await
                    .context("no Digest after Welcome: timed out")?
                    .context("server closed the connection after Welcome")??;
                if digest.header.kind != FrameKind::Digest || digest.header.seq != frame.header.seq
                {
                    bail!(
                        "server followed Welcome with {:?} for seq {}, not its Digest",
                        digest.header.kind,
                        digest.header.seq
                    );
                }
                let history = HistoryBlock::decode(&frame.payload)
                    .context("server's Welcome carries a malformed history block")?;
                Greeting::Welcome {
                    durable_seq: frame.header.seq,
                    volume_size: frame.header.offset,
                    digest: digest.header.carried_digest(),
                    history,
                }
            }
            FrameKind::Refuse => {
                Greeting::Refused(String::from_utf8_lossy(&frame.payload).into_owned())
            }
            kind => bail!("server answered Hello with a {kind:?} frame"),
        })
    }

    /// Connects and completes a handshake and `Begin`, failing unless welcomed.
    /// Returns the durable sequence.
    pub async fn open_session(&self) -> anyhow::Result<(Connection, u64)> {
        let session = self.open().await?;
        Ok((session.conn, session.durable_seq))
    }

    /// [`Self::open_session`], also returning the digest the session starts from. This
    /// sender keeps no digest, so it takes the receiver's (an empty history's if the
    /// receiver has none) and says so in its opening `Digest`, as the protocol asks.
    pub async fn open_session_with_digest(&self) -> anyhow::Result<(Connection, u64, Digest)> {
        let session = self.open().await?;
        Ok((session.conn, session.durable_seq, session.digest))
    }

    /// Handshake, opening `Digest`, then the `Begin` [`Self::begin`] asks for.
    pub async fn open(&self) -> anyhow::Result<Session> {
        let mut conn = self.connect().await?;
        let (durable_seq, digest, replica) =
            match self.handshake_as(&mut conn, &self.volume).await? {
                Greeting::Welcome {
                    durable_seq,
                    volume_size,
                    digest,
                    history,
                } => {
                    if volume_size != self.volume_size {
                        bail!(
                            "welcomed with volume size {volume_size}, expected {}",
                            self.volume_size
                        );
                    }
                    (durable_seq, digest.unwrap_or(digest::EMPTY), history)
                }
                Greeting::Refused(reason) => bail!("server refused the session: {reason}"),
            };
        conn.send(Frame::bare(Header::digest(durable_seq, Some(digest))))
            .await?;
        let begun = match self.begin {
            BeginMode::Skip => None,
            BeginMode::Auto => Some((replica.history.unwrap_or_else(random_history), false)),
            BeginMode::Continue(history) => Some((history, false)),
            BeginMode::Resync => {
                let next = replica.history.map(History::next_generation);
                Some((next.unwrap_or_else(random_history), true))
            }
        };
        if let Some((history, resync)) = begun {
            let block = HistoryBlock {
                history: Some(history),
                flags: 0,
            }
            .encode();
            let bytes = resync.then_some(self.volume_size);
            conn.send(Frame::with_payload(
                Header::begin(durable_seq, bytes, &block),
                Bytes::copy_from_slice(&block),
            ))
            .await?;
        }
        Ok(Session {
            conn,
            durable_seq,
            digest,
            replica,
            begun,
        })
    }

    /// Opens a session, sends `ops` with consecutive sequence numbers while reading
    /// acknowledgements, and returns once the last one is acknowledged. Fails on an
    /// acknowledgement that goes backwards or covers entries not sent yet, or when the
    /// server closes first.
    pub async fn stream(&self, ops: impl Iterator<Item = Op>) -> anyhow::Result<StreamReport> {
        self.stream_with(ops, StreamOptions::default()).await
    }

    /// [`Self::stream`], numbered from `options.first_seq` and with pings interleaved.
    /// Fails without sending if the first sequence would skip past the receiver's next.
    pub async fn stream_with(
        &self,
        ops: impl Iterator<Item = Op>,
        options: StreamOptions,
    ) -> anyhow::Result<StreamReport> {
        let Session {
            conn,
            durable_seq: welcome_seq,
            mut digest,
            begun,
            ..
        } = self.open().await?;
        let resync = begun.is_some_and(|(_, resync)| resync);
        let first_seq = options.first_seq.unwrap_or(welcome_seq + 1);
        if first_seq == 0 || first_seq > welcome_seq + 1 {
            bail!(
                "first seq {first_seq} is not one the receiver accepts: it is durable at \
                 {welcome_seq}, so 1 to {} may follow",
                welcome_seq + 1
            );
        }
        let ping_every = options.ping_every.filter(|&every| every > 0);
        let digest_every = options.digest_every.filter(|&every| every > 0);
        let (read, write) = conn.into_inner().into_split();
        let mut frames = FramedRead::new(read, FrameCodec::new());
        let mut sink = FramedWrite::new(write, FrameCodec::new());
        let highest_sent = Cell::new(welcome_seq);
        let verify_seqs = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let (sent, resent, pings) = (Cell::new(0u64), Cell::new(0u64), Cell::new(0u64));
        let send_all = async {
            for (seq, op) in (first_seq..).zip(ops) {
                let frame = frame_for(seq, op);
                if frame.header.kind == FrameKind::Verify {
                    verify_seqs.borrow_mut().insert(seq);
                }
                let fields = frame.header.entry_fields();
                sink.send(frame).await?;
                highest_sent.set(highest_sent.get().max(seq));
                sent.set(sent.get() + 1);
                if seq <= welcome_seq {
                    resent.set(resent.get() + 1);
                } else if let Some(fields) = fields {
                    digest = digest.with(&fields);
                    if digest_every.is_some_and(|every| (seq - welcome_seq) % every == 0) {
                        sink.send(Frame::bare(Header::digest(seq, Some(digest))))
                            .await?;
                    }
                }
                if ping_every.is_some_and(|every| sent.get() % every == 0) {
                    sink.send(Frame::bare(Header::ping())).await?;
                    pings.set(pings.get() + 1);
                }
            }
            if resync {
                // The whole stream was the resync: the replica is consistent once durable
                // through its last entry.
                sink.send(Frame::bare(Header::resync_done(highest_sent.get())))
                    .await?;
            }
            anyhow::Ok(highest_sent.get())
        };
        let mut send_all = std::pin::pin!(send_all);
        let mut last_seq = None;
        let mut final_ack = welcome_seq;
        let mut acks = 0;
        let mut mismatches = Vec::new();
        while last_seq.is_none_or(|last| final_ack < last) {
            tokio::select! {
                sent = &mut send_all, if last_seq.is_none() => last_seq = Some(sent?),
                frame = tokio::time::timeout(self.timeout, frames.next()) => {
                    let frame = frame
                        .with_context(|| format!("no Ack for {:?} after seq {final_ack}", self.timeout))?
                        .with_context(|| format!("server closed the connection; last Ack {final_ack}"))??;
                    let seq = frame.header.seq;
                    if frame.header.kind == FrameKind::Mismatch {
                        // Before the Ack covering its Verify entry, and only for one.
                        if seq <= final_ack || !verify_seqs.borrow().contains(&seq) {
                            bail!(
                                "Mismatch for seq {seq}, which is no Verify entry sent or was \
                                 acknowledged before (last Ack {final_ack})"
                            );
                        }
                        mismatches.push(ChunkMismatch {
                            seq,
                            offset: frame.header.offset,
                            len: frame.header.length,
                        });
                        continue;
                    }
                    if frame.header.kind != FrameKind::Ack {
                        bail!("unexpected {:?} frame from the server", frame.header.kind);
                    }
                    if seq < final_ack || seq > highest_sent.get() {
                        bail!("Ack {seq} out of order: previous {final_ack}, highest sent {}", highest_sent.get());
                    }
                    final_ack = seq;
                    acks += 1;
                }
            }
        }
        let last_seq = last_seq.unwrap_or(welcome_seq);
        let verifies = verify_seqs.borrow().len() as u64;
        Ok(StreamReport {
            welcome_seq,
            sent: sent.get(),
            resent: resent.get(),
            last_seq,
            final_ack,
            acks,
            pings: pings.get(),
            begun,
            verifies,
            mismatches,
        })
    }

    /// Opens a session and sends `count` pings one at a time, each of which must be
    /// answered by an `Ack` of the welcomed durable sequence (nothing else is in flight).
    /// Returns that sequence and the longest round trip. Sends no `Begin`: a liveness
    /// probe must not give a fresh replica a history.
    pub async fn ping(&self, count: u64) -> anyhow::Result<(u64, Duration)> {
        let probe = Peer {
            begin: BeginMode::Skip,
            ..self.clone()
        };
        let (mut conn, welcome_seq) = probe.open_session().await?;
        let mut longest = Duration::ZERO;
        for n in 1..=count {
            let started = tokio::time::Instant::now();
            conn.send(Frame::bare(Header::ping())).await?;
            let frame = tokio::time::timeout(self.timeout, conn.next())
                .await
                .with_context(|| format!("ping {n}: no answer within {:?}", self.timeout))?
                .with_context(|| format!("ping {n}: server closed the connection"))??;
            longest = longest.max(started.elapsed());
            if frame.header.kind != FrameKind::Ack || frame.header.seq != welcome_seq {
                bail!(
                    "ping {n}: answered with {:?} {}, expected Ack {welcome_seq}",
                    frame.header.kind,
                    frame.header.seq
                );
            }
        }
        Ok((welcome_seq, longest))
    }
}

/// A new history: 16 random bytes from `/dev/urandom`, or from the clock and process id
/// where it cannot be read (good enough for a test client).
pub fn random_history() -> History {
    let mut uuid = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut uuid));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        SplitMix64::new(nanos ^ (u64::from(std::process::id()) << 40)).fill(&mut uuid);
    }
    History::new(uuid)
}

/// The frame carrying `op` as entry `seq`.
pub fn frame_for(seq: u64, op: Op) -> Frame {
    match op {
        Op::Write { offset, data, fua } => {
            Frame::with_payload(Header::write(seq, offset, &data, fua), data)
        }
        Op::Flush => Frame::bare(Header::flush(seq)),
        Op::Discard { offset, len } => Frame::bare(Header::discard(seq, offset, len)),
        Op::WriteZeroes { offset, len } => Frame::bare(Header::write_zeroes(seq, offset, len)),
        Op::Verify { offset, check } => {
            let payload = check.encode();
            Frame::with_payload(Header::verify(seq, offset, &payload), payload.to_vec())
        }
    }
}
