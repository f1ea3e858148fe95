//! Persistent subscription group definitions: created with KurrentDB's defaults or settings
//! of their own, listed, updated and deleted, each refusal a typed error that writes
//! nothing, and every definition still there after the store is reopened.

use std::time::Duration;

use caskade_engine::SyncPolicy;
use caskade_eventstore::{
    ConsumerStrategy, Error, EventFilter, EventStore, GroupSettings, GroupStart, GroupTarget,
    Options, Position, StreamVersion,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn options() -> Options {
    let engine = caskade_engine::Options {
        sync: SyncPolicy::Never,
        ..caskade_engine::Options::default()
    };
    Options {
        engine,
        ..Options::default()
    }
}

fn stream(name: &str) -> GroupTarget {
    GroupTarget::Stream(name.to_owned())
}

/// The (target, name) pairs of a listing.
fn names(groups: &[caskade_eventstore::GroupDefinition]) -> Vec<(GroupTarget, String)> {
    groups
        .iter()
        .map(|group| (group.target.clone(), group.name.clone()))
        .collect()
}

#[test]
fn the_defaults_are_kurrentdbs() {
    let settings = GroupSettings::default();
    assert_eq!(settings.start, GroupStart::End);
    assert_eq!(settings.message_timeout, Duration::from_secs(30));
    assert_eq!(settings.max_retry_count, 10);
    assert_eq!(
        (
            settings.live_buffer_size,
            settings.read_batch_size,
            settings.history_buffer_size
        ),
        (500, 20, 500)
    );
    assert_eq!(settings.checkpoint_after, Duration::from_secs(2));
    assert_eq!(
        (settings.min_checkpoint_count, settings.max_checkpoint_count),
        (10, 1_000)
    );
    assert_eq!(settings.max_subscriber_count, 0);
    assert_eq!(settings.consumer_strategy, ConsumerStrategy::RoundRobin);
}

#[test]
fn groups_are_created_listed_updated_and_deleted_and_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    store.create_group(
        stream("orders"),
        "billing",
        EventFilter::all(),
        GroupSettings::default(),
    )?;
    // The same name on another stream, and on `$all` with a filter, is another group.
    store.create_group(
        stream("invoices"),
        "billing",
        EventFilter::all(),
        GroupSettings::default(),
    )?;
    let pinned = GroupSettings {
        start: GroupStart::Position(Position(7)),
        consumer_strategy: ConsumerStrategy::Pinned,
        message_timeout: Duration::from_millis(1_500),
        max_subscriber_count: 4,
        ..GroupSettings::default()
    };
    let filter = EventFilter::all()
        .stream_prefix("orders-")
        .event_type_regex("^(?!\\$)")?;
    store.create_group(GroupTarget::All, "audit", filter, pinned.clone())?;

    let listed = store.list_groups(None)?;
    assert_eq!(
        names(&listed),
        [
            (GroupTarget::All, "audit".to_owned()),
            (stream("invoices"), "billing".to_owned()),
            (stream("orders"), "billing".to_owned()),
        ]
    );
    assert_eq!(
        names(&store.list_groups(Some(&stream("orders")))?),
        [(stream("orders"), "billing".to_owned())]
    );

    let faster = GroupSettings {
        start: GroupStart::Version(StreamVersion(3)),
        consumer_strategy: ConsumerStrategy::DispatchToSingle,
        max_retry_count: 2,
        ..GroupSettings::default()
    };
    store.update_group(
        stream("orders"),
        "billing",
        EventFilter::all(),
        faster.clone(),
    )?;
    store.delete_group(&stream("invoices"), "billing")?;
    assert!(store.group(&stream("invoices"), "billing")?.is_none());
    store.close()?;

    let store = EventStore::open(dir.path(), options())?;
    assert_eq!(
        names(&store.list_groups(None)?),
        [
            (GroupTarget::All, "audit".to_owned()),
            (stream("orders"), "billing".to_owned()),
        ]
    );
    let orders = store
        .group(&stream("orders"), "billing")?
        .ok_or("the updated group")?;
    assert_eq!(orders.settings, faster);
    let audit = store
        .group(&GroupTarget::All, "audit")?
        .ok_or("the $all group")?;
    assert_eq!(audit.settings, pinned);
    // The filter came back with it: it still keeps what it kept.
    let kept = store.list_groups(Some(&GroupTarget::All))?;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        format!("{:?}", kept[0].filter),
        format!("{:?}", audit.filter)
    );
    Ok(())
}

#[test]
fn what_cannot_be_is_refused_with_a_typed_error_and_nothing_is_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let defaults = GroupSettings::default;
    store.create_group(stream("s"), "g", EventFilter::all(), defaults())?;

    let twice = store.create_group(stream("s"), "g", EventFilter::all(), defaults());
    assert!(
        matches!(&twice, Err(Error::GroupExists { target, group }) if target == "s" && group == "g"),
        "{twice:?}"
    );
    let missing = store.update_group(stream("s"), "nobody", EventFilter::all(), defaults());
    assert!(
        matches!(missing, Err(Error::GroupNotFound { .. })),
        "{missing:?}"
    );
    let missing = store.delete_group(&GroupTarget::All, "g");
    assert!(
        matches!(&missing, Err(Error::GroupNotFound { target, .. }) if target == "$all"),
        "{missing:?}"
    );

    for name in ["", "a\nb"] {
        let bad = store.create_group(stream("s"), name, EventFilter::all(), defaults());
        assert!(
            matches!(bad, Err(Error::InvalidGroupName { .. })),
            "{name:?}: {bad:?}"
        );
    }
    let bad_stream = store.create_group(stream(""), "g2", EventFilter::all(), defaults());
    assert!(
        matches!(bad_stream, Err(Error::InvalidStreamName { .. })),
        "{bad_stream:?}"
    );
    let filtered = store.create_group(
        stream("s"),
        "g3",
        EventFilter::all().stream_prefix("s"),
        defaults(),
    );
    assert!(
        matches!(
            filtered,
            Err(Error::InvalidGroupSettings {
                setting: "filter",
                ..
            })
        ),
        "{filtered:?}"
    );

    // Only the first group was ever written.
    assert_eq!(
        names(&store.list_groups(None)?),
        [(stream("s"), "g".to_owned())]
    );
    assert_eq!(
        store
            .group(&stream("s"), "g")?
            .ok_or("the first group")?
            .settings,
        defaults()
    );
    Ok(())
}

#[test]
fn concurrent_creates_of_one_group_make_one_group() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let created: Vec<bool> = std::thread::scope(|scope| {
        let creators: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    store
                        .create_group(
                            stream("s"),
                            "g",
                            EventFilter::all(),
                            GroupSettings::default(),
                        )
                        .is_ok()
                })
            })
            .collect();
        creators
            .into_iter()
            .map(|creator| creator.join().expect("no creator panics"))
            .collect()
    });
    assert_eq!(created.iter().filter(|&&ok| ok).count(), 1, "{created:?}");
    assert_eq!(store.list_groups(None)?.len(), 1);
    Ok(())
}

#[test]
fn settings_kurrentdb_refuses_are_refused_naming_the_setting() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let defaults = GroupSettings::default;
    let cases = [
        (
            GroupSettings {
                start: GroupStart::Version(StreamVersion(1)),
                ..defaults()
            },
            GroupTarget::All,
            "start",
        ),
        (
            GroupSettings {
                start: GroupStart::Position(Position(1)),
                ..defaults()
            },
            stream("s"),
            "start",
        ),
        (
            GroupSettings {
                read_batch_size: 0,
                ..defaults()
            },
            stream("s"),
            "read_batch_size",
        ),
        (
            GroupSettings {
                live_buffer_size: 10,
                ..defaults()
            },
            stream("s"),
            "live_buffer_size",
        ),
        (
            GroupSettings {
                history_buffer_size: 10,
                ..defaults()
            },
            stream("s"),
            "history_buffer_size",
        ),
        (
            GroupSettings {
                min_checkpoint_count: 5,
                max_checkpoint_count: 4,
                ..defaults()
            },
            stream("s"),
            "max_checkpoint_count",
        ),
        (
            GroupSettings {
                message_timeout: Duration::ZERO,
                ..defaults()
            },
            stream("s"),
            "message_timeout",
        ),
        (
            GroupSettings {
                message_timeout: Duration::MAX,
                ..defaults()
            },
            stream("s"),
            "message_timeout",
        ),
        (
            GroupSettings {
                checkpoint_after: Duration::from_secs(30 * 24 * 3600),
                ..defaults()
            },
            stream("s"),
            "checkpoint_after",
        ),
    ];
    for (settings, target, setting) in cases {
        let refused = store.create_group(target, "new", EventFilter::all(), settings);
        assert!(
            matches!(&refused, Err(Error::InvalidGroupSettings { setting: named, .. }) if *named == setting),
            "{setting}: {refused:?}"
        );
    }
    assert!(store.list_groups(None)?.is_empty());
    Ok(())
}
