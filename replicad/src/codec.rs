//! Frames as a `tokio_util` codec over [`arepl_core::wire`].
//!
//! Decoding validates the header as soon as its 40 bytes are in, before any payload is
//! buffered, so a bad or oversized header is refused without reading what follows it.
//! The payload is then checked against its checksum before the frame is handed out.
//!
//! A payload of a page or more that has not all arrived with its header is read into a
//! buffer of its own that starts on a page boundary: the socket reads land there
//! directly, and the target can write it with direct I/O (see [`crate::volume`]), with
//! no copy into the page cache. Headers and small payloads come through a small staging
//! buffer.

use arepl_core::wire::{Header, WireError, HEADER_LEN};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::volume::DIRECT_IO_ALIGN;

/// One frame: a validated header and its payload (empty for kinds without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The decoded header.
    pub header: Header,
    /// `header.payload_len()` bytes.
    pub payload: Bytes,
}

impl Frame {
    /// A frame of a kind without payload.
    pub fn bare(header: Header) -> Self {
        Self {
            header,
            payload: Bytes::new(),
        }
    }

    /// A frame with its payload; the header must describe it.
    pub fn with_payload(header: Header, payload: impl Into<Bytes>) -> Self {
        Self {
            header,
            payload: payload.into(),
        }
    }
}

/// Why the byte stream is not a sequence of valid frames.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The header or payload broke a wire rule.
    #[error("{0}")]
    Wire(WireError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes of it received)")]
    Truncated {
        /// Bytes of the unfinished frame that did arrive.
        buffered: usize,
    },
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<WireError> for CodecError {
    fn from(err: WireError) -> Self {
        Self::Wire(err)
    }
}

/// Size of the staging buffer headers and small payloads are read into.
const STAGING_CAPACITY: usize = 8 * 1024;

/// Encodes and decodes [`Frame`]s.
#[derive(Debug, Default)]
pub struct FrameCodec {
    /// Header of a frame whose payload has not fully arrived yet.
    pending: Option<Header>,
    /// The read buffer is the pending payload's own aligned buffer.
    reading_aligned: bool,
}

impl FrameCodec {
    /// A codec at a frame boundary.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let header = match self.pending {
            Some(header) => header,
            None => {
                let Some(bytes) = src.get(..HEADER_LEN) else {
                    src.reserve(HEADER_LEN - src.len());
                    return Ok(None);
                };
                let bytes: &[u8; HEADER_LEN] = bytes.try_into().expect("sliced to HEADER_LEN");
                let header = Header::decode(bytes)?;
                src.advance(HEADER_LEN);
                self.pending = Some(header);
                header
            }
        };
        // Header::decode bounded the length by kind, so reserving it is safe.
        let payload_len = header.payload_len() as usize;
        if src.len() < payload_len {
            if self.reading_aligned {
                // Its buffer has room for all of it already.
            } else if payload_len >= DIRECT_IO_ALIGN {
                *src = aligned_buffer(payload_len, src);
                self.reading_aligned = true;
            } else {
                src.reserve(payload_len - src.len());
            }
            return Ok(None);
        }
        self.pending = None;
        let payload = src.split_to(payload_len).freeze();
        if std::mem::take(&mut self.reading_aligned) && src.is_empty() {
            // The payload's buffer is used up: headers go back to a small one.
            *src = BytesMut::with_capacity(STAGING_CAPACITY);
        }
        header.check_payload(&payload)?;
        Ok(Some(Frame { header, payload }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && self.pending.is_none() => Ok(None),
            None => {
                let header_bytes = if self.pending.is_some() {
                    HEADER_LEN
                } else {
                    0
                };
                Err(CodecError::Truncated {
                    buffered: header_bytes + src.len(),
                })
            }
        }
    }
}

/// A buffer for a `len`-byte payload that starts on a [`DIRECT_IO_ALIGN`] boundary,
/// holding the part of it already `received`; reads fill exactly the rest.
fn aligned_buffer(len: usize, received: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(len + DIRECT_IO_ALIGN);
    let misalignment = buf.as_ptr() as usize % DIRECT_IO_ALIGN;
    let pad = (DIRECT_IO_ALIGN - misalignment) % DIRECT_IO_ALIGN;
    buf.resize(pad, 0);
    // FramedRead only reserves when no room is left, so the start never moves.
    buf.advance(pad);
    buf.extend_from_slice(received);
    buf
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        debug_assert_eq!(frame.payload.len(), frame.header.payload_len() as usize);
        dst.reserve(HEADER_LEN + frame.payload.len());
        dst.put_slice(&frame.header.encode());
        dst.put_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arepl_core::crc32c::crc32c;
    use arepl_core::wire::{FrameKind, MAX_WRITE_PAYLOAD};

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut buf = BytesMut::new();
        for frame in frames {
            FrameCodec::new().encode(frame.clone(), &mut buf).unwrap();
        }
        buf
    }

    /// Header bytes with one byte changed and the header crc recomputed.
    fn altered(header: Header, at: usize, value: u8) -> [u8; HEADER_LEN] {
        let mut bytes = header.encode();
        bytes[at] = value;
        let crc = crc32c(&bytes[..36]);
        bytes[36..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, CodecError> {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode_eof(&mut buf)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn sample_frames() -> Vec<Frame> {
        let payload = vec![0x5Au8; 4096];
        let block = arepl_core::history::HistoryBlock {
            history: Some(arepl_core::history::History::new([4; 16])),
            flags: arepl_core::history::CONSISTENT,
        }
        .encode();
        let mut hello = block.to_vec();
        hello.extend_from_slice(b"vol0");
        vec![
            Frame::with_payload(Header::hello(0, 1 << 20, &hello), hello),
            Frame::with_payload(Header::welcome(0, 1 << 20, &block), block.to_vec()),
            Frame::with_payload(Header::begin(0, Some(1 << 20), &block), block.to_vec()),
            Frame::with_payload(Header::write(1, 8192, &payload, true), payload.clone()),
            Frame::bare(Header::flush(2)),
            Frame::bare(Header::discard(3, 0, 4096)),
            Frame::bare(Header::write_zeroes(4, 512, 1024)),
            Frame::bare(Header::ack(4)),
            Frame::bare(Header::resync_done(4)),
            Frame::with_payload(Header::refuse(b"no"), &b"no"[..]),
        ]
    }

    #[test]
    fn round_trips_every_kind_and_matches_core_encoding() {
        let frames = sample_frames();
        let bytes = encoded(&frames);
        // The codec adds nothing of its own: header bytes from arepl_core, then payload.
        let mut expected = Vec::new();
        for frame in &frames {
            expected.extend_from_slice(&frame.header.encode());
            expected.extend_from_slice(&frame.payload);
        }
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(decode_all(&bytes).unwrap(), frames);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let frames = sample_frames();
        let bytes = encoded(&frames);
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        // Feed one byte at a time: every split point must be handled.
        for &byte in bytes.iter() {
            buf.put_u8(byte);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn large_payloads_arriving_later_land_page_aligned() {
        let big = vec![0xA5u8; 3 * DIRECT_IO_ALIGN];
        let small = vec![0x11u8; 512];
        let frames = [
            Frame::with_payload(Header::write(1, 0, &big, false), big.clone()),
            Frame::with_payload(Header::write(2, 0, &small, false), small.clone()),
            Frame::with_payload(Header::write(3, 0, &big, false), big.clone()),
        ];
        let bytes = encoded(&frames);
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::with_capacity(STAGING_CAPACITY);
        let mut decoded = Vec::new();
        // As a socket delivers them: a header with part of its payload, then the rest
        // in reads no larger than the room the buffer has.
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let room = (buf.capacity() - buf.len()).clamp(1, 1000);
            let (read, after) = rest.split_at(room.min(rest.len()));
            buf.extend_from_slice(read);
            rest = after;
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
        for frame in [&decoded[0], &decoded[2]] {
            assert_eq!(frame.payload.as_ptr() as usize % DIRECT_IO_ALIGN, 0);
        }
        assert!(buf.is_empty());
        assert!(
            buf.capacity() <= STAGING_CAPACITY,
            "staging grew to a payload's size"
        );
    }

    #[test]
    fn truncated_stream_is_an_error_at_eof() {
        let payload = vec![1u8; 1024];
        let bytes = encoded(&[Frame::with_payload(
            Header::write(1, 0, &payload, false),
            payload,
        )]);
        for cut in [1, HEADER_LEN - 1, HEADER_LEN, HEADER_LEN + 100] {
            let err = decode_all(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, CodecError::Truncated { buffered } if buffered == cut),
                "cut {cut}: {err}"
            );
        }
        assert!(decode_all(&[]).unwrap().is_empty());
    }

    #[test]
    fn header_errors_are_reported_before_the_payload_arrives() {
        let write = Header::write(1, 0, &[7u8; 512], false);
        let mut bad_crc = write.encode();
        bad_crc[12] ^= 0x40;
        let cases = [
            (altered(write, 0, b'X'), "bad magic"),
            (altered(write, 4, 9), "unsupported protocol version 9"),
            (altered(write, 5, 42), "unknown frame kind 42"),
            (bad_crc, "header crc32c mismatch"),
        ];
        for (bytes, expected) in cases {
            // Only the header is given: the error must not wait for a payload.
            let err = FrameCodec::new()
                .decode(&mut BytesMut::from(&bytes[..]))
                .unwrap_err();
            assert!(matches!(err, CodecError::Wire(_)), "{err}");
            assert!(err.to_string().starts_with(expected), "{err}");
        }
    }

    #[test]
    fn oversized_length_is_refused_without_buffering() {
        let header = Header::write_with_checksum(1, 0, MAX_WRITE_PAYLOAD + 512, 0, false);
        let mut buf = BytesMut::from(&header.encode()[..]);
        let err = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Wire(WireError::BadLength {
                kind: FrameKind::Write,
                ..
            })
        ));
        assert!(buf.capacity() < 1 << 20, "payload space was reserved");
    }

    #[test]
    fn payload_checksum_mismatch_is_refused() {
        let payload = vec![3u8; 2048];
        let mut bytes = encoded(&[Frame::with_payload(
            Header::write(5, 4096, &payload, false),
            payload,
        )]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = decode_all(&bytes).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Wire(WireError::BadPayloadChecksum { .. })
        ));
        assert!(err.to_string().starts_with("payload checksum mismatch"));
    }

    #[test]
    fn unchecked_write_is_taken_on_its_length() {
        // `wire_crc:off`: no checksum to compare, the payload still arrives whole.
        let payload = vec![3u8; 2048];
        let header = Header::write_unchecked(5, 4096, 2048, false);
        let mut bytes = encoded(&[Frame::with_payload(header, payload.clone())]);
        let frames = decode_all(&bytes).unwrap();
        assert_eq!(frames.len(), 1);
        assert!(frames[0].header.is_unchecked());
        assert_eq!(&frames[0].payload[..], &payload[..]);
        // A flipped payload byte goes through: only TCP's checksum guards it now.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(decode_all(&bytes).unwrap()[0].payload[2047], 2);
    }

    #[test]
    fn other_header_rules_are_enforced() {
        let flush = Header::flush(3);
        let bad_flags = altered(flush, 7, 1);
        let bad_reserved = altered(flush, 35, 1);
        let misaligned = altered(Header::discard(3, 0, 4096), 23, 7);
        for (bytes, what) in [
            (bad_flags, "flags"),
            (bad_reserved, "reserved"),
            (misaligned, "multiple of 512"),
        ] {
            let err = decode_all(&bytes).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        }
    }
}
