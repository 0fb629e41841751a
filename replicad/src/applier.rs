//! Applies one session's entries in order and makes them durable in groups, and checks
//! the sender's digests against what it applied.
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
//! Once the session's reading is over (taken over, sender gone, bad frame, shutdown),
//! the entries still queued are applied with one commit at the end, not one per flush
//! among them: nobody waits for their acknowledgements any more, while a new session
//! waits for this one to finish (a target whose flushes are slow once held a takeover
//! for minutes).
//!
//! Each time, the new durable sequence is published; the connection turns it into an `Ack`.
//!
//! Every entry applied is recorded in the [`applied marker`](crate::applied_marker) right
//! after its target write, with the replication digest through it: one small unsynced
//! write, enough to survive the daemon being killed (the next start makes those entries
//! durable, see [`Replica::open_in_boot`]).
//!
//! The sender's `Digest` frames arrive here in stream order, as checks: each says what the
//! digest through the entry before it should be. A check that differs from the digest of
//! what was applied means the replica is not the primary's image: it is recorded durably,
//! logged, counted and flagged on every `Ack` from then on (see
//! [`crate::state::Divergence`]).
//!
//! `Begin` and `ResyncDone` come in stream order too, and [`crate::resync`] carries them
//! out here: what a `Begin` records (a resync, after protecting the image) is durable
//! before any entry after it is written, and each commit checks whether a resync is now
//! complete.
//!
//! A `Verify` entry is an entry like the others (it counts in the digest and the durable
//! sequence) that writes nothing: when the applier reaches it, every entry before it is
//! written to the target and none after, so the chunk it names is hashed on the replica
//! there ([`crate::verify`]). A chunk that differs is logged, counted, recorded and
//! handed to the connection, which sends its `Mismatch` before any `Ack` that covers the
//! entry: that `Ack` comes from a commit after it.

use std::time::{Duration, Instant};

use arepl_core::digest::Digest;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::consistency::Begin;
use crate::entry::{Entry, Operation};
use crate::protection::{ProtectionError, ResyncProtection};
use crate::replica::{Replica, ReplicaError};
use crate::resync;
use crate::sequencer::ProtocolError;
use crate::state::{Divergence, StateError};
use crate::stats::Stats;
use crate::verify::ChunkMismatch;

/// Longest time an applied entry waits for durability under continuous input.
pub const MAX_BATCH_AGE: Duration = Duration::from_millis(5);

/// The sender's digest through entry `seq` (`None`: the sender does not know it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestCheck {
    /// The sequence it covers: the last entry admitted before it.
    pub seq: u64,
    /// The sender's digest through it.
    pub digest: Option<Digest>,
}

/// What the connection hands the applier, in stream order.
#[derive(Debug)]
enum Item {
    Apply(Entry),
    Check(DigestCheck),
    Begin(Begin),
    ResyncDone(u64),
}

/// An entry (or a digest check, `Begin` or `ResyncDone`) on its way to the applier. An
/// entry holds its share of the queue's byte budget until it is applied, so the queue
/// can be long in entries yet bounded in memory.
#[derive(Debug)]
pub struct Queued {
    item: Item,
    _budget: Option<OwnedSemaphorePermit>,
}

impl Queued {
    /// `entry`, releasing `budget` once applied.
    pub fn new(entry: Entry, budget: OwnedSemaphorePermit) -> Self {
        Self {
            item: Item::Apply(entry),
            _budget: Some(budget),
        }
    }

    fn unbudgeted_item(item: Item) -> Self {
        Self {
            item,
            _budget: None,
        }
    }

    /// `entry` outside any budget.
    pub fn unbudgeted(entry: Entry) -> Self {
        Self::unbudgeted_item(Item::Apply(entry))
    }

    /// A digest check, done once every entry before it is applied.
    pub fn check(check: DigestCheck) -> Self {
        Self::unbudgeted_item(Item::Check(check))
    }

    /// A `Begin`, carried out before any entry after it is applied.
    pub fn begin(begin: Begin) -> Self {
        Self::unbudgeted_item(Item::Begin(begin))
    }

    /// A `ResyncDone` for entry `seq`.
    pub fn resync_done(seq: u64) -> Self {
        Self::unbudgeted_item(Item::ResyncDone(seq))
    }
}

/// Where the applier publishes what the sender must hear.
#[derive(Debug)]
pub struct Published {
    /// The durable sequence.
    pub durable: watch::Sender<u64>,
    /// The first sequence that may differ from the primary, once a check failed.
    pub diverged_from: watch::Sender<Option<u64>>,
    /// Chunks an online verify found different, in stream order. Each is sent before
    /// the durable sequence that covers it is published.
    pub mismatches: mpsc::UnboundedSender<ChunkMismatch>,
}

/// What one session's applier did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries applied.
    pub applied: u64,
    /// Group commits made.
    pub commits: u64,
    /// Digest checks that matched.
    pub checks_matched: u64,
    /// Digest checks that did not.
    pub checks_failed: u64,
    /// Chunks an online verify checked.
    pub chunks_verified: u64,
    /// Those that differed from the primary's.
    pub chunk_mismatches: u64,
    /// The durable sequence at the end.
    pub durable_seq: u64,
}

/// Why the applier stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The target or the state failed.
    #[error("target or state failed: {0}")]
    Replica(#[from] ReplicaError),
    /// A `Begin` the replica cannot follow.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A resync whose protection failed: refused.
    #[error(transparent)]
    ResyncRefused(#[from] ProtectionError),
}

impl From<StateError> for ApplyError {
    fn from(err: StateError) -> Self {
        Self::Replica(err.into())
    }
}

/// What the applier needs besides its queue.
#[derive(Debug, Clone, Copy)]
pub struct Outputs<'a> {
    /// Where durable sequences and divergence go.
    pub published: &'a Published,
    /// The live figures.
    pub stats: &'a Stats,
    /// How a resync protects the replica.
    pub protection: &'a ResyncProtection,
}

/// Applies entries from `queue` until the channel closes, publishing every new durable
/// sequence and any divergence found, and counting what it does in `outputs.stats`;
/// once `reading_over` is cancelled, commits only at the end. Stops at the first target
/// or state failure, leaving the entries applied since the last commit undurable (and
/// unacknowledged), and at a `Begin` it cannot carry out, before writing anything after
/// it. Either way the verify record is written at the end.
pub fn run(
    replica: &mut Replica,
    queue: mpsc::Receiver<Queued>,
    outputs: Outputs<'_>,
    reading_over: &CancellationToken,
) -> Result<ApplyReport, ApplyError> {
    let ran = apply_all(replica, queue, outputs, reading_over);
    replica.persist_verify(true);
    ran
}

fn apply_all(
    replica: &mut Replica,
    mut queue: mpsc::Receiver<Queued>,
    outputs: Outputs<'_>,
    reading_over: &CancellationToken,
) -> Result<ApplyReport, ApplyError> {
    let mut applier = Applier {
        report: ApplyReport {
            applied: 0,
            commits: 0,
            checks_matched: 0,
            checks_failed: 0,
            chunks_verified: 0,
            chunk_mismatches: 0,
            durable_seq: replica.state().durable_seq,
        },
        replica,
        outputs,
    };
    let mut batch_started: Option<Instant> = None;
    loop {
        let next = if batch_started.is_some() {
            match queue.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Empty) => {
                    applier.commit()?;
                    // Idle: the figures on disk catch up with the checks made.
                    applier.replica.persist_verify(true);
                    batch_started = None;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        } else {
            queue.blocking_recv()
        };
        let Some(Queued { item, .. }) = next else {
            break;
        };
        let entry = match item {
            Item::Apply(entry) => entry,
            Item::Check(check) => {
                applier.verify(check)?;
                continue;
            }
            Item::Begin(begin) => {
                applier.begin(&begin)?;
                continue;
            }
            Item::ResyncDone(seq) => {
                applier.resync_done(seq)?;
                continue;
            }
        };
        applier.apply(&entry)?;
        let started = *batch_started.get_or_insert_with(Instant::now);
        let due = entry.demands_durability() || started.elapsed() >= MAX_BATCH_AGE;
        if due && !reading_over.is_cancelled() {
            applier.commit()?;
            applier.replica.persist_verify(false);
            batch_started = None;
        }
    }
    if batch_started.is_some() {
        applier.commit()?;
    }
    Ok(applier.report)
}

/// One session's applier.
struct Applier<'a> {
    replica: &'a mut Replica,
    outputs: Outputs<'a>,
    report: ApplyReport,
}

impl Applier<'_> {
    fn apply(&mut self, entry: &Entry) -> Result<(), ReplicaError> {
        debug_assert_eq!(
            entry.seq,
            self.replica.applied_seq() + 1,
            "the sequencer keeps order"
        );
        if let Operation::Verify { offset, check } = entry.op {
            self.check_chunk(entry.seq, offset, check)?;
        }
        self.replica.apply(entry)?;
        self.outputs.stats.entry_applied(entry);
        self.report.applied += 1;
        Ok(())
    }

    /// Checks the chunk of `Verify` entry `seq`, every entry before it applied.
    fn check_chunk(
        &mut self,
        seq: u64,
        offset: u64,
        check: arepl_core::verify::ChunkCheck,
    ) -> Result<(), ReplicaError> {
        let mismatch = self.replica.check_chunk(seq, offset, check)?;
        self.outputs
            .stats
            .chunk_verified(check.len, mismatch.is_none());
        self.report.chunks_verified += 1;
        let Some(mismatch) = mismatch else {
            tracing::debug!(
                "verify: bytes {offset}..{} match the primary (seq {seq})",
                offset + u64::from(check.len)
            );
            return Ok(());
        };
        let volume = self.replica.state().identity.as_ref();
        tracing::warn!(
            "verify: bytes {}..{} of volume {} differ from the primary (seq {seq})",
            mismatch.offset,
            mismatch.end(),
            volume.map_or("(unnamed)", |identity| identity.name.as_str()),
        );
        self.report.chunk_mismatches += 1;
        // Fails only once the connection stopped sending: nobody hears the Ack either.
        let _ = self.outputs.published.mismatches.send(mismatch);
        Ok(())
    }

    fn commit(&mut self) -> Result<(), ReplicaError> {
        let seq = self.replica.make_durable()?;
        let stats = self.outputs.stats;
        stats.committed(seq);
        self.report.commits += 1;
        self.report.durable_seq = seq;
        self.outputs.published.durable.send_replace(seq);
        if resync::complete_if_due(self.replica, self.outputs.protection)? {
            stats.state_changed(self.replica.state());
        }
        Ok(())
    }

    fn begin(&mut self, begin: &Begin) -> Result<(), ApplyError> {
        resync::begin(
            self.replica,
            self.outputs.protection,
            begin,
            self.outputs.stats,
        )?;
        // A resync clears the divergence: the acks stop saying so. One that begins past
        // the durable sequence moved it there.
        self.publish_divergence();
        let durable = self.replica.state().durable_seq;
        if durable > self.report.durable_seq {
            self.report.durable_seq = durable;
            self.outputs.published.durable.send_replace(durable);
        }
        Ok(())
    }

    fn resync_done(&mut self, seq: u64) -> Result<(), StateError> {
        resync::done(self.replica, self.outputs.protection, seq)?;
        self.outputs.stats.state_changed(self.replica.state());
        Ok(())
    }

    fn publish_divergence(&self) {
        let from = self.replica.state().diverged.map(|d| d.from_seq);
        self.outputs.published.diverged_from.send_replace(from);
    }

    /// Compares the sender's digest through `check.seq` with that of what was applied.
    fn verify(&mut self, check: DigestCheck) -> Result<(), ReplicaError> {
        let replica = &mut *self.replica;
        debug_assert_eq!(
            check.seq,
            replica.applied_seq(),
            "the sequencer places checks"
        );
        let Some(sender) = check.digest else {
            return Ok(());
        };
        let Some(applied) = replica.applied_digest() else {
            // State from before digests: the sender's history is the only one known.
            replica.adopt_digest(sender)?;
            tracing::info!(
                "replication digest taken from the sender at seq {}",
                check.seq
            );
            return Ok(());
        };
        let stats = self.outputs.stats;
        if applied == sender {
            replica.note_verified(check.seq);
            stats.digest_checked(true);
            self.report.checks_matched += 1;
            return Ok(());
        }
        let divergence = Divergence {
            from_seq: replica.verified_seq() + 1,
            found_at: check.seq,
        };
        tracing::error!(
            "REPLICA DIVERGED: the digest of the entries applied through seq {} is {:#018x}, \
             the sender's is {:#018x}; the replica may differ from the primary in what seqs \
             {}..={} wrote, and needs a resync",
            check.seq,
            applied.0,
            sender.0,
            divergence.from_seq,
            divergence.found_at
        );
        replica.record_divergence(divergence, sender)?;
        stats.digest_checked(false);
        stats.state_changed(replica.state());
        self.report.checks_failed += 1;
        self.publish_divergence();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applied_marker::{BootId, MARKER_FILE_NAME};
    use crate::entry::Operation;
    use crate::state::{VolumeIdentity, STATE_FILE_NAME};
    use arepl_core::digest::EMPTY;
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
        Entry::new(
            seq,
            Operation::Write {
                offset: (seq % 64) * 4096,
                data: Bytes::from(vec![byte; 4096]),
                fua: false,
            },
        )
    }

    fn flush(seq: u64) -> Entry {
        Entry::new(seq, Operation::Flush)
    }

    /// The digest of [`write`] 1..=`seq` over an empty history.
    fn digest_through(seq: u64) -> Digest {
        (1..=seq).fold(EMPTY, |d, s| Digest(d.0.wrapping_add(write(s).digest_term)))
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
        let first = replica.applied_seq() + 1;
        for seq in first..=applied {
            replica.apply(&write(seq)).unwrap();
            if seq == durable {
                replica.make_durable().unwrap();
            }
        }
        assert_eq!(replica.state().durable_seq, durable.max(first - 1));
    }

    static NO_PROTECTION: std::sync::LazyLock<ResyncProtection> =
        std::sync::LazyLock::new(ResyncProtection::default);

    fn outputs<'a>(published: &'a Published, stats: &'a Stats) -> Outputs<'a> {
        Outputs {
            published,
            stats,
            protection: &NO_PROTECTION,
        }
    }

    /// Runs the applier over `items`, all queued before it starts.
    fn run_items(replica: &mut Replica, items: Vec<Queued>) -> (ApplyReport, Published) {
        run_with_mismatches(replica, items, mpsc::unbounded_channel().0)
    }

    /// [`run_items`], reporting differing chunks to `mismatches`.
    fn run_with_mismatches(
        replica: &mut Replica,
        items: Vec<Queued>,
        mismatches: mpsc::UnboundedSender<ChunkMismatch>,
    ) -> (ApplyReport, Published) {
        let (tx, rx) = mpsc::channel(items.len().max(1));
        for item in items {
            tx.try_send(item).unwrap();
        }
        drop(tx);
        let published = Published {
            durable: watch::channel(replica.state().durable_seq).0,
            diverged_from: watch::channel(None).0,
            mismatches,
        };
        let stats = Stats::new(replica.state());
        let report = run(
            replica,
            rx,
            outputs(&published, &stats),
            &CancellationToken::new(),
        )
        .unwrap();
        let figures = stats.snapshot();
        assert_eq!(
            figures.applied_seq,
            report.durable_seq.max(figures.applied_seq)
        );
        assert_eq!(figures.group_commits, report.commits);
        assert_eq!(figures.digest_checks_failed, report.checks_failed);
        (report, published)
    }

    fn run_queued(replica: &mut Replica, entries: Vec<Entry>) -> (ApplyReport, u64) {
        let items = entries.into_iter().map(Queued::unbudgeted).collect();
        let (report, published) = run_items(replica, items);
        let durable = *published.durable.borrow();
        (report, durable)
    }

    fn check(seq: u64, digest: Digest) -> Queued {
        Queued::check(DigestCheck {
            seq,
            digest: Some(digest),
        })
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
        assert_eq!(replica.state().digest, Some(digest_through(50)));
        drop(replica);
        // Resumes from the persisted sequence and digest.
        let mut replica = self::replica(dir.path());
        assert_eq!(replica.applied_digest(), Some(digest_through(50)));
        let (report, _) = run_queued(&mut replica, (51..=52).map(write).collect());
        assert_eq!(report.durable_seq, 52);
        assert_eq!(replica.state().digest, Some(digest_through(52)));
    }

    #[test]
    fn entries_queued_when_reading_ended_are_committed_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(dir.path());
        let (tx, rx) = mpsc::channel(16);
        for seq in 1..=10 {
            let entry = if seq % 2 == 0 { flush(seq) } else { write(seq) };
            tx.try_send(Queued::unbudgeted(entry)).unwrap();
        }
        let published = Published {
            durable: watch::channel(0).0,
            diverged_from: watch::channel(None).0,
            mismatches: mpsc::unbounded_channel().0,
        };
        let stats = Stats::new(replica.state());
        let over = CancellationToken::new();
        over.cancel();
        drop(tx);
        // Five flushes among them, but nobody waits for their acks: one commit.
        let report = run(&mut replica, rx, outputs(&published, &stats), &over).unwrap();
        assert_eq!(
            (report.applied, report.commits, report.durable_seq),
            (10, 1, 10)
        );
        assert_eq!(replica.state().durable_seq, 10);
        assert_eq!(*published.durable.borrow(), 10);
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
        let published = Published {
            durable: durable_tx,
            diverged_from: watch::channel(None).0,
            mismatches: mpsc::unbounded_channel().0,
        };
        let stats = Stats::new(replica.state());
        let applier = std::thread::spawn(move || {
            run(
                &mut replica,
                rx,
                outputs(&published, &stats),
                &CancellationToken::new(),
            )
        });
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
    fn entries_applied_before_a_kill_are_durable_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        killed_after(dir.path(), BOOT, 10, 4);
        let mut replica = replica(dir.path());
        // The Welcome will say 10: the sender resends nothing the target holds.
        assert_eq!(replica.state().durable_seq, 10);
        assert_eq!(replica.state().digest, Some(digest_through(10)));
        let (report, published) = run_queued(&mut replica, vec![write(11), write(12)]);
        assert_eq!((report.applied, published), (2, 12));
        for seq in 1..=12 {
            assert_eq!(block(&replica, seq), seq as u8, "block {seq}");
        }
    }

    #[test]
    fn kills_in_quick_succession_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Killed again and again: while recovering (nothing new applied), after a few
        // new entries, and after a commit with more applied past it.
        killed_after(dir.path(), BOOT, 10, 4);
        killed_after(dir.path(), BOOT, 10, 10);
        killed_after(dir.path(), BOOT, 13, 0);
        killed_after(dir.path(), BOOT, 17, 15);
        let mut replica = replica(dir.path());
        assert_eq!(replica.state().durable_seq, 17);
        assert_eq!(replica.state().digest, Some(digest_through(17)));
        let (report, _) = run_items(&mut replica, vec![check(17, digest_through(17))]);
        assert_eq!((report.checks_matched, report.checks_failed), (1, 0));
        for seq in 1..=17 {
            assert_eq!(block(&replica, seq), seq as u8, "block {seq}");
        }
    }

    #[test]
    fn after_a_reboot_resent_entries_are_applied_again() {
        let dir = tempfile::tempdir().unwrap();
        killed_after(dir.path(), BOOT, 10, 4);
        let mut replica = replica_in(dir.path(), NEXT_BOOT);
        assert_eq!(replica.state().durable_seq, 4);
        let (report, _) = run_queued(&mut replica, (5..=12).map(rewrite).collect());
        assert_eq!(report.applied, 8);
        assert_eq!(report.durable_seq, 12);
        for seq in 5..=12 {
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
            let replica = replica(dir.path());
            assert_eq!(replica.state().durable_seq, 4);
        }
    }

    #[test]
    fn a_marker_at_or_below_the_durable_seq_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join(MARKER_FILE_NAME);
        killed_after(dir.path(), BOOT, 6, 4);
        let old_marker = std::fs::read(&marker).unwrap();
        let mut replica = replica(dir.path());
        run_queued(&mut replica, (7..=10).map(write).collect());
        drop(replica);
        // A marker at 6 from earlier in this boot, with the state durable at 10.
        std::fs::write(&marker, old_marker).unwrap();
        let replica = self::replica(dir.path());
        assert_eq!(replica.state().durable_seq, 10);
        assert_eq!(replica.state().digest, Some(digest_through(10)));
    }

    #[test]
    fn recreated_state_invalidates_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        killed_after(dir.path(), BOOT, 10, 4);
        // The operator starts over: the state is recreated for a new history.
        std::fs::remove_file(dir.path().join(STATE_FILE_NAME)).unwrap();
        let mut replica = replica(dir.path());
        assert_eq!(replica.state().durable_seq, 0);
        let (report, _) = run_queued(&mut replica, (1..=12).map(rewrite).collect());
        assert_eq!(report.applied, 12);
        for seq in 1..=10 {
            assert_eq!(block(&replica, seq), 0xEE, "block {seq}");
        }
    }

    #[test]
    fn matching_digests_pass_and_a_mismatch_is_recorded_and_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(dir.path());
        let mut items: Vec<Queued> = vec![check(0, EMPTY)];
        items.extend((1..=5).map(|seq| Queued::unbudgeted(write(seq))));
        items.push(check(5, digest_through(5)));
        // The sender's 6 is another write than the one applied: its digest differs.
        items.push(Queued::unbudgeted(write(6)));
        let sender_6 = Digest(digest_through(5).0.wrapping_add(rewrite(6).digest_term));
        items.push(check(6, sender_6));
        // From there on the sender's history is followed: the next check matches.
        items.push(Queued::unbudgeted(write(7)));
        items.push(check(
            7,
            Digest(sender_6.0.wrapping_add(write(7).digest_term)),
        ));
        let (report, published) = run_items(&mut replica, items);
        assert_eq!((report.checks_matched, report.checks_failed), (3, 1));
        assert_eq!(*published.diverged_from.borrow(), Some(6));
        drop(replica);
        let replica = self::replica(dir.path());
        assert_eq!(
            replica.state().diverged,
            Some(Divergence {
                from_seq: 6,
                found_at: 6
            })
        );
    }

    /// A `Verify` entry of the 4 KiB block [`write`] `of` writes, filled with `byte`.
    fn verify_block(seq: u64, of: u64, byte: u8) -> Entry {
        Entry::new(
            seq,
            Operation::Verify {
                offset: (of % 64) * 4096,
                check: arepl_core::verify::ChunkCheck::of(&[byte; 4096]),
            },
        )
    }

    /// Log lines written while `work` runs on this thread.
    fn logged<T>(work: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone)]
        struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture(Default::default());
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, work);
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        (out, text)
    }

    #[test]
    fn a_verify_hashes_the_replica_after_every_earlier_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(dir.path());
        // 1 writes block 1, 2 checks it; 3 overwrites it, 4 checks it again; 5 checks
        // the still empty block 5 and 6 writes it: a check sees no later entry.
        let overwrite = Entry::new(
            3,
            Operation::Write {
                offset: 4096,
                data: Bytes::from(vec![0x33; 4096]),
                fua: false,
            },
        );
        let items = [
            write(1),
            verify_block(2, 1, 1),
            overwrite,
            verify_block(4, 1, 0x33),
            verify_block(5, 6, 0),
            write_of(6, 5),
        ]
        .into_iter()
        .map(Queued::unbudgeted)
        .collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (report, _) = run_with_mismatches(&mut replica, items, tx);
        assert_eq!((report.applied, report.durable_seq), (6, 6));
        assert_eq!((report.chunks_verified, report.chunk_mismatches), (3, 0));
        assert!(rx.try_recv().is_err(), "a matching chunk was reported");
        // Verify entries count in the digest like any entry.
        assert_eq!(replica.state().digest, replica.applied_digest());
        let record = crate::verify::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            (
                record.chunks,
                record.bytes,
                record.mismatches,
                record.last_seq
            ),
            (3, 3 * 4096, 0, 5)
        );
        assert_eq!(block(&replica, 6), 5);
    }

    #[test]
    fn a_differing_chunk_is_logged_recorded_and_reported_before_it_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(dir.path());
        let items = vec![
            Queued::unbudgeted(write(1)),
            // The primary has 0x77 where the replica has 1s.
            Queued::unbudgeted(verify_block(2, 1, 0x77)),
            Queued::unbudgeted(flush(3)),
        ];
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (durable_tx, mut durable_rx) = watch::channel(0);
        let published = Published {
            durable: durable_tx,
            diverged_from: watch::channel(None).0,
            mismatches: tx,
        };
        let stats = Stats::new(replica.state());
        let (queue_tx, queue_rx) = mpsc::channel(items.len());
        for item in items {
            queue_tx.try_send(item).unwrap();
        }
        drop(queue_tx);
        // Each durable sequence published must find the mismatches of the entries it
        // covers already queued.
        let watcher = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut seen = Vec::new();
                while durable_rx.changed().await.is_ok() {
                    let durable = *durable_rx.borrow_and_update();
                    while let Ok(mismatch) = rx.try_recv() {
                        seen.push(mismatch);
                    }
                    if durable >= 2 {
                        assert_eq!(seen.len(), 1, "durable {durable} before its Mismatch");
                    }
                }
                seen
            })
        });
        let (report, log) = logged(|| {
            run(
                &mut replica,
                queue_rx,
                outputs(&published, &stats),
                &CancellationToken::new(),
            )
            .unwrap()
        });
        drop(published);
        let seen = watcher.join().unwrap();
        assert_eq!(
            seen,
            [ChunkMismatch {
                seq: 2,
                offset: 4096,
                len: 4096
            }]
        );
        assert_eq!((report.chunks_verified, report.chunk_mismatches), (1, 1));
        assert_eq!(report.durable_seq, 3);
        assert!(
            log.contains(" WARN ")
                && log.contains(
                    "verify: bytes 4096..8192 of volume vol differ from the primary (seq 2)"
                ),
            "{log}"
        );
        let figures = stats.snapshot();
        assert_eq!(
            (
                figures.verify_chunks,
                figures.verify_bytes,
                figures.verify_mismatches
            ),
            (1, 4096, 1)
        );
        let record = crate::verify::load(dir.path()).unwrap().unwrap();
        assert_eq!(record.mismatches, 1);
        assert_eq!(record.recent.iter().copied().collect::<Vec<_>>(), seen);
        // Nothing was written by the check, and a replica differing is no divergence
        // of the stream.
        assert_eq!(block(&replica, 1), 1);
        assert_eq!(replica.state().diverged, None);
    }

    #[test]
    fn a_replica_without_a_digest_takes_the_senders() {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = replica(dir.path());
        run_queued(&mut replica, (1..=3).map(write).collect());
        // As if the state came from an older replicad.
        replica.forget_digest_for_test();
        let (report, _) = run_items(
            &mut replica,
            vec![check(3, Digest(99)), Queued::unbudgeted(write(4))],
        );
        assert_eq!(report.checks_failed, 0);
        assert_eq!(
            replica.state().digest,
            Some(Digest(99u64.wrapping_add(write(4).digest_term)))
        );
    }
}
