//! In-session checks on data frames: strict sequence order and ranges inside the volume.
//!
//! A frame becomes an [`Entry`] only after every check passed, so nothing from a bad
//! frame is ever applied. A data frame whose sequence is already applied (a sender that
//! reconnected and resends entries it holds) is checked just as fully and then skipped:
//! applying it again out of order could undo later writes. A `Ping` is admitted without
//! touching the sequence.

use arepl_core::wire::FrameKind;

use crate::applier::DigestCheck;
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
        /// The next sequence number to apply.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// A `Digest` for another sequence than the last entry admitted.
    #[error("Digest for seq {got}, but the last entry admitted is seq {last}")]
    DigestOutOfPlace {
        /// The last sequence admitted.
        last: u64,
        /// The one the digest names.
        got: u64,
    },
    /// Sequence numbers start at 1; 0 is no entry.
    #[error("{0:?} frame with seq 0; entries are numbered from 1")]
    ZeroSeq(FrameKind),
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

/// What an admitted frame asks of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// The next entry: apply it.
    Apply(Entry),
    /// A valid data frame whose sequence is already applied: skip it. Acknowledgements are
    /// cumulative, so the ones for the original cover it.
    Duplicate {
        /// Its sequence number.
        seq: u64,
        /// The highest sequence applied (or queued to apply) so far.
        applied: u64,
    },
    /// A liveness probe: answer with an `Ack` of the current durable sequence.
    Ping,
    /// The sender's digest through the last entry admitted: check it once that is applied.
    Check(DigestCheck),
}

/// Admits the frames of one session: data in order, duplicates skipped, pings.
#[derive(Debug, Clone)]
pub struct Sequencer {
    next_seq: u64,
    volume_size: u64,
}

impl Sequencer {
    /// A session that resumes after `applied_seq` on a volume of `volume_size` bytes. The
    /// session starts from the durable sequence it was welcomed with: nothing beyond it
    /// is applied then (see [`crate::takeover`]).
    pub fn new(applied_seq: u64, volume_size: u64) -> Self {
        Self {
            next_seq: applied_seq.saturating_add(1),
            volume_size,
        }
    }

    /// The next sequence number to apply.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Checks `frame` against the session: the next entry, a duplicate to skip, or a ping.
    pub fn admit(&mut self, frame: Frame) -> Result<Admitted, ProtocolError> {
        let header = frame.header;
        match header.kind {
            FrameKind::Hello => return Err(ProtocolError::SecondHello),
            FrameKind::Welcome | FrameKind::Ack | FrameKind::Refuse => {
                return Err(ProtocolError::ReceiverFrame(header.kind))
            }
            FrameKind::Ping => return Ok(Admitted::Ping),
            FrameKind::Digest => {
                let last = self.next_seq - 1;
                if header.seq != last {
                    return Err(ProtocolError::DigestOutOfPlace {
                        last,
                        got: header.seq,
                    });
                }
                return Ok(Admitted::Check(DigestCheck {
                    seq: last,
                    digest: header.carried_digest(),
                }));
            }
            FrameKind::Write | FrameKind::Flush | FrameKind::Discard | FrameKind::WriteZeroes => {}
        }
        // Every check a new entry gets, a duplicate gets too (the codec already checked the
        // header and payload checksums).
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
        let (expected, got) = (self.next_seq, header.seq);
        if got == 0 {
            return Err(ProtocolError::ZeroSeq(header.kind));
        }
        if got > expected {
            return Err(ProtocolError::SequenceGap { expected, got });
        }
        if got < expected {
            return Ok(Admitted::Duplicate {
                seq: got,
                applied: expected - 1,
            });
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
        Ok(Admitted::Apply(Entry::from_frame(&header, op)))
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

    fn entry(admitted: Result<Admitted, ProtocolError>) -> Entry {
        match admitted {
            Ok(Admitted::Apply(entry)) => entry,
            other => panic!("expected an entry, got {other:?}"),
        }
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
        .map(|frame| entry(sequencer.admit(frame)));
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
    fn refuses_gaps_and_ranges_past_the_end() {
        let mut sequencer = Sequencer::new(0, 1 << 20);
        assert_eq!(
            sequencer.admit(write(2, 0, 512, false)),
            Err(ProtocolError::SequenceGap {
                expected: 1,
                got: 2
            })
        );
        entry(sequencer.admit(write(1, 0, 512, false)));
        assert_eq!(
            sequencer.admit(write(3, 0, 512, false)),
            Err(ProtocolError::SequenceGap {
                expected: 2,
                got: 3
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
        assert_eq!(
            sequencer.admit(Frame::bare(Header::flush(0))),
            Err(ProtocolError::ZeroSeq(FrameKind::Flush))
        );
        // Refused frames do not advance the sequence.
        assert_eq!(sequencer.next_seq(), 2);
    }

    #[test]
    fn already_applied_entries_are_skipped_after_full_checks() {
        // Welcomed at durable seq 10: a sender resending 5..=10 is skipped, 11 applies.
        let mut sequencer = Sequencer::new(10, 1 << 20);
        for seq in 5..=10 {
            assert_eq!(
                sequencer.admit(write(seq, 4096, 512, seq % 2 == 0)),
                Ok(Admitted::Duplicate { seq, applied: 10 })
            );
        }
        assert_eq!(
            sequencer.admit(Frame::bare(Header::flush(7))),
            Ok(Admitted::Duplicate {
                seq: 7,
                applied: 10
            })
        );
        assert_eq!(sequencer.next_seq(), 11);
        // A duplicate is still range-checked: a bad frame is bad whatever its seq.
        let err = sequencer
            .admit(Frame::bare(Header::discard(3, 1 << 20, 512)))
            .unwrap_err();
        assert!(
            matches!(err, ProtocolError::PastEnd { seq: 3, .. }),
            "{err}"
        );
        assert_eq!(entry(sequencer.admit(write(11, 0, 512, false))).seq, 11);
        // Entries applied in this session are duplicates too.
        assert_eq!(
            sequencer.admit(write(11, 0, 512, false)),
            Ok(Admitted::Duplicate {
                seq: 11,
                applied: 11
            })
        );
        assert_eq!(
            sequencer.admit(write(13, 0, 512, false)),
            Err(ProtocolError::SequenceGap {
                expected: 12,
                got: 13
            })
        );
        assert_eq!(entry(sequencer.admit(write(12, 0, 512, false))).seq, 12);
    }

    #[test]
    fn pings_do_not_touch_the_sequence() {
        let mut sequencer = Sequencer::new(3, 4096);
        assert_eq!(
            sequencer.admit(Frame::bare(Header::ping())),
            Ok(Admitted::Ping)
        );
        assert_eq!(sequencer.next_seq(), 4);
        assert_eq!(entry(sequencer.admit(write(4, 0, 512, false))).seq, 4);
        assert_eq!(
            sequencer.admit(Frame::bare(Header::ping())),
            Ok(Admitted::Ping)
        );
        assert_eq!(entry(sequencer.admit(write(5, 0, 512, false))).seq, 5);
    }

    #[test]
    fn refuses_handshake_and_receiver_frames() {
        let mut sequencer = Sequencer::new(0, 4096);
        assert_eq!(
            sequencer.admit(Frame::with_payload(Header::hello(0, 4096, b"v"), &b"v"[..])),
            Err(ProtocolError::SecondHello)
        );
        for receiver_frame in [
            Header::ack(1),
            Header::welcome(0, 4096),
            Header::refuse(b""),
        ] {
            assert_eq!(
                sequencer.admit(Frame::bare(receiver_frame)),
                Err(ProtocolError::ReceiverFrame(receiver_frame.kind))
            );
        }
    }
}
