//! Seed inputs, built with `arepl-core`'s encoders: small valid sessions and handshakes,
//! their boundary cases, and a few that break one rule each.

use arepl_core::digest::Digest;
use arepl_core::history::{History, HistoryBlock, CONSISTENT, RESYNCING};
use arepl_core::table::VolumeName;
use arepl_core::verify::ChunkCheck;
use arepl_core::wire::{Header, HelloPayload, MAX_WRITE_PAYLOAD};

use crate::hello::{RECORDED_NAME, RECORDED_SEQ, TARGET_LEN};
use crate::input::Input;
use crate::session::{VOLUME_SIZE, WELCOMED_SEQ};

/// One seed input.
#[derive(Debug)]
pub struct Seed {
    /// Its file name in the corpus.
    pub name: &'static str,
    /// The input bytes.
    pub data: Vec<u8>,
    /// Whether it is a complete valid session (`frames`) or an admitted `Hello`
    /// (`handshake`); others break a rule on purpose.
    pub valid: bool,
}

/// Reads of the whole stream at once, of single bytes, and of uneven sizes.
const WHOLE: [u8; 4] = [0; 4];
const BYTEWISE: [u8; 4] = [1; 4];
const UNEVEN: [u8; 4] = [39, 3, 200, 0];

fn seed(name: &'static str, valid: bool, chunks: [u8; 4], frames: &[Vec<u8>]) -> Seed {
    let input = Input {
        // Mutants keep valid checksums; one bit of the control byte turns that off.
        repair: true,
        chunks,
        stream: frames.concat(),
    };
    Seed {
        name,
        data: input.to_bytes(),
        valid,
    }
}

fn frame(header: Header, payload: &[u8]) -> Vec<u8> {
    [&header.encode()[..], payload].concat()
}

fn bare(header: Header) -> Vec<u8> {
    frame(header, &[])
}

fn block(flags: u32) -> [u8; 32] {
    HistoryBlock {
        history: Some(History::new(*b"fuzz-seed-histor")),
        flags,
    }
    .encode()
}

fn begin(seq: u64, resync_bytes: Option<u64>) -> Vec<u8> {
    frame(Header::begin(seq, resync_bytes, &block(0)), &block(0))
}

fn write(seq: u64, offset: u64, len: usize, fua: bool) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + seq as usize) as u8).collect();
    frame(Header::write(seq, offset, &data, fua), &data)
}

fn verify(seq: u64, offset: u64, len: u32) -> Vec<u8> {
    let check = ChunkCheck { hash: 0x5eed, len }.encode();
    frame(Header::verify(seq, offset, &check), &check)
}

/// Seeds of the `frames` target: sessions welcomed at [`WELCOMED_SEQ`].
pub fn frames() -> Vec<Seed> {
    let w = WELCOMED_SEQ;
    let end = VOLUME_SIZE;
    let digest = |seq| bare(Header::digest(seq, Some(Digest(0x0123_4567_89ab_cdef))));
    vec![
        seed("begin", true, WHOLE, &[begin(w, None)]),
        seed(
            "write-sector",
            true,
            WHOLE,
            &[begin(w, None), write(1, 0, 512, false)],
        ),
        seed(
            "write-page-fua",
            true,
            UNEVEN,
            &[begin(w, None), write(1, 4096, 4096, true)],
        ),
        seed(
            "write-8k-in-pieces",
            true,
            [40, 100, 0, 7],
            &[begin(w, None), write(1, 8192, 8192, false)],
        ),
        seed(
            "write-last-sector",
            true,
            WHOLE,
            &[begin(w, None), write(1, end - 512, 512, false)],
        ),
        seed(
            "write-past-end",
            false,
            WHOLE,
            &[begin(w, None), write(1, end, 512, false)],
        ),
        // An entry at the last sequence number once overflowed the sequencer.
        seed(
            "entry-at-last-sequence",
            false,
            WHOLE,
            &[
                begin(u64::MAX - 1, Some(4096)),
                bare(Header::write_zeroes(u64::MAX, 0, 512)),
            ],
        ),
        seed(
            "write-unchecked",
            true,
            UNEVEN,
            &[
                begin(w, None),
                frame(Header::write_unchecked(1, 512, 1024, false), &[3; 1024]),
            ],
        ),
        seed(
            "flush",
            true,
            BYTEWISE,
            &[
                begin(w, None),
                write(1, 0, 512, false),
                bare(Header::flush(2)),
            ],
        ),
        seed(
            "discard",
            true,
            WHOLE,
            &[begin(w, None), bare(Header::discard(1, 4096, 65536))],
        ),
        seed(
            "discard-whole-volume",
            true,
            WHOLE,
            &[begin(w, None), bare(Header::discard(1, 0, end as u32))],
        ),
        seed(
            "write-zeroes-to-end",
            true,
            UNEVEN,
            &[
                begin(w, None),
                bare(Header::write_zeroes(1, end - 1024, 1024)),
            ],
        ),
        seed(
            "write-zeroes-past-end",
            false,
            WHOLE,
            &[
                begin(w, None),
                bare(Header::write_zeroes(1, end - 512, 1024)),
            ],
        ),
        seed(
            "ping",
            true,
            WHOLE,
            &[bare(Header::ping()), begin(w, None), bare(Header::ping())],
        ),
        seed(
            "digest",
            true,
            WHOLE,
            &[
                digest(w),
                begin(w, None),
                write(1, 0, 1024, false),
                digest(1),
            ],
        ),
        seed(
            "digest-unknown",
            true,
            BYTEWISE,
            &[bare(Header::digest(w, None)), begin(w, None)],
        ),
        seed(
            "verify",
            true,
            WHOLE,
            &[
                begin(w, None),
                verify(1, 0, 65536),
                verify(2, end - 512, 512),
            ],
        ),
        seed(
            "verify-past-end",
            false,
            UNEVEN,
            &[begin(w, None), verify(1, end - 512, 1024)],
        ),
        seed(
            "resync",
            true,
            UNEVEN,
            &[
                begin(w + 4, Some(end)),
                write(w + 5, 0, 512, false),
                bare(Header::write_zeroes(w + 6, 512, 4096)),
                bare(Header::resync_done(w + 6)),
            ],
        ),
        seed(
            "resync-done-continued",
            true,
            WHOLE,
            &[begin(w, None), bare(Header::resync_done(w))],
        ),
        seed(
            "duplicate",
            true,
            WHOLE,
            &[
                begin(w, None),
                write(1, 0, 512, false),
                write(1, 0, 512, false),
            ],
        ),
        seed(
            "sequence-gap",
            false,
            WHOLE,
            &[begin(w, None), write(2, 0, 512, false)],
        ),
        seed(
            "entry-before-begin",
            false,
            WHOLE,
            &[write(1, 0, 512, false)],
        ),
        seed("second-hello", false, WHOLE, &[hello(0, end, "vol0", 0)]),
        seed("receiver-frame", false, WHOLE, &[bare(Header::ack(1))]),
        seed(
            "max-write-header-only",
            false,
            WHOLE,
            &[
                begin(w, None),
                bare(Header::write_with_checksum(
                    1,
                    0,
                    MAX_WRITE_PAYLOAD,
                    1,
                    true,
                )),
            ],
        ),
        seed(
            "range-overflow",
            false,
            WHOLE,
            &[
                begin(w, None),
                bare(Header::discard(1, u64::MAX - 511, 512)),
            ],
        ),
        seed(
            "mixture",
            true,
            UNEVEN,
            &[
                bare(Header::digest(w, None)),
                begin(w, None),
                write(1, 0, 4096, true),
                bare(Header::flush(2)),
                bare(Header::ping()),
                bare(Header::discard(3, 8192, 4096)),
                verify(4, 0, 8192),
                write(5, end - 2048, 2048, false),
                digest(5),
                bare(Header::write_zeroes(6, 0, 512)),
                bare(Header::flush(7)),
            ],
        ),
        seed(
            "mixture-bytewise",
            true,
            BYTEWISE,
            &[
                begin(w, None),
                write(1, 512, 1536, false),
                bare(Header::write_zeroes(2, 0, 512)),
                bare(Header::ping()),
                digest(2),
                bare(Header::flush(3)),
            ],
        ),
        seed(
            "truncated",
            false,
            UNEVEN,
            &[begin(w, None), write(1, 0, 1024, false)[..100].to_vec()],
        ),
    ]
}

fn hello(oldest_seq: u64, size: u64, name: &str, flags: u32) -> Vec<u8> {
    let name = VolumeName::new(name).expect("seed names are valid");
    let payload = HelloPayload::new(
        &HistoryBlock::decode(&block(flags)).expect("a valid block"),
        &name,
    );
    frame(
        Header::hello(oldest_seq, size, payload.as_bytes()),
        payload.as_bytes(),
    )
}

/// A `Hello` whose payload is `block` and `name` as they are, valid or not.
fn raw_hello(block: &[u8], name: &[u8]) -> Vec<u8> {
    let payload = [block, name].concat();
    frame(Header::hello(0, TARGET_LEN, &payload), &payload)
}

/// Seeds of the `handshake` target.
pub fn handshake() -> Vec<Seed> {
    let size = TARGET_LEN;
    let longest = "v".repeat(arepl_core::table::MAX_VOLUME_LEN);
    let mut unknown_flag = block(0);
    unknown_flag[27] |= 0x80;
    let no_history = HistoryBlock::default().encode();
    vec![
        seed("hello", true, WHOLE, &[hello(0, size, RECORDED_NAME, 0)]),
        seed(
            "hello-consistent",
            true,
            UNEVEN,
            &[hello(RECORDED_SEQ, size, RECORDED_NAME, CONSISTENT)],
        ),
        seed(
            "hello-resyncing",
            true,
            BYTEWISE,
            &[hello(RECORDED_SEQ + 1, size, "db-1", RESYNCING)],
        ),
        seed(
            "hello-gap",
            false,
            WHOLE,
            &[hello(RECORDED_SEQ + 2, size, RECORDED_NAME, 0)],
        ),
        seed(
            "hello-no-history",
            true,
            WHOLE,
            &[raw_hello(&no_history, b"vol0")],
        ),
        seed(
            "hello-longest-name",
            true,
            UNEVEN,
            &[hello(0, 512, &longest, 0)],
        ),
        seed(
            "hello-odd-size",
            true,
            WHOLE,
            &[hello(0, 1000, "a.b_c-d", 0)],
        ),
        seed(
            "hello-size-zero",
            false,
            WHOLE,
            &[hello(0, 0, RECORDED_NAME, 0)],
        ),
        seed(
            "hello-too-big",
            false,
            WHOLE,
            &[hello(0, size + 512, RECORDED_NAME, 0)],
        ),
        seed(
            "hello-bad-name",
            false,
            WHOLE,
            &[raw_hello(&block(0), b"a b")],
        ),
        seed(
            "hello-not-utf8",
            false,
            BYTEWISE,
            &[raw_hello(&block(0), &[0xc3, 0x28, b'x'])],
        ),
        seed(
            "hello-bad-block",
            false,
            WHOLE,
            &[raw_hello(&unknown_flag, b"vol0")],
        ),
        seed(
            "not-hello",
            false,
            WHOLE,
            &[bare(Header::flush(1)), write(1, 0, 512, false)],
        ),
        seed(
            "two-hellos",
            true,
            UNEVEN,
            &[
                hello(0, size, "first", 0),
                hello(3, size, "second", CONSISTENT),
            ],
        ),
    ]
}

/// A libFuzzer dictionary: the boundary values of offsets, lengths and sequences,
/// big-endian as on the wire. Mutations rarely reach such values by comparison tracing,
/// whose table files the sector multiples a frame is full of into one slot.
pub fn dictionary() -> String {
    let mut out = String::new();
    let mut add = |name: &str, bytes: &[u8]| {
        let escaped: String = bytes.iter().map(|b| format!("\\x{b:02x}")).collect();
        out.push_str(&format!("{name}=\"{escaped}\"\n"));
    };
    for len in [
        512,
        1024,
        4096,
        8192,
        65536,
        MAX_WRITE_PAYLOAD,
        u32::MAX - 511,
    ] {
        add(&format!("len_{len}"), &len.to_be_bytes());
    }
    let volume = [VOLUME_SIZE - 512, VOLUME_SIZE, VOLUME_SIZE + 512];
    for value in volume
        .into_iter()
        .chain([u64::MAX - 511, u64::MAX - 1, u64::MAX])
    {
        add(&format!("u64_{value}"), &value.to_be_bytes());
    }
    out
}
