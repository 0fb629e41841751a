//! The target: a regular file or block device that replicated writes land on.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// Zeroes are written in pieces of this size.
const ZERO_CHUNK: usize = 1 << 20;

/// The open target.
#[derive(Debug)]
pub struct Volume {
    file: File,
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
        Ok(Self {
            file,
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
        self.file.write_all_at(data, offset)
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
