//! The `caskade.v1.PersistentSubscriptions` service: the event store's persistent
//! subscription groups, one call per store call, and a bidirectional `Read` per consumer.
//!
//! Like the other services it only translates: settings absent on the wire take the event
//! store's defaults (KurrentDB's), and every check is the store's. A consumer's `Read` ends
//! when the client closes its side, the group drops the consumer (ABORTED), or the server
//! shuts down (UNAVAILABLE).

use caskade_eventstore::{
    ConsumerStrategy, EventStore, GroupDefinition, GroupEvent, GroupInfo, GroupSettings,
    GroupStart, GroupStatus, GroupTarget, NackAction, Position, StreamVersion,
};
use caskade_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::consumer_call::{ConsumerProtocol, ConsumerRequest, serve_consumer};
use crate::convert;
use crate::services::{MessageStream, blocking};
use crate::status::store_status;

/// Answers a `Read` call buffers ahead of a slow client.
const READ_BUFFER: usize = 64;

/// The `caskade.v1.PersistentSubscriptions` service.
#[derive(Clone)]
pub struct GroupsService {
    store: EventStore,
    /// Flips to `true` when the server shuts down, ending consumers' calls.
    shutdown: watch::Receiver<bool>,
}

impl GroupsService {
    /// The service over `store`; consumers' calls end when `shutdown` turns true.
    #[must_use]
    pub fn new(store: EventStore, shutdown: watch::Receiver<bool>) -> Self {
        GroupsService { store, shutdown }
    }
}

/// The `target` oneof every group request carries, as its own type in each message: `$kind`
/// is the message's generated module (`create_group_request` and so on).
macro_rules! group_target {
    ($target:expr, $kind:ident) => {
        match $target {
            Some(pb::$kind::Target::Stream(stream)) => Ok(GroupTarget::Stream(stream)),
            Some(pb::$kind::Target::All(_)) => Ok(GroupTarget::All),
            None => Err(Status::invalid_argument(
                "a group request names its target: a stream or `all`",
            )),
        }
    };
}

fn strategy(strategy: i32) -> Result<ConsumerStrategy, Status> {
    match pb::ConsumerStrategy::try_from(strategy) {
        Ok(pb::ConsumerStrategy::RoundRobin) => Ok(ConsumerStrategy::RoundRobin),
        Ok(pb::ConsumerStrategy::DispatchToSingle) => Ok(ConsumerStrategy::DispatchToSingle),
        Ok(pb::ConsumerStrategy::Pinned) => Ok(ConsumerStrategy::Pinned),
        Ok(pb::ConsumerStrategy::PinnedByCorrelation) => Ok(ConsumerStrategy::PinnedByCorrelation),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown consumer strategy {strategy}"
        ))),
    }
}

fn wire_strategy(strategy: ConsumerStrategy) -> pb::ConsumerStrategy {
    match strategy {
        ConsumerStrategy::RoundRobin => pb::ConsumerStrategy::RoundRobin,
        ConsumerStrategy::DispatchToSingle => pb::ConsumerStrategy::DispatchToSingle,
        ConsumerStrategy::Pinned => pb::ConsumerStrategy::Pinned,
        ConsumerStrategy::PinnedByCorrelation => pb::ConsumerStrategy::PinnedByCorrelation,
    }
}

/// The settings a request gives, each absent one the default.
fn settings(wire: Option<pb::GroupSettings>) -> Result<GroupSettings, Status> {
    use pb::group_settings::Start;
    let defaults = GroupSettings::default();
    let Some(wire) = wire else {
        return Ok(defaults);
    };
    let millis = |ms: Option<u32>, default| {
        ms.map_or(default, |ms| {
            std::time::Duration::from_millis(u64::from(ms))
        })
    };
    Ok(GroupSettings {
        start: match wire.start {
            Some(Start::FromStart(_)) => GroupStart::Start,
            Some(Start::FromEnd(_)) | None => GroupStart::End,
            Some(Start::FromVersion(version)) => GroupStart::Version(StreamVersion(version)),
            Some(Start::FromPosition(position)) => GroupStart::Position(Position(position)),
        },
        resolve_links: wire.resolve_links,
        extra_statistics: wire.extra_statistics,
        message_timeout: millis(wire.message_timeout_ms, defaults.message_timeout),
        max_retry_count: wire.max_retry_count.unwrap_or(defaults.max_retry_count),
        live_buffer_size: wire.live_buffer_size.unwrap_or(defaults.live_buffer_size),
        read_batch_size: wire.read_batch_size.unwrap_or(defaults.read_batch_size),
        history_buffer_size: wire
            .history_buffer_size
            .unwrap_or(defaults.history_buffer_size),
        checkpoint_after: millis(wire.checkpoint_after_ms, defaults.checkpoint_after),
        min_checkpoint_count: wire
            .min_checkpoint_count
            .unwrap_or(defaults.min_checkpoint_count),
        max_checkpoint_count: wire
            .max_checkpoint_count
            .unwrap_or(defaults.max_checkpoint_count),
        max_subscriber_count: wire
            .max_subscriber_count
            .unwrap_or(defaults.max_subscriber_count),
        consumer_strategy: strategy(wire.consumer_strategy)?,
    })
}

fn wire_settings(settings: &GroupSettings) -> pb::GroupSettings {
    use pb::group_settings::Start;
    let millis = |duration: std::time::Duration| u32::try_from(duration.as_millis()).ok();
    pb::GroupSettings {
        start: Some(match settings.start {
            GroupStart::Start => Start::FromStart(pb::Empty {}),
            GroupStart::End => Start::FromEnd(pb::Empty {}),
            GroupStart::Version(version) => Start::FromVersion(version.0),
            GroupStart::Position(position) => Start::FromPosition(position.0),
        }),
        resolve_links: settings.resolve_links,
        extra_statistics: settings.extra_statistics,
        message_timeout_ms: millis(settings.message_timeout),
        max_retry_count: Some(settings.max_retry_count),
        live_buffer_size: Some(settings.live_buffer_size),
        read_batch_size: Some(settings.read_batch_size),
        history_buffer_size: Some(settings.history_buffer_size),
        checkpoint_after_ms: millis(settings.checkpoint_after),
        min_checkpoint_count: Some(settings.min_checkpoint_count),
        max_checkpoint_count: Some(settings.max_checkpoint_count),
        max_subscriber_count: Some(settings.max_subscriber_count),
        consumer_strategy: wire_strategy(settings.consumer_strategy).into(),
    }
}

fn group_info(info: GroupInfo) -> pb::GroupInfo {
    let GroupDefinition {
        target,
        name,
        filter,
        settings,
    } = info.definition;
    let (target, filter) = match target {
        GroupTarget::Stream(stream) => (pb::group_info::Target::Stream(stream), None),
        GroupTarget::All => (
            pb::group_info::Target::All(pb::Empty {}),
            Some(convert::wire_filter(&filter)),
        ),
    };
    pb::GroupInfo {
        target: Some(target),
        group: name,
        filter,
        settings: Some(wire_settings(&settings)),
        status: match info.status {
            GroupStatus::Idle => pb::GroupStatus::Idle,
            GroupStatus::CatchingUp => pb::GroupStatus::CatchingUp,
            GroupStatus::Live => pb::GroupStatus::Live,
        }
        .into(),
        consumers: info
            .consumers
            .into_iter()
            .map(|consumer| pb::ConsumerInfo {
                id: consumer.id,
                name: consumer.name,
                buffer_size: consumer.capacity,
                in_flight: consumer.in_flight,
                delivered: consumer.delivered,
                acked: consumer.acked,
                nacked: consumer.nacked,
                acked_per_second: consumer.acked_per_second,
            })
            .collect(),
        last_checkpointed: info.last_checkpointed,
        last_known: info.last_known,
        parked: info.parked,
        in_flight: info.in_flight,
        buffered: info.buffered,
        retrying: info.retrying,
    }
}

fn event_ids(ids: &[String]) -> Result<Vec<uuid::Uuid>, Status> {
    ids.iter()
        .map(|id| {
            uuid::Uuid::parse_str(id).map_err(|e| {
                Status::invalid_argument(format!("event id {id:?} is not a UUID: {e}"))
            })
        })
        .collect()
}

fn nack_action(action: i32) -> Result<NackAction, Status> {
    match pb::NackAction::try_from(action) {
        Ok(pb::NackAction::Retry) => Ok(NackAction::Retry),
        Ok(pb::NackAction::Park) => Ok(NackAction::Park),
        Ok(pb::NackAction::Skip) => Ok(NackAction::Skip),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown nack action {action}"
        ))),
    }
}

/// The `caskade.v1` side of a consumer's `Read` call.
struct GroupRead;

impl ConsumerProtocol for GroupRead {
    type Request = pb::GroupReadRequest;
    type Response = pb::GroupReadResponse;

    fn decode(&self, request: pb::GroupReadRequest) -> Result<ConsumerRequest, Status> {
        use pb::group_read_request::Message;
        match request.message {
            Some(Message::Ack(ack)) => Ok(ConsumerRequest::Ack(event_ids(&ack.ids)?)),
            Some(Message::Nack(nack)) => Ok(ConsumerRequest::Nack {
                ids: event_ids(&nack.ids)?,
                action: nack_action(nack.action)?,
                stop: false,
            }),
            Some(Message::Connect(_)) => Err(Status::invalid_argument(
                "a Read connects once, in its first request",
            )),
            None => Err(Status::invalid_argument("a Read request with no message")),
        }
    }

    fn encode(&self, event: &GroupEvent) -> pb::GroupReadResponse {
        pb::GroupReadResponse {
            message: Some(pb::group_read_response::Message::Event(pb::GroupEvent {
                event: Some(convert::recorded((*event.event).clone())),
                retry_count: event.retry_count,
            })),
        }
    }

    fn failed(&self, error: caskade_eventstore::Error) -> Status {
        store_status(error)
    }

    fn dropped(&self) -> Status {
        Status::aborted("the group dropped this consumer: it did not take its events in time")
    }
}

#[tonic::async_trait]
impl pb::persistent_subscriptions_server::PersistentSubscriptions for GroupsService {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let request = request.into_inner();
        let target = group_target!(request.target, create_group_request)?;
        let filter = convert::filter(request.filter)?;
        let settings = settings(request.settings)?;
        let store = self.store.clone();
        blocking(move || {
            store
                .create_group(target, &request.group, filter, settings)
                .map_err(store_status)
        })
        .await?;
        Ok(Response::new(pb::CreateGroupResponse {}))
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::UpdateGroupResponse>, Status> {
        let request = request.into_inner();
        let target = group_target!(request.target, update_group_request)?;
        let filter = request
            .filter
            .map(|f| convert::filter(Some(f)))
            .transpose()?;
        let settings = settings(request.settings)?;
        let store = self.store.clone();
        blocking(move || {
            let filter = match filter {
                Some(filter) => filter,
                None => store
                    .group(&target, &request.group)
                    .map_err(store_status)?
                    .map(|group| group.filter)
                    .unwrap_or_default(),
            };
            store
                .update_group(target, &request.group, filter, settings)
                .map_err(store_status)
        })
        .await?;
        Ok(Response::new(pb::UpdateGroupResponse {}))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let request = request.into_inner();
        let target = group_target!(request.target, delete_group_request)?;
        let store = self.store.clone();
        blocking(move || {
            store
                .delete_group(&target, &request.group)
                .map_err(store_status)
        })
        .await?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let target = match request.into_inner().target {
            None => None,
            target => Some(group_target!(target, list_groups_request)?),
        };
        let store = self.store.clone();
        let definitions =
            blocking(move || store.list_groups(target.as_ref()).map_err(store_status)).await?;
        let mut groups = Vec::with_capacity(definitions.len());
        for definition in definitions {
            match self
                .store
                .group_info(&definition.target, &definition.name)
                .await
            {
                Ok(info) => groups.push(group_info(info)),
                // Deleted since it was listed.
                Err(caskade_eventstore::Error::GroupNotFound { .. }) => {}
                Err(error) => return Err(store_status(error)),
            }
        }
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn get_group_info(
        &self,
        request: Request<pb::GetGroupInfoRequest>,
    ) -> Result<Response<pb::GroupInfo>, Status> {
        let request = request.into_inner();
        let target = group_target!(request.target, get_group_info_request)?;
        let info = self
            .store
            .group_info(&target, &request.group)
            .await
            .map_err(store_status)?;
        Ok(Response::new(group_info(info)))
    }

    async fn replay_parked(
        &self,
        request: Request<pb::ReplayParkedRequest>,
    ) -> Result<Response<pb::ReplayParkedResponse>, Status> {
        let request = request.into_inner();
        let target = group_target!(request.target, replay_parked_request)?;
        let replayed = self
            .store
            .replay_parked(&target, &request.group, request.limit)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ReplayParkedResponse { replayed }))
    }

    async fn restart_groups(
        &self,
        _request: Request<pb::RestartGroupsRequest>,
    ) -> Result<Response<pb::RestartGroupsResponse>, Status> {
        let store = self.store.clone();
        blocking(move || {
            store.restart_groups();
            Ok(())
        })
        .await?;
        Ok(Response::new(pb::RestartGroupsResponse {}))
    }

    type ReadStream = MessageStream<pb::GroupReadResponse>;

    async fn read(
        &self,
        request: Request<Streaming<pb::GroupReadRequest>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use pb::group_read_request::Message;
        let mut requests = request.into_inner();
        let Some(pb::GroupReadRequest {
            message: Some(Message::Connect(connect)),
        }) = requests.message().await?
        else {
            return Err(Status::invalid_argument(
                "the first request of a Read must be its `connect`",
            ));
        };
        let target = group_target!(connect.target, group_connect)?;
        let consumer = self
            .store
            .connect_group(
                &target,
                &connect.group,
                &connect.consumer_name,
                connect.buffer_size,
            )
            .await
            .map_err(store_status)?;
        let (sender, receiver) = mpsc::channel(READ_BUFFER);
        let connected = pb::GroupReadResponse {
            message: Some(pb::group_read_response::Message::Connected(pb::Empty {})),
        };
        sender
            .send(Ok(connected))
            .await
            .map_err(|_| Status::cancelled("the client went away"))?;
        tokio::spawn(serve_consumer(
            GroupRead,
            consumer,
            requests,
            sender,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
