//! The input's stream through [`FrameCodec`], read as `FramedRead` reads a socket.

use arepl_core::wire::Header;
use bytes::BytesMut;
use replicad::codec::{CodecError, Frame, FrameCodec};
use tokio_util::codec::{Decoder, Encoder};

use crate::input::Input;

/// What `FramedRead` reserves when its buffer is full.
const READ_RESERVE: usize = 8 * 1024;

/// Decodes the input's stream, handing each frame to `on_frame` until it returns
/// `false` (the session ended). `Err`: the stream broke a wire rule or ended inside a
/// frame. Every frame is checked to encode back to the bytes it was decoded from.
pub fn decode_frames(
    input: &Input,
    mut on_frame: impl FnMut(Frame) -> bool,
) -> Result<(), CodecError> {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    let mut rest = &input.stream[..];
    let mut consumed = 0;
    let mut deliver = |frame: Frame| {
        consumed += check_round_trip(&frame, &input.stream[consumed..]);
        on_frame(frame)
    };
    let mut sizes = input.chunk_sizes();
    while !rest.is_empty() {
        // FramedRead reads into the room the buffer has and reserves only when it has
        // none: the codec's page-aligned payload buffers rely on that.
        if buf.len() == buf.capacity() {
            buf.reserve(READ_RESERVE);
        }
        let size = sizes.next().expect("cycles forever");
        let (read, after) = rest.split_at(size.min(buf.capacity() - buf.len()).min(rest.len()));
        buf.extend_from_slice(read);
        rest = after;
        while let Some(frame) = codec.decode(&mut buf)? {
            if !deliver(frame) {
                return Ok(());
            }
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        if !deliver(frame) {
            return Ok(());
        }
    }
    Ok(())
}

/// Checks that `frame` is consistent and encodes to the start of `sent`, the stream
/// from where it was decoded; returns its encoded length.
fn check_round_trip(frame: &Frame, sent: &[u8]) -> usize {
    let header = frame.header;
    assert_eq!(frame.payload.len(), header.payload_len() as usize);
    assert_eq!(Header::decode(&header.encode()), Ok(header));
    let mut encoded = BytesMut::new();
    FrameCodec::new()
        .encode(frame.clone(), &mut encoded)
        .expect("encoding into memory cannot fail");
    assert!(
        sent.starts_with(&encoded),
        "{header:?} does not encode to the bytes it was decoded from"
    );
    encoded.len()
}
