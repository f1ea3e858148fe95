//! `caskade`: the server (`caskade serve`), a command-line client in the spirit of
//! `GoCask`'s `gccli`, and offline tools for a stopped store's data directory
//! (`caskade offline ...`). This file only parses the arguments and hands each kind of
//! command to its module under [`cli`].

mod cli;

use std::process::ExitCode;

use caskade_server::process::usage_error_line;
use clap::{Parser, Subcommand};

use crate::cli::client::{ClientArgs, ClientCommand};
use crate::cli::offline::OfflineCommand;
use crate::cli::serve::ServeArgs;

/// gRPC traffic is many small allocations per message (each event's strings and bytes, each
/// frame), which glibc's allocator serves slowly (see `docs/benchmarks.md`).
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

/// Every command, by the kind that owns it.
#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server on an embedded store.
    Serve(Box<ServeArgs>),
    #[command(flatten)]
    Client(ClientCommand),
    /// Tools for a stopped store's data directory: check, merge, scavenge, backup.
    #[command(subcommand)]
    Offline(OfflineCommand),
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
            Command::Serve(args) => cli::serve::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Client(command) => cli::client::run(command, &cli.client)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Offline(command) => cli::offline::run(command),
        }
    })
}
