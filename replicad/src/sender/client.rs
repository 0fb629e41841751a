//! Talking to `replicad` as a sender: handshake and streaming entries until acknowledged.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use arepl_core::digest::{self, Digest};
use arepl_core::wire::{FrameKind, Header};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedRead, FramedWrite};

use super::workload::Op;
use crate::codec::{Frame, FrameCodec};

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
    },
    /// Refused, with the reason.
    Refused(String),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// A framed connection to the server.
pub type Connection = Framed<TcpStream, FrameCodec>;

impl Peer {
    /// Connects, within the timeout.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
            .await
            .with_context(|| format!("connecting to {}: timed out", self.addr))?
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        Ok(Framed::new(stream, FrameCodec::new()))
    }

    /// The `Hello` frame for this peer with the given name.
    pub fn hello_as(&self, name: &str) -> Frame {
        Frame::with_payload(
            Header::hello(self.oldest_seq, self.volume_size, name.as_bytes()),
            Bytes::copy_from_slice(name.as_bytes()),
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
                Greeting::Welcome {
                    durable_seq: frame.header.seq,
                    volume_size: frame.header.offset,
                    digest: digest.header.carried_digest(),
                }
            }
            FrameKind::Refuse => {
                Greeting::Refused(String::from_utf8_lossy(&frame.payload).into_owned())
            }
            kind => bail!("server answered Hello with a {kind:?} frame"),
        })
    }

    /// Connects and completes a handshake, failing unless welcomed. Returns the durable
    /// sequence.
    pub async fn open_session(&self) -> anyhow::Result<(Connection, u64)> {
        let (conn, durable_seq, _) = self.open_session_with_digest().await?;
        Ok((conn, durable_seq))
    }

    /// [`Self::open_session`], also returning the digest the session starts from. This
    /// sender keeps no history, so it takes the receiver's (an empty history's if the
    /// receiver has none) and says so in its opening `Digest`, as the protocol asks.
    pub async fn open_session_with_digest(&self) -> anyhow::Result<(Connection, u64, Digest)> {
        let mut conn = self.connect().await?;
        match self.handshake_as(&mut conn, &self.volume).await? {
            Greeting::Welcome {
                durable_seq,
                volume_size,
                digest,
            } => {
                if volume_size != self.volume_size {
                    bail!(
                        "welcomed with volume size {volume_size}, expected {}",
                        self.volume_size
                    );
                }
                let digest = digest.unwrap_or(digest::EMPTY);
                conn.send(Frame::bare(Header::digest(durable_seq, Some(digest))))
                    .await?;
                Ok((conn, durable_seq, digest))
            }
            Greeting::Refused(reason) => bail!("server refused the session: {reason}"),
        }
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
        let (conn, welcome_seq, mut digest) = self.open_session_with_digest().await?;
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
        let (sent, resent, pings) = (Cell::new(0u64), Cell::new(0u64), Cell::new(0u64));
        let send_all = async {
            for (seq, op) in (first_seq..).zip(ops) {
                let frame = frame_for(seq, op);
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
            anyhow::Ok(highest_sent.get())
        };
        let mut send_all = std::pin::pin!(send_all);
        let mut last_seq = None;
        let mut final_ack = welcome_seq;
        let mut acks = 0;
        while last_seq.is_none_or(|last| final_ack < last) {
            tokio::select! {
                sent = &mut send_all, if last_seq.is_none() => last_seq = Some(sent?),
                frame = tokio::time::timeout(self.timeout, frames.next()) => {
                    let frame = frame
                        .with_context(|| format!("no Ack for {:?} after seq {final_ack}", self.timeout))?
                        .with_context(|| format!("server closed the connection; last Ack {final_ack}"))??;
                    if frame.header.kind != FrameKind::Ack {
                        bail!("unexpected {:?} frame from the server", frame.header.kind);
                    }
                    let seq = frame.header.seq;
                    if seq < final_ack || seq > highest_sent.get() {
                        bail!("Ack {seq} out of order: previous {final_ack}, highest sent {}", highest_sent.get());
                    }
                    final_ack = seq;
                    acks += 1;
                }
            }
        }
        let last_seq = last_seq.unwrap_or(welcome_seq);
        Ok(StreamReport {
            welcome_seq,
            sent: sent.get(),
            resent: resent.get(),
            last_seq,
            final_ack,
            acks,
            pings: pings.get(),
        })
    }

    /// Opens a session and sends `count` pings one at a time, each of which must be
    /// answered by an `Ack` of the welcomed durable sequence (nothing else is in flight).
    /// Returns that sequence and the longest round trip.
    pub async fn ping(&self, count: u64) -> anyhow::Result<(u64, Duration)> {
        let (mut conn, welcome_seq) = self.open_session().await?;
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

/// The frame carrying `op` as entry `seq`.
pub fn frame_for(seq: u64, op: Op) -> Frame {
    match op {
        Op::Write { offset, data, fua } => {
            Frame::with_payload(Header::write(seq, offset, &data, fua), data)
        }
        Op::Flush => Frame::bare(Header::flush(seq)),
        Op::Discard { offset, len } => Frame::bare(Header::discard(seq, offset, len)),
        Op::WriteZeroes { offset, len } => Frame::bare(Header::write_zeroes(seq, offset, len)),
    }
}
