//! The keydir's unit tests.

use super::load::LoadBuffers;
use super::*;

fn location(file: u32, offset: u32) -> ValueLocation {
    ValueLocation {
        file_id: FileId(file),
        offset,
        value_len: 10,
        timestamp_secs: 1,
    }
}

#[test]
fn slot_is_24_bytes() {
    assert_eq!(size_of::<Slot>(), 24);
}

#[test]
fn insert_get_remove() {
    let keydir = KeyDir::new();
    assert_eq!(keydir.insert(b"a", location(1, 16)).unwrap(), None);
    assert_eq!(
        keydir.insert(b"a", location(1, 50)).unwrap(),
        Some(location(1, 16))
    );
    assert_eq!(keydir.get(b"a"), Some(location(1, 50)));
    assert_eq!(keydir.len(), 1);
    assert_eq!(keydir.remove(b"a"), Some(location(1, 50)));
    assert_eq!(keydir.get(b"a"), None);
    assert_eq!(keydir.remove(b"a"), None);
}

#[test]
fn update_all_applies_the_last_update_last() {
    let keydir = KeyDir::new();
    let keys: Vec<Vec<u8>> = (0..200u32).map(|i| format!("k{i}").into_bytes()).collect();
    let updates: Vec<_> = (0..200u32)
        .map(|i| (&keys[i as usize][..], Some(location(1, i))))
        .collect();
    let order = keydir.by_shard(&updates);
    assert_eq!(order.last().map(|&(_, _, index)| index), Some(199));
    let last_shard = order[order.len() - 1].0;
    let first_of_last_run = order.iter().position(|&(shard, _, _)| shard == last_shard);
    assert!(
        order[first_of_last_run.unwrap()..]
            .iter()
            .all(|&(shard, _, _)| shard == last_shard),
        "one run per shard"
    );
    keydir.update_all(&updates).unwrap();
    assert_eq!(keydir.len(), 200);
}

#[test]
fn a_parallel_load_ends_as_the_same_updates_applied_in_order() {
    // 3,000 keys, each updated several times, some deleted and put again: every key's
    // updates must land in order whatever thread applies its shard.
    let keys: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| format!("key-{i}").into_bytes())
        .collect();
    let mut updates: Vec<(&[u8], Option<ValueLocation>)> = Vec::new();
    for round in 0..5u32 {
        for (i, key) in keys.iter().enumerate() {
            let i = i as u32;
            let deleted = (i + round).is_multiple_of(7);
            updates.push((key, (!deleted).then(|| location(round + 1, i * 8))));
        }
    }
    let sequential = KeyDir::new();
    let expected = sequential.update_all(&updates).unwrap();
    for threads in [1, 2, 3, 64, 100] {
        let loaded = KeyDir::new();
        loaded.reserve(keys.len());
        let mut buffers = LoadBuffers::default();
        loaded.prepare(&mut buffers, updates.iter().copied());
        let tallies = loaded
            .apply_prepared(&buffers, threads, |tally: &mut Vec<_>, _, new, old| {
                tally.push((new, old));
            })
            .unwrap();
        // Every update's location with the one it replaced, in some order.
        let mut seen: Vec<_> = tallies.into_iter().flatten().collect();
        let mut wanted: Vec<_> = updates.iter().map(|u| u.1).zip(expected.clone()).collect();
        let order = |pair: &(Option<ValueLocation>, Option<ValueLocation>)| {
            let key = |l: Option<ValueLocation>| l.map(|l| (l.file_id.0, l.offset));
            (key(pair.0), key(pair.1))
        };
        seen.sort_by_key(order);
        wanted.sort_by_key(order);
        assert_eq!(seen, wanted, "{threads} threads");
        assert_eq!(loaded.len(), sequential.len(), "{threads} threads");
        for key in &keys {
            assert_eq!(loaded.get(key), sequential.get(key), "{threads} threads");
        }
    }
}

#[test]
fn insert_new_hides_absent_keys_and_leaves_the_rest() {
    let keydir = KeyDir::new();
    keydir.insert(b"present", location(1, 16)).unwrap();
    let updates: [(&[u8], Option<ValueLocation>); 5] = [
        (b"new", Some(location(2, 16))),
        (b"present", Some(location(2, 40))),
        (b"gone", None),
        (b"new", Some(location(2, 60))),
        (b"present", None),
    ];
    let mut handled = [false; 5];
    keydir
        .insert_new(&updates, &[false; 5], &mut handled)
        .unwrap();
    // The first put of an absent key and the delete of an absent key are done; the
    // overwrite, the second put of "new" and the delete of a present key are left.
    assert_eq!(handled, [true, false, true, false, false]);
    assert_eq!(keydir.get(b"new"), Some(location(2, 16)));
    assert_eq!(keydir.get(b"present"), Some(location(1, 16)));
    assert_eq!(keydir.len(), 1, "the hidden entry is not counted");
    keydir.reveal(1);
    assert_eq!(keydir.len(), 2);

    // An update the caller keeps, and every later update of its key, are left alone.
    let updates: [(&[u8], Option<ValueLocation>); 3] = [
        (b"kept", Some(location(3, 16))),
        (b"kept", Some(location(3, 40))),
        (b"other", Some(location(3, 60))),
    ];
    let mut handled = [false; 3];
    keydir
        .insert_new(&updates, &[true, false, false], &mut handled)
        .unwrap();
    assert_eq!(handled, [false, false, true]);
    assert_eq!(keydir.get(b"kept"), None);
}

#[test]
fn replace_if_only_swaps_the_expected_location() {
    let keydir = KeyDir::new();
    keydir.insert(b"k", location(1, 16)).unwrap();
    assert!(!keydir.replace_if(b"k", location(1, 99), location(5, 16)));
    assert!(keydir.replace_if(b"k", location(1, 16), location(5, 16)));
    assert_eq!(keydir.get(b"k"), Some(location(5, 16)));
    assert!(!keydir.replace_if(b"missing", location(1, 16), location(5, 16)));
}

#[test]
fn arena_compaction_keeps_every_key() {
    let hasher = foldhash::fast::RandomState::default();
    let hash = |key: &[u8]| hasher.hash_one(key) as u32;
    let mut shard = Shard::default();
    let key = |i: u32| format!("key-{i:08}");
    for i in 0..20_000u32 {
        let k = key(i);
        shard
            .upsert(hash(k.as_bytes()), k.as_bytes(), location(1, i), false)
            .unwrap();
    }
    for i in (0..20_000u32).filter(|i| i % 4 != 0) {
        let k = key(i);
        assert!(shard.remove(hash(k.as_bytes()), k.as_bytes()).is_some());
    }
    assert!(
        shard.arena.garbage < shard.arena.used / 2,
        "the arena was compacted"
    );
    for i in 0..20_000u32 {
        let k = key(i);
        let found = shard.find(hash(k.as_bytes()), k.as_bytes());
        assert_eq!(
            found.map(|slot| slot.offset),
            (i % 4 == 0).then_some(i),
            "key {i}"
        );
    }
}

#[test]
fn keys_of_every_length_round_trip() {
    let keydir = KeyDir::new();
    let keys: Vec<Vec<u8>> = [1, 2, 100, 40_000, 65_533, 65_534, 65_535]
        .iter()
        .map(|&n| vec![n as u8; n])
        .collect();
    for (i, key) in keys.iter().enumerate() {
        keydir.insert(key, location(1, i as u32)).unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            keydir.get(key).map(|l| l.offset),
            Some(i as u32),
            "key of {}",
            key.len()
        );
    }
}

#[test]
fn memory_per_key_is_key_length_plus_at_most_48_bytes() {
    let keydir = KeyDir::new();
    let count = 200_000u32;
    for i in 0..count {
        keydir
            .insert(format!("{i:016}").as_bytes(), location(1, i))
            .unwrap();
    }
    let per_key = keydir.heap_bytes() as f64 / f64::from(count);
    assert!(per_key <= 16.0 + 48.0, "{per_key:.1} bytes per 16-byte key");
}

#[test]
fn shard_keys_filters_by_prefix() {
    let keydir = KeyDir::new();
    for key in [b"s:a".as_slice(), b"s:b", b"e:a"] {
        keydir.insert(key, location(1, 1)).unwrap();
    }
    let mut keys: Vec<Box<[u8]>> = (0..SHARD_COUNT)
        .flat_map(|i| keydir.shard_keys(i, b"s:", |_| true).unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, vec![Box::from(&b"s:a"[..]), Box::from(&b"s:b"[..])]);
    assert!(keydir.shard_keys(SHARD_COUNT, b"", |_| true).is_none());
}
