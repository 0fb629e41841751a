// SPDX-License-Identifier: GPL-2.0

//! The initial copy (`sync:full`): reads the whole volume in chunks and queues each as a
//! write, in order with the writes arriving meanwhile.
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
use crate::replication::Replication;

/// Bytes read and queued as one entry.
const CHUNK_BYTES: u64 = 256 << 10;
/// Pause after a failed read or allocation before trying the chunk again.
const RETRY_MS: u32 = 1_000;

/// Body of the copy thread (started only with `sync:full`).
pub(crate) fn copier_main(repl: &Arc<Replication>) {
    // Writers to this device may wait on the queue, which waits on us.
    let _noio = NoIoScope::enter();
    let Some(source) = repl.copy_source.as_ref() else {
        return;
    };
    while !repl.copy_allowed() {
        if kthread::should_stop() {
            return;
        }
        repl.nap(100);
    }
    let total = repl.volume_size;
    let mut offset = 0;
    let mut reported_error = false;
    while offset < total && !kthread::should_stop() {
        let len = CHUNK_BYTES.min(total - offset);
        let cost = Budget::cost(len);
        let slot = repl.begin_range(offset, offset + len);
        if !repl.reserve_for_copy(cost) {
            // Not while holding the range: writers to it would wait on a full queue.
            repl.end_range(slot);
            continue;
        }
        let copied = KVVec::from_elem(0u8, len as usize, GFP_KERNEL)
            .map_err(|_| ENOMEM)
            .and_then(|mut data| {
                source.read(offset, &mut data)?;
                Entry::copied(offset, data)
            })
            .map(|entry| repl.enqueue_copy(entry, offset + len));
        repl.end_range(slot);
        match copied {
            Ok(true) => offset += len,
            Ok(false) => {}
            Err(err) => {
                repl.release(cost);
                if !core::mem::replace(&mut reported_error, true) {
                    pr_err!(
                        "volume {}: initial copy cannot read bytes {}..{} of the local device \
                         (error {}); retrying every second\n",
                        repl.volume,
                        offset,
                        offset + len,
                        err.to_errno()
                    );
                }
                repl.nap(RETRY_MS);
            }
        }
    }
    if offset == total {
        pr_info!(
            "volume {}: initial copy of {} bytes queued; the replica is consistent once it \
             is acknowledged\n",
            repl.volume,
            total
        );
    }
}
