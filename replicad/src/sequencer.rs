//! In-session checks on data frames: strict sequence order and ranges inside the volume.
//!
//! A frame becomes an [`Entry`] only after every check passed, so nothing from a bad
//! frame is ever applied.

use arepl_core::wire::FrameKind;

use crate::codec::Frame;
use crate::entry::{Entry, Operation};

/// A frame that breaks the session rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A data frame arrived before the handshake.
    #[error("expected Hello, got a {0:?} frame")]
    ExpectedHello(FrameKind),
    /// A second `Hello` on an established session.
    #[error("second Hello in an established session")]
    SecondHello,
    /// A frame only a receiver sends.
    #[error("unexpected {0:?} frame from the sender")]
    ReceiverFrame(FrameKind),
    /// A sequence number past the expected one.
    #[error("sequence gap: expected seq {expected}, got {got}")]
    SequenceGap {
        /// The only sequence number acceptable now.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// A sequence number already applied. Duplicates are not skipped yet.
    #[error("seq {got} is already applied (expected seq {expected}); duplicates are not accepted")]
    AlreadyApplied {
        /// The only sequence number acceptable now.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// A range that does not fit the volume.
    #[error("seq {seq}: {kind:?} of {length} bytes at offset {offset} ends past the end of the {volume_size}-byte volume")]
    PastEnd {
        /// The frame's sequence number.
        seq: u64,
        /// The frame kind.
        kind: FrameKind,
        /// Its offset.
        offset: u64,
        /// Its length.
        length: u32,
        /// The volume size agreed in the handshake.
        volume_size: u64,
    },
}

/// Admits the data frames of one session in order.
#[derive(Debug, Clone)]
pub struct Sequencer {
    next_seq: u64,
    volume_size: u64,
}

impl Sequencer {
    /// A session that resumes after `durable_seq` on a volume of `volume_size` bytes.
    pub fn new(durable_seq: u64, volume_size: u64) -> Self {
        Self {
            next_seq: durable_seq.saturating_add(1),
            volume_size,
        }
    }

    /// The only sequence number acceptable next.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Checks `frame` against the session and turns it into the next entry.
    pub fn admit(&mut self, frame: Frame) -> Result<Entry, ProtocolError> {
        let header = frame.header;
        match header.kind {
            FrameKind::Hello => return Err(ProtocolError::SecondHello),
            FrameKind::Welcome | FrameKind::Ack | FrameKind::Refuse => {
                return Err(ProtocolError::ReceiverFrame(header.kind))
            }
            FrameKind::Write | FrameKind::Flush | FrameKind::Discard | FrameKind::WriteZeroes => {}
        }
        let (expected, got) = (self.next_seq, header.seq);
        if got > expected {
            return Err(ProtocolError::SequenceGap { expected, got });
        }
        if got < expected {
            return Err(ProtocolError::AlreadyApplied { expected, got });
        }
        if let Some(end) = header.range_end() {
            if end > self.volume_size {
                return Err(ProtocolError::PastEnd {
                    seq: header.seq,
                    kind: header.kind,
                    offset: header.offset,
                    length: header.length,
                    volume_size: self.volume_size,
                });
            }
        }
        let (offset, len) = (header.offset, u64::from(header.length));
        let op = match header.kind {
            FrameKind::Write => Operation::Write {
                offset,
                data: frame.payload,
                fua: header.is_fua(),
            },
            FrameKind::Flush => Operation::Flush,
            FrameKind::Discard => Operation::Discard { offset, len },
            _ => Operation::WriteZeroes { offset, len },
        };
        self.next_seq += 1;
        Ok(Entry { seq: got, op })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arepl_core::wire::Header;

    fn write(seq: u64, offset: u64, len: usize, fua: bool) -> Frame {
        let data = vec![9u8; len];
        Frame::with_payload(Header::write(seq, offset, &data, fua), data)
    }

    #[test]
    fn admits_consecutive_entries_of_every_kind() {
        let mut sequencer = Sequencer::new(41, 1 << 20);
        let entries = [
            write(42, 0, 4096, true),
            Frame::bare(Header::flush(43)),
            Frame::bare(Header::discard(44, 4096, 8192)),
            Frame::bare(Header::write_zeroes(45, (1 << 20) - 512, 512)),
        ]
        .map(|frame| sequencer.admit(frame).unwrap());
        assert_eq!(entries.each_ref().map(|e| e.seq), [42, 43, 44, 45]);
        assert!(entries[0].demands_durability() && entries[1].demands_durability());
        assert!(!entries[2].demands_durability());
        assert_eq!(
            entries[3].op,
            Operation::WriteZeroes {
                offset: (1 << 20) - 512,
                len: 512
            }
        );
        assert_eq!(sequencer.next_seq(), 46);
    }

    #[test]
    fn refuses_gaps_repeats_and_ranges_past_the_end() {
        let mut sequencer = Sequencer::new(0, 1 << 20);
        assert_eq!(
            sequencer.admit(write(2, 0, 512, false)),
            Err(ProtocolError::SequenceGap {
                expected: 1,
                got: 2
            })
        );
        sequencer.admit(write(1, 0, 512, false)).unwrap();
        assert_eq!(
            sequencer.admit(write(1, 0, 512, false)),
            Err(ProtocolError::AlreadyApplied {
                expected: 2,
                got: 1
            })
        );
        let err = sequencer
            .admit(write(2, (1 << 20) - 512, 1024, false))
            .unwrap_err();
        assert!(matches!(err, ProtocolError::PastEnd { .. }));
        assert!(err.to_string().contains("past the end"), "{err}");
        let err = sequencer
            .admit(Frame::bare(Header::discard(2, 1 << 20, 512)))
            .unwrap_err();
        assert!(matches!(err, ProtocolError::PastEnd { .. }));
        // Refused frames do not advance the sequence.
        assert_eq!(sequencer.next_seq(), 2);
    }

    #[test]
    fn refuses_handshake_and_receiver_frames() {
        let mut sequencer = Sequencer::new(0, 4096);
        assert_eq!(
            sequencer.admit(Frame::with_payload(Header::hello(0, 4096, b"v"), &b"v"[..])),
            Err(ProtocolError::SecondHello)
        );
        assert_eq!(
            sequencer.admit(Frame::bare(Header::ack(1))),
            Err(ProtocolError::ReceiverFrame(FrameKind::Ack))
        );
    }
}
