//! The on-disk format of the spill log: where queued entries go, in sequence order,
//! when no link is up and the memory queue is full. Format and ring arithmetic only;
//! the kernel module does the I/O.
//!
//! Layout of the spill device, all integers big-endian:
//!
//! - Bytes 0..1024: two 512-byte superblock slots, written alternately with a rising
//!   generation; the valid slot with the highest generation is current, so a torn
//!   write leaves the previous one in force.
//! - Bytes [`RING_START`].. to the device end (rounded down to 512): the ring. Each
//!   record is a 512-byte header followed by its payload padded to 512 bytes. A record
//!   never wraps; when it does not fit before the ring's end, a wrap marker (a header
//!   alone) is written at the tail and the record goes to the ring's start.
//!
//! Superblock slot: magic `ARPLSPL1`, version, generation, volume size, volume name,
//! ring bounds, head and tail offsets, head and tail sequence numbers, the wire base
//! (if known), the replication history with an "in use" flag, and a CRC-32C of
//! everything before it. Records are committed by writing them, flushing, then writing
//! a superblock whose tail covers them.
//!
//! The history and flag sit in bytes a version 1 superblock from before them kept zero,
//! so such a superblock reads as "no history, closed cleanly". The flag is set when a
//! target opens the device and cleared when it is removed with nothing lost; found set
//! at open, it says the primary crashed (or lost its power) with entries in memory,
//! which a resync must cover.

use crate::activity_log::AlGeometry;
use crate::crc32c::{crc32c, crc32c_update};
use crate::history::{History, HistoryBlock, HISTORY_BLOCK_LEN};
use crate::table::{VolumeName, MAX_VOLUME_LEN};

/// Superblock slot size; also the record alignment.
pub const BLOCK: u64 = 512;
/// Where the ring starts.
pub const RING_START: u64 = 4096;
/// Superblock magic.
pub const SUPER_MAGIC: [u8; 8] = *b"ARPLSPL1";
/// Record magic.
pub const RECORD_MAGIC: [u8; 8] = *b"ARPLREC1";
/// Format version: 2 adds the activity log between the superblocks and the ring.
pub const SPILL_VERSION: u32 = 2;
/// The format before the activity log (ring at [`RING_START`]), still read.
pub const SPILL_VERSION_1: u32 = 1;

/// Why a superblock or record is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillError {
    /// Neither superblock slot holds a valid superblock: not a spill device.
    NoSuperblock,
    /// A superblock magic is there, but no slot holds a valid superblock.
    Damaged,
    /// Neither blank nor a spill log: some other data, which must not be overwritten.
    NotBlank,
    /// A superblock of another format version.
    BadVersion(u32),
    /// The spill device belongs to another volume.
    OtherVolume {
        /// The volume the log belongs to.
        volume: VolumeName,
        /// That volume's size in bytes.
        size: u64,
    },
    /// The device is too small for a ring, or smaller than the log it holds.
    TooSmall,
    /// Bytes that are not a valid record header.
    BadRecord,
    /// A record payload whose checksum does not match.
    BadPayload,
}

/// The ring's bookkeeping: where records start and end, and their sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    /// First byte of the ring.
    pub start: u64,
    /// One past the last byte of the ring.
    pub end: u64,
    /// Offset of the oldest record (== `tail` when empty).
    pub head: u64,
    /// Offset where the next record goes.
    pub tail: u64,
    /// Sequence number of the oldest record (== `tail_seq` when empty).
    pub head_seq: u64,
    /// Sequence number the next record gets.
    pub tail_seq: u64,
}

/// Where a new record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// A wrap marker must be written here first.
    pub wrap_marker_at: Option<u64>,
    /// The record's header goes here.
    pub record_at: u64,
}

/// Bytes a record with `payload_len` payload bytes occupies.
pub fn record_len(payload_len: u64) -> u64 {
    BLOCK + payload_len.div_ceil(BLOCK) * BLOCK
}

impl Ring {
    /// An empty ring over a device of `device_bytes`, whose first record gets `first_seq`.
    pub fn empty(device_bytes: u64, first_seq: u64) -> Result<Self, SpillError> {
        Self::empty_from(RING_START, device_bytes, first_seq)
    }

    /// An empty ring from byte `start` to the end of a device of `device_bytes`.
    pub fn empty_from(start: u64, device_bytes: u64, first_seq: u64) -> Result<Self, SpillError> {
        let end = device_bytes / BLOCK * BLOCK;
        if end < start + 4 * BLOCK {
            return Err(SpillError::TooSmall);
        }
        Ok(Self {
            start,
            end,
            head: start,
            tail: start,
            head_seq: first_seq,
            tail_seq: first_seq,
        })
    }

    /// Makes an empty ring's next record get `seq`: entries acknowledged straight from
    /// memory since the ring last held records moved the stream on. Does nothing to a
    /// ring that holds records, whose sequence continues where it ends.
    pub fn restart_at(&mut self, seq: u64) {
        if self.is_empty() {
            self.head_seq = seq;
            self.tail_seq = seq;
        }
    }

    /// Forgets every record (all known to be on the replica): the ring is empty, and
    /// its next record continues the sequence.
    pub fn clear(&mut self) {
        self.head_seq = self.tail_seq;
        self.head = self.start;
        self.tail = self.start;
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.head_seq == self.tail_seq
    }

    /// Bytes held by records (and wrap gaps).
    pub fn used(&self) -> u64 {
        if self.is_empty() {
            0
        } else if self.tail > self.head {
            self.tail - self.head
        } else {
            (self.end - self.head) + (self.tail - self.start)
        }
    }

    /// Bytes the ring can hold.
    pub fn capacity(&self) -> u64 {
        self.end - self.start
    }

    /// Where a record of `len` bytes (see [`record_len`]) would go, if it fits.
    pub fn place(&self, len: u64) -> Option<Placement> {
        let at_tail = Placement {
            wrap_marker_at: None,
            record_at: self.tail,
        };
        if !self.is_empty() && self.tail <= self.head {
            // Wrapped: the free space is [tail, head).
            return (self.tail + len <= self.head).then_some(at_tail);
        }
        // The free space is [tail, end), then [start, head) (all of it when empty).
        if self.tail + len <= self.end {
            return Some(at_tail);
        }
        let limit = if self.is_empty() { self.end } else { self.head };
        (self.start + len <= limit).then_some(Placement {
            wrap_marker_at: Some(self.tail),
            record_at: self.start,
        })
    }

    /// Records that a record of `len` bytes was written at `placement`.
    pub fn push(&mut self, placement: Placement, len: u64) {
        if self.is_empty() {
            self.head = placement.record_at;
        }
        self.tail = placement.record_at + len;
        if self.tail == self.end {
            self.tail = self.start;
        }
        self.tail_seq += 1;
    }

    /// Drops the oldest record, `len` bytes long, whose header was at `at` (after a
    /// wrap marker, `at` is the ring's start).
    pub fn pop(&mut self, at: u64, len: u64) {
        self.head = at + len;
        if self.head == self.end {
            self.head = self.start;
        }
        self.head_seq += 1;
        if self.is_empty() {
            // Start over at the beginning: the longest run of free space.
            self.head = self.start;
            self.tail = self.start;
        }
    }
}

/// The superblock's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Rises with every write; the higher valid slot wins.
    pub generation: u64,
    /// Size of the replicated volume in bytes.
    pub volume_size: u64,
    /// The replicated volume.
    pub volume: VolumeName,
    /// Ring state.
    pub ring: Ring,
    /// Wire sequence = base + local sequence, once learned from a receiver.
    pub wire_base: Option<u64>,
    /// The replication history this device continues, once it has one.
    pub history: Option<History>,
    /// A target has the device open (set at open, cleared at a clean removal).
    pub in_use: bool,
    /// The activity log's geometry (format version 2); `None` in a version 1 log.
    pub al: Option<AlGeometry>,
    /// A copy of the whole volume began and is not all acknowledged: the activity log
    /// holds the regions it has left.
    pub copy_pending: bool,
    /// An activity log write failed while the device was in use: writes may have gone
    /// on without their regions marked, so the log cannot name what a crash lost.
    pub al_incomplete: bool,
}

/// Superblock byte: flags.
const SB_FLAGS_AT: usize = 161;
/// Superblock flag: a target has the device open.
const SB_IN_USE: u8 = 1;
/// Superblock flag: a copy of the whole volume is pending (see `copy_pending`).
const SB_COPY_PENDING: u8 = 2;
/// Superblock flag: the activity log is incomplete (see `al_incomplete`).
const SB_AL_INCOMPLETE: u8 = 4;
/// Superblock bytes: the activity log's region size in KiB and its blocks.
const SB_AL_AT: usize = 200;
/// Superblock bytes: the history block.
const SB_HISTORY_AT: usize = 168;

impl Superblock {
    /// Slot (0 or 1) this generation is written to.
    pub fn slot(&self) -> u64 {
        self.generation % 2
    }

    /// The 512 bytes of a superblock slot.
    pub fn encode(&self) -> [u8; BLOCK as usize] {
        let mut out = [0u8; BLOCK as usize];
        out[0..8].copy_from_slice(&SUPER_MAGIC);
        let version = if self.al.is_some() {
            SPILL_VERSION
        } else {
            SPILL_VERSION_1
        };
        out[8..12].copy_from_slice(&version.to_be_bytes());
        out[16..24].copy_from_slice(&self.generation.to_be_bytes());
        out[24..32].copy_from_slice(&self.volume_size.to_be_bytes());
        let name = self.volume.as_str().as_bytes();
        out[32] = name.len() as u8;
        out[33..33 + name.len()].copy_from_slice(name);
        let ring = &self.ring;
        let fields = [
            ring.start,
            ring.end,
            ring.head,
            ring.tail,
            ring.head_seq,
            ring.tail_seq,
            self.wire_base.unwrap_or(0),
        ];
        for (i, value) in fields.iter().enumerate() {
            let at = 104 + i * 8;
            out[at..at + 8].copy_from_slice(&value.to_be_bytes());
        }
        out[160] = u8::from(self.wire_base.is_some());
        if self.in_use {
            out[SB_FLAGS_AT] |= SB_IN_USE;
        }
        if self.copy_pending {
            out[SB_FLAGS_AT] |= SB_COPY_PENDING;
        }
        if self.al_incomplete {
            out[SB_FLAGS_AT] |= SB_AL_INCOMPLETE;
        }
        if let Some(al) = self.al {
            out[SB_AL_AT..SB_AL_AT + 4].copy_from_slice(&al.region_kb.to_be_bytes());
            out[SB_AL_AT + 4..SB_AL_AT + 8].copy_from_slice(&al.blocks.to_be_bytes());
        }
        let history = HistoryBlock {
            history: self.history,
            flags: 0,
        };
        out[SB_HISTORY_AT..SB_HISTORY_AT + HISTORY_BLOCK_LEN].copy_from_slice(&history.encode());
        let crc = crc32c(&out[..508]);
        out[508..512].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads one slot; `None` if it does not hold a valid superblock.
    pub fn decode(bytes: &[u8; BLOCK as usize]) -> Result<Option<Self>, SpillError> {
        let be64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        if bytes[0..8] != SUPER_MAGIC || crc32c(&bytes[..508]).to_be_bytes() != bytes[508..512] {
            return Ok(None);
        }
        let version = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let be32 = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let al = match version {
            SPILL_VERSION_1 => None,
            SPILL_VERSION => Some(AlGeometry {
                region_kb: be32(SB_AL_AT),
                blocks: be32(SB_AL_AT + 4),
            }),
            _ => return Err(SpillError::BadVersion(version)),
        };
        let ring_start = al.map_or(RING_START, |al| al.ring_start());
        // Not `Option::is_none_or`: the kernel build's MSRV predates it.
        let al_sane = match al {
            Some(al) => {
                (crate::table::MIN_REGION_KB..=crate::table::MAX_REGION_KB).contains(&al.region_kb)
                    && al.region_kb.is_power_of_two()
                    && al.blocks > 0
            }
            None => true,
        };
        let name_len = usize::from(bytes[32]).min(MAX_VOLUME_LEN);
        let name = core::str::from_utf8(&bytes[33..33 + name_len]).ok();
        let Some(volume) = name.and_then(VolumeName::new) else {
            return Ok(None);
        };
        let ring = Ring {
            start: be64(104),
            end: be64(112),
            head: be64(120),
            tail: be64(128),
            head_seq: be64(136),
            tail_seq: be64(144),
        };
        let sane = al_sane
            && ring.start == ring_start
            && ring.start < ring.end
            && (ring.start..ring.end).contains(&ring.head)
            && (ring.start..ring.end).contains(&ring.tail)
            && ring.head_seq <= ring.tail_seq;
        let history =
            HistoryBlock::decode(&bytes[SB_HISTORY_AT..SB_HISTORY_AT + HISTORY_BLOCK_LEN]);
        let known_flags = SB_IN_USE | SB_COPY_PENDING | SB_AL_INCOMPLETE;
        let (Some(history), true) = (history, sane && bytes[SB_FLAGS_AT] & !known_flags == 0)
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            generation: be64(16),
            volume_size: be64(24),
            volume,
            ring,
            wire_base: (bytes[160] == 1).then(|| be64(152)),
            history: history.history,
            in_use: bytes[SB_FLAGS_AT] & SB_IN_USE != 0,
            al,
            copy_pending: bytes[SB_FLAGS_AT] & SB_COPY_PENDING != 0,
            al_incomplete: bytes[SB_FLAGS_AT] & SB_AL_INCOMPLETE != 0,
        }))
    }

    /// The current superblock from the two slots, checked against the volume it must
    /// belong to.
    pub fn choose(
        slots: [&[u8; BLOCK as usize]; 2],
        volume: &VolumeName,
        volume_size: u64,
    ) -> Result<Self, SpillError> {
        let mut best: Option<Self> = None;
        for slot in slots {
            if let Some(sb) = Self::decode(slot)? {
                // Not `Option::is_none_or`: the kernel build's MSRV predates it.
                match best {
                    Some(b) if b.generation >= sb.generation => {}
                    _ => best = Some(sb),
                }
            }
        }
        let sb = best.ok_or(SpillError::NoSuperblock)?;
        if sb.volume != *volume || sb.volume_size != volume_size {
            return Err(SpillError::OtherVolume {
                volume: sb.volume,
                size: sb.volume_size,
            });
        }
        Ok(sb)
    }
}

/// What a device offered as spill device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Zeroes where the superblocks go: free to format.
    Blank,
    /// The spill log of this volume.
    Log(Superblock),
}

/// Looks at the two superblock slots of a device of `device_bytes` offered as the
/// spill device of `volume`. Only a blank device or this volume's own log is accepted:
/// anything else may be somebody's data, or another volume's unsent writes.
pub fn probe(
    slots: [&[u8; BLOCK as usize]; 2],
    volume: &VolumeName,
    volume_size: u64,
    device_bytes: u64,
) -> Result<Probe, SpillError> {
    if slots.iter().all(|slot| slot.iter().all(|&b| b == 0)) {
        return Ok(Probe::Blank);
    }
    let sb = match Superblock::choose(slots, volume, volume_size) {
        Err(SpillError::NoSuperblock) if slots.iter().any(|s| s[0..8] == SUPER_MAGIC) => {
            return Err(SpillError::Damaged)
        }
        Err(SpillError::NoSuperblock) => return Err(SpillError::NotBlank),
        other => other?,
    };
    if sb.ring.end > device_bytes {
        return Err(SpillError::TooSmall);
    }
    Ok(Probe::Log(sb))
}

impl core::fmt::Display for SpillError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSuperblock => write!(f, "no valid spill superblock"),
            Self::Damaged => write!(
                f,
                "its spill superblocks are damaged (both copies fail their checksum)"
            ),
            Self::NotBlank => write!(
                f,
                "it is neither blank nor a spill log (its first 4 KiB must be zeroes to use it)"
            ),
            Self::BadVersion(version) => {
                write!(
                    f,
                    "its spill log has format version {version}, this module reads \
                     {SPILL_VERSION_1} and {SPILL_VERSION}"
                )
            }
            Self::OtherVolume { volume, size } => write!(
                f,
                "it holds the spill log of volume {volume} ({size} bytes), not this one"
            ),
            Self::TooSmall => write!(f, "it is too small for its spill log"),
            Self::BadRecord => write!(f, "a spill record header is damaged"),
            Self::BadPayload => write!(f, "a spill record's data fails its checksum"),
        }
    }
}

/// What a spilled record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A write; the payload follows.
    Write = 1,
    /// A flush.
    Flush = 2,
    /// A discard of `length` bytes.
    Discard = 3,
    /// Write zeroes over `length` bytes.
    WriteZeroes = 4,
    /// An online verify's check of a chunk; its payload is the `Verify` frame's.
    Verify = 5,
    /// Not a record: the next one is at the ring's start.
    Wrap = 0xFF,
}

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Local sequence number.
    pub seq: u64,
    /// What it holds.
    pub kind: RecordKind,
    /// FUA write.
    pub fua: bool,
    /// Byte offset on the volume.
    pub offset: u64,
    /// Payload bytes (writes, verify checks) or range bytes (discard, write-zeroes).
    pub length: u32,
    /// CRC-32C of the payload.
    pub payload_crc: u32,
}

impl RecordHeader {
    /// Payload bytes following the header on disk (before padding).
    pub fn payload_len(&self) -> u64 {
        if matches!(self.kind, RecordKind::Write | RecordKind::Verify) {
            u64::from(self.length)
        } else {
            0
        }
    }

    /// The 512-byte header block.
    pub fn encode(&self) -> [u8; BLOCK as usize] {
        let mut out = [0u8; BLOCK as usize];
        out[0..8].copy_from_slice(&RECORD_MAGIC);
        out[8..16].copy_from_slice(&self.seq.to_be_bytes());
        out[16] = self.kind as u8;
        out[17] = u8::from(self.fua);
        out[24..32].copy_from_slice(&self.offset.to_be_bytes());
        out[32..36].copy_from_slice(&self.length.to_be_bytes());
        out[36..40].copy_from_slice(&self.payload_crc.to_be_bytes());
        let crc = crc32c(&out[..40]);
        out[40..44].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a header block.
    pub fn decode(bytes: &[u8; BLOCK as usize]) -> Result<Self, SpillError> {
        if bytes[0..8] != RECORD_MAGIC || crc32c(&bytes[..40]).to_be_bytes() != bytes[40..44] {
            return Err(SpillError::BadRecord);
        }
        let be64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let be32 = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let kind = match bytes[16] {
            1 => RecordKind::Write,
            2 => RecordKind::Flush,
            3 => RecordKind::Discard,
            4 => RecordKind::WriteZeroes,
            5 => RecordKind::Verify,
            0xFF => RecordKind::Wrap,
            _ => return Err(SpillError::BadRecord),
        };
        Ok(Self {
            seq: be64(8),
            kind,
            fua: bytes[17] == 1,
            offset: be64(24),
            length: be32(32),
            payload_crc: be32(36),
        })
    }

    /// Checks a payload read back against the header.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), SpillError> {
        self.check_payload_pieces([payload])
    }

    /// [`Self::check_payload`] for a payload read back in pieces (pages), in order.
    pub fn check_payload_pieces<'a>(
        &self,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), SpillError> {
        let (len, crc) = pieces.into_iter().fold((0u64, 0u32), |(len, crc), piece| {
            (len + piece.len() as u64, crc32c_update(crc, piece))
        });
        if len != self.payload_len() || crc != self.payload_crc {
            return Err(SpillError::BadPayload);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::VecDeque;

    fn volume(name: &str) -> VolumeName {
        VolumeName::new(name).unwrap()
    }

    /// A model check: records placed by the ring never overlap live records or leave
    /// the ring, come back in order, and fill it to a sensible degree.
    #[test]
    fn ring_places_records_without_overlap() {
        let mut ring = Ring::empty(RING_START + 64 * 1024, 1).unwrap();
        let mut live: VecDeque<(u64, u64, u64)> = VecDeque::new(); // (seq, at, len)
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut pushed = 0;
        for _ in 0..20_000 {
            if next() % 3 != 0 {
                let len = record_len(next() % 9000);
                match ring.place(len) {
                    Some(p) => {
                        let at = p.record_at;
                        assert!(at >= ring.start && at + len <= ring.end);
                        for &(_, a, l) in &live {
                            assert!(at + len <= a || a + l <= at, "overlap");
                        }
                        if let Some(marker) = p.wrap_marker_at {
                            assert!(marker + BLOCK <= ring.end);
                            for &(_, a, l) in &live {
                                assert!(marker + BLOCK <= a || a + l <= marker, "marker overlap");
                            }
                        }
                        live.push_back((ring.tail_seq, at, len));
                        ring.push(p, len);
                        pushed += 1;
                    }
                    None => assert!(
                        ring.used() + len > ring.capacity() / 2 || !live.is_empty(),
                        "refused {len} bytes with {} used",
                        ring.used()
                    ),
                }
            } else if let Some((seq, at, len)) = live.pop_front() {
                assert_eq!(seq, ring.head_seq);
                ring.pop(at, len);
            }
            let held: u64 = live.iter().map(|&(_, _, l)| l).sum();
            assert!(ring.used() >= held);
            assert_eq!(ring.tail_seq - ring.head_seq, live.len() as u64);
        }
        assert!(pushed > 5_000);
    }

    #[test]
    fn empty_ring_takes_a_record_of_its_whole_size() {
        let ring = Ring::empty(RING_START + 8 * BLOCK, 5).unwrap();
        assert!(ring.place(ring.capacity()).is_some());
        assert!(ring.place(ring.capacity() + BLOCK).is_none());
        assert_eq!(Ring::empty(RING_START, 1), Err(SpillError::TooSmall));
    }

    #[test]
    fn only_an_empty_ring_restarts_at_a_later_sequence() {
        let mut ring = Ring::empty(RING_START + 64 * BLOCK, 1).unwrap();
        // Entries 1..=688 were acknowledged from memory; the first spill is 689.
        ring.restart_at(689);
        assert_eq!((ring.head_seq, ring.tail_seq), (689, 689));
        let placement = ring.place(2 * BLOCK).unwrap();
        ring.push(placement, 2 * BLOCK);
        assert_eq!((ring.head_seq, ring.tail_seq), (689, 690));
        // Holding a record, the sequence continues where the ring ends.
        ring.restart_at(900);
        assert_eq!((ring.head_seq, ring.tail_seq), (689, 690));
        ring.pop(placement.record_at, 2 * BLOCK);
        ring.restart_at(900);
        assert_eq!((ring.head_seq, ring.tail_seq), (900, 900));
        assert_eq!(ring.used(), 0);
    }

    #[test]
    fn a_cleared_ring_is_empty_at_its_start_and_continues_the_sequence() {
        let mut ring = Ring::empty(RING_START + 64 * BLOCK, 10).unwrap();
        for _ in 0..3 {
            let placement = ring.place(2 * BLOCK).unwrap();
            ring.push(placement, 2 * BLOCK);
        }
        ring.clear();
        assert!(ring.is_empty());
        assert_eq!((ring.head_seq, ring.tail_seq), (13, 13));
        assert_eq!(
            (ring.head, ring.tail, ring.used()),
            (ring.start, ring.start, 0)
        );
        assert!(ring.place(ring.capacity()).is_some());
    }

    #[test]
    fn superblock_round_trip_and_slot_choice() {
        let mut sb = Superblock {
            generation: 7,
            volume_size: 1 << 30,
            volume: volume("db"),
            ring: Ring::empty(1 << 20, 42).unwrap(),
            wire_base: Some(1000),
            history: Some(History::new([5; 16])),
            in_use: true,
            al: None,
            copy_pending: false,
            al_incomplete: false,
        };
        let older = sb.encode();
        assert_eq!(Superblock::decode(&older), Ok(Some(sb)));
        sb.generation = 8;
        sb.ring.tail_seq = 43;
        let newer = sb.encode();
        let chosen = Superblock::choose([&older, &newer], &volume("db"), 1 << 30).unwrap();
        assert_eq!(chosen, sb);

        let mut torn = newer;
        torn[200] ^= 1;
        let chosen = Superblock::choose([&older, &torn], &volume("db"), 1 << 30).unwrap();
        assert_eq!(
            chosen.generation, 7,
            "a torn newer slot falls back to the older one"
        );

        let theirs = SpillError::OtherVolume {
            volume: volume("db"),
            size: 1 << 30,
        };
        assert_eq!(
            Superblock::choose([&older, &newer], &volume("other"), 1 << 30),
            Err(theirs)
        );
        assert_eq!(
            Superblock::choose([&older, &newer], &volume("db"), 1 << 29),
            Err(theirs)
        );
        let blank = [0u8; BLOCK as usize];
        assert_eq!(
            Superblock::choose([&blank, &torn], &volume("db"), 1 << 30),
            Err(SpillError::NoSuperblock)
        );
        let mut future = older;
        future[11] = 3;
        let crc = crc32c(&future[..508]);
        future[508..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(Superblock::decode(&future), Err(SpillError::BadVersion(3)));
    }

    #[test]
    fn superblock_history_and_in_use_flag() {
        let sb = Superblock {
            generation: 2,
            volume_size: 1 << 30,
            volume: volume("db"),
            ring: Ring::empty(1 << 20, 1).unwrap(),
            wire_base: Some(9),
            history: Some(History {
                uuid: *b"0123456789abcdef",
                counter: 4,
            }),
            in_use: true,
            al: None,
            copy_pending: false,
            al_incomplete: false,
        };
        let bytes = sb.encode();
        assert_eq!(bytes[161], 1);
        assert_eq!(&bytes[168..184], b"0123456789abcdef");
        assert_eq!(&bytes[184..192], &4u64.to_be_bytes());
        assert_eq!(&bytes[192..200], &[0, 0, 0, 1, 0, 0, 0, 0]);
        // A superblock from before histories kept these bytes zero.
        let mut old = bytes;
        old[161..200].fill(0);
        let crc = crc32c(&old[..508]);
        old[508..].copy_from_slice(&crc.to_be_bytes());
        let decoded = Superblock::decode(&old).unwrap().unwrap();
        assert_eq!((decoded.history, decoded.in_use), (None, false));
        // Flags this code does not know are not guessed at.
        let mut odd = bytes;
        odd[161] |= 0x40;
        let crc = crc32c(&odd[..508]);
        odd[508..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(Superblock::decode(&odd), Ok(None));
    }

    #[test]
    fn version_2_carries_the_activity_log() {
        let al = AlGeometry::for_volume(1 << 30, 4096);
        let sb = Superblock {
            generation: 5,
            volume_size: 1 << 30,
            volume: volume("db"),
            ring: Ring::empty_from(al.ring_start(), 1 << 20, 1).unwrap(),
            wire_base: None,
            history: None,
            in_use: true,
            al: Some(al),
            copy_pending: true,
            al_incomplete: true,
        };
        let bytes = sb.encode();
        assert_eq!(&bytes[8..12], &2u32.to_be_bytes());
        assert_eq!(bytes[161], 7);
        assert_eq!(&bytes[200..208], &[0, 0, 0x10, 0, 0, 0, 0, 1]);
        assert_eq!(Superblock::decode(&bytes), Ok(Some(sb)));
        // The ring must start where the geometry says.
        let mut moved = sb;
        moved.ring = Ring::empty(1 << 20, 1).unwrap();
        assert_eq!(Superblock::decode(&moved.encode()), Ok(None));
        // A region size the table would refuse is no activity log.
        let mut odd = bytes;
        odd[203] = 3;
        let crc = crc32c(&odd[..508]);
        odd[508..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(Superblock::decode(&odd), Ok(None));
    }

    #[test]
    fn probe_accepts_only_blank_devices_and_own_logs() {
        let sb = Superblock {
            generation: 3,
            volume_size: 1 << 30,
            volume: volume("db"),
            ring: Ring::empty(1 << 20, 1).unwrap(),
            wire_base: None,
            history: None,
            in_use: false,
            al: None,
            copy_pending: false,
            al_incomplete: false,
        };
        let slot = sb.encode();
        let blank = [0u8; BLOCK as usize];
        let db = volume("db");
        assert_eq!(
            probe([&blank, &blank], &db, 1 << 30, 1 << 20),
            Ok(Probe::Blank)
        );
        assert_eq!(
            probe([&blank, &slot], &db, 1 << 30, 1 << 20),
            Ok(Probe::Log(sb))
        );
        assert_eq!(
            probe([&blank, &slot], &db, 1 << 30, 1 << 19),
            Err(SpillError::TooSmall)
        );
        assert!(matches!(
            probe([&slot, &blank], &volume("web"), 1 << 30, 1 << 20),
            Err(SpillError::OtherVolume { .. })
        ));
        let mut damaged = slot;
        damaged[40] ^= 0xFF;
        assert_eq!(
            probe([&damaged, &blank], &db, 1 << 30, 1 << 20),
            Err(SpillError::Damaged)
        );
        let mut filesystem = blank;
        filesystem[0x38] = 0x53;
        assert_eq!(
            probe([&filesystem, &blank], &db, 1 << 30, 1 << 20),
            Err(SpillError::NotBlank)
        );
    }

    #[test]
    fn golden_record_header() {
        let header = RecordHeader {
            seq: 9,
            kind: RecordKind::Write,
            fua: true,
            offset: 4096,
            length: 512,
            payload_crc: crc32c(&[7u8; 512]),
        };
        let bytes = header.encode();
        assert_eq!(&bytes[0..8], b"ARPLREC1");
        assert_eq!(&bytes[8..16], &9u64.to_be_bytes());
        assert_eq!((bytes[16], bytes[17]), (1, 1));
        assert_eq!(&bytes[24..32], &4096u64.to_be_bytes());
        assert_eq!(&bytes[32..36], &512u32.to_be_bytes());
        assert!(bytes[44..].iter().all(|&b| b == 0));
        assert_eq!(RecordHeader::decode(&bytes), Ok(header));
        assert_eq!(header.check_payload(&[7u8; 512]), Ok(()));
        assert_eq!(
            header.check_payload(&[8u8; 512]),
            Err(SpillError::BadPayload)
        );
        let mut bad = bytes;
        bad[30] ^= 1;
        assert_eq!(RecordHeader::decode(&bad), Err(SpillError::BadRecord));
        assert_eq!(record_len(0), 512);
        assert_eq!(record_len(1), 1024);
        assert_eq!(record_len(512), 1024);
    }

    #[test]
    fn a_verify_check_is_a_record_with_its_payload() {
        let check = crate::verify::ChunkCheck { hash: 5, len: 4096 }.encode();
        let header = RecordHeader {
            seq: 3,
            kind: RecordKind::Verify,
            fua: false,
            offset: 1 << 20,
            length: check.len() as u32,
            payload_crc: crc32c(&check),
        };
        let bytes = header.encode();
        assert_eq!(bytes[16], 5);
        assert_eq!(RecordHeader::decode(&bytes), Ok(header));
        assert_eq!(header.payload_len(), 16);
        assert_eq!(header.check_payload(&check), Ok(()));
    }
}
