//! Crashes of a real process: a writer child is killed with `SIGKILL` mid-write, and every
//! write it acknowledged must be there when the store is reopened.
//!
//! The test binary runs itself as the child: [`acknowledged_writes_survive_sigkill`] looks
//! for [`CHILD_DIR_VAR`] and, when it is set, writes to the store in that directory until it is
//! killed instead of running the parent scenario. The child prints `ack N` on stdout after
//! write `N` has returned; what write `N` does follows from `N` alone ([`Op::nth`]), so the
//! parent knows exactly what each acknowledged write stored.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{Model, contents};

use caskade_engine::{Bitcask, MergeTrigger, Options, SyncPolicy, WriteBatch, check};

type TestResult = std::result::Result<(), Box<dyn Error>>;

/// The store directory the child writes to; its presence makes the test run as the child.
const CHILD_DIR_VAR: &str = "CASKADE_CRASH_CHILD_DIR";
/// `max_file_size` for the child.
const CHILD_FILE_SIZE_VAR: &str = "CASKADE_CRASH_CHILD_FILE_SIZE";
/// Set to turn on frequent automatic merges in the child.
const CHILD_AUTO_MERGE_VAR: &str = "CASKADE_CRASH_CHILD_AUTO_MERGE";
/// The name of the test, which the child is started with.
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";
/// The child stops by itself after this many writes, should nobody kill it.
const CHILD_MAX_WRITES: u64 = 200_000;
/// Keys are few, so writes overwrite and delete each other's values.
const KEYS: u64 = 24;

/// What write number `n` of the child does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Puts (`Some`) and deletes (`None`), all or nothing.
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
}

fn key(n: u64) -> Vec<u8> {
    format!("key-{:02}", n % KEYS).into_bytes()
}

/// A value that names the write that stored it, of varied length.
fn value(n: u64, part: u64) -> Vec<u8> {
    let mut value = format!("write-{n}.{part}:").into_bytes();
    let padding = usize::try_from((n * 31 + part * 7) % 120).expect("less than 120");
    value.resize(value.len() + padding, b'a' + (n % 26) as u8);
    value
}

impl Op {
    fn nth(n: u64) -> Op {
        match n % 5 {
            4 => {
                let mut ops: Vec<_> = (0..2 + n % 3)
                    .map(|part| (key(n * 7 + part * 5), Some(value(n, part))))
                    .collect();
                ops.push((key(n * 11 + 3), None));
                Op::Batch(ops)
            }
            2 if n.is_multiple_of(3) => Op::Delete(key(n)),
            _ => Op::Put(key(n * 3), value(n, 0)),
        }
    }

    fn write(self, store: &Bitcask) -> caskade_engine::Result<()> {
        match self {
            Op::Put(key, value) => store.put(&key, &value),
            Op::Delete(key) => store.delete(&key),
            Op::Batch(ops) => {
                let mut batch = WriteBatch::new();
                for (key, value) in ops {
                    match value {
                        Some(value) => batch.put(key, value),
                        None => batch.delete(key),
                    };
                }
                store.write(batch)
            }
        }
    }

    fn apply(self, model: &mut Model) {
        match self {
            Op::Put(key, value) => {
                model.insert(key, value);
            }
            Op::Delete(key) => {
                model.remove(&key);
            }
            Op::Batch(ops) => {
                for (key, value) in ops {
                    match value {
                        Some(value) => model.insert(key, value),
                        None => model.remove(&key),
                    };
                }
            }
        }
    }
}

/// The store's state after writes `0..count`.
fn model_after(count: u64) -> Model {
    let mut model = Model::new();
    for n in 0..count {
        Op::nth(n).apply(&mut model);
    }
    model
}

/// The child: writes until killed, acknowledging each write once it has returned.
fn run_child(dir: &Path) -> TestResult {
    let mut options = Options {
        sync: SyncPolicy::Always,
        auto_merge: None,
        ..Options::default()
    };
    if let Ok(size) = std::env::var(CHILD_FILE_SIZE_VAR) {
        options.max_file_size = size.parse()?;
    }
    if std::env::var_os(CHILD_AUTO_MERGE_VAR).is_some() {
        options.auto_merge = Some(MergeTrigger {
            min_dead_ratio: 0.3,
            min_dead_bytes: 1,
        });
        options.maintenance_interval = Duration::from_millis(5);
    }
    let store = Bitcask::open(dir, options)?;
    let mut out = std::io::stdout().lock();
    // libtest may have printed part of a line; acknowledgements start on lines of their own.
    writeln!(out)?;
    for n in 0..CHILD_MAX_WRITES {
        Op::nth(n).write(&store)?;
        writeln!(out, "ack {n}")?;
        out.flush()?;
    }
    Ok(())
}

/// One crash: how many acknowledgements to wait for before the kill, and the child's options.
#[derive(Debug, Clone, Copy)]
struct Run {
    kill_after: u64,
    max_file_size: Option<u64>,
    auto_merge: bool,
}

/// Counts `line` if it is the next acknowledgement.
fn count_ack(line: &str, acked: &mut u64) -> TestResult {
    if let Some(n) = line.strip_prefix("ack ") {
        assert_eq!(n.parse::<u64>()?, *acked, "acknowledgements come in order");
        *acked += 1;
    }
    Ok(())
}

/// Runs a child until it has acknowledged `run.kill_after` writes, kills it and returns how
/// many writes it acknowledged in all.
fn crash_child(dir: &Path, run: Run) -> Result<u64, Box<dyn Error>> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VAR, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(size) = run.max_file_size {
        command.env(CHILD_FILE_SIZE_VAR, size.to_string());
    }
    if run.auto_merge {
        command.env(CHILD_AUTO_MERGE_VAR, "1");
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or("the child's stdout is piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = 0;
    while acked < run.kill_after {
        let Some(line) = lines.next() else {
            child.wait()?;
            return Err(format!("the child exited after {acked} acknowledgements").into());
        };
        count_ack(&line?, &mut acked)?;
    }
    child.kill()?;
    let status = child.wait()?;
    assert!(!status.success(), "the child was killed, not finished");
    // Acknowledgements the child printed before it died, not yet read.
    for line in lines {
        count_ack(&line?, &mut acked)?;
    }
    Ok(acked)
}

fn verify_after_crash(dir: &Path, run: Run, acked: u64) -> TestResult {
    let store = Bitcask::open(
        dir,
        Options {
            auto_merge: None,
            ..Options::default()
        },
    )?;
    let found = contents(&store)?;
    // Write `acked` may have reached the disk before the kill without being acknowledged;
    // write `acked + 1` never started. Batches are all or nothing, so no other state will do.
    let acknowledged = model_after(acked);
    if found != acknowledged {
        let with_next = model_after(acked + 1);
        assert!(
            found == with_next,
            "{run:?}: after {acked} acknowledged writes the store holds neither their state \
             nor that of one more write.\nfound:    {found:?}\nexpected: {acknowledged:?}\n\
             or:       {with_next:?}"
        );
    }
    store.put(b"after-the-crash", b"works")?;
    store.close()?;

    let report = check(dir)?;
    assert!(report.is_ok(), "{run:?}: {:?}", report.problems);
    let store = Bitcask::open(
        dir,
        Options {
            auto_merge: None,
            ..Options::default()
        },
    )?;
    assert_eq!(store.recovery_report().torn_tail, None, "{run:?}");
    assert_eq!(store.get(b"after-the-crash")?, Some(b"works".to_vec()));
    store.close()?;
    Ok(())
}

/// Runs as the writer child when [`CHILD_DIR_VAR`] is set, and as the parent otherwise.
#[test]
fn acknowledged_writes_survive_sigkill() -> TestResult {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        return run_child(Path::new(&dir));
    }
    let small = Some(1024);
    let runs = [
        (1, None, false),
        (7, small, false),
        (40, small, false),
        (150, small, false),
        (90, Some(4096), false),
        (60, small, true),
        (250, small, true),
    ];
    for (kill_after, max_file_size, auto_merge) in runs {
        let run = Run {
            kill_after,
            max_file_size,
            auto_merge,
        };
        let dir = tempfile::tempdir()?;
        let acked = crash_child(dir.path(), run)?;
        assert!(acked >= kill_after);
        verify_after_crash(dir.path(), run, acked)?;
    }
    Ok(())
}
