//! `caskade offline ...`: the tools for a stopped store's data directory, run in this process
//! with the store opened directly (its directory lock refuses a store a server holds). Each
//! says `offline` in its name; `merge`, `scavenge` and `backup` without it ask a running server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use caskade_eventstore::EventStore;
use clap::Subcommand;

use crate::cli::output::{
    MERGE_BAR, ScavengeBar, merged_line, print_line, progress_bar, scavenged_line,
};

/// The offline tools.
#[derive(Subcommand)]
pub(crate) enum OfflineCommand {
    /// Verify every record of a stopped store; exits non-zero on any problem.
    Check {
        /// The store's data directory.
        dir: PathBuf,
    },
    /// Merge the stopped store in DIR.
    Merge {
        /// The store's data directory.
        dir: PathBuf,
    },
    /// Scavenge the stopped store in DIR: delete the events that deletes, tombstones and
    /// retention hide, then merge to give their space back.
    Scavenge {
        /// The store's data directory.
        dir: PathBuf,
    },
    /// Back up the stopped store in DIR into DEST.
    Backup {
        /// The store's data directory.
        dir: PathBuf,
        /// Where to copy the store: a new or empty directory.
        dest: PathBuf,
    },
}

/// Runs one offline tool.
pub(crate) fn run(command: OfflineCommand) -> anyhow::Result<ExitCode> {
    match command {
        OfflineCommand::Check { dir } => return check(&dir),
        OfflineCommand::Merge { dir } => merge(&dir)?,
        OfflineCommand::Scavenge { dir } => scavenge(&dir)?,
        OfflineCommand::Backup { dir, dest } => backup(&dir, &dest)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the existing store in `dir` with nothing of its own running: no store is created
/// where there was none, and no automatic merge competes with the tool.
fn open(dir: &Path) -> anyhow::Result<EventStore> {
    let mut options = caskade_eventstore::Options::default();
    options.engine.create_if_missing = false;
    options.engine.auto_merge = None;
    Ok(EventStore::open(dir, options)?)
}

/// Prints each problem on stderr and a summary on stdout; fails (exit 1) on any problem.
fn check(dir: &Path) -> anyhow::Result<ExitCode> {
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

fn merge(dir: &Path) -> anyhow::Result<()> {
    let store = open(dir)?;
    let bar = progress_bar(0, "merging", MERGE_BAR);
    let report = store.merge_with_progress(|p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_read);
    })?;
    bar.finish_and_clear();
    store.close()?;
    print_line(&merged_line(
        report.input_files as u64,
        report.bytes_read,
        report.output_files as u64,
        report.bytes_written,
    ))
}

fn scavenge(dir: &Path) -> anyhow::Result<()> {
    let store = open(dir)?;
    let mut bar = ScavengeBar::new();
    let report = store.scavenge_with_progress(|p| {
        let merge = p.merge.map(|m| (m.bytes_read, m.bytes_total));
        bar.show((p.streams_examined, p.streams_total), merge);
    })?;
    bar.finish();
    store.close()?;
    print_line(&scavenged_line(
        report.streams as u64,
        report.events_examined,
        report.events_removed,
        report.bytes_reclaimed,
    ))
}

fn backup(dir: &Path, dest: &Path) -> anyhow::Result<()> {
    let store = open(dir)?;
    let report = store.backup(dest)?;
    store.close()?;
    print_line(&format!(
        "backed up {} data files and {} hint files ({} bytes) to {}",
        report.data_files,
        report.hint_files,
        report.bytes,
        dest.display()
    ))
}
