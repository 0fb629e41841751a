// SPDX-License-Identifier: GPL-2.0

//! A safe view of one `struct bio` handed to a target's map callback.

use core::marker::PhantomData;
use core::ptr::NonNull;

use kernel::prelude::*;

use crate::bindings;
use crate::dm::DmDevice;
use crate::payload::Payload;

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
    /// Handed over by [`Self::defer`]: device-mapper must not submit it.
    deferred: bool,
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
            deferred: false,
            _callback: core::marker::PhantomData,
        }
    }

    /// Takes the bio over from device-mapper, to be submitted later from a thread
    /// that may wait for I/O (a map callback may not: its own bios are held back by
    /// the block layer until it returns). It must have been remapped first; `P` must
    /// be the target's per-bio type.
    pub(crate) fn defer<P>(&mut self) -> DeferredBio<P> {
        self.deferred = true;
        DeferredBio {
            // SAFETY: `self.raw` is a live bio (type invariant), never NULL.
            raw: unsafe { NonNull::new_unchecked(self.raw) },
            _per_bio: PhantomData,
        }
    }

    /// Whether [`Self::defer`] took the bio over.
    pub(crate) fn is_deferred(&self) -> bool {
        self.deferred
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

    /// A copy of a write's payload.
    pub(crate) fn copy_payload(&self) -> Result<Payload> {
        if self.kind() != BioKind::Write {
            return Err(EINVAL);
        }
        // SAFETY: `self.raw` is a live write bio (type invariant) whose payload is
        // `size()` bytes of data pages; the helper copies exactly those bytes, in order,
        // into the payload's pages from the first one's start.
        unsafe {
            Payload::filled_by(self.size() as usize, |pages| {
                bindings::arepl_bio_copy_to_pages(self.raw, pages);
                Ok(())
            })
        }
    }

    /// Payload size in bytes.
    pub(crate) fn size(&self) -> u32 {
        // SAFETY: `self.raw` is a live bio (type invariant); the helper only reads it.
        unsafe { bindings::arepl_bio_size(self.raw) }
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

/// A bio a map callback took over ([`Bio::defer`]); device-mapper completes it only
/// after [`Self::submit`].
///
/// Invariant: `raw` is a remapped bio that a map callback of a target with per-bio
/// data `P` took over and that nothing has submitted since. Device-mapper keeps the
/// mapped device from being destroyed until it completes, so a target's threads always
/// find a submitter for it.
pub(crate) struct DeferredBio<P> {
    raw: NonNull<bindings::bio>,
    _per_bio: PhantomData<P>,
}

// SAFETY: nothing else touches the bio until it is submitted, from any thread; the
// per-bio value it will carry is `Send`.
unsafe impl<P: Send> Send for DeferredBio<P> {}

impl<P> DeferredBio<P> {
    /// A view of the bio. It was remapped before it was deferred: its sectors are the
    /// local device's, which maps the target one to one (a target beginning at 0).
    pub(crate) fn bio(&self) -> Bio<'_> {
        // SAFETY: the bio is live and owned by this value (type invariant); the view
        // borrows `self`, so it ends before the bio is submitted.
        unsafe { Bio::from_raw(self.raw.as_ptr(), 0) }
    }

    /// Hands the bio to its device with `per_bio` for the target's `end_io`.
    pub(crate) fn submit(self, per_bio: P) {
        // SAFETY: the target's per-bio area holds a `P` (type invariant) that nothing
        // reads before this submission completes; then device-mapper owns the bio.
        unsafe {
            self.bio().per_bio_data::<P>().write(per_bio);
            bindings::arepl_dm_submit_bio(self.raw.as_ptr());
        }
    }
}

/// Deferred bios in arrival order, linked through the bios themselves (no allocation).
pub(crate) struct DeferredBios<P> {
    list: bindings::bio_list,
    _per_bio: PhantomData<P>,
}

// SAFETY: the list only links bios owned by `DeferredBio<P>` values, which are `Send`.
unsafe impl<P: Send> Send for DeferredBios<P> {}

impl<P> DeferredBios<P> {
    pub(crate) const fn new() -> Self {
        Self {
            list: bindings::bio_list {
                head: core::ptr::null_mut(),
                tail: core::ptr::null_mut(),
            },
            _per_bio: PhantomData,
        }
    }

    pub(crate) fn push(&mut self, bio: DeferredBio<P>) {
        // SAFETY: the list is a valid (possibly empty) bio list; the bio belongs to no
        // list and its ownership moves into this one.
        unsafe { bindings::arepl_bio_list_add(&mut self.list, bio.raw.as_ptr()) };
    }

    pub(crate) fn pop(&mut self) -> Option<DeferredBio<P>> {
        // SAFETY: the list is valid and holds only bios pushed as `DeferredBio<P>`.
        let raw = NonNull::new(unsafe { bindings::arepl_bio_list_pop(&mut self.list) })?;
        Some(DeferredBio {
            raw,
            _per_bio: PhantomData,
        })
    }
}
