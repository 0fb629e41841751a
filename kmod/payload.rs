// SPDX-License-Identifier: GPL-2.0

//! Payloads held in memory: a write's bytes in order-0 pages, as dm-log-writes keeps
//! them. No payload needs vmalloc or a high-order allocation (whose mapping, fallback
//! and unmapping cost more than the copy under the test VM's emulation), a read from a
//! device lands in the pages directly, and TCP sends them without a copy (`net`).

use kernel::prelude::*;

use crate::bindings;

const PAGE_SIZE: usize = kernel::page::PAGE_SIZE;

// The queue's budget charges payloads by this page size (`Budget::cost`): with larger
// pages it would undercount the memory they take.
const _: () = assert!(PAGE_SIZE as u64 == crate::fifo::PAYLOAD_PAGE);

/// `len` bytes in `pages`, from the first page's start; never changed once filled.
pub(crate) struct Payload {
    /// One reference to each page, dropped with the payload.
    pages: KVec<*mut bindings::page>,
    len: usize,
}

// SAFETY: the payload owns one reference to each of its pages, which are plain memory
// any thread may read; their bytes are written only before the payload is returned by
// its constructor, and a page reference may be dropped from any context.
unsafe impl Send for Payload {}
// SAFETY: as above: shared access only reads.
unsafe impl Sync for Payload {}

impl Payload {
    /// A payload of `len` bytes that `fill` writes into fresh pages, handed to it as
    /// an array of `len.div_ceil(PAGE_SIZE)` page pointers.
    ///
    /// # Safety
    ///
    /// When `fill` returns `Ok`, it has written all `len` bytes, in order from the
    /// first page's start, and keeps no pointer to the pages.
    pub(crate) unsafe fn filled_by(
        len: usize,
        fill: impl FnOnce(*mut *mut bindings::page) -> Result,
    ) -> Result<Self> {
        let count = len.div_ceil(PAGE_SIZE);
        let mut pages = KVec::with_capacity(count, GFP_KERNEL)?;
        let spare = pages.spare_capacity_mut();
        let count_u32 = u32::try_from(count).map_err(|_| EINVAL)?;
        // SAFETY: the spare capacity holds at least `count` page pointers for the
        // helper to store; it allocates each page or none.
        kernel::error::to_result(unsafe {
            bindings::arepl_pages_alloc(spare.as_mut_ptr().cast(), count_u32)
        })?;
        // SAFETY: the allocation initialised the first `count` pointers.
        unsafe { pages.set_len(count) };
        // From here `Drop` puts the pages, whatever `fill` returns.
        let mut payload = Self { pages, len };
        fill(payload.pages.as_mut_ptr())?;
        Ok(payload)
    }

    /// A payload holding a copy of `bytes`.
    pub(crate) fn copy_of(bytes: &[u8]) -> Result<Self> {
        // SAFETY: `filled_by` hands the closure `bytes.len().div_ceil(PAGE_SIZE)` page
        // pointers, one per chunk of `bytes`, so `pages.add(index)` stays in the array;
        // each chunk (at most a page) is copied to the start of its page through the
        // page's permanent mapping (the pages are never highmem), so all `bytes.len()`
        // bytes are written in order, and the closure keeps no pointer.
        unsafe {
            Self::filled_by(bytes.len(), |pages| {
                for (index, piece) in bytes.chunks(PAGE_SIZE).enumerate() {
                    let to = bindings::arepl_page_address(*pages.add(index)).cast::<u8>();
                    core::ptr::copy_nonoverlapping(piece.as_ptr(), to, piece.len());
                }
                Ok(())
            })
        }
    }

    /// Payload bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keeps only the first `len` bytes (a spill record's payload without its
    /// padding); longer is ignored.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The bytes, page by page.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let count = self.len.div_ceil(PAGE_SIZE);
        self.pages[..count].iter().enumerate().map(move |(index, &page)| {
            let len = (self.len - index * PAGE_SIZE).min(PAGE_SIZE);
            // SAFETY: the page is held by `self` and was filled before the payload was
            // built (`filled_by`'s contract); its permanent mapping (never highmem)
            // holds at least `len` of those bytes, which nothing writes again.
            unsafe {
                core::slice::from_raw_parts(bindings::arepl_page_address(page).cast(), len)
            }
        })
    }

    /// Copies the bytes to the start of `to`, which holds at least [`Self::len`].
    pub(crate) fn copy_to(&self, to: &mut [u8]) {
        let mut at = 0;
        for piece in self.pieces() {
            to[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
    }

    /// The page array, for TCP to send from (`net`): [`Self::len`] bytes from the first
    /// page's start.
    pub(crate) fn pages(&self) -> *const *mut bindings::page {
        self.pages.as_ptr()
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        // SAFETY: the payload holds one reference to each of its pages and gives them
        // up here; TCP holds references of its own to any page it still sends.
        unsafe { bindings::arepl_pages_put(self.pages.as_mut_ptr(), self.pages.len() as u32) };
    }
}
