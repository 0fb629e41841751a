//! The highest sequence applied to the target in this boot, durable or not.
//!
//! The state file says what is durable. Entries applied after its last commit are on the
//! target as well (in the page cache or written back) for as long as the host stays up.
//! When the daemon is killed, the sender resends them from the durable sequence on, and
//! writing them again would walk the target back through states the primary never had:
//! an older write lands over a newer one until the newer is written again. This marker
//! tells the applier which of the resent entries the target already holds, so it skips
//! them.
//!
//! Kept in `<state-dir>/replicad.applied`: one 36-byte record, rewritten in place after
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
//! | 4..8 | format version, 1 |
//! | 8..24 | boot id |
//! | 24..32 | applied sequence |
//! | 32..36 | CRC-32C of bytes 0..32 |
//!
//! All zeroes (or an empty file) is a reset marker: it vouches for nothing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use arepl_core::crc32c::crc32c;

use crate::state::StateError;

/// Name of the marker file inside the state directory.
pub const MARKER_FILE_NAME: &str = "replicad.applied";
/// Where Linux publishes the id of the current boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
const RECORD_LEN: usize = 36;
const RECORD_MAGIC: &[u8; 4] = b"ARAP";
const FORMAT_VERSION: u32 = 1;
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
    /// A record of this boot, with its applied sequence.
    ThisBoot(u64),
}

/// The open marker file.
#[derive(Debug)]
pub struct AppliedMarker {
    file: File,
    path: PathBuf,
    boot: BootId,
    /// The highest sequence known to be on the target in this boot; `None` when the
    /// marker vouches for nothing.
    applied_seq: Option<u64>,
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
        let applied_seq = match found {
            Found::ThisBoot(seq) => Some(seq),
            Found::Nothing | Found::Unreadable | Found::OtherBoot => None,
        };
        Ok(Self {
            file,
            path,
            boot,
            applied_seq,
        })
    }

    /// The highest sequence known to be on the target in this boot, if the marker
    /// vouches for any.
    pub fn applied_seq(&self) -> Option<u64> {
        self.applied_seq
    }

    /// The marker file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the target holds every entry up to `seq`. Call it only once the
    /// target write returned. Not synced: it has to outlive the process, not the host.
    pub fn record(&mut self, seq: u64) -> Result<(), StateError> {
        self.file
            .write_all_at(&encode(self.boot, seq), 0)
            .map_err(|source| self.io_error(source))?;
        self.applied_seq = Some(seq);
        Ok(())
    }

    /// Makes the marker vouch for nothing, in memory at once and then on disk.
    pub fn reset(&mut self) -> Result<(), StateError> {
        self.applied_seq = None;
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
        Some((written_in, seq)) if written_in == boot => Found::ThisBoot(seq),
        Some(_) => Found::OtherBoot,
    })
}

fn encode(boot: BootId, seq: u64) -> [u8; RECORD_LEN] {
    let mut record = [0u8; RECORD_LEN];
    record[0..4].copy_from_slice(RECORD_MAGIC);
    record[4..8].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    record[8..24].copy_from_slice(&boot.0);
    record[24..32].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c(&record[..CRC_AT]);
    record[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
    record
}

fn decode(record: &[u8; RECORD_LEN]) -> Option<(BootId, u64)> {
    let stated_crc = u32::from_be_bytes(record[CRC_AT..].try_into().expect("4 bytes"));
    if &record[0..4] != RECORD_MAGIC
        || record[4..8] != FORMAT_VERSION.to_be_bytes()
        || stated_crc != crc32c(&record[..CRC_AT])
    {
        return None;
    }
    let boot = BootId(record[8..24].try_into().expect("16 bytes"));
    let seq = u64::from_be_bytes(record[24..32].try_into().expect("8 bytes"));
    Some((boot, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: BootId = BootId::from_bytes([0x11; 16]);
    const NEXT_BOOT: BootId = BootId::from_bytes([0x22; 16]);

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
        assert_eq!(marker.applied_seq(), None);
        assert_eq!(found(dir.path(), BOOT), Found::Nothing);
        marker.record(41).unwrap();
        marker.record(42).unwrap();
        assert_eq!(marker.applied_seq(), Some(42));
        drop(marker);
        assert_eq!(found(dir.path(), BOOT), Found::ThisBoot(42));
        assert_eq!(found(dir.path(), NEXT_BOOT), Found::OtherBoot);
        let marker = AppliedMarker::open(dir.path(), BOOT).unwrap();
        assert_eq!(marker.applied_seq(), Some(42));
        let marker = AppliedMarker::open(dir.path(), NEXT_BOOT).unwrap();
        assert_eq!(marker.applied_seq(), None);
    }

    #[test]
    fn every_torn_byte_and_a_short_record_are_detected() {
        let record = encode(BOOT, 7);
        assert_eq!(decode(&record), Some((BOOT, 7)));
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
        assert_eq!(marker.applied_seq(), None);
    }

    #[test]
    fn a_reset_marker_vouches_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut marker = AppliedMarker::open(dir.path(), BOOT).unwrap();
        marker.record(9).unwrap();
        marker.reset().unwrap();
        assert_eq!(marker.applied_seq(), None);
        drop(marker);
        assert_eq!(found(dir.path(), BOOT), Found::Nothing);
        assert_eq!(
            AppliedMarker::open(dir.path(), BOOT).unwrap().applied_seq(),
            None
        );
    }
}
