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
//!
//! Every entry applied is recorded in the [`applied marker`](crate::applied_marker) right
//! after its target write: one small unsynced write, enough to survive the daemon being
//! killed. A session starts from the durable sequence, so after a kill the sender resends
//! entries the target already holds; writing them again would take the target back
//! through states the primary never had (an older write over a newer one, until the newer
//! comes again). So the entries up to the marker's sequence, if it is from this boot, are
//! skipped: not written, yet counted applied, so the next commit makes them durable and
//! acknowledges them. The skip range is read at the start of each session, from the
//! durable sequence then; entries past it are applied as usual. A failed target sync
//! resets the marker (the synced writes may be lost), so those entries are written again.

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
    /// Resent entries not applied again: the target held them from before a restart.
    pub skipped: u64,
    /// Group commits made.
    pub commits: u64,
    /// The durable sequence at the end.
    pub durable_seq: u64,
}

/// Applies entries from `entries` until the channel closes, publishing every new durable
/// sequence on `durable` and counting what it does in `stats`. Resent entries the target
/// already holds are skipped, see the module doc. Stops at the first target or state
/// failure, leaving the entries applied since the last commit undurable (and
/// unacknowledged).
pub fn run(
    replica: &mut Replica,
    mut entries: mpsc::Receiver<Queued>,
    durable: &watch::Sender<u64>,
    stats: &Stats,
) -> Result<ApplyReport, ReplicaError> {
    let mut report = ApplyReport {
        applied: 0,
        skipped: 0,
        commits: 0,
        durable_seq: replica.state().durable_seq,
    };
    let mut last_applied = report.durable_seq;
    let already_applied = replica.applied_past_durable();
    if let Some(range) = &already_applied {
        tracing::info!(
            "entries {}..={} already applied before a restart; not re-applied",
            range.start(),
            range.end()
        );
    }
    // 0 skips nothing: every entry of a session is past the durable sequence.
    let skip_through = already_applied.map_or(0, |range| *range.end());
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
        if entry.seq <= skip_through {
            stats.entry_reapply_skipped(entry.seq);
            report.skipped += 1;
        } else {
            replica.apply(&entry)?;
            stats.entry_applied(&entry);
            report.applied += 1;
        }
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
    use crate::applied_marker::{BootId, MARKER_FILE_NAME};
    use crate::entry::Operation;
    use crate::state::{VolumeIdentity, STATE_FILE_NAME};
    use arepl_core::table::VolumeName;
    use bytes::Bytes;
    use std::path::Path;

    const BOOT: BootId = BootId::from_bytes([1; 16]);
    const NEXT_BOOT: BootId = BootId::from_bytes([2; 16]);

    fn replica(dir: &Path) -> Replica {
        replica_in(dir, BOOT)
    }

    /// The replica of volume "vol" in `dir`, opened as if the host ran `boot`.
    fn replica_in(dir: &Path, boot: BootId) -> Replica {
        let target = dir.join("target");
        if !target.exists() {
            std::fs::write(&target, vec![0u8; 1 << 20]).unwrap();
        }
        let mut replica = Replica::open_in_boot(&target, dir, boot).unwrap();
        if replica.state().identity.is_none() {
            let identity = VolumeIdentity {
                name: VolumeName::new("vol").unwrap(),
                size: 1 << 20,
            };
            replica.record_identity(identity).unwrap();
        }
        replica
    }

    /// Entry `seq`: block `seq` filled with `seq`.
    fn write(seq: u64) -> Entry {
        write_of(seq, seq as u8)
    }

    /// Entry `seq` with other contents than [`write`]: shows whether a resent entry was
    /// written again (a real sender resends the same contents).
    fn rewrite(seq: u64) -> Entry {
        write_of(seq, 0xEE)
    }

    fn write_of(seq: u64, byte: u8) -> Entry {
        Entry {
            seq,
            op: Operation::Write {
                offset: (seq % 64) * 4096,
                data: Bytes::from(vec![byte; 4096]),
                fua: false,
            },
        }
    }

    /// The byte block `seq` of [`write`] is filled with.
    fn block(replica: &Replica, seq: u64) -> u8 {
        let mut bytes = vec![0u8; 4096];
        replica
            .volume()
            .read((seq % 64) * 4096, &mut bytes)
            .unwrap();
        assert!(bytes.iter().all(|&b| b == bytes[0]), "block {seq} mixed");
        bytes[0]
    }

    /// Leaves the replica in `dir` as `kill -9` would: 1..=applied written and in the
    /// marker, only 1..=durable committed.
    fn killed_after(dir: &Path, boot: BootId, applied: u64, durable: u64) {
        let mut replica = replica_in(dir, boot);
        for seq in 1..=applied {
            replica.apply(&write(seq)).unwrap();
            if seq == durable {
                replica.make_durable(durable).unwrap();
            }
        }
        assert_eq!(replica.state().durable_seq, durable);
    }

    /// Entries `seqs` as a sender resends them, with other contents up to `rewritten`.
    fn resent(seqs: std::ops::RangeInclusive<u64>, rewritten: u64) -> Vec<Entry> {
        seqs.map(|seq| {
            if seq <= rewritten {
                rewrite(seq)
            } else {
                write(seq)
            }
        })
        .collect()
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

    #[test]
    fn entries_applied_before_a_kill_are_not_applied_again() {
        let dir = tempfile::tempdir().unwrap();
        killed_after(dir.path(), BOOT, 10, 4);
        let mut replica = replica(dir.path());
        assert_eq!(replica.applied_past_durable(), Some(5..=10));
        let (report, published) = run_queued(&mut replica, resent(5..=12, 10));
        assert_eq!((report.skipped, report.applied), (6, 2));
        assert_eq!((report.durable_seq, published), (12, 12));
        assert_eq!(replica.state().durable_seq, 12);
        // The target kept the original 5..=10 and gained 11 and 12.
        for seq in 1..=12 {
            assert_eq!(block(&replica, seq), seq as u8, "block {seq}");
        }
        assert_eq!(replica.applied_past_durable(), None);
    }

    #[test]
    fn each_session_skips_only_what_is_left_of_the_range() {
        let dir = tempfile::tempdir().unwrap();
        killed_after(dir.path(), BOOT, 10, 4);
        let mut replica = replica(dir.path());
        // The link drops after 5..=7: they are committed, 8..=10 are still to skip.
        let (report, _) = run_queued(&mut replica, resent(5..=7, 10));
        assert_eq!((report.skipped, report.durable_seq), (3, 7));
        assert_eq!(replica.applied_past_durable(), Some(8..=10));
        drop(replica);
        // Also after another restart in the same boot; nothing past 10 is skipped.
        let mut replica = self::replica(dir.path());
        let (report, _) = run_queued(&mut replica, resent(8..=12, 12));
        assert_eq!((report.skipped, report.applied), (3, 2));
        assert_eq!(report.durable_seq, 12);
        for seq in 1..=10 {
            assert_eq!(block(&replica, seq), seq as u8, "block {seq}");
        }
        assert_eq!((block(&replica, 11), block(&replica, 12)), (0xEE, 0xEE));
    }

    #[test]
    fn after_a_reboot_resent_entries_are_applied_again() {
        let dir = tempfile::tempdir().unwrap();
        killed_after(dir.path(), BOOT, 10, 4);
        let mut replica = replica_in(dir.path(), NEXT_BOOT);
        assert_eq!(replica.applied_past_durable(), None);
        let (report, _) = run_queued(&mut replica, resent(5..=12, 10));
        assert_eq!((report.skipped, report.applied), (0, 8));
        assert_eq!(report.durable_seq, 12);
        for seq in 5..=10 {
            assert_eq!(block(&replica, seq), 0xEE, "block {seq}");
        }
    }

    #[test]
    fn a_torn_or_garbage_marker_is_ignored() {
        let torn = |path: &Path| {
            let mut record = std::fs::read(path).unwrap();
            record[30] ^= 0x01;
            std::fs::write(path, record).unwrap();
        };
        let garbage = |path: &Path| std::fs::write(path, b"not a marker").unwrap();
        for damage in [&torn as &dyn Fn(&Path), &garbage] {
            let dir = tempfile::tempdir().unwrap();
            killed_after(dir.path(), BOOT, 10, 4);
            damage(&dir.path().join(MARKER_FILE_NAME));
            let mut replica = replica(dir.path());
            assert_eq!(replica.applied_past_durable(), None);
            let (report, _) = run_queued(&mut replica, resent(5..=12, 10));
            assert_eq!((report.skipped, report.applied), (0, 8));
            assert_eq!(block(&replica, 5), 0xEE);
        }
    }

    #[test]
    fn a_marker_at_or_below_the_durable_seq_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join(MARKER_FILE_NAME);
        killed_after(dir.path(), BOOT, 6, 4);
        let old_marker = std::fs::read(&marker).unwrap();
        let mut replica = replica(dir.path());
        let (report, _) = run_queued(&mut replica, resent(5..=10, 0));
        assert_eq!((report.skipped, report.durable_seq), (2, 10));
        drop(replica);
        // A marker at 6 from earlier in this boot, with the state durable at 10.
        std::fs::write(&marker, old_marker).unwrap();
        let mut replica = self::replica(dir.path());
        assert_eq!(replica.applied_past_durable(), None);
        let (report, _) = run_queued(&mut replica, resent(11..=12, 12));
        assert_eq!((report.skipped, report.applied), (0, 2));
    }

    #[test]
    fn recreated_state_invalidates_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        killed_after(dir.path(), BOOT, 10, 4);
        // The operator starts over: the state is recreated for a new history.
        std::fs::remove_file(dir.path().join(STATE_FILE_NAME)).unwrap();
        let mut replica = replica(dir.path());
        assert_eq!(replica.state().durable_seq, 0);
        assert_eq!(replica.applied_past_durable(), None);
        let (report, _) = run_queued(&mut replica, resent(1..=12, 10));
        assert_eq!((report.skipped, report.applied), (0, 12));
        for seq in 1..=10 {
            assert_eq!(block(&replica, seq), 0xEE, "block {seq}");
        }
    }
}
