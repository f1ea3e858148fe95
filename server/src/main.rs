//! `caskade`: the server (`caskade serve`), a command-line client in the spirit of
//! `GoCask`'s `gccli`, and offline tools for a stopped store's data directory.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use caskade_engine::{MergeTrigger, SyncPolicy};
use caskade_eventstore::EventStore;
use caskade_proto::v1 as pb;
use caskade_server::client::{ClientConfig, ClientTls, Connection};
use caskade_server::process::usage_error_line;
use caskade_server::{ServerConfig, TlsFiles};
use clap::{Args, Parser, Subcommand};

/// gRPC traffic is many small allocations per message (each event's strings and bytes, each
/// frame); glibc's allocator took about a fifth of the server's time in a `$all` read.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Caskade: an event store on a Bitcask storage engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// How client commands reach the server; accepted before the subcommand or after it.
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server on an embedded store.
    Serve(Box<ServeArgs>),
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
    /// Merge a running server's store, or with DIR the stopped store in DIR.
    Merge {
        /// A stopped store's data directory (offline merge).
        dir: Option<PathBuf>,
    },
    /// Scavenge a running server's store, or with DIR the stopped store in DIR: delete the
    /// events that deletes, tombstones and retention hide, then merge to give their space
    /// back.
    Scavenge {
        /// A stopped store's data directory (offline scavenge).
        dir: Option<PathBuf>,
    },
    /// Back up a running server's store into DIR (on the server), or with DEST the stopped
    /// store in DIR into DEST.
    Backup {
        /// Destination on the server, or (offline) the stopped store's data directory.
        dir: PathBuf,
        /// Offline: where to copy the store.
        dest: Option<PathBuf>,
    },
    /// Print a running server's store sizes.
    Stats,
    /// Verify every record of a stopped store; exits non-zero on any problem.
    Check {
        /// The store's data directory.
        dir: PathBuf,
    },
}

/// The connection options of the client commands. They are global, so that
/// `caskade --addr HOST:PORT get k` works as well as `caskade get --addr HOST:PORT k`.
/// `serve` declares its own `--addr` and `--token` with the same ids, which take their place
/// in `serve --help`; an `--addr` or `--token` before `serve` reaches it too.
#[derive(Args)]
#[command(next_help_heading = "Connection (client commands)")]
struct ClientArgs {
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
            token: self.token.clone(),
            tls: self.tls_ca.clone().map(|ca| ClientTls {
                ca,
                domain: self.tls_domain.clone(),
            }),
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Where the store lives.
    #[arg(long, env = "CASKADE_DATA_DIR", default_value = "./caskade-data")]
    data_dir: PathBuf,
    /// Address to listen on, IP:PORT. Loopback unless told otherwise.
    // A `String` like the client commands' global `--addr`, whose id it shares: clap hands a
    // value given before `serve` to this argument.
    #[arg(long, env = "CASKADE_ADDR", default_value = "127.0.0.1:8888")]
    addr: String,
    /// When writes are durable: `always` (fdatasync before acknowledging), `interval:MS`, or
    /// `never`.
    #[arg(long, env = "CASKADE_SYNC", default_value = "always")]
    sync: String,
    /// Size at which a data file is sealed and a new one started, in bytes.
    #[arg(long, env = "CASKADE_MAX_FILE_SIZE", default_value_t = 256 << 20)]
    max_file_size: u64,
    /// Merge automatically when dead bytes reach this fraction of sealed files...
    #[arg(long, env = "CASKADE_MERGE_DEAD_RATIO", default_value_t = 0.5)]
    merge_dead_ratio: f64,
    /// ...and at least this many bytes. 0 disables automatic merges.
    #[arg(long, env = "CASKADE_MERGE_DEAD_BYTES", default_value_t = 64 << 20)]
    merge_dead_bytes: u64,
    /// Largest gRPC message accepted or sent, in bytes. It must carry one event of
    /// --max-event-size in a stream of --max-stream-name-len: below that the server refuses to
    /// start and names the minimum.
    #[arg(long, env = "CASKADE_MAX_MESSAGE_SIZE", default_value_t = 64 << 20)]
    max_message_size: usize,
    /// Largest event accepted (type, data and metadata), in bytes; also the largest custom
    /// metadata a stream may carry. A larger one is refused with `RESOURCE_EXHAUSTED`.
    #[arg(long, env = "CASKADE_MAX_EVENT_SIZE", default_value_t = 4 << 20)]
    max_event_size: usize,
    /// Longest stream name accepted, in bytes (1 to 32,768). A longer one is refused with
    /// `RESOURCE_EXHAUSTED`.
    #[arg(long, env = "CASKADE_MAX_STREAM_NAME_LEN", default_value_t = 1024)]
    max_stream_name_len: usize,
    /// How often the server scavenges its store (deletes the events that deletes,
    /// tombstones and retention hide, then merges): a number with a unit, `s`, `m`, `h` or
    /// `d`, the first time one interval after the start; 0 never.
    #[arg(long, env = "CASKADE_SCAVENGE_INTERVAL", default_value = "24h", value_parser = parse_interval)]
    scavenge_interval: ScavengeInterval,
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, env = "CASKADE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "CASKADE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require `authorization: Bearer TOKEN` on every call, reflection included. The health
    /// service stays open, so that load balancers can probe without the token.
    #[arg(long, env = "CASKADE_TOKEN")]
    token: Option<String>,
    /// Log filter (overridden by `RUST_LOG`), e.g. `info` or `caskade_server=debug`.
    #[arg(long, env = "CASKADE_LOG", default_value = "info")]
    log: String,
}

fn parse_sync(text: &str) -> anyhow::Result<SyncPolicy> {
    match text {
        "always" => Ok(SyncPolicy::Always),
        "never" => Ok(SyncPolicy::Never),
        other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => Ok(SyncPolicy::Interval(Duration::from_millis(ms))),
            _ => {
                bail!("--sync must be `always`, `never` or `interval:MS` with MS > 0, not {text:?}")
            }
        },
    }
}

/// A `--scavenge-interval`: `None` for never.
#[derive(Debug, Clone, Copy)]
struct ScavengeInterval(Option<Duration>);

/// Parses a `--scavenge-interval`: a number with a unit, `s`, `m`, `h` or `d`; zero (with
/// or without a unit) for never.
fn parse_interval(text: &str) -> Result<ScavengeInterval, String> {
    let invalid = || format!("{text:?} is not 0 or a number with a unit s, m, h or d");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let seconds_per = match unit {
        "" if number == 0 => 0,
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(invalid()),
    };
    if number == 0 {
        return Ok(ScavengeInterval(None));
    }
    number
        .checked_mul(seconds_per)
        .map(|seconds| ScavengeInterval(Some(Duration::from_secs(seconds))))
        .ok_or_else(|| format!("{text:?} is too long an interval"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log))
        .context("invalid --log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut engine = caskade_engine::Options::default();
    engine.sync = parse_sync(&args.sync)?;
    engine.max_file_size = args.max_file_size;
    engine.auto_merge = (args.merge_dead_bytes > 0).then_some(MergeTrigger {
        min_dead_ratio: args.merge_dead_ratio,
        min_dead_bytes: args.merge_dead_bytes,
    });
    let options = caskade_eventstore::Options::default()
        .engine(engine)
        .max_event_size(args.max_event_size)
        .max_stream_name_len(args.max_stream_name_len);
    let needed = caskade_server::min_message_size(&options);
    if args.max_message_size < needed {
        bail!(
            "--max-message-size {} cannot carry one event of --max-event-size {} in a stream \
             named with --max-stream-name-len {} (or a key of 64 KiB): it must be at least {needed}",
            args.max_message_size,
            args.max_event_size,
            args.max_stream_name_len,
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert_pem: std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
            key_pem: std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
        }),
        _ => None,
    };
    let addr: SocketAddr = args
        .addr
        .parse()
        .with_context(|| format!("--addr must be IP:PORT, not {:?}", args.addr))?;
    let dir = args.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || EventStore::open(&dir, options))
        .await?
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    // Installed before the address is announced, so a signal sent as soon as a supervisor
    // sees it is a clean stop rather than the default action (termination).
    let shutdown = shutdown_signal()?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %args.data_dir.display(), "serving");
    // Scripts and tests read the bound address (the port may have been 0) from stdout.
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let config = ServerConfig {
        token: args.token,
        tls,
        max_message_size: args.max_message_size,
        scavenge_interval: args.scavenge_interval.0,
        ..ServerConfig::default()
    };
    caskade_server::run(listener, store, config, shutdown).await?;
    Ok(())
}

/// Installs SIGINT and SIGTERM handlers now; the future completes on either signal.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

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

/// An event as the one JSON object per line that `read` and `subscribe` print. The data and
/// metadata are JSON when they parse as JSON (text otherwise); `recorded_at` is the time the
/// server recorded the event, RFC 3339 in UTC with microseconds (null if out of range).
fn event_json(event: &pb::RecordedEvent) -> serde_json::Value {
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

fn print_line(line: &impl std::fmt::Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Shows a progress bar drawn by indicatif's `template` on a terminal, nothing otherwise.
fn progress_bar(total: u64, what: &str, template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(bar_style(template));
    bar.set_message(what.to_owned());
    bar
}

fn bar_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .expect("the template is valid")
        .progress_chars("=> ")
}

const MERGE_BAR: &str = "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})";

/// A scavenge's progress bar: streams examined, then the merge's bytes.
struct ScavengeBar {
    bar: indicatif::ProgressBar,
    merging: bool,
}

impl ScavengeBar {
    fn new() -> ScavengeBar {
        ScavengeBar {
            bar: progress_bar(
                0,
                "scavenging streams",
                "{msg} [{bar:40}] {pos}/{len} ({eta})",
            ),
            merging: false,
        }
    }

    /// Shows the streams examined of those in all or, once merging, the bytes read.
    fn show(&mut self, streams: (u64, u64), merge: Option<(u64, u64)>) {
        let (position, total) = match merge {
            None => streams,
            Some(bytes) => {
                if !self.merging {
                    self.merging = true;
                    self.bar.set_style(bar_style(MERGE_BAR));
                    self.bar.set_message("merging");
                    self.bar.reset();
                }
                bytes
            }
        };
        self.bar.set_length(total);
        self.bar.set_position(position);
    }
}

/// The line a finished scavenge prints.
fn scavenged_line(streams: u64, examined: u64, removed: u64, reclaimed: u64) -> String {
    format!(
        "scavenged {streams} streams: {examined} events examined, {removed} removed, \
         {reclaimed} bytes reclaimed"
    )
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per subcommand, each a few lines"
)]
async fn client(command: Command, client: &ClientArgs) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) | Command::Check { .. } => unreachable!("handled in main"),
        Command::Merge { dir: Some(dir), .. } => {
            let store = caskade_engine::Bitcask::builder(&dir)
                .create_if_missing(false)
                .open()?;
            let bar = progress_bar(store.stats().total_bytes(), "merging", MERGE_BAR);
            let report = store.merge_with_progress(|p| bar.set_position(p.bytes_read))?;
            bar.finish_and_clear();
            store.close()?;
            print_line(&format!(
                "merged {} files ({} bytes) into {} ({} bytes)",
                report.input_files, report.bytes_read, report.output_files, report.bytes_written
            ))?;
        }
        Command::Scavenge { dir: Some(dir) } => {
            let mut options = caskade_eventstore::Options::default();
            options.engine.create_if_missing = false;
            options.engine.auto_merge = None;
            let store = EventStore::open(&dir, options)?;
            let mut bar = ScavengeBar::new();
            let report = store.scavenge_with_progress(|p| {
                let merge = p.merge.map(|m| (m.bytes_read, m.bytes_total));
                bar.show((p.streams_examined, p.streams_total), merge);
            })?;
            bar.bar.finish_and_clear();
            store.close()?;
            print_line(&scavenged_line(
                report.streams as u64,
                report.events_examined,
                report.events_removed,
                report.bytes_reclaimed,
            ))?;
        }
        Command::Scavenge { dir: None } => {
            let mut progress = Connection::connect(&client.config())
                .await?
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
            bar.bar.finish_and_clear();
            let done = last
                .filter(|message| message.done)
                .context("the server ended the scavenge without its totals")?;
            print_line(&scavenged_line(
                done.streams_examined,
                done.events_examined,
                done.events_removed,
                done.bytes_reclaimed,
            ))?;
        }
        Command::Backup {
            dir,
            dest: Some(dest),
            ..
        } => {
            let store = caskade_engine::Bitcask::builder(&dir)
                .create_if_missing(false)
                .open()?;
            let report = store.backup(&dest)?;
            store.close()?;
            print_line(&format!(
                "backed up {} data files and {} hint files ({} bytes) to {}",
                report.data_files,
                report.hint_files,
                report.bytes,
                dest.display()
            ))?;
        }
        Command::Put { key, value } => {
            Connection::connect(&client.config())
                .await?
                .kv()
                .put(pb::PutRequest {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                })
                .await?;
            print_line(&"OK")?;
        }
        Command::Get { key } => {
            let response = Connection::connect(&client.config())
                .await?
                .kv()
                .get(pb::GetRequest {
                    key: key.clone().into_bytes(),
                })
                .await?;
            match response.into_inner().value {
                Some(value) => print_line(&String::from_utf8_lossy(&value))?,
                None => bail!("key {key:?} not found"),
            }
        }
        Command::Del { key } => {
            Connection::connect(&client.config())
                .await?
                .kv()
                .delete(pb::KvDeleteRequest {
                    key: key.into_bytes(),
                })
                .await?;
            print_line(&"OK")?;
        }
        Command::Keys { prefix } => {
            let request = pb::KeysRequest {
                prefix: prefix.unwrap_or_default().into_bytes(),
            };
            let mut keys = Connection::connect(&client.config())
                .await?
                .kv()
                .keys(request)
                .await?
                .into_inner();
            while let Some(key) = keys.message().await? {
                print_line(&String::from_utf8_lossy(&key.key))?;
            }
        }
        Command::Append {
            stream,
            event_type,
            data,
            expected_version: expected,
            id,
        } => {
            serde_json::from_str::<serde_json::Value>(&data).context("--data must be JSON")?;
            let request = pb::AppendRequest {
                stream,
                expected_version: Some(expected_version(&expected)?),
                events: vec![pb::EventData {
                    id: id.unwrap_or_default(),
                    r#type: event_type,
                    content_type: pb::ContentType::Json.into(),
                    data: data.into_bytes(),
                    metadata: Vec::new(),
                }],
            };
            let response = Connection::connect(&client.config())
                .await?
                .streams()
                .append(request)
                .await?
                .into_inner();
            print_line(&serde_json::json!({
                "next_expected_version": response.next_expected_version,
                "position": response.last_position,
            }))?;
        }
        Command::Read {
            stream,
            from,
            count,
            backwards,
        } => {
            let target = if stream == "$all" {
                pb::read_request::Target::All(pb::Empty {})
            } else {
                pb::read_request::Target::Stream(stream)
            };
            let request = pb::ReadRequest {
                target: Some(target),
                direction: if backwards {
                    pb::Direction::Backwards
                } else {
                    pb::Direction::Forwards
                }
                .into(),
                from: from.map(pb::read_request::From::At),
                max_count: count.unwrap_or(0),
                filter: None,
            };
            let mut events = Connection::connect(&client.config())
                .await?
                .streams()
                .read(request)
                .await?
                .into_inner();
            while let Some(message) = events.message().await? {
                for event in &message.events {
                    print_line(&event_json(event))?;
                }
            }
        }
        Command::Subscribe { stream, from } => {
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
            let mut messages = Connection::connect(&client.config())
                .await?
                .streams()
                .subscribe(request)
                .await?
                .into_inner();
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
        }
        Command::Streams => {
            let mut messages = Connection::connect(&client.config())
                .await?
                .streams()
                .list_streams(pb::ListStreamsRequest {})
                .await?
                .into_inner();
            while let Some(message) = messages.message().await? {
                for stream in message.streams {
                    let state =
                        pb::StreamState::try_from(stream.state).map_or("unknown", |s| match s {
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
        }
        Command::Delete { stream } => {
            Connection::connect(&client.config())
                .await?
                .streams()
                .delete(pb::DeleteRequest {
                    stream,
                    expected_version: None,
                })
                .await?;
            print_line(&"OK")?;
        }
        Command::Merge { dir: None } => {
            let report = Connection::connect(&client.config())
                .await?
                .admin()
                .merge(pb::MergeRequest {})
                .await?
                .into_inner();
            print_line(&format!(
                "merged {} files ({} bytes) into {} ({} bytes)",
                report.input_files, report.bytes_read, report.output_files, report.bytes_written
            ))?;
        }
        Command::Backup { dir, dest: None } => {
            let destination = dir
                .to_str()
                .context("the backup directory must be UTF-8")?
                .to_owned();
            let report = Connection::connect(&client.config())
                .await?
                .admin()
                .backup(pb::BackupRequest { destination })
                .await?
                .into_inner();
            print_line(&format!(
                "backed up {} data files and {} hint files ({} bytes)",
                report.data_files, report.hint_files, report.bytes
            ))?;
        }
        Command::Stats => {
            let stats = Connection::connect(&client.config())
                .await?
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
                "data_files": stats.files.len(),
                "live_bytes": live,
                "dead_bytes": dead,
            }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let report = caskade_engine::check(dir)?;
    for problem in &report.problems {
        eprintln!("{problem}");
    }
    print_line(&format!(
        "checked {} data files, {} hint files, {} records: {} problems",
        report.data_files,
        report.hint_files,
        report.records,
        report.problems.len()
    ))?;
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    caskade_server::process::disable_transparent_huge_pages();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version`: printed to stdout, exit 0.
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            eprintln!("{}", usage_error_line(&error.render().to_string()));
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    caskade_server::process::run(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Check { dir } => check(&dir),
            command => client(command, &cli.client).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scavenge_intervals_take_a_unit_and_zero_means_never() {
        let parsed = |text| parse_interval(text).map(|interval| interval.0);
        assert_eq!(parsed("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parsed("15m"), Ok(Some(Duration::from_secs(15 * 60))));
        assert_eq!(parsed("24h"), Ok(Some(Duration::from_secs(24 * 60 * 60))));
        assert_eq!(
            parsed("7d"),
            Ok(Some(Duration::from_secs(7 * 24 * 60 * 60)))
        );
        assert_eq!(parsed("0"), Ok(None));
        assert_eq!(parsed("0h"), Ok(None));
        for bad in [
            "",
            "h",
            "12",
            "1.5h",
            "-1h",
            "5x",
            "1h30m",
            "99999999999999999999d",
        ] {
            assert!(parsed(bad).is_err(), "{bad:?}");
        }
        assert!(parsed("999999999999999999d").is_err_and(|e| e.contains("too long")));
    }
}
