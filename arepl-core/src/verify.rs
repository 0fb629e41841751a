//! Online verify: the copy thread walks the volume and queues, in place of data, the
//! hash of each chunk as it is at that point of the write order; the receiver hashes
//! its own chunk when it reaches the same sequence and reports a mismatch. Both hash
//! the same bytes at the same moment of the stream, so writes running meanwhile cause
//! no false alarms.
//!
//! The `Verify` frame's 16-byte payload:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | XXH64 (seed 0) of the chunk, big-endian |
//! | 8..12 | chunk length in bytes, big-endian |
//! | 12..16 | zero |

use crate::xxh64::Xxh64;

/// Bytes of a `Verify` frame's payload.
pub const VERIFY_PAYLOAD_LEN: usize = 16;

/// What a `Verify` frame says about one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCheck {
    /// XXH64 of the chunk's bytes.
    pub hash: u64,
    /// Chunk length in bytes (a whole number of sectors).
    pub len: u32,
}

impl ChunkCheck {
    /// The check of `data`, a whole chunk.
    pub fn of(data: &[u8]) -> Self {
        Self::of_pieces([data])
    }

    /// The check of a whole chunk held in pieces (pages), taken in order.
    pub fn of_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut hasher = Xxh64::new();
        for piece in pieces {
            hasher.update(piece);
        }
        Self {
            hash: hasher.finish(),
            len: hasher.total() as u32,
        }
    }

    /// The payload bytes.
    pub fn encode(&self) -> [u8; VERIFY_PAYLOAD_LEN] {
        let mut out = [0u8; VERIFY_PAYLOAD_LEN];
        out[..8].copy_from_slice(&self.hash.to_be_bytes());
        out[8..12].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Reads a payload; `None` if it is malformed (wrong size, non-zero reserved
    /// bytes, an empty or misaligned chunk).
    pub fn decode(payload: &[u8]) -> Option<Self> {
        if payload.len() != VERIFY_PAYLOAD_LEN || payload[12..] != [0; 4] {
            return None;
        }
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&payload[..8]);
        let len = u32::from_be_bytes([payload[8], payload[9], payload[10], payload[11]]);
        if len == 0 || len % crate::wire::SECTOR_SIZE != 0 || len > crate::wire::MAX_WRITE_PAYLOAD {
            return None;
        }
        Some(Self {
            hash: u64::from_be_bytes(hash),
            len,
        })
    }
}

/// Ranges a `verify repair` has to copy again, oldest first; bounded, so a replica
/// that differs everywhere cannot exhaust memory (the overflow is counted instead).
#[derive(Debug, Clone, Copy)]
pub struct RepairQueue {
    ranges: [(u64, u64); REPAIR_QUEUE_LEN],
    head: usize,
    len: usize,
    /// Mismatches that did not fit: a later verify finds them again.
    pub overflowed: u64,
}

/// Ranges a [`RepairQueue`] holds.
pub const REPAIR_QUEUE_LEN: usize = 64;

impl Default for RepairQueue {
    fn default() -> Self {
        Self {
            ranges: [(0, 0); REPAIR_QUEUE_LEN],
            head: 0,
            len: 0,
            overflowed: 0,
        }
    }
}

impl RepairQueue {
    /// Queues bytes `[offset, offset + len)`; false (and counted) if it is full.
    pub fn push(&mut self, offset: u64, len: u64) -> bool {
        if self.len == REPAIR_QUEUE_LEN {
            self.overflowed += 1;
            return false;
        }
        self.ranges[(self.head + self.len) % REPAIR_QUEUE_LEN] = (offset, len);
        self.len += 1;
        true
    }

    /// The oldest range, left on the queue.
    pub fn front(&self) -> Option<(u64, u64)> {
        (self.len > 0).then(|| self.ranges[self.head])
    }

    /// The oldest range, taken off the queue.
    pub fn pop(&mut self) -> Option<(u64, u64)> {
        if self.len == 0 {
            return None;
        }
        let range = self.ranges[self.head];
        self.head = (self.head + 1) % REPAIR_QUEUE_LEN;
        self.len -= 1;
        Some(range)
    }

    /// Ranges waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Progress of the current (or last) verify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyPlan {
    /// Bytes the verify covers (the volume); 0 if none ever ran.
    pub total: u64,
    /// Bytes whose check is queued.
    pub queued: u64,
    /// Local sequence of the last check queued (0: none yet).
    pub last_seq: u64,
    /// Chunks the receiver reported different.
    pub mismatches: u64,
    /// Mismatched chunks queued again (`verify repair`).
    pub repaired: u64,
    /// Mismatches are to be repaired.
    pub repair: bool,
    /// Rises with every verify started (pacing starts over).
    pub run: u64,
    /// Next byte to check.
    cursor: u64,
    /// Every check is queued (or none runs).
    finished: bool,
}

impl VerifyPlan {
    /// No verify: none ran yet.
    pub fn idle() -> Self {
        Self {
            finished: true,
            ..Self::default()
        }
    }

    /// Starts a verify of a volume of `volume_bytes`.
    pub fn start(&mut self, volume_bytes: u64, repair: bool) {
        *self = Self {
            total: volume_bytes,
            repair,
            run: self.run + 1,
            finished: volume_bytes == 0,
            ..Self::default()
        };
    }

    /// The next chunk `(offset, len)` of at most `chunk_bytes` to check; `None` once
    /// every check is queued.
    pub fn next_chunk(&self, chunk_bytes: u64) -> Option<(u64, u64)> {
        if self.finished || chunk_bytes == 0 {
            return None;
        }
        Some((self.cursor, chunk_bytes.min(self.total - self.cursor)))
    }

    /// The check of the chunk at `offset` of `len` bytes was queued as local sequence
    /// `seq`; false if it was not the chunk the plan stood at (a verify started anew
    /// meanwhile).
    pub fn chunk_queued(&mut self, offset: u64, len: u64, seq: u64) -> bool {
        if self.finished || offset != self.cursor {
            return false;
        }
        self.cursor += len;
        self.queued = self.cursor;
        self.last_seq = seq;
        self.finished = self.cursor >= self.total;
        true
    }

    /// Whether every check is queued.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Whether the verify is still running: checks to queue, or queued checks the
    /// receiver has not acknowledged (through local sequence `acked_local`).
    pub fn running(&self, acked_local: u64) -> bool {
        !self.finished || acked_local < self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_payload() {
        let check = ChunkCheck {
            hash: 0x0102_0304_0506_0708,
            len: 256 << 10,
        };
        let bytes = check.encode();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8, 0, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ChunkCheck::decode(&bytes), Some(check));
        assert_eq!(ChunkCheck::of(b"abc").hash, 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let good = ChunkCheck { hash: 9, len: 4096 }.encode();
        assert_eq!(ChunkCheck::decode(&good[..15]), None);
        let mut reserved = good;
        reserved[15] = 1;
        assert_eq!(ChunkCheck::decode(&reserved), None);
        for len in [0u32, 511, crate::wire::MAX_WRITE_PAYLOAD + 512] {
            let bytes = ChunkCheck { hash: 9, len }.encode();
            assert_eq!(ChunkCheck::decode(&bytes), None, "length {len}");
        }
    }

    #[test]
    fn plan_walks_the_volume_once() {
        let mut plan = VerifyPlan::idle();
        assert!(!plan.running(0));
        assert_eq!(plan.next_chunk(100), None);
        plan.start(250, true);
        assert_eq!(plan.run, 1);
        assert!(plan.running(0));
        assert_eq!(plan.next_chunk(100), Some((0, 100)));
        assert!(plan.chunk_queued(0, 100, 7));
        assert!(
            !plan.chunk_queued(0, 100, 8),
            "a stale chunk does not count"
        );
        assert!(plan.chunk_queued(100, 100, 9));
        assert_eq!(plan.next_chunk(100), Some((200, 50)));
        assert!(plan.chunk_queued(200, 50, 12));
        assert!(plan.finished());
        assert_eq!(plan.next_chunk(100), None);
        assert_eq!((plan.queued, plan.last_seq), (250, 12));
        assert!(plan.running(11), "the last check is not acknowledged");
        assert!(!plan.running(12));
    }

    #[test]
    fn repair_queue_is_fifo_and_bounded() {
        let mut queue = RepairQueue::default();
        for i in 0..REPAIR_QUEUE_LEN as u64 {
            assert!(queue.push(i * 10, 10));
        }
        assert!(!queue.push(1, 1));
        assert_eq!(queue.overflowed, 1);
        assert_eq!(queue.front(), Some((0, 10)));
        assert_eq!(queue.pop(), Some((0, 10)));
        assert!(queue.push(5, 5));
        assert_eq!(queue.len(), REPAIR_QUEUE_LEN);
        let mut last = None;
        while let Some(range) = queue.pop() {
            last = Some(range);
        }
        assert_eq!(last, Some((5, 5)));
        assert!(queue.is_empty());
    }
}
