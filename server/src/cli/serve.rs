//! `caskade serve`: the options of the server, checked and turned into the store's and the
//! server's configuration, then [`caskade_server::run`] until SIGINT or SIGTERM. The first
//! line on stdout is `listening on ADDR`, printed once the port is bound and the signal
//! handlers are installed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use caskade_engine::{MergeTrigger, SyncPolicy};
use caskade_eventstore::EventStore;
use caskade_server::{ServerConfig, TlsFiles};
use clap::Args;

/// `caskade serve`'s options.
#[derive(Args)]
pub(crate) struct ServeArgs {
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
    /// Most page cache the data files may hold, in bytes (unset: the kernel decides). Kept
    /// by evicting sealed files, oldest first, every maintenance round.
    #[arg(long, env = "CASKADE_CACHE_BUDGET")]
    cache_budget: Option<u64>,
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
    /// The address KurrentDB clients are told to connect to, IP:PORT, when they discover
    /// the cluster (`Gossip.Read`); default: the address the server listens on.
    #[arg(long, env = "CASKADE_ADVERTISE_ADDR")]
    advertise_addr: Option<SocketAddr>,
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, env = "CASKADE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "CASKADE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require `authorization: Bearer TOKEN` (or a --user's Basic credentials) on every call
    /// to either API and to reflection. Health, and KurrentDB's gossip and server features,
    /// stay open: load balancers probe, and KurrentDB's clients ask, before authenticating.
    #[arg(long, env = "CASKADE_TOKEN")]
    token: Option<String>,
    /// Accept this user's HTTP Basic credentials, NAME:PASSWORD, like the token (KurrentDB's
    /// clients send these); repeatable. Credentials are only secret over TLS. Prefer
    /// --users-file: other users of the machine can see command lines.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    users: Vec<caskade_server::User>,
    /// A file of users to accept, one NAME:PASSWORD a line (`#` starts a comment line).
    #[arg(long, env = "CASKADE_USERS_FILE")]
    users_file: Option<PathBuf>,
    /// Acknowledge received data at once (Linux's `TCP_QUICKACK`), so that clients that leave
    /// Nagle's algorithm on (KurrentDB's Rust client) do not wait for the kernel's delayed
    /// acknowledgement on every call.
    #[arg(long, env = "CASKADE_TCP_QUICKACK", default_value_t = true, action = clap::ArgAction::Set)]
    tcp_quickack: bool,
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

/// Serves the store in `--data-dir` until a signal stops the server, then closes the store.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log))
        .context("invalid --log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut engine = caskade_engine::Options {
        sync: parse_sync(&args.sync)?,
        max_file_size: args.max_file_size,
        cache_budget: args.cache_budget,
        ..caskade_engine::Options::default()
    };
    engine.auto_merge = (args.merge_dead_bytes > 0).then_some(MergeTrigger {
        min_dead_ratio: args.merge_dead_ratio,
        min_dead_bytes: args.merge_dead_bytes,
    });
    // Benchmarks switch the engine's tuning mechanisms off through the environment, so that
    // the same binary serves both sides of an A/B.
    engine.tuning = caskade_engine::Tuning::from_env().map_err(anyhow::Error::msg)?;
    let options = caskade_eventstore::Options {
        engine,
        max_event_size: args.max_event_size,
        max_stream_name_len: args.max_stream_name_len,
        ..caskade_eventstore::Options::default()
    };
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
    let mut users = args.users;
    if let Some(path) = &args.users_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        users.extend(
            caskade_server::parse_users_file(&text)
                .with_context(|| format!("in the users file {}", path.display()))?,
        );
    }
    if args.token.as_deref() == Some("") {
        bail!("--token must not be empty");
    }
    caskade_server::check_users(&users)?;
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
        users,
        tls,
        max_message_size: args.max_message_size,
        scavenge_interval: args.scavenge_interval.0,
        advertise_addr: args.advertise_addr,
        quick_ack: args.tcp_quickack,
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
