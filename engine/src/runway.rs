//! The runway preallocator: the `caskade-prealloc` thread that keeps zero-filled, synced
//! space ahead of the active file's end (see [`Tuning::runway`]); how far each extension
//! goes is `DataFile::extend_runway`'s.
//!
//! Invariant: the thread only ever extends a file past what the writer has allocated (the
//! file's own `extension` lock keeps the two apart, see `DataFile::extend_runway`), so a
//! failed or late extension costs only speed: appends then grow the file themselves.
//!
//! [`Tuning::runway`]: crate::Tuning::runway

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::data_file::DataFile;

/// Hands files whose runway runs short to the preallocation thread.
#[derive(Default)]
pub(crate) struct Runway {
    state: Mutex<RunwayState>,
    wake: Condvar,
}

#[derive(Default)]
struct RunwayState {
    stop: bool,
    file: Option<Arc<DataFile>>,
}

impl Runway {
    /// Asks the thread to extend `file`'s runway; replaces a request not yet taken, since
    /// only the newest active file matters.
    pub(crate) fn request(&self, file: Arc<DataFile>) {
        self.state.lock().file = Some(file);
        self.wake.notify_one();
    }

    /// The next file to extend; `None` once the store is closing.
    fn next(&self) -> Option<Arc<DataFile>> {
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
        while let Some(file) = self.next() {
            if let Err(error) = file.extend_runway() {
                tracing::warn!(file_id = %file.id(), %error,
                    "preallocating data file space failed; appends will grow the file instead");
            }
        }
    }
}
