//! A deterministic pseudo-random replication stream and the image it produces.
//!
//! The same seed, count and volume size always give the same entries, so a test can
//! compare the target with the expected image computed here.

use arepl_core::verify::ChunkCheck;
use arepl_core::wire::SECTOR_SIZE;
use bytes::Bytes;

const SECTOR: u64 = SECTOR_SIZE as u64;
/// Writes are 4 KiB to 1 MiB.
const MIN_SECTORS: u64 = 4096 / SECTOR;
const MAX_SECTORS: u64 = (1 << 20) / SECTOR;
/// Every this many entries, one is a flush.
const FLUSH_EVERY: u64 = 16;

/// SplitMix64: tiny, fast, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high` (slightly biased; irrelevant here).
    pub fn in_range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// One entry of the stream, before it gets a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write `data` at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Whole sectors.
        data: Bytes,
        /// Ask for FUA.
        fua: bool,
    },
    /// Flush.
    Flush,
    /// Discard; the receiver zeroes the range.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Length in bytes.
        len: u32,
    },
    /// Write zeroes.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Length in bytes.
        len: u32,
    },
    /// Online verify: the chunk at `offset` is as `check` says (the workload generates
    /// none; `arepl-send stream --verify-chunk` adds them).
    Verify {
        /// Byte offset.
        offset: u64,
        /// The chunk's hash and length.
        check: ChunkCheck,
    },
}

impl Op {
    /// Applies the entry to an in-memory image of the volume, as `replicad` applies it.
    pub fn apply_to(&self, image: &mut [u8]) {
        match self {
            Op::Write { offset, data, .. } => {
                let at = *offset as usize;
                image[at..at + data.len()].copy_from_slice(data);
            }
            Op::Flush | Op::Verify { .. } => {}
            Op::Discard { offset, len } | Op::WriteZeroes { offset, len } => {
                let at = *offset as usize;
                image[at..at + *len as usize].fill(0);
            }
        }
    }
}

/// Generates `count` entries for a volume of `volume_size` bytes (a whole number of
/// sectors): writes of 4 KiB to 1 MiB (at most the volume), a flush every 16th entry,
/// some FUA writes, discards and write-zeroes.
#[derive(Debug, Clone)]
pub struct Workload {
    rng: SplitMix64,
    volume_sectors: u64,
    count: u64,
    emitted: u64,
}

impl Workload {
    /// The stream for `seed`; `None` if the volume size is not a positive whole number of
    /// sectors.
    pub fn new(seed: u64, count: u64, volume_size: u64) -> Option<Self> {
        if volume_size == 0 || !volume_size.is_multiple_of(SECTOR) {
            return None;
        }
        Some(Self {
            rng: SplitMix64::new(seed),
            volume_sectors: volume_size / SECTOR,
            count,
            emitted: 0,
        })
    }

    fn range(&mut self) -> (u64, u64) {
        let max = MAX_SECTORS.min(self.volume_sectors);
        let min = MIN_SECTORS.min(max);
        let sectors = self.rng.in_range(min, max);
        let start = self.rng.in_range(0, self.volume_sectors - sectors);
        (start * SECTOR, sectors * SECTOR)
    }
}

impl Iterator for Workload {
    type Item = Op;

    fn next(&mut self) -> Option<Op> {
        if self.emitted == self.count {
            return None;
        }
        self.emitted += 1;
        if self.emitted.is_multiple_of(FLUSH_EVERY) {
            return Some(Op::Flush);
        }
        let kind = self.rng.in_range(0, 19);
        let (offset, len) = self.range();
        Some(match kind {
            0 => Op::Discard {
                offset,
                len: len as u32,
            },
            1 => Op::WriteZeroes {
                offset,
                len: len as u32,
            },
            _ => {
                let fua = self.rng.in_range(0, 15) == 0;
                let mut data = vec![0u8; len as usize];
                self.rng.fill(&mut data);
                Op::Write {
                    offset,
                    data: data.into(),
                    fua,
                }
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.count - self.emitted) as usize;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seed_different_stream() {
        let a: Vec<Op> = Workload::new(7, 40, 8 << 20).unwrap().collect();
        let b: Vec<Op> = Workload::new(7, 40, 8 << 20).unwrap().collect();
        let c: Vec<Op> = Workload::new(8, 40, 8 << 20).unwrap().collect();
        assert_eq!(a.len(), 40);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn entries_are_aligned_sized_and_inside_the_volume() {
        for volume_size in [512, 4096, 3 << 20, 64 << 20] {
            let mut kinds = [0usize; 4];
            for op in Workload::new(1, 500, volume_size).unwrap() {
                let (offset, len) = match &op {
                    Op::Write { offset, data, .. } => (*offset, data.len() as u64),
                    Op::Discard { offset, len } | Op::WriteZeroes { offset, len } => {
                        (*offset, u64::from(*len))
                    }
                    Op::Flush => {
                        kinds[1] += 1;
                        continue;
                    }
                    Op::Verify { .. } => panic!("the workload generates no verify"),
                };
                kinds[match op {
                    Op::Write { .. } => 0,
                    Op::Discard { .. } => 2,
                    _ => 3,
                }] += 1;
                assert_eq!(offset % SECTOR, 0);
                assert_eq!(len % SECTOR, 0);
                assert!(len >= 4096.min(volume_size) && len <= 1 << 20);
                assert!(offset + len <= volume_size);
            }
            assert_eq!(kinds[1], 500 / 16);
            assert!(kinds.iter().all(|&n| n > 0), "{kinds:?}");
        }
        assert!(Workload::new(1, 1, 1000).is_none());
        assert!(Workload::new(1, 1, 0).is_none());
    }

    #[test]
    fn ops_apply_to_an_image() {
        let mut image = vec![0xFFu8; 8192];
        Op::Write {
            offset: 512,
            data: Bytes::from(vec![1u8; 1024]),
            fua: false,
        }
        .apply_to(&mut image);
        Op::WriteZeroes {
            offset: 1024,
            len: 512,
        }
        .apply_to(&mut image);
        assert_eq!(image[511], 0xFF);
        assert_eq!(image[512], 1);
        assert_eq!(image[1024], 0);
        assert_eq!(image[1536], 0xFF);
    }
}
