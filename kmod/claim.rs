// SPDX-License-Identifier: GPL-2.0

//! One live target per replicated volume.
//!
//! Two targets streaming into one volume would interleave two sequences on the replica.
//! That happens with two devices given the same `volume:`, and with `dmsetup reload` of
//! a live device, whose new table is built while the old one still streams; both are
//! refused until a reload can hand the queue over.

use kernel::prelude::*;

use crate::bindings;
use crate::table::{VolumeName, MAX_VOLUME_LEN};

/// The claim on a volume name, released on drop.
pub(crate) struct VolumeClaim {
    name: [u8; MAX_VOLUME_LEN + 1],
}

impl VolumeClaim {
    /// Claims `volume`; `EBUSY` if a live target has it.
    pub(crate) fn new(volume: &VolumeName) -> Result<Self> {
        let mut name = [0u8; MAX_VOLUME_LEN + 1];
        name[..volume.as_str().len()].copy_from_slice(volume.as_str().as_bytes());
        // SAFETY: `name` is NUL-terminated (a volume name is at most MAX_VOLUME_LEN bytes
        // and the array is one longer) and only read during the call.
        kernel::error::to_result(unsafe { bindings::arepl_volume_claim(name.as_ptr()) })?;
        Ok(Self { name })
    }
}

impl Drop for VolumeClaim {
    fn drop(&mut self) {
        // SAFETY: `name` is the NUL-terminated name claimed in `new`.
        unsafe { bindings::arepl_volume_release(self.name.as_ptr()) };
    }
}
