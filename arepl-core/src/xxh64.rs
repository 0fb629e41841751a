//! XXH64 (seed 0), the hash an online verify compares chunks by: 64 bits, so two
//! different chunks pass for equal with odds of 2^-64, and fast enough to hash the
//! whole volume on both sides (four independent 64-bit lanes per 32-byte stripe).

const PRIME_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME_4: u64 = 0x85EB_CA77_C2B2_AE63;
const PRIME_5: u64 = 0x27D4_EB2F_1656_67C5;

// The kernel build inlines only what it is told to: called per word, these cost the
// module 13 s of CPU per GiB hashed under the VM's emulation.
#[inline(always)]
fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(PRIME_2))
        .rotate_left(31)
        .wrapping_mul(PRIME_1)
}

fn merge(acc: u64, lane_acc: u64) -> u64 {
    (acc ^ round(0, lane_acc))
        .wrapping_mul(PRIME_1)
        .wrapping_add(PRIME_4)
}

#[inline(always)]
fn le64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

fn le32(bytes: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// XXH64 (seed 0) of data given in pieces: a payload held in separate pages hashes
/// as if it were one buffer.
#[derive(Debug, Clone)]
pub struct Xxh64 {
    lanes: [u64; 4],
    /// Bytes of an unfinished 32-byte stripe.
    stripe: [u8; 32],
    buffered: usize,
    total: u64,
}

impl Default for Xxh64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Xxh64 {
    /// A hasher that has seen nothing yet.
    pub const fn new() -> Self {
        Self {
            lanes: [
                PRIME_1.wrapping_add(PRIME_2),
                PRIME_2,
                0,
                0u64.wrapping_sub(PRIME_1),
            ],
            stripe: [0; 32],
            buffered: 0,
            total: 0,
        }
    }

    /// Hashes `data` after what came before.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.buffered > 0 {
            let take = (32 - self.buffered).min(data.len());
            self.stripe[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < 32 {
                return;
            }
            let stripe = self.stripe;
            self.consume(&stripe);
            self.buffered = 0;
        }
        let mut stripes = data.chunks_exact(32);
        // Four lanes in registers, one word each per stripe.
        let [mut lane0, mut lane1, mut lane2, mut lane3] = self.lanes;
        for stripe in stripes.by_ref() {
            lane0 = round(lane0, le64(&stripe[..8]));
            lane1 = round(lane1, le64(&stripe[8..16]));
            lane2 = round(lane2, le64(&stripe[16..24]));
            lane3 = round(lane3, le64(&stripe[24..]));
        }
        self.lanes = [lane0, lane1, lane2, lane3];
        let rest = stripes.remainder();
        self.stripe[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    fn consume(&mut self, stripe: &[u8; 32]) {
        let [lane0, lane1, lane2, lane3] = &mut self.lanes;
        *lane0 = round(*lane0, le64(&stripe[..8]));
        *lane1 = round(*lane1, le64(&stripe[8..16]));
        *lane2 = round(*lane2, le64(&stripe[16..24]));
        *lane3 = round(*lane3, le64(&stripe[24..]));
    }

    /// Bytes given so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The hash of everything given so far.
    pub fn finish(&self) -> u64 {
        let mut hash = if self.total >= 32 {
            let lanes = self.lanes;
            let mut hash = lanes[0]
                .rotate_left(1)
                .wrapping_add(lanes[1].rotate_left(7))
                .wrapping_add(lanes[2].rotate_left(12))
                .wrapping_add(lanes[3].rotate_left(18));
            for lane in lanes {
                hash = merge(hash, lane);
            }
            hash
        } else {
            PRIME_5
        };
        hash = hash.wrapping_add(self.total);
        let mut tail = &self.stripe[..self.buffered];
        while tail.len() >= 8 {
            hash = (hash ^ round(0, le64(tail)))
                .rotate_left(27)
                .wrapping_mul(PRIME_1)
                .wrapping_add(PRIME_4);
            tail = &tail[8..];
        }
        if tail.len() >= 4 {
            hash = (hash ^ le32(tail).wrapping_mul(PRIME_1))
                .rotate_left(23)
                .wrapping_mul(PRIME_2)
                .wrapping_add(PRIME_3);
            tail = &tail[4..];
        }
        for &byte in tail {
            hash = (hash ^ u64::from(byte).wrapping_mul(PRIME_5))
                .rotate_left(11)
                .wrapping_mul(PRIME_1);
        }
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(PRIME_2);
        hash ^= hash >> 29;
        hash = hash.wrapping_mul(PRIME_3);
        hash ^ (hash >> 32)
    }
}

/// XXH64 of `data` with seed 0.
pub fn xxh64(data: &[u8]) -> u64 {
    let mut hasher = Xxh64::new();
    hasher.update(data);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // From the XXH64 reference (xxhsum).
        assert_eq!(xxh64(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc"), 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn long_inputs_match_zstd_frame_checksums() {
        // A zstd frame's content checksum is the low 32 bits of XXH64 (seed 0): these
        // were read from `zstd --check` output for the same bytes (stripes, 8-, 4- and
        // 1-byte tails all taken).
        let data: [u8; 77] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        assert_eq!(xxh64(&data) as u32, ZSTD_CHECKSUM_77);
        let zeroes = [0u8; 4096];
        assert_eq!(xxh64(&zeroes) as u32, ZSTD_CHECKSUM_ZEROES_4096);
    }

    #[test]
    fn pieces_hash_as_one_buffer() {
        let data: [u8; 300] = core::array::from_fn(|i| (i * 13 + 5) as u8);
        let whole = xxh64(&data);
        for first in 0..data.len() {
            for second in [first, (first + 31).min(data.len()), data.len()] {
                let mut hasher = Xxh64::new();
                hasher.update(&data[..first]);
                hasher.update(&data[first..second]);
                hasher.update(&data[second..]);
                assert_eq!(hasher.finish(), whole, "split at {first} and {second}");
            }
        }
    }

    const ZSTD_CHECKSUM_77: u32 = 0x2473_C094;
    const ZSTD_CHECKSUM_ZEROES_4096: u32 = 0x32D8_BBDB;
}
