//! The one "stop at the next safe point" flag of the process. A signal handler in the binary
//! sets it ([`request`]); long operations (deploy steps, unpack entries and chunks) look at it
//! ([`requested`]) and stop there, cleaning up, instead of dying mid-step.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every long operation to stop at its next safe point. Only an atomic store, so it may be
/// called from a signal handler.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
