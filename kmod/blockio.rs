// SPDX-License-Identifier: GPL-2.0

//! Synchronous block I/O on a device the table holds (the spill device), through
//! device-mapper's dm-io.

use core::ptr::NonNull;

use kernel::prelude::*;

use crate::bindings;
use crate::dm::DmDevice;
use crate::payload::Payload;

/// A held device with a dm-io client for synchronous reads and writes.
pub(crate) struct BlockIo {
    dev: DmDevice,
    client: NonNull<bindings::dm_io_client>,
}

// SAFETY: a dm-io client is safe to use from several threads at once (its mempools
// and bio set are), and `DmDevice` is `Send` and `Sync`.
unsafe impl Send for BlockIo {}
// SAFETY: as above; every method takes `&self` and only passes the pointers to dm-io.
unsafe impl Sync for BlockIo {}

impl BlockIo {
    /// Takes over `dev` for synchronous I/O.
    pub(crate) fn new(dev: DmDevice) -> Result<Self> {
        // SAFETY: no preconditions; returns NULL on failure.
        let client = unsafe { bindings::arepl_io_client_create() };
        let client = NonNull::new(client).ok_or(ENOMEM)?;
        Ok(Self { dev, client })
    }

    /// The device's `major:minor` name.
    pub(crate) fn name(&self) -> &str {
        self.dev.name()
    }

    /// Size of the device in bytes.
    pub(crate) fn size_bytes(&self) -> u64 {
        // SAFETY: the block device stays valid while `self.dev` holds it.
        unsafe { bindings::arepl_bdev_bytes(self.dev.bdev()) }
    }

    /// Reads `buf.len()` bytes (a multiple of 512) at byte `offset`. `buf` must be heap
    /// memory (kmalloc or vmalloc), never the stack: it is the target of DMA.
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> Result {
        self.io(offset, buf.as_mut_ptr(), buf.len(), false, 0)
    }

    /// Reads `len` bytes (a multiple of 512) at byte `offset` into a new payload.
    pub(crate) fn read_payload(&self, offset: u64, len: usize) -> Result<Payload> {
        let bdev = self.dev.bdev();
        // SAFETY: the block device stays valid while `self.dev` holds it; the helper
        // waits for its reads, which fill exactly `len` bytes of the pages in order
        // from the first one's start, or returns their error.
        unsafe {
            Payload::filled_by(len, |pages| {
                kernel::error::to_result(bindings::arepl_read_pages(bdev, offset, pages, len))
            })
        }
    }

    /// Writes `buf` (a multiple of 512 bytes of heap memory) at byte `offset`. A durable
    /// write flushes the device cache first and is written through (FUA), so it and
    /// everything written before it are on stable storage when this returns.
    pub(crate) fn write(&self, offset: u64, buf: &[u8], durable: bool) -> Result {
        let durability = if durable {
            bindings::AREPL_IO_PREFLUSH | bindings::AREPL_IO_FUA
        } else {
            0
        };
        // dm-io only reads the buffer for a write.
        self.io(offset, buf.as_ptr().cast_mut(), buf.len(), true, durability)
    }

    /// Writes `buf` like [`Self::write`], written through (FUA) but without the cache
    /// flush: it alone is on stable storage when this returns, in no order with what
    /// was written before (an activity log block needs no more).
    pub(crate) fn write_through(&self, offset: u64, buf: &[u8]) -> Result {
        self.io(offset, buf.as_ptr().cast_mut(), buf.len(), true, bindings::AREPL_IO_FUA)
    }

    fn io(&self, offset: u64, buf: *mut u8, len: usize, write: bool, durability: u32) -> Result {
        // SAFETY: `client` is live until drop; the block device is held by `self.dev`;
        // `buf` is valid for `len` bytes for the whole (synchronous) call, borrowed
        // mutably for reads, and is heap memory as the callers' contracts require.
        let ret = unsafe {
            bindings::arepl_sync_io(
                self.client.as_ptr(),
                self.dev.bdev(),
                offset,
                buf.cast(),
                len,
                write,
                durability,
            )
        };
        kernel::error::to_result(ret)
    }
}

impl Drop for BlockIo {
    fn drop(&mut self) {
        // SAFETY: `client` came from `arepl_io_client_create`, and no I/O is in flight:
        // every I/O is synchronous and borrows `self`.
        unsafe { bindings::arepl_io_client_destroy(self.client.as_ptr()) };
    }
}
