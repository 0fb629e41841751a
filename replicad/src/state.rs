//! The receiver's durable state: the last durable sequence, the digest of the entries
//! through it, the volume identity, whether this replica was found to diverge, and the
//! replication history it belongs to with its consistency (see [`crate::consistency`]).
//!
//! Kept in `<state-dir>/replicad.state`, two 512-byte slots. Every update writes the slot
//! the previous update did not use, with a generation one higher, and fdatasyncs it; a
//! load takes the valid slot with the higher generation. A crash mid-write can only tear
//! the slot being written, and the other one still holds the previous state. The file is
//! created whole (temp file, fsync, rename, fsync of the directory), so it always has at
//! least one valid slot.
//!
//! Slot layout, big-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic "ARST" |
//! | 4..8 | format version, 3 |
//! | 8..16 | generation |
//! | 16..24 | durable sequence |
//! | 24..32 | volume size in bytes (0 without identity) |
//! | 32 | volume name length (0: no identity recorded yet) |
//! | 33..97 | volume name, zero padded |
//! | 97 | flags: 1 digest known, 2 diverged |
//! | 98..106 | replication digest through the durable sequence |
//! | 106..114 | diverged: first sequence that may differ from the primary |
//! | 114..122 | diverged: sequence at which the difference was found |
//! | 122 | history flags: 1 history recorded, 2 resyncing, 4 resync's last entry known |
//! | 123 | protection snapshot name length (0: none held) |
//! | 124..140 | history identifier |
//! | 140..148 | history generation counter |
//! | 148..156 | resyncing: sequence of the resync's last entry |
//! | 156..411 | protection snapshot `VG/LV`, zero padded |
//! | 411..508 | zero |
//! | 508..512 | CRC-32C of bytes 0..508 |
//!
//! Version 1 slots (no bytes past the name) still load, with the digest unknown: it is
//! then taken from the sender at the next session. Version 1 and 2 slots (no bytes past
//! 122) load without a history, consistent unless diverged.
//!
//! The open store holds an exclusive `flock` on the state directory, so two daemons
//! cannot share one.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use arepl_core::crc32c::crc32c;
use arepl_core::digest::Digest;
use arepl_core::history::History;
use arepl_core::table::{VolumeName, MAX_VOLUME_LEN};
use nix::fcntl::{Flock, FlockArg};

/// Name of the state file inside the state directory.
pub const STATE_FILE_NAME: &str = "replicad.state";
const SLOT_LEN: usize = 512;
const FILE_LEN: u64 = 2 * SLOT_LEN as u64;
const SLOT_MAGIC: &[u8; 4] = b"ARST";
const FORMAT_VERSION: u32 = 3;
/// Slots of this version still load (without a digest or a history).
const FORMAT_VERSION_1: u32 = 1;
/// Slots of this version still load (without a history).
const FORMAT_VERSION_2: u32 = 2;
const NAME_AT: usize = 33;
const FLAGS_AT: usize = 97;
const FLAG_DIGEST: u8 = 1;
const FLAG_DIVERGED: u8 = 2;
const DIGEST_AT: usize = 98;
const DIVERGED_AT: usize = 106;
const HISTORY_FLAGS_AT: usize = 122;
const HISTORY_RECORDED: u8 = 1;
const HISTORY_RESYNCING: u8 = 2;
const HISTORY_DONE_SEQ: u8 = 4;
const SNAPSHOT_LEN_AT: usize = 123;
const HISTORY_AT: usize = 124;
const DONE_SEQ_AT: usize = 148;
const SNAPSHOT_AT: usize = 156;
/// Longest protection snapshot name: an LVM VG and LV name are at most 127 bytes each.
pub const MAX_SNAPSHOT_NAME_LEN: usize = 255;
const CRC_AT: usize = SLOT_LEN - 4;
const _: () = assert!(SNAPSHOT_AT + MAX_SNAPSHOT_NAME_LEN <= CRC_AT);

/// The volume a receiver replicates: recorded at the first accepted handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeIdentity {
    /// The sender's volume name.
    pub name: VolumeName,
    /// The volume size in bytes.
    pub size: u64,
}

/// Sequences over which the replica was found to differ from the primary's stream:
/// what a resync has to cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Divergence {
    /// The first sequence that may differ (the one after the last digest that matched).
    pub from_seq: u64,
    /// The sequence whose digest did not match.
    pub found_at: u64,
}

/// Whether the replica is an image of its history, apart from divergence (which
/// [`ReplicaState::diverged`] records on its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// A consistent image of some earlier moment of its history: a write-order stream
    /// keeps it one.
    #[default]
    Consistent,
    /// A resync began and is not complete: the target mixes blocks of the image before
    /// it with blocks copied since, and is no image of any moment.
    Resyncing {
        /// The resync's last entry, once the sender said which: the replica is
        /// consistent again once durable through it.
        done_seq: Option<u64>,
    },
}

/// What the state file records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// Highest sequence whose data is durable on the target; 0 before any.
    pub durable_seq: u64,
    /// The replicated volume, once a handshake was accepted.
    pub identity: Option<VolumeIdentity>,
    /// The replication digest through `durable_seq`; `None` when not known (state
    /// written by an older replicad): the sender's is adopted then.
    pub digest: Option<Digest>,
    /// Set once a digest check failed: this replica is not an image of the primary
    /// until a resync; never cleared by replication itself.
    pub diverged: Option<Divergence>,
    /// The replication history the replica belongs to; `None` before the first `Begin`
    /// (fresh, or recorded by a replicad before histories).
    pub history: Option<History>,
    /// Consistent, or in the middle of a resync.
    pub consistency: Consistency,
    /// The LVM snapshot (`VG/LV`) that keeps the last consistent image while a resync
    /// runs; removed once the replica is consistent again.
    pub protection_snapshot: Option<String>,
}

impl ReplicaState {
    /// The state of a replica with no history yet: nothing durable, an empty digest.
    pub fn fresh() -> Self {
        Self {
            digest: Some(arepl_core::digest::EMPTY),
            ..Self::default()
        }
    }
}

/// A state file as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSnapshot {
    /// The newest valid slot's state.
    pub state: ReplicaState,
    /// Its generation.
    pub generation: u64,
    /// Slots that failed their checks (not counting never-written ones).
    pub corrupt_slots: Vec<usize>,
}

/// Why the state cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory or file could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The state directory cannot be used.
    #[error("state directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The state directory is not a directory.
    #[error("state directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The state file has the wrong size.
    #[error("state file {path} is {len} bytes, expected {FILE_LEN}")]
    BadSize {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// Neither slot is valid: refusing to guess the durable sequence.
    #[error("state file {0} has no valid slot; refusing to guess the durable sequence")]
    NoValidSlot(PathBuf),
    /// Another process holds the state directory.
    #[error("state directory {0} is in use by another replicad")]
    Locked(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The open, locked state file.
#[derive(Debug)]
pub struct StateStore {
    file: File,
    _lock: Flock<File>,
    path: PathBuf,
    generation: u64,
    state: ReplicaState,
}

impl StateStore {
    /// Opens the state in `dir`, creating a fresh one (durable sequence 0, no identity)
    /// if there is none yet.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        check_dir(dir)?;
        // Locking the directory before looking for the file keeps two daemons from both
        // creating it.
        let lock = lock_dir(dir)?;
        let path = dir.join(STATE_FILE_NAME);
        if !path.exists() {
            create_fresh(dir, &path)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let snapshot = read_file(&file, &path)?;
        for slot in &snapshot.corrupt_slots {
            tracing::warn!(
                "state file {}: slot {slot} is corrupt; using generation {} from the other",
                path.display(),
                snapshot.generation
            );
        }
        Ok(Self {
            file,
            _lock: lock,
            path,
            generation: snapshot.generation,
            state: snapshot.state,
        })
    }

    /// The state as last persisted.
    pub fn state(&self) -> &ReplicaState {
        &self.state
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Persists `state` durably; on return it survives a crash.
    pub fn persist(&mut self, state: ReplicaState) -> Result<(), StateError> {
        let generation = self.generation + 1;
        let slot = encode_slot(generation, &state);
        self.file
            .write_all_at(&slot, slot_offset(generation))
            .and_then(|()| self.file.sync_data())
            .map_err(io_error(&self.path))?;
        self.generation = generation;
        self.state = state;
        Ok(())
    }
}

/// Reads the state in `dir` without locking or creating anything (for `status`).
/// `Ok(None)` when no state file exists yet.
pub fn inspect(dir: &Path) -> Result<Option<StateSnapshot>, StateError> {
    check_dir(dir)?;
    let path = dir.join(STATE_FILE_NAME);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error(&path)(err)),
    };
    read_file(&file, &path).map(Some)
}

fn lock_dir(dir: &Path) -> Result<Flock<File>, StateError> {
    let handle = File::open(dir).map_err(io_error(dir))?;
    Flock::lock(handle, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            StateError::Locked(dir.to_path_buf())
        } else {
            io_error(dir)(errno.into())
        }
    })
}

fn check_dir(dir: &Path) -> Result<(), StateError> {
    let meta = std::fs::metadata(dir).map_err(|source| StateError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(StateError::NotADirectory(dir.to_path_buf()))
    }
}

fn slot_offset(generation: u64) -> u64 {
    (generation % 2) * SLOT_LEN as u64
}

fn create_fresh(dir: &Path, path: &Path) -> Result<(), StateError> {
    let temp = dir.join(format!("{STATE_FILE_NAME}.tmp"));
    let generation = 1;
    let mut contents = vec![0u8; FILE_LEN as usize];
    let at = slot_offset(generation) as usize;
    contents[at..at + SLOT_LEN].copy_from_slice(&encode_slot(generation, &ReplicaState::fresh()));
    let mut file = File::create(&temp).map_err(io_error(&temp))?;
    file.write_all(&contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&temp))?;
    std::fs::rename(&temp, path).map_err(io_error(path))?;
    // The rename is durable only once the directory is.
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(dir))
}

fn read_file(file: &File, path: &Path) -> Result<StateSnapshot, StateError> {
    let len = file.metadata().map_err(io_error(path))?.len();
    if len != FILE_LEN {
        return Err(StateError::BadSize {
            path: path.to_path_buf(),
            len,
        });
    }
    let mut bytes = [0u8; FILE_LEN as usize];
    file.read_exact_at(&mut bytes, 0).map_err(io_error(path))?;
    let mut best: Option<(u64, ReplicaState)> = None;
    let mut corrupt_slots = Vec::new();
    for (index, slot) in bytes.chunks_exact(SLOT_LEN).enumerate() {
        if slot.iter().all(|&b| b == 0) {
            continue;
        }
        match decode_slot(slot) {
            Some((generation, state)) if slot_offset(generation) == (index * SLOT_LEN) as u64 => {
                if best.as_ref().is_none_or(|(g, _)| generation > *g) {
                    best = Some((generation, state));
                }
            }
            _ => corrupt_slots.push(index),
        }
    }
    let (generation, state) = best.ok_or_else(|| StateError::NoValidSlot(path.to_path_buf()))?;
    Ok(StateSnapshot {
        state,
        generation,
        corrupt_slots,
    })
}

fn encode_slot(generation: u64, state: &ReplicaState) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[0..4].copy_from_slice(SLOT_MAGIC);
    slot[4..8].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    slot[8..16].copy_from_slice(&generation.to_be_bytes());
    slot[16..24].copy_from_slice(&state.durable_seq.to_be_bytes());
    if let Some(identity) = &state.identity {
        let name = identity.name.as_str().as_bytes();
        slot[24..32].copy_from_slice(&identity.size.to_be_bytes());
        slot[32] = name.len() as u8;
        slot[NAME_AT..NAME_AT + name.len()].copy_from_slice(name);
    }
    if let Some(digest) = state.digest {
        slot[FLAGS_AT] |= FLAG_DIGEST;
        slot[DIGEST_AT..DIGEST_AT + 8].copy_from_slice(&digest.0.to_be_bytes());
    }
    if let Some(diverged) = state.diverged {
        slot[FLAGS_AT] |= FLAG_DIVERGED;
        slot[DIVERGED_AT..DIVERGED_AT + 8].copy_from_slice(&diverged.from_seq.to_be_bytes());
        slot[DIVERGED_AT + 8..DIVERGED_AT + 16].copy_from_slice(&diverged.found_at.to_be_bytes());
    }
    if let Some(history) = state.history {
        slot[HISTORY_FLAGS_AT] |= HISTORY_RECORDED;
        slot[HISTORY_AT..HISTORY_AT + 16].copy_from_slice(&history.uuid);
        slot[HISTORY_AT + 16..HISTORY_AT + 24].copy_from_slice(&history.counter.to_be_bytes());
    }
    if let Consistency::Resyncing { done_seq } = state.consistency {
        slot[HISTORY_FLAGS_AT] |= HISTORY_RESYNCING;
        if let Some(done_seq) = done_seq {
            slot[HISTORY_FLAGS_AT] |= HISTORY_DONE_SEQ;
            slot[DONE_SEQ_AT..DONE_SEQ_AT + 8].copy_from_slice(&done_seq.to_be_bytes());
        }
    }
    if let Some(name) = &state.protection_snapshot {
        // Names come from LVM's own VG and LV names; a longer one is a bug.
        let name = name.as_bytes();
        assert!(
            name.len() <= MAX_SNAPSHOT_NAME_LEN,
            "snapshot name too long"
        );
        slot[SNAPSHOT_LEN_AT] = name.len() as u8;
        slot[SNAPSHOT_AT..SNAPSHOT_AT + name.len()].copy_from_slice(name);
    }
    let crc = crc32c(&slot[..CRC_AT]);
    slot[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
    slot
}

fn decode_slot(slot: &[u8]) -> Option<(u64, ReplicaState)> {
    let be64 = |at: usize| u64::from_be_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
    let stated_crc = u32::from_be_bytes(slot[CRC_AT..].try_into().expect("4 bytes"));
    let version = u32::from_be_bytes(slot[4..8].try_into().expect("4 bytes"));
    if &slot[0..4] != SLOT_MAGIC
        || !matches!(
            version,
            FORMAT_VERSION | FORMAT_VERSION_2 | FORMAT_VERSION_1
        )
        || stated_crc != crc32c(&slot[..CRC_AT])
    {
        return None;
    }
    // Version 1 kept these bytes zero: no flags.
    let flags = slot[FLAGS_AT];
    if flags & !(FLAG_DIGEST | FLAG_DIVERGED) != 0 {
        return None;
    }
    let name_len = usize::from(slot[32]);
    let identity = if name_len == 0 {
        None
    } else if name_len > MAX_VOLUME_LEN {
        return None;
    } else {
        let name = std::str::from_utf8(&slot[NAME_AT..NAME_AT + name_len]).ok()?;
        Some(VolumeIdentity {
            name: VolumeName::new(name)?,
            size: be64(24),
        })
    };
    let mut state = ReplicaState {
        durable_seq: be64(16),
        identity,
        digest: (flags & FLAG_DIGEST != 0).then(|| Digest(be64(DIGEST_AT))),
        diverged: (flags & FLAG_DIVERGED != 0).then(|| Divergence {
            from_seq: be64(DIVERGED_AT),
            found_at: be64(DIVERGED_AT + 8),
        }),
        ..ReplicaState::default()
    };
    if version == FORMAT_VERSION {
        decode_history(slot, &mut state)?;
    }
    Some((be64(8), state))
}

/// Reads the version 3 fields into `state`; `None` if they are inconsistent.
fn decode_history(slot: &[u8], state: &mut ReplicaState) -> Option<()> {
    let be64 = |at: usize| u64::from_be_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
    let flags = slot[HISTORY_FLAGS_AT];
    if flags & !(HISTORY_RECORDED | HISTORY_RESYNCING | HISTORY_DONE_SEQ) != 0 {
        return None;
    }
    if flags & HISTORY_RECORDED != 0 {
        let counter = be64(HISTORY_AT + 16);
        if counter == 0 {
            return None;
        }
        let uuid = slot[HISTORY_AT..HISTORY_AT + 16]
            .try_into()
            .expect("16 bytes");
        state.history = Some(History { uuid, counter });
    }
    let resyncing = flags & HISTORY_RESYNCING != 0;
    let done_known = flags & HISTORY_DONE_SEQ != 0;
    // Only a replica with a history resyncs; only a resync has a last entry.
    if (resyncing && state.history.is_none()) || (done_known && !resyncing) {
        return None;
    }
    if resyncing {
        state.consistency = Consistency::Resyncing {
            done_seq: done_known.then(|| be64(DONE_SEQ_AT)),
        };
    }
    let name_len = usize::from(slot[SNAPSHOT_LEN_AT]);
    if name_len > 0 {
        let name = std::str::from_utf8(&slot[SNAPSHOT_AT..SNAPSHOT_AT + name_len]).ok()?;
        state.protection_snapshot = Some(name.to_string());
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, size: u64) -> Option<VolumeIdentity> {
        Some(VolumeIdentity {
            name: VolumeName::new(name).unwrap(),
            size,
        })
    }

    fn state(durable_seq: u64) -> ReplicaState {
        ReplicaState {
            durable_seq,
            identity: identity("db-01", 256 << 20),
            digest: Some(Digest(durable_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            ..ReplicaState::default()
        }
    }

    const HISTORY: History = History {
        uuid: *b"0123456789abcdef",
        counter: 0x0102,
    };

    /// A state in the middle of a resync, with every version 3 field set.
    fn resyncing(durable_seq: u64) -> ReplicaState {
        ReplicaState {
            history: Some(HISTORY),
            consistency: Consistency::Resyncing {
                done_seq: Some(durable_seq + 5),
            },
            protection_snapshot: Some("vg_dr/db_arepl_resync".to_string()),
            ..state(durable_seq)
        }
    }

    fn fix_crc(slot: &mut [u8; SLOT_LEN]) {
        let crc = crc32c(&slot[..CRC_AT]);
        slot[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
    }

    fn corrupt_byte(dir: &Path, at: u64) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(STATE_FILE_NAME))
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0xFF], at).unwrap();
    }

    #[test]
    fn fresh_directory_starts_at_zero_without_identity() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), None);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.state(), &ReplicaState::fresh());
        assert!(!dir.path().join("replicad.state.tmp").exists());
        let snapshot = inspect(dir.path()).unwrap().unwrap();
        assert_eq!(snapshot.state, ReplicaState::fresh());
        assert_eq!(snapshot.generation, 1);
    }

    #[test]
    fn persisted_state_survives_reopen_and_alternates_slots() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        for seq in 1..=5 {
            store.persist(state(seq)).unwrap();
        }
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.state(), &state(5));
        // Generation 6 in slot 0, generation 5 in slot 1.
        let bytes = std::fs::read(dir.path().join(STATE_FILE_NAME)).unwrap();
        assert_eq!(decode_slot(&bytes[..SLOT_LEN]).unwrap(), (6, state(5)));
        assert_eq!(decode_slot(&bytes[SLOT_LEN..]).unwrap(), (5, state(4)));
    }

    #[test]
    fn torn_newest_slot_falls_back_to_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        store.persist(state(10)).unwrap(); // generation 2, slot 0
        store.persist(state(11)).unwrap(); // generation 3, slot 1
        drop(store);
        corrupt_byte(dir.path(), SLOT_LEN as u64 + 20);
        let snapshot = inspect(dir.path()).unwrap().unwrap();
        assert_eq!(snapshot.state, state(10));
        assert_eq!(snapshot.corrupt_slots, vec![1]);

        // The next write goes to the slot after the surviving one and wins again.
        let mut store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.state(), &state(10));
        store.persist(state(12)).unwrap();
        drop(store);
        let snapshot = inspect(dir.path()).unwrap().unwrap();
        assert_eq!(snapshot.state, state(12));
        assert!(snapshot.corrupt_slots.is_empty());
    }

    #[test]
    fn both_slots_corrupt_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        store.persist(state(1)).unwrap();
        drop(store);
        corrupt_byte(dir.path(), 16);
        corrupt_byte(dir.path(), SLOT_LEN as u64 + 16);
        assert!(matches!(
            StateStore::open(dir.path()),
            Err(StateError::NoValidSlot(_))
        ));
    }

    #[test]
    fn wrong_size_and_missing_directory_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE_NAME), b"short").unwrap();
        let err = StateStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().ends_with("is 5 bytes, expected 1024"),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = StateStore::open(&missing).unwrap_err();
        assert!(err.to_string().starts_with("state directory "), "{err}");
        let file = dir.path().join(STATE_FILE_NAME);
        assert!(matches!(
            StateStore::open(&file),
            Err(StateError::NotADirectory(_))
        ));
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateStore::open(dir.path()).unwrap();
        assert!(matches!(
            StateStore::open(dir.path()),
            Err(StateError::Locked(_))
        ));
    }

    #[test]
    fn slot_encoding_round_trips_with_and_without_identity() {
        let long_name = "a".repeat(MAX_VOLUME_LEN);
        for state in [
            ReplicaState::default(),
            state(u64::MAX),
            ReplicaState {
                durable_seq: 7,
                identity: identity(&long_name, 512),
                digest: None,
                diverged: Some(Divergence {
                    from_seq: 3,
                    found_at: 6,
                }),
                ..ReplicaState::default()
            },
            resyncing(9),
            ReplicaState {
                history: Some(HISTORY),
                consistency: Consistency::Resyncing { done_seq: None },
                protection_snapshot: Some("v".repeat(MAX_SNAPSHOT_NAME_LEN)),
                ..state(1)
            },
            ReplicaState {
                history: Some(HISTORY),
                ..state(2)
            },
        ] {
            let slot = encode_slot(9, &state);
            assert_eq!(decode_slot(&slot), Some((9, state)));
        }
    }

    #[test]
    fn golden_slot_and_version_1_slots_still_load() {
        let slot = encode_slot(3, &state(9));
        // The fields past the name, pinned.
        assert_eq!(slot[4..8], 3u32.to_be_bytes());
        assert_eq!(slot[FLAGS_AT], FLAG_DIGEST);
        assert_eq!(
            slot[DIGEST_AT..DIGEST_AT + 8],
            9u64.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes()
        );
        assert!(slot[DIVERGED_AT..CRC_AT].iter().all(|&b| b == 0));
        // The same slot as version 1 wrote it: no digest, no flags.
        let mut v1 = slot;
        v1[4..8].copy_from_slice(&1u32.to_be_bytes());
        v1[FLAGS_AT..DIVERGED_AT].fill(0);
        fix_crc(&mut v1);
        let (generation, loaded) = decode_slot(&v1).unwrap();
        assert_eq!(generation, 3);
        assert_eq!(
            loaded,
            ReplicaState {
                digest: None,
                ..state(9)
            }
        );
        // Unknown flags are not guessed at.
        let mut odd = slot;
        odd[FLAGS_AT] |= 0x80;
        fix_crc(&mut odd);
        assert_eq!(decode_slot(&odd), None);
    }

    #[test]
    fn golden_version_3_fields() {
        let slot = encode_slot(4, &resyncing(9));
        let mut expected = [0u8; CRC_AT - HISTORY_FLAGS_AT];
        expected[0] = HISTORY_RECORDED | HISTORY_RESYNCING | HISTORY_DONE_SEQ;
        expected[1] = 21; // "vg_dr/db_arepl_resync"
        expected[2..18].copy_from_slice(b"0123456789abcdef");
        expected[18..26].copy_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        expected[26..34].copy_from_slice(&14u64.to_be_bytes());
        expected[34..55].copy_from_slice(b"vg_dr/db_arepl_resync");
        assert_eq!(slot[HISTORY_FLAGS_AT..CRC_AT], expected);
        assert_eq!(decode_slot(&slot), Some((4, resyncing(9))));
        // Consistent, with a history and no snapshot: only the history is set.
        let consistent = ReplicaState {
            history: Some(HISTORY),
            ..state(9)
        };
        let slot = encode_slot(4, &consistent);
        assert_eq!(slot[HISTORY_FLAGS_AT], HISTORY_RECORDED);
        assert_eq!(slot[SNAPSHOT_LEN_AT], 0);
        assert!(slot[DONE_SEQ_AT..CRC_AT].iter().all(|&b| b == 0));
    }

    #[test]
    fn version_2_slots_load_without_a_history() {
        // A version 2 slot: bytes 122.. are zero.
        let mut v2 = encode_slot(5, &state(9));
        v2[4..8].copy_from_slice(&2u32.to_be_bytes());
        fix_crc(&mut v2);
        assert_eq!(decode_slot(&v2), Some((5, state(9))));
        // Whatever a version 2 slot holds past byte 122 is not read as a history.
        let mut stray = v2;
        stray[HISTORY_FLAGS_AT] = HISTORY_RECORDED | HISTORY_RESYNCING;
        stray[HISTORY_AT + 23] = 1;
        fix_crc(&mut stray);
        let (_, loaded) = decode_slot(&stray).unwrap();
        assert_eq!(loaded.history, None);
        assert_eq!(loaded.consistency, Consistency::Consistent);
    }

    #[test]
    fn inconsistent_version_3_fields_are_refused() {
        let good = encode_slot(4, &resyncing(9));
        type Damage = fn(&mut [u8; SLOT_LEN]);
        let cases: [(&str, Damage); 5] = [
            ("unknown flag", |s| s[HISTORY_FLAGS_AT] |= 0x40),
            ("resyncing without a history", |s| {
                s[HISTORY_FLAGS_AT] &= !HISTORY_RECORDED
            }),
            ("a last entry without a resync", |s| {
                s[HISTORY_FLAGS_AT] &= !HISTORY_RESYNCING
            }),
            ("counter 0", |s| s[HISTORY_AT + 16..HISTORY_AT + 24].fill(0)),
            ("snapshot name not UTF-8", |s| s[SNAPSHOT_AT] = 0xFF),
        ];
        for (what, damage) in cases {
            let mut slot = good;
            damage(&mut slot);
            fix_crc(&mut slot);
            assert_eq!(decode_slot(&slot), None, "{what}");
        }
    }

    #[test]
    fn version_2_state_files_load_and_are_rewritten_as_version_3() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        store.persist(state(7)).unwrap(); // generation 2, slot 0
        drop(store);
        let path = dir.path().join(STATE_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        for slot in bytes.chunks_exact_mut(SLOT_LEN) {
            let slot: &mut [u8; SLOT_LEN] = slot.try_into().unwrap();
            slot[4..8].copy_from_slice(&2u32.to_be_bytes());
            fix_crc(slot);
        }
        std::fs::write(&path, bytes).unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.state(), &state(7));
        store.persist(resyncing(8)).unwrap();
        drop(store);
        assert_eq!(inspect(dir.path()).unwrap().unwrap().state, resyncing(8));
    }
}
