//! The device layout both commands agree on: how many blocks, of what size.

use thiserror::Error;

/// Smallest block and the unit every block size must be a multiple of: the smallest
/// logical block size O_DIRECT can be asked to honour.
pub const SECTOR: usize = 512;
/// Largest block size accepted; larger blocks buy nothing for an ordering test.
pub const MAX_BLOCK_SIZE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    block_size: usize,
    blocks: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GeometryError {
    #[error("block size {0} is not a multiple of {SECTOR} between {SECTOR} and {MAX_BLOCK_SIZE}")]
    BlockSize(usize),
    #[error("the number of blocks must be at least 1")]
    NoBlocks,
    #[error("{blocks} blocks of {block_size} bytes do not fit a 64-bit offset")]
    TooLarge { blocks: u64, block_size: usize },
}

impl Geometry {
    pub fn new(block_size: usize, blocks: u64) -> Result<Self, GeometryError> {
        if !(SECTOR..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_multiple_of(SECTOR) {
            return Err(GeometryError::BlockSize(block_size));
        }
        if blocks == 0 {
            return Err(GeometryError::NoBlocks);
        }
        if blocks.checked_mul(block_size as u64).is_none() {
            return Err(GeometryError::TooLarge { blocks, block_size });
        }
        Ok(Self { block_size, blocks })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Byte offset of `block`; callers keep `block < blocks`, which [`Geometry::new`]
    /// proved cannot overflow.
    pub fn offset(&self, block: u64) -> u64 {
        block * self.block_size as u64
    }

    /// Bytes covered by all blocks.
    pub fn bytes(&self) -> u64 {
        self.offset(self.blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sector_multiples_only() {
        assert!(Geometry::new(4096, 16).is_ok());
        assert!(Geometry::new(512, 1).is_ok());
        assert_eq!(Geometry::new(1000, 16), Err(GeometryError::BlockSize(1000)));
        assert_eq!(Geometry::new(256, 16), Err(GeometryError::BlockSize(256)));
        assert_eq!(Geometry::new(4096, 0), Err(GeometryError::NoBlocks));
        assert!(Geometry::new(4096, u64::MAX / 2).is_err());
    }

    #[test]
    fn offsets_are_block_multiples() {
        let geometry = Geometry::new(4096, 16).unwrap();
        assert_eq!(geometry.offset(3), 12288);
        assert_eq!(geometry.bytes(), 65536);
    }
}
