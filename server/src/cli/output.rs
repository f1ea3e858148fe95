//! What the commands print: one line per result on stdout (flushed, for scripts), progress
//! bars on stderr only when it is a terminal, and the lines that online and offline merges
//! and scavenges share, so that both forms of a command print alike.

use std::io::{IsTerminal, Write};

/// Prints `line` on stdout and flushes it, so that a script reading the output sees each line
/// as soon as it is printed.
pub(crate) fn print_line(line: &impl std::fmt::Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Shows a progress bar drawn by indicatif's `template` on a terminal, nothing otherwise.
pub(crate) fn progress_bar(total: u64, what: &str, template: &str) -> indicatif::ProgressBar {
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

/// A merge's bar: the bytes of the input files read.
pub(crate) const MERGE_BAR: &str = "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})";

/// A scavenge's progress bar: streams examined, then the merge's bytes; hidden off a terminal.
pub(crate) struct ScavengeBar {
    bar: indicatif::ProgressBar,
    merging: bool,
}

impl ScavengeBar {
    pub(crate) fn new() -> ScavengeBar {
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
    pub(crate) fn show(&mut self, streams: (u64, u64), merge: Option<(u64, u64)>) {
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

    /// Takes the bar off the terminal once the scavenge is done.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The line a finished scavenge prints.
pub(crate) fn scavenged_line(streams: u64, examined: u64, removed: u64, reclaimed: u64) -> String {
    format!(
        "scavenged {streams} streams: {examined} events examined, {removed} removed, \
         {reclaimed} bytes reclaimed"
    )
}

/// The line a finished merge prints, online or offline.
pub(crate) fn merged_line(
    input_files: u64,
    bytes_read: u64,
    output_files: u64,
    bytes_written: u64,
) -> String {
    format!(
        "merged {input_files} files ({bytes_read} bytes) into {output_files} ({bytes_written} bytes)"
    )
}
