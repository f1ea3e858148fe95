//! The directory lock: one open store per directory, in this process or any other.
//!
//! The lock is an `flock` on the store's `LOCK` file. Each `open` makes its own open file
//! description, so a second open in the same process conflicts with the first just as one in
//! another process does.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use caskade_engine::{Bitcask, Error, Options, Result, SyncPolicy, check};

fn assert_locked(result: Result<impl std::fmt::Debug>, dir: &Path, what: &str) {
    match result {
        Err(Error::Locked { dir: locked }) => assert_eq!(locked, dir, "{what}"),
        other => panic!("{what}: expected Error::Locked, got {other:?}"),
    }
}

#[test]
fn a_second_open_of_an_open_store_is_locked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let first = Bitcask::open(dir.path(), Options::default())?;
    first.put(b"k", b"v")?;
    let lock_contents = fs::read(dir.path().join("LOCK"))?;
    assert_eq!(
        lock_contents,
        format!("{}\n", std::process::id()).into_bytes()
    );

    let error = Bitcask::open(dir.path(), Options::default()).expect_err("already open");
    assert_eq!(
        error.to_string(),
        format!(
            "the store at {} is locked by another process; only one writer may open it",
            dir.path().display()
        )
    );
    assert_locked(Err::<(), _>(error), dir.path(), "second open");
    // The refused open neither released the first handle's lock nor rewrote the lock file.
    assert_locked(
        Bitcask::open(dir.path(), Options::default()),
        dir.path(),
        "third open",
    );
    assert_eq!(fs::read(dir.path().join("LOCK"))?, lock_contents);

    // The first handle is unaffected.
    first.put(b"k2", b"v2")?;
    assert_eq!(first.get(b"k")?, Some(b"v".to_vec()));
    first.close()?;
    let reopened = Bitcask::open(dir.path(), Options::default())?;
    assert_eq!(reopened.get(b"k2")?, Some(b"v2".to_vec()));
    reopened.close()
}

#[test]
fn check_on_an_open_store_is_locked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(dir.path(), Options::default())?;
    store.put(b"k", b"v")?;
    assert_locked(check(dir.path()), dir.path(), "check while open");
    store.close()?;

    let report = check(dir.path())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.records, 1);
    // check releases the lock when it is done.
    Bitcask::open(dir.path(), Options::default())?.close()
}

#[test]
fn close_releases_the_lock_even_while_clones_are_alive() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(dir.path(), Options::default())?;
    let clone = store.clone();
    store.put(b"k", b"v")?;
    store.close()?;

    let reopened = Bitcask::open(dir.path(), Options::default())?;
    assert_eq!(reopened.get(b"k")?, Some(b"v".to_vec()));
    assert!(matches!(clone.get(b"k"), Err(Error::Closed)));
    drop(clone);
    // Dropping the closed clone does not release the new handle's lock.
    assert_locked(
        Bitcask::open(dir.path(), Options::default()),
        dir.path(),
        "after drop",
    );
    reopened.close()
}

#[test]
fn dropping_the_last_handle_releases_the_lock() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Buffered writes, so the drop has something to flush.
    let store = Bitcask::open(
        dir.path(),
        Options {
            sync: SyncPolicy::Never,
            ..Options::default()
        },
    )?;
    let clone = store.clone();
    store.put(b"k", b"v")?;
    drop(store);
    assert_locked(
        Bitcask::open(dir.path(), Options::default()),
        dir.path(),
        "a clone lives",
    );
    clone.put(b"k2", b"v2")?;
    drop(clone);

    let reopened = Bitcask::open(dir.path(), Options::default())?;
    assert_eq!(reopened.get(b"k")?, Some(b"v".to_vec()), "the drop flushed");
    assert_eq!(
        reopened.get(b"k2")?,
        Some(b"v2".to_vec()),
        "the drop flushed"
    );
    reopened.close()
}

#[test]
fn a_keys_iterator_outliving_its_store_neither_holds_nor_releases_the_lock() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(dir.path(), Options::default())?;
    store.put(b"k", b"v")?;
    let keys = store.keys();
    // The iterator is not a handle: dropping the last handle closes the store.
    drop(store);
    let reopened = Bitcask::open(dir.path(), Options::default())?;
    // Dropping the old store's last remnant leaves the new handle's lock alone.
    drop(keys);
    assert_locked(
        Bitcask::open(dir.path(), Options::default()),
        dir.path(),
        "after the iterator",
    );
    assert_eq!(reopened.get(b"k")?, Some(b"v".to_vec()));
    reopened.close()
}

/// Set in the child process to the directory it should open and hold.
const CHILD_DIR_ENV: &str = "CASKADE_LOCK_TEST_HOLD_DIR";
/// The line the child prints once it holds the lock.
const HOLDING: &str = "caskade lock test: child holds the lock";
/// This test's name, which the child is run with.
const CROSS_PROCESS_TEST: &str =
    "a_store_open_in_another_process_is_locked_until_that_process_exits";

/// The child's part: open the store, write a key, say so, and hold the lock until the parent
/// closes our stdin.
fn hold_lock_until_stdin_closes(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let store = Bitcask::open(dir, Options::default())?;
    store.put(b"written-by", b"child")?;
    println!("{HOLDING}");
    std::io::stdout().flush()?;
    std::io::stdin().read_to_end(&mut Vec::new())?;
    store.close()?;
    Ok(())
}

/// One test, two roles: run normally it is the parent, which re-runs this test binary with
/// [`CHILD_DIR_ENV`] set so that the child takes the other role.
#[test]
fn a_store_open_in_another_process_is_locked_until_that_process_exits()
-> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        return hold_lock_until_stdin_closes(Path::new(&dir));
    }
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            CROSS_PROCESS_TEST,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut output = Vec::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line)? == 0 {
            let rest = child.wait_with_output()?;
            panic!(
                "the child exited ({}) before holding the lock\nstdout: {output:#?}\nstderr: {}",
                rest.status,
                String::from_utf8_lossy(&rest.stderr)
            );
        }
        // libtest prints the test name without a line break first, so the line ends with it.
        if line.trim_end().ends_with(HOLDING) {
            break;
        }
        output.push(line);
    }

    assert_locked(
        Bitcask::open(dir.path(), Options::default()),
        dir.path(),
        "open while the child holds it",
    );
    assert_locked(
        check(dir.path()),
        dir.path(),
        "check while the child holds it",
    );

    drop(child.stdin.take());
    stdout.read_to_end(&mut Vec::new())?;
    let finished = child.wait_with_output()?;
    assert!(
        finished.status.success(),
        "the child failed: {}",
        String::from_utf8_lossy(&finished.stderr)
    );

    let store = Bitcask::open(dir.path(), Options::default())?;
    assert_eq!(store.get(b"written-by")?, Some(b"child".to_vec()));
    store.close()?;
    Ok(())
}
