// SPDX-License-Identifier: GPL-2.0

//! A safe view of one `struct bio` handed to a target's map callback.

use kernel::prelude::*;

use crate::bindings;
use crate::dm::DmDevice;

/// What a bio asks the device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BioKind {
    /// Read data.
    Read,
    /// Write data (possibly with REQ_PREFLUSH or REQ_FUA).
    Write,
    /// An empty write with REQ_PREFLUSH: make earlier completed writes durable.
    Flush,
    /// Write zeroes over a range.
    WriteZeroes,
    /// Anything else (discard, zone management, secure erase, driver-private operations):
    /// never offered by the target, see `DmTarget::set_passdown_bios`.
    Other,
}

/// One bio, borrowed for the duration of a map callback.
///
/// Invariant: `raw` points to a live bio that device-mapper passed to the target's map
/// callback, and the bio stays owned by device-mapper until that callback returns; `'a`
/// is bounded by that callback.
pub(crate) struct Bio<'a> {
    raw: *mut bindings::bio,
    /// First sector of the target within the mapped device (`ti->begin`).
    target_begin: u64,
    _callback: core::marker::PhantomData<&'a mut bindings::bio>,
}

impl<'a> Bio<'a> {
    /// Wraps a bio passed to a map callback.
    ///
    /// # Safety
    ///
    /// `raw` must be the bio device-mapper passed to the current map callback of the
    /// target whose `ti->begin` is `target_begin`, and the result must not outlive that
    /// callback.
    pub(crate) unsafe fn from_raw(raw: *mut bindings::bio, target_begin: u64) -> Self {
        Self {
            raw,
            target_begin,
            _callback: core::marker::PhantomData,
        }
    }

    /// The operation this bio requests.
    pub(crate) fn kind(&self) -> BioKind {
        // SAFETY: `self.raw` is a live bio (type invariant); the helper only reads it.
        let op = unsafe { bindings::arepl_bio_op(self.raw) };
        match op {
            bindings::req_op_REQ_OP_READ => BioKind::Read,
            bindings::req_op_REQ_OP_WRITE if self.size() == 0 && self.is_preflush() => {
                BioKind::Flush
            }
            bindings::req_op_REQ_OP_WRITE => BioKind::Write,
            bindings::req_op_REQ_OP_WRITE_ZEROES => BioKind::WriteZeroes,
            _ => BioKind::Other,
        }
    }

    /// Whether the bio carries REQ_PREFLUSH.
    pub(crate) fn is_preflush(&self) -> bool {
        // SAFETY: `self.raw` is a live bio (type invariant); the helper only reads it.
        unsafe { bindings::arepl_bio_is_preflush(self.raw) }
    }

    /// Whether the bio carries REQ_FUA.
    pub(crate) fn is_fua(&self) -> bool {
        // SAFETY: `self.raw` is a live bio (type invariant); the helper only reads it.
        unsafe { bindings::arepl_bio_is_fua(self.raw) }
    }

    /// Payload size in bytes.
    pub(crate) fn size(&self) -> u32 {
        // SAFETY: `self.raw` is a live bio (type invariant); the helper only reads it.
        unsafe { bindings::arepl_bio_size(self.raw) }
    }

    /// Appends a copy of the payload to `dst`, which must be empty with room for
    /// [`Self::size`] bytes (so nothing is zeroed just to be overwritten).
    pub(crate) fn copy_data_into(&self, dst: &mut KVVec<u8>) {
        let len = self.size() as usize;
        assert!(dst.is_empty() && dst.capacity() >= len);
        let spare = dst.spare_capacity_mut();
        // SAFETY: `self.raw` is a live bio whose payload is `len` bytes, and `spare` is
        // writable memory of at least `len` bytes owned by `dst`.
        unsafe { bindings::arepl_bio_copy_data(self.raw, spare.as_mut_ptr().cast()) };
        // SAFETY: the helper initialised exactly the first `len` bytes.
        unsafe { dst.set_len(len) };
    }

    /// Start of the bio within the target, in bytes.
    pub(crate) fn target_offset_bytes(&self) -> u64 {
        // SAFETY: `self.raw` is a live bio (type invariant); the helper only reads it.
        let sector = unsafe { bindings::arepl_bio_sector(self.raw) };
        (sector - self.target_begin) << 9
    }

    /// The target's per-bio data area, typed.
    ///
    /// # Safety
    ///
    /// The target's `per_io_data_size` must be `size_of::<P>()`.
    pub(crate) unsafe fn per_bio_data<P>(&self) -> *mut P {
        // SAFETY: `self.raw` is a live bio mapped by this target; per the contract the
        // area holds at least `size_of::<P>()` bytes, aligned for any scalar type.
        unsafe { bindings::arepl_bio_per_bio_data(self.raw, core::mem::size_of::<P>()).cast() }
    }

    /// Redirects the bio to `dev`, at the same offset it has within this target.
    ///
    /// Bios without a payload (flushes) carry no meaningful sector and keep theirs.
    pub(crate) fn remap_to(&mut self, dev: &DmDevice) {
        // SAFETY: `self.raw` is a live bio owned by device-mapper for the duration of
        // the map callback, which lets the target change its device and sector; `dev`
        // is held by this target's table, so its block device outlives the bio.
        unsafe {
            bindings::arepl_bio_set_dev(self.raw, dev.bdev());
            if self.size() != 0 {
                let sector = bindings::arepl_bio_sector(self.raw);
                bindings::arepl_bio_set_sector(self.raw, sector - self.target_begin);
            }
        }
    }
}
