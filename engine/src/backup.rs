//! Hot backup: a consistent copy of the store taken while writes go on.
//!
//! Under the writer lock the write buffer is flushed and synced and the file set and the
//! active file's length are noted; that moment is the backup's cut. Data files are
//! append-only and the merge lock (held throughout) keeps them from being removed, so the
//! sealed files and the noted prefix of the active file are copied without stopping
//! writers. The copy is a store in its own right: open the destination directory (or copy it
//! back) to restore.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use crate::data_file::{data_path, hint_path, sync_dir, temp_path};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::log::Log;

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BackupReport {
    /// Data files copied.
    pub data_files: usize,
    /// Hint files copied.
    pub hint_files: usize,
    /// Bytes copied, data and hint files together.
    pub bytes: u64,
}

/// Copies the first `len` bytes of `from` to `to` (via a temporary name) and syncs it.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> Result<u64> {
    let temp = temp_path(to);
    let mut out = File::create(&temp)?;
    let copied = io::copy(&mut File::open(from)?.take(len), &mut out)?;
    if copied != len {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} ended before the backup's cut", from.display()),
        )));
    }
    out.sync_all()?;
    fs::rename(&temp, to)?;
    Ok(copied)
}

/// Copies the store in `dir`, whose index and log these are, into `dest`; see
/// [`Bitcask::backup`](crate::Bitcask::backup). The caller holds the store's merge lock, so no
/// merge removes or half-writes a file meanwhile.
pub(crate) fn backup(dir: &Path, index: &Index, log: &Log, dest: &Path) -> Result<BackupReport> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::BackupDestinationNotEmpty { path: dest.into() });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dest)?,
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(Error::BackupDestinationNotEmpty { path: dest.into() });
        }
        Err(e) => return Err(e.into()),
    }
    let (files, active_id, active_len) = {
        let mut writer = log.writer();
        log.flush(&mut writer)?;
        log.sync_file(&writer.active)?;
        (index.files_owned(), writer.active.id(), writer.active.len())
    };
    let mut report = BackupReport::default();
    for file in files.iter() {
        let id = file.id();
        let len = if id == active_id {
            active_len
        } else {
            file.len()
        };
        report.bytes += copy_prefix(&data_path(dir, id), &data_path(dest, id), len)?;
        report.data_files += 1;
        let hint = hint_path(dir, id);
        if id != active_id && file.has_hint() && hint.exists() {
            let hint_len = fs::metadata(&hint)?.len();
            report.bytes += copy_prefix(&hint, &hint_path(dest, id), hint_len)?;
            report.hint_files += 1;
        }
    }
    sync_dir(dest)?;
    Ok(report)
}
