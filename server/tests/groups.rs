//! `caskade.v1.PersistentSubscriptions` through the generated client against a real server on
//! `127.0.0.1:0`: groups created with defaults and settings of their own, consumers reading
//! with acks and nacks on one bidirectional call, parked events replayed, groups listed,
//! updated, restarted and deleted, and every bad request a typed status that changes nothing.

mod common;

use caskade_proto::v1 as pb;
use caskade_proto::v1::persistent_subscriptions_client::PersistentSubscriptionsClient;
use common::{Access, Authed, TestResult, TestServer, append, connect, json_event, within};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

type Groups = PersistentSubscriptionsClient<Authed>;

async fn groups(server: &TestServer) -> TestResult<Groups> {
    Ok(PersistentSubscriptionsClient::new(
        connect(server.addr(), &Access::default()).await?,
    ))
}

fn on_stream(stream: &str) -> pb::create_group_request::Target {
    pb::create_group_request::Target::Stream(stream.to_owned())
}

fn from_start() -> pb::GroupSettings {
    pb::GroupSettings {
        start: Some(pb::group_settings::Start::FromStart(pb::Empty {})),
        ..pb::GroupSettings::default()
    }
}

/// A consumer's call: where acks go, and what arrives.
struct Consumer {
    requests: mpsc::Sender<pb::GroupReadRequest>,
    answers: Streaming<pb::GroupReadResponse>,
}

impl Consumer {
    async fn connect(
        client: &mut Groups,
        stream: &str,
        group: &str,
        buffer: u32,
    ) -> TestResult<Self> {
        let (requests, receiver) = mpsc::channel(16);
        requests
            .send(pb::GroupReadRequest {
                message: Some(pb::group_read_request::Message::Connect(pb::GroupConnect {
                    target: Some(pb::group_connect::Target::Stream(stream.to_owned())),
                    group: group.to_owned(),
                    consumer_name: "test".to_owned(),
                    buffer_size: buffer,
                })),
            })
            .await?;
        let mut answers = client
            .read(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        let first = within("the connection", answers.message()).await??;
        assert!(matches!(
            first.and_then(|m| m.message),
            Some(pb::group_read_response::Message::Connected(_))
        ));
        Ok(Consumer { requests, answers })
    }

    async fn next(&mut self) -> TestResult<pb::GroupEvent> {
        match within("an event", self.answers.message()).await?? {
            Some(pb::GroupReadResponse {
                message: Some(pb::group_read_response::Message::Event(event)),
            }) => Ok(event),
            other => Err(format!("expected an event, got {other:?}").into()),
        }
    }

    async fn ack(&self, event: &pb::GroupEvent) -> TestResult {
        let id = event.event.as_ref().ok_or("an event")?.id.clone();
        let ack = pb::group_read_request::Message::Ack(pb::GroupAck { ids: vec![id] });
        self.requests
            .send(pb::GroupReadRequest { message: Some(ack) })
            .await?;
        Ok(())
    }

    async fn nack(&self, event: &pb::GroupEvent, action: pb::NackAction) -> TestResult {
        let id = event.event.as_ref().ok_or("an event")?.id.clone();
        let nack = pb::group_read_request::Message::Nack(pb::GroupNack {
            ids: vec![id],
            action: action.into(),
            reason: "test".to_owned(),
        });
        self.requests
            .send(pb::GroupReadRequest {
                message: Some(nack),
            })
            .await?;
        Ok(())
    }
}

/// Appends `count` events to the stream `jobs`.
async fn append_jobs(server: &TestServer, count: u64) -> TestResult {
    let events = (0..count).map(|n| json_event("Job", &serde_json::json!({ "n": n })));
    server
        .streams()
        .await?
        .append(append("jobs", None, events.collect()))
        .await?;
    Ok(())
}

fn version(event: &pb::GroupEvent) -> u64 {
    event.event.as_ref().map_or(u64::MAX, |e| e.version)
}

async fn info(client: &mut Groups, stream: &str, group: &str) -> TestResult<pb::GroupInfo> {
    let request = pb::GetGroupInfoRequest {
        target: Some(pb::get_group_info_request::Target::Stream(
            stream.to_owned(),
        )),
        group: group.to_owned(),
    };
    Ok(client.get_group_info(request).await?.into_inner())
}

/// Polls the group's info until `check` holds.
async fn until_info(
    client: &mut Groups,
    stream: &str,
    group: &str,
    check: impl Fn(&pb::GroupInfo) -> bool,
) -> TestResult<pb::GroupInfo> {
    within("the group's state", async {
        loop {
            let info = info(client, stream, group).await?;
            if check(&info) {
                return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(info);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await?
}

#[tokio::test]
async fn a_consumer_acks_nacks_and_gets_parked_events_back_on_replay() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    append_jobs(&server, 3).await?;
    let mut client = groups(&server).await?;
    let settings = pb::GroupSettings {
        max_retry_count: Some(0),
        checkpoint_after_ms: Some(10),
        min_checkpoint_count: Some(1),
        ..from_start()
    };
    client
        .create_group(pb::CreateGroupRequest {
            target: Some(on_stream("jobs")),
            group: "workers".to_owned(),
            filter: None,
            settings: Some(settings),
        })
        .await?;
    let mut consumer = Consumer::connect(&mut client, "jobs", "workers", 10).await?;
    let received = [
        consumer.next().await?,
        consumer.next().await?,
        consumer.next().await?,
    ];
    assert_eq!(received.iter().map(version).collect::<Vec<_>>(), [0, 1, 2]);
    consumer.ack(&received[0]).await?;
    // No retries allowed: a retry nack parks it, as a park nack does.
    consumer.nack(&received[1], pb::NackAction::Retry).await?;
    consumer.nack(&received[2], pb::NackAction::Park).await?;
    let parked = until_info(&mut client, "jobs", "workers", |info| {
        info.parked == 2 && info.last_checkpointed == Some(2)
    })
    .await?;
    assert_eq!(parked.status, i32::from(pb::GroupStatus::Live));
    assert_eq!(parked.consumers.len(), 1);
    assert_eq!(parked.consumers[0].acked, 1);
    assert_eq!(parked.consumers[0].nacked, 2);

    let replay = client
        .replay_parked(pb::ReplayParkedRequest {
            target: Some(pb::replay_parked_request::Target::Stream("jobs".to_owned())),
            group: "workers".to_owned(),
            limit: None,
        })
        .await?
        .into_inner();
    assert_eq!(replay.replayed, 2);
    let again = [consumer.next().await?, consumer.next().await?];
    assert_eq!(again.iter().map(version).collect::<Vec<_>>(), [1, 2]);
    assert!(again.iter().all(|event| event.retry_count == 0));
    for event in &again {
        consumer.ack(event).await?;
    }
    until_info(&mut client, "jobs", "workers", |info| info.parked == 0).await?;
    server.stop().await
}

#[tokio::test]
async fn groups_are_listed_updated_restarted_and_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = groups(&server).await?;
    client
        .create_group(pb::CreateGroupRequest {
            target: Some(pb::create_group_request::Target::All(pb::Empty {})),
            group: "audit".to_owned(),
            filter: Some(pb::Filter {
                stream_prefixes: vec!["account-".to_owned()],
                ..pb::Filter::default()
            }),
            settings: None,
        })
        .await?;
    client
        .create_group(pb::CreateGroupRequest {
            target: Some(on_stream("jobs")),
            group: "workers".to_owned(),
            filter: None,
            settings: Some(from_start()),
        })
        .await?;
    let listed = client
        .list_groups(pb::ListGroupsRequest { target: None })
        .await?
        .into_inner()
        .groups;
    let names: Vec<&str> = listed.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, ["audit", "workers"]);
    let audit = &listed[0];
    assert_eq!(
        audit.filter.as_ref().map(|f| f.stream_prefixes.clone()),
        Some(vec!["account-".to_owned()])
    );
    let settings = audit.settings.as_ref().ok_or("settings")?;
    // Defaults filled in, KurrentDB's.
    assert_eq!(
        (settings.message_timeout_ms, settings.max_retry_count),
        (Some(30_000), Some(10))
    );
    assert_eq!(audit.status, i32::from(pb::GroupStatus::Idle));

    let mut consumer = Consumer::connect(&mut client, "jobs", "workers", 10).await?;
    client
        .update_group(pb::UpdateGroupRequest {
            target: Some(pb::update_group_request::Target::Stream("jobs".to_owned())),
            group: "workers".to_owned(),
            filter: None,
            settings: Some(pb::GroupSettings {
                max_retry_count: Some(3),
                ..from_start()
            }),
        })
        .await?;
    let dropped = within("the drop", consumer.answers.message()).await?;
    assert_eq!(dropped.err().map(|s| s.code()), Some(Code::Aborted));
    assert_eq!(
        info(&mut client, "jobs", "workers")
            .await?
            .settings
            .and_then(|s| s.max_retry_count),
        Some(3)
    );

    let mut consumer = Consumer::connect(&mut client, "jobs", "workers", 10).await?;
    client.restart_groups(pb::RestartGroupsRequest {}).await?;
    let dropped = within("the drop", consumer.answers.message()).await?;
    assert_eq!(dropped.err().map(|s| s.code()), Some(Code::Aborted));

    client
        .delete_group(pb::DeleteGroupRequest {
            target: Some(pb::delete_group_request::Target::Stream("jobs".to_owned())),
            group: "workers".to_owned(),
        })
        .await?;
    let missing = info(&mut client, "jobs", "workers").await;
    assert_eq!(code_of(missing), Some(Code::NotFound));
    server.stop().await
}

fn code_of<T>(result: TestResult<T>) -> Option<Code> {
    result
        .err()
        .and_then(|error| error.downcast::<tonic::Status>().ok())
        .map(|status| status.code())
}

#[tokio::test]
async fn bad_group_requests_are_refused_and_change_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = groups(&server).await?;
    let create = |target, settings| pb::CreateGroupRequest {
        target,
        group: "g".to_owned(),
        filter: None,
        settings: Some(settings),
    };
    let refused = [
        (create(None, from_start()), Code::InvalidArgument),
        (
            create(
                Some(on_stream("jobs")),
                pb::GroupSettings {
                    consumer_strategy: 9,
                    ..from_start()
                },
            ),
            Code::InvalidArgument,
        ),
        (
            create(
                Some(on_stream("jobs")),
                pb::GroupSettings {
                    read_batch_size: Some(0),
                    ..from_start()
                },
            ),
            Code::InvalidArgument,
        ),
        (
            create(
                Some(on_stream("jobs")),
                pb::GroupSettings {
                    start: Some(pb::group_settings::Start::FromPosition(3)),
                    ..pb::GroupSettings::default()
                },
            ),
            Code::InvalidArgument,
        ),
        (
            create(Some(on_stream("$jobs")), from_start()),
            Code::InvalidArgument,
        ),
    ];
    let filtered_stream = pb::CreateGroupRequest {
        filter: Some(pb::Filter {
            stream_prefix: "jobs".to_owned(),
            ..pb::Filter::default()
        }),
        ..create(Some(on_stream("jobs")), from_start())
    };
    let refused = refused
        .into_iter()
        .chain([(filtered_stream, Code::InvalidArgument)]);
    for (request, code) in refused {
        let status = client
            .create_group(request.clone())
            .await
            .err()
            .ok_or_else(|| format!("{request:?} was accepted"))?;
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
        assert!(!status.message().is_empty());
    }
    let listed = client
        .list_groups(pb::ListGroupsRequest { target: None })
        .await?;
    assert!(listed.into_inner().groups.is_empty(), "nothing was created");

    client
        .create_group(create(Some(on_stream("jobs")), from_start()))
        .await?;
    let twice = client
        .create_group(create(Some(on_stream("jobs")), from_start()))
        .await;
    assert_eq!(twice.err().map(|s| s.code()), Some(Code::AlreadyExists));
    // A read that does not connect first, and one with no room for any event.
    let (requests, receiver) = mpsc::channel(1);
    requests
        .send(pb::GroupReadRequest {
            message: Some(pb::group_read_request::Message::Ack(pb::GroupAck {
                ids: Vec::new(),
            })),
        })
        .await?;
    let unconnected = client.read(ReceiverStream::new(receiver)).await;
    assert_eq!(
        unconnected.err().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );
    let no_room = Consumer::connect(&mut client, "jobs", "g", 0).await;
    assert_eq!(code_of(no_room.map(drop)), Some(Code::InvalidArgument));
    let missing = Consumer::connect(&mut client, "jobs", "nope", 1).await;
    assert_eq!(code_of(missing.map(drop)), Some(Code::NotFound));
    server.stop().await
}

#[tokio::test]
async fn a_graceful_restart_resumes_right_after_the_last_ack() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    append_jobs(&server, 5).await?;
    let mut client = groups(&server).await?;
    // The default checkpoint settings: nothing is written after only three acks.
    client
        .create_group(pb::CreateGroupRequest {
            target: Some(on_stream("jobs")),
            group: "workers".to_owned(),
            filter: None,
            settings: Some(from_start()),
        })
        .await?;
    let mut consumer = Consumer::connect(&mut client, "jobs", "workers", 10).await?;
    for _ in 0..3 {
        let event = consumer.next().await?;
        consumer.ack(&event).await?;
    }
    until_info(&mut client, "jobs", "workers", |info| {
        info.consumers.first().is_some_and(|c| c.acked == 3)
    })
    .await?;
    assert_eq!(
        info(&mut client, "jobs", "workers")
            .await?
            .last_checkpointed,
        None
    );
    drop(consumer);
    server.stop().await?;

    let server = TestServer::start_in(dir.path()).await?;
    let mut client = groups(&server).await?;
    assert_eq!(
        info(&mut client, "jobs", "workers")
            .await?
            .last_checkpointed,
        Some(2)
    );
    let mut consumer = Consumer::connect(&mut client, "jobs", "workers", 10).await?;
    assert_eq!(version(&consumer.next().await?), 3);
    server.stop().await
}
