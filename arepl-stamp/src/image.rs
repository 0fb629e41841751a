//! Whole images compared and digested, for the VM tests' "is the replica equal?" checks.
//!
//! Both read in large chunks into aligned buffers, so on O_DIRECT devices the data
//! comes straight from the device. In the emulated test VM that is several times cheaper
//! than `dd | sha256sum`, whose pipe copies and SHA-256 rounds every byte costs.
//! A comparison also says where two images differ, which a pair of digests cannot.

use std::fmt;
use std::io::{self, Read};

use arepl_core::xxh64::Xxh64;

use crate::aligned::AlignedBuf;

/// Bytes read per call: large enough that a read costs little per byte.
const CHUNK: usize = 4 << 20;
/// The unit in which differences are reported.
pub const BLOCK: usize = 4096;
/// Differing blocks listed one by one; the rest are only counted.
const LISTED: usize = 20;

/// One 4 KiB block in which the two images differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Difference {
    /// Block number, in [`BLOCK`] units from the start.
    pub block: u64,
    /// Whether the block is all zeroes on the first image, and on the second: a block
    /// never written reads as zeroes, a block written wrong does not.
    pub zeroes: (bool, bool),
}

/// The outcome of comparing the first `bytes` bytes of two images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub bytes: u64,
    /// Number of [`BLOCK`]s that differ.
    pub differing: u64,
    /// The first differing blocks, at most [`LISTED`].
    pub listed: Vec<Difference>,
}

impl Comparison {
    pub fn is_identical(&self) -> bool {
        self.differing == 0
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = self.bytes >> 20;
        if self.is_identical() {
            return write!(f, "identical over {mib} MiB");
        }
        write!(
            f,
            "{} of {} 4 KiB blocks differ over {mib} MiB",
            self.differing,
            self.bytes.div_ceil(BLOCK as u64)
        )?;
        let side = |zero: bool| if zero { "zeroes" } else { "data" };
        for difference in &self.listed {
            write!(
                f,
                "\n  block {} (byte {}): {} / {}",
                difference.block,
                difference.block * BLOCK as u64,
                side(difference.zeroes.0),
                side(difference.zeroes.1)
            )?;
        }
        if self.differing > self.listed.len() as u64 {
            write!(f, "\n  ...")?;
        }
        Ok(())
    }
}

/// Compares the first `bytes` bytes of `a` and `b`; an image shorter than that is an
/// error, not a difference.
pub fn compare(a: &mut impl Read, b: &mut impl Read, bytes: u64) -> io::Result<Comparison> {
    let mut buf_a = AlignedBuf::zeroed(CHUNK);
    let mut buf_b = AlignedBuf::zeroed(CHUNK);
    let mut comparison = Comparison {
        bytes,
        differing: 0,
        listed: Vec::new(),
    };
    let mut offset = 0u64;
    while offset < bytes {
        let len = chunk_len(bytes - offset);
        let chunk_a = &mut buf_a.as_mut_slice()[..len];
        let chunk_b = &mut buf_b.as_mut_slice()[..len];
        fill(a, chunk_a, offset, "the first image")?;
        fill(b, chunk_b, offset, "the second image")?;
        if chunk_a != chunk_b {
            let first_block = offset / BLOCK as u64;
            let blocks = chunk_a.chunks(BLOCK).zip(chunk_b.chunks(BLOCK));
            for (index, (block_a, block_b)) in (first_block..).zip(blocks) {
                if block_a == block_b {
                    continue;
                }
                comparison.differing += 1;
                if comparison.listed.len() < LISTED {
                    comparison.listed.push(Difference {
                        block: index,
                        zeroes: (all_zeroes(block_a), all_zeroes(block_b)),
                    });
                }
            }
        }
        offset += len as u64;
    }
    Ok(comparison)
}

/// XXH64 of the first `bytes` bytes of `image`: equal images have equal digests, and
/// an accidental difference goes unseen with odds of 2^-64.
pub fn digest(image: &mut impl Read, bytes: u64) -> io::Result<u64> {
    let mut buf = AlignedBuf::zeroed(CHUNK);
    let mut hasher = Xxh64::new();
    let mut offset = 0u64;
    while offset < bytes {
        let chunk = &mut buf.as_mut_slice()[..chunk_len(bytes - offset)];
        fill(image, chunk, offset, "the image")?;
        hasher.update(chunk);
        offset += chunk.len() as u64;
    }
    Ok(hasher.finish())
}

/// Reads the chunk at `offset`; an image that ends inside it says so by name.
fn fill(image: &mut impl Read, chunk: &mut [u8], offset: u64, name: &str) -> io::Result<()> {
    image.read_exact(chunk).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            let end = offset + chunk.len() as u64;
            io::Error::new(e.kind(), format!("{name} ends before byte {end}"))
        } else {
            e
        }
    })
}

fn chunk_len(left: u64) -> usize {
    usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK))
}

fn all_zeroes(block: &[u8]) -> bool {
    block.iter().all(|&byte| byte == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arepl_core::xxh64::xxh64;
    use std::io::Cursor;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8 + 1).collect()
    }

    #[test]
    fn equal_images_are_identical() {
        let a = image(CHUNK + 3 * BLOCK);
        let outcome = compare(&mut Cursor::new(&a), &mut Cursor::new(&a), a.len() as u64);
        let outcome = outcome.unwrap();
        assert!(outcome.is_identical());
        assert_eq!(outcome.to_string(), "identical over 4 MiB");
    }

    #[test]
    fn differences_are_listed_by_block_with_their_zeroes() {
        let a = image(CHUNK + 4 * BLOCK);
        let mut b = a.clone();
        b[5 * BLOCK + 17] ^= 1;
        b[CHUNK + 2 * BLOCK..CHUNK + 3 * BLOCK].fill(0);
        let outcome = compare(&mut Cursor::new(&a), &mut Cursor::new(&b), a.len() as u64);
        let outcome = outcome.unwrap();
        assert_eq!(outcome.differing, 2);
        let chunk_blocks = (CHUNK / BLOCK) as u64;
        assert_eq!(
            outcome.listed,
            [
                Difference {
                    block: 5,
                    zeroes: (false, false)
                },
                Difference {
                    block: chunk_blocks + 2,
                    zeroes: (false, true)
                },
            ]
        );
        assert!(outcome
            .to_string()
            .starts_with("2 of 1028 4 KiB blocks differ"));
    }

    #[test]
    fn only_the_first_blocks_are_listed_but_all_are_counted() {
        let a = vec![0u8; 64 * BLOCK];
        let b = vec![1u8; 64 * BLOCK];
        let outcome = compare(&mut Cursor::new(&a), &mut Cursor::new(&b), a.len() as u64);
        let outcome = outcome.unwrap();
        assert_eq!(outcome.differing, 64);
        assert_eq!(outcome.listed.len(), LISTED);
        assert!(outcome.to_string().ends_with("\n  ..."));
    }

    #[test]
    fn a_difference_beyond_the_compared_length_is_not_seen() {
        let a = image(8 * BLOCK);
        let mut b = a.clone();
        b[7 * BLOCK] ^= 1;
        let outcome = compare(&mut Cursor::new(&a), &mut Cursor::new(&b), 7 * BLOCK as u64);
        assert!(outcome.unwrap().is_identical());
    }

    #[test]
    fn a_short_image_is_an_error() {
        let a = image(2 * BLOCK);
        let b = image(BLOCK);
        let error = compare(&mut Cursor::new(&a), &mut Cursor::new(&b), a.len() as u64);
        assert_eq!(error.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let error = digest(&mut Cursor::new(&b), a.len() as u64);
        assert_eq!(error.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn digest_is_xxh64_of_the_prefix_across_chunks() {
        let a = image(CHUNK + 5 * BLOCK);
        let bytes = CHUNK + BLOCK;
        let digested = digest(&mut Cursor::new(&a), bytes as u64).unwrap();
        assert_eq!(digested, xxh64(&a[..bytes]));
    }
}
