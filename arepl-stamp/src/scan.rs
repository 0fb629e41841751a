//! Reading an image and naming, block by block, the logged write it holds.
//!
//! A block is either all zeroes (never written: the device started zeroed), or exactly
//! the content [`Stamp::fill`] produced for a logged write that targets this block.
//! Anything else is a [`Defect`], whatever the order of writes.

use std::fmt;
use std::io::{self, Read};

use crate::aligned::AlignedBuf;
use crate::geometry::Geometry;
use crate::log::{Log, WriteRecord};
use crate::stamp::Stamp;

/// How many offending blocks a report names.
pub const REPORTED: usize = 10;

/// Read size: large enough to stream a device quickly, a whole number of blocks.
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// Not zero, and no stamp header.
    Garbage,
    /// A stamp of a write the log does not have (a future write, or one before the log).
    NotLogged { number: u64 },
    /// A complete stamp of a logged write that targets another block.
    WrongBlock { number: u64, target: u64 },
    /// The header names a write to this block, but the content is not that write's:
    /// torn, mixed with another write, or corrupted from `offset` on.
    Mismatch { number: u64, offset: usize },
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Defect::Garbage => write!(f, "garbage (neither zeroes nor a stamp header)"),
            Defect::NotLogged { number } => {
                write!(f, "stamp of write {number}, which is not in the log")
            }
            Defect::WrongBlock { number, target } => {
                write!(f, "stamp of write {number}, which targets block {target}")
            }
            Defect::Mismatch { number, offset } => write!(
                f,
                "header of write {number}, but the content differs from byte {offset} on \
                 (torn or mixed write)"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDefect {
    pub block: u64,
    pub defect: Defect,
}

/// The write each block holds (`None`: zeroes), plus the damaged blocks.
#[derive(Debug, Clone)]
pub struct Scan {
    pub contents: Vec<Option<WriteRecord>>,
    /// The first [`REPORTED`] damaged blocks, in block order.
    pub defects: Vec<BlockDefect>,
    pub defect_count: u64,
}

/// The logged write `bytes` (the content of `block`) holds, `None` for zeroes.
pub fn classify(bytes: &[u8], block: u64, log: &Log) -> Result<Option<WriteRecord>, Defect> {
    if bytes.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let claimed = Stamp::parse_header(bytes).ok_or(Defect::Garbage)?;
    let number = claimed.number;
    let (Some(record), Some(run)) = (log.get(number), log.run_of(number)) else {
        return Err(Defect::NotLogged { number });
    };
    if record.block != block {
        return Err(Defect::WrongBlock {
            number,
            target: record.block,
        });
    }
    let expected = Stamp {
        number,
        block,
        seed: run.seed,
    };
    match expected.first_difference(bytes) {
        None => Ok(Some(*record)),
        Some(offset) => Err(Defect::Mismatch { number, offset }),
    }
}

/// Reads `geometry.blocks()` blocks from the start of `image` and classifies each.
/// Reads go to an aligned buffer in whole blocks, so an O_DIRECT file works.
pub fn scan_image(image: &mut impl Read, log: &Log, geometry: Geometry) -> io::Result<Scan> {
    let block_size = geometry.block_size();
    let chunk_blocks = (CHUNK_BYTES / block_size).max(1) as u64;
    let mut buffer = AlignedBuf::zeroed(chunk_blocks as usize * block_size);
    let mut scan = Scan {
        contents: Vec::with_capacity(geometry.blocks() as usize),
        defects: Vec::new(),
        defect_count: 0,
    };
    let mut block = 0;
    while block < geometry.blocks() {
        let count = chunk_blocks.min(geometry.blocks() - block);
        let bytes = &mut buffer.as_mut_slice()[..count as usize * block_size];
        image.read_exact(bytes).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                e.kind(),
                format!(
                    "image ends within blocks {block}..{}; {} blocks of {block_size} bytes expected",
                    block + count,
                    geometry.blocks()
                ),
            ),
            _ => e,
        })?;
        for content in bytes.chunks_exact(block_size) {
            match classify(content, block, log) {
                Ok(write) => scan.contents.push(write),
                Err(defect) => {
                    scan.contents.push(None);
                    scan.defect_count += 1;
                    if scan.defects.len() < REPORTED {
                        scan.defects.push(BlockDefect { block, defect });
                    }
                }
            }
            block += 1;
        }
    }
    Ok(scan)
}
