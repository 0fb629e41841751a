//! The replication digest: a running fingerprint of the entry stream, kept independently
//! by the sender and the receiver so that a lost, reordered or altered entry shows.
//!
//! Each entry contributes a 64-bit term that binds its sequence number to its contents
//! (kind, FUA flag, offset, length and payload checksum: the fields of its wire header,
//! so computing a term touches no payload byte). The digest through sequence `S` is the
//! wrapping sum of the terms of entries 1..=S, plus whatever base the history started
//! from. Because each term names its sequence number, an entry missing, duplicated,
//! moved to another place in the order or changed changes the digest, and sums compose,
//! so either side can carry its digest forward from any point it trusts.
//!
//! The sender keeps the digest of what it sent; the receiver the digest of what it
//! applied, persisted with its durable sequence. They are compared at every handshake
//! and at periodic `Digest` frames during a session (see [`crate::wire`]).

/// The digest of an empty history.
pub const EMPTY: Digest = Digest(0);

/// A running digest of the entries through some sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest(pub u64);

/// The fields of one entry that its term covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryFields {
    /// Wire sequence number.
    pub seq: u64,
    /// Wire frame kind byte (`Write`, `Flush`, `Discard`, `WriteZeroes`, `Verify`).
    pub kind: u8,
    /// Whether the write is FUA.
    pub fua: bool,
    /// Byte offset (0 for flushes).
    pub offset: u64,
    /// Payload or range length in bytes (0 for flushes).
    pub length: u32,
    /// The payload's [`crate::wire::payload_checksum`] (0 without one).
    pub payload_checksum: u32,
}

impl Digest {
    /// The digest with entry `fields` appended.
    #[must_use]
    pub fn with(self, fields: &EntryFields) -> Self {
        Self(self.0.wrapping_add(term(fields)))
    }
}

/// The term one entry contributes.
pub fn term(fields: &EntryFields) -> u64 {
    let shape = (u64::from(fields.kind) << 56)
        | (u64::from(fields.fua) << 48)
        | (u64::from(fields.payload_checksum) << 16);
    let mut h = mix(fields.seq ^ 0x6172_6570_6c64_6731);
    h = mix(h ^ shape);
    h = mix(h ^ fields.offset);
    mix(h ^ u64::from(fields.length))
}

/// SplitMix64's finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sender's digests of the entries it sent, by wire sequence, for the window a
/// receiver can resume from: from the last handshake's durable sequence (the anchor) to
/// the newest entry sent. The storage is the caller's (a `Vec` in tests, a kernel
/// vector in the module), at least two send windows long, so that a receiver's durable
/// sequence, which is never older than the oldest unacknowledged entry, is always
/// still in it.
#[derive(Debug)]
pub struct SentDigests<R> {
    ring: R,
    /// The wire sequences whose digests the ring holds, first and last.
    held: Option<(u64, u64)>,
}

impl<R: core::ops::DerefMut<Target = [u64]>> SentDigests<R> {
    /// Digests kept in `ring`; none known yet.
    pub fn new(ring: R) -> Self {
        Self { ring, held: None }
    }

    /// The digest through wire sequence `seq`, if this side still knows it.
    pub fn at(&self, seq: u64) -> Option<Digest> {
        let (first, last) = self.held?;
        (first..=last)
            .contains(&seq)
            .then(|| Digest(self.ring[self.slot(seq)]))
    }

    /// The newest wire sequence sent since the last anchor, if any was anchored.
    pub fn newest(&self) -> Option<u64> {
        self.held.map(|(_, last)| last)
    }

    /// Starts a session at `seq` whose digest is `digest`: the entries after it are
    /// sent next.
    pub fn anchor(&mut self, seq: u64, digest: Digest) {
        let slot = self.slot(seq);
        self.ring[slot] = digest.0;
        self.held = Some((seq, seq));
    }

    /// Records the entry sent next and returns the digest through it; `None` (nothing
    /// recorded) unless `fields.seq` follows the newest entry held.
    pub fn sent(&mut self, fields: &EntryFields) -> Option<Digest> {
        let (first, last) = self.held?;
        if fields.seq != last.checked_add(1)? {
            return None;
        }
        let digest = Digest(self.ring[self.slot(last)]).with(fields);
        let slot = self.slot(fields.seq);
        self.ring[slot] = digest.0;
        let capacity = self.ring.len() as u64;
        let first = first.max((fields.seq + 1).saturating_sub(capacity));
        self.held = Some((first, fields.seq));
        Some(digest)
    }

    /// Forgets every digest (the history behind them is no longer this side's).
    pub fn forget(&mut self) {
        self.held = None;
    }

    fn slot(&self, seq: u64) -> usize {
        // checked: a remainder panic path trips the kernel build's objtool.
        seq.checked_rem(self.ring.len() as u64).unwrap_or(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(seq: u64, offset: u64, crc: u32) -> EntryFields {
        EntryFields {
            seq,
            kind: 3,
            fua: false,
            offset,
            length: 4096,
            payload_checksum: crc,
        }
    }

    fn digest(entries: &[EntryFields]) -> Digest {
        entries.iter().fold(EMPTY, |d, e| d.with(e))
    }

    #[test]
    fn golden_terms() {
        // Pinned: the kernel and replicad compute these independently, and a persisted
        // digest must mean the same thing after an upgrade.
        assert_eq!(term(&write(1, 0, 0)), 0xd3ce_181a_36c2_a647);
        let flush = EntryFields {
            seq: 2,
            kind: 4,
            fua: false,
            offset: 0,
            length: 0,
            payload_checksum: 0,
        };
        assert_eq!(term(&flush), 0xf0b0_6f39_14d5_fb22);
        assert_eq!(
            digest(&[write(1, 0, 0), flush]),
            Digest(term(&write(1, 0, 0)).wrapping_add(term(&flush)))
        );
    }

    #[test]
    fn every_field_and_the_order_count() {
        let base = digest(&[write(1, 0, 7), write(2, 4096, 8)]);
        let variants = [
            // The two entries swapped: same contents, other order.
            digest(&[write(1, 4096, 8), write(2, 0, 7)]),
            // The second one lost and the stream renumbered.
            digest(&[write(1, 0, 7)]),
            // Another payload, offset, length, kind, FUA flag.
            digest(&[write(1, 0, 7), write(2, 4096, 9)]),
            digest(&[write(1, 0, 7), write(2, 8192, 8)]),
            digest(&[
                write(1, 0, 7),
                EntryFields {
                    length: 512,
                    ..write(2, 4096, 8)
                },
            ]),
            digest(&[
                write(1, 0, 7),
                EntryFields {
                    kind: 6,
                    ..write(2, 4096, 8)
                },
            ]),
            digest(&[
                write(1, 0, 7),
                EntryFields {
                    fua: true,
                    ..write(2, 4096, 8)
                },
            ]),
            // An entry applied twice.
            digest(&[write(1, 0, 7), write(2, 4096, 8), write(2, 4096, 8)]),
        ];
        for (i, variant) in variants.iter().enumerate() {
            assert_ne!(*variant, base, "variant {i}");
        }
    }

    #[test]
    fn digests_carry_forward_from_any_trusted_point() {
        let entries: [EntryFields; 4] = core::array::from_fn(|i| write(i as u64 + 1, 0, i as u32));
        let through_two = digest(&entries[..2]);
        let carried = entries[2..].iter().fold(through_two, |d, e| d.with(e));
        assert_eq!(carried, digest(&entries));
    }

    #[test]
    fn sent_digests_follow_the_stream_and_keep_a_window() {
        extern crate std;
        use std::vec;
        let mut sent = SentDigests::new(vec![0u64; 4]);
        assert_eq!(sent.at(10), None);
        assert_eq!(sent.sent(&write(11, 0, 0)), None, "no anchor yet");
        let base = Digest(77);
        sent.anchor(10, base);
        let mut expected = base;
        for seq in 11..=16 {
            expected = expected.with(&write(seq, 0, seq as u32));
            assert_eq!(sent.sent(&write(seq, 0, seq as u32)), Some(expected));
        }
        // Four slots: 13..=16 are held, older ones are overwritten.
        assert_eq!(sent.at(12), None);
        assert_eq!(sent.at(16), Some(expected));
        let through_14 = (11..=14).fold(base, |d, s| d.with(&write(s, 0, s as u32)));
        assert_eq!(sent.at(14), Some(through_14));
        // Out of order: nothing recorded.
        assert_eq!(sent.sent(&write(18, 0, 0)), None);
        assert_eq!(sent.at(17), None);
        assert_eq!(sent.newest(), Some(16));
        // A new session resumes at 14 and resends; the digests come out the same.
        sent.anchor(14, through_14);
        assert_eq!(sent.at(16), None);
        assert_eq!(sent.sent(&write(15, 0, 15)).unwrap(), sent.at(15).unwrap());
        sent.forget();
        assert_eq!(sent.at(15), None);
    }
}
