//! The replica: the target volume, the state that says how much of it is durable, and
//! the marker that says how much of it is applied in this boot.
//!
//! Blocking; async code calls it from blocking threads.

use std::io;
use std::ops::RangeInclusive;
use std::path::Path;

use crate::applied_marker::{AppliedMarker, BootId};
use crate::entry::{Entry, Operation};
use crate::state::{ReplicaState, StateError, StateStore, VolumeIdentity};
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
}

impl Replica {
    /// Opens the target and the state directory (creating fresh state if there is none),
    /// in the boot the host is running.
    pub fn open(target: &Path, state_dir: &Path) -> Result<Self, ReplicaError> {
        Self::open_in_boot(target, state_dir, BootId::current()?)
    }

    /// [`Self::open`] as if the host were running the boot `boot`.
    pub fn open_in_boot(
        target: &Path,
        state_dir: &Path,
        boot: BootId,
    ) -> Result<Self, ReplicaError> {
        let volume = Volume::open(target)?;
        let store = StateStore::open(state_dir)?;
        let mut marker = AppliedMarker::open(state_dir, boot)?;
        if store.state().identity.is_none() {
            // Fresh (or recreated) state has no history a marker could belong to.
            marker.reset()?;
        }
        Ok(Self {
            volume,
            store,
            marker,
        })
    }

    /// The persisted state.
    pub fn state(&self) -> &ReplicaState {
        self.store.state()
    }

    /// The target.
    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    /// Applies one entry to the target and records it in the applied marker; it is
    /// durable only after [`Self::make_durable`].
    pub fn apply(&mut self, entry: &Entry) -> Result<(), ReplicaError> {
        match &entry.op {
            Operation::Write { offset, data, .. } => self.volume.write(*offset, data)?,
            Operation::Flush => {}
            Operation::Discard { offset, len } => self.volume.discard(*offset, *len)?,
            Operation::WriteZeroes { offset, len } => self.volume.write_zeroes(*offset, *len)?,
        }
        // Only after the target write: the marker must never claim what the target lacks.
        self.marker.record(entry.seq)?;
        Ok(())
    }

    /// The entries past the durable sequence that the target already holds, applied in
    /// this boot (before the daemon was killed, say) but not made durable. A sender
    /// resends them; writing them again would take the target back through older
    /// states. `None` when there are none the marker can vouch for.
    pub fn applied_past_durable(&self) -> Option<RangeInclusive<u64>> {
        let durable = self.state().durable_seq;
        let applied = self.marker.applied_seq()?;
        (applied > durable).then(|| durable + 1..=applied)
    }

    /// Makes every applied entry up to `seq` durable: the target is synced first, and only
    /// then does the state claim `seq`.
    pub fn make_durable(&mut self, seq: u64) -> Result<(), ReplicaError> {
        if let Err(err) = self.volume.sync() {
            // A failed sync may leave the writes it covered off the device for good: they
            // must be written again, not vouched for.
            self.forget_applied();
            return Err(err.into());
        }
        let state = ReplicaState {
            durable_seq: seq,
            ..self.store.state().clone()
        };
        self.store.persist(state)?;
        Ok(())
    }

    /// Records the volume at its first accepted handshake. Whatever the marker says
    /// belongs to an earlier history, so it is reset first.
    pub fn record_identity(&mut self, identity: VolumeIdentity) -> Result<(), StateError> {
        self.marker.reset()?;
        let state = ReplicaState {
            identity: Some(identity),
            ..self.store.state().clone()
        };
        self.store.persist(state)
    }

    fn forget_applied(&mut self) {
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
            replica.apply(&Entry { seq, op }).unwrap();
        }
        replica.make_durable(3).unwrap();
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
            replica.apply(&Entry { seq, op }).unwrap();
        }
        assert_eq!(replica.applied_past_durable(), Some(1..=3));
        replica
            .record_identity(VolumeIdentity {
                name: VolumeName::new("vol").unwrap(),
                size: 1 << 16,
            })
            .unwrap();
        assert_eq!(replica.applied_past_durable(), None);
        drop(replica);
        let replica = Replica::open(&target, dir.path()).unwrap();
        assert_eq!(replica.applied_past_durable(), None);
    }
}
