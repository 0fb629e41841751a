// SPDX-License-Identifier: GPL-2.0

//! One live target per replicated volume, and the history a removed one left.
//!
//! Two targets streaming into one volume would interleave two sequences on the replica.
//! That happens with two devices given the same `volume:`, and with `dmsetup reload` of
//! a live device, whose new table is built while the old one still streams; both are
//! refused until a reload can hand the queue over.
//!
//! A target removed with nothing unsent leaves its history behind, so a target created
//! again for the volume while the module stays loaded continues it (without a spill
//! device there is no other record of it), and an unfinished copy of the whole volume
//! resumes where it stood.

use kernel::prelude::*;

use crate::bindings;
use crate::history::{History, HistoryBlock, HISTORY_BLOCK_LEN};
use crate::table::{VolumeName, MAX_VOLUME_LEN};

const REMEMBERED_LEN: usize = bindings::AREPL_REMEMBERED_LEN as usize;

/// What a target removed cleanly hands to the next one for its volume.
#[derive(Clone, Copy)]
pub(crate) struct Remembered {
    pub(crate) history: History,
    /// Wire sequence of the last entry, acknowledged by the replica.
    pub(crate) last_wire_seq: u64,
    /// An unfinished copy of the whole volume had queued (and the replica holds) every
    /// byte before this offset, and none after.
    pub(crate) copy_from: Option<u64>,
}

/// `copy_from` on record when there is none.
const NO_COPY: u64 = u64::MAX;

impl Remembered {
    fn encode(&self) -> [u8; REMEMBERED_LEN] {
        let mut out = [0u8; REMEMBERED_LEN];
        let block = HistoryBlock {
            history: Some(self.history),
            flags: 0,
        };
        out[..HISTORY_BLOCK_LEN].copy_from_slice(&block.encode());
        out[HISTORY_BLOCK_LEN..HISTORY_BLOCK_LEN + 8]
            .copy_from_slice(&self.last_wire_seq.to_be_bytes());
        out[HISTORY_BLOCK_LEN + 8..]
            .copy_from_slice(&self.copy_from.unwrap_or(NO_COPY).to_be_bytes());
        out
    }

    fn decode(bytes: &[u8; REMEMBERED_LEN]) -> Option<Self> {
        let history = HistoryBlock::decode(&bytes[..HISTORY_BLOCK_LEN])?.history?;
        let be64 = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(word)
        };
        let copy_from = be64(HISTORY_BLOCK_LEN + 8);
        Some(Self {
            history,
            last_wire_seq: be64(HISTORY_BLOCK_LEN),
            copy_from: (copy_from != NO_COPY).then_some(copy_from),
        })
    }
}

/// The claim on a volume name, released on drop.
pub(crate) struct VolumeClaim {
    name: [u8; MAX_VOLUME_LEN + 1],
    /// Left for the next target of the volume when this one is dropped.
    leave: Option<Remembered>,
}

impl VolumeClaim {
    /// Claims `volume`, taking what a target removed before left; `EBUSY` if a live
    /// target has it.
    pub(crate) fn new(volume: &VolumeName) -> Result<(Self, Option<Remembered>)> {
        let mut name = [0u8; MAX_VOLUME_LEN + 1];
        name[..volume.as_str().len()].copy_from_slice(volume.as_str().as_bytes());
        let mut remembered = [0u8; REMEMBERED_LEN];
        let mut found = false;
        // SAFETY: `name` is NUL-terminated (a volume name is at most MAX_VOLUME_LEN bytes
        // and the array is one longer), `remembered` has the AREPL_REMEMBERED_LEN bytes
        // the helper may write, and all three are only used during the call.
        kernel::error::to_result(unsafe {
            bindings::arepl_volume_claim(name.as_ptr(), remembered.as_mut_ptr(), &mut found)
        })?;
        let taken = if found { Remembered::decode(&remembered) } else { None };
        Ok((Self { name, leave: None }, taken))
    }

    /// What the next target of this volume continues from, once this one is gone.
    pub(crate) fn leave(&mut self, remembered: Remembered) {
        self.leave = Some(remembered);
    }
}

impl Drop for VolumeClaim {
    fn drop(&mut self) {
        let remembered = self.leave.map(|r| r.encode());
        let ptr = remembered.as_ref().map_or(core::ptr::null(), |r| r.as_ptr());
        // SAFETY: `name` is the NUL-terminated name claimed in `new`; `ptr` is null or
        // points at AREPL_REMEMBERED_LEN bytes that live until the call returns.
        unsafe { bindings::arepl_volume_release(self.name.as_ptr(), ptr) };
    }
}

/// Forgets every remembered history (module unload).
pub(crate) fn forget_all() {
    // SAFETY: takes no arguments; the helper locks the list itself.
    unsafe { bindings::arepl_volumes_forget() };
}

/// 16 random bytes for a new history's identifier.
pub(crate) fn random_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    // SAFETY: `uuid` is 16 writable bytes for the duration of the call.
    unsafe { bindings::arepl_random_bytes(uuid.as_mut_ptr(), uuid.len()) };
    uuid
}
