//! The peer the event-store benches compare against: the same events in SQLite, configured as
//! durably as Caskade's default `SyncPolicy::Always`.
//!
//! WAL journal, `synchronous=FULL` (every commit syncs the WAL), one `events` table with the
//! global position as the rowid and a unique `(stream, version)` index, and appends that check
//! the expected version inside the same `BEGIN IMMEDIATE` transaction as their inserts. The
//! event payload is shared with the Caskade side so both store the same bytes.

use std::path::Path;
use std::time::Duration;

use caskade_eventstore::{ContentType, EventData};
use chrono::Utc;
use rusqlite::{Connection, TransactionBehavior, params};
use uuid::Uuid;

/// The data of every benchmarked event: 100 bytes of JSON.
pub(crate) const PAYLOAD: &[u8; 100] =
    br#"{"account":"account-000042","amount":1250,"currency":"EUR","reference":"invoice-2024-0000000000042"}"#;

/// The type of every benchmarked event.
pub(crate) const EVENT_TYPE: &str = "Deposited";

/// One event to append: a fresh id, [`EVENT_TYPE`], [`PAYLOAD`], no metadata.
pub(crate) fn event() -> EventData {
    EventData {
        id: Uuid::new_v4(),
        event_type: EVENT_TYPE.to_owned(),
        content_type: ContentType::Json,
        data: PAYLOAD.to_vec(),
        metadata: Vec::new(),
    }
}

/// `n` events from [`event`].
pub(crate) fn events(n: usize) -> Vec<EventData> {
    (0..n).map(|_| event()).collect()
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS events (
    stream TEXT NOT NULL,
    version INTEGER NOT NULL,
    position INTEGER PRIMARY KEY,
    id BLOB NOT NULL,
    type TEXT NOT NULL,
    data BLOB NOT NULL,
    metadata BLOB NOT NULL,
    recorded INTEGER NOT NULL,
    UNIQUE(stream, version)
)";

/// How long a connection waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens (creating if needed) the database at `path`: WAL, `synchronous=FULL`, the `events`
/// table, and a busy timeout so concurrent writers queue instead of failing.
pub(crate) fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("opening a SQLite database in a temp dir succeeds");
    conn.busy_timeout(BUSY_TIMEOUT)
        .expect("setting a busy timeout succeeds");
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .expect("switching to WAL succeeds");
    assert_eq!(mode, "wal", "SQLite must run in WAL mode");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("setting synchronous=FULL succeeds");
    let synchronous: i64 = conn
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .expect("reading synchronous succeeds");
    assert_eq!(synchronous, 2, "SQLite must run with synchronous=FULL");
    conn.execute_batch(SCHEMA)
        .expect("creating the events table succeeds");
    conn
}

/// Why a SQLite append failed.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The stream's last version was not the expected one; nothing was written.
    #[expect(dead_code, reason = "read through Debug when a bench panics")]
    WrongExpectedVersion {
        expected: Option<i64>,
        actual: Option<i64>,
    },
    /// SQLite failed.
    #[expect(dead_code, reason = "read through Debug when a bench panics")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for AppendError {
    fn from(error: rusqlite::Error) -> Self {
        AppendError::Sqlite(error)
    }
}

/// Appends `events` to `stream` if its last version is `expected` (`None`: no stream), in one
/// `BEGIN IMMEDIATE` transaction; returns the new last version. Durable on return
/// (`synchronous=FULL`).
pub(crate) fn append(
    conn: &mut Connection,
    stream: &str,
    expected: Option<i64>,
    events: &[EventData],
) -> Result<i64, AppendError> {
    let recorded = Utc::now().timestamp_micros();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let actual: Option<i64> = tx
        .prepare_cached("SELECT MAX(version) FROM events WHERE stream = ?1")?
        .query_row([stream], |row| row.get(0))?;
    if actual != expected {
        return Err(AppendError::WrongExpectedVersion { expected, actual });
    }
    let first = actual.map_or(0, |last| last + 1);
    let mut version = first;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (stream, version, id, type, data, metadata, recorded)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for event in events {
            insert.execute(params![
                stream,
                version,
                event.id.as_bytes(),
                event.event_type,
                event.data,
                event.metadata,
                recorded
            ])?;
            version += 1;
        }
    }
    tx.commit()?;
    Ok(version - 1)
}
