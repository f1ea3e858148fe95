//! Everyday use: put, get, delete, batches, reopen, rotation, merge, backup.

use caskade_engine::{Bitcask, Result, SyncPolicy, WriteBatch};

#[test]
fn values_survive_reopen_rotation_and_merge() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let open = || {
        Bitcask::builder(dir.path())
            .max_file_size(4096)
            .auto_merge(None)
            .open()
    };
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
    batch
        .put(b"key-1".to_vec(), b"batched".to_vec())
        .delete(b"key-3".to_vec());
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
    let copy = Bitcask::builder(backup.path().join("copy")).open()?;
    check(&copy)?;
    Ok(())
}

#[test]
fn never_policy_reads_its_own_buffered_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::builder(dir.path())
        .sync(SyncPolicy::Never)
        .open()?;
    store.put(b"k", b"v")?;
    assert_eq!(store.get(b"k")?, Some(b"v".to_vec()));
    store.close()?;
    let store = Bitcask::builder(dir.path()).open()?;
    assert_eq!(store.get(b"k")?, Some(b"v".to_vec()));
    Ok(())
}
