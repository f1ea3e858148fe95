//! The directory lock: at most one open store per data directory, across processes.
//!
//! The lock is an advisory `flock` on the `LOCK` file, held for as long as the store is open
//! and released by [`File::unlock`] at close (or by the kernel when the process dies, so a
//! crash never leaves a directory locked). The pid written into the file is for people
//! reading the directory; the lock itself is the `flock`.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;

use crate::data_file::LOCK_FILE;
use crate::error::{Error, Result};

/// Locks the store's directory, creating the directory first if `create_if_missing`.
///
/// # Errors
/// [`Error::NotADirectory`], [`Error::NotFound`], [`Error::Locked`] if another handle or
/// process holds the lock, [`Error::Io`].
pub(crate) fn lock_dir(dir: &Path, create_if_missing: bool) -> Result<File> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => return Err(Error::NotADirectory { path: dir.into() }),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create_if_missing {
                return Err(Error::NotFound { path: dir.into() });
            }
            fs::create_dir_all(dir)?;
        }
        Err(e) => return Err(e.into()),
    }
    let mut lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    match lock_file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(Error::Locked { dir: dir.into() }),
        Err(TryLockError::Error(e)) => return Err(e.into()),
    }
    lock_file.set_len(0)?;
    writeln!(lock_file, "{}", std::process::id())?;
    Ok(lock_file)
}
