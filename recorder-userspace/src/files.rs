//! Opening and reading files named by untrusted input: only regular files (a FIFO or device
//! where a blob or document should be would block forever or never end), and documents only
//! up to a size cap, checked as they are read (the file may grow, or be `/dev/zero`).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest record a command reads whole (a record of a million paths is ~100 MiB).
pub const MAX_RECORD_BYTES: u64 = 256 << 20;

/// Why a file was refused (wrapped in an [`io::Error`] of kind `InvalidInput`).
#[derive(Debug, thiserror::Error)]
pub enum FileRefused {
    /// Not a regular file.
    #[error("not a regular file (a {0})")]
    NotRegular(&'static str),
    /// Larger than the cap.
    #[error("larger than the {0}-byte limit")]
    TooLarge(u64),
}

impl From<FileRefused> for io::Error {
    fn from(e: FileRefused) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// Opens `path` for reading if it is (or, through symlinks, names) a regular file.
///
/// Opened with `O_NONBLOCK` so that opening a FIFO returns at once instead of waiting for a
/// writer; the flag is cleared again before the file is returned.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "fifo"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_dir() {
            "directory"
        } else {
            "special file"
        };
        return Err(FileRefused::NotRegular(what).into());
    }
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(file)
}

/// Reads the regular file `path` whole, failing past `limit` bytes.
pub fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut out = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(FileRefused::TooLarge(limit).into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifos_devices_dirs_and_oversize() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, what) in [
            (fifo.as_path(), "fifo"),
            (Path::new("/dev/zero"), "character device"),
            (dir.path(), "directory"),
        ] {
            let err = read_capped(path, 10).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(what), "{err}");
        }
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_capped(&file, 10).unwrap(), b"0123456789");
        assert!(
            read_capped(&file, 9)
                .unwrap_err()
                .to_string()
                .contains("9-byte limit")
        );
        // Blocking reads work again once open.
        let mut f = open_regular(&file).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "0123456789");
    }
}
