//! `caskade-bench`: a load generator that drives a running Caskade server over gRPC and,
//! optionally, a peer with the same workloads in the same run: `UmaDB` (another Rust event
//! store with a gRPC API), or the same server's KurrentDB API through KurrentDB's official
//! Rust client. Each workload prints throughput and the p50/p99/p99.9 latency of its calls
//! (hdrhistogram); `--only` picks parts of the suite ([`suite::Part`]).
//!
//! It is a client only: it knows nothing of the store and is not part of the `caskade`
//! binary. `main` parses the arguments and hands over to [`run`].

mod client;
mod figures;
mod suite;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use caskade_server::client::{ClientConfig, ClientTls, Connection, Credentials};
use caskade_server::process::usage_error_line;
use clap::Parser;
use tonic::transport::Endpoint;

/// The same allocator as the `caskade` binary's, so that the client side costs what it cost
/// when the figures in the README were taken.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Drive a running server with a benchmark suite: durable appends from 1, 16 and 64 clients,
/// batches of 100 and 1,000, stream and `$all` reads, single-event reads at random versions,
/// and live-subscription latency. Prints throughput and p50/p90/p99/p99.9 latencies.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The Caskade server's address.
    #[arg(long, env = "CASKADE_ADDR", default_value = "127.0.0.1:8888")]
    addr: String,
    /// The server's token, if it requires one.
    #[arg(long, env = "CASKADE_TOKEN")]
    token: Option<String>,
    /// Connect with TLS, trusting this PEM CA certificate.
    #[arg(long, env = "CASKADE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// The server name to verify the certificate against, with --tls-ca.
    #[arg(long, default_value = "localhost")]
    tls_domain: String,
    /// Concurrent clients for the single-event append runs and the random reads,
    /// comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Calls per single-event append run and per random-read run (split across clients),
    /// and events in the streams read.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Calls per batched append run (100 and 1,000 events per call). Each call takes
    /// milliseconds, so a run needs hundreds to outlast the disk's hiccups.
    #[arg(long, default_value_t = 300)]
    batch_calls: u64,
    /// Also run the same workloads against a `UmaDB` server at this address (see
    /// `bench/umadb.sh`) and print both figures with the ratios.
    #[arg(long, conflicts_with = "kurrent")]
    umadb: Option<String>,
    /// Also run the same workloads through the same server's KurrentDB API, with KurrentDB's
    /// official Rust client, and print both figures with the ratios. With --tls-ca, the
    /// client verifies the certificate against the host of --addr.
    #[arg(long)]
    kurrent: bool,
    /// Make the random reads read this existing stream (Caskade's APIs only) rather than a
    /// stream of --events events written for them: a large store written by an earlier run,
    /// say, read after a restart with its page cache cold.
    #[arg(long)]
    read_stream: Option<String>,
    /// Run only these parts of the suite, comma-separated (default: all of them).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<suite::Part>,
}

/// Runs the parts of the suite `cli` asks for, printing as it goes.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let parts = if cli.only.is_empty() {
        &suite::ALL_PARTS[..]
    } else {
        &cli.only[..]
    };
    let clients = &cli.clients;
    if clients.is_empty() || clients.contains(&0) || cli.events == 0 || cli.batch_calls == 0 {
        bail!("--clients needs numbers above 0, and --events and --batch-calls must be above 0");
    }
    let config = ClientConfig {
        addr: cli.addr,
        credentials: cli.token.map(Credentials::Token),
        tls: cli.tls_ca.map(|ca| ClientTls {
            ca,
            domain: cli.tls_domain,
        }),
    };
    println!("Caskade at {}", config.addr);
    let ours = async || -> anyhow::Result<_> {
        Ok(client::Client::Caskade(
            Connection::connect(&config).await?.streams(),
        ))
    };
    let peer = if let Some(addr) = &cli.umadb {
        println!("UmaDB at {addr}");
        Some(Peer::UmaDb(addr.clone()))
    } else if cli.kurrent {
        println!("the KurrentDB API of Caskade at {}", config.addr);
        Some(kurrent_peer(&config)?)
    } else {
        None
    };
    let peer_target = peer.as_ref().map(|peer| suite::Target {
        name: peer.name(),
        connect: async || peer.connect().await,
    });
    let sizes = suite::Sizes {
        clients,
        events: cli.events,
        batch_calls: cli.batch_calls,
        read_stream: cli.read_stream.as_deref(),
    };
    let (ours, theirs) = suite::run_suite(ours, peer_target, parts, &sizes).await?;
    if let Some(peer) = &peer
        && !ours.is_empty()
    {
        figures::compare(&ours, peer.name(), &theirs);
    }
    if parts.contains(&suite::Part::Floor) {
        println!();
        println!("transport floor (no disk; no append can beat its round trip):");
        for &clients in clients {
            let figures = workloads::transport_floor(
                async || Ok(Connection::connect(&config).await?.health()),
                clients,
                cli.events,
            )
            .await?;
            let label = suite::caskade_label(peer.is_some());
            println!("{label}{}", figures.line());
        }
    }
    Ok(())
}

/// What the suite runs beside Caskade's own API.
enum Peer {
    /// A `UmaDB` server at this address.
    UmaDb(String),
    /// The KurrentDB API of the Caskade server, through KurrentDB's client.
    Kurrent {
        settings: Box<kurrentdb::ClientSettings>,
        authentication: Option<kurrentdb::Authentication>,
    },
}

impl Peer {
    fn name(&self) -> &'static str {
        match self {
            Peer::UmaDb(_) => "UmaDB",
            Peer::Kurrent { .. } => "KurrentDB API",
        }
    }

    /// A new connection, ready for its first call.
    async fn connect(&self) -> anyhow::Result<client::Client> {
        match self {
            Peer::UmaDb(addr) => {
                let channel = Endpoint::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to UmaDB at {addr}"))?;
                Ok(client::Client::UmaDb(
                    client::umadb::dcb_client::DcbClient::new(channel)
                        .max_decoding_message_size(usize::MAX),
                ))
            }
            Peer::Kurrent {
                settings,
                authentication,
            } => {
                // A client of its own (its own connection, as each Caskade client has),
                // connected by a first call, as Caskade's are before the clock starts.
                let fresh = client::Kurrent {
                    client: kurrentdb::Client::new((**settings).clone()).map_err(|error| {
                        anyhow::anyhow!("KurrentDB's client refused its settings: {error}")
                    })?,
                    authentication: authentication.clone(),
                };
                let mut probe = client::Client::Kurrent(fresh.clone());
                match probe.read(Some("bench-connect")).await {
                    Ok(_) => {}
                    Err(error)
                        if matches!(
                            error.downcast_ref::<kurrentdb::Error>(),
                            Some(kurrentdb::Error::ResourceNotFound)
                        ) => {}
                    Err(error) => return Err(error.context("cannot reach the KurrentDB API")),
                }
                Ok(client::Client::Kurrent(fresh))
            }
        }
    }
}

/// `value` percent-encoded for a connection string's query (the client decodes it), so that a
/// path with `&`, `#`, `%`, `+` or spaces stays one value.
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The KurrentDB API of the server `config` names, as KurrentDB's client reaches it.
fn kurrent_peer(config: &ClientConfig) -> anyhow::Result<Peer> {
    let tls = match &config.tls {
        Some(tls) => format!(
            "tls=true&tlsCAFile={}",
            query_value(&tls.ca.display().to_string())
        ),
        None => "tls=false".to_owned(),
    };
    let settings: kurrentdb::ClientSettings = format!("kurrentdb://{}?{tls}", config.addr)
        .parse()
        .with_context(|| format!("{} is not an address KurrentDB's client takes", config.addr))?;
    Ok(Peer::Kurrent {
        settings: Box::new(settings),
        authentication: config
            .credentials
            .as_ref()
            .map(|credentials| match credentials {
                Credentials::Token(token) => kurrentdb::Authentication::bearer(token.clone()),
                Credentials::User(user) => {
                    kurrentdb::Authentication::basic(user.name.clone(), user.password.clone())
                }
            }),
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
    caskade_server::process::run(async { run(cli).await.map(|()| ExitCode::SUCCESS) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_keep_paths_whole() {
        assert_eq!(query_value("/etc/caskade/ca.pem"), "/etc/caskade/ca.pem");
        assert_eq!(
            query_value("/tmp/a b&c#d%e+f"),
            "/tmp/a%20b%26c%23d%25e%2Bf"
        );
        let settings: kurrentdb::ClientSettings = format!(
            "kurrentdb://127.0.0.1:1?tls=true&tlsCAFile={}",
            query_value("/tmp/a b&c")
        )
        .parse()
        .expect("a connection string");
        assert_eq!(
            settings.tls_ca_file().map(String::as_str),
            Some("/tmp/a b&c")
        );
    }
}
