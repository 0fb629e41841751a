// SPDX-License-Identifier: GPL-2.0

//! Replication queue entries: what one completed write, flush, discard or write-zeroes
//! becomes on its way to the receiver, and an online verify's checks.

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::bio::Bio;
use crate::crc32c::crc32c_update;
use crate::fifo::{Budget, Slots};
use crate::payload::Payload;
use crate::range_table::RangeId;
use crate::spill::{RecordHeader, RecordKind};
use crate::verify::{ChunkCheck, VERIFY_PAYLOAD_LEN};
use crate::wire::{payload_checksum_pieces, Header};

/// What an entry asks the receiver to do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Write { fua: bool },
    Flush,
    /// Only read back from spill logs written before discards stopped being offered
    /// (target 0.5.0): they are still sent.
    Discard,
    WriteZeroes,
    /// An online verify's check of a chunk: changes nothing on the replica.
    Verify,
}

/// One queued operation. Immutable once built; shared with the sender while in flight.
pub(crate) struct Entry {
    kind: EntryKind,
    /// Byte offset on the volume (0 for flushes).
    offset: u64,
    /// Payload bytes for writes and checks, range bytes for discards and write-zeroes.
    length: u32,
    /// Payload of a write or check (`length` bytes); empty otherwise, and for a write
    /// whose payload is still only on the local device (see [`Self::payload_on_disk`]).
    data: Option<Payload>,
    /// The payload's CRC-32C when already known (a spill record's, checked as it was
    /// read back), so it is not computed again should the entry be spilled again.
    payload_crc: Option<u32>,
}

impl Entry {
    /// A write entry for a bio, without its payload: until the entry is sent or
    /// spilled, the payload is read back from the local device, whose range the write
    /// path keeps from being overwritten meanwhile (`range_table`).
    pub(crate) fn write(bio: &Bio<'_>) -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                kind: EntryKind::Write { fua: bio.is_fua() },
                offset: bio.target_offset_bytes(),
                length: bio.size(),
                data: None,
                payload_crc: None,
            },
            GFP_KERNEL,
        )?)
    }

    /// A write entry for a bio with its payload copied from the bio's pages, which do
    /// not change while the write is in flight (the target asks for stable writes).
    pub(crate) fn write_with_payload(bio: &Bio<'_>) -> Result<Arc<Self>> {
        let data = bio.copy_payload()?;
        Ok(Arc::new(
            Self {
                kind: EntryKind::Write { fua: bio.is_fua() },
                offset: bio.target_offset_bytes(),
                length: bio.size(),
                data: Some(data),
                payload_crc: None,
            },
            GFP_KERNEL,
        )?)
    }

    /// This write entry with its payload `data`, read back from the local device.
    pub(crate) fn with_payload(&self, data: Payload) -> Result<Arc<Self>> {
        if !self.payload_on_disk() || data.len() != self.length as usize {
            return Err(EINVAL);
        }
        Ok(Arc::new(
            Self {
                kind: self.kind,
                offset: self.offset,
                length: self.length,
                data: Some(data),
                payload_crc: None,
            },
            GFP_KERNEL,
        )?)
    }

    /// Whether the payload is not in memory but on the local device.
    pub(crate) fn payload_on_disk(&self) -> bool {
        matches!(self.kind, EntryKind::Write { .. }) && self.length > 0 && self.data.is_none()
    }

    /// A write entry of `data`, read from the volume at byte `offset` (initial copy).
    pub(crate) fn copied(offset: u64, data: Payload) -> Result<Arc<Self>> {
        let length = u32::try_from(data.len()).map_err(|_| EINVAL)?;
        Ok(Arc::new(
            Self {
                kind: EntryKind::Write { fua: false },
                offset,
                length,
                data: Some(data),
                payload_crc: None,
            },
            GFP_KERNEL,
        )?)
    }

    /// A check of the chunk at byte `offset` (online verify).
    pub(crate) fn verify(offset: u64, check: &ChunkCheck) -> Result<Arc<Self>> {
        let data = Payload::copy_of(&check.encode())?;
        Ok(Arc::new(
            Self {
                kind: EntryKind::Verify,
                offset,
                length: VERIFY_PAYLOAD_LEN as u32,
                data: Some(data),
                payload_crc: None,
            },
            GFP_KERNEL,
        )?)
    }

    /// A metadata-only entry (flush, discard, write-zeroes).
    pub(crate) fn metadata(kind: EntryKind, offset: u64, length: u32) -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                kind,
                offset,
                length,
                data: None,
                payload_crc: None,
            },
            GFP_KERNEL,
        )?)
    }

    /// An entry read back from the spill log; `data` holds the payload, already checked
    /// against the header's CRC.
    pub(crate) fn from_record(header: &RecordHeader, data: Option<Payload>) -> Result<Arc<Self>> {
        let kind = match header.kind {
            RecordKind::Write => EntryKind::Write { fua: header.fua },
            RecordKind::Flush => EntryKind::Flush,
            RecordKind::Discard => EntryKind::Discard,
            RecordKind::WriteZeroes => EntryKind::WriteZeroes,
            RecordKind::Verify => EntryKind::Verify,
            RecordKind::Wrap => return Err(EINVAL),
        };
        let bad_check = kind == EntryKind::Verify && header.length as usize != VERIFY_PAYLOAD_LEN;
        let held = data.as_ref().map_or(0, |d| d.len() as u64);
        if bad_check || header.payload_len() != held {
            return Err(EINVAL);
        }
        Ok(Arc::new(
            Self {
                kind,
                offset: header.offset,
                length: header.length,
                data,
                payload_crc: Some(header.payload_crc),
            },
            GFP_KERNEL,
        )?)
    }

    /// The spill record header for this entry at local sequence `seq`.
    pub(crate) fn record_header(&self, seq: u64) -> RecordHeader {
        let (kind, fua) = match self.kind {
            EntryKind::Write { fua } => (RecordKind::Write, fua),
            EntryKind::Flush => (RecordKind::Flush, false),
            EntryKind::Discard => (RecordKind::Discard, false),
            EntryKind::WriteZeroes => (RecordKind::WriteZeroes, false),
            EntryKind::Verify => (RecordKind::Verify, false),
        };
        RecordHeader {
            seq,
            kind,
            fua,
            offset: self.offset,
            length: self.length,
            payload_crc: self
                .payload_crc
                .unwrap_or_else(|| self.payload_pieces().fold(0, crc32c_update)),
        }
    }

    /// The byte range the entry changes on the volume (offset, length); `None` for a
    /// flush or a check.
    pub(crate) fn range(&self) -> Option<(u64, u64)> {
        match self.kind {
            EntryKind::Flush | EntryKind::Verify => None,
            _ => Some((self.offset, u64::from(self.length))),
        }
    }

    /// Byte offset on the volume (0 for flushes).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes of payload the entry carries, in memory or (still) on the local device.
    pub(crate) fn payload_len(&self) -> u64 {
        match self.kind {
            EntryKind::Write { .. } | EntryKind::Verify => u64::from(self.length),
            _ => 0,
        }
    }

    /// What the entry costs against the queue's byte budget.
    pub(crate) fn cost(&self) -> u64 {
        Budget::cost(self.payload_len())
    }

    /// The frame header for this entry at wire sequence `seq`; a write's carries its
    /// payload's checksum when `wire_crc` (else the payload is not read for it).
    pub(crate) fn header(&self, seq: u64, wire_crc: bool) -> Header {
        match self.kind {
            EntryKind::Write { fua } if wire_crc => {
                let checksum = payload_checksum_pieces(self.payload_pieces());
                Header::write_with_checksum(seq, self.offset, self.length, checksum, fua)
            }
            EntryKind::Write { fua } => Header::write_unchecked(seq, self.offset, self.length, fua),
            EntryKind::Flush => Header::flush(seq),
            EntryKind::Discard => Header::discard(seq, self.offset, self.length),
            EntryKind::WriteZeroes => Header::write_zeroes(seq, self.offset, self.length),
            EntryKind::Verify => {
                let mut check = [0u8; VERIFY_PAYLOAD_LEN];
                if let Some(data) = self.payload() {
                    data.copy_to(&mut check);
                }
                Header::verify(seq, self.offset, &check)
            }
        }
    }

    /// The payload sent after the header, when in memory (a write's or a check's).
    pub(crate) fn payload(&self) -> Option<&Payload> {
        self.data.as_ref()
    }

    /// The payload's bytes, page by page; none without a payload in memory.
    pub(crate) fn payload_pieces(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.data.iter().flat_map(Payload::pieces)
    }
}

/// An entry in the FIFO with the time it was queued, for the lag (RPO) figure.
pub(crate) struct Queued {
    pub(crate) entry: Arc<Entry>,
    pub(crate) queued_ns: i64,
    /// The range held for the payload while it is only on the local device.
    pub(crate) range: Option<RangeId>,
}

/// FIFO storage: a fixed array of slots sized from the queue's byte budget.
pub(crate) struct EntrySlots(KVVec<Option<Queued>>);

impl EntrySlots {
    pub(crate) fn new(count: usize) -> Result<Self> {
        let mut slots = KVVec::with_capacity(count, GFP_KERNEL)?;
        for _ in 0..count {
            slots.push(None, GFP_KERNEL)?;
        }
        Ok(Self(slots))
    }
}

impl Slots for EntrySlots {
    type Item = Queued;

    fn capacity(&self) -> usize {
        self.0.len()
    }

    fn slot(&mut self, index: usize) -> &mut Option<Queued> {
        &mut self.0[index]
    }
}
