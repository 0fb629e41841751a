// SPDX-License-Identifier: GPL-2.0

//! The read-ahead thread: while a session streams, it reads back, in queue order, the
//! unsent payloads that are still only on the local device (see `write_path`), so
//! reading the local device overlaps sending, and a later write over the same blocks
//! rarely waits for a copy-on-write read. The payloads fit in memory, as the queue's
//! budget already counts them. Without a session nothing is read ahead: a burst into a
//! queue that is not drained costs the local device no reads while it lasts (the VM
//! benchmark measured sequential bursts at 0.60 of dm-linear with reads during them,
//! 0.92 without). The sender reads what it finds unread.

use kernel::sync::Arc;

use crate::kthread;
use crate::noio::NoIoScope;
use crate::replication::Replication;

/// Longest wait, in milliseconds, for new payloads (a queued write wakes the thread
/// while a session streams) or for a session.
const IDLE_WAIT_MS: u32 = 100;

/// Body of the read-ahead thread.
pub(crate) fn read_ahead_main(repl: &Arc<Replication>) {
    // Allocations here must not wait on writes to this device: those wait on us.
    let _noio = NoIoScope::enter();
    // Local sequence of the next entry to look at.
    let mut cursor = 0;
    while !kthread::should_stop() {
        match repl.next_to_read_ahead(&mut cursor) {
            // The error is logged; the sender retries it when it gets there.
            Some(seq) => {
                if repl.read_back(seq).is_err() {
                    repl.nap(1_000);
                }
            }
            None => repl.wait_for_payloads(cursor, IDLE_WAIT_MS),
        }
    }
}
