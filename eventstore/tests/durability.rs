//! Kill and reopen: a child process (this test binary, re-run in child mode) appends
//! multi-event batches under the default `SyncPolicy::Always` and prints a line for each
//! acknowledged append; the parent kills it with SIGKILL mid-stream, reopens the store and
//! checks that every acknowledged append is in its stream and in `$all`, and that no append
//! is partly visible. Three rounds, each resuming where the last left off.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use caskade_eventstore::{
    EventData, EventStore, ExpectedVersion, Options, ReadAll, RecordedEvent, StreamVersion,
};
use serde_json::json;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Set (to the store's directory) in the child process.
const CHILD_DIR_VAR: &str = "CASKADE_EVENTSTORE_DURABILITY_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_appends_survive_a_kill_and_no_append_is_partly_visible";
const ROUNDS: usize = 3;
/// Acknowledged appends the parent waits for before it kills the child.
const ACKS_PER_ROUND: usize = 40;
/// Appends the child makes at most, should the parent never kill it.
const MAX_CHILD_APPENDS: u64 = 100_000;

fn stream_of(append: u64) -> String {
    format!("stream-{}", append % 4)
}

fn events_in(append: u64) -> u64 {
    2 + append % 3
}

fn event_id(append: u64, event: u64) -> Uuid {
    Uuid::from_u128(u128::from(append + 1) << 32 | u128::from(event))
}

/// The events of append number `append`: known ids and data, of varying sizes so that a
/// kill can land in the middle of a large record.
fn events_of(append: u64) -> Vec<EventData> {
    (0..events_in(append))
        .map(|event| {
            let pad = "x".repeat(((append * 37 + event * 11) % 3000) as usize);
            EventData::json(
                "Appended",
                &json!({ "append": append, "event": event, "pad": pad }),
            )
            .expect("a json! value serializes")
            .with_id(event_id(append, event))
        })
        .collect()
}

/// What the child printed for an acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    append: u64,
    first_position: u64,
    last_version: u64,
}

impl Ack {
    /// The marker that starts an acknowledgement line.
    const MARKER: &str = "ACKED ";

    fn parse(line: &str) -> Option<Ack> {
        let mut fields = line.strip_prefix(Ack::MARKER)?.split(' ');
        let mut next = || fields.next()?.parse().ok();
        Some(Ack {
            append: next()?,
            first_position: next()?,
            last_version: next()?,
        })
    }
}

/// The child: appends until killed, printing one line per acknowledged append.
fn child(dir: &Path) -> TestResult {
    let store = EventStore::open(dir, Options::default())?;
    let resume = match store.read_all(ReadAll::backwards().max_count(1)).next() {
        Some(last) => {
            last?.json::<serde_json::Value>()?["append"]
                .as_u64()
                .ok_or("an event without an append number")?
                + 1
        }
        None => 0,
    };
    let mut stdout = std::io::stdout().lock();
    // The test harness has printed the test's name without a newline.
    writeln!(stdout)?;
    for append in resume..resume + MAX_CHILD_APPENDS {
        let result = store.append(&stream_of(append), ExpectedVersion::Any, &events_of(append))?;
        writeln!(
            stdout,
            "{}{append} {} {}",
            Ack::MARKER,
            result.first_position.0,
            result.next_expected_version.0
        )?;
        stdout.flush()?;
    }
    Ok(())
}

/// Runs a child until it has acknowledged [`ACKS_PER_ROUND`] appends, then kills it.
fn run_and_kill_child(dir: &Path) -> Result<Vec<Ack>, Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VAR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut acks = Vec::with_capacity(ACKS_PER_ROUND);
    for line in BufReader::new(stdout).lines() {
        if let Some(ack) = Ack::parse(&line?) {
            acks.push(ack);
            if acks.len() == ACKS_PER_ROUND {
                break;
            }
        }
    }
    child.kill()?;
    child.wait()?;
    if acks.len() < ACKS_PER_ROUND {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            pipe.read_to_string(&mut stderr)?;
        }
        return Err(format!("the child stopped after {} acks:\n{stderr}", acks.len()).into());
    }
    Ok(acks)
}

/// Reopens the store and checks it against every acknowledgement so far; returns how many
/// appends are present (acknowledged or not).
fn verify(dir: &Path, acks: &[Ack]) -> Result<u64, Box<dyn std::error::Error>> {
    let store = EventStore::open(dir, Options::default())?;
    let all: Vec<RecordedEvent> = store
        .read_all(ReadAll::forwards())
        .collect::<Result<_, _>>()?;

    // `$all` has no holes and is made of whole appends, in append order.
    for (i, event) in all.iter().enumerate() {
        assert_eq!(event.position.0, i as u64, "hole in $all at {i}");
    }
    assert_eq!(store.committed_position().0, all.len() as u64);
    let mut appends: BTreeMap<u64, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in &all {
        let append = event.json::<serde_json::Value>()?["append"]
            .as_u64()
            .ok_or("an event without an append number")?;
        appends.entry(append).or_default().push(event);
    }
    let present = appends.len() as u64;
    assert_eq!(
        appends.keys().copied().collect::<Vec<_>>(),
        (0..present).collect::<Vec<_>>(),
        "appends present are not a prefix of those made"
    );
    let mut next_version: BTreeMap<String, u64> = BTreeMap::new();
    for (&append, events) in &appends {
        let expected = events_of(append);
        assert_eq!(
            events.len(),
            expected.len(),
            "append {append} is partly visible"
        );
        let stream = stream_of(append);
        let version = next_version.entry(stream.clone()).or_insert(0);
        for (event, data) in events.iter().zip(&expected) {
            assert_eq!(event.id, data.id);
            assert_eq!(event.data, data.data);
            assert_eq!(*event.stream, *stream);
            assert_eq!(event.version, StreamVersion(*version));
            *version += 1;
        }
    }

    // Every acknowledged append is there, where its acknowledgement said.
    assert!(
        present >= acks.len() as u64,
        "{present} appends present, {} acknowledged",
        acks.len()
    );
    for ack in acks {
        let events = appends
            .get(&ack.append)
            .ok_or_else(|| format!("acknowledged append {} is missing", ack.append))?;
        assert_eq!(
            events[0].position.0, ack.first_position,
            "append {}",
            ack.append
        );
        assert_eq!(
            events[events.len() - 1].version.0,
            ack.last_version,
            "append {}",
            ack.append
        );
    }

    // Each stream reads back what `$all` holds of it, and its head agrees.
    for (stream, next) in &next_version {
        let read = store.read_stream_to_vec(stream)?;
        let in_all: Vec<&RecordedEvent> = all.iter().filter(|e| *e.stream == **stream).collect();
        assert_eq!(read.iter().collect::<Vec<_>>(), in_all, "{stream}");
        let info = store
            .stream_info(stream)?
            .ok_or("a stream without a head")?;
        assert_eq!(info.last_version, Some(StreamVersion(next - 1)), "{stream}");
    }
    store.close()?;
    Ok(present)
}

#[test]
fn acknowledged_appends_survive_a_kill_and_no_append_is_partly_visible() -> TestResult {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        return child(Path::new(&dir));
    }
    let dir = tempfile::tempdir()?;
    let mut acks = Vec::new();
    let mut present = 0;
    for round in 0..ROUNDS {
        let round_acks = run_and_kill_child(dir.path())?;
        // Each child resumes right after what the last reopen found.
        assert_eq!(round_acks[0].append, present, "round {round}");
        acks.extend(round_acks);
        present = verify(dir.path(), &acks)?;
    }
    assert!(present >= (ROUNDS * ACKS_PER_ROUND) as u64);
    Ok(())
}
