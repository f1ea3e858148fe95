//! What the event-store benches share besides the SQLite peer: a tally of events over the
//! iterations criterion timed, and whether criterion is only testing.

use std::time::Duration;

/// Events and time summed over every iteration criterion timed.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
}

impl Tally {
    pub(crate) fn add(&mut self, events: u64, elapsed: Duration) {
        self.events += events;
        self.elapsed += elapsed;
    }

    pub(crate) fn events_per_sec(&self) -> Option<f64> {
        (self.events > 0 && !self.elapsed.is_zero())
            .then(|| self.events as f64 / self.elapsed.as_secs_f64())
    }
}

/// Whether criterion runs each bench only once (`cargo test --benches`, `-- --test`).
pub(crate) fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}
