//! Which bytes the copy thread reads next: the whole volume (an initial copy, or a
//! resync that cannot know what the replica lacks), or only the dirty regions.
//!
//! The copy reads chunks in offset order and queues each as a write; its progress
//! counts bytes queued. A copy of regions takes each region off the dirty set as it
//! starts on it, so a write tracked (not queued) after that marks it again for a later
//! resync, while one before it is in the chunks read.

use crate::regions::DirtyRegions;

/// One chunk to read and queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// The copy it belongs to (see [`CopyPlan::epoch`]).
    pub epoch: u64,
    /// Byte offset on the volume.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// Progress of the current copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyPlan {
    /// Bytes the copy covers (the volume, or the dirty regions when it started).
    pub total: u64,
    /// Bytes read and queued so far.
    pub queued: u64,
    /// Local sequence of the last chunk queued (0: none yet).
    pub last_seq: u64,
    /// Rises with every copy started, so a chunk read for an earlier copy does not
    /// count for the current one.
    pub epoch: u64,
    /// What the copy is for, for the kernel log.
    pub purpose: &'static str,
    /// Next byte to consider.
    cursor: u64,
    /// Only the dirty regions, not the whole volume.
    regions_only: bool,
    /// End of the region being copied (regions only).
    region_end: Option<u64>,
    /// Every chunk has been queued (or there is no copy at all).
    finished: bool,
}

impl Default for CopyPlan {
    fn default() -> Self {
        Self::idle()
    }
}

impl CopyPlan {
    /// No copy: the replica needs none.
    pub fn idle() -> Self {
        Self {
            total: 0,
            queued: 0,
            last_seq: 0,
            epoch: 0,
            purpose: "copy",
            cursor: 0,
            regions_only: false,
            region_end: None,
            finished: true,
        }
    }

    /// Starts a copy of the whole volume of `volume_bytes`.
    pub fn start_whole(&mut self, volume_bytes: u64, purpose: &'static str) {
        self.start(volume_bytes, false, purpose);
    }

    /// Starts a copy of the regions marked in `dirty`. What an unfinished copy had
    /// still to queue is marked first, so this one covers it too.
    pub fn start_regions<W: core::ops::DerefMut<Target = [u64]>>(
        &mut self,
        dirty: &mut DirtyRegions<W>,
        purpose: &'static str,
    ) {
        self.hand_back(dirty);
        self.start(dirty.marked_bytes(), true, purpose);
    }

    /// Marks in `dirty` the regions an unfinished copy has not queued in full: for a
    /// copy of regions, the one it is in (it took that off `dirty` when it started on
    /// it; the regions after are still marked); for a whole copy, every region from its
    /// cursor on.
    fn hand_back<W: core::ops::DerefMut<Target = [u64]>>(&self, dirty: &mut DirtyRegions<W>) {
        if self.finished {
            return;
        }
        let first = self.cursor / dirty.region_bytes();
        let end = if self.regions_only {
            match self.region_end {
                Some(end) if self.cursor < end => first + 1,
                _ => return,
            }
        } else {
            dirty.regions()
        };
        for region in first..end {
            dirty.mark(region);
        }
    }

    fn start(&mut self, total: u64, regions_only: bool, purpose: &'static str) {
        *self = Self {
            total,
            epoch: self.epoch + 1,
            purpose,
            regions_only,
            finished: false,
            ..Self::idle()
        };
    }

    /// Whether every chunk has been queued.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Whether the replica holds a consistent image as far as the copy goes: it is
    /// finished and its last chunk is acknowledged.
    pub fn acknowledged(&self, acked_local: u64) -> bool {
        self.finished && acked_local >= self.last_seq
    }

    /// Where an unfinished copy of the whole volume stands: every byte before it is
    /// queued, none after; `None` when no such copy runs.
    pub fn whole_copy_cursor(&self) -> Option<u64> {
        (!self.finished && !self.regions_only).then_some(self.cursor)
    }

    /// Whether a copy of regions is under way.
    pub fn copying_regions(&self) -> bool {
        !self.finished && self.regions_only
    }

    /// Whether the copy has still to read bytes before `end` (a region ending there
    /// must stay marked until it has).
    pub fn still_to_copy(&self, end: u64) -> bool {
        !self.finished && end > self.cursor
    }

    /// The next chunk of at most `chunk_bytes` to read, taking the next dirty region
    /// off `dirty` when it starts on one; `None` once the copy is finished.
    pub fn next_chunk<W: core::ops::DerefMut<Target = [u64]>>(
        &mut self,
        dirty: &mut DirtyRegions<W>,
        volume_bytes: u64,
        chunk_bytes: u64,
    ) -> Option<Chunk> {
        if self.finished {
            return None;
        }
        let mut end = volume_bytes;
        if self.regions_only {
            let region_end = match self.region_end {
                Some(region_end) if self.cursor < region_end => region_end,
                _ => {
                    let from = self.cursor.div_ceil(dirty.region_bytes());
                    let Some(region) = dirty.next_marked(from) else {
                        self.finish();
                        return None;
                    };
                    dirty.clear(region);
                    let (start, region_end) = dirty.bounds(region);
                    self.cursor = start;
                    self.region_end = Some(region_end);
                    region_end
                }
            };
            end = region_end;
        }
        if self.cursor >= end {
            self.finish();
            return None;
        }
        Some(Chunk {
            epoch: self.epoch,
            offset: self.cursor,
            len: chunk_bytes.min(end - self.cursor),
        })
    }

    /// `chunk` was queued as local sequence `seq`; false if it belongs to an earlier
    /// copy (queued all the same: it holds the volume's bytes, in order).
    pub fn chunk_queued(&mut self, chunk: &Chunk, seq: u64) -> bool {
        if chunk.epoch != self.epoch || chunk.offset != self.cursor {
            return false;
        }
        self.cursor += chunk.len;
        self.queued += chunk.len;
        self.last_seq = seq;
        // A region tracked again while the copy ran may add to what it covers.
        self.total = self.total.max(self.queued);
        true
    }

    fn finish(&mut self) {
        self.finished = true;
        self.total = self.queued;
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

    fn run(
        plan: &mut CopyPlan,
        dirty: &mut DirtyRegions<Vec<u64>>,
        volume: u64,
    ) -> Vec<(u64, u64)> {
        let mut seq = 0;
        let mut chunks = Vec::new();
        while let Some(chunk) = plan.next_chunk(dirty, volume, MIB / 4) {
            seq += 1;
            assert!(plan.chunk_queued(&chunk, seq));
            chunks.push((chunk.offset, chunk.len));
        }
        chunks
    }

    fn dirty(volume: u64) -> DirtyRegions<Vec<u64>> {
        DirtyRegions::new(vec![0; words_for(volume, MIB)], volume, MIB).unwrap()
    }

    #[test]
    fn idle_needs_nothing() {
        let plan = CopyPlan::idle();
        assert!(plan.finished() && plan.acknowledged(0));
    }

    #[test]
    fn whole_volume_in_chunks_to_the_end() {
        let volume = MIB + 4096;
        let mut regions = dirty(volume);
        let mut plan = CopyPlan::default();
        plan.start_whole(volume, "initial copy");
        assert!(!plan.acknowledged(u64::MAX));
        let chunks = run(&mut plan, &mut regions, volume);
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[4], (MIB, 4096));
        assert!(plan.finished());
        assert_eq!(
            (plan.queued, plan.total, plan.last_seq),
            (volume, volume, 5)
        );
        assert!(!plan.acknowledged(4) && plan.acknowledged(5));
    }

    #[test]
    fn an_unfinished_whole_copy_says_where_it_stands() {
        let volume = 4 * MIB;
        let mut regions = dirty(volume);
        let mut plan = CopyPlan::default();
        assert_eq!(plan.whole_copy_cursor(), None);
        plan.start_whole(volume, "initial copy");
        assert_eq!(plan.whole_copy_cursor(), Some(0));
        let chunk = plan.next_chunk(&mut regions, volume, MIB).unwrap();
        assert_eq!(plan.whole_copy_cursor(), Some(0), "read, not yet queued");
        assert!(plan.chunk_queued(&chunk, 1));
        assert_eq!(plan.whole_copy_cursor(), Some(MIB));
        assert!(!plan.copying_regions());
        run(&mut plan, &mut regions, volume);
        assert_eq!(plan.whole_copy_cursor(), None);
        regions.mark(2);
        plan.start_regions(&mut regions, "resync");
        assert!(plan.copying_regions() && plan.whole_copy_cursor().is_none());
    }

    #[test]
    fn only_dirty_regions_and_each_taken_off_as_it_starts() {
        let volume = 8 * MIB;
        let mut regions = dirty(volume);
        regions.mark(1);
        regions.mark(6);
        let mut plan = CopyPlan::default();
        plan.start_regions(&mut regions, "resync");
        assert_eq!(plan.total, 2 * MIB);
        let first = plan.next_chunk(&mut regions, volume, MIB / 4).unwrap();
        assert_eq!((first.offset, first.len), (MIB, MIB / 4));
        // Not queued (no queue space yet): the same chunk again.
        assert_eq!(plan.next_chunk(&mut regions, volume, MIB / 4), Some(first));
        assert_eq!(
            regions.marked(),
            1,
            "region 1 is taken off when the copy starts on it"
        );
        // Tracked again while copied: stays marked for the next resync.
        regions.mark(1);
        assert!(plan.still_to_copy(MIB + 1) && !plan.still_to_copy(MIB));
        assert!(plan.chunk_queued(&first, 1));
        let rest = run(&mut plan, &mut regions, volume);
        assert_eq!(rest.len(), 7);
        assert_eq!(rest[3], (6 * MIB, MIB / 4));
        assert!(plan.finished());
        assert_eq!(plan.total, 2 * MIB);
        assert!(regions.is_marked(1) && !regions.is_marked(6));
    }

    #[test]
    fn a_restart_ignores_chunks_of_the_earlier_copy() {
        let volume = 2 * MIB;
        let mut regions = dirty(volume);
        let mut plan = CopyPlan::default();
        plan.start_whole(volume, "resync");
        let stale = plan.next_chunk(&mut regions, volume, MIB).unwrap();
        plan.start_whole(volume, "resync");
        assert!(!plan.chunk_queued(&stale, 9));
        assert_eq!((plan.queued, plan.last_seq), (0, 0));
        assert_eq!(run(&mut plan, &mut regions, volume).len(), 8);
    }

    #[test]
    fn a_copy_of_regions_replaced_midway_hands_its_region_back() {
        let volume = 8 * MIB;
        let mut regions = dirty(volume);
        regions.mark(2);
        regions.mark(5);
        let mut plan = CopyPlan::default();
        plan.start_regions(&mut regions, "resync");
        let first = plan.next_chunk(&mut regions, volume, MIB / 4).unwrap();
        assert!(plan.chunk_queued(&first, 1));
        assert!(
            !regions.is_marked(2),
            "taken off when the copy started on it"
        );
        // Another resync replaces this one with a quarter of region 2 queued: the
        // rest of it, and region 5, are copied by the new one.
        regions.mark(7);
        plan.start_regions(&mut regions, "resync");
        assert_eq!(plan.total, 3 * MIB);
        let chunks = run(&mut plan, &mut regions, volume);
        assert_eq!(chunks.len(), 12);
        assert_eq!(
            (chunks[0], chunks[4], chunks[8]),
            ((2 * MIB, MIB / 4), (5 * MIB, MIB / 4), (7 * MIB, MIB / 4))
        );
        assert_eq!(regions.marked(), 0);
    }

    #[test]
    fn a_whole_copy_replaced_midway_hands_back_what_it_did_not_reach() {
        let volume = 4 * MIB + 4096;
        let mut regions = dirty(volume);
        let mut plan = CopyPlan::default();
        plan.start_whole(volume, "initial copy");
        for seq in 1..=5 {
            let chunk = plan.next_chunk(&mut regions, volume, MIB / 4).unwrap();
            assert!(plan.chunk_queued(&chunk, seq));
        }
        // Region 1 is a quarter queued; region 0 is done and stays unmarked.
        plan.start_regions(&mut regions, "resync");
        assert!(!regions.is_marked(0));
        assert_eq!(regions.marked(), 4);
        assert_eq!(plan.total, 3 * MIB + 4096);
        let chunks = run(&mut plan, &mut regions, volume);
        assert_eq!(chunks.first(), Some(&(MIB, MIB / 4)));
        assert_eq!(chunks.last(), Some(&(4 * MIB, 4096)));
    }

    #[test]
    fn a_finished_copy_hands_nothing_back() {
        let volume = 4 * MIB;
        let mut regions = dirty(volume);
        regions.mark(1);
        let mut plan = CopyPlan::default();
        plan.start_regions(&mut regions, "resync");
        run(&mut plan, &mut regions, volume);
        plan.start_regions(&mut regions, "resync");
        assert_eq!(plan.total, 0);
        assert!(run(&mut plan, &mut regions, volume).is_empty());
    }

    #[test]
    fn no_dirty_region_finishes_at_once() {
        let mut regions = dirty(4 * MIB);
        let mut plan = CopyPlan::default();
        plan.start_regions(&mut regions, "resync");
        assert!(run(&mut plan, &mut regions, 4 * MIB).is_empty());
        assert!(plan.finished() && plan.acknowledged(0));
    }
}
