//! The content of one stamped block, and where each write goes.
//!
//! Layout of a block written by write `number` (all integers big-endian):
//!
//! | bytes      | content                                              |
//! |------------|------------------------------------------------------|
//! | 0..8       | magic `ARPLSTMP`                                     |
//! | 8..16      | write number (>= 1)                                  |
//! | 16..24     | block index                                          |
//! | 24..32     | seed of the run that issued the write                |
//! | 32..end    | xorshift64* stream seeded from (seed, number, block) |
//!
//! The body depends on all three identifiers, so a block that mixes two writes (torn,
//! or a sector of one write and a sector of another) differs from the body its header
//! promises, and a block copied to the wrong place carries the wrong block index.

use crate::prng::{splitmix64, XorShift64Star};

pub const MAGIC: [u8; 8] = *b"ARPLSTMP";
pub const HEADER_LEN: usize = 32;

/// Separate the derivations of "which block" and "which body" from the same inputs.
const TARGET_DOMAIN: u64 = 0x7461_7267_6574_0001;
const BODY_DOMAIN: u64 = 0x626f_6479_0000_0002;

/// Block of `blocks` that write `number` of a run seeded with `seed` targets.
pub fn target_block(seed: u64, number: u64, blocks: u64) -> u64 {
    splitmix64(splitmix64(seed ^ TARGET_DOMAIN) ^ number) % blocks
}

/// Identity of one write as recorded in its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub number: u64,
    pub block: u64,
    pub seed: u64,
}

impl Stamp {
    fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[0..8].copy_from_slice(&MAGIC);
        header[8..16].copy_from_slice(&self.number.to_be_bytes());
        header[16..24].copy_from_slice(&self.block.to_be_bytes());
        header[24..32].copy_from_slice(&self.seed.to_be_bytes());
        header
    }

    fn body(&self) -> XorShift64Star {
        let key = splitmix64(splitmix64(self.seed ^ BODY_DOMAIN) ^ self.number);
        XorShift64Star::new(splitmix64(key ^ self.block))
    }

    /// Writes the full block content. `block.len()` must be a multiple of 8 and at least
    /// [`HEADER_LEN`], which every valid [`crate::geometry::Geometry`] guarantees.
    pub fn fill(&self, block: &mut [u8]) {
        let (header, body) = block.split_at_mut(HEADER_LEN);
        header.copy_from_slice(&self.header());
        let mut stream = self.body();
        for word in body.chunks_exact_mut(8) {
            word.copy_from_slice(&stream.next_u64().to_be_bytes());
        }
    }

    /// Offset of the first byte of `block` that differs from what [`Stamp::fill`] writes,
    /// or `None` if the whole block matches.
    pub fn first_difference(&self, block: &[u8]) -> Option<usize> {
        let header = self.header();
        if let Some(at) = first_mismatch(&block[..HEADER_LEN], &header) {
            return Some(at);
        }
        let mut stream = self.body();
        block[HEADER_LEN..]
            .chunks_exact(8)
            .enumerate()
            .find_map(|(i, word)| {
                let expected = stream.next_u64().to_be_bytes();
                first_mismatch(word, &expected).map(|at| HEADER_LEN + i * 8 + at)
            })
    }

    /// The stamp a block claims to hold, or `None` if it does not start with [`MAGIC`].
    /// The claim still has to be verified with [`Stamp::first_difference`].
    pub fn parse_header(block: &[u8]) -> Option<Stamp> {
        if block.len() < HEADER_LEN || block[0..8] != MAGIC {
            return None;
        }
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&block[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        Some(Stamp {
            number: word(8),
            block: word(16),
            seed: word(24),
        })
    }
}

fn first_mismatch(found: &[u8], expected: &[u8]) -> Option<usize> {
    found.iter().zip(expected).position(|(a, b)| a != b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp {
        number: 42,
        block: 5,
        seed: 7,
    };

    fn filled(stamp: Stamp, len: usize) -> Vec<u8> {
        let mut block = vec![0u8; len];
        stamp.fill(&mut block);
        block
    }

    #[test]
    fn fill_then_parse_and_verify() {
        let block = filled(STAMP, 4096);
        assert_eq!(&block[..8], b"ARPLSTMP");
        assert_eq!(&block[8..16], &42u64.to_be_bytes());
        assert_eq!(Stamp::parse_header(&block), Some(STAMP));
        assert_eq!(STAMP.first_difference(&block), None);
    }

    #[test]
    fn bodies_depend_on_every_identifier() {
        let base = filled(STAMP, 512);
        for other in [
            Stamp {
                number: 43,
                ..STAMP
            },
            Stamp { block: 6, ..STAMP },
            Stamp { seed: 8, ..STAMP },
        ] {
            assert_ne!(base[HEADER_LEN..], filled(other, 512)[HEADER_LEN..]);
        }
    }

    #[test]
    fn first_difference_finds_torn_tail() {
        let mut block = filled(STAMP, 4096);
        let other = filled(
            Stamp {
                number: 43,
                ..STAMP
            },
            4096,
        );
        block[2048..].copy_from_slice(&other[2048..]);
        let at = STAMP.first_difference(&block).unwrap();
        assert!((2048..2056).contains(&at), "{at}");
    }

    #[test]
    fn first_difference_finds_header_change() {
        let mut block = filled(STAMP, 512);
        block[20] ^= 1;
        assert_eq!(STAMP.first_difference(&block), Some(20));
    }

    #[test]
    fn no_magic_no_stamp() {
        assert_eq!(Stamp::parse_header(&[0u8; 512]), None);
        assert_eq!(Stamp::parse_header(b"ARPLSTMP"), None);
    }

    #[test]
    fn targets_are_in_range_and_spread() {
        let hits: std::collections::HashSet<u64> =
            (1..=200).map(|n| target_block(7, n, 16)).collect();
        assert!(hits.iter().all(|&b| b < 16));
        assert!(hits.len() > 12, "{hits:?}");
        assert_eq!(target_block(7, 9, 16), target_block(7, 9, 16));
    }
}
