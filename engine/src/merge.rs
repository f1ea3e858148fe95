//! Merge (compaction) and hint-file writing.
//!
//! A merge rewrites the live records of every sealed file into new data files and removes the
//! old ones, reclaiming overwritten values, tombstones and batch framing. Reads and writes go
//! on meanwhile: the merge only takes the writer lock for a moment at the start.
//!
//! Ordering invariant: recovery replays files in id order, so a later file must never hold an
//! older record of a key than an earlier one. A merge therefore first seals the active file
//! and moves the next active file's id past a reserved range; its output goes into that
//! range, after all of its inputs and before every file written since. Every input is
//! merged, so no older value of a key survives outside the merge and tombstones can be
//! dropped.
//!
//! Crash safety, step by step:
//! 1. Output is written under temporary names, synced, then renamed (data, then hint) and the
//!    directory synced. A crash before the rename leaves temporary files, removed at open.
//! 2. A crash after some renames leaves outputs beside their inputs: they hold copies of
//!    records that are also in the inputs, replayed later, so every key still ends at its
//!    newest value.
//! 3. Inputs are deleted oldest first, syncing the directory after each. A crash in between
//!    leaves the newest inputs, whose tombstones still cover any older value in them.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use crate::commit::Committer;
use crate::data_file::{DataFile, FileId, data_path, hint_path, sync_dir, temp_path};
use crate::error::{Error, Result};
use crate::format::{
    FILE_HEADER_LEN, FileHeader, FileKind, HintEntry, HintWriter, RecordKind, record_len,
};
use crate::index::Index;
use crate::keydir::ValueLocation;
use crate::options::Options;
use crate::recovery::list;
use crate::scan::scan_units;

/// How far a merge has got, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MergeProgress {
    /// Input bytes read so far.
    pub bytes_read: u64,
    /// Input bytes in all.
    pub bytes_total: u64,
}

/// What a merge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MergeReport {
    /// Data files merged (and removed).
    pub input_files: usize,
    /// Data files written.
    pub output_files: usize,
    /// Bytes of the input files.
    pub bytes_read: u64,
    /// Bytes of the output files.
    pub bytes_written: u64,
    /// Live records copied.
    pub records_copied: u64,
}

/// A record a merge copied: its key, where it was, where it is now.
type Moved = (Box<[u8]>, ValueLocation, ValueLocation);

/// One output file being written.
struct Output {
    id: FileId,
    data: BufWriter<File>,
    hint: HintWriter<BufWriter<File>>,
    len: u64,
    /// Key, location in the input, location in this output.
    moved: Vec<Moved>,
}

impl Output {
    fn create(dir: &Path, id: FileId) -> Result<Output> {
        let create = |path: &Path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(temp_path(path))
        };
        let mut data = BufWriter::with_capacity(1 << 20, create(&data_path(dir, id))?);
        data.write_all(&FileHeader::new(FileKind::Data, id.0).encode())?;
        let hint = HintWriter::new(BufWriter::new(create(&hint_path(dir, id))?), id.0)?;
        Ok(Output {
            id,
            data,
            hint,
            len: FILE_HEADER_LEN as u64,
            moved: Vec::new(),
        })
    }

    /// Syncs the output and gives it its final names.
    fn seal(self, dir: &Path) -> Result<(FileId, u64, Vec<Moved>)> {
        let data = self
            .data
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        data.sync_all()?;
        let hint = self.hint.finish(self.len)?;
        hint.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()?;
        let data_final = data_path(dir, self.id);
        fs::rename(temp_path(&data_final), &data_final)?;
        let hint_final = hint_path(dir, self.id);
        fs::rename(temp_path(&hint_final), &hint_final)?;
        sync_dir(dir)?;
        fail::fail_point!("merge::after_output_renamed", |_| Err(Error::Io(
            std::io::Error::other("fail point merge::after_output_renamed")
        )));
        Ok((self.id, self.len, self.moved))
    }
}

/// The parts of a store a merge works on. The caller holds the store's merge lock for as
/// long as it uses one: at most one merge, hint-file pass or backup runs at a time.
pub(crate) struct Merger<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) options: &'a Options,
    pub(crate) index: &'a Index,
    pub(crate) committer: &'a Committer,
}

impl Merger<'_> {
    /// Whether the automatic-merge trigger holds for the sealed files.
    pub(crate) fn merge_is_due(&self) -> bool {
        let Some(trigger) = self.options.auto_merge else {
            return false;
        };
        let files = self.index.files();
        let sealed = files.iter().take(files.iter().count().saturating_sub(1));
        let (dead, total) = sealed.fold((0u64, 0u64), |(dead, total), file| {
            (dead + file.dead_bytes(), total + file.len())
        });
        total > 0
            && dead >= trigger.min_dead_bytes
            && dead as f64 / total as f64 >= trigger.min_dead_ratio
    }

    /// Merges every file written so far; see the module docs.
    pub(crate) fn merge(&self, progress: &mut dyn FnMut(MergeProgress)) -> Result<MergeReport> {
        let log = self.committer.log();
        log.check_writable()?;
        let (inputs, first_output, reserved, upto) = {
            let mut writer = log.writer();
            log.check_writable()?;
            let mut inputs: Vec<Arc<DataFile>> = self.index.files().iter().cloned().collect();
            inputs.extend(self.stray_files(writer.active.id())?);
            inputs.sort_by_key(|file| file.id());
            let total: u64 = inputs.iter().map(|f| f.len()).sum::<u64>() + writer.buf_len() as u64;
            let reserved = u32::try_from(2 * total.div_ceil(self.options.max_file_size) + 2)
                .map_err(|_| Error::InvalidOptions {
                    reason: "merge input too large",
                })?;
            let first_output = writer.next_file_id;
            writer.next_file_id =
                first_output
                    .checked_add(reserved)
                    .ok_or(Error::InvalidOptions {
                        reason: "data file ids exhausted",
                    })?;
            log.rotate(&mut writer, 0)?;
            (inputs, first_output, reserved, writer.last_seq())
        };
        // Batches written to the inputs but still waiting for their group sync must be in
        // the keydir before liveness is judged.
        self.committer.wait_published(upto)?;
        fail::fail_point!("merge::after_seal", |_| Err(Error::Io(
            std::io::Error::other("fail point merge::after_seal")
        )));

        let bytes_total: u64 = inputs.iter().map(|f| f.len()).sum();
        let mut report = MergeReport {
            input_files: inputs.len(),
            bytes_read: bytes_total,
            ..MergeReport::default()
        };
        let mut output: Option<Output> = None;
        let mut next_id = first_output;
        let mut bytes_read = 0;
        for input in &inputs {
            let mut failure = Ok(());
            scan_units(input.bytes(), FILE_HEADER_LEN as u64, |ops, _| {
                for op in ops {
                    if failure.is_err() || op.record.kind != RecordKind::Put {
                        continue;
                    }
                    let old = ValueLocation {
                        file_id: input.id(),
                        offset: op.offset as u32,
                        value_len: op.record.value.len() as u32,
                        timestamp_secs: (op.record.timestamp_micros / 1_000_000) as u32,
                    };
                    if self.index.keydir.get(op.record.key) != Some(old) {
                        continue;
                    }
                    let len = op.record.len();
                    let raw = &input.bytes()[op.offset as usize..op.offset as usize + len];
                    failure = self.copy_record(
                        &mut output,
                        &mut next_id,
                        first_output + reserved,
                        &mut report,
                        op.record.key,
                        op.record.timestamp_micros,
                        raw,
                        old,
                    );
                }
            })
            .map_err(|e| Error::Corrupt {
                file_id: input.id(),
                offset: e.offset,
                reason: e.reason,
            })?;
            failure?;
            bytes_read += input.len();
            progress(MergeProgress {
                bytes_read,
                bytes_total,
            });
        }
        if let Some(done) = output.take() {
            self.install(done, &mut report)?;
        }

        self.retire(&inputs)?;
        tracing::info!(?report, "merge finished");
        Ok(report)
    }

    /// Drops merged inputs from the file set, then deletes them from disk, oldest first
    /// (see the module docs).
    fn retire(&self, inputs: &[Arc<DataFile>]) -> Result<()> {
        self.index.change_files(|files| {
            for input in inputs {
                files.remove(input.id());
            }
        });
        for input in inputs {
            // Oldest first: see the module docs.
            let hint = hint_path(self.dir, input.id());
            if hint.exists() {
                fs::remove_file(hint)?;
            }
            fs::remove_file(data_path(self.dir, input.id()))?;
            sync_dir(self.dir)?;
            fail::fail_point!("merge::after_input_removed", |_| Err(Error::Io(
                std::io::Error::other("fail point merge::after_input_removed")
            )));
        }
        Ok(())
    }

    /// Data files on disk, up to `newest`, that the file set does not hold: left by a merge
    /// that failed after renaming an output or after retiring its inputs. They hold only
    /// copies or older records, so this merge takes them as inputs (their records are not
    /// live) and deletes them; leaving them would let their records come back at the next
    /// open once this merge drops the tombstones that cover them.
    fn stray_files(&self, newest: FileId) -> Result<Vec<Arc<DataFile>>> {
        let files = self.index.files();
        let mut strays = Vec::new();
        for id in list(self.dir, false)?.data {
            if id > newest || files.get(id).is_some() {
                continue;
            }
            let len = fs::metadata(data_path(self.dir, id))?.len();
            if len >= FILE_HEADER_LEN as u64 {
                tracing::warn!(file_id = %id, "merging a data file left by an earlier failed merge");
                strays.push(Arc::new(DataFile::open(self.dir, id, len, len, false)?));
            }
        }
        Ok(strays)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    fn copy_record(
        &self,
        output: &mut Option<Output>,
        next_id: &mut u32,
        id_limit: u32,
        report: &mut MergeReport,
        key: &[u8],
        timestamp_micros: u64,
        raw: &[u8],
        old: ValueLocation,
    ) -> Result<()> {
        let len = raw.len() as u64;
        if let Some(current) = output.as_ref()
            && current.len + len > self.options.max_file_size
            && current.len > FILE_HEADER_LEN as u64
        {
            let done = output.take().expect("checked just above");
            self.install(done, report)?;
        }
        if output.is_none() {
            if *next_id >= id_limit {
                return Err(Error::InvalidOptions {
                    reason: "merge output exceeded its reserved file ids",
                });
            }
            *output = Some(Output::create(self.dir, FileId(*next_id))?);
            *next_id += 1;
        }
        let current = output.as_mut().expect("created just above");
        let offset = u32::try_from(current.len).expect("data files stay below 4 GiB");
        current.data.write_all(raw)?;
        current.hint.push(&HintEntry {
            kind: RecordKind::Put,
            key,
            value_len: old.value_len,
            offset,
            timestamp_micros,
        })?;
        let new = ValueLocation {
            file_id: current.id,
            offset,
            ..old
        };
        current.moved.push((key.into(), old, new));
        current.len += len;
        report.records_copied += 1;
        Ok(())
    }

    /// Makes a sealed output file readable, then points the keys it holds at it, unless a
    /// write has moved them on since.
    fn install(&self, output: Output, report: &mut MergeReport) -> Result<()> {
        let (id, len, moved) = output.seal(self.dir)?;
        let file = Arc::new(DataFile::open(self.dir, id, len, len, false)?);
        file.set_has_hint(true);
        self.index.add_file(&file);
        let files = self.index.files();
        for (key, old, new) in &moved {
            let bytes = record_len(key.len(), old.value_len as usize) as u64;
            if self.index.keydir.replace_if(key, *old, *new) {
                file.add_live(bytes);
                if let Some(input) = files.get(old.file_id) {
                    input.kill(bytes);
                }
            } else {
                file.add_dead(bytes);
            }
        }
        report.output_files += 1;
        report.bytes_written += len;
        Ok(())
    }

    /// Writes a hint file for every sealed data file that lacks one.
    pub(crate) fn write_missing_hints(&self) -> Result<()> {
        let active = self.committer.log().writer().active.id();
        let files = self.index.files();
        for file in files.iter().filter(|f| f.id() != active && !f.has_hint()) {
            write_hint(self.dir, file)?;
            file.set_has_hint(true);
        }
        Ok(())
    }
}

/// Writes the hint file of a sealed data file: to a temporary name, synced, then renamed.
fn write_hint(dir: &Path, file: &DataFile) -> Result<()> {
    let path = hint_path(dir, file.id());
    let temp = temp_path(&path);
    let mut hint = HintWriter::new(BufWriter::new(File::create(&temp)?), file.id().0)?;
    let mut written = Ok(());
    scan_units(file.bytes(), FILE_HEADER_LEN as u64, |ops, _| {
        for op in ops {
            if written.is_ok() {
                written = hint.push(&HintEntry {
                    kind: op.record.kind,
                    key: op.record.key,
                    value_len: op.record.value.len() as u32,
                    offset: op.offset as u32,
                    timestamp_micros: op.record.timestamp_micros,
                });
            }
        }
    })
    .map_err(|e| Error::Corrupt {
        file_id: file.id(),
        offset: e.offset,
        reason: e.reason,
    })?;
    written?;
    let out = hint.finish(file.len())?;
    out.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    fs::rename(&temp, &path)?;
    sync_dir(dir)?;
    Ok(())
}
