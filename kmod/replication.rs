// SPDX-License-Identifier: GPL-2.0

//! State shared by the write path, the sender and the acknowledgement receiver: the FIFO,
//! its byte budget, sequence mapping to the wire, link state and counters.

use core::net::SocketAddr;

use kernel::new_condvar;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar};
use kernel::time::Ktime;

use crate::entry::{Entry, EntrySlots, Queued};
use crate::fifo::{slots_for_budget, Budget, Fifo};
use crate::inflight::InFlight;
use crate::net::NetNamespace;
use crate::new_irq_spinlock;
use crate::status::{Counters, LinkState};
use crate::sync::IrqSpinLock;
use crate::table::{ReplicationConfig, VolumeName};

/// Local writes in flight at once, at most; more wait (block queues hold far fewer).
const MAX_WRITES_IN_FLIGHT: usize = 1024;

/// Everything under the queue lock.
pub(crate) struct QueueState {
    pub(crate) fifo: Fifo<EntrySlots>,
    pub(crate) budget: Budget,
    /// Wire sequence = `wire_base` + local sequence; learned at the first handshake, when
    /// the receiver says how far it is durable.
    pub(crate) wire_base: Option<u64>,
    /// Highest local sequence acknowledged (0: none).
    pub(crate) acked_local: u64,
    pub(crate) link: LinkState,
    pub(crate) write_errors: u64,
    pub(crate) link_errors: u64,
    pub(crate) connects: u64,
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
    /// Ranges of writes in flight on the local device.
    #[pin]
    inflight: IrqSpinLock<InFlight<MAX_WRITES_IN_FLIGHT>>,
    /// Signalled when a range leaves `inflight`.
    #[pin]
    range_freed: CondVar,
    pub(crate) net: NetNamespace,
    pub(crate) links: [Option<SocketAddr>; 2],
    pub(crate) volume: VolumeName,
    pub(crate) volume_size: u64,
}

impl Replication {
    pub(crate) fn new(
        config: &ReplicationConfig,
        volume: VolumeName,
        volume_size: u64,
    ) -> Result<Arc<Self>> {
        let capacity = u64::from(config.queue_mb) << 20;
        let slots = EntrySlots::new(slots_for_budget(capacity))?;
        Arc::pin_init(
            pin_init!(Self {
                queue <- new_irq_spinlock!(
                    QueueState {
                        fifo: Fifo::new(slots),
                        budget: Budget::new(capacity),
                        wire_base: None,
                        acked_local: 0,
                        link: LinkState::Down,
                        write_errors: 0,
                        link_errors: 0,
                        connects: 0,
                    },
                    "arepl_queue"
                ),
                space_freed <- new_condvar!("arepl_space"),
                work <- new_condvar!("arepl_work"),
                inflight <- new_irq_spinlock!(InFlight::new(), "arepl_inflight"),
                range_freed <- new_condvar!("arepl_range"),
                net: NetNamespace::current(),
                links: [Some(config.primary), config.backup],
                volume,
                volume_size,
            }),
            GFP_KERNEL,
        )
    }

    /// Claims the byte range `[start, end)` for a write about to be issued, waiting while
    /// an overlapping write is in flight.
    pub(crate) fn begin_range(&self, start: u64, end: u64) -> usize {
        let mut inflight = self.inflight.lock();
        loop {
            if let Some(slot) = inflight.try_insert(start, end) {
                return slot;
            }
            self.range_freed.wait(&mut inflight);
        }
    }

    /// Releases a range claimed by `begin_range`; may run in interrupt context.
    pub(crate) fn end_range(&self, slot: usize) {
        self.inflight.lock().remove(slot);
        self.range_freed.notify_all();
    }

    /// Reserves budget for an entry costing `cost` bytes, waiting while the queue is full.
    pub(crate) fn reserve(&self, cost: u64) {
        let mut queue = self.queue.lock();
        while !queue.budget.try_reserve(cost) {
            self.space_freed.wait(&mut queue);
        }
    }

    /// Sleeps briefly after a failed allocation, so memory pressure slows writers down.
    pub(crate) fn wait_for_memory(&self) {
        let mut queue = self.queue.lock();
        let _ = self
            .space_freed
            .wait_interruptible_timeout(&mut queue, kernel::time::msecs_to_jiffies(10));
    }

    /// Appends entries whose local I/O completed; may run in interrupt context.
    pub(crate) fn enqueue(&self, entries: [Option<Arc<Entry>>; 2]) {
        let now = Ktime::ktime_get().to_ns();
        let mut queue = self.queue.lock();
        for entry in entries.into_iter().flatten() {
            // The budget reserved for this entry guarantees a free slot.
            if let Err((_, rejected)) = queue.fifo.push(Queued {
                entry,
                queued_ns: now,
            }) {
                queue.budget.release(rejected.entry.cost());
                queue.write_errors += 1;
            }
        }
        drop(queue);
        self.work.notify_all();
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
            drop(queue);
            // The entry (and its payload) is freed here, outside the spinlock.
            drop(done);
            self.space_freed.notify_all();
        }
    }

    /// Status counters for `dmsetup status` (bio counters are the target's).
    pub(crate) fn counters(&self) -> (LinkState, Counters) {
        let now = Ktime::ktime_get().to_ns();
        let mut queue = self.queue.lock();
        let base = queue.wire_base.unwrap_or(0);
        let oldest_ns = queue.fifo.oldest().map(|q| q.queued_ns);
        let sent_local = queue.fifo.last_sent_seq();
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
            link_errors: queue.link_errors,
            connects: queue.connects,
            ..Counters::default()
        };
        (queue.link, counters)
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
            drop(queue);
            count += 1;
            bytes += dropped.entry.payload().len() as u64;
        }
        (count, bytes)
    }
}
