//! The target: a regular file or block device that replicated writes land on.
//!
//! Writes whose buffer, offset and length are all [`DIRECT_IO_ALIGN`]-aligned (the
//! codec reads large payloads into such buffers) go to the target with direct I/O:
//! through the page cache, each byte would be copied once more, which costs the
//! DR host as much CPU as receiving it. The others go through the page cache. The
//! kernel keeps the two coherent (a direct write first writes back and drops the cached
//! pages it covers), and `fdatasync` makes both durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::OFlag;

/// Zeroes are written in pieces of this size.
const ZERO_CHUNK: usize = 1 << 20;

/// Alignment of buffer, offset and length for a direct write: a page, more than any
/// target's logical block.
pub const DIRECT_IO_ALIGN: usize = 4096;

/// The open target.
#[derive(Debug)]
pub struct Volume {
    file: File,
    /// The same target opened for direct I/O, unless it refused.
    direct: Option<File>,
    /// Set once an aligned direct write was refused: all writes go through the page cache.
    direct_refused: AtomicBool,
    path: PathBuf,
    len: u64,
}

impl Volume {
    /// Opens `path` for positioned reads and writes; it must be a non-empty regular file
    /// or block device.
    pub fn open(path: &Path) -> io::Result<Self> {
        let context = |err: io::Error| {
            io::Error::new(err.kind(), format!("target {}: {err}", path.display()))
        };
        let file_type = std::fs::metadata(path).map_err(context)?.file_type();
        if !file_type.is_file() && !file_type.is_block_device() {
            return Err(context(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            )));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(context)?;
        // Seeking to the end sizes block devices as well as files.
        let len = file.seek(SeekFrom::End(0)).map_err(context)?;
        if len == 0 {
            return Err(context(io::Error::new(
                io::ErrorKind::InvalidInput,
                "target is empty",
            )));
        }
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(path)
            .inspect_err(|err| {
                tracing::info!(
                    "target {}: no direct I/O ({err}); writing through the page cache",
                    path.display()
                )
            })
            .ok();
        Ok(Self {
            file,
            direct,
            direct_refused: AtomicBool::new(false),
            path: path.to_path_buf(),
            len,
        })
    }

    /// The target's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The target's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the target has no bytes (never true for an open volume).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `data` at byte `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_range(offset, data.len() as u64)?;
        if let Some(direct) = self.direct_for(offset, data) {
            match direct.write_all_at(data, offset) {
                // The file system wants a larger alignment (or none of it): a part
                // written already is written again, the same bytes.
                Err(err) if err.kind() == io::ErrorKind::InvalidInput => {
                    self.direct_refused.store(true, Ordering::Relaxed);
                    tracing::info!(
                        "target {}: direct write refused ({err}); writing through the page \
                         cache from now on",
                        self.path.display()
                    );
                }
                written => return written,
            }
        }
        self.file.write_all_at(data, offset)
    }

    /// The direct I/O handle, if `data` at `offset` can be written with it.
    fn direct_for(&self, offset: u64, data: &[u8]) -> Option<&File> {
        let align = DIRECT_IO_ALIGN as u64;
        let aligned = offset.is_multiple_of(align)
            && (data.len() as u64).is_multiple_of(align)
            && (data.as_ptr() as u64).is_multiple_of(align);
        let direct = self.direct.as_ref()?;
        (aligned && !data.is_empty() && !self.direct_refused.load(Ordering::Relaxed))
            .then_some(direct)
    }

    /// Writes `len` zero bytes at `offset`.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_range(offset, len)?;
        let zeroes = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let mut done = 0;
        while done < len {
            let piece = (len - done).min(zeroes.len() as u64) as usize;
            self.file.write_all_at(&zeroes[..piece], offset + done)?;
            done += piece as u64;
        }
        Ok(())
    }

    /// Discards `len` bytes at `offset`. Zeroes them, which is always correct; punching
    /// holes would be faster on files but needs a different call per target type.
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Makes every completed write durable (fdatasync).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {offset}+{len} is past the end of the {}-byte target",
                    self.len
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(len: usize, fill: u8) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target.img");
        std::fs::write(&path, vec![fill; len]).unwrap();
        (dir, path)
    }

    #[test]
    fn positioned_writes_zeroes_and_discards_land_where_asked() {
        let (_dir, path) = target(3 << 20, 0xEE);
        let volume = Volume::open(&path).unwrap();
        assert_eq!(volume.len(), 3 << 20);
        volume.write(4096, &[1u8; 8192]).unwrap();
        volume.write_zeroes(1 << 20, (1 << 20) + 512).unwrap();
        volume.discard(0, 512).unwrap();
        volume.sync().unwrap();

        let mut expected = vec![0xEEu8; 3 << 20];
        expected[4096..4096 + 8192].fill(1);
        expected[1 << 20..(2 << 20) + 512].fill(0);
        expected[..512].fill(0);
        assert!(std::fs::read(&path).unwrap() == expected);

        let mut back = [0u8; 16];
        volume.read(4096, &mut back).unwrap();
        assert_eq!(back, [1u8; 16]);
    }

    /// `len` bytes of `fill` starting on a [`DIRECT_IO_ALIGN`] boundary, in `storage`.
    fn aligned(storage: &mut Vec<u8>, len: usize, fill: u8) -> &[u8] {
        *storage = vec![fill; len + DIRECT_IO_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_IO_ALIGN);
        &storage[start..start + len]
    }

    #[test]
    fn direct_and_cached_writes_over_each_other_read_back_in_order() {
        let (_dir, path) = target(1 << 20, 0xEE);
        let volume = Volume::open(&path).unwrap();
        let mut storage = Vec::new();
        // Cached, then direct over it, then cached over part of that, then direct again:
        // each must win over the one before.
        volume.write(8192, &[1u8; 3 * 4096]).unwrap();
        volume.write(8192, aligned(&mut storage, 8192, 2)).unwrap();
        volume.write(8192 + 512, &[3u8; 1024]).unwrap();
        volume.write(16384, aligned(&mut storage, 4096, 4)).unwrap();
        let mut back = vec![0u8; 4 * 4096];
        volume.read(8192, &mut back).unwrap();
        let mut expected = vec![2u8; 8192];
        expected[512..1536].fill(3);
        expected.extend_from_slice(&[4u8; 4096]);
        expected.extend_from_slice(&[0xEEu8; 4096]);
        assert!(back == expected);
        volume.sync().unwrap();
        assert!(std::fs::read(&path).unwrap()[8192..8192 + 4 * 4096] == expected[..]);
    }

    #[test]
    fn writes_past_the_end_are_refused_and_change_nothing() {
        let (_dir, path) = target(8192, 0xAA);
        let volume = Volume::open(&path).unwrap();
        assert!(volume.write(8192 - 512, &[0u8; 1024]).is_err());
        assert!(volume.write_zeroes(u64::MAX - 10, 512).is_err());
        assert!(volume.discard(8192, 512).is_err());
        volume.write(8192 - 512, &[0u8; 512]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 8192);
        assert!(bytes[..8192 - 512].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn unusable_targets_are_refused() {
        let (dir, path) = target(0, 0);
        let err = Volume::open(&path).unwrap_err();
        assert!(err.to_string().ends_with("target is empty"), "{err}");
        let err = Volume::open(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let err = Volume::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
