//! Opening the device (or image file) with O_DIRECT, and sizing it.
//!
//! O_DIRECT keeps the page cache out of the picture: a write has reached the block layer
//! (and so the replication target) when the call returns, and a read sees what the
//! device holds rather than a cached copy. Some filesystems (tmpfs) refuse O_DIRECT at
//! open time with EINVAL; only then do we fall back to buffered I/O, and say so.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug)]
pub struct Device {
    pub file: File,
    /// False when the filesystem refused O_DIRECT and buffered I/O is used instead.
    pub direct: bool,
}

/// Opens an existing device or file, with O_DIRECT where the filesystem allows it.
pub fn open(path: &Path, access: Access) -> io::Result<Device> {
    let options = |direct: bool| {
        let mut options = OpenOptions::new();
        match access {
            Access::Read => options.read(true),
            Access::Write => options.write(true),
        };
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        options
    };
    match options(true).open(path) {
        Ok(file) => Ok(Device { file, direct: true }),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Device {
            file: options(false).open(path)?,
            direct: false,
        }),
        Err(e) => Err(e),
    }
}

impl Device {
    /// Makes sure `bytes` bytes can be written at offsets below `bytes`. A regular file
    /// is extended with zeroes (the checker assumes untouched blocks read as zero); a
    /// device must already be large enough.
    pub fn ensure_capacity(&self, bytes: u64) -> io::Result<()> {
        if self.file.metadata()?.file_type().is_file() {
            if self.file.metadata()?.len() < bytes {
                self.file.set_len(bytes)?;
            }
            return Ok(());
        }
        let size = (&self.file).seek(SeekFrom::End(0))?;
        if size < bytes {
            return Err(io::Error::other(format!(
                "device holds {size} bytes, the workload needs {bytes}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file_grows_to_capacity() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let device = open(file.path(), Access::Write).unwrap();
        device.ensure_capacity(8192).unwrap();
        assert_eq!(file.as_file().metadata().unwrap().len(), 8192);
    }

    #[test]
    fn missing_path_is_an_error() {
        assert!(open(Path::new("/nonexistent/arepl-stamp"), Access::Read).is_err());
    }
}
