// SPDX-License-Identifier: GPL-2.0

//! The read-ahead thread: while a session streams, it reads back the payloads the
//! sender needs next that are still only on the local device (see `write_path`), so
//! reading the local device overlaps sending. The sender reads what it finds unread.

use kernel::sync::Arc;

use crate::kthread;
use crate::noio::NoIoScope;
use crate::replication::Replication;

/// How far ahead of the send cursor payloads are read back, in entries: enough to
/// keep a send buffer full of large writes, little memory held early.
const READ_AHEAD_ENTRIES: u64 = 64;

/// Body of the read-ahead thread.
pub(crate) fn read_ahead_main(repl: &Arc<Replication>) {
    // Allocations here must not wait on writes to this device: those wait on us.
    let _noio = NoIoScope::enter();
    // Local sequence of the next entry to look at.
    let mut cursor = 0;
    while !kthread::should_stop() {
        match repl.next_to_read_ahead(&mut cursor, READ_AHEAD_ENTRIES) {
            // The error is logged; the sender retries it when it gets there.
            Some(seq) => {
                if repl.read_back(seq).is_err() {
                    repl.nap(1_000);
                }
            }
            None => repl.nap(100),
        }
    }
}
