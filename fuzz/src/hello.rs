//! The `handshake` target: every frame of the input taken as a connection's first, through
//! the `Hello` decoding and the admission checks.

use arepl_core::history::HistoryBlock;
use arepl_core::table::VolumeName;
use arepl_core::wire::{FrameKind, Header, HISTORY_LEN, MAX_REASON_LEN};
use replicad::codec::{CodecError, Frame};
use replicad::handshake::{self, Admission, Hello, Refusal};
use replicad::sequencer::ProtocolError;
use replicad::state::{ReplicaState, VolumeIdentity};

use crate::input::Input;
use crate::stream::decode_frames;

/// The size of the receiver's target.
pub const TARGET_LEN: u64 = crate::session::VOLUME_SIZE;
/// The name of the volume a recorded state holds.
pub const RECORDED_NAME: &str = "vol0";
/// The durable sequence of a recorded state.
pub const RECORDED_SEQ: u64 = 7;

/// What the frames of an input came to.
#[derive(Debug, Default)]
pub struct Summary {
    /// Frames decoded.
    pub frames: usize,
    /// `Hello`s a replica that holds their volume admits.
    pub admitted: usize,
    /// Why the stream stopped decoding, if it did.
    pub codec_error: Option<CodecError>,
}

/// Runs every frame `data` encodes (see [`Input`]) through the handshake, panicking if
/// an invariant breaks.
pub fn run(data: &[u8]) -> Summary {
    let mut summary = Summary::default();
    let Some(input) = Input::parse(data) else {
        return summary;
    };
    let decoded = decode_frames(&input, |frame| {
        summary.frames += 1;
        summary.admitted += usize::from(handshake_with(&frame));
        true
    });
    summary.codec_error = decoded.err();
    summary
}

/// Takes `frame` as a connection's first; `true` if a replica that holds its volume
/// admits it.
fn handshake_with(frame: &Frame) -> bool {
    let hello = match Hello::from_frame(frame) {
        Err(ProtocolError::ExpectedHello(kind)) => {
            assert_ne!(kind, FrameKind::Hello);
            return false;
        }
        Err(ProtocolError::BadHistoryBlock(FrameKind::Hello)) => {
            assert!(HistoryBlock::decode(&frame.payload[..HISTORY_LEN as usize]).is_none());
            return false;
        }
        Err(err) => panic!("Hello::from_frame: unexpected {err:?}"),
        Ok(Err(refusal)) => {
            check_refusal(&refusal);
            return false;
        }
        Ok(Ok(hello)) => hello,
    };
    check_decoded(&hello, frame);
    let recorded = VolumeIdentity {
        name: VolumeName::new(RECORDED_NAME).expect("a valid name"),
        size: TARGET_LEN,
    };
    let mismatch = handshake::check_identity(&hello, Some(&recorded));
    assert_eq!(mismatch.is_ok(), hello.identity == recorded);
    if let Err(refusal) = &mismatch {
        check_refusal(refusal);
    }
    assert_eq!(handshake::check_identity(&hello, None), Ok(()));

    let resumed = ReplicaState {
        durable_seq: RECORDED_SEQ,
        identity: Some(hello.identity.clone()),
        ..ReplicaState::default()
    };
    let resumes = admitted(
        handshake::admit(&hello, &resumed, TARGET_LEN),
        Admission::Resume,
    );
    let fresh = admitted(
        handshake::admit(&hello, &ReplicaState::default(), TARGET_LEN),
        Admission::FirstContact(hello.identity.clone()),
    );
    // A fresh replica differs only in holding no entries: it admits fewer senders.
    assert!(resumes || !fresh);
    assert!(!resumes || (1..=TARGET_LEN).contains(&hello.identity.size));
    resumes
}

/// Whether `admission` admits the sender as `expected`; a refusal is checked.
fn admitted(admission: Result<Admission, Refusal>, expected: Admission) -> bool {
    match admission {
        Ok(admission) => {
            assert_eq!(admission, expected);
            true
        }
        Err(refusal) => {
            check_refusal(&refusal);
            false
        }
    }
}

/// A decoded `Hello` says what its frame says, and its parts re-encode to the payload.
fn check_decoded(hello: &Hello, frame: &Frame) {
    assert_eq!(hello.oldest_seq, frame.header.seq);
    assert_eq!(hello.identity.size, frame.header.offset);
    let (block, name) = frame.payload.split_at(HISTORY_LEN as usize);
    assert_eq!(hello.history.encode()[..], block[..]);
    assert_eq!(hello.identity.name.as_str().as_bytes(), name);
}

/// A refusal goes out as a valid `Refuse` frame.
fn check_refusal(refusal: &Refusal) {
    let reason = refusal.wire_reason();
    assert!(reason.len() <= MAX_REASON_LEN as usize);
    assert!(std::str::from_utf8(reason).is_ok());
    let header = Header::refuse(reason);
    assert_eq!(Header::decode(&header.encode()), Ok(header));
    assert_eq!(header.check_payload(reason), Ok(()));
}
