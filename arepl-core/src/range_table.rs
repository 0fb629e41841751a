//! Byte ranges of the volume the write path holds, in a balanced tree: O(log n) per
//! operation, so nothing scans while the caller's (interrupt-disabled) lock is held.
//!
//! Two kinds of holders keep the replication stream's order right:
//! - A write in flight on the local device ([`Hold::Busy`], also a copy's read). Two
//!   overlapping writes in flight at once may reach the disk in either order while the
//!   queue records completion order, so an overlapping write waits for it.
//! - A queued write whose payload was not copied: the local device holds it
//!   ([`Hold::OnDisk`]) until it is read back for sending or spilling. A later write
//!   over it would destroy that payload, so the payload is read first (copy-on-write)
//!   while the later write waits; during that read the range is [`Hold::Reading`].
//!
//! A range is only added where it overlaps no held range, so the held ranges never
//! overlap each other: the tree is ordered by start offset alone.

use core::ops::DerefMut;

/// Index of a held range in the table's node storage.
pub type RangeId = u32;

const NIL: u32 = u32::MAX;

/// What holds a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A write in flight on the local device, or a copy reading it.
    Busy,
    /// A queued write at this local sequence whose payload is only on the local device.
    OnDisk(u64),
    /// That payload is being read back.
    Reading(u64),
}

/// Why a range cannot be held now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// An overlapping write or read is in flight: wait for a range to be released.
    Wait,
    /// Every node holds a range: some payload on disk must be read back to free one
    /// (the table bounds how many payloads may stay on the local device).
    Full,
    /// The queued write at this local sequence overlaps and its payload is still only
    /// on the local device: read it back first.
    OnDisk(u64),
}

/// One node of storage: a held range, or a free node.
#[derive(Debug, Clone, Copy)]
pub struct RangeNode {
    start: u64,
    end: u64,
    hold: Hold,
    left: u32,
    right: u32,
    priority: u32,
}

impl RangeNode {
    /// A free node, to fill the storage with.
    pub const FREE: Self = Self {
        start: 0,
        end: 0,
        hold: Hold::Busy,
        left: NIL,
        right: NIL,
        priority: 0,
    };
}

/// Non-overlapping held ranges in caller-provided node storage (a treap: a search tree
/// by start offset whose shape random priorities keep balanced).
#[derive(Debug)]
pub struct RangeTable<S: DerefMut<Target = [RangeNode]>> {
    nodes: S,
    root: u32,
    /// First free node; free nodes chain through `left`.
    free: u32,
    held: usize,
    /// State of the priority generator (xorshift).
    seed: u32,
}

impl<S: DerefMut<Target = [RangeNode]>> RangeTable<S> {
    /// A table holding nothing, with room for as many ranges as `nodes` has elements
    /// (at most `u32::MAX - 1`).
    pub fn new(mut nodes: S) -> Self {
        let count = nodes.len().min(NIL as usize - 1);
        for (index, node) in nodes.iter_mut().enumerate().take(count) {
            *node = RangeNode::FREE;
            node.left = if index + 1 < count {
                index as u32 + 1
            } else {
                NIL
            };
        }
        Self {
            nodes,
            root: NIL,
            free: if count > 0 { 0 } else { NIL },
            held: 0,
            seed: 0x9e37_79b9,
        }
    }

    /// Ranges held.
    pub fn len(&self) -> usize {
        self.held
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Holds `[start, end)` (non-empty) for `hold` if it overlaps no held range. Where
    /// it does, says whether a payload must be read back first or the caller waits.
    pub fn try_hold(&mut self, start: u64, end: u64, hold: Hold) -> Result<RangeId, Blocked> {
        if start >= end {
            return Err(Blocked::Wait);
        }
        let mut waits = false;
        let mut below = end;
        while let Some(id) = self.last_starting_below(below) {
            let node = self.nodes[id as usize];
            if node.end <= start {
                break;
            }
            match node.hold {
                Hold::OnDisk(seq) => return Err(Blocked::OnDisk(seq)),
                Hold::Busy | Hold::Reading(_) => waits = true,
            }
            if node.start <= start {
                break;
            }
            below = node.start;
        }
        if waits {
            return Err(Blocked::Wait);
        }
        if self.free == NIL {
            return Err(Blocked::Full);
        }
        let id = self.free;
        self.free = self.nodes[id as usize].left;
        let priority = self.next_priority();
        self.nodes[id as usize] = RangeNode {
            start,
            end,
            hold,
            left: NIL,
            right: NIL,
            priority,
        };
        let (lower, higher) = self.split(self.root, start);
        let lower = self.merge(lower, id);
        self.root = self.merge(lower, higher);
        self.held += 1;
        Ok(id)
    }

    /// What holds range `id` (held, from [`Self::try_hold`]).
    pub fn hold(&self, id: RangeId) -> Hold {
        self.nodes[id as usize].hold
    }

    /// The range `[start, end)` of `id`.
    pub fn range(&self, id: RangeId) -> (u64, u64) {
        let node = &self.nodes[id as usize];
        (node.start, node.end)
    }

    /// Changes what holds range `id`.
    pub fn set_hold(&mut self, id: RangeId, hold: Hold) {
        self.nodes[id as usize].hold = hold;
    }

    /// Releases range `id`.
    pub fn release(&mut self, id: RangeId) {
        let start = self.nodes[id as usize].start;
        let (lower, rest) = self.split(self.root, start);
        // Held ranges are non-empty and disjoint: exactly `id` starts at `start`.
        let (found, higher) = self.split(rest, start + 1);
        debug_assert_eq!(found, id);
        self.root = self.merge(lower, higher);
        self.nodes[found as usize] = RangeNode {
            left: self.free,
            ..RangeNode::FREE
        };
        self.free = found;
        self.held -= 1;
    }

    /// The held range with the highest start below `bound`.
    fn last_starting_below(&self, bound: u64) -> Option<RangeId> {
        let mut at = self.root;
        let mut best = None;
        while at != NIL {
            let node = &self.nodes[at as usize];
            if node.start < bound {
                best = Some(at);
                at = node.right;
            } else {
                at = node.left;
            }
        }
        best
    }

    /// Splits tree `at` into the ranges starting below `key` and the rest.
    fn split(&mut self, at: u32, key: u64) -> (u32, u32) {
        if at == NIL {
            return (NIL, NIL);
        }
        let node = self.nodes[at as usize];
        if node.start < key {
            let (lower, higher) = self.split(node.right, key);
            self.nodes[at as usize].right = lower;
            (at, higher)
        } else {
            let (lower, higher) = self.split(node.left, key);
            self.nodes[at as usize].left = higher;
            (lower, at)
        }
    }

    /// Joins two trees, every range of `lower` starting before any of `higher`.
    fn merge(&mut self, lower: u32, higher: u32) -> u32 {
        if lower == NIL {
            return higher;
        }
        if higher == NIL {
            return lower;
        }
        if self.nodes[lower as usize].priority > self.nodes[higher as usize].priority {
            let right = self.nodes[lower as usize].right;
            self.nodes[lower as usize].right = self.merge(right, higher);
            lower
        } else {
            let left = self.nodes[higher as usize].left;
            self.nodes[higher as usize].left = self.merge(lower, left);
            higher
        }
    }

    fn next_priority(&mut self) -> u32 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        self.seed
    }

    #[cfg(test)]
    fn depth(&self, at: u32) -> usize {
        if at == NIL {
            return 0;
        }
        let node = &self.nodes[at as usize];
        1 + self.depth(node.left).max(self.depth(node.right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::vec;
    use std::vec::Vec;

    fn table(nodes: usize) -> RangeTable<Vec<RangeNode>> {
        RangeTable::new(vec![RangeNode::FREE; nodes])
    }

    #[test]
    fn overlapping_writes_wait_and_disjoint_ones_pass() {
        let mut t = table(4);
        let a = t.try_hold(0, 4096, Hold::Busy).unwrap();
        assert_eq!(
            t.try_hold(4095, 8192, Hold::Busy),
            Err(Blocked::Wait),
            "one byte"
        );
        assert_eq!(
            t.try_hold(0, 512, Hold::Busy),
            Err(Blocked::Wait),
            "contained"
        );
        assert_eq!(
            t.try_hold(1024, 1536, Hold::Busy),
            Err(Blocked::Wait),
            "inside"
        );
        let b = t
            .try_hold(4096, 8192, Hold::Busy)
            .expect("adjacent is not overlapping");
        t.release(a);
        assert!(t.try_hold(0, 4096, Hold::Busy).is_ok());
        t.release(b);
        assert!(t.try_hold(4096, 5000, Hold::Busy).is_ok());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_write_over_a_payload_on_disk_reads_it_back_first() {
        let mut t = table(8);
        let queued = t.try_hold(8192, 12288, Hold::Busy).unwrap();
        // The write completes and is queued at sequence 7 without a copy.
        t.set_hold(queued, Hold::OnDisk(7));
        let busy = t.try_hold(0, 4096, Hold::Busy).unwrap();
        // A write spanning both: the queued payload is named first, whatever else waits.
        assert_eq!(t.try_hold(0, 16384, Hold::Busy), Err(Blocked::OnDisk(7)));
        assert_eq!(
            t.try_hold(12000, 12800, Hold::Busy),
            Err(Blocked::OnDisk(7))
        );
        // While it is read back, the write waits.
        t.set_hold(queued, Hold::Reading(7));
        assert_eq!(t.try_hold(12000, 12800, Hold::Busy), Err(Blocked::Wait));
        // Read and released: only the write in flight is left in the way.
        t.release(queued);
        assert_eq!(t.try_hold(0, 16384, Hold::Busy), Err(Blocked::Wait));
        t.release(busy);
        let whole = t.try_hold(0, 16384, Hold::Busy).unwrap();
        assert_eq!(t.range(whole), (0, 16384));
        assert_eq!(t.hold(whole), Hold::Busy);
    }

    #[test]
    fn hot_rewrites_of_one_block_serialise() {
        // A database rewriting one block: each write waits for the one before and, once
        // that is queued without a copy, for its payload to be read back.
        let mut t = table(4);
        let mut seq = 0;
        for _ in 0..100 {
            let id = t.try_hold(4096, 8192, Hold::Busy).unwrap();
            assert_eq!(t.try_hold(4096, 8192, Hold::Busy), Err(Blocked::Wait));
            seq += 1;
            t.set_hold(id, Hold::OnDisk(seq));
            assert_eq!(
                t.try_hold(4096, 8192, Hold::Busy),
                Err(Blocked::OnDisk(seq))
            );
            t.set_hold(id, Hold::Reading(seq));
            t.release(id);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_says_so_and_freed_nodes_are_reused() {
        let mut t = table(2);
        let a = t.try_hold(0, 1, Hold::Busy).unwrap();
        t.try_hold(10, 11, Hold::Busy).unwrap();
        assert_eq!(t.try_hold(20, 21, Hold::Busy), Err(Blocked::Full));
        assert_eq!(
            t.try_hold(0, 1, Hold::Busy),
            Err(Blocked::Wait),
            "overlap comes first"
        );
        t.release(a);
        assert_eq!(t.try_hold(20, 21, Hold::Busy), Ok(a));
        assert_eq!(
            t.try_hold(5, 5, Hold::Busy),
            Err(Blocked::Wait),
            "empty range"
        );
    }

    /// Against a brute-force model: random holds and releases, checking every answer.
    #[test]
    fn agrees_with_a_linear_scan_and_stays_shallow() {
        let mut t = table(4096);
        let mut model: Vec<(RangeId, u64, u64, Hold)> = Vec::new();
        let mut rng = 12345u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..200_000u64 {
            let start = next() % (1 << 26) / 512 * 512;
            let end = start + (1 + next() % 16) * 512;
            if next() % 8 == 0 && !model.is_empty() {
                let victim = (next() % model.len() as u64) as usize;
                let (id, ..) = model.swap_remove(victim);
                t.release(id);
                continue;
            }
            let overlapping: Vec<_> = model
                .iter()
                .filter(|(_, s, e, _)| start < *e && *s < end)
                .collect();
            let expected = if let Some((_, _, _, Hold::OnDisk(seq))) = overlapping
                .iter()
                .find(|(_, _, _, h)| matches!(h, Hold::OnDisk(_)))
            {
                Err(Blocked::OnDisk(*seq))
            } else if !overlapping.is_empty() {
                Err(Blocked::Wait)
            } else if model.len() == 4096 {
                Err(Blocked::Full)
            } else {
                Ok(())
            };
            let hold = match round % 3 {
                0 => Hold::Busy,
                1 => Hold::OnDisk(round),
                _ => Hold::Reading(round),
            };
            match (t.try_hold(start, end, hold), expected) {
                (Ok(id), Ok(())) => model.push((id, start, end, hold)),
                // With several queued payloads overlapping, any of them may be named.
                (Err(Blocked::OnDisk(seq)), Err(Blocked::OnDisk(_))) => assert!(overlapping
                    .iter()
                    .any(|(_, _, _, h)| *h == Hold::OnDisk(seq))),
                (got, want) => assert_eq!(got.map(|_| ()), want, "round {round}"),
            }
            assert_eq!(t.len(), model.len());
        }
        assert!(
            model.len() > 1000,
            "the test should fill the table: {}",
            model.len()
        );
        let depth = t.depth(t.root);
        assert!(depth < 64, "treap depth {depth} for {} ranges", model.len());
    }
}
