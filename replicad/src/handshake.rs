//! Deciding whether a `Hello` may start a session.

use std::fmt;

use arepl_core::history::HistoryBlock;
use arepl_core::table::VolumeName;
use arepl_core::wire::{FrameKind, HelloPayload, MAX_REASON_LEN};

use crate::codec::Frame;
use crate::sequencer::ProtocolError;
use crate::state::{ReplicaState, VolumeIdentity};

/// A sender's `Hello`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Oldest sequence the sender still holds; 0 before its first completed handshake.
    pub oldest_seq: u64,
    /// The volume the sender replicates.
    pub identity: VolumeIdentity,
    /// The history the sender continues, as it says (its `Begin` is what counts).
    pub history: HistoryBlock,
}

/// Why a session is refused; sent to the sender in a `Refuse` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(String);

impl Refusal {
    fn new(reason: String) -> Self {
        Self(reason)
    }

    /// The reason as sent on the wire: cut to the protocol's limit at a char boundary.
    pub fn wire_reason(&self) -> &[u8] {
        let mut end = self.0.len().min(MAX_REASON_LEN as usize);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        &self.0.as_bytes()[..end]
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an accepted handshake relates to the recorded state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The volume is the recorded one.
    Resume,
    /// No volume was recorded yet: record this one before welcoming.
    FirstContact(VolumeIdentity),
}

impl Hello {
    /// Decodes a `Hello` frame. Another kind, or a malformed history block, breaks the
    /// protocol (`Err`); an unusable volume name is refused (`Ok(Err)`).
    pub fn from_frame(frame: &Frame) -> Result<Result<Self, Refusal>, ProtocolError> {
        if frame.header.kind != FrameKind::Hello {
            return Err(ProtocolError::ExpectedHello(frame.header.kind));
        }
        let (history, name) = HelloPayload::split(&frame.payload)
            .ok_or(ProtocolError::BadHistoryBlock(FrameKind::Hello))?;
        let name = std::str::from_utf8(name)
            .ok()
            .and_then(VolumeName::new)
            .ok_or_else(|| {
                Refusal::new(format!(
                    "invalid volume name {:?}: 1 to 64 characters from [A-Za-z0-9._-]",
                    String::from_utf8_lossy(name)
                ))
            });
        Ok(name.map(|name| Hello {
            oldest_seq: frame.header.seq,
            identity: VolumeIdentity {
                name,
                size: frame.header.offset,
            },
            history,
        }))
    }
}

/// Checks the volume identity only: cheap, and done before a new connection may take
/// over an active session, so a misconfigured sender cannot disturb the right one.
pub fn check_identity(hello: &Hello, recorded: Option<&VolumeIdentity>) -> Result<(), Refusal> {
    match recorded {
        Some(recorded) if *recorded != hello.identity => Err(Refusal::new(format!(
            "volume mismatch: this receiver replicates {:?} of {} bytes, sender offers {:?} of {} bytes",
            recorded.name.as_str(),
            recorded.size,
            hello.identity.name.as_str(),
            hello.identity.size
        ))),
        _ => Ok(()),
    }
}

/// Decides on `hello` given the persisted state and the target's size.
pub fn admit(hello: &Hello, state: &ReplicaState, target_len: u64) -> Result<Admission, Refusal> {
    check_identity(hello, state.identity.as_ref())?;
    let size = hello.identity.size;
    if size == 0 {
        return Err(Refusal::new("volume size 0".to_string()));
    }
    if size > target_len {
        return Err(Refusal::new(format!(
            "volume of {size} bytes does not fit the {target_len}-byte target"
        )));
    }
    let durable = state.durable_seq;
    if hello.oldest_seq != 0 && hello.oldest_seq > durable.saturating_add(1) {
        return Err(Refusal::new(format!(
            "sequence gap: receiver durable at {durable}, sender's oldest held entry is {}",
            hello.oldest_seq
        )));
    }
    Ok(match state.identity {
        Some(_) => Admission::Resume,
        None => Admission::FirstContact(hello.identity.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arepl_core::wire::Header;

    /// A `Hello` frame whose payload is a default history block and `name`'s bytes.
    fn hello_frame(oldest_seq: u64, size: u64, name: &[u8]) -> Frame {
        let mut payload = HistoryBlock::default().encode().to_vec();
        payload.extend_from_slice(name);
        Frame::with_payload(Header::hello(oldest_seq, size, &payload), payload)
    }

    fn hello(oldest_seq: u64, size: u64, name: &str) -> Hello {
        let frame = hello_frame(oldest_seq, size, name.as_bytes());
        Hello::from_frame(&frame).unwrap().unwrap()
    }

    fn recorded(durable_seq: u64) -> ReplicaState {
        ReplicaState {
            durable_seq,
            identity: Some(hello(0, 1 << 20, "db").identity),
            ..ReplicaState::default()
        }
    }

    #[test]
    fn first_contact_records_the_volume_if_it_fits() {
        let state = ReplicaState::default();
        assert_eq!(
            admit(&hello(0, 1 << 20, "db"), &state, 2 << 20),
            Ok(Admission::FirstContact(hello(0, 1 << 20, "db").identity))
        );
        let refusal = admit(&hello(0, 4 << 20, "db"), &state, 2 << 20).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "volume of 4194304 bytes does not fit the 2097152-byte target"
        );
    }

    #[test]
    fn later_contacts_must_match_the_recorded_volume() {
        let state = recorded(10);
        assert_eq!(
            admit(&hello(5, 1 << 20, "db"), &state, 1 << 20),
            Ok(Admission::Resume)
        );
        let wrong_name = admit(&hello(0, 1 << 20, "other"), &state, 1 << 20).unwrap_err();
        assert!(wrong_name.to_string().starts_with("volume mismatch"));
        assert!(admit(&hello(0, 2 << 20, "db"), &state, 4 << 20).is_err());
        assert_eq!(
            check_identity(&hello(0, 2 << 20, "db"), state.identity.as_ref()),
            Err(wrong_size_refusal())
        );
    }

    fn wrong_size_refusal() -> Refusal {
        Refusal::new(
            "volume mismatch: this receiver replicates \"db\" of 1048576 bytes, \
             sender offers \"db\" of 2097152 bytes"
                .to_string(),
        )
    }

    #[test]
    fn refuses_a_sender_that_no_longer_holds_the_next_entry() {
        let state = recorded(10);
        assert!(admit(&hello(11, 1 << 20, "db"), &state, 1 << 20).is_ok());
        assert_eq!(
            admit(&hello(12, 1 << 20, "db"), &state, 1 << 20)
                .unwrap_err()
                .to_string(),
            "sequence gap: receiver durable at 10, sender's oldest held entry is 12"
        );
        // 0: the sender never completed a handshake, it holds everything it will send.
        assert!(admit(&hello(0, 1 << 20, "db"), &state, 1 << 20).is_ok());
    }

    #[test]
    fn invalid_names_and_long_reasons() {
        let frame = hello_frame(0, 512, b"a b");
        let refusal = Hello::from_frame(&frame).unwrap().unwrap_err();
        assert!(refusal
            .to_string()
            .starts_with("invalid volume name \"a b\""));
        assert_eq!(
            Hello::from_frame(&Frame::bare(Header::flush(1))),
            Err(ProtocolError::ExpectedHello(FrameKind::Flush))
        );
        let long = Refusal::new("é".repeat(200));
        assert!(long.wire_reason().len() <= MAX_REASON_LEN as usize);
        assert!(std::str::from_utf8(long.wire_reason()).is_ok());
    }

    #[test]
    fn the_history_block_is_decoded_and_a_malformed_one_is_a_protocol_error() {
        let block = HistoryBlock {
            history: Some(arepl_core::history::History::new([3; 16])),
            flags: 0,
        };
        let mut payload = block.encode().to_vec();
        payload.extend_from_slice(b"db");
        let frame = Frame::with_payload(Header::hello(0, 512, &payload), payload.clone());
        let hello = Hello::from_frame(&frame).unwrap().unwrap();
        assert_eq!((hello.history, hello.identity.name.as_str()), (block, "db"));
        payload[24] = 0x80; // an unknown flag
        let frame = Frame::with_payload(Header::hello(0, 512, &payload), payload);
        assert_eq!(
            Hello::from_frame(&frame),
            Err(ProtocolError::BadHistoryBlock(FrameKind::Hello))
        );
    }
}
