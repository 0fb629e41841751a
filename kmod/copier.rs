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

use crate::entry::{Entry, NoIoScope};
use crate::fifo::Budget;
use crate::kthread;
use crate::replication::{CopyPosition, Replication};

/// Bytes read and queued as one entry.
const CHUNK_BYTES: u64 = 256 << 10;
/// Pause after a failed read or allocation before trying the chunk again.
const RETRY_MS: u32 = 1_000;

/// Body of the copy thread: copies whenever a copy has bytes left.
pub(crate) fn copier_main(repl: &Arc<Replication>) {
    // Writers to this device may wait on the queue, which waits on us.
    let _noio = NoIoScope::enter();
    let mut reported_error = false;
    while !kthread::should_stop() {
        let Some(at) = repl.copy_position() else {
            repl.nap(100);
            continue;
        };
        let CopyPosition { offset, total, .. } = at;
        match copy_chunk(repl, &at) {
            Ok(true) if offset + CHUNK_BYTES.min(total - offset) == total => {
                reported_error = false;
                pr_info!(
                    "volume {}: {} of {} bytes queued; the replica is consistent once it \
                     is acknowledged\n",
                    repl.volume,
                    at.purpose,
                    total
                );
            }
            Ok(_) => {}
            Err(err) => {
                if !core::mem::replace(&mut reported_error, true) {
                    pr_err!(
                        "volume {}: {} cannot read bytes {}..{} of the local device \
                         (error {}); retrying every second\n",
                        repl.volume,
                        at.purpose,
                        offset,
                        offset + CHUNK_BYTES.min(total - offset),
                        err.to_errno()
                    );
                }
                repl.nap(RETRY_MS);
            }
        }
    }
}

/// Reads and queues the chunk at `offset`; `Ok(false)` when it must be tried again
/// (no queue space yet).
fn copy_chunk(repl: &Replication, at: &CopyPosition) -> Result<bool> {
    let offset = at.offset;
    let len = CHUNK_BYTES.min(at.total - offset);
    let cost = Budget::cost(len);
    let slot = repl.begin_range(offset, offset + len);
    if !repl.reserve_for_copy(cost) {
        // Not while holding the range: writers to it would wait on a full queue.
        repl.end_range(slot);
        return Ok(false);
    }
    let copied = KVVec::from_elem(0u8, len as usize, GFP_KERNEL)
        .map_err(|_| ENOMEM)
        .and_then(|mut data| {
            repl.copy_source.read(offset, &mut data)?;
            Entry::copied(offset, data)
        })
        .map(|entry| repl.enqueue_copy(entry, at.epoch, offset + len));
    repl.end_range(slot);
    if copied.is_err() {
        repl.release(cost);
    }
    copied
}
