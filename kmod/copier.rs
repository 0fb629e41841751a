// SPDX-License-Identifier: GPL-2.0

//! The copy thread: reads the volume in chunks and queues each as a write, in order
//! with the writes arriving meanwhile. It runs the initial copy (`sync:full`), every
//! resync the sender decides on at a handshake, and the online verify, which queues a
//! chunk's hash instead of its bytes (and, with repair, the chunks found different
//! again as writes).
//!
//! A chunk is read while its byte range is claimed like a write's, so no write to it is
//! in flight: every earlier write to the range is in the chunk and queued before it,
//! every later one is queued after it. Replaying the queue therefore ends with the
//! volume's current bytes, although the replica is no consistent image until the last
//! chunk is acknowledged; and a check hashes exactly what the replica must hold once
//! it has applied everything queued before it.

use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::time::Ktime;

use crate::entry::Entry;
use crate::noio::NoIoScope;
use crate::fifo::Budget;
use crate::kthread;
use crate::copy_plan::Chunk;
use crate::replication::{CopyNext, Replication};
use crate::verify::{ChunkCheck, VERIFY_PAYLOAD_LEN};

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
    let mut verify_pace = Pace::new(repl.resync_mbps);
    while !kthread::should_stop() {
        let chunk = match repl.next_copy_chunk(CHUNK_BYTES) {
            CopyNext::Chunk(chunk) => chunk,
            CopyNext::Repair(offset, len) => {
                let repaired = copy_chunk(repl, offset, len, None);
                if !matches!(repaired, Ok(true)) {
                    report(repl, &mut reported_error, "repair", offset, len, repaired);
                }
                continue;
            }
            CopyNext::Verify(offset, len) => {
                let checked = verify_chunk(repl, offset, len);
                match checked {
                    Ok(true) => {
                        let run = repl.queue.lock().verify.run;
                        verify_pace.copied(repl, run, len);
                    }
                    _ => report(repl, &mut reported_error, "verify", offset, len, checked),
                }
                continue;
            }
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
        let copied = copy_chunk(repl, chunk.offset, chunk.len, Some(&chunk));
        match copied {
            Ok(true) => {
                reported_error = false;
                pace.copied(repl, chunk.epoch, chunk.len);
            }
            _ => report(repl, &mut reported_error, "copy", chunk.offset, chunk.len, copied),
        }
    }
}

/// After a chunk that was not queued: a read error is logged once (until a chunk
/// succeeds) and waits a second; no queue space waits for none.
fn report(
    repl: &Replication,
    reported: &mut bool,
    what: &str,
    offset: u64,
    len: u64,
    outcome: Result<bool>,
) {
    match outcome {
        Ok(true) => *reported = false,
        Ok(false) => {}
        Err(err) => {
            if !core::mem::replace(reported, true) {
                pr_err!(
                    "volume {}: the {} cannot read bytes {}..{} of the local device (error \
                     {}); retrying every second\n",
                    repl.volume,
                    what,
                    offset,
                    offset + len,
                    err.to_errno()
                );
            }
            repl.nap(RETRY_MS);
        }
    }
}

/// Reads and queues bytes `[offset, offset + len)` as a write, for `chunk` of the copy
/// or (`None`) the oldest repair; `Ok(false)` when it must be tried again (no queue
/// space yet).
fn copy_chunk(repl: &Replication, offset: u64, len: u64, chunk: Option<&Chunk>) -> Result<bool> {
    let cost = Budget::cost(len);
    let range = repl.hold_range(offset, offset + len);
    if !repl.reserve_for_copy(cost) {
        // Not while holding the range: writers to it would wait on a full queue.
        repl.release_range(range);
        return Ok(false);
    }
    // The chunk's regions stay marked in the activity log until it is acknowledged.
    let held = repl.hold_activity(offset, offset + len);
    let copied = repl
        .copy_source
        .read_payload(offset, len as usize)
        .and_then(|data| Entry::copied(offset, data))
        .map(|entry| repl.enqueue_copy(entry, chunk));
    repl.release_range(range);
    if copied.is_err() {
        repl.release(cost);
        if held {
            repl.release_activity(offset, offset + len);
        }
    }
    copied
}

/// Reads bytes `[offset, offset + len)` and queues their check; `Ok(false)` when it
/// must be tried again (no queue space yet).
fn verify_chunk(repl: &Replication, offset: u64, len: u64) -> Result<bool> {
    let cost = Budget::cost(VERIFY_PAYLOAD_LEN as u64);
    let range = repl.hold_range(offset, offset + len);
    if !repl.reserve_for_copy(cost) {
        repl.release_range(range);
        return Ok(false);
    }
    // Hashed while the range is claimed: the check is of the bytes at its place in
    // the stream.
    let checked = repl
        .copy_source
        .read_payload(offset, len as usize)
        .and_then(|data| Entry::verify(offset, &ChunkCheck::of_pieces(data.pieces())))
        .map(|entry| repl.enqueue_verify(entry, offset, len));
    repl.release_range(range);
    if checked.is_err() {
        repl.release(cost);
    }
    checked
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
        // `checked_div`: no panic path in the kernel build (the rate is not 0 here).
        let due_ms = (self.bytes * 1000).checked_div(self.mib_per_s << 20).unwrap_or(0) as i64;
        while Ktime::ktime_get().to_ms() - self.started_ms < due_ms && !kthread::should_stop() {
            let left = due_ms - (Ktime::ktime_get().to_ms() - self.started_ms);
            repl.nap(left.clamp(1, 1000) as u32);
        }
    }
}
