//! In-session checks on data frames: strict sequence order and ranges inside the volume,
//! and the place of `Begin` and `ResyncDone` in the stream.
//!
//! A frame becomes an [`Entry`] only after every check passed, so nothing from a bad
//! frame is ever applied. A data frame whose sequence is already applied (a sender that
//! reconnected and resends entries it holds) is checked just as fully and then skipped:
//! applying it again out of order could undo later writes. A `Ping` is admitted without
//! touching the sequence.
//!
//! Entries follow only a `Begin`, which names the history they belong to: one per
//! session, at the welcomed durable sequence, or past it when the `Begin` starts a
//! resync (the sender lost the entries in between, in a crash say; the resync covers
//! what they wrote, and the replica is inconsistent until it completes). A
//! `ResyncDone` names an entry received,
//! at or after the `Begin` when that `Begin` started the resync. A session that
//! continues a resync begun in an earlier one may name an entry from before its `Begin`:
//! the sender's last copied entry may have become durable before a link broke, and the
//! notice with it got lost.

use arepl_core::history::{History, HistoryBlock};
use arepl_core::verify::ChunkCheck;
use arepl_core::wire::{FrameKind, MAX_WRITE_PAYLOAD, SECTOR_SIZE};

use crate::applier::DigestCheck;
use crate::codec::Frame;
use crate::consistency::Begin;
use crate::entry::{Entry, Operation};

/// A frame that breaks the session rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A data frame arrived before the handshake.
    #[error("expected Hello, got a {0:?} frame")]
    ExpectedHello(FrameKind),
    /// Authentication answered with another frame than `Proof`.
    #[error("expected Proof, got a {0:?} frame")]
    ExpectedProof(FrameKind),
    /// An entry numbered with the last sequence number there is.
    #[error("entry at sequence 2^64-1: the sequence space is used up")]
    SequenceExhausted,
    /// An authenticated sender's `Hello` names another volume than its `Greeting`.
    #[error("Hello names another volume than the authenticated Greeting")]
    HelloAfterGreeting,
    /// A handshake frame in an established session.
    #[error("{0:?} frame in an established session")]
    HandshakeFrame(FrameKind),
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
    /// The history block of a `Hello` or `Begin` breaks its layout.
    #[error("malformed history block in a {0:?} frame")]
    BadHistoryBlock(FrameKind),
    /// A `Begin` that names no history.
    #[error("Begin names no history")]
    BeginWithoutHistory,
    /// A `Begin` elsewhere than at the welcomed durable sequence (or past it, for a
    /// resync).
    #[error("Begin at seq {got}, but the session was welcomed at durable seq {welcomed}")]
    BeginOutOfPlace {
        /// The durable sequence in the `Welcome`.
        welcomed: u64,
        /// The one the `Begin` names.
        got: u64,
    },
    /// A second `Begin` in a session.
    #[error("second Begin in a session")]
    SecondBegin,
    /// An entry (or `ResyncDone`) before the `Begin` that says which history it is of.
    #[error("{kind:?} frame (seq {seq}) before Begin")]
    BeforeBegin {
        /// The frame kind.
        kind: FrameKind,
        /// Its sequence number.
        seq: u64,
    },
    /// A `ResyncDone` naming an entry outside the resync.
    #[error("ResyncDone for seq {got}, outside seqs {from}..={received} (from the resync's Begin through the last entry received)")]
    ResyncDoneOutOfRange {
        /// The earliest sequence it may name: the `Begin`'s if that started the resync.
        from: u64,
        /// The last entry received.
        received: u64,
        /// The one the `ResyncDone` names.
        got: u64,
    },
    /// A second `ResyncDone` in a session.
    #[error("second ResyncDone in a session")]
    SecondResyncDone,
    /// A `Begin` without resync naming another history than the replica's.
    #[error("Begin continues history {begun} but this replica holds {held}")]
    OtherHistory {
        /// The history the `Begin` names.
        begun: History,
        /// The replica's.
        held: History,
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
    /// A `Verify` whose payload is no chunk check.
    #[error("seq {seq}: malformed Verify payload (reserved bytes set, or a chunk length that is 0, not whole sectors or over {MAX_WRITE_PAYLOAD} bytes)")]
    BadVerifyPayload {
        /// The frame's sequence number.
        seq: u64,
    },
    /// A `Verify` of a chunk that does not start on a sector.
    #[error("seq {seq}: Verify of a chunk at offset {offset}, not sector-aligned")]
    MisalignedVerify {
        /// The frame's sequence number.
        seq: u64,
        /// The chunk's offset.
        offset: u64,
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
    /// The history the entries that follow belong to, or a resync beginning.
    Begin(Begin),
    /// The resync's last entry is this one.
    ResyncDone(u64),
}

/// Admits the frames of one session: data in order, duplicates skipped, pings.
#[derive(Debug, Clone)]
pub struct Sequencer {
    next_seq: u64,
    volume_size: u64,
    /// The `Begin`'s sequence and whether it started a resync, once it came.
    begun: Option<(u64, bool)>,
    resync_done: bool,
}

impl Sequencer {
    /// A session that resumes after `applied_seq` on a volume of `volume_size` bytes. The
    /// session starts from the durable sequence it was welcomed with: nothing beyond it
    /// is applied then (see [`crate::takeover`]).
    pub fn new(applied_seq: u64, volume_size: u64) -> Self {
        Self {
            next_seq: applied_seq.saturating_add(1),
            volume_size,
            begun: None,
            resync_done: false,
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
            FrameKind::Greeting | FrameKind::Proof => {
                return Err(ProtocolError::HandshakeFrame(header.kind))
            }
            FrameKind::Welcome
            | FrameKind::Ack
            | FrameKind::Refuse
            | FrameKind::Mismatch
            | FrameKind::Challenge => return Err(ProtocolError::ReceiverFrame(header.kind)),
            FrameKind::Ping => return Ok(Admitted::Ping),
            FrameKind::Begin => return self.begin(&frame),
            FrameKind::ResyncDone => return self.resync_done(header.seq),
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
            FrameKind::Write
            | FrameKind::Flush
            | FrameKind::Discard
            | FrameKind::WriteZeroes
            | FrameKind::Verify => {}
        }
        if self.begun.is_none() {
            // Without a Begin there is no telling which history an entry continues.
            return Err(ProtocolError::BeforeBegin {
                kind: header.kind,
                seq: header.seq,
            });
        }
        // Every check a new entry gets, a duplicate gets too (the codec already checked the
        // header and payload checksums).
        let check = match header.kind {
            FrameKind::Verify => Some(verify_check(&frame)?),
            _ => None,
        };
        // A Verify's range is its chunk, which its payload states (one that overflows
        // ends past any volume).
        let (range_end, length) = match check {
            Some(check) => (
                Some(header.offset.saturating_add(u64::from(check.len))),
                check.len,
            ),
            None => (header.range_end(), header.length),
        };
        if range_end.is_some_and(|end| end > self.volume_size) {
            return Err(ProtocolError::PastEnd {
                seq: header.seq,
                kind: header.kind,
                offset: header.offset,
                length,
                volume_size: self.volume_size,
            });
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
        if got == u64::MAX {
            // The entry after it could not be numbered.
            return Err(ProtocolError::SequenceExhausted);
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
            FrameKind::Verify => Operation::Verify {
                offset,
                check: check.expect("decoded above"),
            },
            _ => Operation::WriteZeroes { offset, len },
        };
        self.next_seq += 1;
        Ok(Admitted::Apply(Entry::from_frame(&header, op)))
    }

    fn begin(&mut self, frame: &Frame) -> Result<Admitted, ProtocolError> {
        if self.begun.is_some() {
            return Err(ProtocolError::SecondBegin);
        }
        let header = frame.header;
        // Entries cannot precede a Begin, so the last one admitted is the welcomed one.
        let welcomed = self.next_seq - 1;
        let resync = header.resync_bytes().is_some();
        if header.seq < welcomed || (header.seq > welcomed && !resync) || header.seq == u64::MAX {
            return Err(ProtocolError::BeginOutOfPlace {
                welcomed,
                got: header.seq,
            });
        }
        let block = HistoryBlock::decode(&frame.payload)
            .ok_or(ProtocolError::BadHistoryBlock(FrameKind::Begin))?;
        let history = block.history.ok_or(ProtocolError::BeginWithoutHistory)?;
        self.begun = Some((header.seq, resync));
        self.next_seq = header.seq + 1;
        Ok(Admitted::Begin(Begin {
            seq: header.seq,
            history,
            resync_bytes: header.resync_bytes(),
        }))
    }

    fn resync_done(&mut self, seq: u64) -> Result<Admitted, ProtocolError> {
        let Some((begun, resync_begun)) = self.begun else {
            return Err(ProtocolError::BeforeBegin {
                kind: FrameKind::ResyncDone,
                seq,
            });
        };
        if self.resync_done {
            return Err(ProtocolError::SecondResyncDone);
        }
        let received = self.next_seq - 1;
        let from = if resync_begun { begun } else { 0 };
        if !(from..=received).contains(&seq) {
            return Err(ProtocolError::ResyncDoneOutOfRange {
                from,
                received,
                got: seq,
            });
        }
        self.resync_done = true;
        Ok(Admitted::ResyncDone(seq))
    }
}

/// The chunk check a `Verify` frame carries, if its payload is one and its chunk starts
/// on a sector (its end is checked against the volume with the other ranges).
fn verify_check(frame: &Frame) -> Result<ChunkCheck, ProtocolError> {
    let header = &frame.header;
    let check = ChunkCheck::decode(&frame.payload)
        .ok_or(ProtocolError::BadVerifyPayload { seq: header.seq })?;
    if !header.offset.is_multiple_of(u64::from(SECTOR_SIZE)) {
        return Err(ProtocolError::MisalignedVerify {
            seq: header.seq,
            offset: header.offset,
        });
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arepl_core::wire::Header;

    const HISTORY: History = History {
        uuid: [7; 16],
        counter: 1,
    };

    fn begin_frame(seq: u64, resync: Option<u64>) -> Frame {
        let block = HistoryBlock {
            history: Some(HISTORY),
            flags: 0,
        }
        .encode();
        Frame::with_payload(Header::begin(seq, resync, &block), block.to_vec())
    }

    /// A session welcomed at `applied_seq` whose `Begin` was admitted.
    fn begun(applied_seq: u64, volume_size: u64) -> Sequencer {
        let mut sequencer = Sequencer::new(applied_seq, volume_size);
        assert!(matches!(
            sequencer.admit(begin_frame(applied_seq, None)),
            Ok(Admitted::Begin(_))
        ));
        sequencer
    }

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
        let mut sequencer = begun(41, 1 << 20);
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

    /// Found by reading the code next to the fuzz target: a resync `Begin` just below
    /// the end of the sequence space, then an entry at its last number, overflowed.
    #[test]
    fn the_last_sequence_number_is_refused_not_wrapped() {
        let mut sequencer = Sequencer::new(0, 1 << 20);
        let begin = sequencer.admit(begin_frame(u64::MAX - 1, Some(4096)));
        assert!(matches!(begin, Ok(Admitted::Begin(_))), "{begin:?}");
        assert_eq!(
            sequencer.admit(Frame::bare(Header::write_zeroes(u64::MAX, 0, 512))),
            Err(ProtocolError::SequenceExhausted)
        );
        assert_eq!(sequencer.next_seq(), u64::MAX);
    }

    #[test]
    fn refuses_gaps_and_ranges_past_the_end() {
        let mut sequencer = begun(0, 1 << 20);
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
        let mut sequencer = begun(10, 1 << 20);
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

    fn verify(seq: u64, offset: u64, check: ChunkCheck) -> Frame {
        let payload = check.encode();
        Frame::with_payload(Header::verify(seq, offset, &payload), payload.to_vec())
    }

    #[test]
    fn a_verify_is_an_entry_of_the_stream() {
        let mut sequencer = begun(6, 1 << 20);
        let check = ChunkCheck {
            hash: 77,
            len: 8192,
        };
        let entry = entry(sequencer.admit(verify(7, (1 << 20) - 8192, check)));
        assert_eq!(entry.seq, 7);
        assert_eq!(
            entry.op,
            Operation::Verify {
                offset: (1 << 20) - 8192,
                check
            }
        );
        assert!(!entry.demands_durability());
        // It enters the digest as the sender's header says.
        assert_eq!(
            entry.digest_term,
            Entry::new(7, entry.op.clone()).digest_term
        );
        assert_ne!(entry.digest_term, 0);
        assert_eq!(sequencer.next_seq(), 8);
        assert_eq!(
            sequencer.admit(verify(7, 0, check)),
            Ok(Admitted::Duplicate { seq: 7, applied: 7 })
        );
    }

    #[test]
    fn malformed_verifies_and_mismatches_from_the_sender_are_refused() {
        let mut sequencer = begun(6, 1 << 20);
        let check = ChunkCheck {
            hash: 77,
            len: 8192,
        };
        let err = sequencer
            .admit(verify(7, (1 << 20) - 4096, check))
            .unwrap_err();
        assert_eq!(
            err,
            ProtocolError::PastEnd {
                seq: 7,
                kind: FrameKind::Verify,
                offset: (1 << 20) - 4096,
                length: 8192,
                volume_size: 1 << 20
            }
        );
        assert!(err.to_string().contains("past the end"), "{err}");
        assert_eq!(
            sequencer.admit(verify(7, 4096 + 8, check)),
            Err(ProtocolError::MisalignedVerify {
                seq: 7,
                offset: 4104
            })
        );
        let mut reserved = check.encode();
        reserved[15] = 1;
        let bad = Frame::with_payload(Header::verify(7, 0, &reserved), reserved.to_vec());
        let err = sequencer.admit(bad).unwrap_err();
        assert_eq!(err, ProtocolError::BadVerifyPayload { seq: 7 });
        assert!(
            err.to_string().contains("malformed Verify payload"),
            "{err}"
        );
        for len in [0, 1000] {
            let bad = ChunkCheck { hash: 1, len }.encode();
            let bad = Frame::with_payload(Header::verify(7, 0, &bad), bad.to_vec());
            assert_eq!(
                sequencer.admit(bad),
                Err(ProtocolError::BadVerifyPayload { seq: 7 })
            );
        }
        // A duplicate is checked as fully.
        assert_eq!(
            sequencer.admit(verify(3, 1 << 20, check)),
            Err(ProtocolError::PastEnd {
                seq: 3,
                kind: FrameKind::Verify,
                offset: 1 << 20,
                length: 8192,
                volume_size: 1 << 20
            })
        );
        let err = sequencer
            .admit(Frame::bare(Header::mismatch(7, 0, 8192)))
            .unwrap_err();
        assert_eq!(err, ProtocolError::ReceiverFrame(FrameKind::Mismatch));
        assert_eq!(err.to_string(), "unexpected Mismatch frame from the sender");
        assert_eq!(sequencer.next_seq(), 7);
        // Like any entry, none before the Begin.
        let mut unbegun = Sequencer::new(6, 1 << 20);
        assert_eq!(
            unbegun.admit(verify(7, 0, check)),
            Err(ProtocolError::BeforeBegin {
                kind: FrameKind::Verify,
                seq: 7
            })
        );
    }

    #[test]
    fn pings_do_not_touch_the_sequence() {
        let mut sequencer = begun(3, 4096);
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
        let hello = arepl_core::wire::HelloPayload::new(
            &HistoryBlock::default(),
            &arepl_core::table::VolumeName::new("v").unwrap(),
        );
        let hello = hello.as_bytes().to_vec();
        assert_eq!(
            sequencer.admit(Frame::with_payload(Header::hello(0, 4096, &hello), hello)),
            Err(ProtocolError::SecondHello)
        );
        let block = HistoryBlock::default().encode();
        let welcome = Frame::with_payload(Header::welcome(0, 4096, &block), block.to_vec());
        for receiver_frame in [
            Frame::bare(Header::ack(1)),
            welcome,
            Frame::with_payload(Header::refuse(b""), &b""[..]),
        ] {
            let kind = receiver_frame.header.kind;
            assert_eq!(
                sequencer.admit(receiver_frame),
                Err(ProtocolError::ReceiverFrame(kind))
            );
        }
    }

    #[test]
    fn entries_follow_one_begin_at_the_welcomed_seq() {
        let mut sequencer = Sequencer::new(5, 1 << 20);
        // The opening digest and pings may come first; entries may not, even resent ones.
        let opening = Frame::bare(Header::digest(5, None));
        assert!(matches!(sequencer.admit(opening), Ok(Admitted::Check(_))));
        assert_eq!(
            sequencer.admit(Frame::bare(Header::ping())),
            Ok(Admitted::Ping)
        );
        for seq in [3, 6] {
            assert_eq!(
                sequencer.admit(write(seq, 0, 512, false)),
                Err(ProtocolError::BeforeBegin {
                    kind: FrameKind::Write,
                    seq
                })
            );
        }
        for (seq, resync) in [(4, None), (4, Some(1 << 20)), (6, None)] {
            assert_eq!(
                sequencer.admit(begin_frame(seq, resync)),
                Err(ProtocolError::BeginOutOfPlace {
                    welcomed: 5,
                    got: seq
                })
            );
        }
        let no_history = HistoryBlock::default().encode();
        let anonymous =
            Frame::with_payload(Header::begin(5, None, &no_history), no_history.to_vec());
        assert_eq!(
            sequencer.admit(anonymous),
            Err(ProtocolError::BeginWithoutHistory)
        );
        let mut bad = HistoryBlock::default().encode();
        bad[24] = 0x80;
        let bad = Frame::with_payload(Header::begin(5, None, &bad), bad.to_vec());
        assert_eq!(
            sequencer.admit(bad),
            Err(ProtocolError::BadHistoryBlock(FrameKind::Begin))
        );
        assert_eq!(
            sequencer.admit(begin_frame(5, Some(1 << 20))),
            Ok(Admitted::Begin(Begin {
                seq: 5,
                history: HISTORY,
                resync_bytes: Some(1 << 20)
            }))
        );
        assert_eq!(
            sequencer.admit(begin_frame(5, None)),
            Err(ProtocolError::SecondBegin)
        );
        assert_eq!(entry(sequencer.admit(write(6, 0, 512, false))).seq, 6);
    }

    #[test]
    fn a_resync_may_begin_past_the_welcomed_seq() {
        let mut sequencer = Sequencer::new(5, 1 << 20);
        assert!(matches!(
            sequencer.admit(begin_frame(9, Some(1 << 20))),
            Ok(Admitted::Begin(Begin { seq: 9, .. }))
        ));
        assert_eq!(
            sequencer.admit(write(6, 0, 512, false)),
            Ok(Admitted::Duplicate { seq: 6, applied: 9 })
        );
        assert_eq!(entry(sequencer.admit(write(10, 0, 512, false))).seq, 10);
        assert_eq!(
            sequencer.admit(Frame::bare(Header::resync_done(8))),
            Err(ProtocolError::ResyncDoneOutOfRange {
                from: 9,
                received: 10,
                got: 8
            })
        );
    }

    #[test]
    fn resync_done_names_an_entry_between_begin_and_the_last_received() {
        let mut early = Sequencer::new(5, 1 << 20);
        assert_eq!(
            early.admit(Frame::bare(Header::resync_done(5))),
            Err(ProtocolError::BeforeBegin {
                kind: FrameKind::ResyncDone,
                seq: 5
            })
        );
        let mut sequencer = Sequencer::new(5, 1 << 20);
        sequencer.admit(begin_frame(5, Some(1 << 20))).unwrap();
        entry(sequencer.admit(write(6, 0, 512, false)));
        entry(sequencer.admit(write(7, 0, 512, false)));
        for got in [4, 8] {
            assert_eq!(
                sequencer.admit(Frame::bare(Header::resync_done(got))),
                Err(ProtocolError::ResyncDoneOutOfRange {
                    from: 5,
                    received: 7,
                    got
                })
            );
        }
        assert_eq!(
            sequencer.admit(Frame::bare(Header::resync_done(7))),
            Ok(Admitted::ResyncDone(7))
        );
        assert_eq!(
            sequencer.admit(Frame::bare(Header::resync_done(7))),
            Err(ProtocolError::SecondResyncDone)
        );
        // An empty resync ends where it began.
        let mut empty = Sequencer::new(5, 1 << 20);
        empty.admit(begin_frame(5, Some(1 << 20))).unwrap();
        assert_eq!(
            empty.admit(Frame::bare(Header::resync_done(5))),
            Ok(Admitted::ResyncDone(5))
        );
        // A session continuing a resync may name its last entry from before the Begin
        // (durable before the link broke), not one it has not received.
        let mut continuing = begun(5, 1 << 20);
        assert_eq!(
            continuing.admit(Frame::bare(Header::resync_done(3))),
            Ok(Admitted::ResyncDone(3))
        );
        let mut continuing = begun(5, 1 << 20);
        assert_eq!(
            continuing.admit(Frame::bare(Header::resync_done(6))),
            Err(ProtocolError::ResyncDoneOutOfRange {
                from: 0,
                received: 5,
                got: 6
            })
        );
    }
}
