// SPDX-License-Identifier: GPL-2.0

//! A scope in which memory allocations do no block I/O.

use crate::bindings;

/// Memory allocations of the write path must not recurse into block I/O, or a write
/// waiting for memory could wait on itself: everything allocated while this scope
/// lives behaves as GFP_NOIO.
pub(crate) struct NoIoScope(u32);

impl NoIoScope {
    pub(crate) fn enter() -> Self {
        // SAFETY: process context; the saved flags are restored on drop.
        Self(unsafe { bindings::arepl_memalloc_noio_save() })
    }
}

impl Drop for NoIoScope {
    fn drop(&mut self) {
        // SAFETY: restores exactly the flags saved by `enter` in the same task.
        unsafe { bindings::arepl_memalloc_noio_restore(self.0) };
    }
}
