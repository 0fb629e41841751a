//! Byte ranges of writes issued to the local device and not yet completed.
//!
//! Two overlapping writes in flight at once may reach the disk in either order, while
//! the replication queue records completion order; the replica could then end with the
//! other write on top. So a write that overlaps one in flight waits until it completes:
//! for overlapping writes, disk order, completion order and queue order are then one.

/// At most `N` ranges, each occupying a slot until removed.
#[derive(Debug)]
pub struct InFlight<const N: usize> {
    ranges: [Option<(u64, u64)>; N],
}

impl<const N: usize> Default for InFlight<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> InFlight<N> {
    /// No range in flight.
    pub const fn new() -> Self {
        Self { ranges: [None; N] }
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

    #[test]
    fn overlapping_ranges_wait_and_disjoint_ones_pass() {
        let mut f = InFlight::<4>::new();
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
        let mut f = InFlight::<2>::new();
        let a = f.try_insert(0, 1).unwrap();
        f.try_insert(10, 11).unwrap();
        assert_eq!(f.try_insert(20, 21), None);
        f.remove(a);
        assert_eq!(f.try_insert(20, 21), Some(a));
    }
}
