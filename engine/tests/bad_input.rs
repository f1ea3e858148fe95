//! Bad input: every kind is refused with its own error variant, writes nothing, and says
//! what is wrong in a sentence a user can act on.
//!
//! "Writes nothing" is checked on disk (every file but `LOCK`, byte for byte) and in
//! [`Bitcask::stats`], before and after the refused call.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use caskade_engine::format::{BATCH_BEGIN_VALUE_LEN, RECORD_HEADER_LEN, record_len};
use caskade_engine::{
    Bitcask, Error, MAX_FILE_SIZE, MIN_FILE_SIZE, MergeTrigger, Options, Result, WriteBatch, check,
};

/// Every file in `dir` but the lock file, by name, with its bytes; data files without their
/// trailing zeros, which are the runway the preallocation thread extends in the background
/// whenever it likes. A record's header is never all zeros (its kind byte is 1, 2 or 3), so a
/// record written would still show.
fn snapshot(dir: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "LOCK" {
            continue;
        }
        let mut bytes = fs::read(entry.path())?;
        if entry.path().extension().is_some_and(|ext| ext == "data") {
            let end = bytes
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |last| last + 1);
            bytes.truncate(end);
        }
        files.insert(name, bytes);
    }
    Ok(files)
}

/// A store with a few keys in it, so "nothing written" is checked against real data.
fn store_with_data(dir: &Path, options: Options) -> Result<Bitcask> {
    let store = Bitcask::open(dir, options)?;
    store.put(b"existing", b"value")?;
    store.put(b"other", b"value 2")?;
    assert_eq!(store.dir(), dir);
    Ok(store)
}

/// Runs `refused`, which must fail, and checks that neither the files nor the stats moved.
fn refused_without_writing(store: &Bitcask, refused: impl FnOnce() -> Result<()>) -> Error {
    let before_files = snapshot(store.dir()).expect("the store's directory is readable");
    let before_stats = store.stats();
    let error = refused().expect_err("bad input is refused");
    store
        .sync()
        .expect("the store stays usable after refusing bad input");
    // All but the page cache's share, which the kernel changes on its own.
    let after_stats = store.stats();
    assert_eq!(
        (
            after_stats.live_keys,
            after_stats.keydir_bytes,
            after_stats.files
        ),
        (
            before_stats.live_keys,
            before_stats.keydir_bytes,
            before_stats.files
        ),
        "stats after {error:?}"
    );
    assert_eq!(
        snapshot(store.dir()).expect("the store's directory is readable"),
        before_files,
        "files after {error:?}"
    );
    error
}

#[test]
fn empty_keys_are_refused_with_empty_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_with_data(dir.path(), Options::default())?;

    let error = refused_without_writing(&store, || store.put(b"", b"value"));
    assert!(matches!(error, Error::EmptyKey), "{error:?}");
    assert_eq!(error.to_string(), "keys must not be empty");
    let error = refused_without_writing(&store, || store.delete(b""));
    assert!(matches!(error, Error::EmptyKey), "{error:?}");
    let error = refused_without_writing(&store, || {
        let mut batch = WriteBatch::new();
        batch.put(b"good", b"v").delete(Vec::new());
        store.write(batch)
    });
    assert!(matches!(error, Error::EmptyKey), "{error:?}");
    assert_eq!(store.get(b"good")?, None);
    store.close()
}

#[test]
fn keys_over_max_key_size_are_refused_with_key_too_large() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_with_data(
        dir.path(),
        Options {
            max_key_size: 8,
            ..Options::default()
        },
    )?;

    let error = refused_without_writing(&store, || store.put(b"123456789", b"value"));
    assert!(
        matches!(error, Error::KeyTooLarge { len: 9, max: 8 }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "key of 9 bytes exceeds the maximum of 8 bytes"
    );
    let error = refused_without_writing(&store, || store.delete(b"123456789"));
    assert!(
        matches!(error, Error::KeyTooLarge { len: 9, max: 8 }),
        "{error:?}"
    );

    // The limit itself is allowed.
    store.put(b"12345678", b"value")?;
    assert_eq!(store.get(b"12345678")?, Some(b"value".to_vec()));
    store.close()
}

#[test]
fn values_over_max_value_size_are_refused_with_value_too_large() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_with_data(
        dir.path(),
        Options {
            max_value_size: 100,
            ..Options::default()
        },
    )?;

    let error = refused_without_writing(&store, || store.put(b"key", &[7; 101]));
    assert!(
        matches!(error, Error::ValueTooLarge { len: 101, max: 100 }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "value of 101 bytes exceeds the maximum of 100 bytes"
    );

    store.put(b"key", &[7; 100])?;
    assert_eq!(store.get(b"key")?, Some(vec![7; 100]));
    store.close()
}

#[test]
fn batches_over_max_batch_size_are_refused_with_batch_too_large() -> Result<()> {
    const MAX: usize = 200;
    let dir = tempfile::tempdir()?;
    // The options must let one record of the largest key and value fit a batch.
    let options = Options {
        max_batch_size: MAX,
        max_key_size: 16,
        max_value_size: 128,
        ..Options::default()
    };
    let store = store_with_data(dir.path(), options)?;
    let framing = record_len(0, BATCH_BEGIN_VALUE_LEN);
    // Two puts with two-byte keys; the second value is sized so the batch is exactly MAX.
    let first = vec![1; 40];
    let second_len = MAX - framing - record_len(2, first.len()) - RECORD_HEADER_LEN - 2;
    let batch_of = |second_len: usize| {
        let mut batch = WriteBatch::new();
        batch
            .put(b"b1", first.clone())
            .put(b"b2", vec![2; second_len]);
        batch
    };

    let error = refused_without_writing(&store, || store.write(batch_of(second_len + 1)));
    assert!(
        matches!(error, Error::BatchTooLarge { len, max: MAX } if len == MAX + 1),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "batch of {} bytes exceeds the maximum of {MAX} bytes",
            MAX + 1
        )
    );
    assert_eq!(store.get(b"b1")?, None);

    store.write(batch_of(second_len))?;
    assert_eq!(store.get(b"b2")?, Some(vec![2; second_len]));
    store.close()
}

/// One invalid operation, for a batch that is otherwise valid.
#[derive(Debug, Clone, Copy)]
enum BadOp {
    EmptyKey,
    KeyTooLarge,
    ValueTooLarge,
}

impl BadOp {
    fn add_to(self, batch: &mut WriteBatch) {
        match self {
            BadOp::EmptyKey => batch.put(Vec::new(), b"v"),
            BadOp::KeyTooLarge => batch.delete(vec![b'k'; 17]),
            BadOp::ValueTooLarge => batch.put(b"big", vec![0; 65]),
        };
    }

    fn is_reported_by(self, error: &Error) -> bool {
        match self {
            BadOp::EmptyKey => matches!(error, Error::EmptyKey),
            BadOp::KeyTooLarge => matches!(error, Error::KeyTooLarge { len: 17, max: 16 }),
            BadOp::ValueTooLarge => matches!(error, Error::ValueTooLarge { len: 65, max: 64 }),
        }
    }
}

#[test]
fn a_batch_with_one_bad_operation_writes_none_of_its_good_ones() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let open = || {
        Bitcask::open(
            dir.path(),
            Options {
                max_key_size: 16,
                max_value_size: 64,
                ..Options::default()
            },
        )
    };
    let store = store_with_data(dir.path(), Options::default())?;
    store.close()?;
    let store = open()?;

    for what in [BadOp::EmptyKey, BadOp::KeyTooLarge, BadOp::ValueTooLarge] {
        let error = refused_without_writing(&store, || {
            let mut batch = WriteBatch::new();
            batch.put(b"new-1", b"good").delete(b"existing");
            what.add_to(&mut batch);
            batch.put(b"new-2", b"good");
            store.write(batch)
        });
        assert!(what.is_reported_by(&error), "{what:?}: {error:?}");
        assert_eq!(store.get(b"new-1")?, None, "{what:?}");
        assert_eq!(store.get(b"new-2")?, None, "{what:?}");
        assert_eq!(store.get(b"existing")?, Some(b"value".to_vec()), "{what:?}");
    }
    store.close()?;

    let store = open()?;
    assert_eq!(store.len(), 2);
    assert_eq!(store.get(b"existing")?, Some(b"value".to_vec()));
    assert_eq!(store.get(b"new-1")?, None);
    store.close()
}

#[test]
fn a_file_where_the_directory_should_be_is_refused_with_not_a_directory() -> Result<()> {
    let parent = tempfile::tempdir()?;
    let path = parent.path().join("store");
    fs::write(&path, b"not a store")?;

    let error = Bitcask::open(&path, Options::default()).expect_err("a file is no store");
    assert!(
        matches!(&error, Error::NotADirectory { path: p } if *p == path),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("{} is not a directory", path.display())
    );
    let error = check(&path).expect_err("a file is no store");
    assert!(matches!(error, Error::NotADirectory { .. }), "{error:?}");

    assert_eq!(fs::read(&path)?, b"not a store");
    assert_eq!(
        snapshot(parent.path())?.len(),
        1,
        "nothing created beside it"
    );
    Ok(())
}

#[test]
fn a_missing_directory_without_create_if_missing_is_refused_with_not_found() -> Result<()> {
    let parent = tempfile::tempdir()?;
    let path = parent.path().join("missing");

    let error = Bitcask::open(
        &path,
        Options {
            create_if_missing: false,
            ..Options::default()
        },
    )
    .expect_err("nothing to open");
    assert!(
        matches!(&error, Error::NotFound { path: p } if *p == path),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "no store at {}: the directory does not exist",
            path.display()
        )
    );
    let error = check(&path).expect_err("nothing to check");
    assert!(matches!(error, Error::NotFound { .. }), "{error:?}");

    assert!(!path.exists(), "the directory is not created");
    assert!(snapshot(parent.path())?.is_empty());
    Ok(())
}

/// The default options with one change.
fn options_with(change: impl FnOnce(&mut Options)) -> Options {
    let mut options = Options::default();
    change(&mut options);
    options
}

#[test]
fn invalid_options_are_refused_with_invalid_options_before_touching_the_disk() -> Result<()> {
    let parent = tempfile::tempdir()?;
    let path = parent.path().join("store");
    let ratio = |min_dead_ratio| {
        Some(MergeTrigger {
            min_dead_ratio,
            ..MergeTrigger::default()
        })
    };
    let cases = [
        (
            "max_file_size",
            options_with(|o| o.max_file_size = MIN_FILE_SIZE - 1),
        ),
        (
            "max_file_size",
            options_with(|o| o.max_file_size = MAX_FILE_SIZE + 1),
        ),
        ("max_key_size", options_with(|o| o.max_key_size = 0)),
        (
            "max_key_size",
            options_with(|o| o.max_key_size = usize::from(u16::MAX) + 1),
        ),
        (
            "max_value_size",
            options_with(|o| {
                o.max_value_size = usize::try_from(MAX_FILE_SIZE).expect("64-bit") + 1;
            }),
        ),
        ("max_batch_size", options_with(|o| o.max_batch_size = 10)),
        (
            "max_batch_size",
            options_with(|o| {
                o.max_batch_size = usize::try_from(MAX_FILE_SIZE).expect("64-bit") + 1;
            }),
        ),
        (
            "interval",
            options_with(|o| o.sync = caskade_engine::SyncPolicy::Interval(Duration::ZERO)),
        ),
        (
            "min_dead_ratio",
            options_with(|o| o.auto_merge = ratio(0.0)),
        ),
        (
            "min_dead_ratio",
            options_with(|o| o.auto_merge = ratio(1.5)),
        ),
        (
            "min_dead_ratio",
            options_with(|o| o.auto_merge = ratio(f64::NAN)),
        ),
        (
            "maintenance_interval",
            options_with(|o| o.maintenance_interval = Duration::ZERO),
        ),
    ];
    for (option, options) in cases {
        let error = Bitcask::open(&path, options.clone()).expect_err("invalid options are refused");
        let Error::InvalidOptions { reason } = &error else {
            panic!("{option}: expected InvalidOptions, got {error:?}");
        };
        assert!(
            reason.contains(option),
            "{option}: the reason names it: {reason}"
        );
        assert_eq!(error.to_string(), format!("invalid options: {reason}"));
        assert!(
            matches!(options.validate(), Err(Error::InvalidOptions { .. })),
            "{option}: Options::validate agrees"
        );
        assert!(!path.exists(), "{option}: the directory is not created");
    }

    // The bounds themselves are valid.
    let bounds = Options {
        max_file_size: MIN_FILE_SIZE,
        max_key_size: 1,
        ..Options::default()
    };
    let store = Bitcask::open(&path, bounds)?;
    store.put(b"k", b"v")?;
    store.close()
}

#[test]
fn max_batch_size_below_the_minimum_its_message_states_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let too_small = Options {
        max_batch_size: 1,
        ..Options::default()
    };
    let Err(Error::InvalidOptions { reason }) = Bitcask::open(dir.path(), too_small) else {
        panic!("a 1-byte max_batch_size is refused");
    };
    // The message states the smallest accepted size; every size below it must be refused.
    let stated_minimum: usize = reason
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .expect("the message states a minimum in bytes");
    for size in [1, stated_minimum - 1] {
        let result = Bitcask::open(
            dir.path(),
            Options {
                max_batch_size: size,
                ..Options::default()
            },
        );
        assert!(
            matches!(result, Err(Error::InvalidOptions { .. })),
            "max_batch_size({size}) is below the stated minimum ({reason}) but was accepted"
        );
    }
    // The smallest batch size works once keys and values are small enough to fit it.
    Bitcask::open(
        dir.path(),
        Options {
            max_batch_size: stated_minimum,
            max_key_size: 1,
            max_value_size: 0,
            ..Options::default()
        },
    )?
    .close()
}

/// Writes enough into 1 KiB files to seal a few, closes (writing hint files), and returns the
/// values written.
fn sealed_store(dir: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let store = Bitcask::open(
        dir,
        Options {
            max_file_size: 1024,
            ..Options::default()
        },
    )?;
    let mut written = Vec::new();
    for i in 0..40 {
        let (key, value) = (
            format!("key-{i:02}"),
            format!("value {i} {}", "x".repeat(40)),
        );
        store.put(key.as_bytes(), value.as_bytes())?;
        written.push((key.into_bytes(), value.into_bytes()));
    }
    assert!(store.stats().files.len() >= 3, "files rotated");
    store.close()?;
    Ok(written)
}

fn assert_holds(store: &Bitcask, written: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    for (key, value) in written {
        assert_eq!(store.get(key)?.as_ref(), Some(value));
    }
    assert_eq!(store.len(), written.len());
    Ok(())
}

#[test]
fn an_unreadable_data_file_fails_open_with_an_io_error_or_is_read_by_root() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let written = sealed_store(dir.path())?;
    let first = dir.path().join("0000000001.data");
    let before = snapshot(dir.path())?;
    fs::set_permissions(&first, fs::Permissions::from_mode(0o000))?;
    // Root (or CAP_DAC_OVERRIDE) ignores permission bits; find out rather than assume.
    let enforced = fs::File::open(&first).is_err();

    let opened = Bitcask::open(
        dir.path(),
        Options {
            max_file_size: 1024,
            ..Options::default()
        },
    );
    if enforced {
        let error = opened.expect_err("an unreadable data file cannot be opened");
        let Error::Io(io_error) = &error else {
            panic!("expected an I/O error, got {error:?}");
        };
        assert_eq!(io_error.kind(), io::ErrorKind::PermissionDenied);
        assert!(error.to_string().starts_with("I/O error: "), "{error}");
        assert!(
            error.source().is_some(),
            "the I/O error is kept as the source"
        );
        let error = check(dir.path()).expect_err("check cannot read it either");
        assert!(matches!(error, Error::Io(_)), "{error:?}");
    } else {
        eprintln!("permission bits are not enforced for this user: checking root's view");
        let store = opened?;
        assert_holds(&store, &written)?;
        store.close()?;
    }
    let mode = fs::metadata(&first)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o000, "the engine leaves permissions alone");

    fs::set_permissions(&first, fs::Permissions::from_mode(0o644))?;
    assert_eq!(snapshot(dir.path())?, before, "nothing written");
    let store = Bitcask::open(
        dir.path(),
        Options {
            max_file_size: 1024,
            ..Options::default()
        },
    )?;
    assert_holds(&store, &written)?;
    store.close()
}

#[test]
fn a_data_file_that_cannot_be_mapped_fails_open_with_an_io_error() -> Result<()> {
    // Unlike permission bits, this holds for root too: a directory named like a data file
    // opens but cannot be memory-mapped.
    let dir = tempfile::tempdir()?;
    let written = sealed_store(dir.path())?;
    let before = snapshot(dir.path())?;
    let first = dir.path().join("0000000001.data");
    let saved = fs::read(&first)?;
    fs::remove_file(&first)?;
    fs::create_dir(&first)?;

    let error = Bitcask::open(
        dir.path(),
        Options {
            max_file_size: 1024,
            ..Options::default()
        },
    )
    .expect_err("a directory is no data file");
    assert!(matches!(error, Error::Io(_)), "{error:?}");
    assert!(first.is_dir(), "left as it was");

    fs::remove_dir(&first)?;
    fs::write(&first, saved)?;
    assert_eq!(snapshot(dir.path())?, before, "nothing else written");
    let store = Bitcask::open(
        dir.path(),
        Options {
            max_file_size: 1024,
            ..Options::default()
        },
    )?;
    assert_holds(&store, &written)?;
    store.close()
}

#[test]
fn backup_into_a_non_empty_destination_is_refused_with_backup_destination_not_empty() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let store = store_with_data(dir.path(), Options::default())?;
    let elsewhere = tempfile::tempdir()?;

    let occupied = elsewhere.path().join("occupied");
    fs::create_dir(&occupied)?;
    fs::write(occupied.join("keep.txt"), b"mine")?;
    let error = refused_without_writing(&store, || store.backup(&occupied).map(drop));
    assert!(
        matches!(&error, Error::BackupDestinationNotEmpty { path } if *path == occupied),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "backup destination {} exists and is not an empty directory",
            occupied.display()
        )
    );
    assert_eq!(
        snapshot(&occupied)?,
        BTreeMap::from([("keep.txt".to_owned(), b"mine".to_vec())])
    );

    let file = elsewhere.path().join("a-file");
    fs::write(&file, b"mine too")?;
    let error = refused_without_writing(&store, || store.backup(&file).map(drop));
    assert!(
        matches!(error, Error::BackupDestinationNotEmpty { .. }),
        "{error:?}"
    );
    assert_eq!(fs::read(&file)?, b"mine too");

    // An existing empty directory is a valid destination.
    let empty = elsewhere.path().join("empty");
    fs::create_dir(&empty)?;
    store.backup(&empty)?;
    store.close()?;
    let copy = Bitcask::open(&empty, Options::default())?;
    assert_eq!(copy.get(b"existing")?, Some(b"value".to_vec()));
    copy.close()
}

#[test]
fn every_operation_on_a_clone_after_close_is_refused_with_closed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_with_data(dir.path(), Options::default())?;
    let clone = store.clone();
    store.close()?;
    let before = snapshot(dir.path())?;
    let backup_dest = dir.path().join("backup");

    let closed = |what: &str, result: Result<()>| {
        let error = result.expect_err(what);
        assert!(matches!(error, Error::Closed), "{what}: {error:?}");
        assert_eq!(error.to_string(), "the store is closed");
    };
    closed("get", clone.get(b"existing").map(drop));
    closed(
        "get_with",
        clone.get_with(b"existing", <[u8]>::len).map(drop),
    );
    closed("contains", clone.contains(b"existing").map(drop));
    closed("put", clone.put(b"new", b"value"));
    closed("delete", clone.delete(b"existing"));
    let mut batch = WriteBatch::new();
    batch.put(b"a", b"1").put(b"b", b"2");
    closed("write", clone.write(batch));
    closed("sync", clone.sync());
    closed("merge", clone.merge().map(drop));
    closed("backup", clone.backup(&backup_dest).map(drop));
    assert!(!backup_dest.exists(), "a refused backup creates nothing");
    assert_eq!(snapshot(dir.path())?, before, "nothing written after close");

    // Closing again is not an error, and the lock is free for a new handle.
    let reopened = Bitcask::open(dir.path(), Options::default())?;
    closed("put while reopened", clone.put(b"new", b"value"));
    clone.close()?;
    assert_eq!(reopened.get(b"existing")?, Some(b"value".to_vec()));
    assert_eq!(reopened.get(b"new")?, None);
    assert_eq!(reopened.len(), 2);
    reopened.close()
}
