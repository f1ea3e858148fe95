//! The page-cache budget: how much of the data files the page cache holds, and keeping it
//! within [`Options::cache_budget`](crate::Options::cache_budget).
//!
//! Values are read through memory maps, so the engine's cache is the kernel's page cache:
//! the engine has no block cache of its own. Left alone (the default), the kernel decides
//! what stays cached, within a memory cgroup's limit if the process has one. With a budget,
//! each maintenance round measures the data files' cached pages (`mincore`) and, while they
//! exceed the budget, evicts whole sealed files, oldest first: in an append-only store the
//! oldest files hold the records read least, and the active file, which every append and
//! live reader touches, is never evicted. The budget is therefore kept between rounds, not
//! at every instant; a memory cgroup is the hard limit.
//!
//! Invariant: eviction drops only copies of bytes that are in the files; a reader that
//! touches an evicted page faults the same bytes back in, so no read sees anything else.

use std::io;

use crate::data_file::FileId;
use crate::file_set::FileSet;

/// Bytes of every data file in `files` that the page cache holds now. A file whose pages
/// cannot be queried counts as holding none.
pub(crate) fn cached_bytes(files: &FileSet) -> u64 {
    files
        .iter()
        .map(|file| file.cached_bytes().unwrap_or(0))
        .sum()
}

/// Evicts sealed files from the page cache, oldest first, until the data files' cached
/// bytes are at most `budget` or only `active` is left.
///
/// # Errors
/// The first failure to query or evict a file's pages.
pub(crate) fn keep_within(files: &FileSet, active: FileId, budget: u64) -> io::Result<()> {
    let mut cached = Vec::new();
    for file in files.iter() {
        cached.push((file, file.cached_bytes()?));
    }
    let mut total: u64 = cached.iter().map(|(_, bytes)| bytes).sum();
    for (file, bytes) in cached {
        if total <= budget {
            break;
        }
        if file.id() == active || bytes == 0 {
            continue;
        }
        file.evict()?;
        total = total - bytes + file.cached_bytes()?;
    }
    Ok(())
}
