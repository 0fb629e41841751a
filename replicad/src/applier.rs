//! Applies one session's entries in order and makes them durable in groups.
//!
//! Runs on a blocking thread, fed by the connection through a bounded channel. Entries are
//! written as they arrive; the batch is made durable (target fdatasync, then the state
//! file) when
//! - an entry demands it (a flush or a FUA write),
//! - no further entry is waiting, i.e. the sender paused or the link is slower than us,
//! - the oldest undurable entry is [`MAX_BATCH_AGE`] old, so acknowledgements keep coming
//!   under continuous load,
//! - the session ends, so the target never holds applied entries the state disowns.
//!
//! Each time, the new durable sequence is published; the connection turns it into an `Ack`.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use crate::entry::Entry;
use crate::replica::{Replica, ReplicaError};
use crate::stats::Stats;

/// Longest time an applied entry waits for durability under continuous input.
pub const MAX_BATCH_AGE: Duration = Duration::from_millis(5);

/// An entry on its way to the applier. It holds its share of the queue's byte budget
/// until it is applied, so the queue can be long in entries yet bounded in memory.
#[derive(Debug)]
pub struct Queued {
    entry: Entry,
    _budget: Option<OwnedSemaphorePermit>,
}

impl Queued {
    /// `entry`, releasing `budget` once applied.
    pub fn new(entry: Entry, budget: OwnedSemaphorePermit) -> Self {
        Self {
            entry,
            _budget: Some(budget),
        }
    }

    /// `entry` outside any budget.
    pub fn unbudgeted(entry: Entry) -> Self {
        Self {
            entry,
            _budget: None,
        }
    }
}

/// What one session's applier did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries applied.
    pub applied: u64,
    /// Group commits made.
    pub commits: u64,
    /// The durable sequence at the end.
    pub durable_seq: u64,
}

/// Applies entries from `entries` until the channel closes, publishing every new durable
/// sequence on `durable` and counting what it does in `stats`. Stops at the first target
/// or state failure, leaving the entries applied since the last commit undurable (and
/// unacknowledged).
pub fn run(
    replica: &mut Replica,
    mut entries: mpsc::Receiver<Queued>,
    durable: &watch::Sender<u64>,
    stats: &Stats,
) -> Result<ApplyReport, ReplicaError> {
    let mut report = ApplyReport {
        applied: 0,
        commits: 0,
        durable_seq: replica.state().durable_seq,
    };
    let mut last_applied = report.durable_seq;
    let mut batch_started: Option<Instant> = None;
    loop {
        let next = if batch_started.is_some() {
            match entries.try_recv() {
                Ok(entry) => Some(entry),
                Err(mpsc::error::TryRecvError::Empty) => {
                    commit(replica, last_applied, durable, stats, &mut report)?;
                    batch_started = None;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        } else {
            entries.blocking_recv()
        };
        let Some(Queued { entry, .. }) = next else {
            break;
        };
        debug_assert_eq!(entry.seq, last_applied + 1, "the sequencer keeps order");
        replica.apply(&entry)?;
        stats.entry_applied(&entry);
        report.applied += 1;
        last_applied = entry.seq;
        let started = *batch_started.get_or_insert_with(Instant::now);
        if entry.demands_durability() || started.elapsed() >= MAX_BATCH_AGE {
            commit(replica, last_applied, durable, stats, &mut report)?;
            batch_started = None;
        }
    }
    if batch_started.is_some() {
        commit(replica, last_applied, durable, stats, &mut report)?;
    }
    Ok(report)
}

fn commit(
    replica: &mut Replica,
    seq: u64,
    durable: &watch::Sender<u64>,
    stats: &Stats,
    report: &mut ApplyReport,
) -> Result<(), ReplicaError> {
    replica.make_durable(seq)?;
    stats.committed(seq);
    report.commits += 1;
    report.durable_seq = seq;
    durable.send_replace(seq);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Operation;
    use bytes::Bytes;
    use std::path::Path;

    fn replica(dir: &Path) -> Replica {
        let target = dir.join("target");
        if !target.exists() {
            std::fs::write(&target, vec![0u8; 1 << 20]).unwrap();
        }
        Replica::open(&target, dir).unwrap()
    }

    fn write(seq: u64) -> Entry {
        Entry {
            seq,
            op: Operation::Write {
                offset: (seq % 64) * 4096,
                data: Bytes::from(vec![seq as u8; 4096]),
                fua: false,
            },
        }
    }

    fn flush(seq: u64) -> Entry {
        Entry {
            seq,
            op: Operation::Flush,
        }
    }

    /// Runs the applier over `entries`, all queued before it starts.
    fn run_queued(replica: &mut Replica, entries: Vec<Entry>) -> (ApplyReport, u64) {
        let (tx, rx) = mpsc::channel(entries.len().max(1));
        for entry in entries {
            tx.try_send(Queued::unbudgeted(entry)).unwrap();
        }
        drop(tx);
        let (durable_tx, durable_rx) = watch::channel(replica.state().durable_seq);
        let stats = Stats::new(replica.state());
        let report = run(replica, rx, &durable_tx, &stats).unwrap();
        let published = *durable_rx.borrow();
        let figures = stats.snapshot();
        assert_eq!(figures.applied_seq, report.durable_seq);
        assert_eq!(figures.durable_seq, report.durable_seq);
        assert_eq!(figures.group_commits, report.commits);
        (report, published)
    }

    #[test]
    fn queued_entries_end_durable_and_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(dir.path());
        let (report, published) = run_queued(&mut replica, (1..=50).map(write).collect());
        assert_eq!(report.applied, 50);
        assert_eq!(report.durable_seq, 50);
        assert_eq!(published, 50);
        assert!(report.commits >= 1);
        assert_eq!(replica.state().durable_seq, 50);
        drop(replica);
        // Resumes from the persisted sequence.
        let mut replica = self::replica(dir.path());
        let (report, _) = run_queued(&mut replica, (51..=52).map(write).collect());
        assert_eq!(report.durable_seq, 52);
    }

    #[test]
    fn every_flush_is_a_commit_point() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(dir.path());
        let entries = (1..=40)
            .map(|seq| if seq % 4 == 0 { flush(seq) } else { write(seq) })
            .collect();
        let (report, published) = run_queued(&mut replica, entries);
        // Ten flushes, each committed on the spot; the last entry is one of them.
        assert!(report.commits >= 10, "{report:?}");
        assert_eq!(published, 40);
    }

    #[test]
    fn an_idle_channel_triggers_a_commit_without_closing() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(dir.path());
        let (tx, rx) = mpsc::channel(4);
        let (durable_tx, mut durable_rx) = watch::channel(0);
        let stats = Stats::new(replica.state());
        let applier = std::thread::spawn(move || run(&mut replica, rx, &durable_tx, &stats));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            for seq in 1..=3 {
                tx.send(Queued::unbudgeted(write(seq))).await.unwrap();
                // Not a flush and the channel stays open: idleness alone makes it durable.
                tokio::time::timeout(
                    Duration::from_secs(10),
                    durable_rx.wait_for(|&durable| durable == seq),
                )
                .await
                .expect("commit on idle")
                .unwrap();
            }
        });
        drop(tx);
        let report = applier.join().unwrap().unwrap();
        assert_eq!(report.commits, 3);
    }
}
