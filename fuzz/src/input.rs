//! What a fuzz input is: a control byte, a chunk plan, then the bytes a sender sends.
//!
//! Header and payload checksums stand between mutated bytes and everything behind the
//! decoder's first checks. With [`REPAIR`] set, the stream's checksums are recomputed
//! before decoding, so mutations of the other fields reach the sequencer and the
//! handshake; without it, the checksum checks themselves are fuzzed.

use arepl_core::crc32c::crc32c;
use arepl_core::wire::{payload_checksum, Header, HEADER_LEN};

/// Control bit: recompute the stream's checksums before decoding.
pub const REPAIR: u8 = 1;
/// Chunk sizes in the plan, used in turn.
const CHUNK_PLAN_LEN: usize = 4;
/// Bytes before the stream.
pub const PREFIX_LEN: usize = 1 + CHUNK_PLAN_LEN;

/// A decoded fuzz input.
#[derive(Debug, Clone)]
pub struct Input {
    /// Whether the stream's checksums were recomputed.
    pub repair: bool,
    /// Sizes of the socket reads, in turn; 0 reads all the buffer has room for.
    pub chunks: [u8; CHUNK_PLAN_LEN],
    /// The bytes the sender sent, repaired if asked.
    pub stream: Vec<u8>,
}

impl Input {
    /// The input `data` encodes; `None` if it is shorter than the prefix.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (prefix, stream) = data.split_first_chunk::<PREFIX_LEN>()?;
        let repair = prefix[0] & REPAIR != 0;
        let mut stream = stream.to_vec();
        if repair {
            repair_checksums(&mut stream);
        }
        Some(Self {
            repair,
            chunks: prefix[1..].try_into().expect("sliced to the plan"),
            stream,
        })
    }

    /// The bytes that parse as this input.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![if self.repair { REPAIR } else { 0 }];
        out.extend_from_slice(&self.chunks);
        out.extend_from_slice(&self.stream);
        out
    }

    /// Read sizes in turn, forever; `usize::MAX` for a read of all there is room for.
    pub fn chunk_sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.chunks.iter().cycle().map(|&size| match size {
            0 => usize::MAX,
            size => usize::from(size),
        })
    }
}

/// Recomputes the payload checksum and header CRC of each frame in `stream`, up to the
/// first header that is invalid for another reason or whose payload is cut short.
fn repair_checksums(stream: &mut [u8]) {
    let mut at = 0;
    while stream.len() >= at + HEADER_LEN {
        seal(&mut stream[at..at + HEADER_LEN]);
        let Ok(header) = Header::decode(stream[at..at + HEADER_LEN].try_into().expect("sliced"))
        else {
            return;
        };
        let payload_at = at + HEADER_LEN;
        let next = payload_at + header.payload_len() as usize;
        let Some(payload) = stream.get(payload_at..next) else {
            return;
        };
        if !header.is_unchecked() {
            let checksum = payload_checksum(payload);
            stream[at + 28..at + 32].copy_from_slice(&checksum.to_be_bytes());
            seal(&mut stream[at..at + HEADER_LEN]);
        }
        at = next;
    }
}

/// Sets a header's CRC-32C (bytes 36..40) to that of its other bytes.
fn seal(header: &mut [u8]) {
    let crc = crc32c(&header[..36]);
    header[36..40].copy_from_slice(&crc.to_be_bytes());
}
