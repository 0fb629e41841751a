// SPDX-License-Identifier: GPL-2.0

//! The write path: what a write, flush or write-zeroes bio takes on its way to the local
//! device (its range, activity log marks, queue budget, its entry), what its completion
//! does, and the copy-on-write thread.
//!
//! A small random write's payload is copied as it is mapped (`copy_policy`). Any other
//! write's entry names its range, and the payload is read back from the local device
//! when it is sent or spilled. Until then the range stays held, and a later write over
//! it is deferred to the copy-on-write thread, which reads the queued payload back
//! first (as dm-snapshot copies an origin's old data before a write to it goes on). A
//! map callback cannot do that itself: the block layer holds the bios it issues until
//! it returns.

use core::sync::atomic::Ordering;

use kernel::sync::Arc;
use kernel::time::Ktime;

use crate::bio::{Bio, BioKind, DeferredBio};
use crate::copy_policy;
use crate::entry::{Entry, EntryKind};
use crate::kthread;
use crate::noio::NoIoScope;
use crate::range_table::RangeId;
use crate::replication::Replication;

/// How long a writer retries allocating its entry before its region is tracked instead.
const MEMORY_WAIT_MS: i64 = 1_000;

/// What one bio took on its way to the local device, given back at its completion.
pub(crate) struct PendingEntries {
    entry: Option<Arc<Entry>>,
    /// Queue budget reserved for `entry`.
    cost: u64,
    /// The bio's byte range, held while it is in flight (and after, for a payload
    /// that stays on the local device).
    range: Option<RangeId>,
    /// The byte range held in the activity log; released when the entry leaves
    /// memory, or at completion when nothing is queued.
    activity: Option<(u64, u64)>,
}

impl PendingEntries {
    /// For a bio that changes nothing (a read).
    pub(crate) const NONE: Self = Self {
        entry: None,
        cost: 0,
        range: None,
        activity: None,
    };
}

/// The byte range `[start, end)` a bio changes on the volume, if any.
fn changed_bytes(bio: &Bio<'_>, kind: BioKind) -> Option<(u64, u64)> {
    match kind {
        BioKind::Write | BioKind::WriteZeroes if bio.size() > 0 => {
            let start = bio.target_offset_bytes();
            Some((start, start + u64::from(bio.size())))
        }
        _ => None,
    }
}

impl Replication {
    /// The map callback's part for a bio that may change the volume (not a read):
    /// `None` when the bio must be deferred to the copy-on-write thread, because it
    /// would overwrite a queued payload still on the local device.
    pub(crate) fn map_write(&self, bio: &Bio<'_>, kind: BioKind) -> Option<PendingEntries> {
        let bytes = changed_bytes(bio, kind);
        let range = match bytes {
            Some((start, end)) => Some(self.try_hold_range(start, end).ok()?),
            None => None,
        };
        Some(self.prepare(bio, kind, bytes, range))
    }

    /// Queues `bio` (remapped, taken over from a map callback) for the copy-on-write
    /// thread.
    pub(crate) fn defer(&self, bio: DeferredBio<PendingEntries>) {
        self.cow_writes.fetch_add(1, Ordering::Relaxed);
        self.deferred.lock().push(bio);
        self.deferred_added.notify_one();
    }

    /// Takes what a write needs once its range is held: activity log marks, queue
    /// budget and its entry. This is where writers wait when the queue is full, and
    /// where they wait, rather than fail, when memory is short. Neither wait is
    /// unbounded: when nothing can make room, or memory stays short, the write's region
    /// is tracked instead.
    fn prepare(
        &self,
        bio: &Bio<'_>,
        kind: BioKind,
        bytes: Option<(u64, u64)>,
        range: Option<RangeId>,
    ) -> PendingEntries {
        let _noio = NoIoScope::enter();
        // Marked on disk before the write reaches the local device: after a crash, the
        // activity log names every region the replica may lack.
        let activity = bytes.filter(|&(start, end)| self.hold_activity(start, end));
        let cost = crate::fifo::Budget::cost(match kind {
            BioKind::Write => u64::from(bio.size()),
            _ => 0,
        });
        let nothing_queued = PendingEntries {
            range,
            activity,
            ..PendingEntries::NONE
        };
        if !self.reserve(cost, bytes) {
            return nothing_queued;
        }
        let copy_payload = kind == BioKind::Write && self.copies_payload(bytes);
        // Device-mapper sends REQ_PREFLUSH as an empty flush bio of its own, before
        // the data: a write here never carries one.
        let build = || match kind {
            BioKind::Write if copy_payload => Entry::write_with_payload(bio)
                .inspect(|_| {
                    self.map_copies.fetch_add(1, Ordering::Relaxed);
                })
                .or_else(|_| Entry::write(bio)),
            BioKind::Write => Entry::write(bio),
            BioKind::WriteZeroes => {
                Entry::metadata(EntryKind::WriteZeroes, bio.target_offset_bytes(), bio.size())
            }
            _ => Entry::metadata(EntryKind::Flush, 0, 0),
        };
        let first_failure_ms = Ktime::ktime_get().to_ms();
        loop {
            match build() {
                Ok(entry) => {
                    return PendingEntries {
                        entry: Some(entry),
                        cost,
                        range,
                        activity,
                    }
                }
                Err(_) if Ktime::ktime_get().to_ms() - first_failure_ms >= MEMORY_WAIT_MS => {
                    self.track_instead(cost, bytes);
                    return nothing_queued;
                }
                Err(_) => self.wait_for_memory(),
            }
        }
    }

    /// Whether a write's payload is copied now rather than left on the local device
    /// (`copy_policy`); never when the device's writers may change a page in flight.
    fn copies_payload(&self, bytes: Option<(u64, u64)>) -> bool {
        let Some((start, end)) = bytes.filter(|_| self.writes_stable.load(Ordering::Relaxed))
        else {
            return false;
        };
        let previous_end = self.last_write_end.swap(end, Ordering::Relaxed);
        copy_policy::copies_in_map(start, end - start, previous_end)
    }

    /// The bio completed on the local device (`failed`: with an error); may run in
    /// interrupt context.
    pub(crate) fn complete(&self, pending: PendingEntries, failed: bool) {
        let PendingEntries {
            entry,
            cost,
            range,
            activity,
        } = pending;
        let mut range_kept = false;
        let queued = match entry {
            // A write that failed locally completes with its error and is not replicated.
            Some(_) if failed => {
                self.local_write_failed(cost);
                false
            }
            Some(entry) => {
                range_kept = self.enqueue(entry, range);
                true
            }
            None => false,
        };
        if let Some((start, end)) = activity.filter(|_| !queued) {
            self.release_activity(start, end);
        }
        // Only now may an overlapping write start: its entry must queue after this one.
        match range {
            Some(id) if !range_kept => self.release_range(id),
            // Writers waiting for this write now have its payload to read back first.
            Some(_) => self.range_freed.notify_all(),
            None => {}
        }
    }
}

/// Body of a copy-on-write thread: takes deferred writes in arrival order, reads back
/// the queued payloads in their way, and submits them. Several threads run: deferred
/// writes were in flight together, so no order between them is owed.
pub(crate) fn cow_main(repl: &Arc<Replication>) {
    // Allocations here must not wait on writes to this device: those wait on us.
    let _noio = NoIoScope::enter();
    // Device-mapper destroys the target only once every bio completed: none is left
    // deferred when the thread is told to stop.
    while !kthread::should_stop() {
        let next = {
            let mut deferred = repl.deferred.lock();
            let next = deferred.pop();
            if next.is_none() {
                let _ = repl
                    .deferred_added
                    .wait_interruptible_timeout(&mut deferred, kernel::time::msecs_to_jiffies(500));
            }
            next
        };
        let Some(deferred) = next else {
            continue;
        };
        let pending = {
            let bio = deferred.bio();
            let kind = bio.kind();
            let bytes = changed_bytes(&bio, kind);
            let range = bytes.map(|(start, end)| repl.hold_range(start, end));
            repl.prepare(&bio, kind, bytes, range)
        };
        deferred.submit(pending);
    }
}
