//! Dirty regions: which fixed-size regions of the volume hold writes the replica may
//! lack, so a resync copies those regions instead of the whole volume.
//!
//! The volume is cut into regions of `region_bytes` (a power of two); region `i`
//! covers bytes `[i * region_bytes, (i + 1) * region_bytes)`, the last one cut at the
//! volume's end. One bit per region, in words of the caller's storage (a `Vec` in
//! tests, a kernel vector in the module), so marking is O(regions touched) and needs no
//! allocation.

/// A set of regions of one volume.
#[derive(Debug)]
pub struct DirtyRegions<W> {
    words: W,
    region_shift: u32,
    volume_bytes: u64,
    regions: u64,
    marked: u64,
}

/// Words of storage [`DirtyRegions`] needs for a volume.
pub fn words_for(volume_bytes: u64, region_bytes: u64) -> usize {
    regions_for(volume_bytes, region_bytes).div_ceil(64) as usize
}

fn regions_for(volume_bytes: u64, region_bytes: u64) -> u64 {
    volume_bytes.div_ceil(region_bytes)
}

impl<W: core::ops::DerefMut<Target = [u64]>> DirtyRegions<W> {
    /// An empty set over `words` (at least [`words_for`] long, all zero); `None` if
    /// `region_bytes` is not a power of two or `words` is too short.
    pub fn new(words: W, volume_bytes: u64, region_bytes: u64) -> Option<Self> {
        if !region_bytes.is_power_of_two() || words.len() < words_for(volume_bytes, region_bytes) {
            return None;
        }
        Some(Self {
            words,
            region_shift: region_bytes.trailing_zeros(),
            volume_bytes,
            regions: regions_for(volume_bytes, region_bytes),
            marked: 0,
        })
    }

    /// Bytes per region.
    pub fn region_bytes(&self) -> u64 {
        1 << self.region_shift
    }

    /// Regions of the volume.
    pub fn regions(&self) -> u64 {
        self.regions
    }

    /// Regions marked.
    pub fn marked(&self) -> u64 {
        self.marked
    }

    /// Bytes of the volume in marked regions.
    pub fn marked_bytes(&self) -> u64 {
        let mut bytes = self.marked << self.region_shift;
        if self.is_marked(self.regions.saturating_sub(1)) {
            // The last region ends with the volume.
            bytes -= (self.regions << self.region_shift) - self.volume_bytes;
        }
        bytes
    }

    /// The regions `[first, last]` that bytes `[offset, offset + len)` touch; `None`
    /// for an empty range or one past the volume's end.
    pub fn touched(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let end = offset.checked_add(len)?;
        if len == 0 || end > self.volume_bytes {
            return None;
        }
        Some((offset >> self.region_shift, (end - 1) >> self.region_shift))
    }

    /// Marks the regions bytes `[offset, offset + len)` touch; false (nothing marked)
    /// for a range outside the volume.
    pub fn mark_range(&mut self, offset: u64, len: u64) -> bool {
        let Some((first, last)) = self.touched(offset, len) else {
            return false;
        };
        for region in first..=last {
            self.mark(region);
        }
        true
    }

    /// Marks every region (a copy of the whole volume).
    pub fn mark_all(&mut self) {
        for region in 0..self.regions {
            self.mark(region);
        }
    }

    /// Marks region `region` (ignored past the volume's end).
    pub fn mark(&mut self, region: u64) {
        if region >= self.regions {
            return;
        }
        let (word, bit) = Self::position(region);
        if self.words[word] & bit == 0 {
            self.words[word] |= bit;
            self.marked += 1;
        }
    }

    /// Unmarks region `region`.
    pub fn clear(&mut self, region: u64) {
        if region >= self.regions {
            return;
        }
        let (word, bit) = Self::position(region);
        if self.words[word] & bit != 0 {
            self.words[word] &= !bit;
            self.marked -= 1;
        }
    }

    /// Whether region `region` is marked.
    pub fn is_marked(&self, region: u64) -> bool {
        if region >= self.regions {
            return false;
        }
        let (word, bit) = Self::position(region);
        self.words[word] & bit != 0
    }

    /// The first marked region at or after `from`.
    pub fn next_marked(&self, from: u64) -> Option<u64> {
        if self.marked == 0 || from >= self.regions {
            return None;
        }
        let mut word = (from / 64) as usize;
        // Bits below `from` in its word do not count.
        let mut bits = self.words[word] & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                let region = word as u64 * 64 + u64::from(bits.trailing_zeros());
                return (region < self.regions).then_some(region);
            }
            word += 1;
            if word as u64 * 64 >= self.regions {
                return None;
            }
            bits = self.words[word];
        }
    }

    /// Bytes `[start, end)` of region `region`, cut at the volume's end.
    pub fn bounds(&self, region: u64) -> (u64, u64) {
        let start = region << self.region_shift;
        (start, (start + self.region_bytes()).min(self.volume_bytes))
    }

    /// Unmarks every region.
    pub fn clear_all(&mut self) {
        self.words.iter_mut().for_each(|word| *word = 0);
        self.marked = 0;
    }

    /// Word `index` of the bits (region `64 * index + n` is bit `n`); 0 past the
    /// storage.
    pub fn word(&self, index: usize) -> u64 {
        self.words.get(index).copied().unwrap_or(0)
    }

    /// Marks the regions set in `bits`, word `index` of the bits (see [`Self::word`]);
    /// bits past the volume's last region are ignored.
    pub fn or_word(&mut self, index: usize, bits: u64) {
        let first = index as u64 * 64;
        if first >= self.regions {
            return;
        }
        let valid = if self.regions - first >= 64 {
            u64::MAX
        } else {
            (1u64 << (self.regions - first)) - 1
        };
        let new = bits & valid & !self.words[index];
        self.words[index] |= new;
        self.marked += u64::from(new.count_ones());
    }

    /// Sets word `index` of the bits to `bits` (bits past the volume's last region are
    /// ignored; nothing happens past the storage).
    pub fn set_word(&mut self, index: usize, bits: u64) {
        let Some(old) = self.words.get(index).copied() else {
            return;
        };
        self.marked -= u64::from(old.count_ones());
        self.words[index] = 0;
        self.or_word(index, bits);
    }

    fn position(region: u64) -> (usize, u64) {
        ((region / 64) as usize, 1 << (region % 64))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    fn set(volume: u64, region: u64) -> DirtyRegions<Vec<u64>> {
        DirtyRegions::new(vec![0; words_for(volume, region)], volume, region).unwrap()
    }

    #[test]
    fn marks_the_regions_a_range_touches() {
        let mut dirty = set(100 * MIB, 4 * MIB);
        assert_eq!(dirty.regions(), 25);
        assert!(dirty.mark_range(4 * MIB - 512, 1024));
        assert_eq!(dirty.marked(), 2);
        assert!(dirty.is_marked(0) && dirty.is_marked(1) && !dirty.is_marked(2));
        assert!(dirty.mark_range(0, 512));
        assert_eq!(dirty.marked(), 2, "marking twice counts once");
        assert_eq!(dirty.marked_bytes(), 8 * MIB);
        assert!(!dirty.mark_range(100 * MIB, 512));
        assert!(!dirty.mark_range(0, 0));
        assert!(!dirty.mark_range(u64::MAX - 10, 512));
    }

    #[test]
    fn the_last_region_is_cut_at_the_volume_end() {
        let mut dirty = set(10 * MIB + 4096, 4 * MIB);
        assert_eq!(dirty.regions(), 3);
        dirty.mark_range(10 * MIB, 4096);
        assert_eq!(dirty.marked_bytes(), 2 * MIB + 4096);
        assert_eq!(dirty.bounds(2), (8 * MIB, 10 * MIB + 4096));
        dirty.mark_all();
        assert_eq!(dirty.marked_bytes(), 10 * MIB + 4096);
    }

    #[test]
    fn next_marked_walks_across_words() {
        let mut dirty = set(1 << 40, 64 << 10);
        assert_eq!(dirty.next_marked(0), None);
        for region in [3, 63, 64, 200, 16_777_215] {
            dirty.mark(region);
        }
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(region) = dirty.next_marked(at) {
            found.push(region);
            at = region + 1;
        }
        assert_eq!(found, [3, 63, 64, 200, 16_777_215]);
        dirty.clear(64);
        assert_eq!(dirty.next_marked(64), Some(200));
        dirty.clear_all();
        assert_eq!((dirty.marked(), dirty.next_marked(0)), (0, None));
    }

    #[test]
    fn whole_words_in_and_out() {
        let mut dirty = set(100 * 4 * MIB, 4 * MIB);
        dirty.or_word(1, u64::MAX);
        assert_eq!(dirty.marked(), 36, "only regions 64..100 exist");
        assert_eq!(dirty.word(1), (1 << 36) - 1);
        dirty.or_word(0, 0b101);
        dirty.or_word(0, 0b100);
        assert_eq!((dirty.marked(), dirty.word(0)), (38, 0b101));
        assert_eq!(dirty.word(7), 0);
        dirty.or_word(9, 1);
        assert_eq!(dirty.marked(), 38);
    }

    #[test]
    fn refuses_bad_geometry() {
        assert!(DirtyRegions::new(vec![0; 4], MIB, 3 << 20).is_none());
        assert!(DirtyRegions::new(vec![0; 1], 1 << 30, 64 << 10).is_none());
    }
}
