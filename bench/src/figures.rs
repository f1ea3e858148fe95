//! What a workload measured, as the lines the bench prints, and the side-by-side table.

use std::time::Duration;

use hdrhistogram::Histogram;

/// One workload's figures.
pub(crate) struct Figures {
    pub(crate) workload: String,
    pub(crate) clients: usize,
    pub(crate) calls: u64,
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
    /// Microseconds.
    pub(crate) latency: Histogram<u64>,
}

impl Figures {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{:<22} clients {:>3}  {:>10.0} calls/s  {:>11.0} events/s  p50 {:>8} us  p90 {:>8} us  p99 {:>8} us  p99.9 {:>8} us",
            self.workload,
            self.clients,
            self.calls as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON),
            self.events_per_second(),
            self.latency.value_at_quantile(0.5),
            self.latency.value_at_quantile(0.9),
            self.latency.value_at_quantile(0.99),
            self.latency.value_at_quantile(0.999),
        )
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("the bounds are valid")
}

pub(crate) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Prints Caskade's figures beside the peer's (named `peer`), with the ratios: Caskade's
/// throughput over the peer's, and the peer's latency over Caskade's, so that above 1 is
/// Caskade ahead either way.
pub(crate) fn compare(caskade: &[Figures], peer_name: &str, peer: &[Figures]) {
    println!();
    println!(
        "{:<30} {:>14} {:>14} {:>8}",
        "workload", "Caskade", peer_name, "ratio"
    );
    for (ours, theirs) in caskade.iter().zip(peer) {
        let name = format!("{} x{}", ours.workload, ours.clients);
        if ours.workload.starts_with("subscribe") {
            let (a, b) = (
                ours.latency.value_at_quantile(0.5),
                theirs.latency.value_at_quantile(0.5),
            );
            println!(
                "{name:<30} {:>11} us {:>11} us {:>7.2}x  (p50 latency; lower is better)",
                a,
                b,
                b as f64 / a.max(1) as f64
            );
        } else {
            let (a, b) = (ours.events_per_second(), theirs.events_per_second());
            println!(
                "{name:<30} {a:>10.0} ev/s {b:>9.0} ev/s {:>7.2}x",
                a / b.max(f64::EPSILON)
            );
        }
    }
}
