//! Offline verification: every record of every file, checked.

use std::fs;
use std::path::{Path, PathBuf};

use crate::data_file::{DataFile, FileId, data_path, hint_path};
use crate::error::{Corruption, Result};
use crate::format::{
    FILE_HEADER_LEN, FileHeader, FileKind, HeaderError, RecordKind, decode_hint, decode_record,
};
use crate::recovery::list;
use crate::scan::{is_runway, lost_sectors, next_valid_record, scan_units};

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Data files read.
    pub data_files: usize,
    /// Hint files read.
    pub hint_files: usize,
    /// Put and tombstone records verified.
    pub records: u64,
    /// Every problem found; empty for a healthy store.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether no problem was found.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One problem found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The file it is in.
    pub path: PathBuf,
    /// Where in the file, when it concerns one record.
    pub offset: Option<u64>,
    /// What it is.
    pub kind: ProblemKind,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// The kinds of problem [`check`] reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A bad record (or header) that opening the store would refuse.
    #[error("corrupt: {0}")]
    Corrupt(Corruption),
    /// A torn tail at the end of the active file; opening the store cuts it off.
    #[error("torn tail ({0}); opening the store truncates it")]
    TornTail(Corruption),
    /// A file in a format version this build cannot read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// A hint file that does not verify or does not match its data file; opening the store
    /// ignores it and scans the data file.
    #[error("hint file does not match its data file: {0}")]
    BadHint(&'static str),
}

/// Verifies every data and hint file of the store in `dir` and reports each problem.
///
/// Takes the directory lock, so the store must not be open.
///
/// # Errors
/// [`Error::Locked`](crate::Error::Locked) if the store is open,
/// [`Error::NotFound`](crate::Error::NotFound),
/// [`Error::NotADirectory`](crate::Error::NotADirectory), [`Error::Io`](crate::Error::Io).
/// Problems in the data are not errors: they are listed in the report.
pub fn check(dir: impl AsRef<Path>) -> Result<CheckReport> {
    let dir = dir.as_ref();
    let _lock = crate::lock::lock_dir(dir, false)?;
    let listing = list(dir, false)?;
    let mut report = CheckReport::default();
    let newest = listing.data.last().copied();
    for &id in &listing.data {
        let path = data_path(dir, id);
        let len = fs::metadata(&path)?.len();
        report.data_files += 1;
        let problem = |offset, kind| Problem {
            path: path.clone(),
            offset,
            kind,
        };
        if len < FILE_HEADER_LEN as u64 {
            // The newest file torn while it was being created is replaced at open.
            let kind = if Some(id) == newest {
                ProblemKind::TornTail
            } else {
                ProblemKind::Corrupt
            };
            report
                .problems
                .push(problem(Some(0), kind(Corruption::BadHeader)));
            continue;
        }
        let file = DataFile::open(dir, id, len, len, false)?;
        match FileHeader::decode(FileKind::Data, file.bytes()) {
            Ok(header) if header.file_id == id.0 => {}
            Err(HeaderError::UnsupportedVersion(v)) => {
                report
                    .problems
                    .push(problem(None, ProblemKind::UnsupportedVersion(v)));
                continue;
            }
            Ok(_) | Err(_) => {
                report.problems.push(problem(
                    Some(0),
                    ProblemKind::Corrupt(Corruption::BadHeader),
                ));
                continue;
            }
        }
        let bytes = file.bytes();
        let mut start = FILE_HEADER_LEN as u64;
        loop {
            let scanned = scan_units(bytes, start, |ops, _| report.records += ops.len() as u64);
            let Err(error) = scanned else { break };
            if Some(id) == newest && is_runway(bytes, error.unit_offset) {
                break;
            }
            let next = next_valid_record(bytes, error.resume_at);
            let torn = Some(id) == newest
                && next.is_none_or(|next| lost_sectors(bytes, error.unit_offset, next));
            let kind = if torn {
                ProblemKind::TornTail(error.reason)
            } else {
                ProblemKind::Corrupt(error.reason)
            };
            // A torn tail is reported where opening cuts it; corruption at the bad record.
            let at = if torn {
                error.unit_offset
            } else {
                error.offset
            };
            report.problems.push(problem(Some(at), kind));
            // Carry on from the next valid record to report every problem, not just the
            // first; opening cuts everything from a torn tail on.
            match next {
                Some(next) if !torn => start = next,
                _ => break,
            }
        }
        if listing.hints.contains(&id) {
            report.hint_files += 1;
            if let Some(reason) = hint_problem(dir, &file, id)? {
                report.problems.push(Problem {
                    path: hint_path(dir, id),
                    offset: None,
                    kind: ProblemKind::BadHint(reason),
                });
            }
        }
    }
    Ok(report)
}

fn hint_problem(dir: &Path, file: &DataFile, id: FileId) -> Result<Option<&'static str>> {
    let bytes = fs::read(hint_path(dir, id))?;
    let Ok(hint) = decode_hint(&bytes) else {
        return Ok(Some("checksum or structure"));
    };
    if hint.file_id != id.0 || hint.data_len != file.len() {
        return Ok(Some("describes another file or length"));
    }
    for entry in hint.entries() {
        let record = file
            .bytes()
            .get(entry.offset as usize..)
            .and_then(|rest| decode_record(rest).ok());
        let matches = record.is_some_and(|r| {
            r.key == entry.key
                && r.kind == entry.kind
                && r.value.len() == entry.value_len as usize
                && r.kind != RecordKind::BatchBegin
        });
        if !matches {
            return Ok(Some("an entry points at a different record"));
        }
    }
    Ok(None)
}
