//! A replication log entry: a data frame that passed every check, ready to apply.

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
}

/// One entry of the replication log, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence number.
    pub seq: u64,
    /// What it does.
    pub op: Operation,
}

impl Entry {
    /// Whether the entry must be durable before any acknowledgement covering it is sent
    /// without delay (a flush or a FUA write).
    pub fn demands_durability(&self) -> bool {
        matches!(
            self.op,
            Operation::Flush | Operation::Write { fua: true, .. }
        )
    }
}
