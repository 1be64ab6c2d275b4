//! Locks that outlive a panic: a `Mutex` poisoned by a thread that
//! panicked while holding it still guards data that is whole (rain-edge
//! never leaves shared state half-written across a panic point), so the
//! guard is taken all the same rather than failing every later request.

use std::sync::{Mutex, MutexGuard};

/// `m`'s guard, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
