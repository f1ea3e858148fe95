//! Recovery: torn tails, trailing garbage, bit flips, hint files, leftovers and unknown format
//! versions.
//!
//! Each test builds a store, closes it, damages a copy the way a crash or a bad disk would and
//! reopens the copy. The tests parse data files themselves from the layout in
//! `engine/FORMAT.md` (a 16-byte file header; records of a 19-byte header, key, value; a
//! batch framed by a batch-begin record) instead of trusting the engine's decoder.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{Model, contents};

use caskade_engine::{
    Bitcask, CheckReport, Error, FileId, Options, ProblemKind, Result, WriteBatch, check,
};

const FILE_HEADER_LEN: usize = 16;
const RECORD_HEADER_LEN: usize = 19;
const KIND_AT: usize = 12;
const KEY_LEN_AT: usize = 13;
const VALUE_LEN_AT: usize = 15;
const VERSION_AT: usize = 8;
const KIND_PUT: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
const KIND_BATCH_BEGIN: u8 = 3;
/// The smallest file size the engine accepts; small files make rotation cheap to reach.
const SMALL_FILE: u64 = 1024;

/// Each live key's latest record: `key -> (file id, record offset, value)`.
type LiveRecords = BTreeMap<Vec<u8>, (u32, usize, Vec<u8>)>;

fn open(dir: &Path) -> Result<Bitcask> {
    Bitcask::open(
        dir,
        Options {
            max_file_size: SMALL_FILE,
            auto_merge: None,
            ..Options::default()
        },
    )
}

/// Writes to a store and keeps the state they should leave behind.
#[derive(Default, Clone)]
struct Writes {
    model: Model,
}

impl Writes {
    fn put(&mut self, store: &Bitcask, key: &str, value: &str) -> Result<()> {
        store.put(key.as_bytes(), value.as_bytes())?;
        self.model
            .insert(key.as_bytes().to_vec(), value.as_bytes().to_vec());
        Ok(())
    }

    fn delete(&mut self, store: &Bitcask, key: &str) -> Result<()> {
        store.delete(key.as_bytes())?;
        self.model.remove(key.as_bytes());
        Ok(())
    }

    /// A batch of puts (`Some`) and deletes (`None`).
    fn batch(&mut self, store: &Bitcask, ops: &[(&str, Option<&str>)]) -> Result<()> {
        let mut batch = WriteBatch::new();
        for &(key, value) in ops {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            };
        }
        store.write(batch)?;
        for &(key, value) in ops {
            match value {
                Some(value) => self
                    .model
                    .insert(key.as_bytes().to_vec(), value.as_bytes().to_vec()),
                None => self.model.remove(key.as_bytes()),
            };
        }
        Ok(())
    }
}

fn data_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.data"))
}

fn hint_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.hint"))
}

/// The ids of the data files in `dir`, oldest first.
fn data_ids(dir: &Path) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".data")) else {
            continue;
        };
        if stem.len() == 10
            && let Ok(id) = stem.parse()
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn active_id(dir: &Path) -> Result<u32> {
    Ok(*data_ids(dir)?
        .last()
        .expect("a store has at least one data file"))
}

/// Copies every file of the store in `from` into `to`.
fn copy_store(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn truncate(path: &Path, len: usize) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(len as u64)?;
    Ok(())
}

fn write_at(path: &Path, offset: usize, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all_at(bytes, offset as u64)?;
    Ok(())
}

/// One record of a data file, as laid out on disk.
#[derive(Debug, Clone)]
struct Record {
    offset: usize,
    len: usize,
    kind: u8,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// A lone record or a whole batch (its begin record first).
#[derive(Debug, Clone)]
struct Unit {
    offset: usize,
    end: usize,
    records: Vec<Record>,
}

fn parse_record(bytes: &[u8], at: usize) -> Record {
    let key_len = usize::from(u16::from_le_bytes([
        bytes[at + KEY_LEN_AT],
        bytes[at + KEY_LEN_AT + 1],
    ]));
    let value_len = u32::from_le_bytes(
        bytes[at + VALUE_LEN_AT..at + RECORD_HEADER_LEN]
            .try_into()
            .expect("four bytes"),
    ) as usize;
    let key_at = at + RECORD_HEADER_LEN;
    let value_at = key_at + key_len;
    Record {
        offset: at,
        len: RECORD_HEADER_LEN + key_len + value_len,
        kind: bytes[at + KIND_AT],
        key: bytes[key_at..value_at].to_vec(),
        value: bytes[value_at..value_at + value_len].to_vec(),
    }
}

/// Splits an undamaged data file into its units.
fn units(bytes: &[u8]) -> Vec<Unit> {
    let mut out = Vec::new();
    let mut at = FILE_HEADER_LEN;
    while at < bytes.len() {
        let first = parse_record(bytes, at);
        let mut end = at + first.len;
        let mut records = vec![first.clone()];
        if first.kind == KIND_BATCH_BEGIN {
            let op_count = u32::from_le_bytes(first.value[..4].try_into().expect("four bytes"));
            let body_len = u32::from_le_bytes(first.value[4..].try_into().expect("four bytes"));
            let body_end = end + body_len as usize;
            while end < body_end {
                let op = parse_record(bytes, end);
                end += op.len;
                records.push(op);
            }
            assert_eq!(end, body_end, "batch body ends where its framing says");
            assert_eq!(records.len() - 1, op_count as usize, "batch op count");
        }
        out.push(Unit {
            offset: at,
            end,
            records,
        });
        at = end;
    }
    assert_eq!(at, bytes.len(), "records end at the end of the file");
    out
}

/// Where each live key's latest record lies, replaying every data file of `dir` in id
/// order: `key -> (file id, record offset, value)`.
fn live_records(dir: &Path) -> Result<LiveRecords> {
    let mut live = BTreeMap::new();
    for id in data_ids(dir)? {
        for unit in units(&fs::read(data_path(dir, id))?) {
            for record in unit.records {
                match record.kind {
                    KIND_PUT => {
                        live.insert(record.key, (id, record.offset, record.value));
                    }
                    KIND_TOMBSTONE => {
                        live.remove(&record.key);
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(live)
}

/// Puts, overwrites, deletes and batches, enough to fill a few small files.
fn earlier_writes(store: &Bitcask, writes: &mut Writes) -> Result<()> {
    for i in 0..30usize {
        let key = format!("key-{}", i % 10);
        writes.put(
            store,
            &key,
            &format!("value-{i}-{}", "x".repeat(i * 7 % 50)),
        )?;
        if i % 7 == 6 {
            let a = format!("key-{}", (i + 3) % 10);
            let b = format!("key-{}", (i + 5) % 10);
            let value = format!("batched-{i}");
            writes.batch(
                store,
                &[(&a, Some(&value)), (&b, None), ("batch-only", Some(&value))],
            )?;
        }
        if i % 11 == 10 {
            writes.delete(store, &format!("key-{}", (i + 1) % 10))?;
        }
    }
    assert!(store.stats().files.len() >= 2, "the writes rotate files");
    Ok(())
}

#[test]
fn a_torn_final_batch_is_cut_at_every_byte_and_nothing_else_is_lost() -> Result<()> {
    let src = tempfile::tempdir()?;
    let store = open(src.path())?;
    let mut writes = Writes::default();
    earlier_writes(&store, &mut writes)?;
    writes.put(&store, "doomed", "deleted by the last batch")?;
    let before = writes.model.clone();
    writes.batch(
        &store,
        &[
            ("key-1", Some("last-1")),
            ("fresh", Some("last-fresh")),
            ("doomed", None),
            ("key-4", Some("last-4")),
        ],
    )?;
    let after = writes.model.clone();
    store.close()?;

    let active = active_id(src.path())?;
    let bytes = fs::read(data_path(src.path(), active))?;
    let last = units(&bytes)
        .pop()
        .expect("the active file holds the last batch");
    assert_eq!(last.records[0].kind, KIND_BATCH_BEGIN);
    assert_eq!(last.records.len(), 5, "batch begin and four ops");
    assert_eq!(last.end, bytes.len());
    assert_eq!(live_records(src.path())?.len(), after.len());

    for cut in last.offset..=bytes.len() {
        let work = tempfile::tempdir()?;
        copy_store(src.path(), work.path())?;
        truncate(&data_path(work.path(), active), cut)?;
        // The batch's record begins with its CRC, which varies with the timestamp, so a few
        // surviving bytes of it can all be zeros. Those are indistinguishable from the
        // preallocated runway and are trimmed as such, without a report: the same outcome.
        let survivors_are_zeros = bytes[last.offset..cut].iter().all(|&b| b == 0);
        let torn = cut != bytes.len() && !survivors_are_zeros;
        let expected = if cut == bytes.len() { &after } else { &before };

        let report = check(work.path())?;
        if torn {
            assert_eq!(report.problems.len(), 1, "cut {cut}: {:?}", report.problems);
            let problem = &report.problems[0];
            assert!(
                matches!(problem.kind, ProblemKind::TornTail(_)),
                "cut {cut}: {problem}"
            );
            assert_eq!(problem.offset, Some(last.offset as u64), "cut {cut}");
            assert_eq!(problem.path, data_path(work.path(), active), "cut {cut}");
        } else {
            assert!(report.is_ok(), "cut {cut}: {:?}", report.problems);
        }

        let store = open(work.path())?;
        assert_eq!(&contents(&store)?, expected, "cut {cut}");
        let torn_tail = store.recovery_report().torn_tail;
        let len = fs::metadata(data_path(work.path(), active))?.len();
        if torn {
            let tail = torn_tail.unwrap_or_else(|| panic!("cut {cut}: no torn tail reported"));
            assert_eq!(tail.file_id, FileId(active), "cut {cut}");
            assert_eq!(tail.offset, last.offset as u64, "cut {cut}");
            assert_eq!(tail.bytes_removed, (cut - last.offset) as u64, "cut {cut}");
            assert_eq!(len, last.offset as u64, "cut {cut}: file truncated on disk");
        } else {
            assert_eq!(torn_tail, None, "cut {cut}");
            let kept = if cut == bytes.len() { cut } else { last.offset };
            assert_eq!(len, kept as u64, "cut {cut}: runway trimmed on disk");
        }

        // The repaired store takes new writes, and they survive another reopen.
        let mut more = Writes {
            model: expected.clone(),
        };
        more.put(&store, "after-reopen", &format!("cut-{cut}"))?;
        more.batch(&store, &[("key-5", Some("rewritten")), ("key-7", None)])?;
        store.close()?;
        let store = open(work.path())?;
        assert_eq!(
            contents(&store)?,
            more.model,
            "cut {cut}: after a second reopen"
        );
        assert_eq!(store.recovery_report().torn_tail, None, "cut {cut}");
        store.close()?;
        assert!(check(work.path())?.is_ok(), "cut {cut}");
    }
    Ok(())
}

/// Checks that `check` finds exactly one problem in `dir`: a torn tail at `offset`.
fn assert_one_torn_tail_at(dir: &Path, offset: usize, name: &str) -> Result<()> {
    let report = check(dir)?;
    assert_eq!(report.problems.len(), 1, "{name}: {:?}", report.problems);
    assert!(
        matches!(report.problems[0].kind, ProblemKind::TornTail(_)),
        "{name}: {}",
        report.problems[0]
    );
    assert_eq!(report.problems[0].offset, Some(offset as u64), "{name}");
    Ok(())
}

/// A closed store of [`earlier_writes`]: its directory, the writes, the active file's id and
/// bytes.
fn closed_store() -> Result<(tempfile::TempDir, Writes, u32, Vec<u8>)> {
    let src = tempfile::tempdir()?;
    let store = open(src.path())?;
    let mut writes = Writes::default();
    earlier_writes(&store, &mut writes)?;
    store.close()?;
    let active = active_id(src.path())?;
    let bytes = fs::read(data_path(src.path(), active))?;
    Ok((src, writes, active, bytes))
}

#[test]
fn trailing_garbage_is_cut_as_a_torn_tail() -> Result<()> {
    let (src, writes, active, bytes) = closed_store()?;
    let last_record = units(&bytes).pop().expect("the active file is not empty");

    let mut noise = Vec::new();
    let mut state = 0x2545_f491_u32;
    for _ in 0..500 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        noise.push(state.to_le_bytes()[0]);
    }
    let tails: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage then zeros",
            [b"junk".as_slice(), &[0; 4096]].concat(),
        ),
        ("text", b"this is not a record, just some garbage".to_vec()),
        ("noise", noise),
        (
            "a record's first bytes",
            bytes[last_record.offset..last_record.offset + RECORD_HEADER_LEN + 3].to_vec(),
        ),
    ];
    for (name, tail) in tails {
        let work = tempfile::tempdir()?;
        copy_store(src.path(), work.path())?;
        let path = data_path(work.path(), active);
        let mut damaged = bytes.clone();
        damaged.extend_from_slice(&tail);
        fs::write(&path, &damaged)?;

        assert_one_torn_tail_at(work.path(), bytes.len(), name)?;

        let store = open(work.path())?;
        assert_eq!(contents(&store)?, writes.model, "{name}");
        let tail_report = store
            .recovery_report()
            .torn_tail
            .unwrap_or_else(|| panic!("{name}: no torn tail reported"));
        assert_eq!(tail_report.file_id, FileId(active), "{name}");
        assert_eq!(tail_report.offset, bytes.len() as u64, "{name}");
        assert_eq!(tail_report.bytes_removed, tail.len() as u64, "{name}");
        assert_eq!(fs::metadata(&path)?.len(), bytes.len() as u64, "{name}");
        store.put(b"after", name.as_bytes())?;
        store.close()?;
        let store = open(work.path())?;
        assert_eq!(
            store.get(b"after")?,
            Some(name.as_bytes().to_vec()),
            "{name}"
        );
        assert_eq!(store.recovery_report().torn_tail, None, "{name}");
        store.close()?;
    }
    Ok(())
}

#[test]
fn trailing_zeros_are_a_preallocated_runway_trimmed_without_a_report() -> Result<()> {
    let (src, writes, active, bytes) = closed_store()?;
    for zeros in [1, RECORD_HEADER_LEN - 1, RECORD_HEADER_LEN, 4096, 1 << 20] {
        let work = tempfile::tempdir()?;
        copy_store(src.path(), work.path())?;
        let path = data_path(work.path(), active);
        fs::write(&path, [bytes.as_slice(), &vec![0; zeros]].concat())?;

        assert!(check(work.path())?.is_ok(), "{zeros} zeros");
        let store = open(work.path())?;
        assert_eq!(contents(&store)?, writes.model, "{zeros} zeros");
        assert_eq!(store.recovery_report().torn_tail, None, "{zeros} zeros");
        assert_eq!(
            fs::metadata(&path)?.len(),
            bytes.len() as u64,
            "{zeros} zeros"
        );
        store.put(b"after", b"runway")?;
        store.close()?;
        let store = open(work.path())?;
        assert_eq!(
            store.get(b"after")?,
            Some(b"runway".to_vec()),
            "{zeros} zeros"
        );
        store.close()?;
    }
    Ok(())
}

/// A store of a few records: a sealed file holding puts, a tombstone, an overwritten value and
/// a batch with a delete, then an active file whose last unit is a batch (or, with
/// `end_with_put`, a lone put).
fn small_store(dir: &Path, end_with_put: bool) -> Result<Model> {
    let store = open(dir)?;
    let mut writes = Writes::default();
    writes.put(&store, "k1", &"a".repeat(200))?;
    writes.batch(
        &store,
        &[
            ("k2", Some(&"b".repeat(150))),
            ("k1", None),
            ("k3", Some(&"c".repeat(50))),
        ],
    )?;
    writes.delete(&store, "k3")?;
    writes.put(&store, "k4", &"d".repeat(300))?;
    writes.put(&store, "k7", &"g".repeat(120))?;
    // Does not fit: starts the second file.
    writes.put(&store, "k2", "eeeeeeeeee")?;
    writes.batch(&store, &[("k5", Some("fffff")), ("k1", Some("again"))])?;
    writes.put(&store, "k6", "gggg")?;
    writes.batch(&store, &[("k4", Some("short")), ("k6", None)])?;
    if end_with_put {
        writes.put(&store, "k8", "the end")?;
    }
    store.close()?;
    assert_eq!(
        data_ids(dir)?,
        vec![1, 2],
        "the store spans a sealed and an active file"
    );
    assert!(
        hint_path(dir, 1).exists(),
        "close writes the sealed file's hint"
    );
    Ok(writes.model)
}

/// What opening a store with one flipped bit must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// Refused with `Error::Corrupt` naming the file and the bad record's offset.
    Corrupt,
    /// The record's unit is cut as a torn tail; everything before it is intact.
    TornTail,
    /// Opened from the sealed file's intact hint file; reading the key whose value is in the
    /// flipped record is `Error::Corrupt`, every other key reads right.
    OpensFromHint,
}

/// A record whose bits are flipped, and what must follow.
struct Target<'a> {
    file_id: u32,
    unit: &'a Unit,
    record: &'a Record,
    expected: Expected,
    /// The state before the record's unit: what a torn tail leaves.
    model_before_unit: &'a Model,
}

impl Target<'_> {
    /// Where the record sits, to group outcomes by.
    fn role(&self) -> &'static str {
        if self.unit.records.len() == 1 {
            "a lone record"
        } else if self.record.offset == self.unit.offset {
            "a batch's begin record"
        } else {
            "an op inside a batch"
        }
    }

    /// An offset in words: the record's, its batch's, or a number.
    fn describe(&self, offset: Option<u64>) -> String {
        match offset {
            Some(o) if o == self.record.offset as u64 => "the record's offset".to_owned(),
            Some(o) if o == self.unit.offset as u64 => "its batch's offset".to_owned(),
            Some(o) => format!("offset {o}"),
            None => "no offset".to_owned(),
        }
    }
}

/// Flips bits in a copy of a store, one at a time, and collects every outcome that breaks
/// the recovery policy.
struct Sweep {
    work: tempfile::TempDir,
    originals: BTreeMap<u32, Vec<u8>>,
    model: Model,
    live: LiveRecords,
    /// What went wrong, and with which flip.
    deviations: Vec<(String, String)>,
}

impl Sweep {
    fn new(src: &Path) -> Result<Sweep> {
        let work = tempfile::tempdir()?;
        copy_store(src, work.path())?;
        let mut originals = BTreeMap::new();
        for id in data_ids(src)? {
            originals.insert(id, fs::read(data_path(src, id))?);
        }
        let live = live_records(src)?;
        let model = live
            .iter()
            .map(|(key, (_, _, value))| (key.clone(), value.clone()))
            .collect();
        Ok(Sweep {
            work,
            originals,
            model,
            live,
            deviations: Vec::new(),
        })
    }

    fn flip(&mut self, target: &Target<'_>, byte: usize, bit: u32) -> Result<()> {
        let dir = self.work.path().to_path_buf();
        let path = data_path(&dir, target.file_id);
        let original = &self.originals[&target.file_id];
        // Written in place: rewriting whole files makes ext4 flush them on close.
        write_at(&path, byte, &[original[byte] ^ (1 << bit)])?;
        let mut wrong = Vec::new();
        check_report(target, &check(&dir)?, &path, &mut wrong);
        match open(&dir) {
            Err(Error::Corrupt {
                file_id, offset, ..
            }) => {
                let at = target.describe(Some(offset));
                if target.expected != Expected::Corrupt {
                    wrong.push(format!("open fails with Corrupt at {at}"));
                } else if file_id != FileId(target.file_id) {
                    wrong.push(format!("open: Corrupt names file {file_id}"));
                } else if offset != target.record.offset as u64 {
                    wrong.push(format!("open: Corrupt at {at}"));
                }
            }
            Err(other) => wrong.push(format!("open fails with {other}")),
            Ok(store) => self.check_open_store(target, &store, &mut wrong)?,
        }
        // Undo the flip, and any cut the open made.
        if fs::metadata(&path)?.len() == original.len() as u64 {
            write_at(&path, byte, &original[byte..=byte])?;
        } else {
            write_at(&path, 0, original)?;
        }
        let which = format!(
            "file {} record at {} (kind {}, key {:?}), byte {byte} bit {bit}",
            target.file_id,
            target.record.offset,
            target.record.kind,
            String::from_utf8_lossy(&target.record.key),
        );
        for what in wrong {
            let what = format!("{} expected {:?}: {what}", target.role(), target.expected);
            self.deviations.push((what, which.clone()));
        }
        Ok(())
    }

    fn check_open_store(
        &self,
        target: &Target<'_>,
        store: &Bitcask,
        wrong: &mut Vec<String>,
    ) -> Result<()> {
        match target.expected {
            Expected::Corrupt => {
                let tail = store.recovery_report().torn_tail;
                let at = target.describe(tail.map(|t| t.offset));
                wrong.push(format!("opens, cutting a torn tail at {at}"));
            }
            Expected::TornTail => {
                let tail = store.recovery_report().torn_tail;
                if tail.map(|t| (t.file_id, t.offset))
                    != Some((FileId(target.file_id), target.unit.offset as u64))
                {
                    wrong.push(format!("torn tail reported as {tail:?}"));
                }
                if contents(store)? != *target.model_before_unit {
                    wrong.push("contents differ from the state before the torn unit".to_owned());
                }
            }
            Expected::OpensFromHint => {
                if store.len() != self.model.len() {
                    wrong.push(format!("{} keys, not {}", store.len(), self.model.len()));
                }
                for (key, expected) in &self.model {
                    let (file, offset, _) = self.live[key];
                    let in_flipped = file == target.file_id && offset == target.record.offset;
                    match store.get(key) {
                        Err(Error::Corrupt {
                            file_id, offset, ..
                        }) if in_flipped
                            && file_id == FileId(target.file_id)
                            && offset == target.record.offset as u64 => {}
                        Ok(Some(value)) if !in_flipped && value == *expected => {}
                        Ok(Some(_)) if !in_flipped => {
                            wrong.push("get returns a WRONG VALUE".to_owned());
                        }
                        other => wrong.push(format!(
                            "get of {} key returns {other:?}",
                            if in_flipped { "the flipped" } else { "another" }
                        )),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Checks that `check()` reported the flipped record.
fn check_report(target: &Target<'_>, report: &CheckReport, path: &Path, wrong: &mut Vec<String>) {
    let torn = target.expected == Expected::TornTail;
    let offset = if torn {
        target.unit.offset
    } else {
        target.record.offset
    } as u64;
    let found = report.problems.iter().any(|p| {
        p.path == path
            && p.offset == Some(offset)
            && matches!(p.kind, ProblemKind::TornTail(_)) == torn
    });
    if !found {
        let problems: Vec<String> = report
            .problems
            .iter()
            .filter(|p| p.path == path)
            .map(|p| {
                let kind = match p.kind {
                    ProblemKind::TornTail(_) => "torn tail",
                    ProblemKind::Corrupt(_) => "corrupt",
                    _ => "other problem",
                };
                format!("{kind} at {}", target.describe(p.offset))
            })
            .collect();
        wrong.push(format!("check() reports {problems:?}"));
    }
}

/// Bits to flip in byte `at` of `record`: all eight in the kind and length fields, which
/// decide where records start and end; one elsewhere, where any flip only breaks the checksum.
fn bits_to_flip(record: &Record, at: usize) -> std::ops::Range<u32> {
    if (record.offset + KIND_AT..record.offset + RECORD_HEADER_LEN).contains(&at) {
        0..8
    } else {
        let bit = (at % 8) as u32;
        bit..bit + 1
    }
}

/// Flips bits in every byte of every record of `files` in a copy of the store in `src`, and
/// returns every outcome that breaks the recovery policy.
fn flip_sweep(src: &Path, files: &[u32], with_hints: bool) -> Result<Vec<(String, String)>> {
    let mut sweep = Sweep::new(src)?;
    let active = active_id(src)?;
    let mut model_before_unit = Model::new();
    for id in data_ids(src)? {
        let bytes = sweep.originals[&id].clone();
        let units = units(&bytes);
        for (index, unit) in units.iter().enumerate() {
            let last_unit = id == active && index == units.len() - 1;
            for record in unit.records.iter().filter(|_| files.contains(&id)) {
                let expected = if id != active && with_hints {
                    Expected::OpensFromHint
                } else if last_unit
                    && (record.offset + record.len == bytes.len()
                        || (unit.records.len() > 1 && record.offset != unit.offset))
                {
                    // The last record, or any record inside the body of the last batch: a
                    // batch is one write, whose pages a crash may persist in any order.
                    Expected::TornTail
                } else {
                    Expected::Corrupt
                };
                let target = Target {
                    file_id: id,
                    unit,
                    record,
                    expected,
                    model_before_unit: &model_before_unit,
                };
                for byte in record.offset..record.offset + record.len {
                    for bit in bits_to_flip(record, byte) {
                        sweep.flip(&target, byte, bit)?;
                    }
                }
            }
            apply(&mut model_before_unit, unit);
        }
    }
    Ok(sweep.deviations)
}

fn apply(model: &mut Model, unit: &Unit) {
    for record in &unit.records {
        match record.kind {
            KIND_PUT => {
                model.insert(record.key.clone(), record.value.clone());
            }
            KIND_TOMBSTONE => {
                model.remove(&record.key);
            }
            _ => {}
        }
    }
}

/// Fails listing how many flips deviated, grouped by what went wrong, with an example each.
fn assert_no_deviations(deviations: &[(String, String)]) {
    let mut groups: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (what, which) in deviations {
        groups.entry(what).or_insert((0, which)).0 += 1;
    }
    let summary: Vec<String> = groups
        .iter()
        .map(|(what, (count, example))| format!("  {count} x {what}\n      e.g. {example}"))
        .collect();
    assert!(
        deviations.is_empty(),
        "{} flipped bits broke the recovery policy:\n{}",
        deviations.len(),
        summary.join("\n")
    );
}

#[test]
fn a_flipped_bit_is_never_returned_as_a_value() -> Result<()> {
    let mut deviations = Vec::new();
    for end_with_put in [false, true] {
        let src = tempfile::tempdir()?;
        let model = small_store(src.path(), end_with_put)?;
        assert_eq!(live_records(src.path())?.len(), model.len());
        // The sealed file is the same in both stores: sweep it once.
        let files = if end_with_put { vec![2] } else { vec![1, 2] };
        deviations.extend(flip_sweep(src.path(), &files, true)?);
    }
    assert_no_deviations(&deviations);
    Ok(())
}

#[test]
fn a_flipped_bit_in_a_sealed_file_without_a_hint_fails_the_open() -> Result<()> {
    let src = tempfile::tempdir()?;
    small_store(src.path(), false)?;
    fs::remove_file(hint_path(src.path(), 1))?;
    let deviations = flip_sweep(src.path(), &[1], false)?;
    assert_no_deviations(&deviations);
    Ok(())
}

/// A store whose sealed files all have hint files, and what it holds.
fn store_with_hints(dir: &Path) -> Result<Model> {
    let store = open(dir)?;
    let mut writes = Writes::default();
    earlier_writes(&store, &mut writes)?;
    store.close()?;
    Ok(writes.model)
}

#[test]
fn sealed_files_get_hint_files_at_close_and_reopen_reads_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = store_with_hints(dir.path())?;
    let ids = data_ids(dir.path())?;
    let (&active, sealed) = ids.split_last().expect("data files");
    for &id in sealed {
        assert!(
            hint_path(dir.path(), id).exists(),
            "file {id} has a hint file"
        );
    }
    assert!(!hint_path(dir.path(), active).exists());

    let store = open(dir.path())?;
    let report = store.recovery_report();
    assert_eq!(report.data_files, ids.len());
    assert_eq!(report.hint_files_used, sealed.len());
    assert_eq!(report.data_files_scanned, 0);
    assert_eq!(report.torn_tail, None);
    assert_eq!(contents(&store)?, model);
    for file in store.stats().files {
        assert_eq!(file.has_hint, !file.active, "file {}", file.file_id);
    }
    store.close()?;
    assert!(check(dir.path())?.is_ok());
    Ok(())
}

#[test]
fn a_bad_hint_file_falls_back_to_scanning_its_data_file() -> Result<()> {
    let src = tempfile::tempdir()?;
    let model = store_with_hints(src.path())?;
    let ids = data_ids(src.path())?;
    let sealed = ids.len() - 1;
    assert!(sealed >= 2, "two sealed files");
    let hint = fs::read(hint_path(src.path(), ids[0]))?;
    let other_hint = fs::read(hint_path(src.path(), ids[1]))?;

    let mut flipped = hint.clone();
    flipped[hint.len() / 2] ^= 0x10;
    let mut newer_version = hint.clone();
    newer_version[VERSION_AT] = 9;
    let damage: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped bit", flipped),
        ("cut in half", hint[..hint.len() / 2].to_vec()),
        ("missing its last byte", hint[..hint.len() - 1].to_vec()),
        ("empty", Vec::new()),
        ("another file's hint", other_hint),
        ("an unknown version", newer_version),
    ];
    for (name, bytes) in damage {
        let work = tempfile::tempdir()?;
        copy_store(src.path(), work.path())?;
        fs::write(hint_path(work.path(), ids[0]), bytes)?;

        let report = check(work.path())?;
        assert_eq!(report.problems.len(), 1, "{name}: {:?}", report.problems);
        assert!(
            matches!(report.problems[0].kind, ProblemKind::BadHint(_)),
            "{name}: {}",
            report.problems[0]
        );
        assert_eq!(report.problems[0].path, hint_path(work.path(), ids[0]));

        let store = open(work.path())?;
        let recovery = store.recovery_report();
        assert_eq!(recovery.hint_files_used, sealed - 1, "{name}");
        assert_eq!(recovery.data_files_scanned, 1, "{name}");
        assert_eq!(contents(&store)?, model, "{name}");
        store.close()?;

        // Closing rewrites the hint file, so the next open reads it again.
        let store = open(work.path())?;
        assert_eq!(store.recovery_report().hint_files_used, sealed, "{name}");
        assert_eq!(contents(&store)?, model, "{name}");
        store.close()?;
        assert!(check(work.path())?.is_ok(), "{name}");
    }
    Ok(())
}

#[test]
fn a_hint_file_whose_data_file_is_gone_is_removed_at_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = store_with_hints(dir.path())?;
    let ids = data_ids(dir.path())?;
    let active = *ids.last().expect("data files");
    let hint = fs::read(hint_path(dir.path(), ids[0]))?;
    let orphans = [active + 5, 999];
    for id in orphans {
        fs::write(hint_path(dir.path(), id), &hint)?;
    }
    // A hint beside the active file cannot describe it: the active file grows.
    fs::write(hint_path(dir.path(), active), &hint)?;

    let store = open(dir.path())?;
    for id in orphans.into_iter().chain([active]) {
        assert!(!hint_path(dir.path(), id).exists(), "hint {id} removed");
    }
    assert_eq!(
        data_ids(dir.path())?,
        ids,
        "no data file appeared or vanished"
    );
    assert_eq!(contents(&store)?, model);
    store.close()?;
    assert!(check(dir.path())?.is_ok());
    Ok(())
}

#[test]
fn leftover_temporary_files_are_removed_at_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = store_with_hints(dir.path())?;
    let data = fs::read(data_path(dir.path(), 1))?;
    let hint = fs::read(hint_path(dir.path(), 1))?;
    let leftovers = [
        dir.path().join("0000000050.data.tmp"),
        dir.path().join("0000000050.hint.tmp"),
        dir.path().join("0000000001.hint.tmp"),
        dir.path().join("0000000051.data.tmp"),
    ];
    fs::write(&leftovers[0], &data)?;
    fs::write(&leftovers[1], &hint)?;
    fs::write(&leftovers[2], b"half a hint")?;
    fs::write(&leftovers[3], b"")?;
    let unrelated = dir.path().join("notes.txt");
    fs::write(&unrelated, b"not the store's")?;

    assert!(check(dir.path())?.is_ok(), "check ignores temporary files");
    let store = open(dir.path())?;
    assert_eq!(store.recovery_report().temp_files_removed, leftovers.len());
    for path in &leftovers {
        assert!(!path.exists(), "{} removed", path.display());
    }
    assert!(
        unrelated.exists(),
        "files that are not the store's are left alone"
    );
    assert_eq!(contents(&store)?, model);
    assert_eq!(
        store.recovery_report().hint_files_used,
        data_ids(dir.path())?.len() - 1
    );
    store.close()?;
    Ok(())
}

#[test]
fn a_data_file_from_an_unknown_format_version_is_refused() -> Result<()> {
    let src = tempfile::tempdir()?;
    store_with_hints(src.path())?;
    let ids = data_ids(src.path())?;
    let targets = [
        ("sealed", ids[0]),
        ("active", *ids.last().expect("data files")),
    ];
    for (name, id) in targets {
        let work = tempfile::tempdir()?;
        copy_store(src.path(), work.path())?;
        let path = data_path(work.path(), id);
        let mut bytes = fs::read(&path)?;
        bytes[VERSION_AT..VERSION_AT + 2].copy_from_slice(&2u16.to_le_bytes());
        fs::write(&path, &bytes)?;

        match open(work.path()) {
            Err(Error::UnsupportedVersion { file_id, version }) => {
                assert_eq!(file_id, FileId(id), "{name}");
                assert_eq!(version, 2, "{name}");
            }
            other => panic!("{name}: expected UnsupportedVersion, got {other:?}"),
        }
        assert_eq!(
            fs::read(&path)?,
            bytes,
            "{name}: the file is left as it was"
        );
        let report = check(work.path())?;
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.path == path && p.kind == ProblemKind::UnsupportedVersion(2)),
            "{name}: {:?}",
            report.problems
        );
    }
    Ok(())
}

/// Copies of a store whose next data file was torn while being created, as a crash during a
/// rotation leaves it: the file holds the first `len` bytes of its header, for several `len`.
fn torn_new_file_copies(src: &Path) -> Result<Vec<(usize, tempfile::TempDir)>> {
    let next = active_id(src)? + 1;
    let header = fs::read(data_path(src, 1))?[..FILE_HEADER_LEN].to_vec();
    let mut copies = Vec::new();
    for len in [0, 1, FILE_HEADER_LEN - 1] {
        let work = tempfile::tempdir()?;
        copy_store(src, work.path())?;
        fs::write(data_path(work.path(), next), &header[..len])?;
        copies.push((len, work));
    }
    Ok(copies)
}

#[test]
fn an_active_file_torn_while_being_created_is_replaced_at_open() -> Result<()> {
    let src = tempfile::tempdir()?;
    let model = store_with_hints(src.path())?;
    let ids = data_ids(src.path())?;
    for (len, work) in torn_new_file_copies(src.path())? {
        let store = open(work.path())?;
        assert_eq!(contents(&store)?, model, "{len} header bytes");
        let report = store.recovery_report();
        assert_eq!(report.data_files, ids.len() + 1, "{len} header bytes");
        assert_eq!(report.hint_files_used, ids.len() - 1, "{len} header bytes");
        assert_eq!(
            report.data_files_scanned, 1,
            "{len} header bytes: the old active file is sealed now"
        );
        store.put(b"new", b"write")?;
        store.close()?;
        let store = open(work.path())?;
        assert_eq!(
            store.get(b"new")?,
            Some(b"write".to_vec()),
            "{len} header bytes"
        );
        assert_eq!(
            contents(&store)?.len(),
            model.len() + 1,
            "{len} header bytes"
        );
        store.close()?;
        assert!(check(work.path())?.is_ok(), "{len} header bytes");
    }
    Ok(())
}

#[test]
fn check_reports_an_active_file_torn_while_being_created_as_a_torn_tail() -> Result<()> {
    let src = tempfile::tempdir()?;
    store_with_hints(src.path())?;
    let mut reported = Vec::new();
    for (len, work) in torn_new_file_copies(src.path())? {
        let report = check(work.path())?;
        // Opening the store repairs this file, so it must not be reported as corruption,
        // which "opening the store would refuse".
        if report
            .problems
            .iter()
            .any(|p| !matches!(p.kind, ProblemKind::TornTail(_)))
        {
            reported.push((len, report.problems));
        }
    }
    assert!(reported.is_empty(), "header bytes, problems: {reported:?}");
    Ok(())
}

#[test]
fn corruption_inside_a_batch_is_reported_at_the_bad_records_offset() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let mut batch = WriteBatch::new();
    batch.put(b"a", b"1").put(b"b", b"2");
    store.write(batch)?;
    store.put(b"c", b"3")?;
    store.close()?;
    let path = data_path(dir.path(), 1);
    let bytes = fs::read(&path)?;
    let batch = &units(&bytes)[0];
    let op_b = &batch.records[2];
    assert_eq!(op_b.key, b"b");
    // The last byte of b's value.
    write_at(&path, op_b.offset + op_b.len - 1, b"X")?;

    let report = check(dir.path())?;
    let offsets: Vec<Option<u64>> = report.problems.iter().map(|p| p.offset).collect();
    let open_error = open(dir.path()).map(|_| ()).unwrap_err();
    assert!(
        matches!(open_error, Error::Corrupt { offset, .. } if offset == op_b.offset as u64)
            && offsets == [Some(op_b.offset as u64)],
        "the bad record is at {}, its batch at {}; open says {open_error:?}, check says \
         {offsets:?}",
        op_b.offset,
        batch.offset
    );
    Ok(())
}

#[test]
fn a_bad_op_inside_the_last_batch_is_a_torn_tail() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    store.put(b"a", b"1")?;
    let mut batch = WriteBatch::new();
    batch.put(b"b", b"2").put(b"c", b"3");
    store.write(batch)?;
    store.close()?;
    let path = data_path(dir.path(), 1);
    let bytes = fs::read(&path)?;
    let batch_unit = &units(&bytes)[1];
    let op_b = &batch_unit.records[1];
    assert_eq!(op_b.key, b"b");
    write_at(&path, op_b.offset + op_b.len - 1, b"X")?;

    // The policy in recovery.rs: a batch reaches the disk in one write whose pages a crash
    // may persist in any order, so damage inside the last batch's body, with nothing valid
    // after the batch, is a torn tail, even though the record of c is whole.
    let problems = check(dir.path())?.problems;
    assert!(
        matches!(problems[..], [ref p] if matches!(p.kind, ProblemKind::TornTail(_))
            && p.offset == Some(batch_unit.offset as u64)),
        "{problems:?}"
    );
    let store = open(dir.path())?;
    let tail = store
        .recovery_report()
        .torn_tail
        .expect("a torn tail was cut");
    assert_eq!(tail.offset, batch_unit.offset as u64);
    assert_eq!(store.get(b"a")?, Some(b"1".to_vec()));
    assert_eq!(store.get(b"b")?, None);
    assert_eq!(store.get(b"c")?, None);
    Ok(())
}

#[test]
fn sealed_and_closed_files_hold_no_runway() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let value = vec![b'v'; 1000];
    for i in 0..(3 * SMALL_FILE / 1000) {
        store.put(format!("key-{i}").as_bytes(), &value)?;
    }
    store.close()?;
    let ids = data_ids(dir.path())?;
    assert!(ids.len() > 2, "the writes rotated: {ids:?}");
    for id in ids {
        let bytes = fs::read(data_path(dir.path(), id))?;
        let end = units(&bytes)
            .last()
            .map_or(FILE_HEADER_LEN, |unit| unit.end);
        assert_eq!(end, bytes.len(), "file {id} ends at its last record");
    }
    Ok(())
}

/// Under the default `SyncPolicy::Always` the runway is asked for after each group commit's
/// sync, not when the group is written; either way the active file must get one.
#[test]
fn a_durable_write_gets_the_active_file_a_runway_that_close_trims() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(
        dir.path(),
        Options {
            auto_merge: None,
            ..Options::default()
        },
    )?;
    store.put(b"key", b"value")?;
    let path = data_path(dir.path(), data_ids(dir.path())?[0]);
    let end = FILE_HEADER_LEN + RECORD_HEADER_LEN + b"key".len() + b"value".len();
    // The preallocation thread extends the runway in the background; the deadline only
    // bounds a failure.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::metadata(&path)?.len() <= end as u64 {
        assert!(
            Instant::now() < deadline,
            "no runway a minute after a durable write"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    store.close()?;
    assert_eq!(
        fs::metadata(&path)?.len(),
        end as u64,
        "close trims the runway"
    );
    Ok(())
}

/// A crash can persist the sectors of an unsynced write in any order, and a sector that did
/// not reach the disk reads as the runway's zeros: valid records of that write may follow
/// the hole. That is a torn tail (the write was never acknowledged), not corruption.
#[test]
fn sectors_lost_from_the_last_write_are_a_torn_tail_even_with_valid_records_after() -> Result<()> {
    const SECTOR: usize = 512;
    let (src, writes, active, acknowledged) = closed_store()?;
    // The "last write": two batches of several sectors, appended after a reopen.
    let store = Bitcask::open(
        src.path(),
        Options {
            max_file_size: 1 << 20,
            auto_merge: None,
            ..Options::default()
        },
    )?;
    for round in 0..2 {
        let mut batch = WriteBatch::new();
        for i in 0..6 {
            batch.put(format!("lost-{round}-{i}"), vec![b'v'; 300]);
        }
        store.write(batch)?;
    }
    store.close()?;
    let written = fs::read(data_path(src.path(), active))?;
    assert!(written.len() > acknowledged.len() + 6 * SECTOR);
    let start = acknowledged.len();
    let first_whole_sector = start.div_ceil(SECTOR) * SECTOR;
    let holes: [(&str, std::ops::Range<usize>); 2] = [
        (
            "zeros from the write's start to its sector's end",
            start..first_whole_sector,
        ),
        (
            "a whole sector inside the first batch",
            first_whole_sector + SECTOR..first_whole_sector + 2 * SECTOR,
        ),
    ];
    for (name, hole) in holes {
        let work = tempfile::tempdir()?;
        copy_store(src.path(), work.path())?;
        let mut damaged = written.clone();
        damaged[hole].fill(0);
        fs::write(data_path(work.path(), active), &damaged)?;

        assert_one_torn_tail_at(work.path(), start, name)?;
        let store = open(work.path())?;
        let torn = store.recovery_report().torn_tail.expect("a torn tail");
        assert_eq!(torn.offset, start as u64, "{name}");
        assert_eq!(contents(&store)?, writes.model, "{name}");
        store.close()?;
    }

    // The same hole filled with anything but zeros is damage, not a lost sector.
    let work = tempfile::tempdir()?;
    copy_store(src.path(), work.path())?;
    let mut damaged = written.clone();
    damaged[first_whole_sector + SECTOR..first_whole_sector + 2 * SECTOR].fill(0x55);
    fs::write(data_path(work.path(), active), &damaged)?;
    assert!(matches!(open(work.path()), Err(Error::Corrupt { .. })));
    Ok(())
}
