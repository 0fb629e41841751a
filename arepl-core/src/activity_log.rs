//! The activity log on the metadata (spill) device: one bit per region of the volume,
//! set on disk before a write to that region reaches the local device and cleared
//! lazily once every entry touching the region has left memory (acknowledged by the
//! replica, or committed to the spill log). After a crash, the regions still set are
//! the only ones that may differ between the primary and the replica, so only they are
//! resynchronised. A copy of the whole volume marks every region first and clears each
//! as its chunks are acknowledged, so an interrupted copy resumes where it stood.
//!
//! Layout: [`AL_START`] onwards, blocks of [`AL_BLOCK`] bytes, block `i` holding regions
//! `[i * REGIONS_PER_BLOCK, (i + 1) * REGIONS_PER_BLOCK)`:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | magic `ARPLBMP1` |
//! | 8..12 | block index, big-endian |
//! | 12..16 | zero |
//! | 16..496 | region bits, region `16 + n / 8`, bit `n % 8` (least significant first) |
//! | 496..508 | zero |
//! | 508..512 | CRC-32C of bytes 0..508, big-endian |
//!
//! The spill ring starts after the last block, at a 4 KiB boundary ([`AlGeometry`]).

use crate::crc32c::crc32c;
use crate::regions::DirtyRegions;

/// Bytes of one bitmap block (one sector: written atomically).
pub const AL_BLOCK: u64 = 512;
/// Where the first block is (after the two superblock slots' 4 KiB).
pub const AL_START: u64 = 4096;
/// Regions one block covers.
pub const REGIONS_PER_BLOCK: u64 = 3840;
/// Block magic.
pub const AL_MAGIC: [u8; 8] = *b"ARPLBMP1";
const BITS_AT: usize = 16;
const WORDS_PER_BLOCK: usize = (REGIONS_PER_BLOCK / 64) as usize;

/// Where the activity log of a volume lies, and its region size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlGeometry {
    /// Region size in KiB (a power of two).
    pub region_kb: u32,
    /// Bitmap blocks.
    pub blocks: u32,
}

impl AlGeometry {
    /// The geometry for a volume of `volume_bytes` in regions of `region_kb` KiB.
    pub fn for_volume(volume_bytes: u64, region_kb: u32) -> Self {
        // The table admits powers of two only; `max` spares the kernel build a panic
        // path for a zero divisor.
        let region_bytes = (u64::from(region_kb) << 10).max(1);
        let regions = volume_bytes.div_ceil(region_bytes);
        Self {
            region_kb,
            blocks: regions.div_ceil(REGIONS_PER_BLOCK) as u32,
        }
    }

    /// Region size in bytes.
    pub fn region_bytes(&self) -> u64 {
        u64::from(self.region_kb) << 10
    }

    /// Byte offset of block `index`.
    pub fn block_offset(&self, index: u32) -> u64 {
        AL_START + u64::from(index) * AL_BLOCK
    }

    /// Where the spill ring starts: after the bitmap, at a 4 KiB boundary.
    pub fn ring_start(&self) -> u64 {
        (AL_START + u64::from(self.blocks) * AL_BLOCK).next_multiple_of(4096)
    }

    /// The block holding region `region`.
    pub fn block_of(region: u64) -> u32 {
        (region / REGIONS_PER_BLOCK) as u32
    }
}

/// The 512 bytes of block `index`, holding the marks of `regions`.
pub fn encode_block<W: core::ops::DerefMut<Target = [u64]>>(
    index: u32,
    regions: &DirtyRegions<W>,
) -> [u8; AL_BLOCK as usize] {
    let first_word = index as usize * WORDS_PER_BLOCK;
    let mut words = [0u64; WORDS_PER_BLOCK];
    for (i, word) in words.iter_mut().enumerate() {
        *word = regions.word(first_word + i);
    }
    encode_words(index, &words)
}

/// Adds the marks of block `index` to `regions`. A block that fails its checks (torn,
/// damaged, never written) marks every region it covers: when in doubt, resync.
/// Returns whether the block was valid.
pub fn decode_block<W: core::ops::DerefMut<Target = [u64]>>(
    bytes: &[u8; AL_BLOCK as usize],
    index: u32,
    regions: &mut DirtyRegions<W>,
) -> bool {
    let valid = bytes[0..8] == AL_MAGIC
        && bytes[8..12] == index.to_be_bytes()
        && crc32c(&bytes[..508]).to_be_bytes() == bytes[508..512];
    let first_word = index as usize * WORDS_PER_BLOCK;
    for i in 0..WORDS_PER_BLOCK {
        let word = if valid {
            let at = BITS_AT + i * 8;
            let mut le = [0u8; 8];
            le.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(le)
        } else {
            u64::MAX
        };
        regions.or_word(first_word + i, word);
    }
    valid
}

/// The bits of one block, as written to disk (see [`encode_words`]).
pub type BlockWords = [u64; WORDS_PER_BLOCK];

/// The 512 bytes of block `index` holding `words`.
pub fn encode_words(index: u32, words: &BlockWords) -> [u8; AL_BLOCK as usize] {
    let mut out = [0u8; AL_BLOCK as usize];
    out[0..8].copy_from_slice(&AL_MAGIC);
    out[8..12].copy_from_slice(&index.to_be_bytes());
    for (i, word) in words.iter().enumerate() {
        let at = BITS_AT + i * 8;
        out[at..at + 8].copy_from_slice(&word.to_le_bytes());
    }
    let crc = crc32c(&out[..508]);
    out[508..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Blocks `[first, last]` that must be written.
pub type BlockRange = (u32, u32);

/// Which regions are marked on disk, which should be, and how many queued or
/// in-flight entries hold each: the bookkeeping of the activity log, without I/O.
///
/// A write *holds* its regions from before it reaches the local device until its
/// entry leaves memory; a region is marked on disk before the first hold may go on
/// ([`Self::hold`] names the blocks to write, [`Self::snapshot`] and
/// [`Self::written`] record the write), and is cleared lazily once nothing holds it
/// ([`Self::clear_idle`]). A region being cleared counts as not on disk from the moment
/// it is chosen, so a write that arrives meanwhile marks it again after the clearing
/// write, never before.
#[derive(Debug)]
pub struct ActivityTracker<W, C> {
    /// Regions that should be marked on disk.
    wanted: DirtyRegions<W>,
    /// Regions known to be marked on disk.
    durable: DirtyRegions<W>,
    /// Holds per region.
    holds: C,
}

impl<W, C> ActivityTracker<W, C>
where
    W: core::ops::DerefMut<Target = [u64]>,
    C: core::ops::DerefMut<Target = [u32]>,
{
    /// A tracker whose disk holds the marks in `loaded` (both sets over the same
    /// geometry, `holds` one counter per region, all zero).
    pub fn new(loaded: DirtyRegions<W>, mut durable: DirtyRegions<W>, holds: C) -> Option<Self> {
        if holds.len() < loaded.regions() as usize || durable.regions() != loaded.regions() {
            return None;
        }
        durable.clear_all();
        for index in 0..loaded.regions().div_ceil(64) as usize {
            durable.set_word(index, loaded.word(index));
        }
        Some(Self {
            wanted: loaded,
            durable,
            holds,
        })
    }

    /// Regions marked on disk (or to be).
    pub fn marked(&self) -> u64 {
        self.wanted.marked()
    }

    /// Holds the regions bytes `[offset, offset + len)` touch; returns the blocks to
    /// write before the write may go on, if any region is not yet marked on disk.
    pub fn hold(&mut self, offset: u64, len: u64) -> Option<BlockRange> {
        let (first, last) = self.wanted.touched(offset, len)?;
        let mut blocks: Option<BlockRange> = None;
        for region in first..=last {
            let holds = &mut self.holds[region as usize];
            *holds = holds.saturating_add(1);
            if !self.durable.is_marked(region) {
                self.wanted.mark(region);
                let block = AlGeometry::block_of(region);
                blocks = Some(blocks.map_or((block, block), |(a, _)| (a, block)));
            }
        }
        blocks
    }

    /// Whether every region bytes `[offset, offset + len)` touch is marked on disk.
    pub fn is_durable(&self, offset: u64, len: u64) -> bool {
        let Some((first, last)) = self.wanted.touched(offset, len) else {
            return true;
        };
        (first..=last).all(|region| self.durable.is_marked(region))
    }

    /// The blocks holding marks that are wanted on disk but not written yet.
    pub fn unwritten(&self) -> Option<BlockRange> {
        let mut blocks: Option<BlockRange> = None;
        for index in 0..self.wanted.regions().div_ceil(64) as usize {
            if self.wanted.word(index) & !self.durable.word(index) != 0 {
                let block = (index / WORDS_PER_BLOCK) as u32;
                blocks = Some(blocks.map_or((block, block), |(a, _)| (a, block)));
            }
        }
        blocks
    }

    /// Releases what [`Self::hold`] took for the same range.
    pub fn release(&mut self, offset: u64, len: u64) {
        if let Some((first, last)) = self.wanted.touched(offset, len) {
            for region in first..=last {
                let holds = &mut self.holds[region as usize];
                *holds = holds.saturating_sub(1);
            }
        }
    }

    /// What block `index` should hold on disk now.
    pub fn snapshot(&self, index: u32) -> BlockWords {
        let mut words = [0u64; WORDS_PER_BLOCK];
        let first = index as usize * WORDS_PER_BLOCK;
        for (i, word) in words.iter_mut().enumerate() {
            *word = self.wanted.word(first + i);
        }
        words
    }

    /// Block `index` now holds `words` on disk.
    pub fn written(&mut self, index: u32, words: &BlockWords) {
        let first = index as usize * WORDS_PER_BLOCK;
        for (i, word) in words.iter().enumerate() {
            self.durable.set_word(first + i, *word);
        }
    }

    /// Marks every region (a copy of the whole volume begins); returns the blocks to
    /// write.
    pub fn mark_all(&mut self) -> Option<BlockRange> {
        self.wanted.mark_all();
        let regions = self.wanted.regions();
        (regions > 0).then(|| (0, AlGeometry::block_of(regions - 1)))
    }

    /// Unmarks the regions nothing holds and `keep` does not want kept (a copy has
    /// still to read them, say); they count as not on disk from now. Returns the
    /// blocks to write.
    pub fn clear_idle(&mut self, keep: impl Fn(u64) -> bool) -> Option<BlockRange> {
        let mut blocks: Option<BlockRange> = None;
        let mut at = 0;
        while let Some(region) = self.wanted.next_marked(at) {
            at = region + 1;
            if self.holds[region as usize] > 0 || keep(region) {
                continue;
            }
            self.wanted.clear(region);
            self.durable.clear(region);
            let block = AlGeometry::block_of(region);
            blocks = Some(blocks.map_or((block, block), |(a, _)| (a, block)));
        }
        blocks
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::regions::words_for;
    use std::vec;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    fn regions(volume: u64, region: u64) -> DirtyRegions<Vec<u64>> {
        let words = words_for(volume, region).next_multiple_of(WORDS_PER_BLOCK);
        DirtyRegions::new(vec![0; words], volume, region).unwrap()
    }

    fn tracker(volume: u64) -> ActivityTracker<Vec<u64>, Vec<u32>> {
        let loaded = regions(volume, 4 * MIB);
        let durable = regions(volume, 4 * MIB);
        let holds = vec![0; loaded.regions() as usize];
        ActivityTracker::new(loaded, durable, holds).unwrap()
    }

    /// Writes what the tracker asks for, as the module does.
    fn write_blocks(t: &mut ActivityTracker<Vec<u64>, Vec<u32>>, blocks: Option<BlockRange>) {
        if let Some((first, last)) = blocks {
            for block in first..=last {
                let words = t.snapshot(block);
                t.written(block, &words);
            }
        }
    }

    #[test]
    fn a_hot_region_is_written_once_and_cleared_when_idle() {
        let mut t = tracker(64 << 30);
        let blocks = t.hold(4 * MIB - 512, 1024);
        assert_eq!(blocks, Some((0, 0)));
        assert!(!t.is_durable(4 * MIB - 512, 1024));
        write_blocks(&mut t, blocks);
        assert!(t.is_durable(4 * MIB - 512, 1024));
        assert_eq!(t.unwritten(), None);
        assert_eq!(t.hold(4 * MIB, 4096), None, "already on disk: no write");
        assert_eq!(t.hold(3840 * 4 * MIB, 4096), Some((1, 1)));
        assert_eq!(t.unwritten(), Some((1, 1)));
        t.release(3840 * 4 * MIB, 4096);
        assert_eq!(t.clear_idle(|region| region != 3840), Some((1, 1)));
        assert_eq!(t.unwritten(), None, "a mark cleared before it was written");
        assert_eq!(t.marked(), 2);
        t.release(4 * MIB - 512, 1024);
        assert_eq!(t.clear_idle(|_| false), Some((0, 0)), "region 0 is idle");
        assert_eq!(t.marked(), 1, "region 1 is still held");
        t.release(4 * MIB, 4096);
        assert_eq!(t.clear_idle(|region| region == 1), None, "kept on request");
        assert_eq!(t.clear_idle(|_| false), Some((0, 0)));
        assert_eq!(t.marked(), 0);
    }

    #[test]
    fn a_write_during_a_clear_marks_its_region_again() {
        let mut t = tracker(64 << 30);
        let blocks = t.hold(0, 4096);
        write_blocks(&mut t, blocks);
        t.release(0, 4096);
        // The clear is chosen, its block not yet written.
        let clearing = t.clear_idle(|_| false);
        // A write arrives: the region is not on disk any more, it must be written.
        let again = t.hold(0, 4096);
        assert_eq!(again, Some((0, 0)));
        // The clearing write then carries the new mark too (its snapshot is taken at
        // write time), so the region ends on disk.
        write_blocks(&mut t, clearing);
        assert!(t.is_durable(0, 4096));
        let words = t.snapshot(0);
        assert_eq!(words[0] & 1, 1);
    }

    #[test]
    fn loaded_marks_are_on_disk_and_mark_all_covers_every_block() {
        let mut loaded = regions(64 << 30, 4 * MIB);
        loaded.mark(5000);
        let durable = regions(64 << 30, 4 * MIB);
        let holds = vec![0; loaded.regions() as usize];
        let mut t = ActivityTracker::new(loaded, durable, holds).unwrap();
        assert!(t.is_durable(5000 * 4 * MIB, 512));
        assert_eq!(t.mark_all(), Some((0, 4)));
        assert_eq!(t.marked(), 16384);
        assert_eq!(encode_words(1, &t.snapshot(1)), {
            let mut all = regions(64 << 30, 4 * MIB);
            all.mark_all();
            encode_block(1, &all)
        });
    }

    #[test]
    fn geometry() {
        let g = AlGeometry::for_volume(1 << 40, 4096);
        assert_eq!((g.blocks, g.region_bytes()), (69, 4 * MIB));
        assert_eq!(g.block_offset(2), 4096 + 1024);
        assert_eq!(g.ring_start(), 4096 + 36864);
        let small = AlGeometry::for_volume(128 * MIB, 4096);
        assert_eq!((small.blocks, small.ring_start()), (1, 8192));
        assert_eq!(AlGeometry::block_of(3839), 0);
        assert_eq!(AlGeometry::block_of(3840), 1);
    }

    #[test]
    fn golden_block_and_round_trip() {
        let mut marks = regions(64 << 30, 4 * MIB);
        for region in [0, 9, 3839, 3840] {
            marks.mark(region);
        }
        let block = encode_block(0, &marks);
        assert_eq!(&block[0..8], b"ARPLBMP1");
        assert_eq!(&block[8..16], &[0; 8]);
        assert_eq!(block[16], 0b0000_0001);
        assert_eq!(block[17], 0b0000_0010);
        assert_eq!(block[16 + 479], 0b1000_0000);
        assert_eq!(&block[508..], &crc32c(&block[..508]).to_be_bytes());
        let mut loaded = regions(64 << 30, 4 * MIB);
        assert!(decode_block(&block, 0, &mut loaded));
        assert!(decode_block(&encode_block(1, &marks), 1, &mut loaded));
        assert_eq!(loaded.marked(), 4);
        assert!(loaded.is_marked(3839) && loaded.is_marked(3840));
    }

    #[test]
    fn a_bad_block_marks_all_its_regions() {
        let marks = regions(64 << 30, 4 * MIB);
        let mut torn = encode_block(0, &marks);
        torn[100] ^= 1;
        let mut loaded = regions(64 << 30, 4 * MIB);
        assert!(!decode_block(&torn, 0, &mut loaded));
        assert_eq!(loaded.marked(), 3840);
        // A block from another place is no better.
        let mut moved = regions(64 << 30, 4 * MIB);
        assert!(!decode_block(&encode_block(1, &marks), 0, &mut moved));
        // Past the volume's end nothing is marked.
        let mut short = regions(8 * MIB, 4 * MIB);
        assert!(!decode_block(&[0; 512], 0, &mut short));
        assert_eq!(short.marked(), 2);
    }
}
