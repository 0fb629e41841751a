//! One replication link: handshake, then reading and validating entries for the applier
//! while durable sequences flow back as `Ack` frames.
//!
//! The reader admits every frame through the [`Sequencer`]: entries go to the applier,
//! entries already applied (a sender resending after a reconnect) are skipped, and each
//! `Ping` asks the ack task for an immediate `Ack` of the current durable sequence. Pings
//! never reach the applier, so they change neither the order nor the group commits.
//! `Begin` and `ResyncDone` go to the applier in stream order; while it protects the
//! replica before a resync (a snapshot may take seconds) the ack task keeps sending its
//! heartbeat, so the sender keeps the session.
//!
//! The ack task is the only writer of the socket once the session streams: it also
//! sends the `Mismatch` frames of the online verify, each before any `Ack` that covers
//! its `Verify` entry.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use arepl_core::wire::Header;
use futures_util::{SinkExt, StreamExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::applier::{self, ApplyError, Outputs, Published, Queued};
use crate::authentication::{self, AuthError, Opening, OpeningError, ProvenVolume};
use crate::codec::{CodecError, Frame, FrameCodec};
use crate::consistency;
use crate::handshake::{self, Admission, Hello, Refusal};
use crate::keys::KeyFiles;
use crate::protection::{ProtectionError, ResyncProtection};
use crate::replica::{Replica, ReplicaError};
use crate::sequencer::{Admitted, ProtocolError, Sequencer};
use crate::state::VolumeIdentity;
use crate::stats::{Failure, Stats};
use crate::takeover::SessionSlot;
use crate::verify::ChunkMismatch;

/// How long a new connection may take over each step of its opening (`Greeting` to
/// `Proof`, then `Hello`). Short, because each one in progress holds one of the few
/// handshake slots ([`crate::server::MAX_HANDSHAKING`]).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a session may go without a frame from the sender. Senders ping every
/// second; this also covers the largest write arriving over a slow link.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the last `Ack` may take to leave once the session is over.
const FINAL_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Validated entries waiting for the applier. While a group commit syncs, the next group
/// gathers here, so the queue is long; its payload bytes are bounded by [`QUEUE_BYTES`].
const ENTRY_QUEUE: usize = 1024;
/// Payload bytes waiting for the applier; at least one largest write.
const QUEUE_BYTES: u32 = 64 << 20;
const _: () = assert!(QUEUE_BYTES >= arepl_core::wire::MAX_WRITE_PAYLOAD);
/// Pings read but not answered yet. A sender that pings without reading the answers is
/// held back by this, like one that streams without reading acks.
const PING_QUEUE: usize = 64;
/// The current `Ack` is repeated this often while a session is up, whatever the reader
/// and the applier do: the sender's pings queue behind data this side has not read
/// yet, so this heartbeat is what tells it a slow receiver from a dead one.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

type FrameReader = FramedRead<OwnedReadHalf, FrameCodec>;
type FrameWriter = FramedWrite<OwnedWriteHalf, FrameCodec>;

/// What all connections share.
#[derive(Debug)]
pub struct Shared {
    replica: Arc<Mutex<Replica>>,
    /// The recorded volume, readable without waiting for the active session.
    identity: StdMutex<Option<VolumeIdentity>>,
    sessions: SessionSlot,
    stats: Arc<Stats>,
    protection: Arc<ResyncProtection>,
    /// Keys senders must prove; `None`: no authentication.
    keys: Option<KeyFiles>,
    shutdown: CancellationToken,
}

impl Shared {
    /// Shares `replica` among connections until `shutdown` is cancelled; they report
    /// what they do in `stats`, and protect the replica before a resync with
    /// `protection`; with `keys`, senders must prove one of them.
    pub fn new(
        replica: Replica,
        stats: Arc<Stats>,
        protection: ResyncProtection,
        keys: Option<KeyFiles>,
        shutdown: CancellationToken,
    ) -> Self {
        let identity = replica.state().identity.clone();
        Self {
            replica: Arc::new(Mutex::new(replica)),
            identity: StdMutex::new(identity),
            sessions: SessionSlot::default(),
            stats,
            protection: Arc::new(protection),
            keys,
            shutdown,
        }
    }

    /// The replica, once no session holds it.
    pub async fn replica(&self) -> tokio::sync::MutexGuard<'_, Replica> {
        self.replica.lock().await
    }

    fn identity(&self) -> std::sync::MutexGuard<'_, Option<VolumeIdentity>> {
        self.identity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a connection ended badly.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("no Hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("no frame for {0:?}")]
    Idle(Duration),
    #[error("authentication failed: {0}")]
    Denied(AuthError),
    #[error("{0}")]
    Refused(Refusal),
    #[error("target or state failed: {0}")]
    Replica(#[from] ReplicaError),
    #[error("{0}")]
    ResyncRefused(ProtectionError),
}

impl From<ApplyError> for ConnectionError {
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::Replica(err) => Self::Replica(err),
            ApplyError::Protocol(err) => Self::Protocol(err),
            ApplyError::ResyncRefused(err) => Self::ResyncRefused(err),
        }
    }
}

impl ConnectionError {
    fn failure(&self) -> Failure {
        match self {
            Self::Codec(CodecError::Wire(_)) | Self::Protocol(_) => Failure::MalformedFrame,
            Self::Codec(CodecError::Io(err)) if is_tampered(err) => Failure::MalformedFrame,
            Self::Refused(_) => Failure::Refused,
            Self::Denied(_) => Failure::Authentication,
            Self::Replica(err) => Failure::of_replica(err),
            Self::ResyncRefused(_) => Failure::ProtectionFailed,
            Self::Codec(CodecError::Io(_) | CodecError::Truncated { .. })
            | Self::HelloTimeout(_)
            | Self::Idle(_) => Failure::Other,
        }
    }
}

/// How a connection ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    ClosedBeforeHello,
    PeerClosed,
    TakenOver,
    ShuttingDown,
    ApplierStopped,
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ClosedBeforeHello => "closed before Hello",
            Self::PeerClosed => "closed by the sender",
            Self::TakenOver => "taken over by a newer session",
            Self::ShuttingDown => "shutting down",
            Self::ApplierStopped => "applier stopped",
        })
    }
}

impl From<OpeningError> for ConnectionError {
    fn from(err: OpeningError) -> Self {
        match err {
            OpeningError::Denied(err) => Self::Denied(err),
            OpeningError::Protocol(err) => Self::Protocol(err),
            OpeningError::Codec(err) => Self::Codec(err),
        }
    }
}

/// Whether a read failed because kTLS found a record altered (`EBADMSG`).
fn is_tampered(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(libc::EBADMSG)
}

/// Serves one connection to its end, logging how it ended. `handshaking` is held until
/// the sender is welcomed or gone: it bounds the connections that have proven nothing.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    handshaking: OwnedSemaphorePermit,
) {
    let ended = run(stream, &shared, handshaking).await;
    if let Err(err) = &ended {
        shared.stats.connection_failed(err.failure());
    }
    match ended {
        Ok(end) => tracing::info!("connection from {peer} ended: {end}"),
        Err(ConnectionError::Refused(reason)) => {
            tracing::warn!("refused session from {peer}: {reason}")
        }
        Err(ConnectionError::Denied(reason)) => {
            tracing::warn!("refused connection from {peer}: authentication failed: {reason}")
        }
        Err(err @ (ConnectionError::Replica(_) | ConnectionError::ResyncRefused(_))) => {
            tracing::error!("dropping connection from {peer}: {err}")
        }
        Err(ConnectionError::Codec(CodecError::Io(err))) if is_tampered(&err) => {
            tracing::warn!(
                "dropping connection from {peer}: an encrypted record failed its integrity \
                 check (altered or corrupted on the way); nothing of it was applied"
            )
        }
        // A broken link is not bad input: the sender reconnects and resends. The error
        // kind alone ("connection reset") says it without an alarming "os error" text.
        Err(ConnectionError::Codec(CodecError::Io(err))) => {
            tracing::info!("connection from {peer} lost: {}", err.kind())
        }
        Err(ConnectionError::Codec(err @ CodecError::Truncated { .. })) => {
            tracing::info!("connection from {peer} lost: {err}")
        }
        Err(err) => tracing::warn!("dropping connection from {peer}: {err}"),
    }
}

async fn run(
    mut stream: TcpStream,
    shared: &Shared,
    handshaking: OwnedSemaphorePermit,
) -> Result<SessionEnd, ConnectionError> {
    let opening = tokio::select! {
        _ = shared.shutdown.cancelled() => return Ok(SessionEnd::ShuttingDown),
        opening = tokio::time::timeout(
            HELLO_TIMEOUT,
            authentication::open(&mut stream, shared.keys.as_ref()),
        ) => opening.map_err(|_| ConnectionError::HelloTimeout(HELLO_TIMEOUT))??,
    };
    let (hello, proven) = match opening {
        Opening::Closed => return Ok(SessionEnd::ClosedBeforeHello),
        Opening::Plain(hello) => (Some(hello), None),
        Opening::Authenticated { volume, .. } => (None, Some(volume)),
    };
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, FrameCodec::new());
    let mut sink = FramedWrite::new(write, FrameCodec::new());
    let handshake = handshake(&mut frames, &mut sink, shared, hello, proven).await?;
    drop(handshaking);
    match handshake {
        Handshake::Ended(end) => Ok(end),
        Handshake::Welcomed(session) => stream_entries(frames, sink, shared, session).await,
    }
}

/// A sender welcomed into a session, holding the replica.
struct Session {
    replica: OwnedMutexGuard<Replica>,
    durable_seq: u64,
    diverged_from: Option<u64>,
    volume_size: u64,
    cancel: CancellationToken,
}

enum Handshake {
    Welcomed(Session),
    Ended(SessionEnd),
}

/// Reads `Hello`, takes over from any active session, checks it against the state and
/// answers `Welcome`.
///
/// The `Welcome` carries the state's durable sequence, read only once this session holds
/// the replica. A session taken over gives the replica up only after its applier made
/// everything it applied durable (see [`crate::takeover`]), so the `Welcome` covers all
/// the old session applied and the sender resends exactly what is missing.
///
/// `hello` is the `Hello` read already, when the connection opened with it; after an
/// authentication it is read here, and must name the `proven` volume.
async fn handshake(
    frames: &mut FrameReader,
    sink: &mut FrameWriter,
    shared: &Shared,
    hello: Option<Frame>,
    proven: Option<ProvenVolume>,
) -> Result<Handshake, ConnectionError> {
    let first = match hello {
        Some(hello) => hello,
        None => {
            let first = tokio::select! {
                _ = shared.shutdown.cancelled() => {
                    return Ok(Handshake::Ended(SessionEnd::ShuttingDown))
                }
                first = tokio::time::timeout(HELLO_TIMEOUT, frames.next()) => {
                    first.map_err(|_| ConnectionError::HelloTimeout(HELLO_TIMEOUT))?
                }
            };
            let Some(first) = first else {
                return Ok(Handshake::Ended(SessionEnd::ClosedBeforeHello));
            };
            first?
        }
    };
    shared.stats.frame_received();
    let hello = match Hello::from_frame(&first)? {
        Err(refusal) => return refuse(sink, refusal).await,
        Ok(hello) => hello,
    };
    if let Some(proven) = proven {
        if !proven.is(&hello.identity) {
            return Err(ProtocolError::HelloAfterGreeting.into());
        }
    }
    let known = shared.identity().clone();
    if let Err(refusal) = handshake::check_identity(&hello, known.as_ref()) {
        return refuse(sink, refusal).await;
    }

    let cancel = shared.sessions.take_over(&shared.shutdown);
    let replica = tokio::select! {
        _ = cancel.cancelled() => return Ok(Handshake::Ended(cancelled(shared))),
        replica = shared.replica.clone().lock_owned() => replica,
    };
    let identity = hello.identity.clone();
    let offered = hello.history;
    let (replica, admitted) = on_replica(replica, move |replica| {
        replica.settle()?;
        let admission = handshake::admit(&hello, replica.state(), replica.volume().len());
        if let Ok(Admission::FirstContact(identity)) = &admission {
            replica.record_identity(identity.clone())?;
        }
        let state = replica.state();
        let resume = (
            state.durable_seq,
            replica.applied_digest(),
            state.diverged.map(|d| d.from_seq),
            consistency::welcome_block(state),
        );
        Ok::<_, ReplicaError>(admission.map(|_| resume))
    })
    .await;
    let (durable_seq, digest, diverged_from, block) = match admitted? {
        Ok(resume) => resume,
        Err(refusal) => return refuse(sink, refusal).await,
    };
    *shared.identity() = Some(identity.clone());
    shared.stats.set_volume(identity.name.as_str());
    // The sender decides from this block whether it continues the replica's history,
    // resyncs it, or gives up; its Begin says which.
    let block = block.encode();
    sink.feed(Frame::with_payload(
        Header::welcome(durable_seq, identity.size, &block),
        bytes::Bytes::copy_from_slice(&block),
    ))
    .await?;
    // The sender checks its digest against this (or adopts it, having none).
    sink.send(Frame::bare(Header::digest(durable_seq, digest)))
        .await?;
    tracing::info!(
        "session for volume {} ({} bytes) resumes after seq {durable_seq}; the sender \
         offers history {}",
        identity.name,
        identity.size,
        offered
            .history
            .map_or_else(|| "none".to_string(), |history| history.to_string())
    );
    Ok(Handshake::Welcomed(Session {
        replica,
        durable_seq,
        diverged_from,
        volume_size: identity.size,
        cancel,
    }))
}

/// Runs a welcomed session: entries go to the applier on a blocking thread, durable
/// sequences come back as acks. Ends with reading; the applier then finishes its batch.
async fn stream_entries(
    mut frames: FrameReader,
    sink: FrameWriter,
    shared: &Shared,
    session: Session,
) -> Result<SessionEnd, ConnectionError> {
    let Session {
        replica,
        durable_seq,
        diverged_from,
        volume_size,
        cancel,
    } = session;
    let _active = shared.stats.session_started();
    let (entry_tx, entry_rx) = mpsc::channel(ENTRY_QUEUE);
    // Until the first commit of this session, the durable sequence is the welcomed one.
    let (durable_tx, durable_rx) = watch::channel(durable_seq);
    let (diverged_tx, diverged_rx) = watch::channel(diverged_from);
    let (ping_tx, ping_rx) = mpsc::channel(PING_QUEUE);
    // Unbounded: one small item per chunk found different, and an applier that waited
    // for a sender that does not read could hold the session open.
    let (mismatch_tx, mismatch_rx) = mpsc::unbounded_channel();
    let stats = shared.stats.clone();
    let protection = shared.protection.clone();
    let reading_over = CancellationToken::new();
    let applier_stops = reading_over.clone();
    let applier = tokio::task::spawn_blocking(move || {
        let mut replica = replica;
        let published = Published {
            durable: durable_tx,
            diverged_from: diverged_tx,
            mismatches: mismatch_tx,
        };
        let outputs = Outputs {
            published: &published,
            stats: &stats,
            protection: &protection,
        };
        applier::run(&mut replica, entry_rx, outputs, &applier_stops)
    });
    let mut acks = tokio::spawn(send_acks(
        sink,
        AckInputs {
            durable: durable_rx,
            diverged_from: diverged_rx,
            pings: ping_rx,
            mismatches: mismatch_rx,
        },
    ));
    // The sender resumes after the welcomed sequence: nothing past it is on the target
    // (entries applied before a restart were made durable when the replica was opened).
    let sequencer = Sequencer::new(durable_seq, volume_size);
    let mut skipped = Skipped::default();
    let reading = forward_entries(
        &mut frames,
        sequencer,
        Outlets {
            entries: entry_tx,
            pings: ping_tx,
        },
        &mut skipped,
        &cancel,
        shared,
    )
    .await;
    // Nobody waits for acks of what is still queued: one commit for all of it.
    reading_over.cancel();
    if let Some((first, last)) = skipped.range {
        tracing::info!(
            "skipped {} already applied entries (seq {first} to {last}) resent by the sender",
            skipped.count
        );
    }
    let applied = join(applier).await;
    // A sender that stopped reading must not hold the connection (and shutdown) open.
    // Acks fail only when the sender is gone, which reading already tells.
    if tokio::time::timeout(FINAL_ACK_TIMEOUT, &mut acks)
        .await
        .is_err()
    {
        acks.abort();
    }
    let report = applied?;
    tracing::info!(
        "session applied {} entries in {} group commits; {} digest checks matched, {} \
         failed; durable seq {}",
        report.applied,
        report.commits,
        report.checks_matched,
        report.checks_failed,
        report.durable_seq
    );
    if report.chunks_verified > 0 {
        tracing::info!(
            "session verified {} chunks; {} differed from the primary",
            report.chunks_verified,
            report.chunk_mismatches
        );
    }
    reading
}

/// Where admitted frames go.
struct Outlets {
    /// Entries to apply.
    entries: mpsc::Sender<Queued>,
    /// One item per `Ping` to answer.
    pings: mpsc::Sender<()>,
}

/// Duplicates skipped in a session, for one log line at its end.
#[derive(Debug, Default)]
struct Skipped {
    count: u64,
    range: Option<(u64, u64)>,
}

impl Skipped {
    fn note(&mut self, seq: u64) {
        self.count += 1;
        self.range = Some(match self.range {
            None => (seq, seq),
            Some((first, last)) => (first.min(seq), last.max(seq)),
        });
    }
}

/// Reads, validates and queues entries until the session ends. Returns on the first bad
/// frame, which is never queued; skips entries already applied; passes pings on.
async fn forward_entries(
    frames: &mut FrameReader,
    mut sequencer: Sequencer,
    outlets: Outlets,
    skipped: &mut Skipped,
    cancel: &CancellationToken,
    shared: &Shared,
) -> Result<SessionEnd, ConnectionError> {
    let Outlets { entries, pings } = outlets;
    let budget = Arc::new(Semaphore::new(QUEUE_BYTES as usize));
    loop {
        let frame = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(cancelled(shared)),
            // The applier stopped at an error (a refused resync, a failed write): the
            // session is over even if the sender has nothing more to say.
            _ = entries.closed() => return Ok(SessionEnd::ApplierStopped),
            // Only the wait for the socket counts: a sender held back by a slow
            // applier is not idle.
            frame = tokio::time::timeout(IDLE_TIMEOUT, frames.next()) => {
                frame.map_err(|_| ConnectionError::Idle(IDLE_TIMEOUT))?
            }
        };
        let Some(frame) = frame else {
            return Ok(SessionEnd::PeerClosed);
        };
        let frame = frame?;
        shared.stats.frame_received();
        let cost = frame.payload.len().max(1) as u32;
        let (queued, entry_seq) = match sequencer.admit(frame)? {
            Admitted::Apply(entry) => {
                let seq = entry.seq;
                let permit = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Ok(cancelled(shared)),
                    permit = budget.clone().acquire_many_owned(cost) => permit,
                };
                let permit = permit.expect("the budget is never closed");
                (Queued::new(entry, permit), Some(seq))
            }
            Admitted::Duplicate { seq, applied } => {
                tracing::debug!("skipping seq {seq}: already applied up to seq {applied}");
                skipped.note(seq);
                shared.stats.entry_skipped();
                continue;
            }
            Admitted::Check(check) => (Queued::check(check), None),
            Admitted::Begin(begin) => (Queued::begin(begin), None),
            Admitted::ResyncDone(seq) => (Queued::resync_done(seq), None),
            Admitted::Ping => {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Ok(cancelled(shared)),
                    // Fails only once the ack task is gone, i.e. the link cannot be
                    // written; reading then ends too.
                    _ = pings.send(()) => {}
                }
                continue;
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(cancelled(shared)),
            sent = entries.send(queued) => if sent.is_err() {
                return Ok(SessionEnd::ApplierStopped);
            },
        }
        if let Some(seq) = entry_seq {
            shared.stats.entry_received(seq);
        }
    }
}

/// What the ack task hears from the reader and the applier.
struct AckInputs {
    /// Durable sequences published by the applier.
    durable: watch::Receiver<u64>,
    /// The divergence, once a digest check failed.
    diverged_from: watch::Receiver<Option<u64>>,
    /// One item per `Ping` to answer.
    pings: mpsc::Receiver<()>,
    /// Chunks the online verify found different, from the applier.
    mismatches: mpsc::UnboundedReceiver<ChunkMismatch>,
}

/// Sends an `Ack` for every durable sequence published, coalescing those that come
/// faster than the link takes them, and the last one before the applier stops. Answers
/// each ping with an `Ack` of the durable sequence right away, repeating the last one if
/// nothing new is durable, and repeats it every [`HEARTBEAT_INTERVAL`] as a heartbeat.
/// Acks never go backwards: the durable sequence only grows. Once the replica is known
/// to have diverged, every `Ack` says so.
///
/// Sends each `Mismatch` the applier reports as it comes, and in any case before the
/// next `Ack`: the applier reports it before it publishes the durable sequence that
/// covers its entry, so taking every report queued after reading the durable sequence
/// and before sending its `Ack` puts each `Mismatch` ahead of the `Ack` covering it.
async fn send_acks(mut sink: FrameWriter, inputs: AckInputs) -> Result<(), CodecError> {
    let AckInputs {
        mut durable,
        diverged_from,
        mut pings,
        mut mismatches,
    } = inputs;
    let ack = |seq: u64| match *diverged_from.borrow() {
        Some(from) => Frame::bare(Header::ack_diverged(seq, from)),
        None => Frame::bare(Header::ack(seq)),
    };
    let mut acked = *durable.borrow_and_update();
    let mut pinging = true;
    let mut mismatching = true;
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + HEARTBEAT_INTERVAL,
        HEARTBEAT_INTERVAL,
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Pings first, so none queued is left unanswered when the applier stops. This
            // holds back no acknowledgement: each answer carries the latest durable seq.
            biased;
            ping = pings.recv(), if pinging => match ping {
                Some(()) => {
                    acked = acked.max(*durable.borrow_and_update());
                    feed_mismatches(&mut sink, &mut mismatches).await?;
                    sink.send(ack(acked)).await?;
                    heartbeat.reset();
                }
                // The reader is done; the applier's last sequence is still to come.
                None => pinging = false,
            },
            mismatch = mismatches.recv(), if mismatching => match mismatch {
                Some(mismatch) => sink.send(Frame::bare(mismatch.header())).await?,
                // The applier is done; its last durable sequence is still to come.
                None => mismatching = false,
            },
            _ = heartbeat.tick() => {
                acked = acked.max(*durable.borrow_and_update());
                feed_mismatches(&mut sink, &mut mismatches).await?;
                sink.send(ack(acked)).await?;
            }
            changed = durable.changed() => {
                let closed = changed.is_err();
                let seq = *durable.borrow_and_update();
                feed_mismatches(&mut sink, &mut mismatches).await?;
                if seq > acked {
                    sink.send(ack(seq)).await?;
                    acked = seq;
                    heartbeat.reset();
                } else {
                    sink.flush().await?;
                }
                if closed {
                    return Ok(());
                }
            }
        }
    }
}

/// Queues every `Mismatch` reported so far on `sink`, to leave with the next frame sent.
async fn feed_mismatches(
    sink: &mut FrameWriter,
    mismatches: &mut mpsc::UnboundedReceiver<ChunkMismatch>,
) -> Result<(), CodecError> {
    while let Ok(mismatch) = mismatches.try_recv() {
        sink.feed(Frame::bare(mismatch.header())).await?;
    }
    Ok(())
}

async fn refuse(sink: &mut FrameWriter, refusal: Refusal) -> Result<Handshake, ConnectionError> {
    let reason = bytes::Bytes::copy_from_slice(refusal.wire_reason());
    // The sender may already be gone; the refusal is logged either way.
    let _ = sink
        .send(Frame::with_payload(Header::refuse(&reason), reason))
        .await;
    Err(ConnectionError::Refused(refusal))
}

fn cancelled(shared: &Shared) -> SessionEnd {
    if shared.shutdown.is_cancelled() {
        SessionEnd::ShuttingDown
    } else {
        SessionEnd::TakenOver
    }
}

/// Runs blocking work on the replica off the async threads.
async fn on_replica<T: Send + 'static>(
    replica: OwnedMutexGuard<Replica>,
    work: impl FnOnce(&mut Replica) -> T + Send + 'static,
) -> (OwnedMutexGuard<Replica>, T) {
    join(tokio::task::spawn_blocking(move || {
        let mut replica = replica;
        let out = work(&mut replica);
        (replica, out)
    }))
    .await
}

/// Awaits a task, passing its panic on.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    match task.await {
        Ok(value) => value,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("task cancelled while a connection awaited it: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, Operation};
    use crate::protection::SnapshotMode;
    use crate::sender::client::{BeginMode, Connection, Peer};
    use crate::state::{Consistency, VolumeIdentity};
    use arepl_core::history::History;
    use arepl_core::table::VolumeName;
    use arepl_core::verify::ChunkCheck;
    use arepl_core::wire::FrameKind;
    use tokio::net::TcpListener;

    const A: History = History {
        uuid: [0xA1; 16],
        counter: 3,
    };

    /// Protection by `hook` alone (the test targets are files anyway).
    fn hook(command: &str) -> ResyncProtection {
        ResyncProtection {
            before_resync: Some(command.to_string()),
            snapshot: SnapshotMode::Disabled,
            ..ResyncProtection::default()
        }
    }

    const VOLUME_SIZE: u64 = 1 << 20;
    const WAIT: Duration = Duration::from_secs(20);

    /// A receiver for volume "vol", durable at `durable_seq`, serving one connection with
    /// [`run`] so a test sees how it ended.
    struct OneShot {
        peer: Peer,
        served: tokio::task::JoinHandle<Result<SessionEnd, ConnectionError>>,
        shared: Arc<Shared>,
        dir: tempfile::TempDir,
    }

    async fn one_shot(durable_seq: u64) -> OneShot {
        one_shot_with(durable_seq, None, ResyncProtection::default()).await
    }

    /// [`one_shot`] with `history` recorded (consistent) and `protection` for resyncs.
    async fn one_shot_with(
        durable_seq: u64,
        history: Option<History>,
        protection: ResyncProtection,
    ) -> OneShot {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, vec![0u8; VOLUME_SIZE as usize]).unwrap();
        let mut replica = Replica::open(&target, dir.path()).unwrap();
        replica
            .record_identity(VolumeIdentity {
                name: VolumeName::new("vol").unwrap(),
                size: VOLUME_SIZE,
            })
            .unwrap();
        for seq in 1..=durable_seq {
            replica.apply(&Entry::new(seq, Operation::Flush)).unwrap();
        }
        replica.make_durable().unwrap();
        replica.record(|state| state.history = history).unwrap();
        let stats = Arc::new(Stats::new(replica.state()));
        let shared = Arc::new(Shared::new(
            replica,
            stats,
            protection,
            None,
            CancellationToken::new(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = shared.clone();
        let served = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let handshaking = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
            run(stream, &serving, handshaking).await
        });
        OneShot {
            peer: Peer {
                timeout: WAIT,
                ..Peer::new(addr, "vol", VOLUME_SIZE)
            },
            served,
            shared,
            dir,
        }
    }

    /// How the session served by `server` ended.
    async fn ended(server: OneShot) -> (Result<SessionEnd, ConnectionError>, OneShot) {
        let OneShot {
            peer,
            served,
            shared,
            dir,
        } = server;
        let end = tokio::time::timeout(WAIT, served).await.unwrap().unwrap();
        let rest = OneShot {
            peer,
            served: tokio::spawn(async { Ok(SessionEnd::PeerClosed) }),
            shared,
            dir,
        };
        (end, rest)
    }

    /// Reads until the receiver closes; returns the highest `Ack`.
    async fn highest_ack_until_closed(conn: &mut Connection) -> u64 {
        let mut highest = 0;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(WAIT, conn.next()).await {
            assert_eq!(frame.header.kind, FrameKind::Ack);
            highest = highest.max(frame.header.seq);
        }
        highest
    }

    async fn next_frame(conn: &mut Connection) -> Frame {
        tokio::time::timeout(WAIT, conn.next())
            .await
            .expect("no frame from the receiver")
            .expect("receiver closed the connection")
            .unwrap()
    }

    async fn ping(conn: &mut Connection) -> u64 {
        conn.send(Frame::bare(Header::ping())).await.unwrap();
        let answer = next_frame(conn).await;
        assert_eq!(answer.header.kind, FrameKind::Ack);
        answer.header.seq
    }

    async fn wait_for_ack(conn: &mut Connection, seq: u64) {
        loop {
            let frame = next_frame(conn).await;
            assert_eq!(frame.header.kind, FrameKind::Ack);
            assert!(
                frame.header.seq <= seq,
                "Ack {} past {seq}",
                frame.header.seq
            );
            if frame.header.seq == seq {
                return;
            }
        }
    }

    fn write(seq: u64, offset: u64, byte: u8, fua: bool) -> Frame {
        let data = vec![byte; 4096];
        Frame::with_payload(Header::write(seq, offset, &data, fua), data)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ping_is_answered_with_the_current_durable_seq() {
        let server = one_shot(7).await;
        let (mut conn, welcomed) = server.peer.open_session().await.unwrap();
        assert_eq!(welcomed, 7);
        // Nothing durable in this session yet: the welcomed sequence, once per ping.
        for _ in 0..3 {
            assert_eq!(ping(&mut conn).await, 7);
        }
        conn.send(write(8, 0, 0x11, true)).await.unwrap();
        wait_for_ack(&mut conn, 8).await;
        assert_eq!(ping(&mut conn).await, 8);
        // Pings between entries change neither their order nor what is acknowledged.
        conn.feed(write(9, 4096, 0x22, false)).await.unwrap();
        conn.feed(Frame::bare(Header::ping())).await.unwrap();
        conn.feed(write(10, 0, 0x33, false)).await.unwrap();
        conn.send(Frame::bare(Header::flush(11))).await.unwrap();
        let mut last = 8;
        while last < 11 {
            let frame = next_frame(&mut conn).await;
            assert_eq!(frame.header.kind, FrameKind::Ack);
            assert!(
                frame.header.seq >= last,
                "Ack went back to {}",
                frame.header.seq
            );
            last = frame.header.seq;
        }
        assert_eq!(ping(&mut conn).await, 11);
        drop(conn);
        let end = tokio::time::timeout(WAIT, server.served).await.unwrap();
        assert_eq!(end.unwrap().unwrap(), SessionEnd::PeerClosed);
        let replica = server.shared.replica().await;
        assert_eq!(replica.state().durable_seq, 11);
        let mut bytes = vec![0u8; 8192];
        replica.volume().read(0, &mut bytes).unwrap();
        assert!(bytes[..4096].iter().all(|&b| b == 0x33));
        assert!(bytes[4096..].iter().all(|&b| b == 0x22));
    }

    /// `Verify` entry `seq` of the chunk at `offset`, as the primary has `bytes` there.
    fn verify(seq: u64, offset: u64, bytes: &[u8]) -> Frame {
        let check = ChunkCheck::of(bytes).encode();
        Frame::with_payload(Header::verify(seq, offset, &check), check.to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_matching_verify_sends_no_mismatch_and_is_acknowledged() {
        let server = one_shot(3).await;
        let (mut conn, _) = server.peer.open_session().await.unwrap();
        conn.feed(write(4, 0, 0x44, false)).await.unwrap();
        // The chunk as entry 4 left it, and one nothing wrote.
        conn.feed(verify(5, 0, &[0x44; 4096])).await.unwrap();
        conn.feed(verify(6, 4096, &[0; 8192])).await.unwrap();
        // The write after a check is not in it.
        conn.send(write(7, 4096, 0x77, false)).await.unwrap();
        // Only Acks come back.
        wait_for_ack(&mut conn, 7).await;
        drop(conn);
        let (end, server) = ended(server).await;
        assert_eq!(end.unwrap(), SessionEnd::PeerClosed);
        let figures = server.shared.stats.snapshot();
        assert_eq!(
            (
                figures.verify_chunks,
                figures.verify_bytes,
                figures.verify_mismatches
            ),
            (2, 3 * 4096, 0)
        );
        let replica = server.shared.replica().await;
        assert_eq!(replica.state().durable_seq, 7);
        let record = crate::verify::load(server.dir.path()).unwrap().unwrap();
        assert_eq!(
            (record.chunks, record.mismatches, record.last_seq),
            (2, 0, 6)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_differing_chunk_is_reported_before_the_ack_covering_it() {
        let server = one_shot(3).await;
        // Block 2 of the replica differs from the primary's, as if written behind
        // replicad's back.
        {
            use std::os::unix::fs::FileExt;
            let target = std::fs::OpenOptions::new()
                .write(true)
                .open(server.dir.path().join("target"))
                .unwrap();
            target.write_all_at(&[0xEE; 512], 2 * 4096 + 512).unwrap();
        }
        let (mut conn, _) = server.peer.open_session().await.unwrap();
        for block in 0..4 {
            conn.feed(verify(4 + block, block * 4096, &[0; 4096]))
                .await
                .unwrap();
        }
        // Written over by entry 8: a later check of it matches.
        conn.feed(write(8, 2 * 4096, 0x88, false)).await.unwrap();
        conn.feed(verify(9, 2 * 4096, &[0x88; 4096])).await.unwrap();
        conn.send(Frame::bare(Header::flush(10))).await.unwrap();
        let mut mismatches = Vec::new();
        loop {
            let frame = next_frame(&mut conn).await;
            match frame.header.kind {
                FrameKind::Mismatch => mismatches.push(frame.header),
                FrameKind::Ack => {
                    // Every Mismatch of an entry this Ack covers came before it.
                    let acked = frame.header.seq;
                    assert!(
                        acked < 6 || !mismatches.is_empty(),
                        "Ack {acked} before the Mismatch of seq 6"
                    );
                    if acked == 10 {
                        break;
                    }
                }
                kind => panic!("unexpected {kind:?} frame"),
            }
        }
        assert_eq!(mismatches, [Header::mismatch(6, 2 * 4096, 4096)]);
        drop(conn);
        let (end, server) = ended(server).await;
        assert_eq!(end.unwrap(), SessionEnd::PeerClosed);
        let figures = server.shared.stats.snapshot();
        assert_eq!((figures.verify_chunks, figures.verify_mismatches), (5, 1));
        let metrics = crate::metrics::render(&figures);
        assert!(
            metrics.contains("\nreplicad_verify_mismatches_total{volume=\"vol\"} 1\n"),
            "{metrics}"
        );
        let status = crate::status::persisted(server.dir.path()).unwrap();
        assert!(
            status.contains(
                "\nverify: 5 chunks checked (20480 bytes), 1 mismatched; last check at seq 9\n\
                 verify mismatch: bytes 8192..12288 differ from the primary (seq 6)\n"
            ),
            "{status}"
        );
        let replica = server.shared.replica().await;
        assert_eq!(replica.state().durable_seq, 10);
        assert_eq!(replica.state().diverged, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_verify_is_dropped_and_writes_nothing() {
        let check = ChunkCheck::of(&[0; 4096]);
        let mut reserved = check.encode();
        reserved[12] = 1;
        let past_end = verify(4, VOLUME_SIZE - 2048, &[0; 4096]);
        let misaligned = verify(4, 4096 + 100, &[0; 4096]);
        let bad_payload = Frame::with_payload(Header::verify(4, 0, &reserved), reserved.to_vec());
        for (bad, reason) in [
            (past_end, "past the end"),
            (misaligned, "not sector-aligned"),
            (bad_payload, "malformed Verify payload"),
        ] {
            let server = one_shot(3).await;
            let (mut conn, _) = server.peer.open_session().await.unwrap();
            conn.feed(bad).await.unwrap();
            // Never applied, even though a valid entry follows it.
            conn.send(write(5, 0, 0x55, true)).await.unwrap();
            assert!(highest_ack_until_closed(&mut conn).await <= 3);
            let (end, server) = ended(server).await;
            let err = end.unwrap_err();
            assert!(matches!(err, ConnectionError::Protocol(_)), "{err}");
            assert_eq!(err.failure(), Failure::MalformedFrame);
            assert!(err.to_string().contains(reason), "{err}");
            let replica = server.shared.replica().await;
            assert_eq!(replica.state().durable_seq, 3);
            let mut bytes = vec![0u8; VOLUME_SIZE as usize];
            replica.volume().read(0, &mut bytes).unwrap();
            assert!(
                bytes.iter().all(|&b| b == 0),
                "{reason}: the target changed"
            );
            assert_eq!(crate::verify::load(server.dir.path()).unwrap(), None);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mismatch_from_the_sender_is_a_protocol_error() {
        let server = one_shot(3).await;
        let (mut conn, _) = server.peer.open_session().await.unwrap();
        conn.send(Frame::bare(Header::mismatch(4, 0, 4096)))
            .await
            .unwrap();
        assert!(highest_ack_until_closed(&mut conn).await <= 3);
        let (end, _server) = ended(server).await;
        let err = end.unwrap_err();
        assert!(
            matches!(
                err,
                ConnectionError::Protocol(ProtocolError::ReceiverFrame(FrameKind::Mismatch))
            ),
            "{err}"
        );
        assert_eq!(err.failure(), Failure::MalformedFrame);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_heartbeat_ack_comes_every_second_without_pings() {
        let server = one_shot(5).await;
        let (mut conn, welcomed) = server.peer.open_session().await.unwrap();
        assert_eq!(welcomed, 5);
        let started = tokio::time::Instant::now();
        for _ in 0..2 {
            let frame = next_frame(&mut conn).await;
            assert_eq!(frame.header.kind, FrameKind::Ack);
            assert_eq!(frame.header.seq, 5);
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= HEARTBEAT_INTERVAL && elapsed < 4 * HEARTBEAT_INTERVAL,
            "two heartbeats took {elapsed:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ping_before_hello_is_a_protocol_error() {
        let server = one_shot(3).await;
        let mut conn = server.peer.connect().await.unwrap();
        conn.send(Frame::bare(Header::ping())).await.unwrap();
        // Dropped without a Welcome or an Ack.
        let answer = tokio::time::timeout(WAIT, conn.next()).await.unwrap();
        assert!(
            matches!(answer, None | Some(Err(_))),
            "answered a Ping before Hello: {answer:?}"
        );
        let end = tokio::time::timeout(WAIT, server.served).await.unwrap();
        let err = end.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                ConnectionError::Protocol(ProtocolError::ExpectedHello(FrameKind::Ping))
            ),
            "{err}"
        );
        assert_eq!(err.to_string(), "expected Hello, got a Ping frame");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resent_entries_are_skipped_and_acks_stay_cumulative() {
        let server = one_shot(0).await;
        let (mut conn, welcomed) = server.peer.open_session().await.unwrap();
        assert_eq!(welcomed, 0);
        for seq in 1..=4 {
            conn.feed(write(seq, (seq - 1) * 4096, seq as u8, false))
                .await
                .unwrap();
        }
        conn.send(Frame::bare(Header::flush(5))).await.unwrap();
        wait_for_ack(&mut conn, 5).await;
        // Resent with other contents (a real sender resends the same): had they been
        // applied, the target would show it.
        for seq in 2..=3 {
            conn.feed(write(seq, 0, 0xEE, true)).await.unwrap();
        }
        conn.feed(Frame::bare(Header::flush(4))).await.unwrap();
        // Skipping does not regress the acks: a ping still gets the durable seq.
        assert_eq!(ping(&mut conn).await, 5);
        conn.send(write(6, 4 * 4096, 6, true)).await.unwrap();
        wait_for_ack(&mut conn, 6).await;
        // A gap still ends the session, without applying anything of it.
        conn.send(write(8, 0, 0xEE, true)).await.unwrap();
        let rest = tokio::time::timeout(WAIT, conn.next()).await.unwrap();
        assert!(matches!(rest, None | Some(Err(_))), "{rest:?}");
        let end = tokio::time::timeout(WAIT, server.served).await.unwrap();
        let err = end.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                ConnectionError::Protocol(ProtocolError::SequenceGap {
                    expected: 7,
                    got: 8
                })
            ),
            "{err}"
        );
        let replica = server.shared.replica().await;
        assert_eq!(replica.state().durable_seq, 6);
        let mut bytes = vec![0u8; 6 * 4096];
        replica.volume().read(0, &mut bytes).unwrap();
        for (block, expected) in bytes.chunks(4096).zip([1u8, 2, 3, 4, 6, 0]) {
            assert!(block.iter().all(|&b| b == expected), "block of {expected}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_begin_naming_another_history_is_dropped_before_any_write() {
        let mut server = one_shot_with(3, Some(A), ResyncProtection::default()).await;
        server.peer.begin = BeginMode::Continue(A.next_generation());
        let (mut conn, welcomed) = server.peer.open_session().await.unwrap();
        assert_eq!(welcomed, 3);
        conn.send(write(4, 0, 0x44, true)).await.unwrap();
        assert!(highest_ack_until_closed(&mut conn).await <= 3);
        let (end, server) = ended(server).await;
        let err = end.unwrap_err();
        assert!(
            matches!(
                err,
                ConnectionError::Protocol(ProtocolError::OtherHistory { .. })
            ),
            "{err}"
        );
        assert_eq!(err.failure(), Failure::MalformedFrame);
        assert_eq!(
            err.to_string(),
            format!(
                "Begin continues history {} but this replica holds {A}",
                A.next_generation()
            )
        );
        let replica = server.shared.replica().await;
        assert_eq!(replica.state().durable_seq, 3);
        assert_eq!(replica.state().history, Some(A));
        let mut bytes = vec![0u8; 4096];
        replica.volume().read(0, &mut bytes).unwrap();
        assert!(bytes.iter().all(|&b| b == 0), "the write was applied");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resync_whose_hook_fails_is_refused_and_writes_nothing() {
        let mut server = one_shot_with(3, Some(A), hook("echo refusing >&2; exit 7")).await;
        server.peer.begin = BeginMode::Resync;
        let before = server.shared.replica().await.state().clone();
        let (mut conn, _) = server.peer.open_session().await.unwrap();
        for seq in 4..=6 {
            conn.feed(write(seq, (seq - 4) * 4096, 0x66, false))
                .await
                .unwrap();
        }
        conn.send(Frame::bare(Header::flush(7))).await.unwrap();
        assert!(highest_ack_until_closed(&mut conn).await <= 3);
        let (end, server) = ended(server).await;
        let err = end.unwrap_err();
        assert!(matches!(err, ConnectionError::ResyncRefused(_)), "{err}");
        assert_eq!(err.failure(), Failure::ProtectionFailed);
        assert_eq!(
            err.to_string(),
            "before-resync hook failed: sh exit status: 7 (refusing); the resync is refused \
             and nothing was written"
        );
        let replica = server.shared.replica().await;
        assert_eq!(replica.state(), &before, "the state changed");
        let mut bytes = vec![0u8; 3 * 4096];
        replica.volume().read(0, &mut bytes).unwrap();
        assert!(bytes.iter().all(|&b| b == 0), "an entry was applied");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_protected_resync_is_recorded_first_and_ends_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("hook.env");
        // Slower than the heartbeat: acks must keep coming while it runs.
        let command = format!("env | grep ^AREPL_ | sort > {env:?}; sleep 3");
        let mut server = one_shot_with(3, Some(A), hook(&command)).await;
        server.peer.begin = BeginMode::Resync;
        let (mut conn, _) = server.peer.open_session().await.unwrap();
        conn.send(write(4, 0, 0x44, false)).await.unwrap();
        let started = tokio::time::Instant::now();
        let heartbeat = next_frame(&mut conn).await;
        assert_eq!(
            (heartbeat.header.kind, heartbeat.header.seq),
            (FrameKind::Ack, 3)
        );
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "no heartbeat during the hook"
        );
        conn.send(Frame::bare(Header::flush(5))).await.unwrap();
        wait_for_ack(&mut conn, 5).await;
        // Recorded before entry 4 was written, and still so.
        let recorded = crate::state::inspect(server.dir.path()).unwrap().unwrap();
        assert_eq!(recorded.state.history, Some(A.next_generation()));
        assert_eq!(
            recorded.state.consistency,
            Consistency::Resyncing { done_seq: None }
        );
        let hook_env = std::fs::read_to_string(&env).unwrap();
        let target = server.dir.path().join("target");
        assert_eq!(
            hook_env,
            format!(
                "AREPL_DURABLE_SEQ=3\nAREPL_HISTORY={A}\nAREPL_RESYNC_HISTORY={}\n\
                 AREPL_TARGET={}\nAREPL_VOLUME=vol\n",
                A.next_generation(),
                target.display()
            )
        );
        conn.send(Frame::bare(Header::resync_done(5)))
            .await
            .unwrap();
        conn.send(Frame::bare(Header::ping())).await.unwrap();
        wait_for_ack(&mut conn, 5).await;
        drop(conn);
        let (end, server) = ended(server).await;
        assert_eq!(end.unwrap(), SessionEnd::PeerClosed);
        let replica = server.shared.replica().await;
        let state = replica.state();
        assert_eq!(state.history, Some(A.next_generation()));
        assert_eq!(state.consistency, Consistency::Consistent);
        assert_eq!(state.durable_seq, 5);
        let figures = server.shared.stats.snapshot();
        assert_eq!((figures.resyncs, figures.history_generation), (1, 4));
        assert!(figures.consistent && !figures.resyncing);
    }
}
