//! Live figures for operators, updated by the connections and the applier and read by
//! the metrics endpoint.
//!
//! Everything is an atomic updated with `Relaxed` ordering: each figure is meaningful on
//! its own, and a snapshot taken while entries flow may mix instants by a few entries.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::consistency::{self, Verdict};
use crate::entry::{Entry, Operation};
use crate::replica::ReplicaError;
use crate::state::{Divergence, ReplicaState};

/// The shared live figures of one receiver.
#[derive(Debug)]
pub struct Stats {
    volume: Mutex<Option<String>>,
    received_seq: AtomicU64,
    applied_seq: AtomicU64,
    durable_seq: AtomicU64,
    applied: AppliedCounters,
    group_commits: AtomicU64,
    skipped_entries: AtomicU64,
    reapply_skipped: AtomicU64,
    digest_checks_matched: AtomicU64,
    digest_checks_failed: AtomicU64,
    verify: VerifyCounters,
    replica: Mutex<ReplicaFigures>,
    resyncs: AtomicU64,
    resync_protection_failures: AtomicU64,
    connections_accepted: AtomicU64,
    sessions_active: AtomicU64,
    session_errors: AtomicU64,
    sessions_refused: AtomicU64,
    malformed_frames: AtomicU64,
    auth_failures: AtomicU64,
    connections_busy: AtomicU64,
    target_io_errors: AtomicU64,
    state_io_errors: AtomicU64,
    last_frame: Moment,
    durable_advanced: Moment,
}

/// What the state says about the replica, as of its last change.
#[derive(Debug, Clone, Copy)]
struct ReplicaFigures {
    diverged: Option<Divergence>,
    verdict: Verdict,
    history_generation: u64,
}

impl ReplicaFigures {
    fn of(state: &ReplicaState) -> Self {
        Self {
            diverged: state.diverged,
            verdict: consistency::verdict(state),
            history_generation: state.history.map_or(0, |history| history.counter),
        }
    }
}

#[derive(Debug, Default)]
struct VerifyCounters {
    chunks: AtomicU64,
    bytes: AtomicU64,
    mismatches: AtomicU64,
}

#[derive(Debug, Default)]
struct AppliedCounters {
    bytes: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    discards: AtomicU64,
    write_zeroes: AtomicU64,
}

/// Why a connection ended with an error, as far as the figures care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A frame broke the wire format or the session rules.
    MalformedFrame,
    /// The `Hello` was refused (another volume, a size that does not fit, ...).
    Refused,
    /// Writing or syncing the target failed.
    TargetIo,
    /// Updating the state file failed.
    StateIo,
    /// A resync was refused: protecting the replica's image failed.
    ProtectionFailed,
    /// The peer failed authentication: no key, an unknown key, a wrong proof.
    Authentication,
    /// Anything else: a lost link, a `Hello` timeout.
    Other,
}

impl Failure {
    /// Which of the replica's parts failed.
    pub fn of_replica(err: &ReplicaError) -> Self {
        match err {
            ReplicaError::Target(_) => Self::TargetIo,
            ReplicaError::State(_) => Self::StateIo,
        }
    }
}

impl Stats {
    /// Figures starting from the persisted `state`.
    pub fn new(state: &ReplicaState) -> Self {
        let seq = state.durable_seq;
        Self {
            volume: Mutex::new(state.identity.as_ref().map(|id| id.name.to_string())),
            received_seq: AtomicU64::new(seq),
            applied_seq: AtomicU64::new(seq),
            durable_seq: AtomicU64::new(seq),
            applied: AppliedCounters::default(),
            group_commits: AtomicU64::new(0),
            skipped_entries: AtomicU64::new(0),
            reapply_skipped: AtomicU64::new(0),
            digest_checks_matched: AtomicU64::new(0),
            digest_checks_failed: AtomicU64::new(0),
            verify: VerifyCounters::default(),
            replica: Mutex::new(ReplicaFigures::of(state)),
            resyncs: AtomicU64::new(0),
            resync_protection_failures: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            sessions_active: AtomicU64::new(0),
            session_errors: AtomicU64::new(0),
            sessions_refused: AtomicU64::new(0),
            malformed_frames: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            connections_busy: AtomicU64::new(0),
            target_io_errors: AtomicU64::new(0),
            state_io_errors: AtomicU64::new(0),
            last_frame: Moment::default(),
            durable_advanced: Moment::default(),
        }
    }

    /// The volume a session was welcomed for.
    pub fn set_volume(&self, name: &str) {
        *self
            .volume
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(name.to_string());
    }

    /// A TCP connection was accepted.
    pub fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
    }

    /// A connection was closed at once: too many others were still in their handshake.
    pub fn connection_busy(&self) {
        self.connections_busy.fetch_add(1, Relaxed);
    }

    /// A session was welcomed; it counts as active until the guard is dropped.
    pub fn session_started(&self) -> ActiveSession<'_> {
        self.sessions_active.fetch_add(1, Relaxed);
        ActiveSession { stats: self }
    }

    /// A connection ended with an error.
    pub fn connection_failed(&self, failure: Failure) {
        self.session_errors.fetch_add(1, Relaxed);
        let counter = match failure {
            Failure::MalformedFrame => &self.malformed_frames,
            Failure::Authentication => &self.auth_failures,
            Failure::Refused => &self.sessions_refused,
            Failure::TargetIo => &self.target_io_errors,
            Failure::StateIo => &self.state_io_errors,
            Failure::ProtectionFailed => &self.resync_protection_failures,
            Failure::Other => return,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A frame arrived from a sender in (or opening) a session.
    pub fn frame_received(&self) {
        self.last_frame.mark();
    }

    /// Entry `seq` was admitted and queued to apply.
    pub fn entry_received(&self, seq: u64) {
        self.received_seq.fetch_max(seq, Relaxed);
    }

    /// A resent entry was skipped: it was applied before.
    pub fn entry_skipped(&self) {
        self.skipped_entries.fetch_add(1, Relaxed);
    }

    /// `count` entries applied before a restart (not durable then) were made durable at
    /// start without being written again.
    pub fn entries_recovered(&self, count: u64) {
        self.reapply_skipped.fetch_add(count, Relaxed);
    }

    /// A digest check matched (`true`) or found the replica diverged.
    pub fn digest_checked(&self, matched: bool) {
        let counter = if matched {
            &self.digest_checks_matched
        } else {
            &self.digest_checks_failed
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A `Verify` entry's chunk of `len` bytes was checked: it `matched` the primary's,
    /// or not.
    pub fn chunk_verified(&self, len: u32, matched: bool) {
        let verify = &self.verify;
        verify.chunks.fetch_add(1, Relaxed);
        verify.bytes.fetch_add(u64::from(len), Relaxed);
        if !matched {
            verify.mismatches.fetch_add(1, Relaxed);
        }
    }

    /// The state now recorded: divergence, history and consistency.
    pub fn state_changed(&self, state: &ReplicaState) {
        *self.replica_figures() = ReplicaFigures::of(state);
    }

    /// A resync began.
    pub fn resync_begun(&self) {
        self.resyncs.fetch_add(1, Relaxed);
    }

    fn replica_figures(&self) -> std::sync::MutexGuard<'_, ReplicaFigures> {
        self.replica
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `entry` was applied to the target (a `Verify` is counted by
    /// [`Self::chunk_verified`] instead).
    pub fn entry_applied(&self, entry: &Entry) {
        let applied = &self.applied;
        let counter = match &entry.op {
            Operation::Write { data, .. } => {
                applied.bytes.fetch_add(data.len() as u64, Relaxed);
                Some(&applied.writes)
            }
            Operation::Flush => Some(&applied.flushes),
            Operation::Discard { .. } => Some(&applied.discards),
            Operation::WriteZeroes { .. } => Some(&applied.write_zeroes),
            Operation::Verify { .. } => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Relaxed);
        }
        self.applied_seq.fetch_max(entry.seq, Relaxed);
    }

    /// The stream jumped to `seq` (a resync past entries the sender no longer holds):
    /// received, applied and durable through it.
    pub fn jumped(&self, seq: u64) {
        self.received_seq.fetch_max(seq, Relaxed);
        self.applied_seq.fetch_max(seq, Relaxed);
        if self.durable_seq.fetch_max(seq, Relaxed) < seq {
            self.durable_advanced.mark();
        }
    }

    /// A group commit made everything up to `seq` durable.
    pub fn committed(&self, seq: u64) {
        self.group_commits.fetch_add(1, Relaxed);
        if self.durable_seq.fetch_max(seq, Relaxed) < seq {
            self.durable_advanced.mark();
        }
    }

    /// The figures now.
    pub fn snapshot(&self) -> Snapshot {
        let applied = &self.applied;
        let replica = *self.replica_figures();
        Snapshot {
            volume: self
                .volume
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            received_seq: self.received_seq.load(Relaxed),
            applied_seq: self.applied_seq.load(Relaxed),
            durable_seq: self.durable_seq.load(Relaxed),
            applied_bytes: applied.bytes.load(Relaxed),
            applied_writes: applied.writes.load(Relaxed),
            applied_flushes: applied.flushes.load(Relaxed),
            applied_discards: applied.discards.load(Relaxed),
            applied_write_zeroes: applied.write_zeroes.load(Relaxed),
            group_commits: self.group_commits.load(Relaxed),
            skipped_entries: self.skipped_entries.load(Relaxed),
            reapply_skipped: self.reapply_skipped.load(Relaxed),
            digest_checks_matched: self.digest_checks_matched.load(Relaxed),
            digest_checks_failed: self.digest_checks_failed.load(Relaxed),
            verify_chunks: self.verify.chunks.load(Relaxed),
            verify_bytes: self.verify.bytes.load(Relaxed),
            verify_mismatches: self.verify.mismatches.load(Relaxed),
            diverged: replica.diverged,
            consistent: replica.verdict == Verdict::Consistent,
            resyncing: replica.verdict == Verdict::Resyncing,
            history_generation: replica.history_generation,
            resyncs: self.resyncs.load(Relaxed),
            resync_protection_failures: self.resync_protection_failures.load(Relaxed),
            connections_accepted: self.connections_accepted.load(Relaxed),
            sessions_active: self.sessions_active.load(Relaxed),
            session_errors: self.session_errors.load(Relaxed),
            sessions_refused: self.sessions_refused.load(Relaxed),
            malformed_frames: self.malformed_frames.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            connections_busy: self.connections_busy.load(Relaxed),
            target_io_errors: self.target_io_errors.load(Relaxed),
            state_io_errors: self.state_io_errors.load(Relaxed),
            since_last_frame: self.last_frame.elapsed(),
            since_durable_advanced: self.durable_advanced.elapsed(),
        }
    }
}

/// Counts a session as active while it lives.
#[derive(Debug)]
pub struct ActiveSession<'a> {
    stats: &'a Stats,
}

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        self.stats.sessions_active.fetch_sub(1, Relaxed);
    }
}

/// The figures at one instant; see [`crate::metrics`] for their meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The replicated volume's name, once known.
    pub volume: Option<String>,
    /// Highest sequence admitted and queued to apply.
    pub received_seq: u64,
    /// Highest sequence written to the target.
    pub applied_seq: u64,
    /// Highest sequence durable and acknowledged.
    pub durable_seq: u64,
    /// Payload bytes of the writes applied.
    pub applied_bytes: u64,
    /// Writes applied.
    pub applied_writes: u64,
    /// Flushes applied.
    pub applied_flushes: u64,
    /// Discards applied.
    pub applied_discards: u64,
    /// Write-zeroes applied.
    pub applied_write_zeroes: u64,
    /// Group commits made.
    pub group_commits: u64,
    /// Resent entries skipped.
    pub skipped_entries: u64,
    /// Entries applied before a restart and made durable at start without being
    /// written again.
    pub reapply_skipped: u64,
    /// Digest checks that matched the sender's.
    pub digest_checks_matched: u64,
    /// Digest checks that did not: each one found the replica diverged.
    pub digest_checks_failed: u64,
    /// Chunks an online verify checked.
    pub verify_chunks: u64,
    /// Bytes of those chunks.
    pub verify_bytes: u64,
    /// Checked chunks that differed from the primary's.
    pub verify_mismatches: u64,
    /// The divergence recorded in the state, if any.
    pub diverged: Option<Divergence>,
    /// The replica is a consistent image (`replicad status` says `consistent`).
    pub consistent: bool,
    /// A resync is under way (and no divergence found).
    pub resyncing: bool,
    /// The generation counter of the replica's history; 0 without one.
    pub history_generation: u64,
    /// Resyncs begun.
    pub resyncs: u64,
    /// Resyncs refused because protecting the image failed.
    pub resync_protection_failures: u64,
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// Sessions streaming now.
    pub sessions_active: u64,
    /// Connections that ended with an error.
    pub session_errors: u64,
    /// Refused `Hello`s.
    pub sessions_refused: u64,
    /// Frames that broke the wire format or the session rules.
    pub malformed_frames: u64,
    /// Connections whose peer failed authentication.
    pub auth_failures: u64,
    /// Connections closed at once because too many were in their handshake.
    pub connections_busy: u64,
    /// Failed target writes or syncs.
    pub target_io_errors: u64,
    /// Failed state file updates.
    pub state_io_errors: u64,
    /// Time since the last frame from a sender; `None` before the first.
    pub since_last_frame: Option<Duration>,
    /// Time since the durable sequence last advanced; `None` if it has not since start.
    pub since_durable_advanced: Option<Duration>,
}

/// When something last happened, as an atomic: nanoseconds after a fixed origin, plus
/// one so that zero means never.
#[derive(Debug)]
struct Moment {
    origin: Instant,
    nanos_plus_one: AtomicU64,
}

impl Default for Moment {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            nanos_plus_one: AtomicU64::new(0),
        }
    }
}

impl Moment {
    fn mark(&self) {
        // u64 nanoseconds last 584 years.
        let nanos = self.origin.elapsed().as_nanos() as u64;
        self.nanos_plus_one.fetch_max(nanos + 1, Relaxed);
    }

    fn elapsed(&self) -> Option<Duration> {
        match self.nanos_plus_one.load(Relaxed) {
            0 => None,
            stamp => Some(
                self.origin
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(stamp - 1)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arepl_core::table::VolumeName;
    use bytes::Bytes;

    fn write(seq: u64, len: usize) -> Entry {
        Entry::new(
            seq,
            Operation::Write {
                offset: 0,
                data: Bytes::from(vec![0u8; len]),
                fua: false,
            },
        )
    }

    #[test]
    fn figures_start_from_the_persisted_state() {
        let stats = Stats::new(&ReplicaState {
            durable_seq: 41,
            identity: Some(crate::state::VolumeIdentity {
                name: VolumeName::new("db").unwrap(),
                size: 4096,
            }),
            ..ReplicaState::default()
        });
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.volume.as_deref(), Some("db"));
        assert_eq!(
            (
                snapshot.received_seq,
                snapshot.applied_seq,
                snapshot.durable_seq
            ),
            (41, 41, 41)
        );
        assert_eq!(snapshot.since_last_frame, None);
        assert_eq!(snapshot.since_durable_advanced, None);
    }

    #[test]
    fn entries_sessions_and_failures_are_counted() {
        let stats = Stats::new(&ReplicaState::default());
        stats.frame_received();
        stats.entry_received(1);
        stats.entry_received(2);
        stats.entry_applied(&write(1, 4096));
        stats.entry_applied(&Entry::new(2, Operation::Flush));
        stats.committed(2);
        stats.entry_skipped();
        stats.entries_recovered(3);
        let session = stats.session_started();
        assert_eq!(stats.snapshot().sessions_active, 1);
        drop(session);
        for failure in [
            Failure::MalformedFrame,
            Failure::TargetIo,
            Failure::ProtectionFailed,
            Failure::Other,
        ] {
            stats.connection_failed(failure);
        }
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.sessions_active, 0);
        assert_eq!((snapshot.applied_seq, snapshot.durable_seq), (2, 2));
        assert_eq!(snapshot.reapply_skipped, 3);
        assert_eq!((snapshot.applied_writes, snapshot.applied_flushes), (1, 1));
        assert_eq!(snapshot.applied_bytes, 4096);
        assert_eq!((snapshot.group_commits, snapshot.skipped_entries), (1, 1));
        assert_eq!(snapshot.session_errors, 4);
        assert_eq!(snapshot.resync_protection_failures, 1);
        assert_eq!(
            (snapshot.malformed_frames, snapshot.target_io_errors),
            (1, 1)
        );
        assert_eq!(
            (snapshot.sessions_refused, snapshot.state_io_errors),
            (0, 0)
        );
        assert!(snapshot.since_last_frame.is_some());
        assert!(snapshot.since_durable_advanced.is_some());
    }

    #[test]
    fn history_and_consistency_follow_the_state() {
        let stats = Stats::new(&ReplicaState::fresh());
        let snapshot = stats.snapshot();
        assert!(!snapshot.consistent && !snapshot.resyncing);
        assert_eq!(snapshot.history_generation, 0);
        let history = arepl_core::history::History {
            uuid: [1; 16],
            counter: 4,
        };
        let resyncing = ReplicaState {
            history: Some(history),
            consistency: crate::state::Consistency::Resyncing { done_seq: None },
            ..ReplicaState::fresh()
        };
        stats.state_changed(&resyncing);
        stats.resync_begun();
        let snapshot = stats.snapshot();
        assert!(!snapshot.consistent && snapshot.resyncing);
        assert_eq!((snapshot.history_generation, snapshot.resyncs), (4, 1));
        stats.state_changed(&ReplicaState {
            consistency: crate::state::Consistency::Consistent,
            ..resyncing
        });
        let snapshot = stats.snapshot();
        assert!(snapshot.consistent && !snapshot.resyncing);
    }
}
