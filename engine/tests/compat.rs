//! Compatibility: a store written by the first release still opens, checks clean and reads
//! back exactly what was written.
//!
//! The store lives in `tests/fixtures/v1-store/`, committed as binary files. It was written by
//! [`generate_fixture`]; to regenerate it (only ever for a deliberate reason: the point of a
//! fixture is that it does not change), run
//!
//! ```text
//! CASKADE_REGENERATE_FIXTURE=1 cargo test -p caskade-engine --test compat
//! ```
//!
//! The expected contents below are written out by hand, not derived from the generator, so
//! that a change to either shows up as a failing test.

use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use caskade_engine::format::{FileHeader, FileKind, FormatVersion};
use caskade_engine::{Bitcask, Options, WriteBatch, check};

/// Live keys of the fixture and their values, as text.
const EXPECTED: &[(&str, &str)] = &[
    ("batch:a", "alpha, rewritten in the same batch"),
    ("batch:b", "beta"),
    ("empty", ""),
    ("late:00", "written after a reopen, 0"),
    ("late:01", "written after a reopen, 1"),
    ("late:03", "written after a reopen, 3"),
    ("late:04", "written after a reopen, 4"),
    ("user:00", "user 00, rewritten by a batch"),
    ("user:01", "first release, user 01, generation 1"),
    ("user:02", "first release, user 02, generation 1"),
    ("user:04", "first release, user 04, generation 1"),
    ("user:06", "first release, user 06, generation 1"),
    ("user:08", "first release, user 08, generation 1"),
    ("user:09", "first release, user 09, generation 1"),
    ("user:10", "first release, user 10, generation 2"),
    ("user:11", "first release, user 11, generation 2"),
    ("user:12", "first release, user 12, generation 2"),
    ("user:13", "first release, user 13, generation 2"),
    ("user:14", "first release, user 14, generation 2"),
    ("user:15", "first release, user 15, generation 2"),
    ("user:16", "first release, user 16, generation 1"),
    ("user:17", "first release, user 17, generation 1"),
    ("user:18", "first release, user 18, generation 1"),
    ("user:20", "first release, user 20, generation 1"),
    ("user:21", "first release, user 21, generation 1"),
    ("user:22", "first release, user 22, generation 1"),
    ("user:23", "first release, user 23, generation 1"),
    ("user:24", "first release, user 24, generation 1"),
    ("user:25", "first release, user 25, generation 1"),
    ("user:26", "first release, user 26, generation 1"),
    ("user:27", "first release, user 27, generation 1"),
    ("user:28", "first release, user 28, generation 1"),
];

/// A binary key, live, whose value is every byte value in order.
const BINARY_KEY: &[u8] = b"bin:\x00\xff";

/// Keys written and then deleted.
const DELETED: &[&str] = &[
    "user:03", "user:05", "user:07", "user:19", "user:29", "late:02",
];

/// Where the committed fixture lives.
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-store")
}

fn binary_value() -> Vec<u8> {
    (0..=255u8).collect()
}

/// Writes the fixture store into `dir` (which must not hold a store yet) and closes it.
///
/// Session one, in 1 KiB files so they rotate: thirty `user:NN` puts; deletes of four of
/// them; a batch that puts `batch:a` twice (the second wins), puts `batch:b`, deletes
/// `user:05` and rewrites `user:00`; a second generation of `user:10` to `user:15` (bringing
/// back the deleted `user:11`); an empty value under `empty`. Closing writes a hint file
/// for every sealed data file.
///
/// Session two, after a reopen: five `late:NN` puts, the binary key, deletes of `late:02`
/// and `user:29`, and a close.
///
/// Last, the hint file of data file 1 is removed, as a crash before the maintenance thread
/// wrote it would leave it, so that opening the fixture both loads hint files and scans a
/// sealed data file.
fn generate_fixture(dir: &Path) -> caskade_engine::Result<()> {
    let open = || {
        Bitcask::open(
            dir,
            Options {
                max_file_size: 1024,
                auto_merge: None,
                ..Options::default()
            },
        )
    };
    let store = open()?;
    for i in 0..30 {
        let value = format!("first release, user {i:02}, generation 1");
        store.put(format!("user:{i:02}").as_bytes(), value.as_bytes())?;
    }
    for i in [3, 7, 11, 19] {
        store.delete(format!("user:{i:02}").as_bytes())?;
    }
    let mut batch = WriteBatch::new();
    batch
        .put(b"batch:a", b"alpha")
        .put(b"batch:b", b"beta")
        .delete(b"user:05")
        .put(b"batch:a", b"alpha, rewritten in the same batch")
        .put(b"user:00", b"user 00, rewritten by a batch");
    store.write(batch)?;
    for i in 10..16 {
        let value = format!("first release, user {i:02}, generation 2");
        store.put(format!("user:{i:02}").as_bytes(), value.as_bytes())?;
    }
    store.put(b"empty", b"")?;
    store.close()?;

    let store = open()?;
    for i in 0..5 {
        let value = format!("written after a reopen, {i}");
        store.put(format!("late:{i:02}").as_bytes(), value.as_bytes())?;
    }
    store.put(BINARY_KEY, &binary_value())?;
    store.delete(b"late:02")?;
    store.delete(b"user:29")?;
    store.close()?;

    fs::remove_file(dir.join("0000000001.hint"))?;
    Ok(())
}

/// Whether a file name ends in `.{extension}`.
fn has_extension(name: &str, extension: &str) -> bool {
    Path::new(name).extension().is_some_and(|e| e == extension)
}

/// Copies the data and hint files of `from` into `to`; never the lock file.
fn copy_store_files(from: &Path, to: &Path) -> std::io::Result<usize> {
    let mut copied = 0;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if has_extension(&name, "data") || has_extension(&name, "hint") {
            fs::copy(entry.path(), to.join(&*name))?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Checks that the store in `dir` holds exactly the expected contents.
fn assert_expected_contents(store: &Bitcask) -> caskade_engine::Result<()> {
    for (key, value) in EXPECTED {
        assert_eq!(
            store.get(key.as_bytes())?,
            Some(value.as_bytes().to_vec()),
            "{key}"
        );
    }
    assert_eq!(store.get(BINARY_KEY)?, Some(binary_value()));
    for key in DELETED {
        assert_eq!(store.get(key.as_bytes())?, None, "{key} was deleted");
    }
    let mut expected_keys: Vec<Vec<u8>> = EXPECTED
        .iter()
        .map(|(key, _)| key.as_bytes().to_vec())
        .chain([BINARY_KEY.to_vec()])
        .collect();
    expected_keys.sort();
    let mut keys: Vec<Vec<u8>> = store.keys().collect();
    keys.sort();
    assert_eq!(keys, expected_keys);
    assert_eq!(store.len(), EXPECTED.len() + 1);
    Ok(())
}

#[test]
fn fixture_from_first_release_still_opens() -> Result<(), Box<dyn Error>> {
    let fixture = fixture_dir();
    let dir = tempfile::tempdir()?;
    let copied = copy_store_files(&fixture, dir.path())?;
    let mut fixture_files: Vec<String> = fs::read_dir(&fixture)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    fixture_files.sort();
    assert_eq!(
        copied,
        fixture_files.len(),
        "only data and hint files: {fixture_files:?}"
    );
    assert!(!fixture_files.iter().any(|name| name == "LOCK"));

    // Every file is in the first format version.
    for name in &fixture_files {
        let kind = if has_extension(name, "data") {
            FileKind::Data
        } else {
            FileKind::Hint
        };
        let bytes = fs::read(fixture.join(name))?;
        let header = FileHeader::decode(kind, &bytes)
            .unwrap_or_else(|e| panic!("{name} has no valid header: {e:?}"));
        assert_eq!(header.version, FormatVersion::V1, "{name}");
    }

    let report = check(dir.path())?;
    assert!(report.is_ok(), "check: {:?}", report.problems);
    let data_files = fixture_files
        .iter()
        .filter(|name| has_extension(name, "data"))
        .count();
    assert!(data_files >= 4, "several rotated files: {fixture_files:?}");
    assert_eq!(report.data_files, data_files);
    assert!(report.hint_files >= 1 && report.hint_files < data_files - 1);

    let store = Bitcask::open(dir.path(), Options::default())?;
    let recovery = store.recovery_report();
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(recovery.data_files, data_files);
    assert!(recovery.hint_files_used >= 1, "{recovery:?}");
    assert!(recovery.data_files_scanned >= 1, "{recovery:?}");
    assert_expected_contents(&store)?;

    // The old store takes new writes, and they survive a reopen.
    store.put(b"user:03", b"written by this release")?;
    store.delete(b"user:00")?;
    store.close()?;
    let store = Bitcask::open(dir.path(), Options::default())?;
    assert_eq!(
        store.get(b"user:03")?,
        Some(b"written by this release".to_vec())
    );
    assert_eq!(store.get(b"user:00")?, None);
    assert_eq!(
        store.get(b"user:01")?,
        EXPECTED
            .iter()
            .find(|(k, _)| *k == "user:01")
            .map(|(_, v)| v.as_bytes().to_vec())
    );
    store.close()?;
    Ok(())
}

/// Runs [`generate_fixture`] into a temporary directory and checks the result against the
/// expected contents, so the generator and the hand-written expectations never drift
/// apart. With `CASKADE_REGENERATE_FIXTURE=1` it then replaces the committed fixture.
#[test]
fn fixture_generator_writes_the_expected_contents() -> Result<(), Box<dyn Error>> {
    let generated = tempfile::tempdir()?;
    generate_fixture(generated.path())?;
    let store = Bitcask::open(generated.path(), Options::default())?;
    assert_expected_contents(&store)?;
    store.close()?;

    if std::env::var_os("CASKADE_REGENERATE_FIXTURE").is_some_and(|v| v == "1") {
        // Regenerate from a fresh run, not the one just reopened (opening rewrites hints).
        let fresh = tempfile::tempdir()?;
        generate_fixture(fresh.path())?;
        let fixture = fixture_dir();
        fs::create_dir_all(&fixture)?;
        let old: BTreeMap<String, PathBuf> = fs::read_dir(&fixture)?
            .map(|entry| entry.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
            .collect::<Result<_, _>>()?;
        for path in old.values() {
            fs::remove_file(path)?;
        }
        let copied = copy_store_files(fresh.path(), &fixture)?;
        eprintln!("regenerated {copied} files in {}", fixture.display());
    }
    Ok(())
}
