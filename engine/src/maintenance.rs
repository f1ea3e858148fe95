//! The background threads' timers and wake-ups: hint files, automatic merges, interval
//! syncs.
//!
//! Each of these threads sleeps on [`Maintenance`] between rounds and wakes when its interval
//! passes, when a data file is sealed (so the new hint file is written at once), or when the
//! store closes. The work itself is handed in by the store as a closure, so this module knows
//! nothing of merges or syncs. Invariant: after [`Maintenance::stop`] no round starts, so a
//! closing store joins its threads after at most the round each is in.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Wakes the background threads: on rotation, on close, and on their own timers.
#[derive(Default)]
pub(crate) struct Maintenance {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    stop: bool,
    /// Bumped on every rotation.
    rotations: u64,
}

impl Maintenance {
    /// Waits until `timeout` passes, a rotation happens, or the store closes; `false` once
    /// the store is closing.
    fn wait(&self, timeout: Duration, seen_rotations: &mut u64) -> bool {
        let mut state = self.state.lock();
        if !state.stop && state.rotations == *seen_rotations {
            self.wake.wait_for(&mut state, timeout);
        }
        *seen_rotations = state.rotations;
        !state.stop
    }

    /// A data file was sealed: wakes every thread for a round now.
    pub(crate) fn rotated(&self) {
        self.state.lock().rotations += 1;
        self.wake.notify_all();
    }

    /// The store is closing: wakes every thread to exit.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }

    /// Runs `round` every `interval` and after every rotation, until the store closes or
    /// `round` returns `false` (the store is gone).
    pub(crate) fn run_rounds(&self, interval: Duration, mut round: impl FnMut() -> bool) {
        let mut rotations = 0;
        while self.wait(interval, &mut rotations) {
            if !round() {
                return;
            }
        }
    }
}
