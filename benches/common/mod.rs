//! What the benches share.

use std::time::{Duration, Instant};

/// The shortest of `rounds` timed runs of `f`.
pub fn best_of(rounds: usize, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}
