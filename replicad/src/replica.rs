//! The replica: the target volume and the state that says how much of it is durable.
//!
//! Blocking; async code calls it from blocking threads.

use std::io;
use std::path::Path;

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

/// The target and its durable state.
#[derive(Debug)]
pub struct Replica {
    volume: Volume,
    store: StateStore,
}

impl Replica {
    /// Opens the target and the state directory (creating fresh state if there is none).
    pub fn open(target: &Path, state_dir: &Path) -> Result<Self, ReplicaError> {
        let volume = Volume::open(target)?;
        let store = StateStore::open(state_dir)?;
        Ok(Self { volume, store })
    }

    /// The persisted state.
    pub fn state(&self) -> &ReplicaState {
        self.store.state()
    }

    /// The target.
    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    /// Applies one entry to the target; it is durable only after [`Self::make_durable`].
    pub fn apply(&self, entry: &Entry) -> io::Result<()> {
        match &entry.op {
            Operation::Write { offset, data, .. } => self.volume.write(*offset, data),
            Operation::Flush => Ok(()),
            Operation::Discard { offset, len } => self.volume.discard(*offset, *len),
            Operation::WriteZeroes { offset, len } => self.volume.write_zeroes(*offset, *len),
        }
    }

    /// Makes every applied entry up to `seq` durable: the target is synced first, and only
    /// then does the state claim `seq`.
    pub fn make_durable(&mut self, seq: u64) -> Result<(), ReplicaError> {
        self.volume.sync()?;
        let state = ReplicaState {
            durable_seq: seq,
            ..self.store.state().clone()
        };
        self.store.persist(state)?;
        Ok(())
    }

    /// Records the volume at its first accepted handshake.
    pub fn record_identity(&mut self, identity: VolumeIdentity) -> Result<(), StateError> {
        let state = ReplicaState {
            identity: Some(identity),
            ..self.store.state().clone()
        };
        self.store.persist(state)
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
}
