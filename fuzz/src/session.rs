//! The `frames` target: a session's stream through the codec and the sequencer, as
//! `replicad`'s connection reads it after the handshake, with what the applier relies
//! on checked on every frame admitted.

use arepl_core::history::HistoryBlock;
use arepl_core::wire::{FrameKind, Header, SECTOR_SIZE};
use replicad::codec::{CodecError, Frame};
use replicad::entry::{Entry, Operation};
use replicad::sequencer::{Admitted, ProtocolError, Sequencer};

use crate::input::Input;
use crate::stream::decode_frames;

/// The volume of every session: a whole number of sectors, not of pages.
pub const VOLUME_SIZE: u64 = (1 << 20) + 3 * SECTOR_SIZE as u64;
/// The durable sequence the session was welcomed with.
pub const WELCOMED_SEQ: u64 = 0;

/// How a session ended.
#[derive(Debug)]
pub enum Outcome {
    /// The stream ended at a frame boundary, every frame admitted.
    Clean {
        /// Entries admitted to apply.
        applied: usize,
    },
    /// The stream broke a wire rule or ended inside a frame.
    Codec(CodecError),
    /// A frame broke a session rule.
    Protocol(ProtocolError),
    /// Shorter than the input's prefix.
    NoInput,
}

/// Runs the session `data` encodes (see [`Input`]), panicking if an invariant breaks.
pub fn run(data: &[u8]) -> Outcome {
    let Some(input) = Input::parse(data) else {
        return Outcome::NoInput;
    };
    let mut sequencer = Sequencer::new(WELCOMED_SEQ, VOLUME_SIZE);
    let mut applied = 0;
    let mut refused = None;
    let decoded = decode_frames(&input, |frame| match admit(&mut sequencer, frame) {
        Ok(to_apply) => {
            applied += usize::from(to_apply);
            true
        }
        // The connection ends at the first frame the sequencer refuses.
        Err(err) => {
            refused = Some(err);
            false
        }
    });
    match (refused, decoded) {
        (Some(err), _) => Outcome::Protocol(err),
        (None, Err(err)) => Outcome::Codec(err),
        (None, Ok(())) => Outcome::Clean { applied },
    }
}

/// Admits `frame` and checks what the sequencer made of it; `Ok(true)` for an entry to
/// apply.
fn admit(sequencer: &mut Sequencer, frame: Frame) -> Result<bool, ProtocolError> {
    let header = frame.header;
    let payload = frame.payload.clone();
    let next = sequencer.next_seq();
    match sequencer.admit(frame)? {
        Admitted::Apply(entry) => {
            assert_eq!(entry.seq, next, "entries are admitted in sequence order");
            assert_eq!(Some(sequencer.next_seq()), next.checked_add(1));
            check_entry(&entry, &header, payload.len());
            return Ok(true);
        }
        Admitted::Duplicate { seq, applied } => {
            assert!(
                seq != 0 && seq < next && applied == next - 1,
                "{seq} {next}"
            );
        }
        Admitted::Check(check) => assert_eq!(check.seq, next - 1),
        Admitted::Begin(begin) => {
            assert_eq!(header.kind, FrameKind::Begin);
            assert_eq!(Some(sequencer.next_seq()), begin.seq.checked_add(1));
            let block = HistoryBlock::decode(&payload).expect("admitted Begin has a block");
            assert_eq!(block.encode()[..], payload[..]);
        }
        Admitted::ResyncDone(seq) => assert!(seq < next),
        Admitted::Ping => assert_eq!(sequencer.next_seq(), next),
    }
    Ok(false)
}

/// An entry to apply lies inside the volume, in whole sectors, and carries exactly the
/// payload its header states.
fn check_entry(entry: &Entry, header: &Header, payload_len: usize) {
    assert_eq!(payload_len, header.payload_len() as usize);
    let (offset, len) = match &entry.op {
        Operation::Flush => return,
        Operation::Write { offset, data, .. } => {
            assert_eq!(data.len(), header.length as usize, "write payload");
            (*offset, data.len() as u64)
        }
        Operation::Discard { offset, len } | Operation::WriteZeroes { offset, len } => {
            assert_eq!(*len, u64::from(header.length), "range length");
            (*offset, *len)
        }
        Operation::Verify { offset, check } => (*offset, u64::from(check.len)),
    };
    assert_eq!(offset, header.offset);
    let sector = u64::from(SECTOR_SIZE);
    assert!(
        len > 0 && offset % sector == 0 && len % sector == 0,
        "{entry:?}"
    );
    let end = offset.checked_add(len).expect("range overflows");
    assert!(end <= VOLUME_SIZE, "{entry:?} ends past the volume");
}
