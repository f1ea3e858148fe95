//! What the engine's benches share: the key and value shape the issue names, a tally of
//! operations over the batches criterion timed, whether criterion is only testing, and their
//! temporary directories.

#![allow(
    dead_code,
    reason = "each bench is its own crate and uses a different part of this module"
)]

use std::time::Duration;

/// Length of every bench key.
pub(crate) const KEY_LEN: usize = 16;

/// Every bench value: 100 bytes.
pub(crate) const VALUE: [u8; 100] = [0x5a; 100];

/// `i` in decimal, zero-padded to 16 bytes: distinct keys of the shape.
pub(crate) fn key(i: u64) -> [u8; KEY_LEN] {
    let mut key = [b'0'; KEY_LEN];
    let mut rest = i;
    for byte in key.iter_mut().rev() {
        *byte = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    key
}

/// Operations and time summed over every batch criterion timed.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ops: u64,
    pub(crate) elapsed: Duration,
}

impl Tally {
    pub(crate) fn add(&mut self, ops: u64, elapsed: Duration) {
        self.ops += ops;
        self.elapsed += elapsed;
    }

    pub(crate) fn ops_per_sec(&self) -> Option<f64> {
        (self.ops > 0 && !self.elapsed.is_zero())
            .then(|| self.ops as f64 / self.elapsed.as_secs_f64())
    }
}

/// Whether criterion runs each bench only once (`cargo test --benches`, `-- --test`).
pub(crate) fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

/// A fresh temporary directory for the bench named `bench`, removed when dropped.
pub(crate) fn temp_dir(bench: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("caskade-bench-{bench}-"))
        .tempdir()
        .expect("creating a temporary directory succeeds")
}

/// The engine's tuning switches from `CASKADE_ENGINE_TUNING` (see `caskade_engine::Tuning`),
/// so a run can measure a mechanism switched off against the same bench with it on.
pub(crate) fn tuning() -> caskade_engine::Tuning {
    caskade_engine::Tuning::from_env().unwrap_or_else(|error| panic!("{error}"))
}
