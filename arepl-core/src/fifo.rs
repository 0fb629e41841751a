//! The replication FIFO: entries in sequence order, a send cursor, cumulative
//! acknowledgement, and a byte budget.
//!
//! Storage is the caller's ([`Slots`]), so the kernel can keep entries in a `KVVec` and
//! the tests in a `Vec`. Sequence numbers here are the session-independent local ones:
//! the first entry pushed is 1.

/// Fixed-size storage for queued entries.
pub trait Slots {
    /// What is queued.
    type Item;
    /// How many entries fit.
    fn capacity(&self) -> usize;
    /// The slot at `index` (< capacity).
    fn slot(&mut self, index: usize) -> &mut Option<Self::Item>;
}

/// Bytes an entry costs against the budget beyond its payload, so that metadata-only
/// entries are bounded too and the slot count can follow from the budget.
pub const ENTRY_OVERHEAD: u64 = 256;

/// The unit a payload takes memory in: the module keeps payloads in pages.
pub const PAYLOAD_PAGE: u64 = 4096;

/// The number of slots needed for a budget of `capacity_bytes`.
pub fn slots_for_budget(capacity_bytes: u64) -> usize {
    (capacity_bytes / ENTRY_OVERHEAD) as usize
}

/// Memory accounting for queued entries: writers reserve before they copy data and the
/// reservation is released when the entry is acknowledged (or its local write fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    capacity: u64,
    reserved: u64,
}

impl Budget {
    /// A budget of `capacity` bytes, none reserved.
    pub const fn new(capacity: u64) -> Self {
        Self {
            capacity,
            reserved: 0,
        }
    }

    /// What an entry with `payload` bytes costs: the whole pages its payload takes in
    /// memory (the module holds payloads in order-0 pages), and the overhead.
    pub const fn cost(payload: u64) -> u64 {
        payload.div_ceil(PAYLOAD_PAGE) * PAYLOAD_PAGE + ENTRY_OVERHEAD
    }

    /// Reserves `cost` bytes if they fit. A single entry larger than the whole budget
    /// is admitted when nothing else is reserved, so it can never wait forever.
    pub fn try_reserve(&mut self, cost: u64) -> bool {
        let fits = self.reserved + cost <= self.capacity || self.reserved == 0;
        if fits {
            self.reserved += cost;
        }
        fits
    }

    /// Returns `cost` bytes reserved earlier.
    pub fn release(&mut self, cost: u64) {
        self.reserved = self.reserved.saturating_sub(cost);
    }

    /// Bytes reserved.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The bound.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

/// Why an entry could not join the FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FifoFull;

/// Entries in sequence order, from the oldest unacknowledged to the newest.
#[derive(Debug)]
pub struct Fifo<S: Slots> {
    slots: S,
    /// Index of the oldest entry.
    head: usize,
    /// Entries held.
    len: usize,
    /// Entries from the head already handed to the sender in this session.
    sent: usize,
    /// Sequence number of the entry at `head` (or of the next entry when empty).
    head_seq: u64,
}

impl<S: Slots> Fifo<S> {
    /// An empty FIFO whose first entry will get sequence 1.
    pub fn new(slots: S) -> Self {
        Self::starting_at(slots, 1)
    }

    /// An empty FIFO whose first entry will get sequence `first_seq` (older entries live
    /// elsewhere, in a spill log).
    pub fn starting_at(slots: S, first_seq: u64) -> Self {
        Self {
            slots,
            head: 0,
            len: 0,
            sent: 0,
            head_seq: first_seq,
        }
    }

    /// The entry `index` places after the oldest (0: the oldest), if held.
    pub fn get(&mut self, index: usize) -> Option<&S::Item> {
        if index >= self.len {
            return None;
        }
        // checked: a remainder panic path trips the kernel build's objtool.
        let at = (self.head + index).checked_rem(self.slots.capacity())?;
        self.slots.slot(at).as_ref()
    }

    /// The entry `index` places after the oldest, to change in place.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut S::Item> {
        if index >= self.len {
            return None;
        }
        let at = (self.head + index).checked_rem(self.slots.capacity())?;
        self.slots.slot(at).as_mut()
    }

    /// Removes the oldest entry, sent or not (it moves to the spill log).
    pub fn pop_oldest(&mut self) -> Option<S::Item> {
        self.pop_acked(self.head_seq)
    }

    /// Appends an entry and returns its sequence number.
    pub fn push(&mut self, item: S::Item) -> Result<u64, (FifoFull, S::Item)> {
        let capacity = self.slots.capacity();
        if self.len == capacity {
            return Err((FifoFull, item));
        }
        let index = (self.head + self.len) % capacity;
        *self.slots.slot(index) = Some(item);
        self.len += 1;
        Ok(self.head_seq + self.len as u64 - 1)
    }

    /// The next entry to send, with its sequence number; advances the send cursor.
    pub fn next_to_send(&mut self) -> Option<(u64, &S::Item)> {
        if self.sent == self.len {
            return None;
        }
        let seq = self.head_seq + self.sent as u64;
        let index = (self.head + self.sent) % self.slots.capacity();
        self.sent += 1;
        self.slots.slot(index).as_ref().map(|item| (seq, item))
    }

    /// Removes and returns the oldest entry if its sequence is at most `acked_seq`.
    /// Call repeatedly after an acknowledgement.
    pub fn pop_acked(&mut self, acked_seq: u64) -> Option<S::Item> {
        if self.len == 0 || self.head_seq > acked_seq {
            return None;
        }
        let item = self.slots.slot(self.head).take();
        self.head = (self.head + 1) % self.slots.capacity();
        self.len -= 1;
        self.sent = self.sent.saturating_sub(1);
        self.head_seq += 1;
        item
    }

    /// Starts sending again from the oldest entry (after a reconnect).
    pub fn rewind(&mut self) {
        self.sent = 0;
    }

    /// The oldest entry, if any.
    pub fn oldest(&mut self) -> Option<&S::Item> {
        if self.len == 0 {
            return None;
        }
        let head = self.head;
        self.slots.slot(head).as_ref()
    }

    /// Sequence number of the oldest entry, or of the next one when empty.
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// Sequence number the next pushed entry gets.
    pub fn next_seq(&self) -> u64 {
        self.head_seq + self.len as u64
    }

    /// Highest sequence handed to the sender in this session (head_seq - 1 if none).
    pub fn last_sent_seq(&self) -> u64 {
        self.head_seq + self.sent as u64 - 1
    }

    /// Entries held (sent or not).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries sent but not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn payloads_cost_the_whole_pages_they_take() {
        assert_eq!(Budget::cost(0), ENTRY_OVERHEAD);
        assert_eq!(Budget::cost(512), PAYLOAD_PAGE + ENTRY_OVERHEAD);
        assert_eq!(Budget::cost(PAYLOAD_PAGE), PAYLOAD_PAGE + ENTRY_OVERHEAD);
        assert_eq!(
            Budget::cost(PAYLOAD_PAGE + 512),
            2 * PAYLOAD_PAGE + ENTRY_OVERHEAD
        );
    }

    struct VecSlots(Vec<Option<u32>>);

    impl Slots for VecSlots {
        type Item = u32;
        fn capacity(&self) -> usize {
            self.0.len()
        }
        fn slot(&mut self, index: usize) -> &mut Option<u32> {
            &mut self.0[index]
        }
    }

    fn fifo(capacity: usize) -> Fifo<VecSlots> {
        Fifo::new(VecSlots((0..capacity).map(|_| None).collect()))
    }

    #[test]
    fn sequences_follow_push_order() {
        let mut q = fifo(4);
        assert_eq!(q.push(10), Ok(1));
        assert_eq!(q.push(20), Ok(2));
        assert_eq!(q.next_to_send(), Some((1, &10)));
        assert_eq!(q.push(30), Ok(3));
        assert_eq!(q.next_to_send(), Some((2, &20)));
        assert_eq!(q.next_to_send(), Some((3, &30)));
        assert_eq!(q.next_to_send(), None);
        assert_eq!(q.last_sent_seq(), 3);
    }

    #[test]
    fn cumulative_ack_frees_in_order_and_wraps() {
        let mut q = fifo(3);
        for round in 0..5u32 {
            let first = q.next_seq();
            for i in 0..3 {
                assert_eq!(q.push(round * 10 + i), Ok(first + u64::from(i)));
            }
            assert_eq!(q.push(99), Err((FifoFull, 99)));
            while q.next_to_send().is_some() {}
            assert_eq!(q.pop_acked(first), Some(round * 10));
            assert_eq!(q.in_flight(), 2);
            assert_eq!(q.pop_acked(first + 2), Some(round * 10 + 1));
            assert_eq!(q.pop_acked(first + 2), Some(round * 10 + 2));
            assert_eq!(q.pop_acked(first + 2), None);
            assert!(q.is_empty());
        }
        assert_eq!(q.next_seq(), 16);
    }

    #[test]
    fn rewind_resends_unacknowledged() {
        let mut q = fifo(8);
        for i in 0..5 {
            q.push(i).unwrap();
        }
        while q.next_to_send().is_some() {}
        q.pop_acked(2);
        q.pop_acked(2);
        q.rewind();
        let resent: Vec<u64> = core::iter::from_fn(|| q.next_to_send().map(|(s, _)| s)).collect();
        assert_eq!(resent, [3, 4, 5]);
    }

    #[test]
    fn starts_at_a_given_sequence_and_moves_entries_out() {
        let mut q = fifo(4);
        q = Fifo::starting_at(q.slots, 41);
        assert_eq!(q.push(1), Ok(41));
        assert_eq!(q.push(2), Ok(42));
        assert_eq!(q.get(1), Some(&2));
        assert_eq!(q.get(2), None);
        assert_eq!(q.pop_oldest(), Some(1));
        assert_eq!(q.head_seq(), 42);
        assert_eq!(q.next_to_send(), Some((42, &2)));
    }

    #[test]
    fn budget_bounds_and_admits_one_oversized_entry() {
        let mut b = Budget::new(1000);
        assert!(b.try_reserve(600));
        assert!(!b.try_reserve(600));
        assert!(b.try_reserve(400));
        b.release(600);
        b.release(400);
        assert_eq!(b.reserved(), 0);
        assert!(
            b.try_reserve(5000),
            "an entry larger than the budget must not wait forever"
        );
        assert!(!b.try_reserve(1));
        assert_eq!(slots_for_budget(1 << 20), 4096);
    }
}
