//! The replica: the target volume, the state that says how much of it is durable, the
//! marker that says how much of it is applied in this boot, and the record of the online
//! verify's checks.
//!
//! Blocking; async code calls it from blocking threads.

use std::io;
use std::path::Path;

use arepl_core::digest::Digest;
use arepl_core::verify::ChunkCheck;

use crate::applied_marker::{Applied, AppliedMarker, BootId};
use crate::entry::{Entry, Operation};
use crate::state::{Divergence, ReplicaState, StateError, StateStore, VolumeIdentity};
use crate::verify::{ChunkMismatch, VerifyLog};
use crate::volume::Volume;

/// Why the replica cannot be opened or updated.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The target failed.
    #[error(transparent)]
    Target(#[from] io::Error),
    /// The state directory failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The target, its durable state and its applied marker.
#[derive(Debug)]
pub struct Replica {
    volume: Volume,
    store: StateStore,
    marker: AppliedMarker,
    /// The last entry written to the target (durable or not), and the digest through
    /// it when known.
    applied_seq: u64,
    applied_digest: Option<Digest>,
    /// The highest sequence whose digest matched the sender's since this daemon started
    /// (0: none yet).
    verified_seq: u64,
    /// Entries a killed daemon applied that opening made durable.
    recovered: u64,
    /// What the online verify's checks found.
    verify: VerifyLog,
    /// The bytes of the chunk being checked.
    chunk: Vec<u8>,
}

impl Replica {
    /// Opens the target and the state directory (creating fresh state if there is none),
    /// in the boot the host is running.
    pub fn open(target: &Path, state_dir: &Path) -> Result<Self, ReplicaError> {
        Self::open_in_boot(target, state_dir, BootId::current()?)
    }

    /// [`Self::open`] as if the host were running the boot `boot`.
    ///
    /// Entries a killed daemon applied past the durable sequence are still on the target
    /// (the marker says which, in this boot): they are made durable here, before any
    /// session, so the sender resends only what the target lacks. Writing them again
    /// instead would take the target back through states the primary never had, an older
    /// write over a newer one until the newer came again.
    pub fn open_in_boot(
        target: &Path,
        state_dir: &Path,
        boot: BootId,
    ) -> Result<Self, ReplicaError> {
        let volume = Volume::open(target)?;
        let store = StateStore::open(state_dir)?;
        let mut marker = AppliedMarker::open(state_dir, boot)?;
        let verify = VerifyLog::open(state_dir);
        if store.state().identity.is_none() {
            // Fresh (or recreated) state has no history a marker could belong to.
            marker.reset()?;
        }
        let state = store.state().clone();
        let mut replica = Self {
            volume,
            store,
            marker,
            applied_seq: state.durable_seq,
            applied_digest: state.digest,
            verified_seq: 0,
            recovered: 0,
            verify,
            chunk: Vec::new(),
        };
        if let Some(applied) = replica.marker.applied() {
            if applied.seq > state.durable_seq {
                replica.adopt_applied(applied)?;
            }
        }
        Ok(replica)
    }

    /// Makes the entries a killed daemon applied (`applied`, from the marker) durable.
    fn adopt_applied(&mut self, applied: Applied) -> Result<(), ReplicaError> {
        let durable = self.state().durable_seq;
        self.applied_seq = applied.seq;
        self.applied_digest = Some(applied.digest);
        self.make_durable()?;
        self.recovered = applied.seq - durable;
        tracing::info!(
            "entries {}..={} were applied before a restart and are on the target; made \
             durable without writing them again",
            durable + 1,
            applied.seq
        );
        Ok(())
    }

    /// How many entries a killed daemon had applied that opening made durable.
    pub fn recovered_entries(&self) -> u64 {
        self.recovered
    }

    /// The persisted state.
    pub fn state(&self) -> &ReplicaState {
        self.store.state()
    }

    /// The target.
    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    /// The replication digest through the last applied entry, if known.
    pub fn applied_digest(&self) -> Option<Digest> {
        self.applied_digest
    }

    /// The last entry written to the target.
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    /// Notes that the digest through `seq` matched the sender's.
    pub fn note_verified(&mut self, seq: u64) {
        self.verified_seq = self.verified_seq.max(seq);
    }

    /// The highest sequence whose digest matched the sender's since this daemon
    /// started; 0 if none did.
    pub fn verified_seq(&self) -> u64 {
        self.verified_seq
    }

    /// Applies one entry to the target and records it in the applied marker; it is
    /// durable only after [`Self::make_durable`].
    pub fn apply(&mut self, entry: &Entry) -> Result<(), ReplicaError> {
        match &entry.op {
            Operation::Write { offset, data, .. } => self.volume.write(*offset, data)?,
            Operation::Flush => {}
            Operation::Discard { offset, len } => self.volume.discard(*offset, *len)?,
            Operation::WriteZeroes { offset, len } => self.volume.write_zeroes(*offset, *len)?,
            // Checked by `check_chunk` before it is applied.
            Operation::Verify { .. } => {}
        }
        self.applied_seq = entry.seq;
        self.applied_digest = self
            .applied_digest
            .map(|digest| Digest(digest.0.wrapping_add(entry.digest_term)));
        // Only after the target write: the marker must never claim what the target lacks.
        // It vouches for entries only with their digest, which the next start checks.
        match self.applied_digest {
            Some(digest) => self.marker.record(Applied {
                seq: entry.seq,
                digest,
            })?,
            None => self.marker.reset()?,
        }
        Ok(())
    }

    /// Hashes the `check.len` bytes at `offset` of the target as they are now and
    /// compares them with `check`, for the `Verify` entry `seq`: the caller applied every
    /// entry before it and none after (each write is complete when it returns, and a
    /// direct write drops the cached pages it covers, so the read sees exactly those).
    /// Counts the check in the verify record and returns the mismatch, if the bytes
    /// differ. Writes nothing to the target.
    pub fn check_chunk(
        &mut self,
        seq: u64,
        offset: u64,
        check: ChunkCheck,
    ) -> Result<Option<ChunkMismatch>, ReplicaError> {
        let len = check.len as usize;
        self.chunk.resize(len, 0);
        let chunk = &mut self.chunk[..len];
        self.volume.read(offset, chunk)?;
        let matched = ChunkCheck::of(chunk) == check;
        self.verify.note(seq, offset, check.len, matched);
        Ok((!matched).then_some(ChunkMismatch {
            seq,
            offset,
            len: check.len,
        }))
    }

    /// Writes the verify record if checks were counted since it was last written, and
    /// `now` is set or the last write is a while ago (see [`VerifyLog::persist`]).
    pub fn persist_verify(&mut self, now: bool) {
        self.verify.persist(now);
    }

    /// Makes every applied entry durable: the target is synced first, and only then does
    /// the state claim the last applied sequence. Returns it.
    pub fn make_durable(&mut self) -> Result<u64, ReplicaError> {
        let seq = self.applied_seq;
        let committed = self
            .volume
            .sync()
            .map_err(ReplicaError::from)
            .and_then(|()| {
                let state = ReplicaState {
                    durable_seq: seq,
                    digest: self.applied_digest,
                    ..self.store.state().clone()
                };
                Ok(self.store.persist(state)?)
            });
        if committed.is_err() {
            // A failed sync may leave the writes it covered off the device for good: they
            // must be written again, in order, not vouched for.
            self.rewind_to_durable();
        }
        committed.map(|()| seq)
    }

    /// Makes what an earlier session applied but did not commit (it ended at a failed
    /// write) durable, so that a new session starts where the target is.
    pub fn settle(&mut self) -> Result<(), ReplicaError> {
        if self.applied_seq == self.state().durable_seq {
            return Ok(());
        }
        self.make_durable().map(drop)
    }

    /// Takes `digest` as the digest through the last applied entry, where this side had
    /// none (state from an older replicad). Persisted at once if that entry is durable,
    /// else with the next commit.
    pub fn adopt_digest(&mut self, digest: Digest) -> Result<(), StateError> {
        self.applied_digest = Some(digest);
        if self.applied_seq != self.state().durable_seq {
            return Ok(());
        }
        let state = ReplicaState {
            digest: Some(digest),
            ..self.store.state().clone()
        };
        self.store.persist(state)
    }

    /// Records, durably, that the replica differs from the sender's stream somewhere in
    /// `divergence`, and carries on from the sender's digest `sender_digest` through the
    /// last applied entry, so that later checks tell whether it goes on diverging.
    pub fn record_divergence(
        &mut self,
        divergence: Divergence,
        sender_digest: Digest,
    ) -> Result<(), StateError> {
        let recorded = match self.state().diverged {
            Some(earlier) => Divergence {
                from_seq: earlier.from_seq.min(divergence.from_seq),
                found_at: earlier.found_at.max(divergence.found_at),
            },
            None => divergence,
        };
        self.applied_digest = Some(sender_digest);
        let durable = self.state().durable_seq;
        let state = ReplicaState {
            diverged: Some(recorded),
            // The state's digest is through the durable sequence: it moves to the
            // sender's only once the applied entries are durable too.
            digest: if self.applied_seq == durable {
                Some(sender_digest)
            } else {
                self.state().digest
            },
            ..self.store.state().clone()
        };
        self.store.persist(state)
    }

    /// Records the volume at its first accepted handshake. Whatever the marker says
    /// belongs to an earlier history, so it is reset first.
    pub fn record_identity(&mut self, identity: VolumeIdentity) -> Result<(), StateError> {
        self.marker.reset()?;
        self.record(|state| state.identity = Some(identity))
    }

    /// Changes the persisted state with `change` and persists it durably. For what a
    /// session decides about the replica (history, consistency, protection); the
    /// durable sequence and digest are [`Self::make_durable`]'s.
    pub fn record(&mut self, change: impl FnOnce(&mut ReplicaState)) -> Result<(), StateError> {
        let mut state = self.store.state().clone();
        change(&mut state);
        debug_assert_eq!(state.durable_seq, self.store.state().durable_seq);
        self.store.persist(state)
    }

    /// Moves the stream's start forward to `seq` and records `change` with it, in one
    /// durable update: a resync that begins past the durable sequence, because the
    /// sender no longer holds the entries in between. The replica does not get them;
    /// the resync rewrites what they wrote, and `change` must record the replica
    /// resyncing until it has. The digest through `seq` stays the one through the
    /// durable sequence, as the sender anchors its own there.
    pub fn jump_to(
        &mut self,
        seq: u64,
        change: impl FnOnce(&mut ReplicaState),
    ) -> Result<(), StateError> {
        assert_eq!(
            self.applied_seq,
            self.state().durable_seq,
            "a stream jumps only before anything of it is applied"
        );
        assert!(seq >= self.applied_seq, "the stream never goes back");
        // The marker vouches for entries past the durable sequence; there are none.
        self.marker.reset()?;
        let mut state = self.store.state().clone();
        state.durable_seq = seq;
        change(&mut state);
        self.store.persist(state)?;
        self.applied_seq = seq;
        Ok(())
    }

    /// Drops the digest in memory, as a state from an older replicad has none.
    #[cfg(test)]
    pub(crate) fn forget_digest_for_test(&mut self) {
        self.applied_digest = None;
    }

    /// Forgets every entry applied past the durable sequence: the sender resends them.
    fn rewind_to_durable(&mut self) {
        self.applied_seq = self.state().durable_seq;
        self.applied_digest = self.state().digest;
        // In memory it is forgotten regardless; on disk it matters only if this process
        // dies before the entries are written again.
        if let Err(err) = self.marker.reset() {
            tracing::warn!("cannot reset the applied marker: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arepl_core::table::VolumeName;
    use bytes::Bytes;

    #[test]
    fn durable_sequence_and_identity_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, vec![0u8; 1 << 16]).unwrap();
        let mut replica = Replica::open(&target, dir.path()).unwrap();
        let identity = VolumeIdentity {
            name: VolumeName::new("vol").unwrap(),
            size: 1 << 16,
        };
        replica.record_identity(identity.clone()).unwrap();
        let entries = [
            Operation::Write {
                offset: 512,
                data: Bytes::from(vec![7u8; 1024]),
                fua: false,
            },
            Operation::Flush,
            Operation::WriteZeroes {
                offset: 1024,
                len: 512,
            },
        ];
        for (seq, op) in (1..).zip(entries) {
            replica.apply(&Entry::new(seq, op)).unwrap();
        }
        replica.make_durable().unwrap();
        drop(replica);

        let replica = Replica::open(&target, dir.path()).unwrap();
        assert_eq!(replica.state().durable_seq, 3);
        assert_eq!(replica.state().identity, Some(identity));
        let mut bytes = vec![0u8; 1536];
        replica.volume().read(0, &mut bytes).unwrap();
        assert!(bytes[..512].iter().all(|&b| b == 0));
        assert!(bytes[512..1024].iter().all(|&b| b == 7));
        assert!(bytes[1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn recording_an_identity_resets_the_applied_marker() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, vec![0u8; 1 << 16]).unwrap();
        let mut replica = Replica::open(&target, dir.path()).unwrap();
        for seq in 1..=3 {
            let op = Operation::WriteZeroes {
                offset: 0,
                len: 512,
            };
            replica.apply(&Entry::new(seq, op)).unwrap();
        }
        replica
            .record_identity(VolumeIdentity {
                name: VolumeName::new("vol").unwrap(),
                size: 1 << 16,
            })
            .unwrap();
        drop(replica);
        // Nothing of the earlier history is adopted as durable.
        let replica = Replica::open(&target, dir.path()).unwrap();
        assert_eq!(replica.state().durable_seq, 0);
        assert_eq!(replica.applied_seq(), 0);
    }

    #[test]
    fn a_new_session_settles_what_an_aborted_one_applied() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, vec![0u8; 1 << 16]).unwrap();
        let mut replica = Replica::open(&target, dir.path()).unwrap();
        for seq in 1..=3 {
            replica.apply(&Entry::new(seq, Operation::Flush)).unwrap();
        }
        // The session ended at a failed write, without its commit.
        assert_eq!(replica.state().durable_seq, 0);
        replica.settle().unwrap();
        assert_eq!(replica.state().durable_seq, 3);
        assert_eq!(replica.state().digest, replica.applied_digest());
        replica.settle().unwrap();
        assert_eq!(replica.state().durable_seq, 3);
    }
}
