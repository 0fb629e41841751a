//! The identity of a replication history, and the handshake's decision whether a
//! sender may continue the replica's history, must resynchronise it, or is refused.
//!
//! A history is a random 128-bit identifier, created when a primary volume is first
//! paired with a replica (or copied onto one), plus a counter that rises by one with
//! every resync inside that history, like DRBD's generation identifiers. Both sides
//! record it: the primary in its spill/metadata superblock (or, without one, in the
//! module while it stays loaded), `replicad` in its state file. A sender continues the
//! replica's history only when it can prove it: the same identifier and counter, and
//! every entry after the replica's durable sequence still held. Anything else (a lost
//! queue, dropped entries, another primary's history) is a resync or a refusal, never a
//! silent continuation.

/// Bytes of an encoded [`HistoryBlock`] on the wire and on disk.
pub const HISTORY_BLOCK_LEN: usize = 32;

/// One replication history and its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Random identifier of the history, fixed from pairing on.
    pub uuid: [u8; 16],
    /// Generation inside the history: 1 at pairing, one more per resync.
    pub counter: u64,
}

impl History {
    /// A new history from 16 random bytes.
    pub fn new(uuid: [u8; 16]) -> Self {
        Self { uuid, counter: 1 }
    }

    /// The next generation of this history: what a resync runs under.
    #[must_use]
    pub fn next_generation(self) -> Self {
        Self {
            uuid: self.uuid,
            counter: self.counter + 1,
        }
    }

    /// The first 4 bytes of the identifier as a number, for short log lines.
    pub fn short_id(&self) -> u32 {
        u32::from_be_bytes([self.uuid[0], self.uuid[1], self.uuid[2], self.uuid[3]])
    }
}

impl core::fmt::Display for History {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, byte) in self.uuid.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        write!(f, ":{}", self.counter)
    }
}

/// On [`HistoryBlock`]: a history is recorded.
pub const HAS_HISTORY: u32 = 1;
/// Receiver: the replica is a consistent image of some earlier moment of the history.
pub const CONSISTENT: u32 = 2;
/// Receiver: a resync of this history began and is not complete.
pub const RESYNCING: u32 = 4;
const KNOWN_FLAGS: u32 = HAS_HISTORY | CONSISTENT | RESYNCING;

/// A history (or none) with flags, as sent in `Hello`, `Welcome` and `Resync` frames
/// and recorded in the spill superblock.
///
/// Layout, big-endian: identifier (16 bytes), counter (8), flags (4), zero (4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryBlock {
    /// The history, if one is recorded.
    pub history: Option<History>,
    /// [`CONSISTENT`] and [`RESYNCING`] (never [`HAS_HISTORY`]: that is `history`).
    pub flags: u32,
}

impl HistoryBlock {
    /// The 32 encoded bytes.
    pub fn encode(&self) -> [u8; HISTORY_BLOCK_LEN] {
        let mut out = [0u8; HISTORY_BLOCK_LEN];
        let mut flags = self.flags & !HAS_HISTORY;
        if let Some(history) = self.history {
            out[0..16].copy_from_slice(&history.uuid);
            out[16..24].copy_from_slice(&history.counter.to_be_bytes());
            flags |= HAS_HISTORY;
        }
        out[24..28].copy_from_slice(&flags.to_be_bytes());
        out
    }

    /// Decodes 32 bytes; `None` if they break the layout (unknown flags, nonzero
    /// padding, a counter of 0, or identifier bytes without [`HAS_HISTORY`]).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != HISTORY_BLOCK_LEN || bytes[28..32] != [0; 4] {
            return None;
        }
        let flags = u32::from_be_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
        if flags & !KNOWN_FLAGS != 0 {
            return None;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[0..16]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&bytes[16..24]);
        let counter = u64::from_be_bytes(counter);
        let history = if flags & HAS_HISTORY != 0 {
            if counter == 0 {
                return None;
            }
            Some(History { uuid, counter })
        } else {
            if counter != 0 || uuid != [0; 16] {
                return None;
            }
            None
        };
        Some(Self {
            history,
            flags: flags & !HAS_HISTORY,
        })
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// What the sender knows at a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderView {
    /// The history this device continues: from its superblock, from its previous
    /// table while the module stayed loaded, or the one it started this lifetime.
    pub history: Option<History>,
    /// The device lost entries of that history (an unclean shutdown of the primary,
    /// or entries dropped): it cannot continue it without a resync.
    pub lost_entries: bool,
    /// It holds every entry after the receiver's durable sequence, so nothing between
    /// the replica's state and its queue is missing.
    pub holds_next: bool,
    /// The table asks for a copy of the whole volume, not yet begun.
    pub copy_requested: bool,
    /// It keeps its history on a metadata (spill) device, so a resync of it may start
    /// without the operator: the resync continues its own history.
    pub may_resync_itself: bool,
    /// It began a resync under `history` in this lifetime and is still running it, so
    /// a replica found resyncing under that history is its own resync, to continue.
    pub resync_running: bool,
    /// It tracked regions whose writes it did not queue (queue full without a link, or
    /// no memory): those regions need a resync.
    pub dirty_regions: bool,
    /// It keeps an activity log: every region the replica may lack within its history
    /// (lost entries, an interrupted copy, tracked writes) is marked there, so a resync
    /// of the marked regions suffices.
    pub regions_known: bool,
}

/// What the receiver said in its `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaView {
    /// The replica's history; `None` for a replica that never had one (new, or
    /// written by a replicad before histories).
    pub history: Option<History>,
    /// Its durable sequence.
    pub durable_seq: u64,
    /// A resync of its history began and did not complete.
    pub resyncing: bool,
}

/// The handshake's outcome, decided by the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Stream the entries after the replica's durable sequence under this history.
    Continue(History),
    /// Tell the receiver a resync under this history begins (it protects its last
    /// consistent image first), then stream the queue and a copy of `ResyncScope`.
    Resync(History, ResyncScope),
    /// The device cannot prove it continues the replica's history and may not
    /// resync it on its own.
    Refuse(Refusal),
}

/// What a resync copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncScope {
    /// Every byte of the volume: what the replica lacks is not known.
    WholeVolume,
    /// The regions the sender tracked; the replica holds everything else.
    DirtyRegions,
}

/// Why a sender may not stream to a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The replica has a history this device has no record of (module reloaded or
    /// primary rebooted without a metadata device, or another primary's volume).
    Unknown,
    /// The replica belongs to another history than this device's.
    OtherHistory,
    /// This device lost entries of the replica's history and keeps no metadata that
    /// would let it resync on its own.
    LostEntries,
}

impl Refusal {
    /// What the kernel log says about it, after the volume and receiver.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Unknown => {
                "the replica holds a history this device has no record of (the module was \
                 reloaded or the primary restarted without a spill/metadata device, or the \
                 replica is another primary's); refusing to continue it blindly: create the \
                 device with sync:full to copy the volume under a new history"
            }
            Self::OtherHistory => {
                "the replica holds another history than this device's (another primary's \
                 volume?); create the device with sync:full to overwrite it with a copy"
            }
            Self::LostEntries => {
                "this device lost entries the replica lacks (dropped at remove, or a crash) \
                 and has no metadata device to resync on its own: create it with sync:full"
            }
        }
    }
}

/// Decides a handshake. `fresh` gives a new random history when one must start.
pub fn decide(
    sender: &SenderView,
    replica: &ReplicaView,
    fresh: impl FnOnce() -> History,
) -> Decision {
    let whole = |history| Decision::Resync(history, ResyncScope::WholeVolume);
    if sender.copy_requested {
        // The operator asked for a copy: a new history, whatever the replica had.
        return whole(fresh());
    }
    let Some(replica_history) = replica.history else {
        return match sender.history {
            // A replica without a history: a new pairing, the replica asserted equal
            // to the volume (`sync:none`), or a replica from before histories that
            // this device continues by sequence.
            None => Decision::Continue(fresh()),
            Some(ours) if sender.holds_next && !sender.lost_entries => Decision::Continue(ours),
            Some(ours) if sender.may_resync_itself => whole(ours.next_generation()),
            Some(_) => Decision::Refuse(Refusal::LostEntries),
        };
    };
    let Some(ours) = sender.history else {
        return Decision::Refuse(Refusal::Unknown);
    };
    if ours.uuid != replica_history.uuid {
        return Decision::Refuse(Refusal::OtherHistory);
    }
    let intact = sender.holds_next && !sender.lost_entries;
    if intact && ours == replica_history && (!replica.resyncing || sender.resync_running) {
        if sender.dirty_regions {
            // Everything is held but the tracked regions: copy those.
            return Decision::Resync(ours.next_generation(), ResyncScope::DirtyRegions);
        }
        return Decision::Continue(ours);
    }
    // Same history, but the replica is mid-resync, at another generation, or lacks
    // entries this device no longer has: only a resync brings it back. The activity
    // log names the regions it may lack, unless the replica went past this device's
    // generation (its record is older than the replica's).
    if sender.regions_known && replica_history.counter <= ours.counter {
        return Decision::Resync(ours.next_generation(), ResyncScope::DirtyRegions);
    }
    // Otherwise the whole volume. This device may copy it while it holds its whole
    // queue, or when its metadata let it find out what it lost.
    if intact || sender.may_resync_itself {
        let counter = ours.counter.max(replica_history.counter);
        return whole(History {
            uuid: ours.uuid,
            counter: counter + 1,
        });
    }
    Decision::Refuse(Refusal::LostEntries)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    const A: History = History {
        uuid: [0xA1; 16],
        counter: 3,
    };
    const NEW: History = History {
        uuid: [0x77; 16],
        counter: 1,
    };

    fn sender(history: Option<History>) -> SenderView {
        SenderView {
            history,
            lost_entries: false,
            holds_next: true,
            copy_requested: false,
            may_resync_itself: false,
            resync_running: false,
            dirty_regions: false,
            regions_known: false,
        }
    }

    fn replica(history: Option<History>) -> ReplicaView {
        ReplicaView {
            history,
            durable_seq: 100,
            resyncing: false,
        }
    }

    fn run(sender: SenderView, replica: ReplicaView) -> Decision {
        decide(&sender, &replica, || NEW)
    }

    #[test]
    fn golden_block() {
        let block = HistoryBlock {
            history: Some(History {
                uuid: *b"0123456789abcdef",
                counter: 0x0102,
            }),
            flags: CONSISTENT,
        };
        let bytes = block.encode();
        assert_eq!(&bytes[0..16], b"0123456789abcdef");
        assert_eq!(&bytes[16..24], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&bytes[24..32], &[0, 0, 0, 3, 0, 0, 0, 0]);
        assert_eq!(HistoryBlock::decode(&bytes), Some(block));
        assert_eq!(
            HistoryBlock::decode(&[0; HISTORY_BLOCK_LEN]),
            Some(HistoryBlock::default())
        );
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let good = HistoryBlock {
            history: Some(A),
            flags: RESYNCING,
        }
        .encode();
        let mut unknown_flag = good;
        unknown_flag[24] = 0x80;
        let mut padding = good;
        padding[31] = 1;
        let mut no_flag_but_id = good;
        no_flag_but_id[27] = 0;
        let mut zero_counter = good;
        zero_counter[16..24].fill(0);
        for bad in [unknown_flag, padding, no_flag_but_id, zero_counter] {
            assert_eq!(HistoryBlock::decode(&bad), None);
        }
        assert_eq!(HistoryBlock::decode(&good[..31]), None);
    }

    #[test]
    fn display_is_uuid_and_counter() {
        assert_eq!(format!("{A}"), "a1a1a1a1-a1a1-a1a1-a1a1-a1a1a1a1a1a1:3");
        assert_eq!(A.short_id(), 0xA1A1_A1A1);
    }

    #[test]
    fn a_new_pairing_starts_a_history() {
        assert_eq!(run(sender(None), replica(None)), Decision::Continue(NEW));
        let copy = SenderView {
            copy_requested: true,
            ..sender(None)
        };
        assert_eq!(
            run(copy, replica(None)),
            Decision::Resync(NEW, ResyncScope::WholeVolume)
        );
    }

    #[test]
    fn the_same_history_with_every_entry_held_continues() {
        assert_eq!(
            run(sender(Some(A)), replica(Some(A))),
            Decision::Continue(A)
        );
    }

    #[test]
    fn a_device_without_a_record_is_refused_unless_it_copies() {
        assert_eq!(
            run(sender(None), replica(Some(A))),
            Decision::Refuse(Refusal::Unknown)
        );
        let copy = SenderView {
            copy_requested: true,
            ..sender(None)
        };
        assert!(matches!(
            run(copy, replica(Some(A))),
            Decision::Resync(NEW, ResyncScope::WholeVolume)
        ));
    }

    #[test]
    fn another_primarys_replica_is_refused() {
        let other = History {
            uuid: [0xB2; 16],
            counter: 3,
        };
        let meta = SenderView {
            may_resync_itself: true,
            ..sender(Some(A))
        };
        assert_eq!(
            run(meta, replica(Some(other))),
            Decision::Refuse(Refusal::OtherHistory)
        );
    }

    #[test]
    fn lost_entries_resync_with_metadata_and_are_refused_without() {
        let lost = SenderView {
            lost_entries: true,
            ..sender(Some(A))
        };
        assert_eq!(
            run(lost, replica(Some(A))),
            Decision::Refuse(Refusal::LostEntries)
        );
        let gap = SenderView {
            holds_next: false,
            ..sender(Some(A))
        };
        assert_eq!(
            run(gap, replica(Some(A))),
            Decision::Refuse(Refusal::LostEntries)
        );
        let crashed = SenderView {
            may_resync_itself: true,
            ..lost
        };
        assert_eq!(
            run(crashed, replica(Some(A))),
            Decision::Resync(A.next_generation(), ResyncScope::WholeVolume)
        );
    }

    #[test]
    fn an_activity_log_narrows_every_resync_of_its_history_to_regions() {
        let logged = SenderView {
            regions_known: true,
            may_resync_itself: true,
            lost_entries: true,
            holds_next: false,
            ..sender(Some(A))
        };
        let regions = Decision::Resync(A.next_generation(), ResyncScope::DirtyRegions);
        assert_eq!(run(logged, replica(Some(A))), regions, "crash recovery");
        let interrupted = ReplicaView {
            resyncing: true,
            ..replica(Some(A))
        };
        let resumed = SenderView {
            lost_entries: false,
            holds_next: true,
            ..logged
        };
        assert_eq!(
            run(resumed, interrupted),
            regions,
            "an interrupted copy resumes"
        );
        // A replica past this device's generation, or without a history: everything.
        let ahead = replica(Some(A.next_generation()));
        assert_eq!(
            run(logged, ahead),
            Decision::Resync(
                A.next_generation().next_generation(),
                ResyncScope::WholeVolume
            )
        );
        assert_eq!(
            run(logged, replica(None)),
            Decision::Resync(A.next_generation(), ResyncScope::WholeVolume)
        );
        // Another primary's replica stays refused.
        let other = History {
            uuid: [0xC3; 16],
            counter: 1,
        };
        assert_eq!(
            run(logged, replica(Some(other))),
            Decision::Refuse(Refusal::OtherHistory)
        );
    }

    #[test]
    fn a_replica_mid_resync_or_ahead_is_resynced_again() {
        let resyncing = ReplicaView {
            resyncing: true,
            ..replica(Some(A))
        };
        assert_eq!(
            run(sender(Some(A)), resyncing),
            Decision::Resync(A.next_generation(), ResyncScope::WholeVolume)
        );
        // Regions tracked instead of queued: only those are copied.
        let dirty = SenderView {
            dirty_regions: true,
            ..sender(Some(A))
        };
        assert_eq!(
            run(dirty, replica(Some(A))),
            Decision::Resync(A.next_generation(), ResyncScope::DirtyRegions)
        );
        // Its own resync, interrupted by a lost link: continued, not begun again.
        let running = SenderView {
            resync_running: true,
            ..sender(Some(A))
        };
        assert_eq!(run(running, resyncing), Decision::Continue(A));
        let ahead = A.next_generation().next_generation();
        assert_eq!(
            run(sender(Some(A)), replica(Some(ahead))),
            Decision::Resync(ahead.next_generation(), ResyncScope::WholeVolume)
        );
    }

    #[test]
    fn a_replica_without_history_is_continued_only_by_sequence() {
        // From a replicad before histories: continued when every entry is held.
        assert_eq!(run(sender(Some(A)), replica(None)), Decision::Continue(A));
        let gap = SenderView {
            holds_next: false,
            ..sender(Some(A))
        };
        assert_eq!(
            run(gap, replica(None)),
            Decision::Refuse(Refusal::LostEntries)
        );
        let meta = SenderView {
            may_resync_itself: true,
            ..gap
        };
        assert_eq!(
            run(meta, replica(None)),
            Decision::Resync(A.next_generation(), ResyncScope::WholeVolume)
        );
    }
}
