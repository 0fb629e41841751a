//! Byte ranges of writes issued to the local device and not yet completed.
//!
//! Two overlapping writes in flight at once may reach the disk in either order, while
//! the replication queue records completion order; the replica could then end with the
//! other write on top. So a write that overlaps one in flight waits until it completes:
//! for overlapping writes, disk order, completion order and queue order are then one.

use core::ops::DerefMut;

/// One slot: a byte range `[start, end)`, or free.
pub type RangeSlot = Option<(u64, u64)>;

/// Ranges in caller-provided slots (all free to begin with), each occupying a slot
/// until removed. The slots live on the heap in the kernel: a table this size would
/// not fit on a kernel stack while being built.
#[derive(Debug)]
pub struct InFlight<S: DerefMut<Target = [RangeSlot]>> {
    ranges: S,
}

impl<S: DerefMut<Target = [RangeSlot]>> InFlight<S> {
    /// Tracks ranges in `slots`, which must all be `None`.
    pub fn new(slots: S) -> Self {
        Self { ranges: slots }
    }

    /// Records `[start, end)` and returns its slot, unless it overlaps a range in
    /// flight or every slot is taken; then the caller waits for a [`Self::remove`].
    pub fn try_insert(&mut self, start: u64, end: u64) -> Option<usize> {
        let mut free = None;
        for (slot, range) in self.ranges.iter().enumerate() {
            match range {
                Some((s, e)) if start < *e && *s < end => return None,
                None if free.is_none() => free = Some(slot),
                _ => {}
            }
        }
        let slot = free?;
        self.ranges[slot] = Some((start, end));
        Some(slot)
    }

    /// Releases a slot returned by [`Self::try_insert`].
    pub fn remove(&mut self, slot: usize) {
        if let Some(range) = self.ranges.get_mut(slot) {
            *range = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::vec;

    #[test]
    fn overlapping_ranges_wait_and_disjoint_ones_pass() {
        let mut f = InFlight::new(vec![None; 4]);
        let a = f.try_insert(0, 4096).unwrap();
        assert_eq!(f.try_insert(4095, 8192), None, "one byte of overlap");
        assert_eq!(f.try_insert(0, 512), None, "contained");
        let b = f
            .try_insert(4096, 8192)
            .expect("adjacent is not overlapping");
        f.remove(a);
        assert!(f.try_insert(0, 4096).is_some());
        f.remove(b);
        assert!(f.try_insert(4096, 5000).is_some());
    }

    #[test]
    fn full_table_waits() {
        let mut f = InFlight::new(vec![None; 2]);
        let a = f.try_insert(0, 1).unwrap();
        f.try_insert(10, 11).unwrap();
        assert_eq!(f.try_insert(20, 21), None);
        f.remove(a);
        assert_eq!(f.try_insert(20, 21), Some(a));
    }
}
