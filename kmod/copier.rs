// SPDX-License-Identifier: GPL-2.0

//! The copy thread: reads the volume in chunks and queues each as a write, in order
//! with the writes arriving meanwhile. It runs the initial copy (`sync:full`) and every
//! resync the sender decides on at a handshake.
//!
//! A chunk is read while its byte range is claimed like a write's, so no write to it is
//! in flight: every earlier write to the range is in the chunk and queued before it,
//! every later one is queued after it. Replaying the queue therefore ends with the
//! volume's current bytes, although the replica is no consistent image until the last
//! chunk is acknowledged.

use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::time::Ktime;

use crate::entry::{Entry, NoIoScope};
use crate::fifo::Budget;
use crate::kthread;
use crate::copy_plan::Chunk;
use crate::replication::{CopyNext, Replication};

/// Bytes read and queued as one entry.
const CHUNK_BYTES: u64 = 256 << 10;
/// Pause after a failed read or allocation before trying the chunk again.
const RETRY_MS: u32 = 1_000;

/// Body of the copy thread: copies whenever a copy has bytes left.
pub(crate) fn copier_main(repl: &Arc<Replication>) {
    // Writers to this device may wait on the queue, which waits on us.
    let _noio = NoIoScope::enter();
    let mut reported_error = false;
    let mut pace = Pace::new(repl.resync_mbps);
    while !kthread::should_stop() {
        let chunk = match repl.next_copy_chunk(CHUNK_BYTES) {
            CopyNext::Chunk(chunk) => chunk,
            CopyNext::Finished(purpose, total) => {
                pr_info!(
                    "volume {}: {} of {} bytes queued; the replica is consistent once it is \
                     acknowledged\n",
                    repl.volume,
                    purpose,
                    total
                );
                continue;
            }
            CopyNext::Idle => {
                repl.nap(100);
                continue;
            }
        };
        match copy_chunk(repl, &chunk) {
            Ok(true) => {
                reported_error = false;
                pace.copied(repl, chunk.epoch, chunk.len);
            }
            Ok(false) => {}
            Err(err) => {
                if !core::mem::replace(&mut reported_error, true) {
                    pr_err!(
                        "volume {}: the copy cannot read bytes {}..{} of the local device \
                         (error {}); retrying every second\n",
                        repl.volume,
                        chunk.offset,
                        chunk.offset + chunk.len,
                        err.to_errno()
                    );
                }
                repl.nap(RETRY_MS);
            }
        }
    }
}

/// Reads and queues `chunk`; `Ok(false)` when it must be tried again (no queue space
/// yet).
fn copy_chunk(repl: &Replication, chunk: &Chunk) -> Result<bool> {
    let (offset, len) = (chunk.offset, chunk.len);
    let cost = Budget::cost(len);
    let slot = repl.begin_range(offset, offset + len);
    if !repl.reserve_for_copy(cost) {
        // Not while holding the range: writers to it would wait on a full queue.
        repl.end_range(slot);
        return Ok(false);
    }
    // The chunk's regions stay marked in the activity log until it is acknowledged.
    let held = repl.hold_activity(offset, offset + len);
    let copied = KVVec::from_elem(0u8, len as usize, GFP_KERNEL)
        .map_err(|_| ENOMEM)
        .and_then(|mut data| {
            repl.copy_source.read(offset, &mut data)?;
            Entry::copied(offset, data)
        })
        .map(|entry| repl.enqueue_copy(entry, chunk));
    repl.end_range(slot);
    if copied.is_err() {
        repl.release(cost);
        if held {
            repl.release_activity(offset, offset + len);
        }
    }
    copied
}

/// Holds a copy to `resync_mbps` MiB/s (table feature; 0: no limit), so it does not
/// take the local disk from production.
struct Pace {
    mib_per_s: u64,
    epoch: u64,
    started_ms: i64,
    bytes: u64,
}

impl Pace {
    fn new(mib_per_s: u32) -> Self {
        Self {
            mib_per_s: u64::from(mib_per_s),
            epoch: 0,
            started_ms: 0,
            bytes: 0,
        }
    }

    /// `len` bytes of copy `epoch` were queued: sleeps until the rate allows more.
    fn copied(&mut self, repl: &Replication, epoch: u64, len: u64) {
        if self.mib_per_s == 0 {
            return;
        }
        let now = Ktime::ktime_get().to_ms();
        if epoch != self.epoch {
            (self.epoch, self.started_ms, self.bytes) = (epoch, now, 0);
        }
        self.bytes += len;
        let due_ms = (self.bytes * 1000 / (self.mib_per_s << 20)) as i64;
        while Ktime::ktime_get().to_ms() - self.started_ms < due_ms && !kthread::should_stop() {
            let left = due_ms - (Ktime::ktime_get().to_ms() - self.started_ms);
            repl.nap(left.clamp(1, 1000) as u32);
        }
    }
}
