//! The runway preallocator: the `caskade-prealloc` thread that keeps zero-filled, synced
//! space ahead of the active file's end (see [`Options::preallocate`]), and [`DiskPace`],
//! which tells it how far to extend after each group commit's sync.
//!
//! Invariant: the thread only ever extends a file past what the writer has allocated (the
//! file's own `extension` lock keeps the two apart, see `DataFile::extend_runway`), so a
//! failed or late extension costs only speed: appends then grow the file themselves.
//!
//! [`Options::preallocate`]: crate::Options::preallocate

use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::data_file::{DataFile, RunwayStep};

/// Hands files whose runway runs short to the preallocation thread.
#[derive(Default)]
pub(crate) struct Runway {
    state: Mutex<RunwayState>,
    wake: Condvar,
}

#[derive(Default)]
struct RunwayState {
    stop: bool,
    file: Option<(Arc<DataFile>, RunwayStep)>,
}

impl Runway {
    /// Asks the thread to extend `file`'s runway by `step`; replaces a request not yet
    /// taken, since only the newest active file matters.
    pub(crate) fn request(&self, file: Arc<DataFile>, step: RunwayStep) {
        self.state.lock().file = Some((file, step));
        self.wake.notify_one();
    }

    /// The next file to extend, and by how much; `None` once the store is closing.
    fn next(&self) -> Option<(Arc<DataFile>, RunwayStep)> {
        let mut state = self.state.lock();
        loop {
            if state.stop {
                return None;
            }
            if let Some(file) = state.file.take() {
                return Some(file);
            }
            self.wake.wait(&mut state);
        }
    }

    /// Makes the thread exit.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }

    /// The preallocation thread's body: extends runways until the store closes.
    pub(crate) fn run(&self) {
        while let Some((file, step)) = self.next() {
            if let Err(error) = file.extend_runway(step) {
                tracing::warn!(file_id = %file.id(), %error,
                    "preallocating data file space failed; appends will grow the file instead");
            }
        }
    }
}

/// Running averages of how long syncs take and how long the disk rests between them (from
/// one sync's end to the next one's start), over the last several syncs.
#[derive(Default)]
pub(crate) struct DiskPace {
    last_end: Option<Instant>,
    /// Nanoseconds: the average sync, then the average rest; `None` until a rest is known.
    averages: Option<(f64, f64)>,
}

impl DiskPace {
    /// Weight of the newest sync in the averages: one spell of slow syncs, or one pause
    /// of the writers, changes little.
    const WEIGHT: f64 = 1.0 / 8.0;

    /// Takes in a sync that ran from `started` to `ended`, and says how to extend the
    /// runway after it: by the largest step once the disk rests less, on average, than a
    /// sync takes, so the syncs run about back to back (see [`RunwayStep`]).
    pub(crate) fn synced(&mut self, started: Instant, ended: Instant) -> RunwayStep {
        let Some(last_end) = self.last_end.replace(ended) else {
            return RunwayStep::Paced;
        };
        let took = ended.saturating_duration_since(started).as_nanos() as f64;
        let rested = started.saturating_duration_since(last_end).as_nanos() as f64;
        let (sync, rest) = match self.averages {
            None => (took, rested),
            Some((sync, rest)) => (
                sync + (took - sync) * Self::WEIGHT,
                rest + (rested - rest) * Self::WEIGHT,
            ),
        };
        self.averages = Some((sync, rest));
        if rest < sync {
            RunwayStep::Largest
        } else {
            RunwayStep::Paced
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Feeds `pace` `count` syncs of `sync_micros` each, `rest_micros` apart, from `*now`;
    /// returns the step after the last.
    fn syncs(
        pace: &mut DiskPace,
        now: &mut Instant,
        count: usize,
        sync_micros: u64,
        rest_micros: u64,
    ) -> RunwayStep {
        let mut step = RunwayStep::Paced;
        for _ in 0..count {
            let started = *now + Duration::from_micros(rest_micros);
            let ended = started + Duration::from_micros(sync_micros);
            step = pace.synced(started, ended);
            *now = ended;
        }
        step
    }

    #[test]
    fn the_runway_takes_the_largest_steps_once_syncs_run_back_to_back() {
        use RunwayStep::{Largest, Paced};
        let mut pace = DiskPace::default();
        let mut now = Instant::now();
        // Phases of (syncs, µs each, µs of rest before each), in order, and the step after.
        let phases = [
            (1, 100, 0, Paced, "a first sync has no rest to compare"),
            (50, 300, 900, Paced, "the disk rests 3 times a sync"),
            (1, 300, 0, Paced, "one sync right after another"),
            (50, 150, 40, Largest, "the disk rests a quarter of a sync"),
            (50, 100, 400, Paced, "the writers slowed down"),
        ];
        for (count, sync_micros, rest_micros, expected, why) in phases {
            let step = syncs(&mut pace, &mut now, count, sync_micros, rest_micros);
            assert_eq!(step, expected, "{why}");
        }
    }
}
