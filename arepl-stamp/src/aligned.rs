//! A heap buffer whose start is aligned for O_DIRECT, without `unsafe`.
//!
//! O_DIRECT wants the user buffer aligned to the device's logical block size. Rather
//! than a custom allocation, over-allocate a `Vec<u8>` by [`ALIGN`] bytes and use the
//! sub-slice that starts on an aligned address. The `Vec` is never resized, so the
//! address (and with it the offset) stays valid for the buffer's life.

use std::fmt;

/// Alignment of the buffer start: covers every logical block size up to a page.
pub const ALIGN: usize = 4096;

pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes starting on an [`ALIGN`] boundary.
    pub fn zeroed(len: usize) -> Self {
        let storage = vec![0u8; len + ALIGN];
        let misalignment = storage.as_ptr() as usize % ALIGN;
        let start = (ALIGN - misalignment) % ALIGN;
        Self {
            storage,
            start,
            len,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_aligned_and_length_exact() {
        for len in [512, 4096, 12288] {
            let mut buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(buf.as_mut_slice().len(), len);
            assert!(buf.as_slice().iter().all(|&b| b == 0));
        }
    }
}
