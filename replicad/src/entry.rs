//! A replication log entry: a data frame that passed every check, ready to apply.

use arepl_core::digest;
use arepl_core::verify::ChunkCheck;
use arepl_core::wire::Header;
use bytes::Bytes;

/// What an entry does to the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Write `data` at `offset`; `fua` asks for durability before the acknowledgement.
    Write {
        /// Byte offset on the volume.
        offset: u64,
        /// Whole sectors of data.
        data: Bytes,
        /// The write carried REQ_FUA.
        fua: bool,
    },
    /// Everything before this entry must be durable before it is acknowledged.
    Flush,
    /// Discard `len` bytes at `offset`.
    Discard {
        /// Byte offset on the volume.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Write zeroes over `len` bytes at `offset`.
    WriteZeroes {
        /// Byte offset on the volume.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Online verify: the chunk at `offset` hashes as `check` says on the primary at
    /// this point of the stream. Changes nothing on the volume.
    Verify {
        /// Byte offset of the chunk on the volume.
        offset: u64,
        /// Its hash and length.
        check: ChunkCheck,
    },
}

/// One entry of the replication log, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence number.
    pub seq: u64,
    /// What it does.
    pub op: Operation,
    /// What it adds to the replication digest ([`arepl_core::digest`]).
    pub digest_term: u64,
}

impl Entry {
    /// Entry `seq` doing `op`, with its digest term computed from its contents (the
    /// receive path takes it from the frame header instead, see [`Self::from_frame`]).
    pub fn new(seq: u64, op: Operation) -> Self {
        // The header the sender would send: the digest term has one definition.
        let header = match &op {
            Operation::Write { offset, data, fua } => Header::write(seq, *offset, data, *fua),
            Operation::Flush => Header::flush(seq),
            Operation::Discard { offset, len } => Header::discard(seq, *offset, *len as u32),
            Operation::WriteZeroes { offset, len } => {
                Header::write_zeroes(seq, *offset, *len as u32)
            }
            Operation::Verify { offset, check } => Header::verify(seq, *offset, &check.encode()),
        };
        Self::from_frame(&header, op)
    }

    /// Entry for a validated data frame `header` doing `op`.
    pub fn from_frame(header: &Header, op: Operation) -> Self {
        let digest_term = header
            .entry_fields()
            .map_or(0, |fields| digest::term(&fields));
        Self {
            seq: header.seq,
            op,
            digest_term,
        }
    }

    /// Whether the entry must be durable before any acknowledgement covering it is sent
    /// without delay (a flush or a FUA write).
    pub fn demands_durability(&self) -> bool {
        matches!(
            self.op,
            Operation::Flush | Operation::Write { fua: true, .. }
        )
    }
}
