//! Everyday use: put, get, delete, batches, reopen, rotation, merge, backup.

use caskade_engine::{Bitcask, Interest, Options, RecordCursor, Result, SyncPolicy, WriteBatch};

/// A store of 4 KiB files that merges only when told to.
fn small_files(dir: &std::path::Path) -> Result<Bitcask> {
    Bitcask::open(
        dir,
        Options {
            max_file_size: 4096,
            auto_merge: None,
            ..Options::default()
        },
    )
}

#[test]
fn values_survive_reopen_rotation_and_merge() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let open = || small_files(dir.path());
    let store = open()?;
    for i in 0..500u32 {
        store.put(
            format!("key-{i}").as_bytes(),
            format!("value-{i}").as_bytes(),
        )?;
    }
    for i in (0..500u32).step_by(2) {
        store.delete(format!("key-{i}").as_bytes())?;
    }
    let mut batch = WriteBatch::new();
    batch.put(b"key-1", b"batched").delete(b"key-3");
    store.write(batch)?;
    assert!(store.stats().files.len() > 5, "small files rotate");
    let check = |store: &Bitcask| -> Result<()> {
        for i in 0..500u32 {
            let expected = match i {
                1 => Some(b"batched".to_vec()),
                3 => None,
                i if i % 2 == 0 => None,
                i => Some(format!("value-{i}").into_bytes()),
            };
            assert_eq!(
                store.get(format!("key-{i}").as_bytes())?,
                expected,
                "key-{i}"
            );
        }
        assert_eq!(store.len(), 249);
        Ok(())
    };
    check(&store)?;
    store.close()?;

    let store = open()?;
    check(&store)?;
    let before = store.stats();
    let report = store.merge()?;
    assert!(report.records_copied >= 249);
    let after = store.stats();
    assert!(after.total_bytes() < before.total_bytes());
    check(&store)?;
    let backup = tempfile::tempdir()?;
    store.backup(backup.path().join("copy"))?;
    store.close()?;

    let store = open()?;
    check(&store)?;
    store.close()?;
    let copy = Bitcask::open(backup.path().join("copy"), Options::default())?;
    check(&copy)?;
    Ok(())
}

#[test]
fn never_policy_reads_its_own_buffered_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(
        dir.path(),
        Options {
            sync: SyncPolicy::Never,
            ..Options::default()
        },
    )?;
    store.put(b"k", b"v")?;
    assert_eq!(store.get(b"k")?, Some(b"v".to_vec()));
    store.close()?;
    let store = Bitcask::open(dir.path(), Options::default())?;
    assert_eq!(store.get(b"k")?, Some(b"v".to_vec()));
    Ok(())
}

/// A record as `read_on` saw it: its key, and its value (`None` for a delete).
type Record = (Vec<u8>, Option<Vec<u8>>);

/// Takes record after record with `read_on` until the file's published records end.
fn records_after(store: &Bitcask, mut cursor: RecordCursor) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    while let Some((record, next)) = store.read_on(
        cursor,
        1,
        |_| Interest::Take,
        |key, value| (key.to_vec(), value.map(<[u8]>::to_vec)),
    )? {
        out.push(record);
        cursor = next;
    }
    Ok(out)
}

#[test]
fn read_on_skips_and_stops_as_asked_and_falls_back_on_damage() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let open = || small_files(dir.path());
    let store = open()?;
    let mut batch = WriteBatch::new();
    for key in ["start", "skip-1", "skip-2", "want", "other"] {
        batch.put(key.as_bytes(), key.as_bytes());
    }
    store.write(batch)?;
    let ((), start) = store
        .get_with_cursor(b"start", |_| ())?
        .expect("start is live");
    let interest = |key: &[u8]| match key {
        b"want" => Interest::Take,
        b"skip-1" | b"skip-2" => Interest::Skip,
        _ => Interest::Stop,
    };
    let take = |key: &[u8], value: Option<&[u8]>| (key.to_vec(), value.map(<[u8]>::to_vec));
    let (taken, after) = store
        .read_on(start, 3, interest, take)?
        .expect("want follows two skipped records");
    assert_eq!(taken, (b"want".to_vec(), Some(b"want".to_vec())));
    assert_eq!(
        store.read_on(start, 2, interest, take)?,
        None,
        "max_records reached"
    );
    assert_eq!(
        store.read_on(after, 3, interest, take)?,
        None,
        "stopped at other"
    );

    // Damage the wanted record in a sealed file (whose hint file lets it open unscanned):
    // the fast path gives up, and a lookup reports the corruption.
    store.put(b"filler", &[b'f'; 5000])?;
    store.close()?;
    let path = dir.path().join("0000000001.data");
    let mut bytes = std::fs::read(&path)?;
    let at = bytes
        .windows(8)
        .rposition(|window| window == b"wantwant")
        .expect("the record is in the first file");
    bytes[at + 4] ^= 0xff;
    std::fs::write(&path, &bytes)?;
    let store = open()?;
    assert_eq!(store.recovery_report().hint_files_used, 1);
    assert_eq!(store.read_on(start, 3, interest, take)?, None);
    assert!(matches!(
        store.get(b"want"),
        Err(caskade_engine::Error::Corrupt { .. })
    ));
    Ok(())
}

#[test]
fn read_on_reads_records_as_written_past_batch_framing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(dir.path(), caskade_engine::Options::default())?;
    store.put(b"start", b"s")?;
    store.put(b"a", b"1")?;
    let mut batch = WriteBatch::new();
    batch.put(b"b", b"2").delete(b"a").put(b"c", b"3");
    store.write(batch)?;
    store.put(b"b", b"again")?;

    let (value, cursor) = store
        .get_with_cursor(b"start", <[u8]>::to_vec)?
        .expect("start is live");
    assert_eq!(value, b"s");
    let owned = |key: &[u8], value: Option<&[u8]>| (key.to_vec(), value.map(<[u8]>::to_vec));
    // As written, live or not: `a` was deleted since and the first `b` rewritten.
    assert_eq!(
        records_after(&store, cursor)?,
        vec![
            owned(b"a", Some(b"1")),
            owned(b"b", Some(b"2")),
            owned(b"a", None),
            owned(b"c", Some(b"3")),
            owned(b"b", Some(b"again")),
        ]
    );
    Ok(())
}

#[test]
fn read_on_ends_at_a_merged_away_file_and_never_reads_unflushed_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = small_files(dir.path())?;
    store.put(b"anchor", b"a")?;
    store.put(b"next", b"n")?;
    let ((), cursor) = store
        .get_with_cursor(b"anchor", |_| ())?
        .expect("anchor is live");
    for i in 0..100u32 {
        store.put(format!("filler-{i}").as_bytes(), &[b'f'; 100])?;
    }
    let records = records_after(&store, cursor)?;
    assert_eq!(records[0], (b"next".to_vec(), Some(b"n".to_vec())));
    assert!(
        records.len() < 101,
        "the read ends where the file was sealed"
    );
    store.merge()?;
    assert_eq!(
        records_after(&store, cursor)?,
        vec![],
        "the file was merged away"
    );

    let buffered_dir = tempfile::tempdir()?;
    let buffered = Bitcask::open(
        buffered_dir.path(),
        Options {
            sync: SyncPolicy::Never,
            ..Options::default()
        },
    )?;
    buffered.put(b"anchor", b"a")?;
    buffered.sync()?;
    buffered.put(b"buffered", b"b")?;
    let ((), cursor) = buffered
        .get_with_cursor(b"anchor", |_| ())?
        .expect("anchor is live");
    assert_eq!(
        records_after(&buffered, cursor)?,
        vec![],
        "still in the write buffer"
    );
    buffered.sync()?;
    assert_eq!(
        records_after(&buffered, cursor)?,
        vec![(b"buffered".to_vec(), Some(b"b".to_vec()))]
    );
    Ok(())
}
