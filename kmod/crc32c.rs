// SPDX-License-Identifier: GPL-2.0

//! CRC-32C through the kernel's library, which uses the CPU's instruction where it has
//! one (crc32c-intel): the same function as `arepl-core`'s portable implementation,
//! which userspace uses and whose known-answer and golden-bytes tests fix it, at a
//! fraction of the CPU per byte.

use crate::bindings;

/// CRC-32C of `data` (initial value and final inversion as in iSCSI).
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    crc32c_update(0, data)
}

/// Continues a CRC-32C over `data`; start with `crc32c_update(0, ..)`.
pub(crate) fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    // The kernel's `crc32c` works on the raw register: no inversions of its own.
    // SAFETY: `data` is valid for reads of `data.len()` bytes for the whole call.
    !unsafe { bindings::arepl_crc32c(!crc, data.as_ptr().cast(), data.len()) }
}
