// SPDX-License-Identifier: GPL-2.0

//! State shared by the write path, the sender and the acknowledgement receiver: the FIFO,
//! its byte budget, sequence mapping to the wire, link state and counters.

use core::net::SocketAddr;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kernel::{new_condvar, new_spinlock};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, CondVar, SpinLock};
use kernel::time::Ktime;

use crate::bio::DeferredBios;
use crate::blockio::BlockIo;
use crate::claim::Remembered;
use crate::copy_plan::{Chunk, CopyPlan};
use crate::digest::SentDigests;
use crate::history::History;
use crate::entry::{Entry, EntrySlots, Queued};
use crate::fifo::{slots_for_budget, Budget, Fifo};
use crate::range_table::{Blocked, Hold, RangeId, RangeNode, RangeTable};
use crate::net::NetNamespace;
use crate::new_irq_spinlock;
use crate::rate::RecentRate;
use crate::regions::{words_for, DirtyRegions};
use crate::activity_log::{ActivityTracker, AlGeometry};
use crate::auth::Psk;
use crate::status::{ActiveLink, Counters, LinkReport, LinkState, Mode, Status};
use crate::spill_log::{Resume, SpillLog};
use crate::sync::IrqSpinLock;
use crate::table::{InitialSync, ReplicationConfig, SpillFullPolicy, VolumeName};
use crate::verify::{RepairQueue, VerifyPlan};
use crate::write_path::PendingEntries;

/// Writers waiting for queue space with no link up and no spill device go on after
/// this long, their regions tracked for a resync: production must not stall on an
/// outage.
const STRANDED_WRITERS_MS: i64 = 10_000;
/// Local writes in flight at once, at most; more wait (block queues hold far fewer).
const MAX_WRITES_IN_FLIGHT: usize = 1024;
/// How long a thread waits before reading back a payload again after a read failed.
const READ_BACK_RETRY_MS: u32 = 100;
/// Sent-entry digests kept: twice the send window, so the receiver's durable sequence,
/// never older than the oldest unacknowledged entry, is always among them.
const DIGESTS_KEPT: usize = 2 * crate::spill_log::READ_WINDOW;

/// Why a range cannot be held before a payload on the local device is read back.
pub(crate) enum ReadFirst {
    /// The payload of queued write `seq` overlaps the range.
    Overlapping(u64),
    /// The range table is full: any payload read back frees a node.
    Any,
}

/// Everything under the queue lock.
pub(crate) struct QueueState {
    pub(crate) fifo: Fifo<EntrySlots>,
    /// Ranges of writes in flight and of queued payloads still on the local device.
    pub(crate) ranges: RangeTable<KVVec<RangeNode>>,
    pub(crate) budget: Budget,
    /// Wire sequence = `wire_base` + local sequence; learned at the first handshake, when
    /// the receiver says how far it is durable.
    pub(crate) wire_base: Option<u64>,
    /// Highest local sequence acknowledged (0: none).
    pub(crate) acked_local: u64,
    /// Highest local sequence sent in the current session.
    pub(crate) sent_local: u64,
    /// Writers waiting for queue space; the spill thread acts on them.
    pub(crate) writers_waiting: u32,
    /// The sender waits for entries: a queued write wakes it (else writers wake no
    /// thread, which is dear for small writes).
    pub(crate) sender_idle: bool,
    /// The read-ahead thread waits for payloads to read back: a queued write whose
    /// payload stays on the local device wakes it (`payload_queued`).
    pub(crate) reader_idle: bool,
    /// The spill log's figures, kept here for status and policy.
    pub(crate) spill: SpillFigures,
    pub(crate) has_spill: bool,
    /// The oldest entry does not fit in the spill log.
    pub(crate) spill_full: bool,
    /// Spill I/O failed (details in the kernel log); retried.
    pub(crate) spill_failed: bool,
    /// Index into `links` of the link carrying the stream, if a session is up.
    pub(crate) active_link: Option<usize>,
    pub(crate) links: [LinkStats; 2],
    /// Set by `dmsetup message ... pause`: no session until `resume`.
    pub(crate) paused: bool,
    /// Set by `dmsetup message ... switch-link`: end the session, use the other link.
    pub(crate) switch_requested: bool,
    /// The pre-shared key links prove (table `key`), as last read from the keyring.
    pub(crate) psk: Option<Psk>,
    /// Set by `dmsetup message ... key reload`: end the session, reconnect with `psk`.
    pub(crate) rekey_requested: bool,
    pub(crate) write_errors: u64,
    pub(crate) copy: CopyProgress,
    /// Replication digests of the entries sent, by wire sequence, for the handshake's
    /// check and the `Digest` frames.
    pub(crate) sent_digests: SentDigests<KVVec<u64>>,
    /// Set once a digest check found the replica's history different from this side's
    /// (here or at the receiver): the replica is no consistent image until a resync.
    pub(crate) diverged: bool,
    /// The receiver is alive but acknowledged nothing for a while (see `sender`).
    pub(crate) receiver_slow: bool,
    /// Sessions dropped because a live receiver acknowledged nothing for `ko_count`
    /// periods.
    pub(crate) slow_drops: u64,
    pub(crate) history: HistoryState,
    /// Regions whose writes were not queued (see `tracking`): a resync copies them.
    pub(crate) dirty: DirtyRegions<KVVec<u64>>,
    /// Writes are not queued: the queue was full with no way out for too long, or
    /// memory for an entry could not be had. Their regions are marked in `dirty`
    /// instead, until a handshake starts the resync of those regions.
    pub(crate) tracking: bool,
    /// Since when writers wait for queue space while no link is up.
    pub(crate) stranded_since_ms: Option<i64>,
    /// The activity log's bookkeeping, with a spill device of format 2.
    pub(crate) al: Option<ActivityTracker<KVVec<u64>, KVVec<u32>>>,
    /// The last activity log write failed (kernel log): writers stop waiting for it.
    pub(crate) activity_log_failed: bool,
    /// The online verify (`dmsetup message ... verify`), after any copy.
    pub(crate) verify: VerifyPlan,
    /// Chunks the receiver found different, to be sent again (`verify repair`).
    pub(crate) repairs: RepairQueue,
}

/// The replication history this device continues, and what it can prove about it.
#[derive(Clone, Copy, Default)]
pub(crate) struct HistoryState {
    /// From the spill superblock or a previous table of the volume, then from each
    /// handshake's decision.
    pub(crate) current: Option<History>,
    /// Entries of `current` were lost (crash, or entries dropped): it cannot be
    /// continued without a resync.
    pub(crate) lost_entries: bool,
    /// The table asks for a copy of the whole volume (`sync:full`), not yet begun
    /// under a history.
    pub(crate) copy_requested: bool,
    /// A resync under `current` began in this lifetime.
    pub(crate) resync_running: bool,
    /// The last handshake was refused for the history (reason in the kernel log).
    pub(crate) refused: bool,
    /// Resyncs begun.
    pub(crate) resyncs: u64,
    /// The dirty regions are what the volume's previous table left of its copy: all the
    /// replica lacks, as an activity log's marks would say.
    pub(crate) regions_remembered: bool,
}

/// The copy thread's plan (initial copy or resync) and how fast it goes.
#[derive(Clone, Copy, Default)]
pub(crate) struct CopyProgress {
    pub(crate) plan: CopyPlan,
    /// Set once the table is live; no copying before.
    pub(crate) live: bool,
    /// How fast the plan's queued bytes grew recently.
    pub(crate) rate: RecentRate,
}

/// What the copy thread does next (see [`Replication::next_copy_chunk`]).
pub(crate) enum CopyNext {
    /// Read and queue this chunk.
    Chunk(Chunk),
    /// The copy just queued its last chunk: its purpose and size, for the log.
    Finished(&'static str, u64),
    /// Send bytes `[offset, offset + len)` again: the receiver found them different.
    Repair(u64, u64),
    /// Queue the check of bytes `[offset, offset + len)` (online verify).
    Verify(u64, u64),
    /// Nothing to copy.
    Idle,
}

/// What the spill log holds.
#[derive(Clone, Copy, Default)]
pub(crate) struct SpillFigures {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
    pub(crate) capacity: u64,
    pub(crate) head_seq: u64,
    pub(crate) tail_seq: u64,
}

/// Per-link state and counters.
#[derive(Clone, Copy, Default)]
pub(crate) struct LinkStats {
    pub(crate) state: LinkState,
    pub(crate) connects: u64,
    pub(crate) errors: u64,
    /// errno of the last failure, positive.
    pub(crate) last_error: u64,
}

impl QueueState {
    /// Whether a verify runs: checks to queue or to be acknowledged, or repairs to send.
    pub(crate) fn verifying(&self) -> bool {
        self.verify.running(self.acked_local) || !self.repairs.is_empty()
    }

    /// An entry leaves the FIFO: its payload, if still on the local device, no longer
    /// keeps writes from its range (notify `range_freed`).
    pub(crate) fn release_payload_range(&mut self, queued: &Queued) {
        if let Some(id) = queued.range {
            self.ranges.release(id);
        }
    }

    /// An entry leaves memory (acknowledged, or committed to the spill log): it no
    /// longer holds its regions in the activity log.
    pub(crate) fn release_activity(&mut self, entry: &Entry) {
        if let (Some(al), Some((offset, len))) = (self.al.as_mut(), entry.range()) {
            al.release(offset, len);
        }
    }

    /// Local sequence of the oldest entry not yet acknowledged, spilled or in memory.
    pub(crate) fn oldest_local(&self) -> u64 {
        if self.spill.entries > 0 {
            self.spill.head_seq
        } else {
            self.fifo.head_seq()
        }
    }

    /// Whether entries should move from memory to the spill log now: the memory queue
    /// is (nearly) full, and no link is taking it, or the log is still ahead of it.
    pub(crate) fn wants_spill(&self) -> bool {
        let nearly_full = self.budget.reserved() * 4 >= self.budget.capacity() * 3;
        self.has_spill
            && !self.fifo.is_empty()
            && self.fifo.in_flight() == 0
            && (self.active_link.is_none() || self.spill.entries > 0)
            && (self.writers_waiting > 0 || nearly_full)
    }

    /// Local sequences of the queued entries not handed to the sender yet, `[from, end)`.
    fn unsent_seqs(&self) -> (u64, u64) {
        let from = self.fifo.head_seq() + self.fifo.in_flight() as u64;
        (from, self.fifo.next_seq())
    }

    /// Whether the sender has something it may send now.
    pub(crate) fn has_unsent(&self, window: u64) -> bool {
        if self.sent_local - self.acked_local.min(self.sent_local) >= window {
            return false;
        }
        let spill_unread = self.spill.entries > 0 && self.sent_local + 1 < self.spill.tail_seq;
        spill_unread || self.fifo.in_flight() < self.fifo.len()
    }

    /// Records a failure on link `index`.
    pub(crate) fn link_failed(&mut self, index: usize, err: Error) {
        let link = &mut self.links[index];
        link.errors += 1;
        link.last_error = err.to_errno().unsigned_abs().into();
        link.state = LinkState::Down;
        if self.active_link == Some(index) {
            self.active_link = None;
        }
    }
}

/// Shared replication state of one `arepl` device.
#[pin_data]
pub(crate) struct Replication {
    #[pin]
    pub(crate) queue: IrqSpinLock<QueueState>,
    /// Signalled when budget is released; writers wait on it.
    #[pin]
    pub(crate) space_freed: CondVar,
    /// Signalled when entries join the FIFO or the link changes; the sender waits on it.
    #[pin]
    pub(crate) work: CondVar,
    /// Signalled when the spill thread wrote activity log marks; writers wait on it.
    #[pin]
    pub(crate) activity_written: CondVar,
    /// Signalled when a range leaves `QueueState::ranges` or changes from I/O in
    /// flight to a payload on disk.
    #[pin]
    pub(crate) range_freed: CondVar,
    /// Writes that would overwrite a queued payload still on the local device, waiting
    /// for the copy-on-write thread (`write_path`).
    #[pin]
    pub(crate) deferred: SpinLock<DeferredBios<PendingEntries>>,
    /// Signalled when a write is deferred.
    #[pin]
    pub(crate) deferred_added: CondVar,
    /// Writes deferred so that payloads are read back first (status `cow_writes`).
    pub(crate) cow_writes: AtomicU64,
    /// Writes whose payload was copied in map (status `map_copies`).
    pub(crate) map_copies: AtomicU64,
    /// Where the last write mapped ended: a write starting there continues a stream.
    pub(crate) last_write_end: AtomicU64,
    /// Whether the device's writers honour stable writes (set at construction): only
    /// then may a payload be copied from a write's pages in map.
    pub(crate) writes_stable: AtomicBool,
    /// Signalled when a write's payload joins the queue on the local device while the
    /// read-ahead thread waits for one.
    #[pin]
    pub(crate) payload_queued: CondVar,
    pub(crate) net: NetNamespace,
    /// The spill log, if the table names a spill device.
    pub(crate) spill: Option<Pin<KBox<SpillLog>>>,
    /// The local device, read by the initial copy and resyncs.
    pub(crate) copy_source: BlockIo,
    pub(crate) links: [Option<SocketAddr>; 2],
    pub(crate) volume: VolumeName,
    pub(crate) volume_size: u64,
    /// Periods a live but silent receiver keeps its session (table `ko_count`).
    pub(crate) ko_count: u32,
    /// Whether a full spill log stops queueing (table `on_spill_full`).
    pub(crate) on_spill_full: SpillFullPolicy,
    /// Copy reads per second at most, in MiB; 0: unlimited (table `resync_mbps`).
    pub(crate) resync_mbps: u32,
    /// Whether write frames carry their payload's checksum (table `wire_crc`).
    pub(crate) wire_crc: bool,
    /// Whether an authenticated link is encrypted (table `encrypt`).
    pub(crate) encrypt: bool,
    /// The volume name as a C string, for kernel thread names (`arepl_tx/<volume>`).
    pub(crate) thread_name: CString,
}

/// The activity log geometry of a spill device being opened, if it has one.
fn repl_spill_al(spill: &Option<Pin<KBox<SpillLog>>>) -> Option<AlGeometry> {
    spill.as_ref().and_then(|log| log.al)
}

impl Replication {
    pub(crate) fn new(
        config: &ReplicationConfig,
        volume: VolumeName,
        volume_size: u64,
        spill: Option<(Pin<KBox<SpillLog>>, Resume)>,
        remembered: Option<Remembered>,
        copy_source: BlockIo,
        psk: Option<Psk>,
    ) -> Result<Arc<Self>> {
        let (spill, mut resume) = match spill {
            Some((log, resume)) => (Some(log), Some(resume)),
            None => (None, None),
        };
        let first_seq = resume.as_ref().map_or(1, |r| r.first_seq);
        // A spill device's record comes first; without one, what the volume's
        // previous table left while the module stayed loaded.
        let (history, lost_entries, wire_base) = match (&resume, remembered) {
            (Some(r), _) => (r.history, r.lost_entries, r.wire_base),
            (None, Some(r)) => (Some(r.history), false, Some(r.last_wire_seq)),
            (None, None) => (None, false, None),
        };
        let copy_from = remembered.filter(|_| resume.is_none()).and_then(|r| r.copy_from);
        let region_kb = match repl_spill_al(&spill) {
            Some(al) => al.region_kb,
            None => config.region_kb,
        };
        let region_bytes = u64::from(region_kb) << 10;
        let new_set = || -> Result<DirtyRegions<KVVec<u64>>> {
            let words = KVVec::from_elem(0u64, words_for(volume_size, region_bytes), GFP_KERNEL)?;
            DirtyRegions::new(words, volume_size, region_bytes).ok_or(EINVAL)
        };
        // The activity log's marks are what the replica may lack: a resync's work list.
        let (mut dirty, al, copy_pending) = match resume.as_mut().and_then(|r| r.activity_log.take()) {
            Some(marks) => {
                let mut dirty = new_set()?;
                for index in 0..words_for(volume_size, region_bytes) {
                    dirty.set_word(index, marks.word(index));
                }
                let holds = KVVec::from_elem(0u32, marks.regions() as usize, GFP_KERNEL)?;
                let al = ActivityTracker::new(marks, new_set()?, holds).ok_or(EINVAL)?;
                (dirty, Some(al), resume.as_ref().is_some_and(|r| r.copy_pending))
            }
            None => (new_set()?, None, false),
        };
        // What the previous table's copy had left (whatever this table asks for: the
        // replica lacks it).
        if let Some(from) = copy_from {
            dirty.mark_range(from, volume_size.saturating_sub(from));
        }
        // A copy interrupted under the history on record resumes from its regions.
        let copy_requested = config.initial_sync == InitialSync::Full
            && !(copy_pending && history.is_some())
            && copy_from.is_none();
        let mut plan = CopyPlan::idle();
        if copy_requested && al.is_some() {
            dirty.mark_all();
            plan.start_regions(&mut dirty, "initial copy");
        } else if copy_requested {
            plan.start_whole(volume_size, "initial copy");
        }
        let capacity = u64::from(config.queue_mb) << 20;
        let thread_name = CString::try_from_fmt(format_args!("{}", volume))?;
        let slots = EntrySlots::new(slots_for_budget(capacity))?;
        // Payloads left on the local device: one per 4 KiB write of a full queue (more,
        // smaller ones are read back early), plus a range per write in flight and the
        // copy's.
        let range_count = capacity / Budget::cost(4096) + MAX_WRITES_IN_FLIGHT as u64 + 1;
        let ranges = KVVec::from_elem(RangeNode::FREE, range_count as usize, GFP_KERNEL)?;
        let digests = KVVec::from_elem(0u64, DIGESTS_KEPT, GFP_KERNEL)?;
        Arc::pin_init(
            pin_init!(Self {
                queue <- new_irq_spinlock!(
                    QueueState {
                        fifo: Fifo::starting_at(slots, first_seq),
                        ranges: RangeTable::new(ranges),
                        budget: Budget::new(capacity),
                        wire_base,
                        acked_local: 0,
                        sent_local: 0,
                        writers_waiting: 0,
                        sender_idle: false,
                        reader_idle: false,
                        spill: resume.as_ref().map(|r| r.figures).unwrap_or_default(),
                        has_spill: resume.is_some(),
                        spill_full: false,
                        spill_failed: false,
                        active_link: None,
                        links: [
                            LinkStats::default(),
                            LinkStats {
                                state: if config.backup.is_some() {
                                    LinkState::Down
                                } else {
                                    LinkState::Absent
                                },
                                ..LinkStats::default()
                            },
                        ],
                        paused: false,
                        switch_requested: false,
                        psk,
                        rekey_requested: false,
                        write_errors: 0,
                        copy: CopyProgress {
                            plan,
                            ..CopyProgress::default()
                        },
                        dirty,
                        tracking: false,
                        stranded_since_ms: None,
                        al,
                        activity_log_failed: false,
                        verify: VerifyPlan::idle(),
                        repairs: RepairQueue::default(),
                        sent_digests: SentDigests::new(digests),
                        diverged: false,
                        receiver_slow: false,
                        slow_drops: 0,
                        history: HistoryState {
                            current: history,
                            lost_entries,
                            copy_requested,
                            regions_remembered: copy_from.is_some(),
                            ..HistoryState::default()
                        },
                    },
                    "arepl_queue"
                ),
                space_freed <- new_condvar!("arepl_space"),
                work <- new_condvar!("arepl_work"),
                activity_written <- new_condvar!("arepl_activity"),
                range_freed <- new_condvar!("arepl_range"),
                deferred <- new_spinlock!(DeferredBios::new(), "arepl_deferred"),
                deferred_added <- new_condvar!("arepl_deferred"),
                payload_queued <- new_condvar!("arepl_payload_queued"),
                cow_writes: AtomicU64::new(0),
                map_copies: AtomicU64::new(0),
                last_write_end: AtomicU64::new(0),
                writes_stable: AtomicBool::new(false),
                net: NetNamespace::current(),
                spill,
                copy_source,
                links: [Some(config.primary), config.backup],
                volume,
                volume_size,
                ko_count: config.ko_count,
                on_spill_full: config.on_spill_full,
                resync_mbps: config.resync_mbps,
                wire_crc: config.wire_crc,
                encrypt: config.encrypt,
                thread_name,
            }),
            GFP_KERNEL,
        )
    }

    /// Reads back the payloads still only on the local device among the oldest queued
    /// entries, as far as `max_entries` entries or `max_bytes` of payload go (the spill
    /// log writes them).
    pub(crate) fn read_back_oldest(&self, max_entries: usize, max_bytes: u64) -> Result {
        let mut bytes = 0;
        for index in 0..max_entries {
            let on_disk = {
                let mut queue = self.queue.lock();
                let head_seq = queue.fifo.head_seq();
                let Some(queued) = queue.fifo.get(index) else {
                    break;
                };
                bytes += queued.entry.payload_len();
                if bytes > max_bytes {
                    break;
                }
                queued.range.map(|_| head_seq + index as u64)
            };
            if let Some(seq) = on_disk {
                self.read_back(seq)?;
            }
        }
        Ok(())
    }

    /// Holds the byte range `[start, end)` for a write about to be issued (or a copy's
    /// read), waiting while overlapping I/O is in flight. `Err`: a payload still on the
    /// local device must be read back first (see [`Self::hold_range`]).
    pub(crate) fn try_hold_range(&self, start: u64, end: u64) -> Result<RangeId, ReadFirst> {
        let mut queue = self.queue.lock();
        loop {
            match queue.ranges.try_hold(start, end, Hold::Busy) {
                Ok(id) => return Ok(id),
                Err(Blocked::OnDisk(seq)) => return Err(ReadFirst::Overlapping(seq)),
                Err(Blocked::Full) => return Err(ReadFirst::Any),
                Err(Blocked::Wait) => self.range_freed.wait(&mut queue),
            }
        }
    }

    /// [`Self::try_hold_range`] for a thread that may do I/O: payloads in the way are
    /// read back (copy-on-write) until the range can be held.
    pub(crate) fn hold_range(&self, start: u64, end: u64) -> RangeId {
        loop {
            let read = match self.try_hold_range(start, end) {
                Ok(id) => return id,
                Err(ReadFirst::Overlapping(seq)) => self.read_back(seq),
                Err(ReadFirst::Any) => match self.read_back_next_unsent() {
                    // Every node holds I/O in flight: wait for one to end.
                    Ok(false) => {
                        let mut queue = self.queue.lock();
                        let _ = self.range_freed.wait_interruptible_timeout(
                            &mut queue,
                            kernel::time::msecs_to_jiffies(READ_BACK_RETRY_MS),
                        );
                        Ok(())
                    }
                    read => read.map(|_| ()),
                },
            };
            if read.is_err() {
                self.nap(READ_BACK_RETRY_MS);
            }
        }
    }

    /// The next unsent payload to read back while a session streams, looking on from
    /// local sequence `cursor` (advanced past what it looked at); `None` when every
    /// queued payload is in memory, or no session streams.
    pub(crate) fn next_to_read_ahead(&self, cursor: &mut u64) -> Option<u64> {
        self.next_on_disk(cursor, |queue| {
            queue.active_link?;
            Some(queue.unsent_seqs())
        })
    }

    /// Waits until a write queued after local sequence `cursor` (where the read-ahead
    /// thread looked last) may have left its payload on the local device while a
    /// session streams, or `ms` milliseconds passed.
    pub(crate) fn wait_for_payloads(&self, cursor: u64, ms: u32) {
        let mut queue = self.queue.lock();
        if queue.active_link.is_some() && queue.fifo.next_seq() > cursor {
            return;
        }
        queue.reader_idle = true;
        let _ = self
            .payload_queued
            .wait_interruptible_timeout(&mut queue, kernel::time::msecs_to_jiffies(ms));
        queue.reader_idle = false;
    }

    /// Reads back the first unsent payload still on the local device (the sender
    /// needs it next), freeing its range; false if there is none.
    fn read_back_next_unsent(&self) -> Result<bool> {
        let mut cursor = 0;
        match self.next_on_disk(&mut cursor, |queue| Some(queue.unsent_seqs())) {
            Some(seq) => self.read_back(seq).map(|()| true),
            None => Ok(false),
        }
    }

    /// The first queued write from local sequence `cursor` on whose payload is still
    /// only on the local device, within the sequences `[from, end)` that `bounds` gives
    /// from the queue (`None`: look no further); `cursor` moves past what was looked at.
    fn next_on_disk(
        &self,
        cursor: &mut u64,
        bounds: impl Fn(&QueueState) -> Option<(u64, u64)>,
    ) -> Option<u64> {
        loop {
            // One entry per lock hold: no scan with interrupts off.
            let mut queue = self.queue.lock();
            let (from, end) = bounds(&queue)?;
            *cursor = (*cursor).max(from).max(queue.fifo.head_seq());
            if *cursor >= end {
                return None;
            }
            let seq = *cursor;
            let index = (seq - queue.fifo.head_seq()) as usize;
            let on_disk = queue.fifo.get(index)?.range.is_some();
            *cursor += 1;
            if on_disk {
                return Some(seq);
            }
        }
    }

    /// Releases a range held for I/O; may run in interrupt context.
    pub(crate) fn release_range(&self, id: RangeId) {
        self.queue.lock().ranges.release(id);
        self.range_freed.notify_all();
    }

    /// Reads back the payload of queued write `seq` if it is still only on the local
    /// device, so that it can be sent or spilled, or a later write overwrite its range.
    /// Errors are logged.
    pub(crate) fn read_back(&self, seq: u64) -> Result {
        let (id, entry) = {
            let mut queue = self.queue.lock();
            loop {
                let index = seq.checked_sub(queue.fifo.head_seq()).ok_or(EINVAL);
                let Some(queued) = index.ok().and_then(|i| queue.fifo.get(i as usize)) else {
                    return Ok(()); // Gone from memory: nothing to keep.
                };
                let Some(id) = queued.range else {
                    return Ok(()); // Read back already.
                };
                let entry = queued.entry.clone();
                match queue.ranges.hold(id) {
                    Hold::OnDisk(_) => {
                        queue.ranges.set_hold(id, Hold::Reading(seq));
                        break (id, entry);
                    }
                    // Another thread reads it: wait for that.
                    _ => self.range_freed.wait(&mut queue),
                }
            }
        };
        let read = self
            .copy_source
            .read_payload(entry.offset(), entry.payload_len() as usize)
            .and_then(|data| entry.with_payload(data));
        let mut guard = self.queue.lock();
        let queue = &mut *guard;
        let slot = match seq.checked_sub(queue.fifo.head_seq()) {
            Some(index) => queue.fifo.get_mut(index as usize),
            None => None,
        };
        let replaced = match (read, slot) {
            (Ok(with_payload), Some(queued)) => {
                queued.range = None;
                queue.ranges.release(id);
                Ok(core::mem::replace(&mut queued.entry, with_payload))
            }
            (Err(err), _) => {
                queue.ranges.set_hold(id, Hold::OnDisk(seq));
                Err(err)
            }
            // Only a read-back moves an entry with its range out of the FIFO.
            (Ok(_), None) => Err(EINVAL),
        };
        drop(guard);
        self.range_freed.notify_all();
        match replaced {
            Ok(on_disk) => {
                drop(on_disk);
                Ok(())
            }
            Err(err) => {
                pr_err!(
                    "volume {}: cannot read back the payload of queued write {} at bytes \
                     {}..{} of the local device (error {}); retrying\n",
                    self.volume,
                    seq,
                    entry.offset(),
                    entry.offset() + entry.payload_len(),
                    err.to_errno()
                );
                Err(err)
            }
        }
    }

    /// Reserves budget for an entry costing `cost` bytes, waiting while the queue is
    /// full; false when writes are tracked instead (see [`QueueState::tracking`]): then
    /// the write's byte range `range` is marked dirty and nothing is to be queued.
    pub(crate) fn reserve(&self, cost: u64, range: Option<(u64, u64)>) -> bool {
        let mut queue = self.queue.lock();
        loop {
            if queue.tracking {
                if let Some((start, end)) = range {
                    queue.dirty.mark_range(start, end - start);
                }
                return false;
            }
            if queue.budget.try_reserve(cost) {
                return true;
            }
            // The spill thread makes room when no link can; the sender thread stops
            // the wait (see `release_stranded_writers`) when nothing can.
            queue.writers_waiting += 1;
            self.work.notify_all();
            self.space_freed.wait(&mut queue);
            queue.writers_waiting -= 1;
        }
    }

    /// Marks the regions of bytes `[start, end)` in the activity log (on disk, if they
    /// are not yet) before a write to them may go on; true if it holds them then, to be
    /// released when its entry leaves memory, or at once if it is not queued.
    pub(crate) fn hold_activity(&self, start: u64, end: u64) -> bool {
        let mut queue = self.queue.lock();
        let Some(al) = queue.al.as_mut() else {
            return false;
        };
        if al.hold(start, end - start).is_none() {
            return true;
        }
        // The spill thread writes the marks: I/O issued from within this write's own
        // submission would wait behind it (the block layer holds it until map returns).
        self.work.notify_all();
        while !queue.activity_log_failed
            && !queue.al.as_ref().is_some_and(|al| al.is_durable(start, end - start))
        {
            self.activity_written.wait(&mut queue);
        }
        true
    }

    /// Releases what [`Self::hold_activity`] took, for a write that was not queued.
    pub(crate) fn release_activity(&self, start: u64, end: u64) {
        if let Some(al) = self.queue.lock().al.as_mut() {
            al.release(start, end - start);
        }
    }

    /// Tracks a write whose entry cannot be built (no memory for it) instead of
    /// queueing it: marks its range and stops queueing until a resync.
    pub(crate) fn track_instead(&self, cost: u64, range: Option<(u64, u64)>) {
        let mut queue = self.queue.lock();
        queue.budget.release(cost);
        if let Some((start, end)) = range {
            queue.dirty.mark_range(start, end - start);
        }
        let first = !core::mem::replace(&mut queue.tracking, true);
        drop(queue);
        if first {
            pr_warn!(
                "volume {}: no memory for queue entries: writes are no longer queued; their \
                 regions are tracked for a resync (the replica is inconsistent until it \
                 completes)\n",
                self.volume
            );
        }
        self.space_freed.notify_all();
        self.work.notify_all();
    }

    /// Lets writers that wait for queue space go on, tracking their regions, when
    /// nothing can make room: no link is up and either there is no spill device and
    /// they waited [`STRANDED_WRITERS_MS`], or the spill log is full (or failing) and
    /// the table says `on_spill_full:bitmap`.
    pub(crate) fn release_stranded_writers(&self) {
        let now = Ktime::ktime_get().to_ms();
        let mut queue = self.queue.lock();
        if queue.tracking || queue.writers_waiting == 0 || queue.active_link.is_some() {
            queue.stranded_since_ms = None;
            return;
        }
        let since = *queue.stranded_since_ms.get_or_insert(now);
        let reason = if queue.has_spill {
            if !(queue.spill_full || queue.spill_failed) || self.on_spill_full == SpillFullPolicy::Block {
                return;
            }
            "the spill log is full and no link is up"
        } else {
            if now - since < STRANDED_WRITERS_MS {
                return;
            }
            "the queue is full and no link is up"
        };
        queue.tracking = true;
        drop(queue);
        pr_warn!(
            "volume {}: {}: writes are no longer queued; their regions are tracked and \
             resynced once a link returns (the replica is inconsistent until that completes)\n",
            self.volume,
            reason
        );
        self.space_freed.notify_all();
    }

    /// Sleeps briefly after a failed allocation, so memory pressure slows writers down.
    pub(crate) fn wait_for_memory(&self) {
        let mut queue = self.queue.lock();
        let _ = self
            .space_freed
            .wait_interruptible_timeout(&mut queue, kernel::time::msecs_to_jiffies(10));
    }

    /// Appends the entry of a write, flush or write-zeroes whose local I/O completed;
    /// may run in interrupt context. A write's payload stays on the local device: its
    /// range `range` stays held for it. Returns whether it does.
    pub(crate) fn enqueue(&self, entry: Arc<Entry>, range: Option<RangeId>) -> bool {
        let now = Ktime::ktime_get().to_ns();
        let range = range.filter(|_| entry.payload_on_disk());
        let mut queue = self.queue.lock();
        // The budget reserved for this entry guarantees a free slot.
        let kept = match queue.fifo.push(Queued {
            entry,
            queued_ns: now,
            range,
        }) {
            Ok(seq) => {
                if let Some(id) = range {
                    queue.ranges.set_hold(id, Hold::OnDisk(seq));
                }
                range.is_some()
            }
            Err((_, rejected)) => {
                queue.budget.release(rejected.entry.cost());
                queue.release_activity(&rejected.entry);
                queue.write_errors += 1;
                false
            }
        };
        let wake = queue.sender_idle || queue.wants_spill();
        let wake_reader = kept
            && queue.active_link.is_some()
            && core::mem::replace(&mut queue.reader_idle, false);
        drop(queue);
        if wake {
            self.work.notify_all();
        }
        if wake_reader {
            self.payload_queued.notify_one();
        }
        kept
    }

    /// Reserves budget for a copy entry costing `cost` bytes if the queue stays at most
    /// half full with it, waiting up to 100 ms for that: the initial copy leaves the
    /// rest to writers, so it never makes them wait or spill. Returns whether it did.
    pub(crate) fn reserve_for_copy(&self, cost: u64) -> bool {
        let mut queue = self.queue.lock();
        let try_reserve = |q: &mut QueueState| {
            (q.budget.reserved() + cost) * 2 <= q.budget.capacity() && q.budget.try_reserve(cost)
        };
        if try_reserve(&mut queue) {
            return true;
        }
        let _ = self
            .space_freed
            .wait_interruptible_timeout(&mut queue, kernel::time::msecs_to_jiffies(100));
        try_reserve(&mut queue)
    }

    /// Lets the initial copy start: the table is live, so every write from now on
    /// passes through this target.
    pub(crate) fn allow_copy(&self) {
        self.queue.lock().copy.live = true;
        self.work.notify_all();
    }

    /// Whether the table has been live (see [`Self::allow_copy`]).
    pub(crate) fn copy_allowed(&self) -> bool {
        self.queue.lock().copy.live
    }

    /// Whether a copy of the whole volume was asked for (`sync:full`) on a device with
    /// an activity log, and has to mark every region on disk before it starts.
    pub(crate) fn copy_wants_activity_log(&self) -> bool {
        let queue = self.queue.lock();
        queue.history.copy_requested && queue.al.is_some()
    }

    /// Whether the copy (if any) has queued everything it covers.
    pub(crate) fn copy_done(&self) -> bool {
        self.queue.lock().copy.plan.finished()
    }

    /// The copy thread's next work, once the table is live: the copy's next chunk of
    /// at most `chunk_bytes`, else a repair, else a verify's next chunk (not while
    /// writes are tracked: the replica is known to lack them).
    pub(crate) fn next_copy_chunk(&self, chunk_bytes: u64) -> CopyNext {
        let mut queue = self.queue.lock();
        let QueueState {
            copy,
            dirty,
            repairs,
            verify,
            tracking,
            ..
        } = &mut *queue;
        if !copy.live {
            return CopyNext::Idle;
        }
        if !copy.plan.finished() {
            return match copy.plan.next_chunk(dirty, self.volume_size, chunk_bytes) {
                Some(chunk) => CopyNext::Chunk(chunk),
                None => CopyNext::Finished(copy.plan.purpose, copy.plan.total),
            };
        }
        if let Some((offset, len)) = repairs.front() {
            return CopyNext::Repair(offset, len);
        }
        match verify.next_chunk(chunk_bytes) {
            Some((offset, len)) if !*tracking => CopyNext::Verify(offset, len),
            _ => CopyNext::Idle,
        }
    }

    /// Starts an online verify of the whole volume (`dmsetup message ... verify`),
    /// with `repair`: chunks found different are sent again.
    pub(crate) fn start_verify(&self, repair: bool) -> Result<(), &'static str> {
        let mut queue = self.queue.lock();
        if queue.verifying() {
            return Err("verify: a verify is already running");
        }
        queue.verify.start(self.volume_size, repair);
        drop(queue);
        pr_info!(
            "volume {}: verify{} of {} bytes begins\n",
            self.volume,
            if repair { " with repair" } else { "" },
            self.volume_size
        );
        self.work.notify_all();
        Ok(())
    }

    /// The receiver found the chunk `[offset, offset + len)` of a check different:
    /// counts it and, with repair, queues it to be sent again. Returns whether it is.
    pub(crate) fn verify_mismatch(&self, offset: u64, len: u64) -> bool {
        let mut queue = self.queue.lock();
        queue.verify.mismatches += 1;
        let repair = queue.verify.repair && queue.repairs.push(offset, len);
        drop(queue);
        if repair {
            self.work.notify_all();
        }
        repair
    }

    /// Appends a verify's check of `[offset, offset + len)`; false if it could not be
    /// queued (its budget is returned).
    pub(crate) fn enqueue_verify(&self, entry: Arc<Entry>, offset: u64, len: u64) -> bool {
        self.enqueue_read(entry, |queue, seq, _| {
            queue.verify.chunk_queued(offset, len, seq);
        })
    }

    /// Sleeps about `ms` milliseconds, or less when woken (thread stop, new work).
    pub(crate) fn nap(&self, ms: u32) {
        let mut queue = self.queue.lock();
        let _ = self
            .work
            .wait_interruptible_timeout(&mut queue, kernel::time::msecs_to_jiffies(ms));
    }

    /// Appends the entry read for `chunk` (`None`: the oldest repair); false if it
    /// could not be queued (its budget is returned). A chunk of an earlier copy is
    /// queued all the same (it holds the volume's bytes, in order) but does not count
    /// for the copy that replaced it.
    pub(crate) fn enqueue_copy(&self, entry: Arc<Entry>, chunk: Option<&Chunk>) -> bool {
        self.enqueue_read(entry, |queue, seq, now| match chunk {
            Some(chunk) => {
                let copy = &mut queue.copy;
                if copy.plan.chunk_queued(chunk, seq) {
                    copy.rate.record(now / 1_000_000, copy.plan.queued);
                }
            }
            None => {
                queue.repairs.pop();
                queue.verify.repaired += 1;
            }
        })
    }

    /// Appends an entry the copy thread read, and lets `queued` account for it (with
    /// its local sequence and the time in ns) under the lock; false if it could not be
    /// queued (its budget is returned).
    fn enqueue_read(
        &self,
        entry: Arc<Entry>,
        queued: impl FnOnce(&mut QueueState, u64, i64),
    ) -> bool {
        let now = Ktime::ktime_get().to_ns();
        let mut queue = self.queue.lock();
        match queue.fifo.push(Queued {
            entry,
            queued_ns: now,
            range: None,
        }) {
            Ok(seq) => {
                queued(&mut queue, seq, now);
                drop(queue);
                self.work.notify_all();
                true
            }
            // The reserved budget guarantees a slot, so this does not happen; if it
            // did, the copy thread tries the range again.
            Err((_, rejected)) => {
                queue.budget.release(rejected.entry.cost());
                queue.release_activity(&rejected.entry);
                drop(queue);
                // Freed outside the spinlock (vfree may sleep).
                drop(rejected);
                self.space_freed.notify_all();
                false
            }
        }
    }

    /// Returns budget reserved for an entry that was never queued.
    pub(crate) fn release(&self, cost: u64) {
        self.queue.lock().budget.release(cost);
        self.space_freed.notify_all();
    }

    /// Counts a write that failed locally and returns its budget.
    pub(crate) fn local_write_failed(&self, cost: u64) {
        let mut queue = self.queue.lock();
        queue.write_errors += 1;
        queue.budget.release(cost);
        drop(queue);
        self.space_freed.notify_all();
    }

    /// Frees every entry up to local sequence `acked_local`.
    pub(crate) fn acknowledge(&self, acked_local: u64) {
        loop {
            let mut queue = self.queue.lock();
            queue.acked_local = queue.acked_local.max(acked_local);
            let Some(done) = queue.fifo.pop_acked(acked_local) else {
                break;
            };
            queue.budget.release(done.entry.cost());
            queue.release_activity(&done.entry);
            queue.release_payload_range(&done);
            drop(queue);
            // The entry (and its payload) is freed here, outside the spinlock.
            drop(done);
            self.space_freed.notify_all();
            self.range_freed.notify_all();
        }
        // The sender frees acknowledged spill records and may send more.
        self.work.notify_all();
    }

    /// The status line's figures (bio counters are the target's and left 0 here).
    pub(crate) fn status(&self) -> Status {
        let now = Ktime::ktime_get().to_ns();
        let mut queue = self.queue.lock();
        let base = queue.wire_base.unwrap_or(0);
        let oldest_ns = queue.fifo.oldest().map(|q| q.queued_ns);
        let sent_local = queue.sent_local;
        let counters = Counters {
            queued: queue.fifo.len() as u64,
            queued_bytes: queue.budget.reserved(),
            capacity_bytes: queue.budget.capacity(),
            sent_seq: if queue.wire_base.is_some() && sent_local > 0 {
                base + sent_local
            } else {
                0
            },
            acked_seq: if queue.acked_local > 0 { base + queue.acked_local } else { 0 },
            lag_ms: oldest_ns.map_or(0, |t| ((now - t).max(0) / 1_000_000) as u64),
            write_errors: queue.write_errors,
            link_errors: queue.links.iter().map(|l| l.errors).sum(),
            connects: queue.links.iter().map(|l| l.connects).sum(),
            spill_entries: queue.spill.entries,
            spill_bytes: queue.spill.bytes,
            spill_capacity_bytes: queue.spill.capacity,
            sync_bytes: queue.copy.plan.queued,
            sync_total_bytes: queue.copy.plan.total,
            consistent: u64::from(
                queue.copy.plan.acknowledged(queue.acked_local)
                    && !queue.diverged
                    && !queue.history.lost_entries
                    && !queue.history.refused
                    && !queue.tracking
                    && queue.dirty.marked() == 0,
            ),
            diverged: u64::from(queue.diverged),
            sync_rate: if !queue.copy.plan.finished() {
                let queued = queue.copy.plan.queued;
                queue.copy.rate.per_second(now / 1_000_000, queued).unwrap_or(0)
            } else {
                0
            },
            receiver_slow: u64::from(queue.receiver_slow),
            slow_drops: queue.slow_drops,
            generation: queue.history.current.map_or(0, |h| h.counter),
            refused: u64::from(queue.history.refused),
            resyncs: queue.history.resyncs,
            dirty_bytes: queue.dirty.marked_bytes(),
            verifying: u64::from(queue.verifying()),
            verify_bytes: queue.verify.queued,
            verify_total_bytes: queue.verify.total,
            verify_mismatches: queue.verify.mismatches,
            verify_repaired: queue.verify.repaired,
            cow_writes: self.cow_writes.load(Ordering::Relaxed),
            map_copies: self.map_copies.load(Ordering::Relaxed),
            ..Counters::default()
        };
        let report = |l: &LinkStats| LinkReport {
            state: l.state,
            connects: l.connects,
            errors: l.errors,
            last_error: l.last_error,
        };
        let (link, active_link) = match queue.active_link {
            Some(0) => (queue.links[0].state, ActiveLink::Primary),
            Some(_) => (queue.links[1].state, ActiveLink::Backup),
            None if queue.links.iter().any(|l| l.state == LinkState::Connecting) => {
                (LinkState::Connecting, ActiveLink::None)
            }
            None => (LinkState::Down, ActiveLink::None),
        };
        // Tracking first: it says writers no longer wait, whatever the spill log does.
        let mode = if queue.tracking {
            Mode::Tracking
        } else if queue.spill_failed {
            Mode::SpillFailed
        } else if queue.spill_full {
            Mode::SpillFull
        } else if queue.spill.entries > 0 && queue.active_link.is_some() {
            Mode::Draining
        } else if queue.spill.entries > 0 {
            Mode::Spilling
        } else if !queue.copy.plan.acknowledged(queue.acked_local) {
            Mode::Syncing
        } else {
            Mode::Replicating
        };
        Status {
            mode,
            link,
            counters,
            active_link,
            paused: queue.paused,
            links: [report(&queue.links[0]), report(&queue.links[1])],
        }
    }

    /// Drops every queued entry (device teardown); returns how many and their bytes.
    pub(crate) fn discard_all(&self) -> (u64, u64) {
        let (mut count, mut bytes) = (0, 0);
        loop {
            let mut queue = self.queue.lock();
            let next = queue.fifo.next_seq();
            let Some(dropped) = queue.fifo.pop_acked(next) else {
                break;
            };
            queue.budget.release(dropped.entry.cost());
            queue.release_payload_range(&dropped);
            drop(queue);
            count += 1;
            bytes += dropped.entry.payload_len();
        }
        (count, bytes)
    }
}
