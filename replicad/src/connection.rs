//! One replication link: handshake, then reading and validating entries for the applier
//! while durable sequences flow back as `Ack` frames.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use arepl_core::wire::Header;
use futures_util::{SinkExt, StreamExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Mutex, OwnedMutexGuard, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::applier::{self, Queued};
use crate::codec::{CodecError, Frame, FrameCodec};
use crate::handshake::{self, Admission, Hello, Refusal};
use crate::replica::{Replica, ReplicaError};
use crate::sequencer::{ProtocolError, Sequencer};
use crate::state::VolumeIdentity;
use crate::takeover::SessionSlot;

/// How long a new connection may take to send its `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the last `Ack` may take to leave once the session is over.
const FINAL_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Validated entries waiting for the applier. While a group commit syncs, the next group
/// gathers here, so the queue is long; its payload bytes are bounded by [`QUEUE_BYTES`].
const ENTRY_QUEUE: usize = 1024;
/// Payload bytes waiting for the applier; at least one largest write.
const QUEUE_BYTES: u32 = 64 << 20;
const _: () = assert!(QUEUE_BYTES >= arepl_core::wire::MAX_WRITE_PAYLOAD);

type FrameReader = FramedRead<OwnedReadHalf, FrameCodec>;
type FrameWriter = FramedWrite<OwnedWriteHalf, FrameCodec>;

/// What all connections share.
#[derive(Debug)]
pub struct Shared {
    replica: Arc<Mutex<Replica>>,
    /// The recorded volume, readable without waiting for the active session.
    identity: StdMutex<Option<VolumeIdentity>>,
    sessions: SessionSlot,
    shutdown: CancellationToken,
}

impl Shared {
    /// Shares `replica` among connections until `shutdown` is cancelled.
    pub fn new(replica: Replica, shutdown: CancellationToken) -> Self {
        let identity = replica.state().identity.clone();
        Self {
            replica: Arc::new(Mutex::new(replica)),
            identity: StdMutex::new(identity),
            sessions: SessionSlot::default(),
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
    #[error("{0}")]
    Refused(Refusal),
    #[error("target or state failed: {0}")]
    Replica(#[from] ReplicaError),
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

/// Serves one connection to its end, logging how it ended.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    match run(stream, &shared).await {
        Ok(end) => tracing::info!("connection from {peer} ended: {end}"),
        Err(ConnectionError::Refused(reason)) => {
            tracing::warn!("refused session from {peer}: {reason}")
        }
        Err(err @ ConnectionError::Replica(_)) => {
            tracing::error!("dropping connection from {peer}: {err}")
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

async fn run(stream: TcpStream, shared: &Shared) -> Result<SessionEnd, ConnectionError> {
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, FrameCodec::new());
    let mut sink = FramedWrite::new(write, FrameCodec::new());
    match handshake(&mut frames, &mut sink, shared).await? {
        Handshake::Ended(end) => Ok(end),
        Handshake::Welcomed(session) => stream_entries(frames, sink, shared, session).await,
    }
}

/// A sender welcomed into a session, holding the replica.
struct Session {
    replica: OwnedMutexGuard<Replica>,
    durable_seq: u64,
    volume_size: u64,
    cancel: CancellationToken,
}

enum Handshake {
    Welcomed(Session),
    Ended(SessionEnd),
}

/// Reads `Hello`, takes over from any active session, checks it against the state and
/// answers `Welcome`.
async fn handshake(
    frames: &mut FrameReader,
    sink: &mut FrameWriter,
    shared: &Shared,
) -> Result<Handshake, ConnectionError> {
    let first = tokio::select! {
        _ = shared.shutdown.cancelled() => return Ok(Handshake::Ended(SessionEnd::ShuttingDown)),
        first = tokio::time::timeout(HELLO_TIMEOUT, frames.next()) => {
            first.map_err(|_| ConnectionError::HelloTimeout(HELLO_TIMEOUT))?
        }
    };
    let Some(first) = first else {
        return Ok(Handshake::Ended(SessionEnd::ClosedBeforeHello));
    };
    let first = first?;
    let hello = match Hello::from_frame(&first) {
        None => return Err(ProtocolError::ExpectedHello(first.header.kind).into()),
        Some(Err(refusal)) => return refuse(sink, refusal).await,
        Some(Ok(hello)) => hello,
    };
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
    let (replica, admitted) = on_replica(replica, move |replica| {
        let admission = handshake::admit(&hello, replica.state(), replica.volume().len());
        if let Ok(Admission::FirstContact(identity)) = &admission {
            replica.record_identity(identity.clone())?;
        }
        Ok::<_, ReplicaError>(admission.map(|_| replica.state().durable_seq))
    })
    .await;
    let durable_seq = match admitted? {
        Ok(durable_seq) => durable_seq,
        Err(refusal) => return refuse(sink, refusal).await,
    };
    *shared.identity() = Some(identity.clone());
    sink.send(Frame::bare(Header::welcome(durable_seq, identity.size)))
        .await?;
    tracing::info!(
        "session for volume {} ({} bytes) resumes after seq {durable_seq}",
        identity.name,
        identity.size
    );
    Ok(Handshake::Welcomed(Session {
        replica,
        durable_seq,
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
        volume_size,
        cancel,
    } = session;
    let (entry_tx, entry_rx) = mpsc::channel(ENTRY_QUEUE);
    let (durable_tx, durable_rx) = watch::channel(durable_seq);
    let applier = tokio::task::spawn_blocking(move || {
        let mut replica = replica;
        applier::run(&mut replica, entry_rx, &durable_tx)
    });
    let mut acks = tokio::spawn(send_acks(sink, durable_rx));
    let sequencer = Sequencer::new(durable_seq, volume_size);
    let reading = forward_entries(&mut frames, sequencer, entry_tx, &cancel, shared).await;
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
        "session applied {} entries in {} group commits; durable seq {}",
        report.applied,
        report.commits,
        report.durable_seq
    );
    reading
}

/// Reads, validates and queues entries until the session ends. Returns on the first bad
/// frame, which is never queued.
async fn forward_entries(
    frames: &mut FrameReader,
    mut sequencer: Sequencer,
    entries: mpsc::Sender<Queued>,
    cancel: &CancellationToken,
    shared: &Shared,
) -> Result<SessionEnd, ConnectionError> {
    let budget = Arc::new(Semaphore::new(QUEUE_BYTES as usize));
    loop {
        let frame = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(cancelled(shared)),
            frame = frames.next() => frame,
        };
        let Some(frame) = frame else {
            return Ok(SessionEnd::PeerClosed);
        };
        let frame = frame?;
        let cost = frame.payload.len().max(1) as u32;
        let entry = sequencer.admit(frame)?;
        let queued = async {
            let permit = budget.clone().acquire_many_owned(cost).await;
            let permit = permit.expect("the budget is never closed");
            entries.send(Queued::new(entry, permit)).await
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(cancelled(shared)),
            sent = queued => if sent.is_err() {
                return Ok(SessionEnd::ApplierStopped);
            },
        }
    }
}

/// Sends an `Ack` for every durable sequence published, coalescing those that come
/// faster than the link takes them, and the last one before the applier stops.
async fn send_acks(
    mut sink: FrameWriter,
    mut durable: watch::Receiver<u64>,
) -> Result<(), CodecError> {
    let mut acked = *durable.borrow_and_update();
    loop {
        let closed = durable.changed().await.is_err();
        let seq = *durable.borrow_and_update();
        if seq > acked {
            sink.send(Frame::bare(Header::ack(seq))).await?;
            acked = seq;
        }
        if closed {
            return Ok(());
        }
    }
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
