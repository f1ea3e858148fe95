//! `caskade-bench`: a load generator that drives a running Caskade server over gRPC and,
//! optionally, `UmaDB` (another Rust event store with a gRPC API) with the same workloads in
//! the same run. Each workload prints throughput and the p50/p99/p99.9 latency of its calls
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
use caskade_server::client::{ClientConfig, ClientTls, Connection};
use caskade_server::process::usage_error_line;
use clap::Parser;
use tonic::transport::Endpoint;

/// The same allocator as the `caskade` binary's, so that the client side costs what it cost
/// when the figures in the README were taken.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Drive a running server with a benchmark suite: durable appends from 1, 16 and 64 clients,
/// batches of 100 and 1,000, stream and `$all` reads, and live-subscription latency. Prints
/// throughput and p50/p99/p99.9 latencies.
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
    /// Concurrent clients for the single-event append runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Calls per single-event append run (split across clients), and events in the read
    /// stream.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Calls per batched append run (100 and 1,000 events per call). Each call takes
    /// milliseconds, so a run needs hundreds to outlast the disk's hiccups.
    #[arg(long, default_value_t = 300)]
    batch_calls: u64,
    /// Also run the same workloads against a `UmaDB` server at this address (see
    /// `bench/umadb.sh`) and print both figures with the ratios.
    #[arg(long)]
    umadb: Option<String>,
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
        token: cli.token,
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
    let peer = cli.umadb.map(|addr| {
        println!("UmaDB at {addr}");
        async move || -> anyhow::Result<_> {
            let channel = Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await
                .with_context(|| format!("cannot connect to UmaDB at {addr}"))?;
            Ok(client::Client::UmaDb(
                client::umadb::dcb_client::DcbClient::new(channel)
                    .max_decoding_message_size(usize::MAX),
            ))
        }
    });
    let compare = peer.is_some();
    let (ours, theirs) =
        suite::run_suite(ours, peer, parts, clients, cli.events, cli.batch_calls).await?;
    if compare && !ours.is_empty() {
        figures::compare(&ours, &theirs);
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
            let label = if compare { "Caskade  " } else { "" };
            println!("{label}{}", figures.line());
        }
    }
    Ok(())
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
