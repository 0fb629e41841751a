// SPDX-License-Identifier: GPL-2.0

//! The spill thread: when the memory queue is nearly full and no link takes it (or the
//! spill log is still being drained ahead of it), it moves the oldest entries to the
//! spill log so writers go on at local speed. It also records on disk, once a second,
//! how far acknowledgements have freed the log.

use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::time::{msecs_to_jiffies, Ktime};

use crate::noio::NoIoScope;
use crate::kthread;
use crate::replication::Replication;
use crate::table::SpillFullPolicy;
use crate::spill_log::BatchOutcome;

/// How often the log's head is recorded on disk while it moves.
const PERSIST_INTERVAL_MS: i64 = 1_000;

/// Body of the per-device spill thread (started only with a spill device).
pub(crate) fn spiller_main(repl: &Arc<Replication>) {
    // Allocations here must not wait on writes to this device: those wait on us.
    let _noio = NoIoScope::enter();
    let Some(log) = repl.spill.as_deref() else {
        return;
    };
    let mut next_persist_ms = Ktime::ktime_get().to_ms() + PERSIST_INTERVAL_MS;
    while !kthread::should_stop() {
        // Writers may be waiting for these: first.
        if let Err(err) = log.write_pending_marks(repl) {
            report_failure(repl, err, "write the activity log in");
        }
        let wanted = {
            let mut queue = repl.queue.lock();
            let wanted = queue.wants_spill();
            if !wanted {
                queue.spill_full = false;
            }
            wanted
        };
        if wanted {
            match log.spill_batch(repl) {
                Ok(BatchOutcome::Moved) => {
                    let mut queue = repl.queue.lock();
                    queue.spill_full = false;
                    queue.spill_failed = false;
                    continue;
                }
                Ok(BatchOutcome::Full) => {
                    let newly_full = {
                        let mut queue = repl.queue.lock();
                        let newly = !core::mem::replace(&mut queue.spill_full, true);
                        newly.then_some((queue.spill.bytes, queue.spill.capacity))
                    };
                    if let Some((used, capacity)) = newly_full {
                        let then = match repl.on_spill_full {
                            SpillFullPolicy::Block => "writers wait until a link drains it",
                            SpillFullPolicy::Bitmap => "writes are tracked by region instead",
                        };
                        pr_warn!(
                            "volume {}: spill device {} is full ({} of {} bytes): {}\n",
                            repl.volume,
                            log.device_name(),
                            used,
                            capacity,
                            then
                        );
                    }
                    repl.release_stranded_writers();
                }
                Ok(BatchOutcome::Idle) => {}
                Err(err) => {
                    report_failure(repl, err, "write");
                    repl.release_stranded_writers();
                }
            }
        }
        let now = Ktime::ktime_get().to_ms();
        if now >= next_persist_ms {
            next_persist_ms = now + PERSIST_INTERVAL_MS;
            if let Err(err) = log.persist_head(repl) {
                report_failure(repl, err, "update");
            }
            if let Err(err) = log.clear_activity_log(repl) {
                report_failure(repl, err, "clear the activity log in");
            }
        }
        let mut queue = repl.queue.lock();
        let progress_possible = queue.wants_spill() && !queue.spill_full && !queue.spill_failed;
        // Marks that failed to write are retried on the next round, not at once.
        let marks_pending = !queue.activity_log_failed
            && queue.al.as_ref().is_some_and(|al| al.unwritten().is_some());
        if !progress_possible && !marks_pending {
            let _ = repl.work.wait_interruptible_timeout(
                &mut queue,
                msecs_to_jiffies(PERSIST_INTERVAL_MS as u32),
            );
        }
    }
}

fn report_failure(repl: &Replication, err: Error, what: &str) {
    if !core::mem::replace(&mut repl.queue.lock().spill_failed, true) {
        pr_err!(
            "volume {}: cannot {} the spill log (error {}); retrying every second\n",
            repl.volume,
            what,
            err.to_errno()
        );
    }
}
