//! The highest sequence applied to the target in this boot, durable or not.
//!
//! The state file says what is durable. Entries applied after its last commit are on the
//! target as well (in the page cache, the device's cache or on the medium) for as long as
//! the host stays up.
//! When the daemon is killed, writing them again as the sender resends them would walk
//! the target back through states the primary never had: an older write lands over a
//! newer one until the newer is written again. This marker tells the next start which
//! entries the target already holds, with the digest through them, so it makes them
//! durable and the sender resumes after them (see
//! [`Replica::open_in_boot`](crate::replica::Replica::open_in_boot)). It never lets a
//! session skip an entry by its sequence number: a sender with another history under the
//! same numbers would have its entries acknowledged and never written.
//!
//! Kept in `<state-dir>/replicad.applied`: one 44-byte record, rewritten in place after
//! every applied entry and never synced. It only has to outlive the process, which the
//! page cache does. The boot id scopes it to one boot: after a reboot the target may hold
//! any subset of the writes that were not durable, so a marker from another boot is
//! ignored, as is a torn or otherwise unreadable one.
//!
//! Record layout, big-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic "ARAP" |
//! | 4..8 | format version, 2 |
//! | 8..24 | boot id |
//! | 24..32 | applied sequence |
//! | 32..40 | replication digest through the applied sequence |
//! | 40..44 | CRC-32C of bytes 0..40 |
//!
//! All zeroes (or an empty file) is a reset marker: it vouches for nothing. A version 1
//! record (no digest) is ignored like a torn one: its entries are written again.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use arepl_core::crc32c::crc32c;
use arepl_core::digest::Digest;

use crate::state::StateError;

/// Name of the marker file inside the state directory.
pub const MARKER_FILE_NAME: &str = "replicad.applied";
/// Where Linux publishes the id of the current boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
const RECORD_LEN: usize = 44;
const RECORD_MAGIC: &[u8; 4] = b"ARAP";
const FORMAT_VERSION: u32 = 2;
const CRC_AT: usize = RECORD_LEN - 4;

/// The id of one boot of the host: 128 bits, new at every boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootId([u8; 16]);

impl BootId {
    /// The current boot's id, from [`BOOT_ID_PATH`].
    pub fn current() -> Result<Self, StateError> {
        let path = Path::new(BOOT_ID_PATH);
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).ok_or_else(|| StateError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, "not a boot id"),
        })
    }

    /// Parses the kernel's form, a UUID such as `4ab14826-a56e-43f7-8512-acd5bb359350`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        let mut digits = text.trim().chars().filter(|&c| c != '-');
        for byte in &mut bytes {
            let high = digits.next()?.to_digit(16)?;
            let low = digits.next()?.to_digit(16)?;
            *byte = (high << 4 | low) as u8;
        }
        digits.next().is_none().then_some(Self(bytes))
    }

    /// A boot id from its bytes (tests stand in for other boots with these).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

/// What the marker file held when it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// No record: a new or reset marker.
    Nothing,
    /// A record that fails its checks: torn, or not a marker at all.
    Unreadable,
    /// A record written in an earlier boot.
    OtherBoot,
    /// A record of this boot.
    ThisBoot(Applied),
}

/// What the target holds beyond its durable state: every entry through `seq`, which
/// together have the replication digest `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The highest sequence applied.
    pub seq: u64,
    /// The digest through it.
    pub digest: Digest,
}

/// The open marker file.
#[derive(Debug)]
pub struct AppliedMarker {
    file: File,
    path: PathBuf,
    boot: BootId,
    /// What is known to be on the target in this boot; `None` when the marker vouches
    /// for nothing.
    applied: Option<Applied>,
}

impl AppliedMarker {
    /// Opens (or creates) the marker in `dir` for the boot `boot`. The caller holds the
    /// state directory's lock.
    pub fn open(dir: &Path, boot: BootId) -> Result<Self, StateError> {
        let path = dir.join(MARKER_FILE_NAME);
        let io_error = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        let found = read_record(&file, boot).map_err(io_error)?;
        match found {
            Found::Unreadable => tracing::info!(
                "applied marker {} is torn or corrupt; ignored",
                path.display()
            ),
            Found::OtherBoot => tracing::info!(
                "applied marker {} is from an earlier boot; ignored: the target may hold any \
                 part of the entries that were not durable, so they are applied again",
                path.display()
            ),
            Found::Nothing | Found::ThisBoot(_) => {}
        }
        let applied = match found {
            Found::ThisBoot(applied) => Some(applied),
            Found::Nothing | Found::Unreadable | Found::OtherBoot => None,
        };
        Ok(Self {
            file,
            path,
            boot,
            applied,
        })
    }

    /// What is known to be on the target in this boot, if the marker vouches for any.
    pub fn applied(&self) -> Option<Applied> {
        self.applied
    }

    /// The marker file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the target holds every entry up to `applied.seq`. Call it only once
    /// the target write returned. Not synced: it has to outlive the process, not the
    /// host.
    pub fn record(&mut self, applied: Applied) -> Result<(), StateError> {
        self.file
            .write_all_at(&encode(self.boot, applied), 0)
            .map_err(|source| self.io_error(source))?;
        self.applied = Some(applied);
        Ok(())
    }

    /// Makes the marker vouch for nothing, in memory at once and then on disk.
    pub fn reset(&mut self) -> Result<(), StateError> {
        self.applied = None;
        self.file
            .write_all_at(&[0u8; RECORD_LEN], 0)
            .map_err(|source| self.io_error(source))
    }

    fn io_error(&self, source: io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn read_record(file: &File, boot: BootId) -> io::Result<Found> {
    let mut record = [0u8; RECORD_LEN];
    let mut len = 0;
    while len < RECORD_LEN {
        match file.read_at(&mut record[len..], len as u64)? {
            0 => break,
            read => len += read,
        }
    }
    if record.iter().all(|&b| b == 0) {
        return Ok(Found::Nothing);
    }
    // A short record fails the checks like a torn one.
    Ok(match decode(&record) {
        None => Found::Unreadable,
        Some((written_in, applied)) if written_in == boot => Found::ThisBoot(applied),
        Some(_) => Found::OtherBoot,
    })
}

fn encode(boot: BootId, applied: Applied) -> [u8; RECORD_LEN] {
    let mut record = [0u8; RECORD_LEN];
    record[0..4].copy_from_slice(RECORD_MAGIC);
    record[4..8].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    record[8..24].copy_from_slice(&boot.0);
    record[24..32].copy_from_slice(&applied.seq.to_be_bytes());
    record[32..40].copy_from_slice(&applied.digest.0.to_be_bytes());
    let crc = crc32c(&record[..CRC_AT]);
    record[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
    record
}

fn decode(record: &[u8; RECORD_LEN]) -> Option<(BootId, Applied)> {
    let stated_crc = u32::from_be_bytes(record[CRC_AT..].try_into().expect("4 bytes"));
    if &record[0..4] != RECORD_MAGIC
        || record[4..8] != FORMAT_VERSION.to_be_bytes()
        || stated_crc != crc32c(&record[..CRC_AT])
    {
        return None;
    }
    let boot = BootId(record[8..24].try_into().expect("16 bytes"));
    let be64 = |at: usize| u64::from_be_bytes(record[at..at + 8].try_into().expect("8 bytes"));
    let applied = Applied {
        seq: be64(24),
        digest: Digest(be64(32)),
    };
    Some((boot, applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: BootId = BootId::from_bytes([0x11; 16]);
    const NEXT_BOOT: BootId = BootId::from_bytes([0x22; 16]);

    fn at(seq: u64) -> Applied {
        Applied {
            seq,
            digest: Digest(seq * 1000),
        }
    }

    fn found(dir: &Path, boot: BootId) -> Found {
        let file = File::open(dir.join(MARKER_FILE_NAME)).unwrap();
        read_record(&file, boot).unwrap()
    }

    #[test]
    fn boot_ids_parse_in_the_kernel_form_only() {
        let id = BootId::parse("4ab14826-a56e-43f7-8512-acd5bb359350\n").unwrap();
        assert_eq!(
            id.0,
            [
                0x4a, 0xb1, 0x48, 0x26, 0xa5, 0x6e, 0x43, 0xf7, 0x85, 0x12, 0xac, 0xd5, 0xbb, 0x35,
                0x93, 0x50
            ]
        );
        for bad in ["", "4ab14826", "4ab14826-a56e-43f7-8512-acd5bb3593500", "g"] {
            assert_eq!(BootId::parse(bad), None, "{bad:?}");
        }
        // Whatever this host runs, its boot id reads.
        BootId::current().unwrap();
    }

    #[test]
    fn a_record_is_trusted_in_its_own_boot_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut marker = AppliedMarker::open(dir.path(), BOOT).unwrap();
        assert_eq!(marker.applied(), None);
        assert_eq!(found(dir.path(), BOOT), Found::Nothing);
        marker.record(at(41)).unwrap();
        marker.record(at(42)).unwrap();
        assert_eq!(marker.applied(), Some(at(42)));
        drop(marker);
        assert_eq!(found(dir.path(), BOOT), Found::ThisBoot(at(42)));
        assert_eq!(found(dir.path(), NEXT_BOOT), Found::OtherBoot);
        let marker = AppliedMarker::open(dir.path(), BOOT).unwrap();
        assert_eq!(marker.applied(), Some(at(42)));
        let marker = AppliedMarker::open(dir.path(), NEXT_BOOT).unwrap();
        assert_eq!(marker.applied(), None);
    }

    #[test]
    fn every_torn_byte_and_a_short_record_are_detected() {
        let record = encode(BOOT, at(7));
        assert_eq!(decode(&record), Some((BOOT, at(7))));
        for at in 0..RECORD_LEN {
            let mut torn = record;
            torn[at] ^= 0x40;
            assert_eq!(decode(&torn), None, "byte {at}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MARKER_FILE_NAME);
        std::fs::write(&path, &record[..RECORD_LEN - 1]).unwrap();
        assert_eq!(found(dir.path(), BOOT), Found::Unreadable);
        std::fs::write(&path, b"garbage, not a marker at all").unwrap();
        let marker = AppliedMarker::open(dir.path(), BOOT).unwrap();
        assert_eq!(marker.applied(), None);
    }

    #[test]
    fn a_reset_marker_vouches_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut marker = AppliedMarker::open(dir.path(), BOOT).unwrap();
        marker.record(at(9)).unwrap();
        marker.reset().unwrap();
        assert_eq!(marker.applied(), None);
        drop(marker);
        assert_eq!(found(dir.path(), BOOT), Found::Nothing);
        assert_eq!(
            AppliedMarker::open(dir.path(), BOOT).unwrap().applied(),
            None
        );
    }

    #[test]
    fn golden_record_and_version_1_records_are_ignored() {
        let record = encode(BOOT, at(5));
        let mut expected = [0u8; RECORD_LEN];
        expected[0..4].copy_from_slice(b"ARAP");
        expected[7] = 2;
        expected[8..24].fill(0x11);
        expected[31] = 5;
        expected[32..40].copy_from_slice(&5000u64.to_be_bytes());
        let crc = crc32c(&expected[..40]);
        expected[40..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(record, expected);
        // What version 1 wrote: 36 bytes, no digest. Its entries are applied again.
        let dir = tempfile::tempdir().unwrap();
        let mut v1 = [0u8; 36];
        v1[0..4].copy_from_slice(b"ARAP");
        v1[7] = 1;
        v1[8..24].fill(0x11);
        v1[31] = 5;
        let crc = crc32c(&v1[..32]);
        v1[32..].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(dir.path().join(MARKER_FILE_NAME), v1).unwrap();
        assert_eq!(found(dir.path(), BOOT), Found::Unreadable);
    }
}
