// SPDX-License-Identifier: GPL-2.0

//! The sender thread: picks a link, connects, performs the handshake, and streams the
//! FIFO in sequence order; plus the receiver thread of each connection, which applies
//! acknowledgements.
//!
//! Link policy (passive mode): one link carries the stream. A connect failure, a send or
//! receive error, or a dead link (no frame from the receiver and no transport progress
//! for [`crate::liveness::SILENCE_LIMIT_MS`], although a `Ping` goes out every
//! [`PING_INTERVAL_MS`] and the receiver repeats its `Ack` every second) ends the
//! session, and the next attempt uses the other link. A receiver that is alive but slow
//! keeps its session: the full send buffer holds the sender back. Only when it
//! acknowledges nothing for `ko_count` periods is the session dropped, logged and counted
//! ([`crate::liveness`]). While the backup carries the stream, the primary is probed
//! every [`FAILBACK_PROBE_MS`]; once it accepts a connection the stream returns to it.
//! Failed attempts back off exponentially from [`BACKOFF_MIN_MS`] to [`BACKOFF_MAX_MS`].

use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::time::{msecs_to_jiffies, Ktime};

use crate::authenticate::authenticate;
use crate::claim::random_uuid;
use crate::digest::{self, Digest};
use crate::history::{
    decide, Decision, History, HistoryBlock, ReplicaView, ResyncScope, SenderView,
    HISTORY_BLOCK_LEN, RESYNCING,
};
use crate::entry::Entry;
use crate::noio::NoIoScope;
use crate::kthread::{self, KThread};
use crate::liveness::{Liveness, Observation, Verdict};
use crate::net::{Body, TcpStream};
use crate::replication::{QueueState, Replication};
use crate::spill_log::{NextRecord, SpillLog, SpillState};
use crate::status::LinkState;
use crate::wire::{FrameKind, Header, HelloPayload, HEADER_LEN, MAX_REASON_LEN};

/// Connect timeout.
const CONNECT_TIMEOUT_MS: u32 = 5_000;
/// Each answer of the handshake comes within this long, or the link fails: a receiver
/// that accepts and never answers (hung, or blocked on this very device's writes) must
/// not hold the sender, which lets stranded writers go only between attempts.
const HANDSHAKE_TIMEOUT_MS: u32 = 15_000;
/// A send blocked on a full send buffer judges the receiver this often.
const SEND_WAIT_MS: u32 = 1_000;
/// Entries sent but not yet acknowledged, at most.
const SEND_WINDOW: u64 = crate::spill_log::READ_WINDOW as u64;
/// Reconnect backoff bounds.
const BACKOFF_MIN_MS: u32 = 100;
const BACKOFF_MAX_MS: u32 = 5_000;
/// A `Ping` goes out this often.
const PING_INTERVAL_MS: i64 = 1_000;
/// While on the backup link, the primary is tried this often.
const FAILBACK_PROBE_MS: i64 = 10_000;
/// Connect timeout of a failback probe (it stalls sending meanwhile).
const FAILBACK_PROBE_TIMEOUT_MS: u32 = 1_000;
/// A `Digest` frame follows at least every this many entries sent...
const DIGEST_EVERY_ENTRIES: u64 = 256;
/// ... or this often while entries flow, and whenever the stream pauses, so a
/// difference shows within about a second.
const DIGEST_INTERVAL_MS: i64 = 1_000;
/// A receiver that keeps turning slow is logged at most this often.
const SLOW_LOG_INTERVAL_MS: i64 = 60_000;
/// The receiver's liveness is judged at most this often (not once per entry sent).
const JUDGE_INTERVAL_MS: i64 = 100;

const PRIMARY: usize = 0;
const BACKUP: usize = 1;

/// Why a session ended.
enum SessionEnd {
    /// The link failed.
    Failed(Error),
    /// The thread is stopping, or replication was paused.
    Stopped,
    /// `dmsetup message ... switch-link`.
    SwitchRequested,
    /// `dmsetup message ... key reload`: reconnect with the new key.
    Rekey,
    /// The primary link answers again while the backup carries the stream.
    PrimaryBack,
    /// The spill log could not be read; the link is fine.
    SpillUnreadable,
    /// Writes are tracked instead of queued: the next handshake resyncs their regions.
    ResyncNeeded,
    /// The receiver is alive but acknowledged nothing for `ko_count` periods.
    TooSlow {
        /// How long nothing was acknowledged.
        stalled_ms: i64,
    },
}

/// One live connection, shared by the sender and its receiver thread.
struct Session {
    repl: Arc<Replication>,
    stream: TcpStream,
    /// Wire sequence = base + local sequence for this device.
    wire_base: u64,
    /// Set by whichever side sees the connection fail.
    broken: AtomicBool,
    /// When the receiver last sent a frame (ms, monotonic).
    last_heard_ms: AtomicI64,
    /// The replica is in a resync (begun now or before): it hears when the resync's
    /// last entry has been sent.
    replica_resyncing: bool,
}

impl Session {
    fn fail(&self) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            self.stream.shutdown();
        }
        self.repl.work.notify_all();
    }
}

fn now_ms() -> i64 {
    Ktime::ktime_get().to_ms()
}

pub(crate) fn protocol_error() -> Error {
    Error::from_errno(-(kernel::bindings::EPROTO as i32))
}

pub(crate) fn refused() -> Error {
    Error::from_errno(-(kernel::bindings::ECONNREFUSED as i32))
}

pub(crate) fn timed_out() -> Error {
    Error::from_errno(-(kernel::bindings::ETIMEDOUT as i32))
}

/// Body of the per-device sender thread.
pub(crate) fn sender_main(repl: &Arc<Replication>) {
    // Reading the spill log allocates; that must not wait on writes to this device.
    let _noio = NoIoScope::enter();
    let mut link = PRIMARY;
    let mut backoff_ms = BACKOFF_MIN_MS;
    while !kthread::should_stop() {
        if repl.queue.lock().paused {
            pause(repl, 1_000);
            continue;
        }
        let Some(addr) = repl.links[link] else {
            link = PRIMARY;
            continue;
        };
        repl.queue.lock().links[link].state = LinkState::Connecting;
        let end = match connect(repl, link, addr) {
            Ok(session) => {
                let end = run_session(&session, link, addr);
                session.fail();
                end
            }
            Err(err) => SessionEnd::Failed(err),
        };
        end_session(repl);
        let mut queue = repl.queue.lock();
        match end {
            SessionEnd::Failed(err) => {
                queue.link_failed(link, err);
                drop(queue);
                pr_warn!(
                    "{} link {} failed (error {})\n",
                    link_name(link),
                    addr,
                    err.to_errno()
                );
                if repl.links[BACKUP].is_some() {
                    link ^= 1;
                }
                pause(repl, backoff_ms);
                backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
                continue;
            }
            SessionEnd::SwitchRequested => {
                queue.links[link].state = LinkState::Down;
                queue.switch_requested = false;
                link ^= 1;
                pr_info!("switching to the {} link on request\n", link_name(link));
            }
            SessionEnd::Rekey => {
                queue.links[link].state = LinkState::Down;
                pr_info!(
                    "volume {}: reconnecting to {} with the reloaded key\n",
                    repl.volume,
                    addr
                );
            }
            SessionEnd::PrimaryBack => {
                queue.links[link].state = LinkState::Down;
                link = PRIMARY;
                pr_info!("primary link answers again; returning to it\n");
            }
            SessionEnd::Stopped | SessionEnd::ResyncNeeded => {
                queue.links[link].state = LinkState::Down;
            }
            SessionEnd::SpillUnreadable => {
                queue.links[link].state = LinkState::Down;
                drop(queue);
                pause(repl, BACKOFF_MAX_MS);
            }
            SessionEnd::TooSlow { stalled_ms } => {
                queue.links[link].state = LinkState::Down;
                queue.slow_drops += 1;
                drop(queue);
                pr_warn!(
                    "volume {}: dropping the session on the {} link: replicad at {} is alive \
                     but acknowledged nothing for {} s (ko_count {}); reconnecting\n",
                    repl.volume,
                    link_name(link),
                    addr,
                    stalled_ms / 1000,
                    repl.ko_count
                );
                pause(repl, BACKOFF_MIN_MS);
            }
        }
        backoff_ms = BACKOFF_MIN_MS;
    }
}

/// Forgets what the ended session sent: the next one resends after what the receiver
/// holds, and the spill thread may take unsent entries again.
fn end_session(repl: &Replication) {
    if let Some(log) = &repl.spill {
        let mut st = log.lock();
        let mut queue = repl.queue.lock();
        log.free_acked(&mut st, &mut queue);
        log.reset_reader(&mut st);
    }
    let mut queue = repl.queue.lock();
    queue.active_link = None;
    queue.receiver_slow = false;
    queue.fifo.rewind();
    queue.sent_local = queue.acked_local;
}

fn link_name(link: usize) -> &'static str {
    if link == PRIMARY {
        "primary"
    } else {
        "backup"
    }
}

/// Waits `ms` milliseconds, or less if the thread is asked to stop or resumed. Writers
/// stranded meanwhile (no link to free queue space) are let go after a while.
fn pause(repl: &Replication, ms: u32) {
    let deadline = now_ms() + i64::from(ms);
    loop {
        repl.release_stranded_writers();
        let left = deadline - now_ms();
        if left <= 0 || kthread::should_stop() {
            return;
        }
        repl.nap(left.min(500) as u32);
    }
}

/// Connects and performs the handshake; on success the FIFO is rewound to resend
/// everything after the receiver's durable sequence.
fn connect(repl: &Arc<Replication>, link: usize, addr: SocketAddr) -> Result<Arc<Session>> {
    let stream = TcpStream::connect(&repl.net, addr, CONNECT_TIMEOUT_MS, SEND_WAIT_MS)?;
    // The handshake's frames are small: a full send buffer here is a dead link.
    let handshake_stall = || Err(timed_out());
    stream.set_recv_timeout(Some(HANDSHAKE_TIMEOUT_MS));
    let unanswered = |err: &Error| {
        if *err == timed_out() {
            pr_warn!(
                "volume {}: replicad at {} accepted the connection but did not answer the \
                 handshake within {} s\n",
                repl.volume,
                addr,
                HANDSHAKE_TIMEOUT_MS / 1000
            );
        }
    };

    // The key as of this attempt: a reload after it asks for another one.
    let psk = {
        let mut queue = repl.queue.lock();
        queue.rekey_requested = false;
        queue.psk.clone()
    };
    if let Some(psk) = &psk {
        authenticate(repl, &stream, addr, psk, repl.encrypt).inspect_err(unanswered)?;
    }

    let (oldest_wire, ours) = {
        let queue = repl.queue.lock();
        let oldest = queue.wire_base.map_or(0, |base| base + queue.oldest_local());
        (oldest, queue.history.current)
    };
    let payload = HelloPayload::new(
        &HistoryBlock {
            history: ours,
            flags: 0,
        },
        &repl.volume,
    );
    let hello = Header::hello(oldest_wire, repl.volume_size, payload.as_bytes());
    stream.send(
        &hello.encode(),
        Body::Copied(payload.as_bytes()),
        false,
        handshake_stall,
    )?;

    let (durable_wire, replica) = recv_welcome(repl, &stream, addr).inspect_err(unanswered)?;
    let theirs = recv_header(&stream).inspect_err(unanswered)?;
    if theirs.kind != FrameKind::Digest || theirs.seq != durable_wire {
        pr_err!(
            "replicad at {} followed its Welcome with {:?} for sequence {}, not its digest\n",
            addr,
            theirs.kind,
            theirs.seq
        );
        return Err(protocol_error());
    }
    let plan = plan_session(repl, addr, durable_wire, &replica, theirs.carried_digest())?;
    if let Some(log) = &repl.spill {
        if plan.whole_on_disk {
            log.begin_whole_copy(repl)?;
        }
        if plan.record_history {
            // The history must be on record before the stream goes on under it.
            log.record_history(repl, plan.history)?;
        }
    }
    if let Anchor::Differs { ours, theirs } = plan.anchor {
        pr_err!(
            "volume {}: REPLICA DIVERGED: replicad at {} holds another history through \
             sequence {} (digest {:#018x}, this device sent {:#018x}); it may lack or misplace \
             writes and needs a resync\n",
            repl.volume,
            addr,
            durable_wire,
            theirs.0,
            ours.0
        );
    }
    repl.acknowledge(plan.stream_from - plan.wire_base);
    // The receiver checks its history against this side's (or takes it, having none).
    stream.send(
        &Header::digest(durable_wire, Some(plan.anchor.digest())).encode(),
        Body::Copied(&[]),
        false,
        handshake_stall,
    )?;
    let block = HistoryBlock {
        history: Some(plan.history),
        flags: 0,
    }
    .encode();
    stream.send(
        &Header::begin(plan.stream_from, plan.resync_bytes, &block).encode(),
        Body::Copied(&block),
        false,
        handshake_stall,
    )?;
    // From here on the sender judges the link; the receiver thread waits for frames.
    stream.set_recv_timeout(None);
    {
        let mut queue = repl.queue.lock();
        queue.active_link = Some(link);
        queue.links[link].state = LinkState::Connected;
        queue.links[link].connects += 1;
    }
    if let Some(bytes) = plan.resync_bytes {
        pr_warn!(
            "volume {}: RESYNC of {} of {} bytes to replicad at {} under history {}: the \
             replica is not a consistent image until it completes\n",
            repl.volume,
            bytes,
            repl.volume_size,
            addr,
            plan.history
        );
    }
    pr_info!(
        "connected to {} ({} link) for volume {}, resuming after sequence {} (history {})\n",
        addr,
        link_name(link),
        repl.volume,
        plan.stream_from,
        plan.history
    );
    Ok(Arc::new(
        Session {
            repl: repl.clone(),
            stream,
            wire_base: plan.wire_base,
            broken: AtomicBool::new(false),
            last_heard_ms: AtomicI64::new(now_ms()),
            replica_resyncing: plan.resync_bytes.is_some() || replica.resyncing,
        },
        GFP_KERNEL,
    )?)
}

/// Reads the receiver's answer to `Hello`: its durable sequence and its replica.
fn recv_welcome(
    repl: &Replication,
    stream: &TcpStream,
    addr: SocketAddr,
) -> Result<(u64, ReplicaView)> {
    let reply = recv_header(stream)?;
    match reply.kind {
        FrameKind::Welcome => {}
        FrameKind::Refuse => {
            let mut reason = [0u8; MAX_REASON_LEN as usize];
            let reason = recv_refusal(stream, &reply, &mut reason)?;
            pr_err!("replicad at {} refused volume {}: {}\n", addr, repl.volume, reason);
            return Err(refused());
        }
        _ => {
            pr_err!("replicad at {} answered the handshake with {:?}\n", addr, reply.kind);
            return Err(protocol_error());
        }
    }
    let mut block = [0u8; HISTORY_BLOCK_LEN];
    stream.recv_exact(&mut block)?;
    let decoded = reply
        .check_payload(&block)
        .ok()
        .and_then(|()| HistoryBlock::decode(&block));
    let Some(block) = decoded else {
        pr_err!("replicad at {} sent a malformed history in its Welcome\n", addr);
        return Err(protocol_error());
    };
    if reply.offset != repl.volume_size {
        pr_err!(
            "replicad at {} has volume size {} bytes, this device {}\n",
            addr,
            reply.offset,
            repl.volume_size
        );
        return Err(protocol_error());
    }
    let replica = ReplicaView {
        history: block.history,
        durable_seq: reply.seq,
        resyncing: block.has(RESYNCING),
    };
    Ok((reply.seq, replica))
}

/// How a session goes on, as the handshake decided.
struct SessionPlan {
    history: History,
    /// The history is new to this device: record it before streaming.
    record_history: bool,
    /// A copy of every region begins: mark them all in the activity log first.
    whole_on_disk: bool,
    /// A resync begins, copying this many bytes.
    resync_bytes: Option<u64>,
    wire_base: u64,
    /// Wire sequence the stream continues after: the receiver's durable sequence, or
    /// past it when a resync starts the stream at this device's oldest entry.
    stream_from: u64,
    anchor: Anchor,
}

/// Decides whether this device continues the replica's history, resyncs it or is
/// refused ([`crate::history::decide`]), and sets the queue up for that.
fn plan_session(
    repl: &Replication,
    addr: SocketAddr,
    durable_wire: u64,
    replica: &ReplicaView,
    their_digest: Option<Digest>,
) -> Result<SessionPlan> {
    let mut queue = repl.queue.lock();
    let oldest = queue.oldest_local();
    let newest = queue.fifo.next_seq() - 1;
    let holds_next = match queue.wire_base {
        // Every entry after the durable sequence is held, and none it claims was
        // never sent by this device.
        Some(base) => {
            durable_wire + 1 >= base + oldest
                && durable_wire <= base + newest
                && queue.sent_digests.newest().map_or(true, |sent| durable_wire <= sent)
        }
        // A device new to the stream takes the receiver's sequence.
        None => true,
    };
    // Under this device's own history the replica can hold no sequence it never sent:
    // a Welcome claiming one comes from a receiver not telling the truth (or a second
    // sender of this history). Continuing would skip the entries in between.
    let sent = queue.sent_digests.newest();
    if let Some(sent) = sent.filter(|&sent| durable_wire > sent) {
        if replica.history.is_some()
            && replica.history == queue.history.current
            && !queue.history.copy_requested
        {
            drop(queue);
            pr_err!(
                "volume {}: replicad at {} claims sequence {} durable, but this device sent \
                 only through {}: protocol error, dropping the link\n",
                repl.volume,
                addr,
                durable_wire,
                sent
            );
            return Err(protocol_error());
        }
    }
    let sender = SenderView {
        history: queue.history.current,
        lost_entries: queue.history.lost_entries,
        holds_next,
        copy_requested: queue.history.copy_requested,
        may_resync_itself: repl.spill.is_some(),
        regions_known: queue.al.is_some() || queue.history.regions_remembered,
        resync_running: queue.history.resync_running,
        // Marks a running copy has still to reach are its own work list, not news.
        dirty_regions: queue.tracking || (queue.dirty.marked() > 0 && queue.copy.plan.finished()),
    };
    let decision = decide(&sender, replica, || History::new(random_uuid()));
    let history = match decision {
        Decision::Refuse(why) => {
            let first = !core::mem::replace(&mut queue.history.refused, true);
            drop(queue);
            if first {
                pr_err!(
                    "volume {}: NOT REPLICATING to replicad at {}: its replica (history {}, \
                     durable through sequence {}) cannot be continued by this device \
                     (history {}): {}; retrying\n",
                    repl.volume,
                    addr,
                    OrNone(replica.history),
                    durable_wire,
                    OrNone(sender.history),
                    why.explain()
                );
            }
            return Err(refused());
        }
        Decision::Continue(history) | Decision::Resync(history, _) => history,
    };
    let resync = matches!(decision, Decision::Resync(..));
    let mut whole_on_disk = false;
    let mut resync_bytes = None;
    let record_history = queue.history.current != Some(history);
    queue.history.refused = false;
    queue.history.current = Some(history);
    let (wire_base, stream_from, anchor) = if resync {
        // Entries the replica already applied are skipped, never sent again under new
        // numbers (an old write must not land over a newer one it holds); when it is
        // past everything held (entries lost in a crash had reached it), numbering
        // jumps forward; when it lacks entries this device no longer holds, the stream
        // starts past its durable sequence, which the resync lets it jump to.
        let mut base = queue.wire_base.unwrap_or(durable_wire);
        if durable_wire > base + newest {
            base = durable_wire - newest;
        }
        let from = durable_wire.max(base + oldest - 1);
        let anchor = Anchor::Adopted(their_digest.unwrap_or(digest::EMPTY));
        queue.wire_base = Some(base);
        queue.sent_digests.forget();
        queue.sent_digests.anchor(from, anchor.digest());
        queue.diverged = false;
        let history_state = &mut queue.history;
        history_state.resyncs += 1;
        history_state.resync_running = true;
        history_state.lost_entries = false;
        // Taken into this resync's plan: what it leaves is in `dirty` as tracked.
        history_state.regions_remembered = false;
        let copy_running = core::mem::take(&mut history_state.copy_requested);
        // New writes are queued again from here on; those tracked are in the regions.
        queue.tracking = false;
        let has_activity_log = queue.al.is_some();
        let QueueState { copy, dirty, .. } = &mut *queue;
        match decision {
            // The initial copy already runs, and nothing was sent yet...
            _ if copy_running && dirty.marked() == 0 => {}
            // ... but writes were tracked meanwhile (no link for long): regions the
            // copy had passed must be copied again, with what it has still to do.
            _ if copy_running => copy.plan.start_regions(dirty, "initial copy"),
            Decision::Resync(_, ResyncScope::DirtyRegions) => copy.plan.start_regions(dirty, "resync"),
            // With an activity log, every region, each cleared once acknowledged, so
            // an interrupted copy resumes.
            _ if has_activity_log => {
                whole_on_disk = true;
                dirty.mark_all();
                copy.plan.start_regions(dirty, "resync");
            }
            _ => {
                dirty.clear_all();
                copy.plan.start_whole(repl.volume_size, "resync");
            }
        }
        resync_bytes = Some(copy.plan.total);
        (base, from, anchor)
    } else {
        let base = *queue.wire_base.get_or_insert(durable_wire);
        let anchor = match (queue.sent_digests.at(durable_wire), their_digest) {
            (Some(ours), Some(theirs)) if ours != theirs => Anchor::Differs { ours, theirs },
            (Some(ours), _) => Anchor::Ours(ours),
            (None, Some(theirs)) => Anchor::Adopted(theirs),
            (None, None) => Anchor::Adopted(digest::EMPTY),
        };
        queue.sent_digests.anchor(durable_wire, anchor.digest());
        queue.diverged |= matches!(anchor, Anchor::Differs { .. });
        (base, durable_wire, anchor)
    };
    queue.fifo.rewind();
    queue.sent_local = stream_from - wire_base;
    Ok(SessionPlan {
        history,
        record_history,
        whole_on_disk,
        resync_bytes,
        wire_base,
        stream_from,
        anchor,
    })
}

/// A history or "none", for log lines.
struct OrNone(Option<History>);

impl core::fmt::Display for OrNone {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(history) => write!(f, "{history}"),
            None => f.write_str("none"),
        }
    }
}

/// Where a session's digests start: the digest through the receiver's durable sequence.
#[derive(Clone, Copy)]
enum Anchor {
    /// This side's own, which the receiver's matches or does not know.
    Ours(Digest),
    /// The receiver's, this side having none there (a new device).
    Adopted(Digest),
    /// Both known and different: the replica has another history.
    Differs { ours: Digest, theirs: Digest },
}

impl Anchor {
    /// The digest the session continues from: this side's whenever it has one.
    fn digest(self) -> Digest {
        match self {
            Self::Ours(digest) | Self::Adopted(digest) | Self::Differs { ours: digest, .. } => digest,
        }
    }
}

/// Reads the reason text of the `Refuse` whose header is `refusal` into `buf`.
pub(crate) fn recv_refusal<'a>(
    stream: &TcpStream,
    refusal: &Header,
    buf: &'a mut [u8; MAX_REASON_LEN as usize],
) -> Result<&'a str> {
    // The header check bounded the length by MAX_REASON_LEN.
    let reason = &mut buf[..refusal.length as usize];
    stream.recv_exact(reason)?;
    Ok(core::str::from_utf8(reason).unwrap_or("(reason not UTF-8)"))
}

pub(crate) fn recv_header(stream: &TcpStream) -> Result<Header> {
    let mut bytes = [0u8; HEADER_LEN];
    stream.recv_exact(&mut bytes)?;
    Header::decode(&bytes).map_err(|err| {
        pr_err!("bad frame from replicad: {}\n", err);
        protocol_error()
    })
}

/// What the sender loop does next.
enum Step {
    /// Send the entry at this local sequence; another follows at once if `more`.
    Send {
        seq: u64,
        entry: Arc<Entry>,
        more: bool,
    },
    /// Read the payload of the queued write at this local sequence back first.
    ReadBack(u64),
    Idle,
    End(SessionEnd),
}

/// Picks the next entry to send: spilled records first, then the memory FIFO, so the
/// stream stays in sequence order. The log stays locked while the FIFO is consulted,
/// so the spill thread cannot move entries between the two meanwhile.
fn next_step(repl: &Replication) -> Step {
    let mut spill = repl.spill.as_deref().map(|log| (log, log.lock()));
    {
        let queue = repl.queue.lock();
        if queue.paused {
            return Step::End(SessionEnd::Stopped);
        }
        if queue.switch_requested {
            return Step::End(SessionEnd::SwitchRequested);
        }
        if queue.rekey_requested {
            return Step::End(SessionEnd::Rekey);
        }
        if queue.tracking {
            // Writes were tracked, not queued (no memory): a new handshake resyncs them.
            return Step::End(SessionEnd::ResyncNeeded);
        }
        if queue.sent_local - queue.acked_local.min(queue.sent_local) >= SEND_WINDOW {
            return Step::Idle;
        }
    }
    if let Some((log, st)) = spill.as_mut() {
        if let Some(step) = next_spilled(repl, log, st) {
            return step;
        }
    }
    let mut queue = repl.queue.lock();
    let expected = queue.sent_local + 1;
    let unsent = queue.fifo.in_flight();
    if queue.fifo.get(unsent).is_some_and(|queued| queued.range.is_some()) {
        return Step::ReadBack(queue.fifo.head_seq() + unsent as u64);
    }
    let Some((seq, queued)) = queue.fifo.next_to_send() else {
        return Step::Idle;
    };
    if seq != expected {
        let entry_seq = seq;
        drop(queue);
        pr_err!(
            "volume {}: next queued entry is sequence {}, expected {}
",
            repl.volume,
            entry_seq,
            expected
        );
        return Step::End(SessionEnd::Failed(protocol_error()));
    }
    let entry = queued.entry.clone();
    queue.sent_local = seq;
    Step::Send {
        seq,
        entry,
        more: queue.has_unsent(SEND_WINDOW),
    }
}

/// The spill log's part of [`next_step`]: `None` when the log has nothing more.
fn next_spilled(repl: &Replication, log: &SpillLog, st: &mut SpillState) -> Option<Step> {
    match log.read_next(st, repl) {
        Ok(NextRecord::Send(seq, entry)) => {
            let mut queue = repl.queue.lock();
            queue.spill_failed = false;
            queue.sent_local = seq;
            Some(Step::Send {
                seq,
                entry,
                more: queue.has_unsent(SEND_WINDOW),
            })
        }
        Ok(NextRecord::WindowFull) => Some(Step::Idle),
        Ok(NextRecord::Exhausted) => None,
        Err(err) => {
            let first = !core::mem::replace(&mut repl.queue.lock().spill_failed, true);
            if first {
                pr_err!(
                    "volume {}: cannot read the spill log (error {}); sending stops until it reads
",
                    repl.volume,
                    err.to_errno()
                );
            }
            // Nothing after the unreadable record may be sent: order comes first.
            Some(Step::End(SessionEnd::SpillUnreadable))
        }
    }
}

/// Streams entries until the connection breaks, the thread stops, or the link changes.
fn run_session(session: &Arc<Session>, link: usize, addr: SocketAddr) -> SessionEnd {
    let receiver = match KThread::spawn(
        kernel::c_str!("arepl_ack"),
        &session.repl.thread_name,
        session.clone(),
        receiver_main,
    ) {
        Ok(receiver) => receiver,
        Err(err) => return SessionEnd::Failed(err),
    };
    let repl = &session.repl;
    let mut next_ping_ms = now_ms() + PING_INTERVAL_MS;
    let mut next_probe_ms = now_ms() + FAILBACK_PROBE_MS;
    let mut digests = DigestPacer::new();
    let mut resync_done = ResyncDoneNotice {
        pending: session.replica_resyncing,
    };
    let mut watch = ReceiverWatch::new(session, addr);
    let end = loop {
        if let Err(end) = watch.judge() {
            break end;
        }
        let now = now_ms();
        if now >= next_ping_ms {
            next_ping_ms = now + PING_INTERVAL_MS;
            if let Err(end) = watch.send(&Header::ping().encode(), &[]) {
                break end;
            }
        }
        if link == BACKUP && now >= next_probe_ms {
            next_probe_ms = now + FAILBACK_PROBE_MS;
            if let Some(primary) = repl.links[PRIMARY] {
                if TcpStream::connect(&repl.net, primary, FAILBACK_PROBE_TIMEOUT_MS, SEND_WAIT_MS)
                    .is_ok() {
                    break SessionEnd::PrimaryBack;
                }
            }
        }

        let step = next_step(repl);
        match step {
            Step::End(end) => break end,
            Step::ReadBack(seq) => {
                // The error is logged; the link is fine, the local device is not.
                if repl.read_back(seq).is_err() {
                    repl.nap(1_000);
                }
            }
            Step::Send { seq, entry, more } => {
                let header = entry.header(session.wire_base + seq, repl.wire_crc);
                if let Err(end) = watch.send_frame(&header.encode(), Body::Payload(&entry), more) {
                    break end;
                }
                let sent = header
                    .entry_fields()
                    .and_then(|fields| repl.queue.lock().sent_digests.sent(&fields));
                let Some(digest) = sent else {
                    pr_err!(
                        "volume {}: sequence {} left the digest record out of order\n",
                        repl.volume,
                        header.seq
                    );
                    break SessionEnd::Failed(protocol_error());
                };
                if let Err(end) = digests.sent(&mut watch, header.seq, digest, now) {
                    break end;
                }
                if let Err(end) = resync_done.check(&mut watch) {
                    break end;
                }
            }
            Step::Idle => {
                // The stream pauses: the receiver checks what it got so far.
                if let Err(end) = digests.flush(&mut watch, now) {
                    break end;
                }
                if let Err(end) = resync_done.check(&mut watch) {
                    break end;
                }
                let mut queue = repl.queue.lock();
                if !queue.has_unsent(SEND_WINDOW)
                    && !queue.paused
                    && !queue.switch_requested
                    && !queue.rekey_requested
                    && !session.broken.load(Ordering::Acquire)
                {
                    // Writers wake the sender only while it waits for them.
                    queue.sender_idle = true;
                    let _ = repl
                        .work
                        .wait_interruptible_timeout(&mut queue, msecs_to_jiffies(100));
                    queue.sender_idle = false;
                }
            }
        }
    };
    session.fail();
    drop(receiver);
    end
}

/// Judges the receiver of one session while the sender streams to it, and sends
/// through it: a send held up by a full buffer judges it again each [`SEND_WAIT_MS`].
struct ReceiverWatch<'a> {
    session: &'a Session,
    addr: SocketAddr,
    liveness: Liveness,
    /// When a slow period was last logged; its end is logged too.
    slow_logged_ms: Option<i64>,
    slow_period_logged: bool,
    judged_ms: i64,
}

impl<'a> ReceiverWatch<'a> {
    fn new(session: &'a Session, addr: SocketAddr) -> Self {
        let acked = session.repl.queue.lock().acked_local;
        Self {
            session,
            addr,
            liveness: Liveness::new(
                now_ms(),
                acked,
                session.stream.transport_acked(),
                session.repl.ko_count,
            ),
            slow_logged_ms: None,
            slow_period_logged: false,
            judged_ms: now_ms(),
        }
    }

    /// Ends the session if the thread stops, the connection broke, the link is dead or
    /// the receiver too slow; says when the receiver turns slow or recovers.
    fn judge(&mut self) -> Result<(), SessionEnd> {
        let session = self.session;
        let repl = &session.repl;
        if kthread::should_stop() {
            return Err(SessionEnd::Stopped);
        }
        if session.broken.load(Ordering::Acquire) {
            return Err(SessionEnd::Failed(Error::from_errno(
                -(kernel::bindings::ECONNRESET as i32),
            )));
        }
        let now = now_ms();
        if now - self.judged_ms < JUDGE_INTERVAL_MS {
            return Ok(());
        }
        self.judged_ms = now;
        let (acked_seq, sent_seq) = {
            let queue = repl.queue.lock();
            (queue.acked_local, queue.sent_local)
        };
        let verdict = self.liveness.check(&Observation {
            now_ms: now,
            heard_ms: session.last_heard_ms.load(Ordering::Acquire),
            acked_seq,
            sent_seq,
            transport_acked_bytes: session.stream.transport_acked(),
        });
        match verdict {
            Verdict::Alive | Verdict::Slow => {}
            Verdict::TurnedSlow { stalled_ms } => {
                repl.queue.lock().receiver_slow = true;
                self.slow_period_logged = self
                    .slow_logged_ms
                    .map_or(true, |logged| now - logged >= SLOW_LOG_INTERVAL_MS);
                if !self.slow_period_logged {
                    return Ok(());
                }
                self.slow_logged_ms = Some(now);
                pr_warn!(
                    "volume {}: replicad at {} is slow: nothing acknowledged for {} s, but it \
                     is alive; the link stays up and sending waits (ko_count {})\n",
                    repl.volume,
                    self.addr,
                    stalled_ms / 1000,
                    repl.ko_count
                );
            }
            Verdict::Recovered { slow_ms } => {
                repl.queue.lock().receiver_slow = false;
                if !core::mem::take(&mut self.slow_period_logged) {
                    return Ok(());
                }
                pr_info!(
                    "volume {}: replicad at {} acknowledges again after {} s\n",
                    repl.volume,
                    self.addr,
                    slow_ms / 1000
                );
            }
            Verdict::Gone { .. } => return Err(SessionEnd::Failed(timed_out())),
            Verdict::TooSlow { stalled_ms } => return Err(SessionEnd::TooSlow { stalled_ms }),
        }
        Ok(())
    }

    /// Sends one frame, judging the receiver whenever the send buffer stays full.
    fn send(&mut self, head: &[u8], body: &[u8]) -> Result<(), SessionEnd> {
        self.send_frame(head, Body::Copied(body), false)
    }

    /// [`Self::send`], saying whether another frame follows at once (`more`).
    fn send_frame(&mut self, head: &[u8], body: Body<'_>, more: bool) -> Result<(), SessionEnd> {
        let mut end = None;
        let session = self.session;
        let sent = session.stream.send(head, body, more, || {
            self.judge().map_err(|stop| {
                end = Some(stop);
                timed_out()
            })
        });
        match (sent, end) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(end)) => Err(end),
            (Err(err), None) => Err(SessionEnd::Failed(err)),
        }
    }
}

/// Sends a `Digest` frame after every [`DIGEST_EVERY_ENTRIES`] entries, every
/// [`DIGEST_INTERVAL_MS`] while entries flow, and when the stream pauses.
struct DigestPacer {
    /// The newest entry sent and its digest, if no `Digest` frame covers it yet.
    pending: Option<(u64, Digest)>,
    entries_since: u64,
    last_sent_ms: i64,
}

impl DigestPacer {
    fn new() -> Self {
        Self {
            pending: None,
            entries_since: 0,
            last_sent_ms: now_ms(),
        }
    }

    /// Entry `seq` was sent; its digest is `digest`.
    fn sent(
        &mut self,
        watch: &mut ReceiverWatch<'_>,
        seq: u64,
        digest: Digest,
        now: i64,
    ) -> Result<(), SessionEnd> {
        self.pending = Some((seq, digest));
        self.entries_since += 1;
        if self.entries_since >= DIGEST_EVERY_ENTRIES || now - self.last_sent_ms >= DIGEST_INTERVAL_MS
        {
            return self.flush(watch, now);
        }
        Ok(())
    }

    /// Sends the pending digest, if any.
    fn flush(&mut self, watch: &mut ReceiverWatch<'_>, now: i64) -> Result<(), SessionEnd> {
        if let Some((seq, digest)) = self.pending.take() {
            watch.send(&Header::digest(seq, Some(digest)).encode(), &[])?;
            self.entries_since = 0;
            self.last_sent_ms = now;
        }
        Ok(())
    }
}

/// Counts a verify's mismatch report (and queues the repair, if asked for); false if
/// the report is for no check sent in this session, a protocol error.
fn take_mismatch(session: &Session, header: &Header) -> bool {
    let repl = &session.repl;
    let (sent_local, acked_local) = {
        let queue = repl.queue.lock();
        (queue.sent_local, queue.acked_local)
    };
    let length = u64::from(header.length);
    let sent = match header.seq.checked_sub(session.wire_base) {
        Some(local) => local > acked_local && local <= sent_local,
        None => false,
    };
    let in_volume = header
        .range_end()
        .is_some_and(|end| end <= repl.volume_size);
    if !sent || !in_volume {
        pr_err!(
            "volume {}: replicad reported a verify mismatch at sequence {} (bytes {}..{}) \
             for no check in flight\n",
            repl.volume,
            header.seq,
            header.offset,
            header.offset.saturating_add(length)
        );
        return false;
    }
    let repaired = repl.verify_mismatch(header.offset, length);
    let repair_asked = repl.queue.lock().verify.repair;
    let then = match (repaired, repair_asked) {
        (true, _) => "; sending them again",
        (false, true) => "; too many to repair at once: verify again",
        (false, false) => "",
    };
    pr_warn!(
        "volume {}: verify: bytes {}..{} differ on the replica (sequence {}){}\n",
        repl.volume,
        header.offset,
        header.offset + length,
        header.seq,
        then
    );
    true
}

/// Tells a resyncing replica, once, that the resync's last entry has been sent: the
/// copy has queued every chunk and the sender is past the last one.
struct ResyncDoneNotice {
    pending: bool,
}

impl ResyncDoneNotice {
    fn check(&mut self, watch: &mut ReceiverWatch<'_>) -> Result<(), SessionEnd> {
        if !self.pending {
            return Ok(());
        }
        let last = {
            let queue = watch.session.repl.queue.lock();
            let copy = &queue.copy;
            let sent = queue.history.resync_running
                && copy.plan.finished()
                && queue.sent_local >= copy.plan.last_seq;
            sent.then_some(copy.plan.last_seq)
        };
        let Some(last) = last else {
            return Ok(());
        };
        self.pending = false;
        let last_wire = watch.session.wire_base + last;
        watch.send(&Header::resync_done(last_wire).encode(), &[])
    }
}

/// Body of a connection's receiver thread: applies cumulative acknowledgements and
/// the verify's mismatch reports.
fn receiver_main(session: &Arc<Session>) {
    while !kthread::should_stop() && !session.broken.load(Ordering::Acquire) {
        let header = match recv_header(&session.stream) {
            Ok(header) => header,
            Err(_) => break,
        };
        session.last_heard_ms.store(now_ms(), Ordering::Release);
        if header.kind == FrameKind::Mismatch {
            if !take_mismatch(session, &header) {
                break;
            }
            continue;
        }
        if header.kind != FrameKind::Ack {
            pr_err!("unexpected {:?} frame from replicad\n", header.kind);
            break;
        }
        let repl = &session.repl;
        if let Some(from) = header.diverged_from() {
            if !core::mem::replace(&mut repl.queue.lock().diverged, true) {
                pr_err!(
                    "volume {}: REPLICA DIVERGED: replicad found that the replica may differ \
                     from this volume from sequence {} on; it needs a resync\n",
                    repl.volume,
                    from
                );
            }
        }
        let sent_local = repl.queue.lock().sent_local;
        match header.seq.checked_sub(session.wire_base) {
            Some(local) if local <= sent_local => repl.acknowledge(local),
            _ => {
                pr_err!(
                    "replicad acknowledged sequence {} which was never sent\n",
                    header.seq
                );
                break;
            }
        }
    }
    session.fail();
}
