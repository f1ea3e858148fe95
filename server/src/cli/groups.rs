//! The persistent subscription commands: `caskade group ...` manages a server's groups
//! (create, update, delete, list, info, replay-parked), one `PersistentSubscriptions` call
//! each, and `caskade consume` is one competing consumer of a group, printing each event as a
//! JSON line and acking it (or nacking it, to try things out).
//!
//! This module owns how the group commands' arguments become requests and how their answers
//! print; every rule about groups (valid settings, defaults, names) is the server's. Arguments
//! are checked here before connecting where they can be: filters on a stream group (which
//! the server refuses too) and `--from` and buffer syntax.

use std::str::FromStr;

use anyhow::Context;
use caskade_proto::v1 as pb;
use caskade_server::client::{ClientConfig, Connection};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::client::event_json;
use crate::cli::output::print_line;

/// The name a group's `$all` target goes by on the command line.
const ALL: &str = "$all";

/// `caskade group ...`: managing persistent subscription groups.
#[derive(Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group on STREAM (or `$all`); absent settings take the server's defaults
    /// (KurrentDB's).
    Create {
        #[command(flatten)]
        group: GroupName,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Replace a group's settings: absent ones return to the defaults, an `$all` group's
    /// filter is kept unless one is given. Its consumers are dropped and resume from the
    /// checkpoint when they reconnect.
    Update {
        #[command(flatten)]
        group: GroupName,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete a group with its checkpoint and parked events.
    Delete {
        #[command(flatten)]
        group: GroupName,
    },
    /// Print the groups (every one, or those of STREAM or `$all`), one JSON object per line.
    List {
        /// Only the groups of this stream, or of `$all`.
        stream: Option<String>,
    },
    /// Print one group's definition and state as a JSON object.
    Info {
        #[command(flatten)]
        group: GroupName,
    },
    /// Deliver a group's parked events again, oldest first.
    ReplayParked {
        #[command(flatten)]
        group: GroupName,
        /// Replay at most this many; every parked event when absent.
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// A group, by its target and its name.
#[derive(Args)]
pub(crate) struct GroupName {
    /// The group's stream, or `$all`.
    stream: String,
    /// The group's name.
    group: String,
}

/// A group's settings as `create` and `update` take them; each absent one is sent absent.
#[derive(Args)]
#[command(next_help_heading = "Group settings")]
pub(crate) struct SettingsArgs {
    /// Where a new group starts: `start`, `end` (the default), or a version (a position,
    /// for `$all`), inclusive.
    #[arg(long, value_name = "start|end|N")]
    from: Option<GroupStart>,
    /// How long an event may go unacknowledged before it is retried.
    #[arg(long, value_name = "MS")]
    message_timeout_ms: Option<u32>,
    /// Retries before an event is parked.
    #[arg(long, value_name = "N")]
    max_retry_count: Option<u32>,
    /// Live events buffered for the consumers.
    #[arg(long, value_name = "N")]
    live_buffer_size: Option<u32>,
    /// Events read from the store at a time.
    #[arg(long, value_name = "N")]
    read_batch_size: Option<u32>,
    /// Events buffered while catching up.
    #[arg(long, value_name = "N")]
    history_buffer_size: Option<u32>,
    /// How often the checkpoint may be written.
    #[arg(long, value_name = "MS")]
    checkpoint_after_ms: Option<u32>,
    /// Events finished before a checkpoint is written on time.
    #[arg(long, value_name = "N")]
    min_checkpoint_count: Option<u32>,
    /// Events finished after which a checkpoint is written at once.
    #[arg(long, value_name = "N")]
    max_checkpoint_count: Option<u32>,
    /// Consumers connected at once; 0 for no limit.
    #[arg(long, value_name = "N")]
    max_subscriber_count: Option<u32>,
    /// How events are handed out to the consumers.
    #[arg(long, value_enum)]
    strategy: Option<Strategy>,
}

/// An `$all` group's filter; refused for a stream group, which reads its stream whole.
#[derive(Args)]
#[command(next_help_heading = "Filter (`$all` groups only)")]
pub(crate) struct FilterArgs {
    /// Only events of streams starting with this; repeatable.
    #[arg(long = "stream-prefix", value_name = "PREFIX")]
    stream_prefixes: Vec<String>,
    /// Only events of streams matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    stream_regex: Option<String>,
    /// Only events whose type starts with this; repeatable.
    #[arg(long = "event-type-prefix", value_name = "PREFIX")]
    event_type_prefixes: Vec<String>,
    /// Only events whose type matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    event_type_regex: Option<String>,
}

/// `--from`: where a new group starts.
#[derive(Clone, Copy)]
enum GroupStart {
    Start,
    End,
    /// A version for a stream group, a position for `$all`.
    At(u64),
}

impl FromStr for GroupStart {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "start" => Ok(GroupStart::Start),
            "end" => Ok(GroupStart::End),
            number => number.parse().map(GroupStart::At).map_err(|_| {
                "expected `start`, `end` or a version (a position, for `$all`)".to_owned()
            }),
        }
    }
}

/// `--strategy`: how a group hands events out.
#[derive(Clone, Copy, ValueEnum)]
enum Strategy {
    /// Each event to the next consumer in turn that has room.
    RoundRobin,
    /// Every event to the first consumer while it has room, then to the next.
    DispatchToSingle,
    /// The events of one stream always to the same consumer.
    Pinned,
    /// The events of one correlation id always to the same consumer.
    PinnedByCorrelation,
}

impl Strategy {
    fn wire(self) -> pb::ConsumerStrategy {
        match self {
            Strategy::RoundRobin => pb::ConsumerStrategy::RoundRobin,
            Strategy::DispatchToSingle => pb::ConsumerStrategy::DispatchToSingle,
            Strategy::Pinned => pb::ConsumerStrategy::Pinned,
            Strategy::PinnedByCorrelation => pb::ConsumerStrategy::PinnedByCorrelation,
        }
    }

    /// The strategy's name as `--strategy` takes it.
    fn name(strategy: i32) -> &'static str {
        match pb::ConsumerStrategy::try_from(strategy) {
            Ok(pb::ConsumerStrategy::RoundRobin) => "round-robin",
            Ok(pb::ConsumerStrategy::DispatchToSingle) => "dispatch-to-single",
            Ok(pb::ConsumerStrategy::Pinned) => "pinned",
            Ok(pb::ConsumerStrategy::PinnedByCorrelation) => "pinned-by-correlation",
            Err(_) => "unknown",
        }
    }
}

/// `caskade consume`: one competing consumer of a group.
#[derive(Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    group: GroupName,
    /// The most events this consumer may have unacknowledged.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    buffer_size: u32,
    /// The consumer's name, as `group info` reports it.
    #[arg(long, default_value = "caskade consume")]
    name: String,
    /// Nack each event with this action instead of acking it.
    #[arg(long, value_enum, value_name = "ACTION")]
    nack: Option<Nack>,
    /// Exit after handling this many events; otherwise run until the server ends the call
    /// (or the process is interrupted). Events the group hands out once the count is reached
    /// go back to it, counting a retry.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

/// `--nack`: what to do with each event instead of acking it.
#[derive(Clone, Copy, ValueEnum)]
enum Nack {
    /// Park it now.
    Park,
    /// Deliver it again, counting a retry.
    Retry,
    /// Drop it: neither delivered again nor parked.
    Skip,
}

impl Nack {
    fn wire(self) -> pb::NackAction {
        match self {
            Nack::Park => pb::NackAction::Park,
            Nack::Retry => pb::NackAction::Retry,
            Nack::Skip => pb::NackAction::Skip,
        }
    }
}

/// A command's target: one stream, or `$all`.
enum Target {
    Stream(String),
    All,
}

impl Target {
    fn new(stream: String) -> Target {
        if stream == ALL {
            Target::All
        } else {
            Target::Stream(stream)
        }
    }
}

/// `target` as the `target` oneof of the request whose generated module is `$kind`.
macro_rules! wire_target {
    ($target:expr, $kind:ident) => {
        match $target {
            Target::Stream(stream) => pb::$kind::Target::Stream(stream),
            Target::All => pb::$kind::Target::All(pb::Empty {}),
        }
    };
}

/// Runs one `caskade group` command against the server `config` names.
pub(crate) async fn run(config: &ClientConfig, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create {
            group,
            settings,
            filter,
        } => create(config, group, &settings, filter).await,
        GroupCommand::Update {
            group,
            settings,
            filter,
        } => update(config, group, &settings, filter).await,
        GroupCommand::Delete { group } => delete(config, group).await,
        GroupCommand::List { stream } => list(config, stream).await,
        GroupCommand::Info { group } => info(config, group).await,
        GroupCommand::ReplayParked { group, limit } => replay_parked(config, group, limit).await,
    }
}

async fn create(
    config: &ClientConfig,
    group: GroupName,
    settings: &SettingsArgs,
    filter: FilterArgs,
) -> anyhow::Result<()> {
    let target = Target::new(group.stream);
    let filter = filter.wire(&target)?;
    let settings = settings.wire(&target);
    let request = pb::CreateGroupRequest {
        target: Some(wire_target!(target, create_group_request)),
        group: group.group,
        filter,
        settings: Some(settings),
    };
    let connection = Connection::connect(config).await?;
    connection.groups().create_group(request).await?;
    print_line(&"OK")
}

async fn update(
    config: &ClientConfig,
    group: GroupName,
    settings: &SettingsArgs,
    filter: FilterArgs,
) -> anyhow::Result<()> {
    let target = Target::new(group.stream);
    let filter = filter.wire(&target)?;
    let settings = settings.wire(&target);
    let request = pb::UpdateGroupRequest {
        target: Some(wire_target!(target, update_group_request)),
        group: group.group,
        filter,
        settings: Some(settings),
    };
    let connection = Connection::connect(config).await?;
    connection.groups().update_group(request).await?;
    print_line(&"OK")
}

async fn delete(config: &ClientConfig, group: GroupName) -> anyhow::Result<()> {
    let request = pb::DeleteGroupRequest {
        target: Some(wire_target!(
            Target::new(group.stream),
            delete_group_request
        )),
        group: group.group,
    };
    let connection = Connection::connect(config).await?;
    connection.groups().delete_group(request).await?;
    print_line(&"OK")
}

async fn list(config: &ClientConfig, stream: Option<String>) -> anyhow::Result<()> {
    let request = pb::ListGroupsRequest {
        target: stream.map(|stream| wire_target!(Target::new(stream), list_groups_request)),
    };
    let connection = Connection::connect(config).await?;
    let response = connection.groups().list_groups(request).await?.into_inner();
    for group in &response.groups {
        print_line(&group_json(group))?;
    }
    Ok(())
}

async fn info(config: &ClientConfig, group: GroupName) -> anyhow::Result<()> {
    let request = pb::GetGroupInfoRequest {
        target: Some(wire_target!(
            Target::new(group.stream),
            get_group_info_request
        )),
        group: group.group,
    };
    let connection = Connection::connect(config).await?;
    let info = connection
        .groups()
        .get_group_info(request)
        .await?
        .into_inner();
    print_line(&group_json(&info))
}

async fn replay_parked(
    config: &ClientConfig,
    group: GroupName,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let request = pb::ReplayParkedRequest {
        target: Some(wire_target!(
            Target::new(group.stream),
            replay_parked_request
        )),
        group: group.group,
        limit,
    };
    let connection = Connection::connect(config).await?;
    let response = connection
        .groups()
        .replay_parked(request)
        .await?
        .into_inner();
    print_line(&json!({ "replayed": response.replayed }))
}

impl SettingsArgs {
    /// The settings as sent: what was not given is absent, for the server to default.
    fn wire(&self, target: &Target) -> pb::GroupSettings {
        use pb::group_settings::Start as Wire;
        pb::GroupSettings {
            start: self.from.map(|from| match (from, target) {
                (GroupStart::Start, _) => Wire::FromStart(pb::Empty {}),
                (GroupStart::End, _) => Wire::FromEnd(pb::Empty {}),
                (GroupStart::At(version), Target::Stream(_)) => Wire::FromVersion(version),
                (GroupStart::At(position), Target::All) => Wire::FromPosition(position),
            }),
            resolve_links: false,
            extra_statistics: false,
            message_timeout_ms: self.message_timeout_ms,
            max_retry_count: self.max_retry_count,
            live_buffer_size: self.live_buffer_size,
            read_batch_size: self.read_batch_size,
            history_buffer_size: self.history_buffer_size,
            checkpoint_after_ms: self.checkpoint_after_ms,
            min_checkpoint_count: self.min_checkpoint_count,
            max_checkpoint_count: self.max_checkpoint_count,
            max_subscriber_count: self.max_subscriber_count,
            consumer_strategy: self.strategy.unwrap_or(Strategy::RoundRobin).wire().into(),
        }
    }
}

impl FilterArgs {
    /// The filter as sent: `None` when no option was given (every event, or for `update`,
    /// the current filter kept).
    ///
    /// # Errors
    /// Any filter option for a stream group.
    fn wire(self, target: &Target) -> anyhow::Result<Option<pb::Filter>> {
        let given = [
            ("--stream-prefix", !self.stream_prefixes.is_empty()),
            ("--stream-regex", self.stream_regex.is_some()),
            ("--event-type-prefix", !self.event_type_prefixes.is_empty()),
            ("--event-type-regex", self.event_type_regex.is_some()),
        ];
        let Some((first, _)) = given.iter().find(|(_, given)| *given) else {
            return Ok(None);
        };
        if let Target::Stream(stream) = target {
            anyhow::bail!(
                "{first} filters an `$all` group only; a group of stream {stream:?} reads the \
                 whole stream"
            );
        }
        Ok(Some(pb::Filter {
            stream_prefix: String::new(),
            event_type_prefix: String::new(),
            event_type_regex: self.event_type_regex.unwrap_or_default(),
            stream_prefixes: self.stream_prefixes,
            stream_regex: self.stream_regex.unwrap_or_default(),
            event_type_prefixes: self.event_type_prefixes,
        }))
    }
}

/// A group as the one JSON object per line that `group list` and `group info` print.
fn group_json(group: &pb::GroupInfo) -> serde_json::Value {
    let target = match &group.target {
        Some(pb::group_info::Target::Stream(stream)) => stream.as_str(),
        Some(pb::group_info::Target::All(_)) => ALL,
        None => "",
    };
    let status = pb::GroupStatus::try_from(group.status).map_or("unknown", |s| match s {
        pb::GroupStatus::Idle => "idle",
        pb::GroupStatus::CatchingUp => "catching_up",
        pb::GroupStatus::Live => "live",
    });
    let consumers: Vec<serde_json::Value> = group
        .consumers
        .iter()
        .map(|consumer| {
            json!({
                "id": consumer.id,
                "name": consumer.name,
                "buffer_size": consumer.buffer_size,
                "in_flight": consumer.in_flight,
                "delivered": consumer.delivered,
                "acked": consumer.acked,
                "nacked": consumer.nacked,
                "acked_per_second": consumer.acked_per_second,
            })
        })
        .collect();
    json!({
        "target": target,
        "group": group.group,
        "status": status,
        "filter": group.filter.as_ref().map(filter_json),
        "settings": group.settings.as_ref().map(settings_json),
        "consumers": consumers,
        "last_checkpointed": group.last_checkpointed,
        "last_known": group.last_known,
        "parked": group.parked,
        "in_flight": group.in_flight,
        "buffered": group.buffered,
        "retrying": group.retrying,
    })
}

/// A filter in JSON: its prefixes (the single and the repeated fields together) and
/// regular expressions (null when absent).
fn filter_json(filter: &pb::Filter) -> serde_json::Value {
    let joined = |one: &str, many: &[String]| -> Vec<String> {
        std::iter::once(one)
            .filter(|prefix| !prefix.is_empty())
            .map(str::to_owned)
            .chain(many.iter().cloned())
            .collect()
    };
    let regex = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    json!({
        "stream_prefixes": joined(&filter.stream_prefix, &filter.stream_prefixes),
        "stream_regex": regex(&filter.stream_regex),
        "event_type_prefixes": joined(&filter.event_type_prefix, &filter.event_type_prefixes),
        "event_type_regex": regex(&filter.event_type_regex),
    })
}

/// Settings in JSON, named as `create`'s options: `from` is `"start"`, `"end"` or the
/// version (or position) the group started at.
fn settings_json(settings: &pb::GroupSettings) -> serde_json::Value {
    use pb::group_settings::Start as Wire;
    let from = match settings.start {
        Some(Wire::FromStart(_)) => json!("start"),
        Some(Wire::FromEnd(_)) | None => json!("end"),
        Some(Wire::FromVersion(at) | Wire::FromPosition(at)) => json!(at),
    };
    json!({
        "from": from,
        "message_timeout_ms": settings.message_timeout_ms,
        "max_retry_count": settings.max_retry_count,
        "live_buffer_size": settings.live_buffer_size,
        "read_batch_size": settings.read_batch_size,
        "history_buffer_size": settings.history_buffer_size,
        "checkpoint_after_ms": settings.checkpoint_after_ms,
        "min_checkpoint_count": settings.min_checkpoint_count,
        "max_checkpoint_count": settings.max_checkpoint_count,
        "max_subscriber_count": settings.max_subscriber_count,
        "strategy": Strategy::name(settings.consumer_strategy),
    })
}

/// Consumes a group: connects, then prints each event as a JSON line (the shape `subscribe`
/// prints, with `retry_count`) and acks it, or nacks it with `--nack`'s action, until
/// `--count` events are handled or the server ends the call.
///
/// With `--count`, the consumer's buffer is no larger than the count, and once the count is
/// reached it closes its side and waits for the server to end the call, so every ack and
/// nack sent has been taken before it exits. Events delivered after the count go back to the
/// group when it disconnects.
pub(crate) async fn consume(config: &ClientConfig, args: ConsumeArgs) -> anyhow::Result<()> {
    use pb::group_read_request::Message as Request;
    use pb::group_read_response::Message as Response;
    let buffer_size = match args.count {
        Some(count) => args
            .buffer_size
            .min(u32::try_from(count).unwrap_or(u32::MAX)),
        None => args.buffer_size,
    };
    let connect = pb::GroupConnect {
        target: Some(wire_target!(Target::new(args.group.stream), group_connect)),
        group: args.group.group,
        consumer_name: args.name,
        buffer_size,
    };
    let connection = Connection::connect(config).await?;
    // Room for the connect and a reply to every event the buffer allows.
    let (requests, receiver) = mpsc::channel(buffer_size as usize + 1);
    send(&requests, Request::Connect(connect)).await?;
    let mut answers = connection
        .groups()
        .read(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    let mut handled = 0;
    while args.count.is_none_or(|count| handled < count) {
        let Some(answer) = answers.message().await? else {
            return match args.count {
                None => Ok(()),
                Some(count) => Err(anyhow::anyhow!(
                    "the server ended the call after {handled} of {count} events"
                )),
            };
        };
        let Some(Response::Event(delivered)) = answer.message else {
            continue;
        };
        let event = delivered
            .event
            .context("the server sent a group event without its event")?;
        let mut line = event_json(&event);
        line["retry_count"] = delivered.retry_count.into();
        print_line(&line)?;
        let ids = vec![event.id];
        let reply = match args.nack {
            None => Request::Ack(pb::GroupAck { ids }),
            Some(action) => Request::Nack(pb::GroupNack {
                ids,
                action: action.wire().into(),
                reason: "nacked by caskade consume --nack".to_owned(),
            }),
        };
        send(&requests, reply).await?;
        handled += 1;
    }
    // Closing our side makes the server end the call once it has taken every reply; what it
    // delivers meanwhile goes back to the group.
    drop(requests);
    while answers.message().await?.is_some() {}
    Ok(())
}

/// Queues one request of a group `Read`.
async fn send(
    requests: &mpsc::Sender<pb::GroupReadRequest>,
    message: pb::group_read_request::Message,
) -> anyhow::Result<()> {
    requests
        .send(pb::GroupReadRequest {
            message: Some(message),
        })
        .await
        .map_err(|_| anyhow::anyhow!("the server ended the call"))
}
