//! What the event-store benches share besides their peer (`sqlite_peer`): interleaved rounds
//! of Caskade and what it is compared with for the closing tables, and whether criterion is
//! only testing.

#![allow(
    dead_code,
    reason = "each bench uses a different part of these helpers"
)]

use std::time::Duration;

/// Runs `n` iterations of one side of a case and returns their wall time.
pub(crate) type Runner<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// Rounds of [`interleaved`].
const ROUNDS: usize = 5;
/// How long each side runs in each round.
const SLICE: Duration = Duration::from_secs(1);

/// Medians over the rounds of [`interleaved`].
pub(crate) struct Interleaved {
    /// Caskade's events per second.
    pub(crate) ours: f64,
    /// The peer's events per second.
    pub(crate) peer: f64,
    /// The median of the rounds' ratios, Caskade's figure over the peer's.
    pub(crate) ratio: f64,
}

/// Runs Caskade and its peer in turn, about a second each, [`ROUNDS`] times, and returns the
/// medians. On a shared machine the disk's sync latency and the CPU left over drift over
/// seconds; a ratio taken within each round compares the two sides under the same conditions,
/// where criterion's runs of one side after the other may meet different ones.
pub(crate) fn interleaved(
    events_per_iter: u64,
    ours: &mut Runner<'_>,
    peer: &mut Runner<'_>,
) -> Interleaved {
    let mut rounds: Vec<(f64, f64)> = (0..ROUNDS)
        .map(|_| {
            let ours = events_per_sec(events_per_iter, ours);
            let peer = events_per_sec(events_per_iter, peer);
            (ours, peer)
        })
        .collect();
    let mut ratios: Vec<f64> = rounds.iter().map(|(ours, peer)| ours / peer).collect();
    Interleaved {
        ratio: median(&mut ratios),
        ours: median(&mut rounds.iter().map(|r| r.0).collect::<Vec<_>>()),
        peer: median(&mut rounds.iter_mut().map(|r| r.1).collect::<Vec<_>>()),
    }
}

/// Runs `runner` for about [`SLICE`], in chunks that double until one takes a twentieth of it.
fn events_per_sec(events_per_iter: u64, runner: &mut Runner<'_>) -> f64 {
    let (mut chunk, mut iters, mut elapsed) = (1, 0, Duration::ZERO);
    while elapsed < SLICE {
        let took = runner(chunk);
        iters += chunk;
        elapsed += took;
        if took < SLICE / 20 {
            chunk *= 2;
        }
    }
    (iters * events_per_iter) as f64 / elapsed.as_secs_f64()
}

/// The closing table's header, for case names `name_width` wide.
pub(crate) fn print_header(name_width: usize) {
    println!(
        "{:<name_width$} {:>14} {:>14} {:>8} {:>8}",
        "case", "Caskade", "SQLite", "ratio", "target"
    );
}

/// One row of the closing table: the figures, and the target ratio if there is one.
pub(crate) fn print_row(name_width: usize, name: &str, figures: &Interleaved, target: Option<f64>) {
    let (target, verdict) = match target {
        Some(target) if figures.ratio < target => (format!("{target:.1}x"), "  below target"),
        Some(target) => (format!("{target:.1}x"), ""),
        None => ("-".to_owned(), ""),
    };
    println!(
        "{name:<name_width$} {:>14.0} {:>14.0} {:>7.2}x {target:>8}{verdict}",
        figures.ours, figures.peer, figures.ratio
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Whether criterion runs each bench only once (`cargo test --benches`, `-- --test`).
pub(crate) fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

/// The engine's tuning switches from `CASKADE_ENGINE_TUNING` (see `caskade_engine::Tuning`),
/// so a run can measure a mechanism switched off against the same bench with it on.
pub(crate) fn tuning() -> caskade_engine::Tuning {
    caskade_engine::Tuning::from_env().unwrap_or_else(|error| panic!("{error}"))
}
