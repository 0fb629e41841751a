//! The replication wire protocol, version 6: one definition for the kernel sender and
//! `replicad`.
//!
//! Every frame is a 40-byte header, big-endian, optionally followed by a payload:
//!
//! | bytes | field | meaning |
//! | --- | --- | --- |
//! | 0..4 | magic | [`MAGIC`], "ARPL" |
//! | 4 | version | [`VERSION`] |
//! | 5 | kind | [`FrameKind`] |
//! | 6..8 | flags | [`FLAG_FUA`] and [`FLAG_UNCHECKED`] on writes, [`FLAG_DIVERGED`] on acks, [`FLAG_DIGEST_UNKNOWN`] on digests, [`FLAG_RESYNC`] on `Begin`, else 0 |
//! | 8..16 | seq | sequence number (meaning depends on kind) |
//! | 16..24 | offset | byte offset on the volume, the volume size in handshakes, the digest in `Digest` |
//! | 24..28 | length | payload bytes, or the range length of discard/write-zeroes |
//! | 28..32 | payload_checksum | [`payload_checksum`] of the payload, 0 without one (or [`FLAG_UNCHECKED`]) |
//! | 32..36 | reserved | zero |
//! | 36..40 | header_crc | CRC-32C of bytes 0..36 |
//!
//! A session: the sender sends `Hello` (seq: oldest sequence it still holds, 0 if it
//! never completed a handshake; offset: volume size; payload: the history it continues
//! as a [`HistoryBlock`], then the volume name). The receiver answers `Welcome` (seq: its
//! last durable sequence; offset: volume size; payload: the replica's history block,
//! with [`crate::history::CONSISTENT`] and [`crate::history::RESYNCING`]) or `Refuse`
//! (payload: reason) and closes. The sender decides ([`crate::history::decide`]):
//! continue, resync, or close the connection. The sender then streams `Write`, `Flush`, `Discard` and
//! `WriteZeroes` frames with consecutive sequence numbers starting right after the
//! receiver's durable sequence; the receiver answers `Ack` frames carrying its highest
//! durable sequence, cumulatively. The sender may send `Ping` at any time after the
//! handshake; the receiver answers each with an `Ack` of its current durable sequence
//! at once, so a silent path is noticed even when no data flows.
//!
//! Digests ([`crate::digest`], new in version 2): right after its `Welcome` the receiver
//! sends `Digest` (seq: its durable sequence; offset: its digest through it, or
//! [`FLAG_DIGEST_UNKNOWN`]). The sender compares it with its own digest there (or adopts
//! it, when it has none) and opens the stream with its own `Digest` for that sequence;
//! then, every so often, it sends `Digest` for the entry it just sent. The receiver
//! compares each with the digest of what it applied through that sequence. A receiver
//! that found a mismatch (now or before, until a resync) sets [`FLAG_DIVERGED`] on every
//! `Ack`, with the first sequence that may differ in `offset`.
//!
//! Histories (new in version 3): right after its opening `Digest` the sender sends
//! `Begin` (seq: the receiver's durable sequence; payload: the history block the stream
//! runs under). Without [`FLAG_RESYNC`] the stream continues the replica's history (or
//! starts one on a replica without). With it, a resync begins (offset: the bytes it
//! copies): from there on entries are no longer a write-order stream, so the receiver
//! protects its last consistent image first, records the new history as inconsistent,
//! and applies them. Once the last entry of the resync has been sent, the sender sends
//! `ResyncDone` (seq: that entry's sequence); the replica is consistent again once it is
//! durable through it.
//!
//! Verify (new in version 4, see [`crate::verify`]): `Verify` is an entry of the
//! stream like a write (seq, offset: the chunk's offset; payload: the chunk's hash and
//! length). The receiver hashes its own chunk once it has applied everything before
//! `seq` and, if they differ, sends `Mismatch` (seq, offset and length of that chunk)
//! before the `Ack` that covers it.
//!
//! Payload checksums (new in version 5): the low 32 bits of the payload's XXH64, no
//! longer its CRC-32C. Either finds a corrupted payload but for one in 2^32; XXH64 costs
//! the CPU a few multiplies per 8 bytes where CRC-32C costs eight table lookups (or,
//! under QEMU's emulation, a bit-by-bit loop for the CRC instruction): the VM
//! benchmark measured 0.61 s per GiB against 1.93 (tables) and 7.04 (instruction).
//! The header keeps its CRC-32C.
//!
//! Authentication (new in version 6, see [`crate::auth`]): a sender configured with a
//! key opens with `Greeting` (offset: volume size; flags: [`FLAG_ENCRYPT`] when the
//! stream is to be encrypted; payload: key id, nonce, volume name) instead of `Hello`.
//! The receiver answers `Challenge` (payload: its nonce and proof) or `Refuse`; the
//! sender checks the proof and answers `Proof` (payload: its proof), then sends `Hello`
//! and the session goes on as above. A receiver that finds the sender's proof wrong
//! closes the connection without a word. With [`FLAG_ENCRYPT`], every byte after `Proof`
//! in both directions is TLS 1.3 records (AES-128-GCM) under the session's keys.
use crate::auth;
use crate::crc32c::crc32c;
use crate::digest::{Digest, EntryFields};
use crate::history::{HistoryBlock, HISTORY_BLOCK_LEN};
use crate::xxh64::Xxh64;
use core::fmt;

/// First four header bytes: "ARPL".
pub const MAGIC: u32 = 0x4152_504C;
/// Protocol version this code speaks.
pub const VERSION: u8 = 6;
/// Size of every frame header.
pub const HEADER_LEN: usize = 40;
/// Writes are whole 512-byte sectors at sector-aligned offsets.
pub const SECTOR_SIZE: u32 = 512;
/// Largest write payload one frame may carry.
pub const MAX_WRITE_PAYLOAD: u32 = 8 << 20;
/// Largest `Refuse` reason text.
pub const MAX_REASON_LEN: u32 = 256;
/// Largest volume name in a `Hello`.
pub const MAX_VOLUME_NAME_LEN: u32 = crate::table::MAX_VOLUME_LEN as u32;
/// Bytes of a `Greeting` payload before the volume name.
const GREETING_FIXED_LEN: u32 = auth::GREETING_FIXED_LEN as u32;
/// Bytes of the history block that opens `Hello`, `Welcome` and `Resync` payloads.
pub const HISTORY_LEN: u32 = HISTORY_BLOCK_LEN as u32;
/// The write must be durable before its acknowledgement (REQ_FUA).
pub const FLAG_FUA: u16 = 1;
/// On `Ack`: the receiver's replica is known to differ from the sender's stream.
pub const FLAG_DIVERGED: u16 = 2;
/// On `Digest`: the side sending it does not know its digest at that sequence.
pub const FLAG_DIGEST_UNKNOWN: u16 = 4;
/// On `Begin`: a resync begins; the replica is inconsistent until it is done.
pub const FLAG_RESYNC: u16 = 8;
/// On `Write`: the sender computed no payload checksum (table feature `wire_crc:off`),
/// so `payload_checksum` is 0 and only TCP's checksum covers the payload on the wire.
pub const FLAG_UNCHECKED: u16 = 16;
/// On `Greeting`: after `Proof`, both directions are encrypted.
pub const FLAG_ENCRYPT: u16 = 32;

/// The checksum of a frame's payload: the low 32 bits of its XXH64 (seed 0), and 0 for
/// no payload, as frames without one state.
pub fn payload_checksum(payload: &[u8]) -> u32 {
    payload_checksum_pieces([payload])
}

/// [`payload_checksum`] of a payload held in pieces (pages), taken in order.
pub fn payload_checksum_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut hasher = Xxh64::new();
    for piece in pieces {
        hasher.update(piece);
    }
    match hasher.total() {
        0 => 0,
        _ => hasher.finish() as u32,
    }
}

/// The payload of a `Hello`: the sender's history block, then the volume name.
#[derive(Debug, Clone, Copy)]
pub struct HelloPayload {
    bytes: [u8; HISTORY_BLOCK_LEN + crate::table::MAX_VOLUME_LEN],
    len: usize,
}

impl HelloPayload {
    /// The payload for `history` and a volume `name` (a valid volume name, so at most
    /// [`MAX_VOLUME_NAME_LEN`] bytes).
    pub fn new(history: &HistoryBlock, name: &crate::table::VolumeName) -> Self {
        let name = name.as_str().as_bytes();
        let mut bytes = [0u8; HISTORY_BLOCK_LEN + crate::table::MAX_VOLUME_LEN];
        bytes[..HISTORY_BLOCK_LEN].copy_from_slice(&history.encode());
        bytes[HISTORY_BLOCK_LEN..HISTORY_BLOCK_LEN + name.len()].copy_from_slice(name);
        Self {
            bytes,
            len: HISTORY_BLOCK_LEN + name.len(),
        }
    }

    /// The encoded payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Splits a received `Hello` payload into its history block and volume name bytes;
    /// `None` if the history block is malformed.
    pub fn split(payload: &[u8]) -> Option<(HistoryBlock, &[u8])> {
        if payload.len() < HISTORY_BLOCK_LEN {
            return None;
        }
        let (history, name) = payload.split_at(HISTORY_BLOCK_LEN);
        Some((HistoryBlock::decode(history)?, name))
    }
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Sender opens a session.
    Hello = 1,
    /// Receiver accepts a session.
    Welcome = 2,
    /// Data to write at `offset`.
    Write = 3,
    /// Everything before this sequence must be durable before it is acknowledged.
    Flush = 4,
    /// Discard `length` bytes at `offset`.
    Discard = 5,
    /// Write zeroes over `length` bytes at `offset`.
    WriteZeroes = 6,
    /// Receiver: everything up to `seq` is durable.
    Ack = 7,
    /// Receiver: the session is refused; the payload says why.
    Refuse = 8,
    /// Sender: liveness probe; answered by an `Ack`.
    Ping = 9,
    /// Either side: the replication digest through `seq` is `offset`.
    Digest = 10,
    /// Sender: the stream after `seq` runs under the history in the payload; with
    /// [`FLAG_RESYNC`], a resync begins there.
    Begin = 11,
    /// Sender: the resync's last entry is `seq`.
    ResyncDone = 12,
    /// Sender: the chunk at `offset` should hash as the payload says (an entry).
    Verify = 13,
    /// Receiver: the chunk of `Verify` `seq` (`length` bytes at `offset`) differs.
    Mismatch = 14,
    /// Sender with a key: opens a session, before `Hello`.
    Greeting = 15,
    /// Receiver: its nonce and proof of the key, answering `Greeting`.
    Challenge = 16,
    /// Sender: its proof of the key, answering `Challenge`.
    Proof = 17,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::Welcome,
            3 => Self::Write,
            4 => Self::Flush,
            5 => Self::Discard,
            6 => Self::WriteZeroes,
            7 => Self::Ack,
            8 => Self::Refuse,
            9 => Self::Ping,
            10 => Self::Digest,
            11 => Self::Begin,
            12 => Self::ResyncDone,
            13 => Self::Verify,
            14 => Self::Mismatch,
            15 => Self::Greeting,
            16 => Self::Challenge,
            17 => Self::Proof,
            _ => return None,
        })
    }

    /// Whether frames of this kind name a byte range of the volume (`length` bytes at
    /// `offset`).
    pub fn has_range(self) -> bool {
        matches!(
            self,
            Self::Write | Self::Discard | Self::WriteZeroes | Self::Mismatch
        )
    }

    /// Whether frames of this kind carry a payload of `length` bytes.
    pub fn has_payload(self) -> bool {
        matches!(
            self,
            Self::Hello
                | Self::Welcome
                | Self::Write
                | Self::Refuse
                | Self::Begin
                | Self::Verify
                | Self::Greeting
                | Self::Challenge
                | Self::Proof
        )
    }
}

/// A decoded, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame is.
    pub kind: FrameKind,
    /// [`FLAG_FUA`] or 0.
    pub flags: u16,
    /// Sequence number.
    pub seq: u64,
    /// Byte offset, or the volume size in `Hello`/`Welcome`.
    pub offset: u64,
    /// Payload length, or the range length of `Discard`/`WriteZeroes`.
    pub length: u32,
    /// [`payload_checksum`] of the payload.
    pub payload_checksum: u32,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The first four bytes are not [`MAGIC`].
    BadMagic(u32),
    /// A protocol version this code does not speak.
    BadVersion(u8),
    /// The header checksum does not match.
    BadHeaderCrc {
        /// Checksum in the header.
        stated: u32,
        /// Checksum of the bytes received.
        computed: u32,
    },
    /// An unknown frame kind.
    UnknownKind(u8),
    /// Flags not allowed on this kind.
    BadFlags(u16),
    /// The reserved bytes are not zero.
    BadReserved,
    /// A length not allowed for this kind.
    BadLength {
        /// The frame kind.
        kind: FrameKind,
        /// The length given.
        length: u32,
    },
    /// An offset or length that is not a whole number of sectors.
    Misaligned {
        /// The offset given.
        offset: u64,
        /// The length given.
        length: u32,
    },
    /// A range whose end lies beyond the largest byte offset.
    RangeOverflow {
        /// The offset given.
        offset: u64,
        /// The length given.
        length: u32,
    },
    /// A frame without payload with a nonzero payload checksum.
    StrayPayloadChecksum,
    /// The payload checksum does not match.
    BadPayloadChecksum {
        /// Checksum in the header.
        stated: u32,
        /// Checksum of the bytes received.
        computed: u32,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadMagic(magic) => write!(f, "bad magic {magic:#010x}"),
            Self::BadVersion(version) => {
                write!(
                    f,
                    "unsupported protocol version {version} (speaking {VERSION})"
                )
            }
            Self::BadHeaderCrc { stated, computed } => write!(
                f,
                "header crc32c mismatch: frame says {stated:#010x}, computed {computed:#010x}"
            ),
            Self::UnknownKind(kind) => write!(f, "unknown frame kind {kind}"),
            Self::BadFlags(flags) => write!(f, "flags {flags:#06x} not allowed on this frame"),
            Self::BadReserved => write!(f, "reserved header bytes are not zero"),
            Self::BadLength { kind, length } => {
                write!(f, "length {length} not allowed for a {kind:?} frame")
            }
            Self::Misaligned { offset, length } => write!(
                f,
                "offset {offset} or length {length} is not a multiple of {SECTOR_SIZE}"
            ),
            Self::RangeOverflow { offset, length } => write!(
                f,
                "range of {length} bytes at offset {offset} ends beyond 2^64"
            ),
            Self::StrayPayloadChecksum => {
                write!(f, "payload checksum set on a frame without payload or one")
            }
            Self::BadPayloadChecksum { stated, computed } => write!(
                f,
                "payload checksum mismatch: frame says {stated:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

impl Header {
    fn new(kind: FrameKind, seq: u64, offset: u64, length: u32, payload_checksum: u32) -> Self {
        Self {
            kind,
            flags: 0,
            seq,
            offset,
            length,
            payload_checksum,
        }
    }

    /// `Hello` for a volume, whose payload is `payload` (see [`HelloPayload`]);
    /// `oldest_seq` is 0 before the first completed handshake.
    pub fn hello(oldest_seq: u64, volume_size: u64, payload: &[u8]) -> Self {
        Self::new(
            FrameKind::Hello,
            oldest_seq,
            volume_size,
            payload.len() as u32,
            payload_checksum(payload),
        )
    }

    /// `Welcome`: the receiver's last durable sequence, its view of the volume size,
    /// and its history block `history` as payload.
    pub fn welcome(durable_seq: u64, volume_size: u64, history: &[u8; HISTORY_BLOCK_LEN]) -> Self {
        Self::new(
            FrameKind::Welcome,
            durable_seq,
            volume_size,
            HISTORY_LEN,
            payload_checksum(history),
        )
    }

    /// `Begin`: the stream after `durable_seq` runs under the history block `history`
    /// (the payload); `resync_bytes`: a resync copying that many bytes begins.
    pub fn begin(
        durable_seq: u64,
        resync_bytes: Option<u64>,
        history: &[u8; HISTORY_BLOCK_LEN],
    ) -> Self {
        let mut header = Self::new(
            FrameKind::Begin,
            durable_seq,
            resync_bytes.unwrap_or(0),
            HISTORY_LEN,
            payload_checksum(history),
        );
        if resync_bytes.is_some() {
            header.flags = FLAG_RESYNC;
        }
        header
    }

    /// For a `Begin`: the bytes a resync beginning there copies, if one does.
    pub fn resync_bytes(&self) -> Option<u64> {
        (self.kind == FrameKind::Begin && self.flags & FLAG_RESYNC != 0).then_some(self.offset)
    }

    /// `ResyncDone`: the resync's last entry is `last_seq`.
    pub fn resync_done(last_seq: u64) -> Self {
        Self::new(FrameKind::ResyncDone, last_seq, 0, 0, 0)
    }

    /// `Write` of `payload` at byte `offset`.
    pub fn write(seq: u64, offset: u64, payload: &[u8], fua: bool) -> Self {
        let mut header = Self::new(
            FrameKind::Write,
            seq,
            offset,
            payload.len() as u32,
            payload_checksum(payload),
        );
        if fua {
            header.flags = FLAG_FUA;
        }
        header
    }

    /// `Write` header for a payload whose checksum the caller computed.
    pub fn write_with_checksum(
        seq: u64,
        offset: u64,
        length: u32,
        payload_checksum: u32,
        fua: bool,
    ) -> Self {
        let mut header = Self::new(FrameKind::Write, seq, offset, length, payload_checksum);
        if fua {
            header.flags = FLAG_FUA;
        }
        header
    }

    /// `Write` header for a payload sent without a checksum ([`FLAG_UNCHECKED`]).
    pub fn write_unchecked(seq: u64, offset: u64, length: u32, fua: bool) -> Self {
        let mut header = Self::write_with_checksum(seq, offset, length, 0, fua);
        header.flags |= FLAG_UNCHECKED;
        header
    }

    /// Whether the payload comes without a checksum ([`FLAG_UNCHECKED`]).
    pub fn is_unchecked(&self) -> bool {
        self.flags & FLAG_UNCHECKED != 0
    }

    /// `Flush`: make everything up to and including `seq` durable.
    pub fn flush(seq: u64) -> Self {
        Self::new(FrameKind::Flush, seq, 0, 0, 0)
    }

    /// `Discard` of `length` bytes at `offset`.
    pub fn discard(seq: u64, offset: u64, length: u32) -> Self {
        Self::new(FrameKind::Discard, seq, offset, length, 0)
    }

    /// `WriteZeroes` over `length` bytes at `offset`.
    pub fn write_zeroes(seq: u64, offset: u64, length: u32) -> Self {
        Self::new(FrameKind::WriteZeroes, seq, offset, length, 0)
    }

    /// `Verify` entry `seq`: the chunk at `offset` is as `check` says.
    pub fn verify(seq: u64, offset: u64, check: &[u8; crate::verify::VERIFY_PAYLOAD_LEN]) -> Self {
        Self::new(
            FrameKind::Verify,
            seq,
            offset,
            check.len() as u32,
            payload_checksum(check),
        )
    }

    /// `Mismatch`: the chunk of `Verify` entry `seq`, `length` bytes at `offset`,
    /// differs on the replica.
    pub fn mismatch(seq: u64, offset: u64, length: u32) -> Self {
        Self::new(FrameKind::Mismatch, seq, offset, length, 0)
    }

    /// `Ack`: everything up to and including `durable_seq` is durable.
    pub fn ack(durable_seq: u64) -> Self {
        Self::new(FrameKind::Ack, durable_seq, 0, 0, 0)
    }

    /// `Ack` of a receiver whose replica is known to differ from the sender's stream
    /// from sequence `diverged_from` on.
    pub fn ack_diverged(durable_seq: u64, diverged_from: u64) -> Self {
        let mut header = Self::new(FrameKind::Ack, durable_seq, diverged_from, 0, 0);
        header.flags = FLAG_DIVERGED;
        header
    }

    /// `Ping`: the receiver answers with an `Ack`.
    pub fn ping() -> Self {
        Self::new(FrameKind::Ping, 0, 0, 0, 0)
    }

    /// `Digest`: the replication digest through `seq`, or that it is not known.
    pub fn digest(seq: u64, digest: Option<Digest>) -> Self {
        match digest {
            Some(digest) => Self::new(FrameKind::Digest, seq, digest.0, 0, 0),
            None => {
                let mut header = Self::new(FrameKind::Digest, seq, 0, 0, 0);
                header.flags = FLAG_DIGEST_UNKNOWN;
                header
            }
        }
    }

    /// The digest a `Digest` frame carries (`None`: unknown to its sender).
    pub fn carried_digest(&self) -> Option<Digest> {
        (self.flags & FLAG_DIGEST_UNKNOWN == 0).then_some(Digest(self.offset))
    }

    /// For an `Ack` with [`FLAG_DIVERGED`]: the first sequence that may differ.
    pub fn diverged_from(&self) -> Option<u64> {
        (self.kind == FrameKind::Ack && self.flags & FLAG_DIVERGED != 0).then_some(self.offset)
    }

    /// What a data frame contributes to the replication digest; `None` for other kinds.
    pub fn entry_fields(&self) -> Option<EntryFields> {
        match self.kind {
            FrameKind::Write
            | FrameKind::Flush
            | FrameKind::Discard
            | FrameKind::WriteZeroes
            | FrameKind::Verify => Some(EntryFields {
                seq: self.seq,
                kind: self.kind as u8,
                fua: self.is_fua(),
                offset: self.offset,
                length: self.length,
                payload_checksum: self.payload_checksum,
            }),
            _ => None,
        }
    }

    /// `Greeting` for a volume of `volume_size` bytes; `payload` is a
    /// [`auth::GreetingPayload`].
    pub fn greeting(volume_size: u64, encrypt: bool, payload: &[u8]) -> Self {
        let mut header = Self::new(
            FrameKind::Greeting,
            0,
            volume_size,
            payload.len() as u32,
            payload_checksum(payload),
        );
        if encrypt {
            header.flags = FLAG_ENCRYPT;
        }
        header
    }

    /// `Challenge` carrying `payload` (see [`auth::challenge_payload`]).
    pub fn challenge(payload: &[u8; auth::CHALLENGE_LEN]) -> Self {
        Self::new(
            FrameKind::Challenge,
            0,
            0,
            auth::CHALLENGE_LEN as u32,
            payload_checksum(payload),
        )
    }

    /// `Proof` carrying the sender's proof.
    pub fn proof(proof: &[u8; auth::PROOF_LEN]) -> Self {
        Self::new(
            FrameKind::Proof,
            0,
            0,
            auth::PROOF_LEN as u32,
            payload_checksum(proof),
        )
    }

    /// Whether a `Greeting` asks for an encrypted stream.
    pub fn wants_encryption(&self) -> bool {
        self.flags & FLAG_ENCRYPT != 0
    }

    /// `Refuse` with a reason text.
    pub fn refuse(reason: &[u8]) -> Self {
        Self::new(
            FrameKind::Refuse,
            0,
            0,
            reason.len() as u32,
            payload_checksum(reason),
        )
    }

    /// Whether the write must be durable before it is acknowledged.
    pub fn is_fua(&self) -> bool {
        self.flags & FLAG_FUA != 0
    }

    /// Payload bytes following this header.
    pub fn payload_len(&self) -> u32 {
        if self.kind.has_payload() {
            self.length
        } else {
            0
        }
    }

    /// End of the byte range the frame touches, for range checks against the volume;
    /// `None` for kinds without a range. A decoded header's range never overflows.
    pub fn range_end(&self) -> Option<u64> {
        if !self.kind.has_range() {
            return None;
        }
        // Decoding refuses a range that overflows; one built here saturates, so it
        // still ends past any volume.
        Some(self.offset.saturating_add(u64::from(self.length)))
    }

    /// The 40 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4] = VERSION;
        out[5] = self.kind as u8;
        out[6..8].copy_from_slice(&self.flags.to_be_bytes());
        out[8..16].copy_from_slice(&self.seq.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
        out[28..32].copy_from_slice(&self.payload_checksum.to_be_bytes());
        // 32..36 reserved, zero.
        let crc = crc32c(&out[..36]);
        out[36..40].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes and validates a header (not yet its payload; see [`Header::check_payload`]).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, WireError> {
        let be32 = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let be64 = |at: usize| (u64::from(be32(at)) << 32) | u64::from(be32(at + 4));

        let magic = be32(0);
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        if bytes[4] != VERSION {
            return Err(WireError::BadVersion(bytes[4]));
        }
        let stated = be32(36);
        let computed = crc32c(&bytes[..36]);
        if stated != computed {
            return Err(WireError::BadHeaderCrc { stated, computed });
        }
        let kind = FrameKind::from_byte(bytes[5]).ok_or(WireError::UnknownKind(bytes[5]))?;
        let header = Header {
            kind,
            flags: u16::from_be_bytes([bytes[6], bytes[7]]),
            seq: be64(8),
            offset: be64(16),
            length: be32(24),
            payload_checksum: be32(28),
        };
        if be32(32) != 0 {
            return Err(WireError::BadReserved);
        }
        header.validate()?;
        Ok(header)
    }

    fn validate(&self) -> Result<(), WireError> {
        let allowed_flags = match self.kind {
            FrameKind::Write => FLAG_FUA | FLAG_UNCHECKED,
            FrameKind::Ack => FLAG_DIVERGED,
            FrameKind::Digest => FLAG_DIGEST_UNKNOWN,
            FrameKind::Begin => FLAG_RESYNC,
            FrameKind::Greeting => FLAG_ENCRYPT,
            _ => 0,
        };
        if self.flags & !allowed_flags != 0 {
            return Err(WireError::BadFlags(self.flags));
        }
        let bad_length = Err(WireError::BadLength {
            kind: self.kind,
            length: self.length,
        });
        let length_ok = match self.kind {
            FrameKind::Hello => {
                (HISTORY_LEN + 1..=HISTORY_LEN + MAX_VOLUME_NAME_LEN).contains(&self.length)
            }
            FrameKind::Welcome | FrameKind::Begin => self.length == HISTORY_LEN,
            FrameKind::Refuse => self.length <= MAX_REASON_LEN,
            FrameKind::Write => (1..=MAX_WRITE_PAYLOAD).contains(&self.length),
            FrameKind::Discard | FrameKind::WriteZeroes | FrameKind::Mismatch => self.length > 0,
            FrameKind::Verify => self.length == crate::verify::VERIFY_PAYLOAD_LEN as u32,
            FrameKind::Greeting => (GREETING_FIXED_LEN + 1
                ..=GREETING_FIXED_LEN + MAX_VOLUME_NAME_LEN)
                .contains(&self.length),
            FrameKind::Challenge => self.length == auth::CHALLENGE_LEN as u32,
            FrameKind::Proof => self.length == auth::PROOF_LEN as u32,
            FrameKind::Flush
            | FrameKind::Ack
            | FrameKind::Ping
            | FrameKind::Digest
            | FrameKind::ResyncDone => self.length == 0,
        };
        if !length_ok {
            return bad_length;
        }
        if self.kind.has_range() {
            if self.offset % u64::from(SECTOR_SIZE) != 0 || self.length % SECTOR_SIZE != 0 {
                return Err(WireError::Misaligned {
                    offset: self.offset,
                    length: self.length,
                });
            }
            if self.offset.checked_add(u64::from(self.length)).is_none() {
                return Err(WireError::RangeOverflow {
                    offset: self.offset,
                    length: self.length,
                });
            }
        }
        if (!self.kind.has_payload() || self.is_unchecked()) && self.payload_checksum != 0 {
            return Err(WireError::StrayPayloadChecksum);
        }
        Ok(())
    }

    /// Checks the payload that followed this header against its checksum (only its
    /// length, for a payload sent unchecked).
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), WireError> {
        if self.is_unchecked() && payload.len() == self.payload_len() as usize {
            return Ok(());
        }
        let computed = payload_checksum(payload);
        if payload.len() != self.payload_len() as usize || computed != self.payload_checksum {
            return Err(WireError::BadPayloadChecksum {
                stated: self.payload_checksum,
                computed,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    const WRITE_GOLDEN: [u8; HEADER_LEN] = [
        0x41, 0x52, 0x50, 0x4C, // magic "ARPL"
        0x06, // version
        0x03, // kind: Write
        0x00, 0x01, // flags: FUA
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, // seq 258
        0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, // offset 1 MiB
        0x00, 0x00, 0x02, 0x00, // length 512
        0xD4, 0xE1, 0xE1,
        0x50, // payload checksum: low half of XXH64 of 512 x 0xAB (from the spec, in Python)
        0x00, 0x00, 0x00, 0x00, // reserved
        0x83, 0xAC, 0xFF, 0x5C, // header crc32c (computed in Python from the spec)
    ];

    #[test]
    fn golden_write_header() {
        let payload = [0xABu8; 512];
        let header = Header::write(258, 1 << 20, &payload, true);
        assert_eq!(header.encode(), WRITE_GOLDEN);
        assert_eq!(Header::decode(&WRITE_GOLDEN), Ok(header));
        assert_eq!(header.check_payload(&payload), Ok(()));
        // Frames without payload state 0, which is what no payload checks as.
        assert_eq!(payload_checksum(&[]), 0);
        assert_eq!(Header::flush(1).check_payload(&[]), Ok(()));
    }

    #[test]
    fn golden_unchecked_write_header() {
        let header = Header::write_unchecked(258, 1 << 20, 512, false);
        let bytes = header.encode();
        let mut expected = WRITE_GOLDEN;
        expected[6..8].copy_from_slice(&[0x00, 0x10]); // flags: unchecked
        expected[28..32].copy_from_slice(&[0; 4]); // no payload checksum
        expected[36..40].copy_from_slice(&[0xAE, 0x7D, 0x9B, 0xD6]); // header crc32c
        assert_eq!(bytes, expected);
        let decoded = Header::decode(&bytes).unwrap();
        assert!(decoded.is_unchecked() && !decoded.is_fua());
        assert_eq!(decoded.check_payload(&[0x5A; 512]), Ok(()));
        assert!(decoded.check_payload(&[0x5A; 511]).is_err());
        // An unchecked write claiming a checksum, or the flag on another kind: refused.
        let mut stray = header;
        stray.payload_checksum = 1;
        assert_eq!(
            Header::decode(&stray.encode()),
            Err(WireError::StrayPayloadChecksum)
        );
        let mut flush = Header::flush(1);
        flush.flags = FLAG_UNCHECKED;
        assert_eq!(
            Header::decode(&flush.encode()),
            Err(WireError::BadFlags(FLAG_UNCHECKED))
        );
    }

    #[test]
    fn golden_ack_and_hello() {
        let ack = Header::ack(0x0102_0304_0506_0708).encode();
        assert_eq!(
            &ack[..36],
            &[
                0x41, 0x52, 0x50, 0x4C, 0x06, 0x07, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
                0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(&ack[36..], &crc32c(&ack[..36]).to_be_bytes());

        let payload = hello_payload("db");
        let hello = Header::hello(0, 256 << 20, payload.as_bytes());
        let bytes = hello.encode();
        assert_eq!(bytes[5], 1);
        assert_eq!(&bytes[16..24], &(256u64 << 20).to_be_bytes());
        assert_eq!(&bytes[24..28], &34u32.to_be_bytes());
        assert_eq!(Header::decode(&bytes), Ok(hello));
        let (history, name) = HelloPayload::split(payload.as_bytes()).unwrap();
        assert_eq!((history, name), (HistoryBlock::default(), &b"db"[..]));
    }

    #[test]
    fn authentication_frames_validate_their_lengths_and_flag() {
        let name = crate::table::VolumeName::new("db").unwrap();
        let payload = auth::GreetingPayload::new(&[1; 8], &[2; 32], &name);
        let greeting = Header::greeting(1 << 30, true, payload.as_bytes());
        let decoded = Header::decode(&greeting.encode()).unwrap();
        assert!(decoded.wants_encryption());
        assert_eq!(decoded.check_payload(payload.as_bytes()), Ok(()));
        assert!(!Header::greeting(1 << 30, false, payload.as_bytes()).wants_encryption());
        // A Greeting without a volume name, or a short Challenge or Proof: refused.
        let bare = Header::greeting(1 << 30, true, &payload.as_bytes()[..40]);
        assert!(matches!(
            Header::decode(&bare.encode()),
            Err(WireError::BadLength { .. })
        ));
        let mut challenge = Header::challenge(&[0; auth::CHALLENGE_LEN]);
        challenge.length -= 1;
        assert!(matches!(
            Header::decode(&challenge.encode()),
            Err(WireError::BadLength { .. })
        ));
        let mut proof = Header::proof(&[0; auth::PROOF_LEN]);
        assert_eq!(Header::decode(&proof.encode()), Ok(proof));
        proof.flags = FLAG_ENCRYPT;
        assert_eq!(
            Header::decode(&proof.encode()),
            Err(WireError::BadFlags(FLAG_ENCRYPT))
        );
    }

    #[test]
    fn golden_digest_and_diverged_ack() {
        let digest = Header::digest(0x10, Some(Digest(0x0A0B_0C0D_0E0F_1011))).encode();
        assert_eq!(
            &digest[..36],
            &[
                0x41, 0x52, 0x50, 0x4C, 0x06, 0x0A, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x0A,
                0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        let unknown = Header::digest(0x10, None);
        assert_eq!(&unknown.encode()[6..8], &FLAG_DIGEST_UNKNOWN.to_be_bytes());
        assert_eq!(
            Header::decode(&unknown.encode()).unwrap().carried_digest(),
            None
        );
        let decoded = Header::decode(&digest).unwrap();
        assert_eq!(
            decoded.carried_digest(),
            Some(Digest(0x0A0B_0C0D_0E0F_1011))
        );
        let ack = Header::ack_diverged(9, 4);
        let bytes = ack.encode();
        assert_eq!(&bytes[6..8], &FLAG_DIVERGED.to_be_bytes());
        assert_eq!(Header::decode(&bytes).unwrap().diverged_from(), Some(4));
        assert_eq!(Header::ack(9).diverged_from(), None);
        // Each flag only where it means something.
        let mut hello = Header::hello(0, 256 << 20, hello_payload("db").as_bytes());
        hello.flags = FLAG_DIVERGED;
        assert_eq!(
            Header::decode(&hello.encode()),
            Err(WireError::BadFlags(FLAG_DIVERGED))
        );
        let mut digest = Header::digest(1, None);
        digest.flags |= FLAG_DIVERGED;
        assert!(Header::decode(&digest.encode()).is_err());
    }

    #[test]
    fn data_frames_give_their_digest_fields() {
        let fields = Header::write(8, 512, &[1; 1024], true)
            .entry_fields()
            .unwrap();
        assert_eq!((fields.seq, fields.kind, fields.fua), (8, 3, true));
        assert_eq!((fields.offset, fields.length), (512, 1024));
        assert_eq!(fields.payload_checksum, payload_checksum(&[1; 1024]));
        assert!(Header::flush(9).entry_fields().is_some());
        assert!(Header::ack(9).entry_fields().is_none());
        assert!(Header::digest(9, None).entry_fields().is_none());
        let check = crate::verify::ChunkCheck { hash: 3, len: 4096 }.encode();
        let verify = Header::verify(10, 4096, &check).entry_fields().unwrap();
        assert_eq!((verify.kind, verify.length), (13, 16));
        assert_eq!(verify.payload_checksum, payload_checksum(&check));
        assert!(Header::mismatch(10, 4096, 4096).entry_fields().is_none());
    }

    fn hello_payload(name: &str) -> HelloPayload {
        HelloPayload::new(
            &HistoryBlock::default(),
            &crate::table::VolumeName::new(name).unwrap(),
        )
    }

    #[test]
    fn hello_and_resync_carry_histories() {
        let block = HistoryBlock {
            history: Some(crate::history::History::new([9; 16])),
            flags: crate::history::CONSISTENT,
        };
        let payload = HelloPayload::new(&block, &crate::table::VolumeName::new("vol").unwrap());
        assert_eq!(
            HelloPayload::split(payload.as_bytes()),
            Some((block, &b"vol"[..]))
        );
        let mut broken = [0u8; 35];
        broken[..32].copy_from_slice(&block.encode());
        broken[31] = 1;
        assert_eq!(HelloPayload::split(&broken), None);
        // A Hello needs a name after the block; Welcome and Resync carry the block only.
        let bare = Header::hello(0, 512, &block.encode());
        assert!(matches!(
            Header::decode(&bare.encode()),
            Err(WireError::BadLength { .. })
        ));
        let resync = Header::begin(5, Some(1 << 30), &block.encode());
        assert_eq!(resync.payload_len(), HISTORY_LEN);
        assert_eq!(resync.check_payload(&block.encode()), Ok(()));
        assert_eq!(Header::decode(&resync.encode()), Ok(resync));
        assert_eq!(resync.resync_bytes(), Some(1 << 30));
        let bytes = resync.encode();
        assert_eq!(&bytes[6..8], &FLAG_RESYNC.to_be_bytes());
        assert_eq!(Header::begin(5, None, &block.encode()).resync_bytes(), None);
        assert_eq!(Header::resync_done(9).payload_len(), 0);
    }

    #[test]
    fn every_kind_round_trips() {
        let headers = [
            Header::hello(7, 4096, hello_payload("vol").as_bytes()),
            Header::welcome(6, 4096, &HistoryBlock::default().encode()),
            Header::begin(6, Some(4096), &HistoryBlock::default().encode()),
            Header::begin(6, None, &HistoryBlock::default().encode()),
            Header::resync_done(7),
            Header::write(8, 512, &[1; 1024], false),
            Header::flush(9),
            Header::discard(10, 0, 4096),
            Header::write_zeroes(11, 1024, 512),
            Header::verify(
                12,
                1 << 20,
                &crate::verify::ChunkCheck { hash: 3, len: 4096 }.encode(),
            ),
            Header::mismatch(12, 1 << 20, 4096),
            Header::ack(11),
            Header::refuse(b"volume mismatch"),
            Header::ping(),
            Header::digest(11, Some(Digest(u64::MAX))),
            Header::digest(11, None),
            Header::ack_diverged(11, 3),
        ];
        for header in headers {
            assert_eq!(Header::decode(&header.encode()), Ok(header));
        }
    }

    fn corrupt(mut bytes: [u8; HEADER_LEN], at: usize, value: u8) -> [u8; HEADER_LEN] {
        bytes[at] = value;
        let crc = crc32c(&bytes[..36]);
        bytes[36..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn refusals() {
        let good = WRITE_GOLDEN;
        assert_eq!(
            Header::decode(&corrupt(good, 0, b'X')),
            Err(WireError::BadMagic(0x5852_504C))
        );
        assert_eq!(
            Header::decode(&corrupt(good, 4, 1)),
            Err(WireError::BadVersion(1))
        );
        assert_eq!(
            Header::decode(&corrupt(good, 5, 99)),
            Err(WireError::UnknownKind(99))
        );
        assert_eq!(
            Header::decode(&corrupt(good, 7, 2)),
            Err(WireError::BadFlags(2))
        );
        assert_eq!(
            Header::decode(&corrupt(good, 33, 1)),
            Err(WireError::BadReserved)
        );
        // 0x80000200 bytes: over the write limit.
        assert!(matches!(
            Header::decode(&corrupt(good, 24, 0x80)),
            Err(WireError::BadLength { .. })
        ));
        // Offset 1 MiB + 1.
        assert!(matches!(
            Header::decode(&corrupt(good, 23, 1)),
            Err(WireError::Misaligned { .. })
        ));
        // A discard whose range wraps past 2^64: refused as such, before any volume
        // range check could be fooled by it.
        let wrapping = Header::discard(1, u64::MAX - 511, 1024).encode();
        assert_eq!(
            Header::decode(&wrapping),
            Err(WireError::RangeOverflow {
                offset: u64::MAX - 511,
                length: 1024
            })
        );
        let mut flipped = good;
        flipped[15] ^= 1; // seq changed, header crc not updated
        assert!(matches!(
            Header::decode(&flipped),
            Err(WireError::BadHeaderCrc { .. })
        ));
        let header = Header::decode(&good).unwrap();
        assert!(matches!(
            header.check_payload(&[0xAA; 512]),
            Err(WireError::BadPayloadChecksum { .. })
        ));
        assert!(matches!(
            header.check_payload(&[0xAB; 511]),
            Err(WireError::BadPayloadChecksum { .. })
        ));
        let ack = Header::ack(1).encode();
        assert!(matches!(
            Header::decode(&corrupt(ack, 27, 1)),
            Err(WireError::BadLength { .. })
        ));
        assert_eq!(
            Header::decode(&corrupt(ack, 31, 1)),
            Err(WireError::StrayPayloadChecksum)
        );
    }

    #[test]
    fn messages() {
        assert_eq!(
            WireError::BadVersion(9).to_string(),
            "unsupported protocol version 9 (speaking 6)"
        );
    }
}
