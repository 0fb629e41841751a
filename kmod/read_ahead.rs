// SPDX-License-Identifier: GPL-2.0

//! The read-ahead thread: reads back, in queue order, every queued payload that is
//! still only on the local device (see `write_path`), whether or not a session
//! streams. Reading the local device then overlaps sending, and a later write over the
//! same blocks rarely has to wait for a copy-on-write read: random rewrites would
//! otherwise pay one read each. The payloads fit in memory, as the queue's budget
//! already counts them; the sender reads what it finds unread.

use kernel::sync::Arc;

use crate::kthread;
use crate::noio::NoIoScope;
use crate::replication::Replication;

/// Longest wait for new payloads, in milliseconds (a queued write wakes the thread).
const IDLE_WAIT_MS: u32 = 1_000;

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
