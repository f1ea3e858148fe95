//! The client commands: one gRPC call (or server stream) per command against a running
//! server, reached with the global connection options, and its answer printed one line per
//! result. Arguments are checked before connecting, so a bad one fails the same with or
//! without a server.

use std::path::PathBuf;

use anyhow::Context;
use caskade_proto::v1 as pb;
use caskade_server::client::{ClientConfig, ClientTls, Connection, Credentials};
use clap::{Args, Subcommand};

use crate::cli::groups::{self, ConsumeArgs, GroupCommand};
use crate::cli::output::{ScavengeBar, merged_line, print_line, scavenged_line};

/// The connection options of the client commands. They are global, so that
/// `caskade --addr HOST:PORT get k` works as well as `caskade get --addr HOST:PORT k`.
/// `serve` declares its own `--addr` and `--token` with the same ids, which take their place
/// in `serve --help`; an `--addr` or `--token` before `serve` reaches it too.
#[derive(Args)]
#[command(next_help_heading = "Connection (client commands)")]
pub(crate) struct ClientArgs {
    /// The server's address.
    #[arg(
        long,
        global = true,
        env = "CASKADE_ADDR",
        default_value = "127.0.0.1:8888"
    )]
    addr: String,
    /// The server's token, if it requires one.
    #[arg(long, global = true, env = "CASKADE_TOKEN")]
    token: Option<String>,
    /// Or log in as one of the server's users (`serve --user`), NAME:PASSWORD, sent as HTTP
    /// Basic credentials.
    #[arg(
        long,
        global = true,
        env = "CASKADE_LOGIN",
        value_name = "NAME:PASSWORD",
        conflicts_with = "token"
    )]
    login: Option<caskade_server::User>,
    /// Connect with TLS, trusting this PEM CA certificate.
    #[arg(long, global = true, env = "CASKADE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// The server name to verify the certificate against, with --tls-ca.
    #[arg(long, global = true, default_value = "localhost")]
    tls_domain: String,
}

impl ClientArgs {
    fn config(&self) -> ClientConfig {
        ClientConfig {
            addr: self.addr.clone(),
            credentials: match (&self.token, &self.login) {
                (Some(token), _) => Some(Credentials::Token(token.clone())),
                (None, Some(login)) => Some(Credentials::User(login.clone())),
                (None, None) => None,
            },
            tls: self.tls_ca.clone().map(|ca| ClientTls {
                ca,
                domain: self.tls_domain.clone(),
            }),
        }
    }
}

/// The commands that talk to a running server.
#[derive(Subcommand)]
pub(crate) enum ClientCommand {
    /// Store VALUE under KEY in the key-value space.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print the value under KEY.
    Get {
        /// The key.
        key: String,
    },
    /// Delete KEY from the key-value space.
    Del {
        /// The key.
        key: String,
    },
    /// List the keys of the key-value space, one per line.
    Keys {
        /// Only keys starting with this.
        prefix: Option<String>,
    },
    /// Append one event to a stream.
    Append {
        /// The stream.
        stream: String,
        /// The event type.
        #[arg(long = "type")]
        event_type: String,
        /// The event data, JSON.
        #[arg(long)]
        data: String,
        /// The expected version: a number, `any`, `no-stream` or `exists`.
        #[arg(long, default_value = "any")]
        expected_version: String,
        /// The event id (a UUID); generated when absent.
        #[arg(long)]
        id: Option<String>,
    },
    /// Print a stream's events (or `$all`'s), one JSON object per line.
    Read {
        /// The stream, or `$all`.
        stream: String,
        /// Start at this version (or position, for `$all`).
        #[arg(long)]
        from: Option<u64>,
        /// Print at most this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backwards: bool,
    },
    /// Print a stream's events (or `$all`'s) as they arrive, one JSON object per line.
    Subscribe {
        /// The stream, or `$all`.
        stream: String,
        /// Start after this version (or position, for `$all`); from the start when absent.
        #[arg(long)]
        from: Option<u64>,
    },
    /// List the streams with their last versions.
    Streams,
    /// Soft-delete a stream.
    Delete {
        /// The stream.
        stream: String,
    },
    /// Merge a running server's store (`offline merge` merges a stopped one).
    Merge,
    /// Scavenge a running server's store: delete the events that deletes, tombstones and
    /// retention hide, then merge to give their space back (`offline scavenge` scavenges a
    /// stopped one).
    Scavenge,
    /// Back up a running server's store into DEST, a directory on the server (`offline
    /// backup` backs up a stopped one).
    Backup {
        /// Where to copy the store, on the server: a new or empty directory.
        dest: PathBuf,
    },
    /// Print a running server's store sizes.
    Stats,
    /// Manage persistent subscription groups: competing consumers of a stream or `$all`.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Consume a persistent subscription group: print each event as one JSON object per line
    /// and ack it.
    Consume(ConsumeArgs),
}

/// Runs one client command against the server `args` names.
pub(crate) async fn run(command: ClientCommand, args: &ClientArgs) -> anyhow::Result<()> {
    let config = &args.config();
    match command {
        ClientCommand::Put { key, value } => put(config, key, value).await,
        ClientCommand::Get { key } => get(config, key).await,
        ClientCommand::Del { key } => del(config, key).await,
        ClientCommand::Keys { prefix } => keys(config, prefix).await,
        ClientCommand::Append {
            stream,
            event_type,
            data,
            expected_version,
            id,
        } => append(config, stream, event_type, data, &expected_version, id).await,
        ClientCommand::Read {
            stream,
            from,
            count,
            backwards,
        } => read(config, stream, from, count, backwards).await,
        ClientCommand::Subscribe { stream, from } => subscribe(config, stream, from).await,
        ClientCommand::Streams => streams(config).await,
        ClientCommand::Delete { stream } => delete(config, stream).await,
        ClientCommand::Merge => merge(config).await,
        ClientCommand::Scavenge => scavenge(config).await,
        ClientCommand::Backup { dest } => backup(config, &dest).await,
        ClientCommand::Stats => stats(config).await,
        ClientCommand::Group(command) => groups::run(config, command).await,
        ClientCommand::Consume(args) => groups::consume(config, args).await,
    }
}

async fn put(config: &ClientConfig, key: String, value: String) -> anyhow::Result<()> {
    let request = pb::PutRequest {
        key: key.into_bytes(),
        value: value.into_bytes(),
    };
    Connection::connect(config).await?.kv().put(request).await?;
    print_line(&"OK")
}

async fn get(config: &ClientConfig, key: String) -> anyhow::Result<()> {
    let request = pb::GetRequest {
        key: key.clone().into_bytes(),
    };
    let response = Connection::connect(config).await?.kv().get(request).await?;
    match response.into_inner().value {
        Some(value) => print_line(&String::from_utf8_lossy(&value)),
        None => anyhow::bail!("key {key:?} not found"),
    }
}

async fn del(config: &ClientConfig, key: String) -> anyhow::Result<()> {
    let request = pb::KvDeleteRequest {
        key: key.into_bytes(),
    };
    Connection::connect(config)
        .await?
        .kv()
        .delete(request)
        .await?;
    print_line(&"OK")
}

async fn keys(config: &ClientConfig, prefix: Option<String>) -> anyhow::Result<()> {
    let request = pb::KeysRequest {
        prefix: prefix.unwrap_or_default().into_bytes(),
    };
    let connection = Connection::connect(config).await?;
    let mut keys = connection.kv().keys(request).await?.into_inner();
    while let Some(key) = keys.message().await? {
        print_line(&String::from_utf8_lossy(&key.key))?;
    }
    Ok(())
}

async fn append(
    config: &ClientConfig,
    stream: String,
    event_type: String,
    data: String,
    expected: &str,
    id: Option<String>,
) -> anyhow::Result<()> {
    serde_json::from_str::<serde_json::Value>(&data).context("--data must be JSON")?;
    let request = pb::AppendRequest {
        stream,
        expected_version: Some(expected_version(expected)?),
        events: vec![pb::EventData {
            id: id.unwrap_or_default(),
            r#type: event_type,
            content_type: pb::ContentType::Json.into(),
            data: data.into_bytes(),
            metadata: Vec::new(),
        }],
    };
    let connection = Connection::connect(config).await?;
    let response = connection.streams().append(request).await?.into_inner();
    print_line(&serde_json::json!({
        "next_expected_version": response.next_expected_version,
        "position": response.last_position,
    }))
}

async fn read(
    config: &ClientConfig,
    stream: String,
    from: Option<u64>,
    count: Option<u64>,
    backwards: bool,
) -> anyhow::Result<()> {
    let target = if stream == "$all" {
        pb::read_request::Target::All(pb::Empty {})
    } else {
        pb::read_request::Target::Stream(stream)
    };
    let direction = if backwards {
        pb::Direction::Backwards
    } else {
        pb::Direction::Forwards
    };
    let request = pb::ReadRequest {
        target: Some(target),
        direction: direction.into(),
        from: from.map(pb::read_request::From::At),
        max_count: count.unwrap_or(0),
        filter: None,
    };
    let connection = Connection::connect(config).await?;
    let mut messages = connection.streams().read(request).await?.into_inner();
    while let Some(message) = messages.message().await? {
        for event in &message.events {
            print_line(&event_json(event))?;
        }
    }
    Ok(())
}

async fn subscribe(config: &ClientConfig, stream: String, from: Option<u64>) -> anyhow::Result<()> {
    let target = if stream == "$all" {
        pb::subscribe_request::Target::All(pb::Empty {})
    } else {
        pb::subscribe_request::Target::Stream(stream)
    };
    let request = pb::SubscribeRequest {
        target: Some(target),
        from: Some(from.map_or(
            pb::subscribe_request::From::Start(pb::Empty {}),
            pb::subscribe_request::From::After,
        )),
        filter: None,
    };
    let connection = Connection::connect(config).await?;
    let mut messages = connection.streams().subscribe(request).await?.into_inner();
    while let Some(message) = messages.message().await? {
        match message.message {
            Some(pb::subscribe_response::Message::Event(event)) => {
                print_line(&event_json(&event))?;
            }
            Some(pb::subscribe_response::Message::CaughtUp(_)) => {
                eprintln!("caught up; waiting for new events");
            }
            None => {}
        }
    }
    Ok(())
}

async fn streams(config: &ClientConfig) -> anyhow::Result<()> {
    let connection = Connection::connect(config).await?;
    let mut messages = connection
        .streams()
        .list_streams(pb::ListStreamsRequest {})
        .await?
        .into_inner();
    while let Some(message) = messages.message().await? {
        for stream in message.streams {
            let state = pb::StreamState::try_from(stream.state).map_or("unknown", |s| match s {
                pb::StreamState::Live => "live",
                pb::StreamState::Deleted => "deleted",
                pb::StreamState::Tombstoned => "tombstoned",
            });
            let version = stream
                .last_version
                .map_or_else(|| "-".to_owned(), |v| v.to_string());
            print_line(&format!("{}\t{version}\t{state}", stream.name))?;
        }
    }
    Ok(())
}

async fn delete(config: &ClientConfig, stream: String) -> anyhow::Result<()> {
    let request = pb::DeleteRequest {
        stream,
        expected_version: None,
    };
    Connection::connect(config)
        .await?
        .streams()
        .delete(request)
        .await?;
    print_line(&"OK")
}

async fn merge(config: &ClientConfig) -> anyhow::Result<()> {
    let connection = Connection::connect(config).await?;
    let report = connection
        .admin()
        .merge(pb::MergeRequest {})
        .await?
        .into_inner();
    print_line(&merged_line(
        report.input_files,
        report.bytes_read,
        report.output_files,
        report.bytes_written,
    ))
}

async fn scavenge(config: &ClientConfig) -> anyhow::Result<()> {
    let connection = Connection::connect(config).await?;
    let mut progress = connection
        .admin()
        .scavenge(pb::ScavengeRequest {})
        .await?
        .into_inner();
    let mut bar = ScavengeBar::new();
    let mut last = None;
    while let Some(message) = progress.message().await? {
        let merge = (message.merge_bytes_total > 0)
            .then_some((message.merge_bytes_read, message.merge_bytes_total));
        bar.show((message.streams_examined, message.streams_total), merge);
        last = Some(message);
    }
    bar.finish();
    let done = last
        .filter(|message| message.done)
        .context("the server ended the scavenge without its totals")?;
    print_line(&scavenged_line(
        done.streams_examined,
        done.events_examined,
        done.events_removed,
        done.bytes_reclaimed,
    ))
}

async fn backup(config: &ClientConfig, dest: &std::path::Path) -> anyhow::Result<()> {
    let destination = dest
        .to_str()
        .context("the backup directory must be UTF-8")?
        .to_owned();
    let connection = Connection::connect(config).await?;
    let report = connection
        .admin()
        .backup(pb::BackupRequest { destination })
        .await?
        .into_inner();
    print_line(&format!(
        "backed up {} data files and {} hint files ({} bytes)",
        report.data_files, report.hint_files, report.bytes
    ))
}

async fn stats(config: &ClientConfig) -> anyhow::Result<()> {
    let connection = Connection::connect(config).await?;
    let stats = connection
        .admin()
        .stats(pb::StatsRequest {})
        .await?
        .into_inner();
    let (live, dead): (u64, u64) = stats
        .files
        .iter()
        .fold((0, 0), |(l, d), f| (l + f.live_bytes, d + f.dead_bytes));
    print_line(&serde_json::json!({
        "streams": stats.streams,
        "committed_position": stats.committed_position,
        "live_keys": stats.live_keys,
        "keydir_bytes": stats.keydir_bytes,
        "keydir_bytes_per_key": stats.keydir_bytes.checked_div(stats.live_keys).unwrap_or(0),
        "cache_bytes": stats.cache_bytes,
        "data_files": stats.files.len(),
        "live_bytes": live,
        "dead_bytes": dead,
    }))
}

/// An `--expected-version` as the request carries it.
fn expected_version(text: &str) -> anyhow::Result<pb::ExpectedVersion> {
    use pb::expected_version::Kind;
    let kind = match text {
        "any" => Kind::Any(pb::Empty {}),
        "no-stream" => Kind::NoStream(pb::Empty {}),
        "exists" => Kind::StreamExists(pb::Empty {}),
        number => Kind::Exact(number.parse().with_context(|| {
            format!("--expected-version must be a number, `any`, `no-stream` or `exists`, not {number:?}")
        })?),
    };
    Ok(pb::ExpectedVersion { kind: Some(kind) })
}

/// An event as the one JSON object per line that `read`, `subscribe` and `consume` print. The
/// data and metadata are JSON when they parse as JSON (text otherwise); `recorded_at` is the
/// time the server recorded the event, RFC 3339 in UTC with microseconds (null if out of
/// range).
pub(crate) fn event_json(event: &pb::RecordedEvent) -> serde_json::Value {
    let binary = event.content_type == i32::from(pb::ContentType::Binary);
    let payload = |bytes: &[u8]| {
        if bytes.is_empty() {
            serde_json::Value::Null
        } else if binary {
            serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
        } else {
            serde_json::from_slice(bytes)
                .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned().into())
        }
    };
    serde_json::json!({
        "stream": event.stream,
        "version": event.version,
        "position": event.position,
        "id": event.id,
        "type": event.r#type,
        "data": payload(&event.data),
        "metadata": payload(&event.metadata),
        "recorded_at": recorded_at(event.recorded_at_micros),
    })
}

/// Microseconds since the Unix epoch as RFC 3339 in UTC with six fractional digits, e.g.
/// `2026-12-03T14:25:13.123456Z`; `None` outside chrono's range of dates.
fn recorded_at(micros: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}
