//! `event_store.client.persistent_subscriptions.PersistentSubscriptions`: KurrentDB's
//! consumer groups over the event store's ([`EventStore::connect_group`] and the rest).
//!
//! What a KurrentDB client relies on:
//! - `Read` is bidirectional: the first request names the group and the consumer's buffer
//!   size; the answer starts with a confirmation (`<stream>::<group>`), then events with
//!   their retry counts. Acks and nacks name events by id, in either id form.
//! - A nack's `Unknown` is a retry; `Stop` retries the events named and takes the consumer
//!   out of the group, as a `Stop` request does: it gets no more events, and its call stays
//!   open for acks and nacks of what it holds.
//! - A call the server ends (the group dropped the consumer, the server shuts down) ends with
//!   an error status, never a plain end, which the clients do not expect.
//! - Settings are checked as the event store checks them; a negative count is refused here,
//!   naming the field. Durations come as milliseconds or as ticks (100 ns).
//! - `GetInfo` and `List` positions are revisions for a stream group and `C:<commit>/P:<prepare>`
//!   for `$all`, in the wire positions of `convert`; `start_from` is `0`/`-1` (or
//!   `C:0/P:0`/`C:-1/P:-1`) for the start and the end.

use std::time::Duration;

use caskade_eventstore::{
    ConsumerStrategy, EventFilter, EventStore, GroupDefinition, GroupEvent, GroupInfo,
    GroupSettings, GroupStart, GroupStatus, GroupTarget, NackAction, Position, StreamVersion,
};
use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::event_store::client::persistent_subscriptions as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, FilterOn, IdForm};
use super::errors::kurrent_status;
use crate::consumer_call::{ConsumerProtocol, ConsumerRequest, serve_consumer};
use crate::services::{MessageStream, blocking};

/// Answers a `Read` call buffers ahead of a slow client.
const READ_BUFFER: usize = 64;
/// Ticks (100 ns) per millisecond.
const TICKS_PER_MILLISECOND: i64 = 10_000;

/// The KurrentDB `PersistentSubscriptions` service.
#[derive(Clone)]
pub struct KurrentPersistentService {
    store: EventStore,
    /// Flips to `true` when the server shuts down, ending consumers' calls.
    shutdown: watch::Receiver<bool>,
}

impl KurrentPersistentService {
    /// The service over `store`; consumers' calls end when `shutdown` turns true.
    #[must_use]
    pub fn new(store: EventStore, shutdown: watch::Receiver<bool>) -> Self {
        KurrentPersistentService { store, shutdown }
    }
}

fn failed(error: caskade_eventstore::Error) -> Status {
    kurrent_status("PersistentSubscription", error)
}

fn missing(what: &str) -> Status {
    Status::invalid_argument(format!("{what} is missing"))
}

/// A group's target as a request names it: a stream identifier, or `$all`.
fn target(identifier: Option<shared::StreamIdentifier>, all: bool) -> Result<GroupTarget, Status> {
    if all {
        return Ok(GroupTarget::All);
    }
    convert::stream_name(identifier).map(GroupTarget::Stream)
}

/// A count that must not be negative.
fn count(value: i32, field: &str) -> Result<u32, Status> {
    u32::try_from(value).map_err(|_| {
        Status::invalid_argument(format!("{field} must not be negative, and is {value}"))
    })
}

/// A duration given in milliseconds or in ticks.
fn duration(
    milliseconds: Option<i64>,
    ticks: Option<i64>,
    field: &str,
) -> Result<Duration, Status> {
    let milliseconds = match (milliseconds, ticks) {
        (Some(milliseconds), _) => milliseconds,
        (None, Some(ticks)) => ticks / TICKS_PER_MILLISECOND,
        (None, None) => return Err(missing(field)),
    };
    u64::try_from(milliseconds)
        .map(Duration::from_millis)
        .map_err(|_| Status::invalid_argument(format!("{field} must not be negative")))
}

fn strategy_by_name(name: &str) -> Result<ConsumerStrategy, Status> {
    match name {
        "RoundRobin" => Ok(ConsumerStrategy::RoundRobin),
        "DispatchToSingle" => Ok(ConsumerStrategy::DispatchToSingle),
        "Pinned" => Ok(ConsumerStrategy::Pinned),
        "PinnedByCorrelation" => Ok(ConsumerStrategy::PinnedByCorrelation),
        other => Err(Status::invalid_argument(format!(
            "unknown consumer strategy {other:?}: RoundRobin, DispatchToSingle, Pinned or \
             PinnedByCorrelation"
        ))),
    }
}

fn strategy_by_number(number: i32) -> Result<ConsumerStrategy, Status> {
    match number {
        0 => Ok(ConsumerStrategy::DispatchToSingle),
        1 => Ok(ConsumerStrategy::RoundRobin),
        2 => Ok(ConsumerStrategy::Pinned),
        other => Err(Status::invalid_argument(format!(
            "unknown consumer strategy number {other}"
        ))),
    }
}

fn strategy_name(strategy: ConsumerStrategy) -> &'static str {
    match strategy {
        ConsumerStrategy::DispatchToSingle => "DispatchToSingle",
        ConsumerStrategy::Pinned => "Pinned",
        ConsumerStrategy::PinnedByCorrelation => "PinnedByCorrelation",
        ConsumerStrategy::RoundRobin => "RoundRobin",
    }
}

/// The settings common to `Create` and `Update`, whose messages differ only in type.
struct WireSettings {
    resolve_links: bool,
    extra_statistics: bool,
    max_retry_count: i32,
    min_checkpoint_count: i32,
    max_checkpoint_count: i32,
    max_subscriber_count: i32,
    live_buffer_size: i32,
    read_batch_size: i32,
    history_buffer_size: i32,
    message_timeout: (Option<i64>, Option<i64>),
    checkpoint_after: (Option<i64>, Option<i64>),
    strategy: ConsumerStrategy,
}

impl WireSettings {
    fn into_settings(self, start: GroupStart) -> Result<GroupSettings, Status> {
        let (timeout_ms, timeout_ticks) = self.message_timeout;
        let (after_ms, after_ticks) = self.checkpoint_after;
        Ok(GroupSettings {
            start,
            resolve_links: self.resolve_links,
            extra_statistics: self.extra_statistics,
            message_timeout: duration(timeout_ms, timeout_ticks, "message_timeout")?,
            max_retry_count: count(self.max_retry_count, "max_retry_count")?,
            live_buffer_size: count(self.live_buffer_size, "live_buffer_size")?,
            read_batch_size: count(self.read_batch_size, "read_batch_size")?,
            history_buffer_size: count(self.history_buffer_size, "history_buffer_size")?,
            checkpoint_after: duration(after_ms, after_ticks, "checkpoint_after")?,
            min_checkpoint_count: count(self.min_checkpoint_count, "min_checkpoint_count")?,
            max_checkpoint_count: count(self.max_checkpoint_count, "max_checkpoint_count")?,
            max_subscriber_count: count(self.max_subscriber_count, "max_subscriber_count")?,
            consumer_strategy: self.strategy,
        })
    }
}

/// The common settings of `Create` and `Update`, which are two generated types with the
/// same fields: `$module` is `create_req` or `update_req`.
macro_rules! wire_settings {
    ($settings:expr, $module:ident, $strategy:expr) => {{
        use pb::$module::settings::{CheckpointAfter, MessageTimeout};
        let settings = $settings;
        WireSettings {
            resolve_links: settings.resolve_links,
            extra_statistics: settings.extra_statistics,
            max_retry_count: settings.max_retry_count,
            min_checkpoint_count: settings.min_checkpoint_count,
            max_checkpoint_count: settings.max_checkpoint_count,
            max_subscriber_count: settings.max_subscriber_count,
            live_buffer_size: settings.live_buffer_size,
            read_batch_size: settings.read_batch_size,
            history_buffer_size: settings.history_buffer_size,
            message_timeout: match settings.message_timeout {
                Some(MessageTimeout::MessageTimeoutMs(ms)) => (Some(i64::from(ms)), None),
                Some(MessageTimeout::MessageTimeoutTicks(ticks)) => (None, Some(ticks)),
                None => (None, None),
            },
            checkpoint_after: match settings.checkpoint_after {
                Some(CheckpointAfter::CheckpointAfterMs(ms)) => (Some(i64::from(ms)), None),
                Some(CheckpointAfter::CheckpointAfterTicks(ticks)) => (None, Some(ticks)),
                None => (None, None),
            },
            strategy: $strategy,
        }
    }};
}

fn create_settings(settings: &pb::create_req::Settings) -> Result<WireSettings, Status> {
    let strategy = if settings.consumer_strategy.is_empty() {
        #[expect(deprecated, reason = "older clients name the strategy only by number")]
        strategy_by_number(settings.named_consumer_strategy)?
    } else {
        strategy_by_name(&settings.consumer_strategy)?
    };
    Ok(wire_settings!(settings, create_req, strategy))
}

fn update_settings(settings: &pb::update_req::Settings) -> Result<WireSettings, Status> {
    let strategy = strategy_by_number(settings.named_consumer_strategy)?;
    Ok(wire_settings!(settings, update_req, strategy))
}

/// The group a request's `stream_option` names: `$module` is the request's generated module,
/// whose option is a stream identifier or `$all`.
macro_rules! requested_target {
    ($option:expr, $module:ident) => {
        match $option {
            Some(pb::$module::options::StreamOption::StreamIdentifier(identifier)) => {
                target(Some(identifier), false)
            }
            Some(pb::$module::options::StreamOption::All(_)) => Ok(GroupTarget::All),
            None => Err(missing("the stream option")),
        }
    };
}

/// Where an `$all` group starts, from a wire position (inclusive).
fn all_start(commit_position: u64) -> GroupStart {
    match convert::store_position(commit_position) {
        Some(position) => GroupStart::Position(position),
        None => GroupStart::Start,
    }
}

/// A deprecated request's start: the settings' revision, `u64::MAX` for the end.
fn legacy_start(revision: u64) -> GroupStart {
    match revision {
        u64::MAX => GroupStart::End,
        0 => GroupStart::Start,
        revision => GroupStart::Version(StreamVersion(revision)),
    }
}

/// An `$all` group's filter.
fn all_filter(
    filter: Option<pb::create_req::all_options::FilterOption>,
) -> Result<EventFilter, Status> {
    use pb::create_req::all_options::FilterOption;
    use pb::create_req::all_options::filter_options::Filter;
    match filter {
        Some(FilterOption::Filter(options)) => match options.filter {
            Some(Filter::StreamIdentifier(expression)) => {
                convert::event_filter(FilterOn::StreamName, &expression.regex, expression.prefix)
            }
            Some(Filter::EventType(expression)) => {
                convert::event_filter(FilterOn::EventType, &expression.regex, expression.prefix)
            }
            None => Ok(EventFilter::all()),
        },
        Some(FilterOption::NoFilter(_)) | None => Ok(EventFilter::all()),
    }
}

/// A `Create` request as the event store takes it.
fn decode_create(
    request: pb::CreateReq,
) -> Result<(GroupTarget, String, EventFilter, GroupSettings), Status> {
    use pb::create_req::all_options::AllOption;
    use pb::create_req::options::StreamOption;
    use pb::create_req::stream_options::RevisionOption;
    let options = request.options.ok_or_else(|| missing("the options"))?;
    let settings = options.settings.ok_or_else(|| missing("the settings"))?;
    #[expect(
        deprecated,
        reason = "older clients start a stream group from this revision"
    )]
    let legacy_revision = settings.revision;
    let wire = create_settings(&settings)?;
    let (target, start, filter) = match options.stream_option {
        Some(StreamOption::Stream(stream)) => {
            let start = match stream.revision_option {
                Some(RevisionOption::Revision(revision)) => {
                    GroupStart::Version(StreamVersion(revision))
                }
                Some(RevisionOption::Start(_)) => GroupStart::Start,
                Some(RevisionOption::End(_)) | None => GroupStart::End,
            };
            let target = target(stream.stream_identifier, false)?;
            (target, start, EventFilter::all())
        }
        Some(StreamOption::All(all)) => {
            let start = match all.all_option {
                Some(AllOption::Position(position)) => all_start(position.commit_position),
                Some(AllOption::Start(_)) => GroupStart::Start,
                Some(AllOption::End(_)) | None => GroupStart::End,
            };
            (GroupTarget::All, start, all_filter(all.filter_option)?)
        }
        None => {
            #[expect(deprecated, reason = "older clients name the stream here")]
            let identifier = options.stream_identifier;
            (
                target(identifier, false)?,
                legacy_start(legacy_revision),
                EventFilter::all(),
            )
        }
    };
    Ok((
        target,
        options.group_name,
        filter,
        wire.into_settings(start)?,
    ))
}

/// An `Update` request as the event store takes it; an `$all` group keeps its filter.
fn decode_update(request: pb::UpdateReq) -> Result<(GroupTarget, String, GroupSettings), Status> {
    use pb::update_req::all_options::AllOption;
    use pb::update_req::options::StreamOption;
    use pb::update_req::stream_options::RevisionOption;
    let options = request.options.ok_or_else(|| missing("the options"))?;
    let settings = options.settings.ok_or_else(|| missing("the settings"))?;
    #[expect(
        deprecated,
        reason = "older clients start a stream group from this revision"
    )]
    let legacy_revision = settings.revision;
    let wire = update_settings(&settings)?;
    let (target, start) = match options.stream_option {
        Some(StreamOption::Stream(stream)) => {
            let start = match stream.revision_option {
                Some(RevisionOption::Revision(revision)) => {
                    GroupStart::Version(StreamVersion(revision))
                }
                Some(RevisionOption::Start(_)) => GroupStart::Start,
                Some(RevisionOption::End(_)) | None => GroupStart::End,
            };
            (target(stream.stream_identifier, false)?, start)
        }
        Some(StreamOption::All(all)) => {
            let start = match all.all_option {
                Some(AllOption::Position(position)) => all_start(position.commit_position),
                Some(AllOption::Start(_)) => GroupStart::Start,
                Some(AllOption::End(_)) | None => GroupStart::End,
            };
            (GroupTarget::All, start)
        }
        None => {
            #[expect(deprecated, reason = "older clients name the stream here")]
            let identifier = options.stream_identifier;
            (target(identifier, false)?, legacy_start(legacy_revision))
        }
    };
    Ok((target, options.group_name, wire.into_settings(start)?))
}

/// The ids of an ack or nack, in either form. The message's `bytes id` is the subscription
/// id of the confirmation, which names nothing this call does not already know: it is not read.
fn acked_ids(ids: Vec<shared::Uuid>) -> Result<Vec<uuid::Uuid>, Status> {
    ids.into_iter()
        .map(|id| convert::store_id(Some(id), "an acknowledged event id"))
        .collect()
}

fn nack_action(action: i32) -> Result<(NackAction, bool), Status> {
    use pb::read_req::nack::Action;
    match Action::try_from(action) {
        Ok(Action::Unknown | Action::Retry) => Ok((NackAction::Retry, false)),
        Ok(Action::Park) => Ok((NackAction::Park, false)),
        Ok(Action::Skip) => Ok((NackAction::Skip, false)),
        Ok(Action::Stop) => Ok((NackAction::Retry, true)),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown nack action {action}"
        ))),
    }
}

fn read_event(delivered: &GroupEvent, form: IdForm) -> pb::ReadResp {
    use pb::read_resp::read_event::{Count, Position as WirePosition, RecordedEvent};
    let event = (*delivered.event).clone();
    let position = convert::wire_position(event.position);
    let recorded = convert::recorded_event(event, form);
    let recorded = RecordedEvent {
        id: recorded.id,
        stream_identifier: recorded.stream_identifier,
        stream_revision: recorded.stream_revision,
        prepare_position: recorded.prepare_position,
        commit_position: recorded.commit_position,
        metadata: recorded.metadata,
        custom_metadata: recorded.custom_metadata,
        data: recorded.data,
    };
    pb::ReadResp {
        content: Some(pb::read_resp::Content::Event(pb::read_resp::ReadEvent {
            event: Some(recorded),
            link: None,
            position: Some(WirePosition::CommitPosition(position)),
            count: Some(Count::RetryCount(
                i32::try_from(delivered.retry_count).unwrap_or(i32::MAX),
            )),
        })),
    }
}

/// The group's name for a consumer: the client's connection name, else its address.
fn consumer_name<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("connection-name")
        .and_then(|name| name.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.remote_addr().map(|addr| addr.to_string()))
        .unwrap_or_default()
}

/// The answer that ends a consumer's call when the group or the server ends it: clients
/// read a call that ends without an error as impossible, so it always carries one.
fn consumer_dropped(reason: &str) -> Status {
    let mut status = Status::aborted(format!("the persistent subscription was dropped: {reason}"));
    if let Ok(value) = tonic::metadata::MetadataValue::try_from("persistent-subscription-dropped") {
        status
            .metadata_mut()
            .insert(super::errors::EXCEPTION, value);
    }
    status
}

/// KurrentDB's side of a consumer's `Read` call; events carry their ids in the form the
/// client sent its own.
struct KurrentRead {
    form: IdForm,
}

impl ConsumerProtocol for KurrentRead {
    type Request = pb::ReadReq;
    type Response = pb::ReadResp;

    fn decode(&self, request: pb::ReadReq) -> Result<ConsumerRequest, Status> {
        use pb::read_req::Content;
        match request.content {
            Some(Content::Ack(ack)) => Ok(ConsumerRequest::Ack(acked_ids(ack.ids)?)),
            Some(Content::Nack(nack)) => {
                let ids = acked_ids(nack.ids)?;
                let (action, stop) = nack_action(nack.action)?;
                Ok(ConsumerRequest::Nack { ids, action, stop })
            }
            Some(Content::Stop(_)) => Ok(ConsumerRequest::StopReceiving),
            Some(Content::Options(_)) => Err(Status::invalid_argument(
                "the options may be sent only first",
            )),
            None => Err(Status::invalid_argument("a request with no content")),
        }
    }

    fn encode(&self, event: &GroupEvent) -> pb::ReadResp {
        read_event(event, self.form)
    }

    fn failed(&self, error: caskade_eventstore::Error) -> Status {
        failed(error)
    }

    fn dropped(&self) -> Status {
        consumer_dropped("it did not take its events in time")
    }
}

/// `C:<commit>/P:<prepare>` of a wire position.
fn position_text(position: u64) -> String {
    format!("C:{position}/P:{position}")
}

/// A version (stream group) or position (`$all` group) as `GetInfo` reports it.
fn key_text(target: &GroupTarget, key: Option<u64>) -> String {
    match (target, key) {
        (_, None) => String::new(),
        (GroupTarget::Stream(_), Some(version)) => version.to_string(),
        (GroupTarget::All, Some(position)) => {
            position_text(convert::wire_position(Position(position)))
        }
    }
}

fn start_text(definition: &GroupDefinition) -> String {
    let all = definition.target == GroupTarget::All;
    match (definition.settings.start, all) {
        (GroupStart::Start, false) => "0".to_owned(),
        (GroupStart::Start, true) => position_text(0),
        (GroupStart::End, false) => "-1".to_owned(),
        (GroupStart::End, true) => "C:-1/P:-1".to_owned(),
        (GroupStart::Version(version), _) => version.0.to_string(),
        (GroupStart::Position(position), _) => position_text(convert::wire_position(position)),
    }
}

fn int(value: impl TryInto<i32>) -> i32 {
    value.try_into().unwrap_or(i32::MAX)
}

fn long(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "a rate in whole items per second"
)]
fn per_second(rate: f64) -> i32 {
    rate.round().clamp(0.0, f64::from(i32::MAX)) as i32
}

fn subscription_info(info: &GroupInfo) -> pb::SubscriptionInfo {
    use pb::subscription_info::ConnectionInfo;
    let definition = &info.definition;
    let settings = &definition.settings;
    let connections: Vec<ConnectionInfo> = info
        .consumers
        .iter()
        .map(|consumer| ConnectionInfo {
            from: consumer.name.clone(),
            username: String::new(),
            average_items_per_second: per_second(consumer.acked_per_second),
            total_items: long(consumer.delivered),
            count_since_last_measurement: 0,
            observed_measurements: Vec::new(),
            available_slots: int(consumer.capacity.saturating_sub(consumer.in_flight)),
            in_flight_messages: int(consumer.in_flight),
            connection_name: consumer.name.clone(),
        })
        .collect();
    let rate: f64 = info.consumers.iter().map(|c| c.acked_per_second).sum();
    let delivered: u64 = info.consumers.iter().map(|c| c.delivered).sum();
    let millis = |duration: Duration| int(duration.as_millis());
    pb::SubscriptionInfo {
        event_source: match &definition.target {
            GroupTarget::Stream(stream) => stream.clone(),
            GroupTarget::All => "$all".to_owned(),
        },
        group_name: definition.name.clone(),
        status: match info.status {
            GroupStatus::Idle => "Idle",
            GroupStatus::CatchingUp => "Behind",
            GroupStatus::Live => "Live",
        }
        .to_owned(),
        connections,
        average_per_second: per_second(rate),
        total_items: long(delivered),
        count_since_last_measurement: 0,
        last_checkpointed_event_position: key_text(&definition.target, info.last_checkpointed),
        last_known_event_position: key_text(&definition.target, info.last_known),
        resolve_link_tos: settings.resolve_links,
        start_from: start_text(definition),
        message_timeout_milliseconds: millis(settings.message_timeout),
        extra_statistics: settings.extra_statistics,
        max_retry_count: int(settings.max_retry_count),
        live_buffer_size: int(settings.live_buffer_size),
        buffer_size: int(settings.history_buffer_size),
        read_batch_size: int(settings.read_batch_size),
        check_point_after_milliseconds: millis(settings.checkpoint_after),
        min_check_point_count: int(settings.min_checkpoint_count),
        max_check_point_count: int(settings.max_checkpoint_count),
        read_buffer_count: int(info.buffered),
        live_buffer_count: 0,
        retry_buffer_count: int(info.retrying),
        total_in_flight_messages: int(info.in_flight),
        outstanding_messages_count: int(info.in_flight),
        named_consumer_strategy: strategy_name(settings.consumer_strategy).to_owned(),
        max_subscriber_count: int(settings.max_subscriber_count),
        parked_message_count: long(info.parked),
    }
}

impl KurrentPersistentService {
    async fn infos(&self, groups: Vec<GroupDefinition>) -> Result<pb::ListResp, Status> {
        let mut subscriptions = Vec::with_capacity(groups.len());
        for group in groups {
            match self.store.group_info(&group.target, &group.name).await {
                Ok(info) => subscriptions.push(subscription_info(&info)),
                // Deleted since it was listed.
                Err(caskade_eventstore::Error::GroupNotFound { .. }) => {}
                Err(error) => return Err(failed(error)),
            }
        }
        Ok(pb::ListResp { subscriptions })
    }
}

#[tonic::async_trait]
impl pb::persistent_subscriptions_server::PersistentSubscriptions for KurrentPersistentService {
    async fn create(
        &self,
        request: Request<pb::CreateReq>,
    ) -> Result<Response<pb::CreateResp>, Status> {
        let (target, name, filter, settings) = decode_create(request.into_inner())?;
        let store = self.store.clone();
        blocking(move || {
            store
                .create_group(target, &name, filter, settings)
                .map_err(failed)
        })
        .await?;
        Ok(Response::new(pb::CreateResp {}))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateReq>,
    ) -> Result<Response<pb::UpdateResp>, Status> {
        let (target, name, settings) = decode_update(request.into_inner())?;
        let store = self.store.clone();
        blocking(move || {
            let filter = store
                .group(&target, &name)
                .map_err(failed)?
                .map_or_else(EventFilter::all, |group| group.filter);
            store
                .update_group(target, &name, filter, settings)
                .map_err(failed)
        })
        .await?;
        Ok(Response::new(pb::UpdateResp {}))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteReq>,
    ) -> Result<Response<pb::DeleteResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| missing("the options"))?;
        let target = requested_target!(options.stream_option, delete_req)?;
        let store = self.store.clone();
        blocking(move || {
            store
                .delete_group(&target, &options.group_name)
                .map_err(failed)
        })
        .await?;
        Ok(Response::new(pb::DeleteResp {}))
    }

    type ReadStream = MessageStream<pb::ReadResp>;

    async fn read(
        &self,
        request: Request<Streaming<pb::ReadReq>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use pb::read_req::Content;
        use pb::read_req::options::uuid_option;
        let name = consumer_name(&request);
        let mut requests = request.into_inner();
        let Some(pb::ReadReq {
            content: Some(Content::Options(options)),
        }) = requests.message().await?
        else {
            return Err(Status::invalid_argument(
                "the first request of a Read must carry its options",
            ));
        };
        let target = requested_target!(options.stream_option, read_req)?;
        let form = match options.uuid_option.and_then(|option| option.content) {
            Some(uuid_option::Content::String(_)) => IdForm::Text,
            _ => IdForm::Structured,
        };
        let capacity = u32::try_from(options.buffer_size)
            .ok()
            .filter(|size| *size > 0)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "buffer_size must be at least 1, and is {}",
                    options.buffer_size
                ))
            })?;
        let consumer = self
            .store
            .connect_group(&target, &options.group_name, &name, capacity)
            .await
            .map_err(failed)?;
        let (sender, receiver) = mpsc::channel(READ_BUFFER);
        let subscription_id = match &target {
            GroupTarget::Stream(stream) => format!("{stream}::{}", options.group_name),
            GroupTarget::All => format!("$all::{}", options.group_name),
        };
        let confirmation = pb::ReadResp {
            content: Some(pb::read_resp::Content::SubscriptionConfirmation(
                pb::read_resp::SubscriptionConfirmation { subscription_id },
            )),
        };
        sender
            .send(Ok(confirmation))
            .await
            .map_err(|_| Status::cancelled("the client went away"))?;
        tokio::spawn(serve_consumer(
            KurrentRead { form },
            consumer,
            requests,
            sender,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_info(
        &self,
        request: Request<pb::GetInfoReq>,
    ) -> Result<Response<pb::GetInfoResp>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| missing("the options"))?;
        let target = requested_target!(options.stream_option, get_info_req)?;
        let info = self
            .store
            .group_info(&target, &options.group_name)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::GetInfoResp {
            subscription_info: Some(subscription_info(&info)),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<pb::ReplayParkedReq>,
    ) -> Result<Response<pb::ReplayParkedResp>, Status> {
        use pb::replay_parked_req::options::StopAtOption;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| missing("the options"))?;
        let target = requested_target!(options.stream_option, replay_parked_req)?;
        let limit = match options.stop_at_option {
            Some(StopAtOption::StopAt(stop_at)) => Some(u64::try_from(stop_at).map_err(|_| {
                Status::invalid_argument(format!("stop_at must not be negative, and is {stop_at}"))
            })?),
            Some(StopAtOption::NoLimit(_)) | None => None,
        };
        self.store
            .replay_parked(&target, &options.group_name, limit)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::ReplayParkedResp {}))
    }

    async fn truncate_parked(
        &self,
        _request: Request<pb::TruncateParkedReq>,
    ) -> Result<Response<pb::TruncateParkedResp>, Status> {
        Err(Status::unimplemented(
            "TruncateParked is not supported: replay the parked messages and skip them",
        ))
    }

    async fn list(&self, request: Request<pb::ListReq>) -> Result<Response<pb::ListResp>, Status> {
        use pb::list_req::options::ListOption;
        use pb::list_req::stream_option::StreamOption;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| missing("the options"))?;
        let target = match options.list_option {
            Some(ListOption::ListAllSubscriptions(_)) => None,
            Some(ListOption::ListForStream(stream)) => Some(match stream.stream_option {
                Some(StreamOption::Stream(identifier)) => target(Some(identifier), false)?,
                Some(StreamOption::All(_)) => GroupTarget::All,
                None => return Err(missing("the stream option")),
            }),
            None => return Err(missing("the list option")),
        };
        let store = self.store.clone();
        let groups = blocking(move || store.list_groups(target.as_ref()).map_err(failed)).await?;
        Ok(Response::new(self.infos(groups).await?))
    }

    async fn restart_subsystem(
        &self,
        _request: Request<shared::Empty>,
    ) -> Result<Response<shared::Empty>, Status> {
        let store = self.store.clone();
        blocking(move || {
            store.restart_groups();
            Ok(())
        })
        .await?;
        Ok(Response::new(shared::Empty {}))
    }
}
